"""Measure the learner's feedback loop: `course check 0.1` cold, a TensorFlow exercise
re-checked through the warm worker (as `course watch` does), and an endless loop.

    python scripts/bench_learner_loop.py [--repeat 5]

Prints wall-clock and CPU seconds (CPU is what the run costs on an idle machine; wall is
what it cost on this one, whose load average is printed too). Numbers, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import recsys_course
from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading import warm_worker as worker
from recsys_course.tooling.lessons import _exercise_cell_span, replace_exercise_cell

SRC = str(Path(recsys_course.__file__).resolve().parents[1])


def make_clone(root: Path, catalog) -> None:
    for tree in ("solutions", "lessons"):
        (root / tree).mkdir()
        for lesson in catalog.lessons[:2]:
            for suffix in (".py", ".yml") if tree == "solutions" else (".py",):
                shutil.copy(catalog.root / tree / f"{lesson.slug}{suffix}", root / tree)
    (root / "tests").mkdir()
    for name in ("conftest.py", "test_lesson_00.py", "test_lesson_01.py"):
        shutil.copy(catalog.root / "tests" / name, root / "tests")
    shutil.copy(catalog.root / "pyproject.toml", root)


def course(root: Path, *args: str) -> tuple[float, float, str]:
    """(wall s, CPU s of the command and its children, output)."""
    env = {**os.environ, "COURSE_ROOT": str(root), "COURSE_DATA": "synthetic", "PYTHONPATH": SRC}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "recsys_course.tooling.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, done.stdout + done.stderr


def children_cpu(pid: int) -> float:
    """CPU seconds of the finished children of ``pid`` (the worker's forked checks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def set_exercise(root: Path, lesson, exercise_id: str, source: str) -> None:
    path = root / "lessons" / lesson.filename
    path.write_text(replace_exercise_cell(path.read_text(), source, exercise_id))


def report(label: str, samples: list[tuple[float, float]]) -> None:
    walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
    print(f"{label:<52} wall median {statistics.median(walls):5.2f} s (min {min(walls):5.2f})"
          f"   CPU median {statistics.median(cpus):5.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-loop", action="store_true", help="skip the endless-loop case")
    args = parser.parse_args()
    catalog = load_catalog()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        root = Path(tmp)
        make_clone(root, catalog)
        l00, l01 = catalog.lesson("00"), catalog.lesson("01")
        solution00 = (root / "solutions" / l00.filename).read_text()
        solution01 = (root / "solutions" / l01.filename).read_text()

        samples = [course(root, "check", "0.1")[:2] for _ in range(args.repeat)]
        report("course check 0.1, stub, cold (no worker)", samples)
        set_exercise(root, l00, "0.1", solution00)
        samples = [course(root, "check", "0.1")[:2] for _ in range(args.repeat)]
        report("course check 0.1, solved, cold (no worker)", samples)
        set_exercise(root, l01, "1.2", solution01)
        samples = [course(root, "check", "1.2")[:2] for _ in range(args.repeat)]
        report("course check 1.2 (NumPy, lesson 01), solved, cold", samples)
        samples = [course(root, "check", "1.5")[:2] for _ in range(2)]
        report("course check 1.5 (Keras), stub, cold", samples)

        env = {**os.environ, "COURSE_ROOT": str(root), "PYTHONPATH": SRC, "TF_CPP_MIN_LOG_LEVEL": "3"}
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "recsys_course.tooling.grading.warm_worker", str(root)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not worker.is_running(root):
                time.sleep(0.2)
            print(f"{'worker ready (TensorFlow preloaded) after':<52} {time.perf_counter() - started:5.2f} s")
            for label, source in (("stub", None), ("solved", solution01)):
                if source:
                    set_exercise(root, l01, "1.5", source)
                samples = []
                for _ in range(args.repeat):
                    cpu0 = children_cpu(server.pid)
                    wall, cpu, out = course(root, "check", "1.5")
                    samples.append((wall, cpu + children_cpu(server.pid) - cpu0))
                report(f"course check 1.5 (Keras), {label}, warm worker", samples)
            samples = []
            for _ in range(args.repeat):
                cpu0 = children_cpu(server.pid)
                wall, cpu, out = course(root, "check", "0.1")
                samples.append((wall, cpu + children_cpu(server.pid) - cpu0))
            report("course check 0.1, solved, warm worker", samples)
        finally:
            server.terminate()
            server.wait(30)

        if not args.skip_loop:
            lines = (root / "lessons" / l00.filename).read_text().splitlines()
            a, b = _exercise_cell_span(lines, "0.2")
            loop = ["def user_activity(ratings):", "    while True:", "        pass", ""]
            endless = "\n".join(lines[:a + 1] + loop + lines[b:]) + "\n"
            (root / "lessons" / l00.filename).write_text(endless)
            wall, cpu, out = course(root, "check", "0.2")
            print(f"{'endless loop in 0.2 (2 tests, 60 s per-test limit)':<52} wall {wall:5.1f} s; "
                  f"'did not finish' reported {out.count('did not finish')} time(s)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
