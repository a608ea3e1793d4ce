"""The instructor's commands: ``grade`` (batch grading of submissions) and ``merge`` (the
reports of a class graded in shards), docs/instructors.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys_course.errors import MissingTool, UnknownTarget


def _catalog(lessons: str | None):
    """The course's catalog, or only the lessons of ``--lessons 00,01``."""
    from recsys_course.tooling.catalog import Catalog, load_catalog

    catalog = load_catalog()
    if not lessons:
        return catalog
    try:
        chosen = tuple(dict.fromkeys(catalog.lesson(key.strip()) for key in lessons.split(",") if key.strip()))
    except KeyError as error:
        raise UnknownTarget(f"--lessons: {error.args[0]}") from None
    return Catalog(catalog.root, chosen)


def cmd_grade(args: argparse.Namespace) -> int:
    """Grade every submission (or one shard of them) in a sandbox, write grades.csv,
    grades.json and feedback/ (and shard.json), and print the summary table. Raises
    :class:`MissingTool` when the sandbox cannot run."""
    from recsys_course.tooling.grading import shards
    from recsys_course.tooling.grading.batch import Grader, Options
    from recsys_course.tooling.grading.intake import plan
    from recsys_course.tooling.grading.reports import summary_table, write_reports
    from recsys_course.tooling.grading.sandbox import SandboxUnavailable
    from recsys_course.tooling.grading.text import one_line

    shard = shards.Shard.parse(args.shard) if args.shard else None
    catalog = _catalog(args.lessons)
    options = Options(
        out=Path(args.out), timeout=args.timeout, test_timeout=args.test_timeout,
        cell_timeout=args.cell_timeout,
        memory_mb=args.memory_mb or None, jobs=args.jobs,
        extra_tests=Path(args.extra_tests) if args.extra_tests else None, junit=args.junit,
        hidden_summary=not args.no_hidden_summary, shard=shard,
        allow_imperfect_reference=args.allow_imperfect_reference,
    )
    sources = [Path(p) for p in args.submissions]
    try:
        grader = Grader(options, catalog)
    except SandboxUnavailable as error:
        raise MissingTool(str(error)) from error
    try:
        from tqdm import tqdm

        bar = tqdm(total=None, unit="lesson", desc="grading" + (f" shard {shard}" if shard else ""), file=sys.stderr)

        def progress(sub, lesson, exercises):
            bar.update(1)
            # The name is the learner's choice: one line, no escape sequence, bounded.
            name = one_line(sub.label, 40)
            bar.set_postfix_str(f"{name} {lesson.id}: {sum(e.earned for e in exercises.values())} pts")

        grades, warnings = grader.grade(sources, progress)
        bar.close()
        maxima = {e.id: grader.expected[lesson.id][e.id] for lesson in catalog.lessons for e in lesson.exercises}
        entries = write_reports(grades, catalog, options, warnings, grader.isolation(),
                                calibration=shards.calibration(catalog, options), maxima=maxima)
        if shard is not None:
            shards.write_manifest(options.out, shard, plan(sources, catalog))
    finally:
        grader.cleanup()
    for warning in warnings:
        print(f"WARNING: {one_line(warning)}", file=sys.stderr)
    possible = sum(maxima.values())
    print(summary_table(entries, possible))
    what = f"shard {shard} ({len(grades)} submission(s)); combine the shards with course merge" if shard \
        else f"{len(grades)} submission(s)"
    print(f"\nwrote {options.out / 'grades.csv'}, grades.json and feedback/ for {what}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Combine the outputs of ``course grade --shard I/N`` into one class's reports."""
    from recsys_course.tooling.grading.reports import summary_table
    from recsys_course.tooling.grading.shards import merge

    out = Path(args.out)
    head, entries = merge([Path(p) for p in args.shards], out)
    print(summary_table(entries, head.get("possible", 0)))
    print(f"\nwrote {out / 'grades.csv'}, grades.json and feedback/ for {len(entries)} submission(s) "
          f"from {len(args.shards)} shard(s)")
    return 0
