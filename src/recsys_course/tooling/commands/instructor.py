"""The instructor's command: ``grade`` (batch grading of submissions, docs/instructors.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys_course.errors import MissingTool


def cmd_grade(args: argparse.Namespace) -> int:
    """Grade every submission in a sandbox, write grades.csv, grades.json and feedback/,
    and print the summary table. Raises :class:`MissingTool` when the sandbox cannot run."""
    from recsys_course.tooling.grading.batch import Grader, Options
    from recsys_course.tooling.grading.reports import summary_table, write_reports
    from recsys_course.tooling.grading.sandbox import SandboxUnavailable

    options = Options(
        out=Path(args.out), timeout=args.timeout, test_timeout=args.test_timeout,
        cell_timeout=args.cell_timeout,
        memory_mb=args.memory_mb or None, jobs=args.jobs,
        extra_tests=Path(args.extra_tests) if args.extra_tests else None, junit=args.junit,
        hidden_summary=not args.no_hidden_summary,
        allow_imperfect_reference=getattr(args, "allow_imperfect_reference", False),
    )
    try:
        grader = Grader(options)
    except SandboxUnavailable as error:
        raise MissingTool(str(error)) from error
    catalog = grader.catalog
    try:
        from tqdm import tqdm

        bar = tqdm(total=None, unit="lesson", desc="grading", file=sys.stderr)

        def progress(sub, lesson, exercises):
            bar.update(1)
            bar.set_postfix_str(f"{sub.label} {lesson.id}: {sum(e.earned for e in exercises.values())} pts")

        grades, warnings = grader.grade([Path(p) for p in args.submissions], progress)
        bar.close()
        write_reports(grades, catalog, options, warnings, grader.isolation())
    finally:
        grader.cleanup()
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    possible = sum(e.points for e in grades[0].exercises.values()) if grades else 0
    print(summary_table(grades, possible))
    print(f"\nwrote {options.out / 'grades.csv'}, grades.json and feedback/ for {len(grades)} submission(s)")
    return 0
