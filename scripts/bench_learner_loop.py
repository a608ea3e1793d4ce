"""Measure the learner's feedback loop against the targets of issue 30: a check of a stub in
every lesson, a NumPy exercise and a Keras exercise, cold (no warm worker: the check starts
one) and after an earlier check (the worker it left behind), plus the old cold path without
a worker for comparison.

    PYTHONPATH=src python scripts/bench_learner_loop.py [--repeat 5] [--lessons 00,02]

CPU seconds count everything a check costs: the ``course`` process and its children, and
the warm worker's own CPU and its forked check while it answered (read from
``/proc/<pid>/stat``), so a worker cannot hide work. The worker's import of TensorFlow once
idle is reported apart: it happens between checks, while the learner edits. Wall seconds
depend on the machine's load, printed beside them. Numbers, not a test.
"""

from __future__ import annotations

import argparse
import json
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
from recsys_course.tooling.lessons import make_stub, replace_exercise_cell

SRC = str(Path(recsys_course.__file__).resolve().parents[1])
TARGETS = {"stub": 0.5, "numpy": 1.0, "keras warm": 1.5, "keras cold": 4.0}


def make_clone(root: Path, catalog) -> None:
    """A learner's clone: solutions, generated lessons and the graded tests."""
    for tree in ("solutions", "lessons"):
        shutil.copytree(catalog.root / tree, root / tree)
    (root / "tests").mkdir()
    for path in (catalog.root / "tests").glob("*.py"):
        shutil.copy(path, root / "tests")
    shutil.copy(catalog.root / "pyproject.toml", root)


def worker_cpu(root: Path) -> tuple[int | None, float]:
    """(pid, CPU seconds so far, its waited-for children included) of the clone's worker."""
    try:
        pid = int(json.loads(worker.info_path(root).read_text())["pid"])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError):
        return None, 0.0
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    return pid, ticks / os.sysconf("SC_CLK_TCK")


def course(root: Path, *args: str, **env_extra: str) -> tuple[float, float, str]:
    """(wall s, CPU s of the command, its children and the worker's work, output)."""
    env = {**os.environ, "COURSE_ROOT": str(root), "COURSE_DATA": "synthetic", "PYTHONPATH": SRC,
           "COURSE_WORKER_IDLE": "600", **env_extra}
    pid0, cpu0 = worker_cpu(root)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "recsys_course.tooling.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid1, cpu1 = worker_cpu(root)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    cpu += cpu1 - (cpu0 if pid1 == pid0 else 0.0)  # a worker this check started counts whole
    return wall, cpu, done.stdout + done.stderr


def stop_worker(root: Path) -> None:
    worker.stop(root)
    deadline = time.monotonic() + 60
    while worker.socket_path(root).exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def settle(root: Path) -> float:
    """Wait until the worker has finished importing the rest of its libraries (its CPU
    stops growing); return the CPU seconds that took."""
    _, start = worker_cpu(root)
    last, stable_since = start, time.monotonic()
    while time.monotonic() - stable_since < 3.0:
        time.sleep(0.5)
        _, now = worker_cpu(root)
        if now != last:
            last, stable_since = now, time.monotonic()
    return last - start


def solve(root: Path, lesson, exercise_id: str) -> None:
    path = root / "lessons" / lesson.filename
    solution = (root / "solutions" / lesson.filename).read_text()
    path.write_text(replace_exercise_cell(path.read_text(), solution, exercise_id))


def measure(label: str, samples: list[tuple[float, float, str]], target: float | None = None,
            expect: str = "") -> dict:
    walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
    wrong = [s[2] for s in samples if expect and expect not in s[2]]
    row = {"case": label, "cpu_median": round(statistics.median(cpus), 2), "cpu_max": round(max(cpus), 2),
           "wall_median": round(statistics.median(walls), 2), "load": round(os.getloadavg()[0], 1)}
    verdict = "" if target is None else ("  meets" if row["cpu_median"] < target else "  MISSES") + f" < {target} s"
    print(f"{label:<58} CPU median {row['cpu_median']:5.2f} s (max {row['cpu_max']:5.2f})   "
          f"wall median {row['wall_median']:5.2f} s   load {row['load']:4.1f}{verdict}", flush=True)
    if wrong:
        print(f"  unexpected output: {wrong[0][-600:]}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lessons", help="lessons for the stub checks (default: all)")
    parser.add_argument("--skip-old", action="store_true", help="skip the cold checks without a worker")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    catalog = load_catalog()
    n = args.repeat
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; medians of {n}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        root = Path(tmp)
        make_clone(root, catalog)
        try:
            lessons = [catalog.lesson(k) for k in args.lessons.split(",")] if args.lessons else catalog.lessons
            for lesson in (l for l in lessons if l.exercises):  # an appendix has none (COURSE_WORKER=off: no warm-up)
                for exercise in (lesson.exercises[0], lesson.exercises[-1]):
                    samples = [course(root, "check", exercise.id, COURSE_WORKER="off") for _ in range(n)]
                    rows.append(measure(f"stub {exercise.id} (lesson {lesson.id})", samples, TARGETS["stub"],
                                        "not solved yet"))

            l00, l02 = catalog.lesson("00"), catalog.lesson("02")
            solve(root, l00, "0.1")
            solve(root, l02, "2.1")
            if not args.skip_old:
                for exercise_id in ("0.1", "2.1"):
                    samples = [course(root, "check", exercise_id, COURSE_WORKER="off") for _ in range(n)]
                    rows.append(measure(f"solved {exercise_id}, cold without a worker (the old path)", samples,
                                        expect="points"))

            for exercise_id, kind in (("0.1", "numpy"), ("2.1", "keras cold")):
                samples = []
                for _ in range(n):
                    stop_worker(root)
                    samples.append(course(root, "check", exercise_id))
                rows.append(measure(f"solved {exercise_id}, cold (starts the worker)", samples, TARGETS[kind],
                                    "points"))
            idle = settle(root)
            print(f"{'  (the worker then imports the rest of its libraries once idle:':<58} CPU {idle:5.2f} s)")

            for exercise_id, kind in (("0.1", "numpy"), ("2.1", "keras warm")):
                samples = []
                for _ in range(n):
                    settle(root)
                    samples.append(course(root, "check", exercise_id))
                rows.append(measure(f"solved {exercise_id}, after an earlier check (warm worker)", samples,
                                    TARGETS[kind], "points"))

            # The usual first contact with a Keras exercise: check the stub (instant; a worker
            # starts warming up in the background), write the answer, check it.
            samples, warmups = [], []
            for _ in range(n):
                stop_worker(root)
                path = root / "lessons" / l02.filename
                solved = path.read_text()
                stub = make_stub((root / "solutions" / l02.filename).read_text(), l02)
                path.write_text(replace_exercise_cell(solved, stub, "2.1"))
                course(root, "check", "2.1")
                deadline = time.monotonic() + 60  # the learner types; the worker imports
                while worker_cpu(root)[0] is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                settle(root)
                warmups.append(worker_cpu(root)[1])  # a new process: all its CPU is the warm-up
                path.write_text(solved)
                samples.append(course(root, "check", "2.1"))
            rows.append(measure("solved 2.1, first check after a check of its stub", samples,
                                TARGETS["keras warm"], "points"))
            print(f"{'  (the worker that stub check started, warming up meanwhile:':<58} CPU median "
                  f"{statistics.median(warmups):5.2f} s)")
        finally:
            stop_worker(root)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
