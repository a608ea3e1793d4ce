"""Benchmark of batch grading: a class of N submissions x every lesson, sandboxed and not.

    PYTHONPATH=src python scripts/bench_grading.py [--submissions 30] [--jobs 2] [--json FILE]

The class is a mix a real one would have: a third fully solved, a third untouched stubs, a
third with a random half of the exercises solved (seeded), so every total is known in
advance and checked. Both runs grade the same submissions, in the same chunks, with the same
number of parallel jobs, in this one process:

* **sandboxed**: ``Grader.grade``, exactly what ``course grade`` runs (calibration of the
  reference included, reported apart);
* **unsandboxed**: the same trusted pytest runs without ``--sandbox`` (lessons loaded in the
  pytest process, as ``course check`` does).

It prints wall times, lesson runs (submission x lesson), trusted pytest runs, the
sandboxed / unsandboxed wall-time ratio, whether both runs gave the same points, and how busy
the machine was (load average and the share of CPU time other processes used). Targets
(issue 28): under 5 minutes for 30 submissions on 2 idle cores; ratio at most 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.batch import Grader, Options, _rows
from recsys_course.tooling.grading.intake import stage_all
from recsys_course.tooling.grading.runner import run_tests
from recsys_course.tooling.grading.sandbox import _cgroup_parents
from recsys_course.tooling.lessons import make_stub, replace_exercise_cell


def build_class(root: Path, n: int, seed: int = 0) -> dict[str, set[str]]:
    """Write n submissions under root; return the exercise ids each one solved."""
    catalog = load_catalog()
    rng = random.Random(seed)
    solved_by: dict[str, set[str]] = {}
    for i in range(n):
        name = f"learner{i:02d}"
        kind = i % 3
        solved: set[str] = set()
        for lesson in catalog.lessons:
            solution = (catalog.root / "solutions" / lesson.filename).read_text()
            text = make_stub(solution, lesson)
            for ex in lesson.exercises:
                if kind == 0 or (kind == 2 and rng.random() < 0.5):
                    text = replace_exercise_cell(text, solution, ex.id)
                    solved.add(ex.id)
            (root / name / "lessons").mkdir(parents=True, exist_ok=True)
            (root / name / "lessons" / lesson.filename).write_text(text)
        solved_by[name] = solved
    return solved_by


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def own_cpu() -> float:
    """CPU seconds of this process and its waited-for children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Phase:
    """Wall time, machine load and, where this process may create a control group, the CPU
    seconds of everything the phase ran (this process moves into a group of its own, and
    every process it starts, sandboxes included, is counted there): a measure a busy
    machine changes far less than wall time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cpu: float | None = None

    def __enter__(self) -> Phase:
        self.load = os.getloadavg()[0]
        self.busy = cpu_busy()
        self.group = None
        parent = _cgroup_parents().get("cpu")
        if parent is not None and (parent / "cpuacct.usage").exists():
            self.home = parent
            self.group = parent / f"bench-{self.name}-{os.getpid()}"
            self.group.mkdir()
            (self.group / "cgroup.procs").write_text(str(os.getpid()))
        self.started = time.perf_counter()
        return self

    def __exit__(self, *error) -> None:
        self.wall = time.perf_counter() - self.started
        busy, total = cpu_busy()
        self.machine_busy = (busy - self.busy[0]) / max(1, total - self.busy[1])
        self.load_after = os.getloadavg()[0]
        if self.group is not None:
            self.cpu = int((self.group / "cpuacct.usage").read_text()) / 1e9
            (self.home / "cgroup.procs").write_text(str(os.getpid()))
            for _ in range(100):  # empty once the phase's processes are reaped
                try:
                    self.group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def unsandboxed(grader: Grader, sources: list[Path]) -> tuple[dict[str, dict[str, int]], int]:
    """The class graded by the same trusted runs without the sandbox: points per exercise."""
    subs = stage_all(sources, grader.work / "plain", grader.catalog)
    lessons = [lesson.id for lesson in grader.catalog.lessons]

    def run(chunk):
        return run_tests(
            chunk[0].lessons_dir, lessons, catalog=grader.catalog, tests_dir=grader.tests,
            submissions={s.name: s.lessons_dir for s in chunk}, timeout=24 * 3600,
            test_timeout=grader.options.test_timeout, cell_timeout=grader.options.cell_timeout,
            env={"PYTHONPATH": str(grader.private / "src"), "COURSE_ROOT": str(grader.private)},
        )

    chunks = grader.chunks(subs)
    with ThreadPoolExecutor(max_workers=grader.options.jobs) as pool:
        runs = list(pool.map(run, chunks))
    points = {}
    for run in runs:
        for name, part in (run.report.get("submissions") or {}).items():
            points[name] = {row.id: row.earned for row in _rows(part).values()}
    return points, len(chunks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        solved_by = build_class(work / "class", args.submissions)
        sources = sorted((work / "class").iterdir())
        grader = Grader(Options(out=work / "out", jobs=args.jobs))
        try:
            with Phase("calibration") as calibration:
                warnings = grader.calibrate()
            grader.calibrate = lambda: warnings  # grade() would calibrate again: count it once
            with Phase("sandboxed") as sandboxed:
                grades, _ = grader.grade(sources)
            sandboxed_runs = grader.runs - 1
            with Phase("unsandboxed") as plain:
                plain_points, plain_runs = unsandboxed(grader, sources)
        finally:
            grader.cleanup()
        same = all(
            {e.id: e.earned for e in g.exercises.values()} == plain_points.get(g.submission.name)
            for g in grades
        )
        lesson_runs = sum(1 for g in grades for run in g.lessons.values() if run.mode != "missing")
        points = {e.id: e.points for e in grader.catalog.exercises}
        mismatches = [g.submission.name for g in grades
                      if g.total != sum(points[e] for e in solved_by[g.submission.name])]
        result = {
            "submissions": len(grades), "lessons": len(grader.catalog.lessons), "jobs": args.jobs,
            "cpus": os.cpu_count(), "lesson_runs": lesson_runs,
            "trusted_runs": {"sandboxed": sandboxed_runs, "unsandboxed": plain_runs},
            "calibration_s": round(calibration.wall, 1),
            "sandboxed_s": round(sandboxed.wall, 1), "unsandboxed_s": round(plain.wall, 1),
            "ratio": round(sandboxed.wall / plain.wall, 2),
            "cpu_s": {p.name: round(p.cpu, 1) if p.cpu is not None else None for p in (calibration, sandboxed, plain)},
            "cpu_ratio": round(sandboxed.cpu / plain.cpu, 2) if sandboxed.cpu and plain.cpu else None,
            "sandboxed_with_calibration_s": round(calibration.wall + sandboxed.wall, 1),
            "same_points": same, "totals_as_expected": not mismatches, "mismatches": mismatches,
            "reference_warnings": warnings,
            "load": {p.name: {"load_before": round(p.load, 2), "load_after": round(p.load_after, 2),
                              "machine_cpu_busy": round(p.machine_busy, 2)}
                     for p in (calibration, sandboxed, plain)},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{result['submissions']} submissions x {result['lessons']} lessons, {args.jobs} jobs, "
          f"{result['cpus']} CPUs: {lesson_runs} lesson runs")
    print(f"  calibration      {result['calibration_s']:8.1f} s")
    print(f"  sandboxed        {result['sandboxed_s']:8.1f} s   ({sandboxed_runs} trusted pytest runs)")
    print(f"  unsandboxed      {result['unsandboxed_s']:8.1f} s   ({plain_runs} trusted pytest runs)")
    print(f"  ratio            {result['ratio']:8.2f}      (target <= 1.5)")
    if result["cpu_ratio"] is not None:
        cpu = result["cpu_s"]
        print(f"  CPU seconds      calibration {cpu['calibration']}, sandboxed {cpu['sandboxed']}, "
              f"unsandboxed {cpu['unsandboxed']}: ratio {result['cpu_ratio']}")
    print(f"  total with calibration {result['sandboxed_with_calibration_s']:.1f} s (target < 300 s idle)")
    print(f"  same points in both runs: {same}; every total as the class implies: {not mismatches}")
    for name, load in result["load"].items():
        print(f"  {name:12} load {load['load_before']:.1f} -> {load['load_after']:.1f}, "
              f"machine CPU busy {100 * load['machine_cpu_busy']:.0f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if same and not mismatches and not warnings else 1


if __name__ == "__main__":
    sys.exit(main())
