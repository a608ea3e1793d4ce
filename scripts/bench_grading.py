"""Benchmark batch grading: build N submissions of the whole course and time `course grade`.

The class is a mix a real one would have: a third fully solved, a third untouched stubs, a
third with a random half of the exercises solved (seeded). Prints JSON with the wall time
and checks every total against what the mix implies.

    python scripts/bench_grading.py --submissions 30 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.batch import Grader, Options
from recsys_course.tooling.grading.reports import write_reports
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        solved_by = build_class(root / "class", args.submissions)
        options = Options(out=root / "out", jobs=args.jobs)
        grader = Grader(options)
        started = time.perf_counter()
        grades, warnings = grader.grade([root / "class"])
        seconds = time.perf_counter() - started
        write_reports(grades, grader.catalog, options, warnings, grader.isolation())
        grader.cleanup()
        points = {e.id: e.points for e in grader.catalog.exercises}
        mismatches = [
            g.submission.name for g in grades
            if g.total != sum(points[e] for e in solved_by[g.submission.name])
        ]
        print(json.dumps({
            "submissions": len(grades), "lessons": len(grader.catalog.lessons), "jobs": args.jobs,
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count(),
            "wall_seconds": round(seconds, 1),
            "seconds_per_submission": round(seconds / max(1, len(grades)), 2),
            "totals_as_expected": not mismatches, "mismatches": mismatches, "warnings": warnings,
        }, indent=2))


if __name__ == "__main__":
    main()
