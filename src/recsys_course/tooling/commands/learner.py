"""The learner's commands: check, hint, progress, watch, reset, run, data and serve.

Each ``cmd_*`` takes the parsed arguments and returns an exit code; a problem the learner
can fix is raised as a :class:`~recsys_course.errors.CourseError` and worded by the CLI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_course.tooling.catalog import Catalog, Exercise, Lesson, load_catalog
from recsys_course.errors import UnknownTarget

if TYPE_CHECKING:  # importing recsys_course.tooling.grading imports pytest: only where it is used
    from recsys_course.tooling.grading.results import ExerciseResult

TIMEOUT_NOTE = "not run: an earlier test of exercise"


def find_exercise(catalog: Catalog, exercise_id: str) -> Exercise:
    try:
        return catalog.exercise(exercise_id)
    except KeyError as error:
        raise UnknownTarget(error.args[0]) from None


def find_lesson(catalog: Catalog, key: str) -> Lesson:
    try:
        return catalog.lesson(Path(key).stem)
    except KeyError as error:
        raise UnknownTarget(error.args[0]) from None


def resolve_target(catalog: Catalog, target: str) -> tuple[list[Lesson], list[str]]:
    """Map ``0.1``, ``00``, ``0``, ``00_introduction``, a lesson path or ``all`` to
    (lessons to grade, exercise ids to restrict to, empty for whole lessons)."""
    if target == "all":
        return list(catalog.lessons), []
    if "." in target and not target.endswith(".py"):
        exercise = find_exercise(catalog, target)
        return [catalog.lesson(exercise.lesson_id)], [exercise.id]
    return [find_lesson(catalog, target)], []


def _status_line(text: str) -> None:
    """A transient line on stderr ("checking 0.1 ..."), overwritten on a terminal."""
    end = "\r" if sys.stderr.isatty() else "\n"
    print(text, file=sys.stderr, end=end, flush=True)


def _clear_status() -> None:
    if sys.stderr.isatty():
        print("\r\x1b[2K", file=sys.stderr, end="", flush=True)


def check(
    target: str, *, solutions: bool = False, timeout: float = 600.0, test_timeout: float = 60.0
) -> int:
    """Grade ``target`` in the learner's ``lessons/`` (or the solutions), print one block per
    exercise and a subtotal per lesson, record results; exit 1 if anything fails."""
    from recsys_course.tooling.grading.results import read_report
    from recsys_course.tooling.grading.runner import run_tests
    from recsys_course.tooling.quiet import strip_noise
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    lessons, only = resolve_target(catalog, target)
    if not any(lesson.exercises for lesson in lessons):
        print(f"{', '.join(l.slug for l in lessons)} has no exercises (an appendix): nothing to check.")
        return 0
    tree = catalog.root / ("solutions" if solutions else "lessons")
    _status_line(f"checking {target} ...")
    started = time.perf_counter()
    run = run_tests(
        tree, [l.id for l in lessons], exercises=only, timeout=timeout, test_timeout=test_timeout,
        use_worker=True,  # the warm worker of a running `course watch`, if any
    )
    _clear_status()
    if run.timed_out:
        print(f"The check did not finish within {timeout:.0f} s: is there an endless loop?")
        return 1
    if not run.report:
        print(strip_noise(run.output)[-4000:])
        print("The tests could not run (see the output above).", file=sys.stderr)
        return 1
    state = State(catalog.root)
    failing = 0
    by_lesson: dict[str, list[ExerciseResult]] = {}
    for row in read_report(run.report):
        if only and row.id not in only or row.status == "not run":
            continue
        by_lesson.setdefault(catalog.exercise(row.id).lesson_id, []).append(row)
    for lesson_id, rows in by_lesson.items():
        for row in rows:
            if not solutions:
                state.record(row.id, row.earned, row.points, _status(row))
            failing += _print_exercise(row)
        if not only:
            earned, points = sum(r.earned for r in rows), sum(r.points for r in rows)
            print(f"lesson {lesson_id} subtotal: {earned}/{points} points")
    state.save()
    print(f"(checked in {time.perf_counter() - started:.1f} s)")
    return 1 if failing else 0


def _status(row: ExerciseResult) -> str:
    """The status ``progress`` shows: "not solved" when every failure is a stub in place."""
    failures = [t.failure for t in row.tests if not t.passed]
    if row.earned == 0 and failures and all(f.startswith("not solved yet") for f in failures):
        return "not solved"
    return row.status


def _print_exercise(row: ExerciseResult) -> int:
    """Print one exercise's result; return 1 if it did not pass."""
    mark = "✓" if row.status == "passed" else "✗"
    print(f"{mark} {row.id} {row.title}: {row.earned}/{row.points} points")
    if row.status == "passed":
        return 0
    shown: set[str] = set()
    for test in row.tests:
        failure = test.failure
        if test.passed or test.hidden or failure in shown or failure.startswith(TIMEOUT_NOTE):
            continue
        shown.add(failure)
        if failure.startswith("not solved yet"):
            print(f"    {failure}")
            continue
        name = test.name.removeprefix("test_").replace("_", " ")
        print(f"    failed: {name}\n      {failure}")
    if not any(f.startswith("not solved yet") for f in shown):
        print(f"    Stuck? Run: course hint {row.id}")
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    return check(args.target, solutions=args.solutions, timeout=args.timeout, test_timeout=args.test_timeout)


