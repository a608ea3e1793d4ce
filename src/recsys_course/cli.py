"""The ``course`` command: one entry point for learners, instructors and maintainers."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from recsys_course.catalog import Catalog, Exercise, Lesson, load_catalog


def resolve_target(catalog: Catalog, target: str) -> tuple[list[Lesson], list[str]]:
    """Map ``0.1``, ``00``, ``0``, ``00_introduction``, a lesson path or ``all`` to
    (lessons to grade, exercise ids to restrict to, empty for whole lessons)."""
    if target == "all":
        return list(catalog.lessons), []
    if "." in target and not target.endswith(".py"):
        exercise = catalog.exercise(target)
        return [catalog.lesson(exercise.lesson_id)], [exercise.id]
    return [catalog.lesson(Path(target).stem)], []


def cmd_sync(args: argparse.Namespace) -> int:
    from recsys_course.lessons import sync

    results = sync(check=args.check, only=args.lessons or None)
    drift = [r for r in results if r.changed]
    for r in results:
        state = ("out of date" if args.check else "regenerated") if r.changed else "up to date"
        print(f"{r.path.relative_to(load_catalog().root)}: {state}")
        if r.backup:
            print(f"  previous version kept in {r.backup}")
    if args.check and drift:
        print("lessons/ differs from what solutions/ generates: run `course sync`.", file=sys.stderr)
        return 1
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from recsys_course.data import DataSourceError, load_movielens, resolve_source
    from recsys_course.data.sources import cache_dir, tfds_data_dir

    print(f"requested source: {resolve_source(args.data)} (argument, else $COURSE_DATA, else auto)")
    try:
        data = load_movielens(args.data)
    except DataSourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    r = data.ratings
    print(f"loaded source:    {data.source}")
    print(f"description:      {data.description}")
    print(f"ratings:          {len(r):,}")
    print(f"users:            {r['user_id'].nunique():,}")
    print(f"movies rated:     {r['movie_id'].nunique():,} (catalogue {len(data.movies):,})")
    print(f"demographics:     {'yes' if data.has_demographics else 'no'}")
    print(f"columns:          {', '.join(r.columns)}")
    print(f"TFDS cache:       {tfds_data_dir()}")
    print(f"zip extract cache:{' '}{cache_dir() / 'extracted'}")
    return 0


def cmd_hint(args: argparse.Namespace) -> int:
    from recsys_course.state import State

    catalog = load_catalog()
    exercise = catalog.exercise(args.exercise)
    state = State(catalog.root)
    index = state.next_hint_index(exercise.id, len(exercise.hints))
    state.save()
    print(f"Exercise {exercise.id} · {exercise.title}: hint {index + 1} of {len(exercise.hints)}")
    print(f"  {exercise.hints[index]}")
    if index + 1 < len(exercise.hints):
        print(f"Still stuck? Run `course hint {exercise.id}` again for a more explicit hint.")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from recsys_course.grading.runner import run_tests
    from recsys_course.state import State

    catalog = load_catalog()
    lessons, only = resolve_target(catalog, args.target)
    tree = catalog.root / ("solutions" if args.solutions else "lessons")
    run = run_tests(tree, [l.id for l in lessons], exercises=only, timeout=args.timeout)
    if run.timed_out:
        print(f"The check did not finish within {args.timeout:.0f} s: is there an endless loop?")
        return 1
    if not run.report:
        print(run.output[-4000:])
        print("The tests could not run (see the output above).", file=sys.stderr)
        return 1
    state = State(catalog.root)
    failing = 0
    for row in run.report["exercises"]:
        if only and row["id"] not in only or row["status"] == "not run":
            continue
        if not args.solutions:
            state.record(row["id"], row["earned"], row["points"], row["status"])
        mark = "✓" if row["status"] == "passed" else "✗"
        print(f"{mark} {row['id']} {row['title']}: {row['earned']}/{row['points']} points")
        for test in row["tests"]:
            if not test["passed"]:
                name = test["nodeid"].split("::")[-1].removeprefix("test_").replace("_", " ")
                print(f"    failed: {name}\n      {test['failure']}")
        if row["status"] != "passed":
            failing += 1
            print(f"    Stuck? Run: course hint {row['id']}")
    state.save()
    return 1 if failing else 0


def cmd_progress(args: argparse.Namespace) -> int:
    from recsys_course.state import State

    catalog = load_catalog()
    state = State(catalog.root)
    earned_total = possible_total = 0
    for lesson in catalog.lessons:
        print(f"{lesson.slug}")
        for ex in lesson.exercises:
            result = state.result(ex.id) or {}
            earned = result.get("earned", 0) if result.get("points") == ex.points else 0
            status = result.get("status", "not checked")
            earned_total, possible_total = earned_total + earned, possible_total + ex.points
            print(f"  {ex.id:<6}{earned:>3}/{ex.points:<3} {status:<12} {ex.title}")
    percent = 100 * earned_total / possible_total if possible_total else 0
    print(f"total: {earned_total}/{possible_total} points ({percent:.0f} %)")
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from recsys_course.grading.batch import Grader, Options
    from recsys_course.grading.reports import summary_table, write_reports
    from recsys_course.grading.sandbox import SandboxUnavailable

    options = Options(
        out=Path(args.out), timeout=args.timeout, test_timeout=args.test_timeout,
        cell_timeout=args.cell_timeout,
        memory_mb=args.memory_mb or None, jobs=args.jobs,
        extra_tests=Path(args.extra_tests) if args.extra_tests else None, junit=args.junit,
        hidden_summary=not args.no_hidden_summary,
    )
    try:
        grader = Grader(options)
    except SandboxUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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


def cmd_watch(args: argparse.Namespace) -> int:
    """Re-check the current exercise whenever its lesson file is saved; move on when it passes."""
    import time

    from recsys_course.state import State

    catalog = load_catalog()
    state = State(catalog.root)
    pending = [e for e in catalog.exercises if (state.result(e.id) or {}).get("status") != "passed"]
    if args.target:
        lessons, only = resolve_target(catalog, args.target)
        ids = set(only) or {e.id for l in lessons for e in l.exercises}
        pending = [e for e in pending if e.id in ids]
    if not pending:
        print("Everything here passes already. Well done!")
        return 0
    for exercise in pending:
        lesson = catalog.lesson(exercise.lesson_id)
        path = catalog.root / "lessons" / lesson.filename
        print(f"\n=== Exercise {exercise.id}: {exercise.title} ({exercise.points} points) in {path.name}")
        last = None
        while True:
            stamp = path.stat().st_mtime_ns
            if stamp != last:
                last = stamp
                code = cmd_check(argparse.Namespace(target=exercise.id, solutions=False, timeout=args.timeout))
                if code == 0:
                    print("Passed: moving on.")
                    break
                print(f"Waiting for you to save {path.name} (Ctrl-C to stop) ...")
            time.sleep(args.interval)
    print("\nAll watched exercises pass.")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Put an exercise's stub back into the learner's lesson file, keeping a backup."""
    from recsys_course.lessons import backup_lesson, make_stub, replace_exercise_cell

    catalog = load_catalog()
    exercise = catalog.exercise(args.exercise)
    lesson = catalog.lesson(exercise.lesson_id)
    path = catalog.root / "lessons" / lesson.filename
    if not args.yes:
        answer = input(f"Replace your code for exercise {exercise.id} in {path.name} with the stub? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing changed.")
            return 1
    stub = make_stub((catalog.root / "solutions" / lesson.filename).read_text(encoding="utf-8"), lesson)
    current = path.read_text(encoding="utf-8")
    backup = backup_lesson(catalog.root, lesson, current)
    path.write_text(replace_exercise_cell(current, stub, exercise.id), encoding="utf-8")
    print(f"Exercise {exercise.id} is a stub again. Your previous file is in {backup}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from recsys_course import bench

    results = bench.run(args.lessons or None, args.data)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    lesson = catalog.lesson(Path(args.lesson).stem)
    path = catalog.root / ("solutions" if args.solutions else "lessons") / lesson.filename
    env = dict(os.environ)
    if args.data:
        env["COURSE_DATA"] = args.data
    env.setdefault("MPLBACKEND", "Agg")  # plots are saved by the site; no windows here
    return subprocess.call([sys.executable, str(path)], env=env, cwd=catalog.root)


def cmd_serve(args: argparse.Namespace) -> int:
    from recsys_course.serving.__main__ import main as serve

    return serve(args.serve_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course", description="Recommender systems course: check, hints, data, benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="grade an exercise (0.1), a lesson (00) or all")
    p.add_argument("target")
    p.add_argument("--solutions", action="store_true", help="check the reference solutions")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("hint", help="show the next hint for an exercise")
    p.add_argument("exercise")
    p.set_defaults(func=cmd_hint)

    p = sub.add_parser("watch", help="re-check the exercise you work on at every save")
    p.add_argument("target", nargs="?", help="an exercise (0.3) or lesson (00); default: all")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between looks")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("reset", help="restore an exercise's stub (keeps a backup)")
    p.add_argument("exercise")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser("grade", help="grade submissions (folders or zips) into CSV/JSON/feedback")
    p.add_argument("submissions", nargs="+", help="submission folders/zips, or a folder of them")
    p.add_argument("--out", required=True, help="folder for grades.csv, grades.json, feedback/")
    p.add_argument("--extra-tests", help="folder of instructor-only tests (test_lesson_NN*.py)")
    p.add_argument("--junit", action="store_true", help="also write JUnit XML per submission")
    p.add_argument("--jobs", type=int, default=2, help="lessons graded in parallel")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per lesson run")
    p.add_argument("--test-timeout", type=float, default=120.0, help="seconds per test")
    p.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per cell at load")
    p.add_argument("--memory-mb", type=int, default=6144, help="address-space limit (0: none)")
    p.add_argument("--no-hidden-summary", action="store_true",
                   help="do not tell learners whether the hidden checks of an exercise passed")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("progress", help="points per exercise from your last checks")
    p.set_defaults(func=cmd_progress)

    p = sub.add_parser("run", help="run a lesson as a plain script")
    p.add_argument("lesson")
    p.add_argument("--data", help="data source (tfds, synthetic, or a path)")
    p.add_argument("--solutions", action="store_true", help="run the reference solution")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", help="load the dataset and print source, counts and caches")
    p.add_argument("--data", help="data source (auto, tfds, synthetic, synthetic:100k, or a path)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("sync", help="regenerate lessons/ from solutions/")
    p.add_argument("lessons", nargs="*", help="lesson ids or slugs (default: all)")
    p.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser(
        "serve", add_help=False,
        help="the offline practice server for TF Serving's REST/gRPC API (lesson 05)",
    )
    p.add_argument("serve_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="run lesson benchmarks and print JSON")
    p.add_argument("lessons", nargs="*", help="lesson ids (default: all registered)")
    p.add_argument("--data", help="data source (synthetic, tfds, or a path)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # every option belongs to the server's own parser
        return cmd_serve(argparse.Namespace(serve_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyError as error:  # unknown lesson or exercise id
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