def cmd_hint(args: argparse.Namespace) -> int:
    """Show the next hint, or with a number any hint already revealed (or the next one)."""
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    exercise = find_exercise(catalog, args.exercise)
    state = State(catalog.root)
    total = len(exercise.hints)
    revealed = state.hints_revealed(exercise.id)
    if args.number is not None:
        if not 1 <= args.number <= total:
            raise UnknownTarget(f"exercise {exercise.id} has hints 1 to {total}, not {args.number}")
        if args.number > revealed + 1:
            print(f"Hint {args.number} is not revealed yet; here is hint {revealed + 1} first.")
        index = min(args.number - 1, revealed)
        if index == revealed:
            state.next_hint_index(exercise.id, total)
    else:
        index = state.next_hint_index(exercise.id, total)
    state.save()
    print(f"Exercise {exercise.id} · {exercise.title}: hint {index + 1} of {total}")
    print(f"  {exercise.hints[index]}")
    if index + 1 < total:
        print(f"Still stuck? Run `course hint {exercise.id}` again for a more explicit hint.")
    if index > 0:
        print(f"Earlier hints: `course hint {exercise.id} N` with N from 1 to {index}.")
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    state = State(catalog.root)
    earned_total = possible_total = 0
    for lesson in catalog.lessons:
        print(f"{lesson.slug}")
        earned_lesson = 0
        for ex in lesson.exercises:
            result = state.result(ex.id) or {}
            earned = result.get("earned", 0) if result.get("points") == ex.points else 0
            status = result.get("status", "not checked")
            earned_lesson += earned
            print(f"  {ex.id:<6}{earned:>3}/{ex.points:<3} {status:<12} {ex.title}")
        print(f"  {'subtotal':<6}{earned_lesson:>3}/{lesson.points}" if lesson.exercises
              else "  an appendix: no exercises")
        earned_total, possible_total = earned_total + earned_lesson, possible_total + lesson.points
    percent = 100 * earned_total / possible_total if possible_total else 0
    print(f"total: {earned_total}/{possible_total} points ({percent:.0f} %)")
    return 0


def watch_queue(catalog: Catalog, passed: set[str], target: str | None) -> list[Exercise]:
    """Exercises ``watch`` walks through: from ``target`` (an exercise or lesson) onwards in
    course order, skipping those already passed; all unpassed ones without a target."""
    exercises = catalog.exercises
    if target:
        lessons, only = resolve_target(catalog, target)
        if not only and not lessons[0].exercises:  # an appendix: nothing to watch there
            return []
        first = only[0] if only else lessons[0].exercises[0].id
        start = next(i for i, e in enumerate(exercises) if e.id == first)
        exercises = exercises[start:]
    return [e for e in exercises if e.id not in passed]


def cmd_watch(args: argparse.Namespace) -> int:
    """Re-check the current exercise whenever its lesson file is saved; move on to the next
    unpassed exercise when it passes."""
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    state = State(catalog.root)
    passed = {e.id for e in catalog.exercises if (state.result(e.id) or {}).get("status") == "passed"}
    pending = watch_queue(catalog, passed, args.target)
    if not pending:
        print("Everything here passes already. Well done!")
        return 0
    from recsys_course.tooling.grading import warm_worker as worker

    warm = worker.start(catalog.root)  # keeps TensorFlow loaded between checks
    try:
        _watch(catalog, pending, args)
    finally:
        if warm is not None:
            warm.terminate()
            warm.wait(10)
    print("\nAll watched exercises pass.")
    return 0


def _watch(catalog: Catalog, pending: list[Exercise], args: argparse.Namespace) -> None:
    for exercise in pending:
        lesson = catalog.lesson(exercise.lesson_id)
        path = catalog.root / "lessons" / lesson.filename
        print(f"\n=== Exercise {exercise.id}: {exercise.title} ({exercise.points} points) in {path.name}")
        last = None
        while True:
            stamp = path.stat().st_mtime_ns
            if stamp != last:
                last = stamp
                if check(exercise.id, timeout=args.timeout, test_timeout=args.test_timeout) == 0:
                    print("Passed: moving on.")
                    break
                print(f"Waiting for you to save {path.name} (Ctrl-C to stop) ...")
            time.sleep(args.interval)


def cmd_reset(args: argparse.Namespace) -> int:
    """Put an exercise's stub back into the learner's lesson file (keeping a backup) and
    forget its last result."""
    from recsys_course.tooling.lessons import backup_lesson, make_stub, replace_exercise_cell
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    exercise = find_exercise(catalog, args.exercise)
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
    state = State(catalog.root)
    state.forget_result(exercise.id)
    state.save()
    print(f"Exercise {exercise.id} is a stub again and its points are cleared. "
          f"Your previous file is in {backup}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a lesson cell by cell in a child process, showing tables and saving figures."""
    catalog = load_catalog()
    lesson = find_lesson(catalog, args.lesson)
    solutions = catalog.root / "solutions" / lesson.filename
    path = solutions if args.solutions else catalog.root / "lessons" / lesson.filename
    env = dict(os.environ)
    if args.data:
        env["COURSE_DATA"] = args.data
    env.setdefault("MPLBACKEND", "Agg")  # figures are saved and named, no windows
    command = [
        sys.executable, "-m", "recsys_course.tooling.lesson_run", str(path),
        "--figures", str(catalog.root / ".course" / "figures" / lesson.slug),
        "--command", f"course run {lesson.id}",
    ]
    if solutions.exists():
        command += ["--solutions", str(solutions)]
    if args.use_solutions:
        command.append("--use-solutions")
    try:
        return subprocess.call(command, env=env, cwd=catalog.root)
    except KeyboardInterrupt:  # the child got it too and says so
        return 130


def cmd_data(args: argparse.Namespace) -> int:
    from recsys_course.data import load_movielens, resolve_source
    from recsys_course.data.sources import cache_dir, tfds_data_dir

    print(f"requested source: {resolve_source(args.data)} (argument, else $COURSE_DATA, else auto)")
    data = load_movielens(args.data)  # a DataSourceError is worded by the CLI
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


def serve(arguments: list[str]) -> int:
    """``course serve ARGS``: the practice server, every argument its own parser's."""
    from recsys_course.serving.__main__ import main

    return main(arguments)
