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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_course.errors import Refused, UnknownTarget
from recsys_course.tooling.catalog import Catalog, Exercise, Lesson, load_catalog

if TYPE_CHECKING:  # importing recsys_course.tooling.grading imports pytest: only where it is used
    from recsys_course.tooling.grading.results import ExerciseResult
    from recsys_course.tooling.state import State


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


def confirm(question: str, *, yes: bool, how: str) -> bool:
    """Ask ``question`` on the terminal; ``yes`` answers it in advance. Without a terminal
    (a script, ``< /dev/null``) there is nobody to ask: raise a :class:`Refused` saying
    ``how`` to answer in advance (``--yes``) instead of blocking or crashing."""
    if yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        raise Refused(f"{question.rstrip('? ')}? No answer can be read here (no terminal): {how}.")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        print()
        raise Refused(f"no answer was given: nothing changed ({how}).") from None
    return answer.strip().lower() in ("y", "yes")


def _stub_texts(catalog: Catalog, lesson: Lesson, tree: Path | None = None) -> tuple[str, str] | None:
    """(the learner's lesson file in ``tree``, default ``lessons/``, and the stub file
    generated from its solution), or None when either is missing or the solution does not
    generate (then the tests decide)."""
    from recsys_course.tooling.lessons import LessonFormatError, make_stub

    try:
        mine = ((tree or catalog.root / "lessons") / lesson.filename).read_text(encoding="utf-8")
        solution = (catalog.root / "solutions" / lesson.filename).read_text(encoding="utf-8")
        return mine, make_stub(solution, lesson)
    except (OSError, LessonFormatError):
        return None


def unsolved_stubs(catalog: Catalog, lesson: Lesson, exercise_ids: list[str], tree: Path | None = None) -> set[str]:
    """Those of ``exercise_ids`` whose cell in the learner's file (in ``tree``, default
    ``lessons/``) is still the generated stub."""
    from recsys_course.tooling.lessons import still_stubs

    texts = _stub_texts(catalog, lesson, tree)
    return still_stubs(*texts, exercise_ids) if texts else set()


def cell_digest(catalog: Catalog, exercise: Exercise) -> str | None:
    """A short hash of the exercise's cell in the learner's file (None without one): kept
    with each result, so ``progress`` can tell when the cell changed since its check."""
    import hashlib

    from recsys_course.tooling.lessons import exercise_cell

    path = catalog.root / "lessons" / catalog.lesson(exercise.lesson_id).filename
    try:
        cell = exercise_cell(path.read_text(encoding="utf-8"), exercise.id)
    except OSError:
        return None
    return hashlib.sha256(cell.encode()).hexdigest()[:16] if cell is not None else None


def next_unsolved(catalog: Catalog, state: State) -> Exercise | None:
    """The first exercise, in course order, whose last check did not pass (or that was
    never checked); None when every exercise passed."""
    return next((e for e in catalog.exercises if not _passed(state.result(e.id), e)), None)


def _passed(result: dict | None, exercise: Exercise) -> bool:
    """Whether a recorded result is a pass worth the exercise's current points (older
    state files kept a ``status`` string instead of an ``outcome``)."""
    result = result or {}
    return result.get("outcome", result.get("status")) == "passed" and result.get("points") == exercise.points


def not_solved_result(exercise: Exercise) -> ExerciseResult:
    """The result of an exercise whose cell is still the stub, without running its tests."""
    from recsys_course.tooling.grading.messages import not_solved_text
    from recsys_course.tooling.grading.results import ExerciseResult, Outcome

    return ExerciseResult(exercise.id, exercise.title, exercise.points, 0, "failed",
                          not_solved_text(exercise.id, exercise.title), outcome=Outcome.NOT_SOLVED)


def check(
    target: str | None, *, solutions: bool = False, timeout: float = 600.0, test_timeout: float = 60.0,
    lessons_dir: Path | None = None, echo: Callable[[str], None] = print,
) -> int:
    """Grade ``target`` (the next exercise not passed yet when ``None``) in the learner's
    ``lessons/`` (or the solutions, or ``lessons_dir``: a notebook's exercise cells written
    out as lesson files), print one block per exercise and a subtotal per lesson, record
    results (never for the solutions); exit 1 if anything fails.

    An exercise whose cell is still the generated stub is reported "not solved yet" at once,
    without running the lesson or importing its libraries (a warm worker then starts in the
    background, so the learner's first real answer is checked warm). The others are graded
    in a warm worker (:mod:`~recsys_course.tooling.grading.warm_worker`), started for the
    clone when none runs and left behind for the next checks.

    Every line of the verdict goes through ``echo`` (a notebook collects them with
    :func:`check_message`); only the transient "checking ..." line goes to stderr.
    """
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    state = State(catalog.root)
    if target is None:
        nxt = next_unsolved(catalog, state)
        if nxt is None:
            echo("Every exercise passed its last check. Well done! (`course progress` lists them.)")
            return 0
        echo(f"Checking {nxt.id} ({nxt.title}), the first exercise that has not passed yet.")
        target = nxt.id
    lessons, only = resolve_target(catalog, target)
    if not any(lesson.exercises for lesson in lessons):
        echo(f"{', '.join(l.slug for l in lessons)} has no exercises (an appendix): nothing to check.")
        return 0
    tree = lessons_dir or catalog.root / ("solutions" if solutions else "lessons")
    started = time.perf_counter()
    results: dict[str, ExerciseResult] = {}
    wanted = {l.id: (only or [e.id for e in l.exercises]) for l in lessons}
    if not solutions:
        for lesson in lessons:
            for exercise_id in sorted(unsolved_stubs(catalog, lesson, wanted[lesson.id], tree)):
                results[exercise_id] = not_solved_result(catalog.exercise(exercise_id))
    remaining = {lid: [e for e in ids if e not in results] for lid, ids in wanted.items()}
    remaining = {lid: ids for lid, ids in remaining.items() if ids}
    output = ""
    if remaining:
        outcome = _run_checks(catalog, tree, remaining, target, solutions, timeout, test_timeout, echo)
        if isinstance(outcome, int):
            return outcome
        ran, output = outcome
        results.update(ran)
    elif not solutions:  # only stubs: warm a worker up now, for the learner's first answer
        _warm_up(catalog, tree, wanted)
    failing = 0
    unchecked = [e for ids in wanted.values() for e in ids if e not in results]
    for lesson in lessons:
        rows = [results[e] for e in wanted[lesson.id] if e in results]
        for row in rows:
            if not solutions:
                exercise = catalog.exercise(row.id)
                state.record(row.id, row.earned, row.points, row.outcome, cell_digest(catalog, exercise))
            failing += _print_exercise(row, echo)
        if not only:
            earned, points = sum(r.earned for r in rows), sum(r.points for r in rows)
            echo(f"lesson {lesson.id} subtotal: {earned}/{points} points")
    if unchecked:  # the run ended before their tests (a crash): never a silent pass
        from recsys_course.tooling.quiet import strip_noise

        echo(strip_noise(output)[-3000:])
        echo(f"✗ not checked: {', '.join(unchecked)}: the test run ended before their tests "
              "(see the output above)")
    if not solutions:  # a check of the reference solutions leaves no learner state
        state.save()
    echo(f"(checked in {time.perf_counter() - started:.1f} s)")
    return 1 if failing or unchecked else 0


def _run_checks(
    catalog: Catalog, tree: Path, remaining: dict[str, list[str]], target: str, solutions: bool,
    timeout: float, test_timeout: float, echo: Callable[[str], None],
) -> tuple[dict[str, ExerciseResult], str] | int:
    """Run the tests of the ``remaining`` exercises (lesson id -> ids); (the results of those
    whose tests ran, pytest's output), or an exit code after printing why the tests could
    not run at all."""
    from recsys_course.tooling.grading import warm_worker
    from recsys_course.tooling.grading.results import Outcome, ResultError, read_report
    from recsys_course.tooling.grading.runner import run_tests
    from recsys_course.tooling.quiet import strip_noise

    exercises = [e for ids in remaining.values() for e in ids]
    _status_line(f"checking {target} ...")
    if not solutions:  # a warm worker for this check and the next ones (none for solutions)
        first = catalog.lesson(next(iter(remaining)))
        warm_worker.ensure(catalog.root, warm_worker.modules_for(tree / first.filename, set(exercises)))
    run = run_tests(
        tree, list(remaining), exercises=exercises, timeout=timeout, test_timeout=test_timeout,
        use_worker=not solutions,
    )
    _clear_status()
    if run.timed_out:
        echo(f"The check did not finish within {timeout:.0f} s: is there an endless loop?")
        return 1
    try:
        rows = read_report(run.report) if run.report else None
    except ResultError:
        rows = None
    if rows is None:
        echo(strip_noise(run.output)[-4000:])
        echo("The tests could not run (see the output above).")
        return 1
    return {r.id: r for r in rows if r.id in exercises and r.outcome is not Outcome.NOT_RUN}, run.output


def _warm_up(catalog: Catalog, tree: Path, wanted: dict[str, list[str]]) -> None:
    """Start the clone's worker in the background (not waiting for it) with what the
    checked exercises' lesson imports, unless one runs or workers are off."""
    from recsys_course.tooling.grading import warm_worker

    if warm_worker.enabled() and not warm_worker.is_running(catalog.root):
        lesson_id, ids = next(iter(wanted.items()))
        lesson = catalog.lesson(lesson_id)
        warm_worker.start(catalog.root, warm_worker.modules_for(tree / lesson.filename, set(ids)))


# The order of a failing exercise's messages: what the test expected first, then what
# raised (a framework's error is usually a consequence), then the rest.
_SHOWN_FIRST = ("failed", "not_solved", "timed_out", "missing", "error")


def _print_exercise(row: ExerciseResult, echo: Callable[[str], None] = print) -> int:
    """Print one exercise's result through ``echo``; return 1 if it did not pass."""
    from recsys_course.tooling.grading.results import Outcome

    mark = "✓" if row.outcome is Outcome.PASSED else "✗"
    echo(f"{mark} {row.id} {row.title}: {row.earned}/{row.points} points")
    if row.outcome is Outcome.PASSED:
        return 0
    if row.outcome is Outcome.NOT_SOLVED:
        echo(f"    {row.first_failure}")
        return 1
    failures = [t for t in row.tests if not t.passed and not t.hidden and t.outcome is not Outcome.NOT_RUN]
    failures.sort(key=lambda t: _SHOWN_FIRST.index(t.outcome.value) if t.outcome.value in _SHOWN_FIRST else 9)
    shown: set[str] = set()
    for test in failures:
        if test.failure in shown:
            continue
        shown.add(test.failure)
        if test.outcome is Outcome.NOT_SOLVED:
            echo(f"    {test.failure}")
            continue
        name = test.name.removeprefix("test_").replace("_", " ")
        echo(f"    failed: {name}\n      {test.failure}")
    if not failures and row.first_failure:
        echo(f"    {row.first_failure}")
    if not all(t.outcome is Outcome.NOT_SOLVED for t in failures):
        echo(f"    Stuck? Run: course hint {row.id}")
    return 1


def check_message(target: str | None = None, **options) -> tuple[int, str]:
    """What ``course check TARGET`` prints, as one text, and its exit code: the same check
    for callers without a terminal (a notebook cell); ``options`` as for :func:`check`."""
    lines: list[str] = []
    code = check(target, echo=lines.append, **options)
    return code, "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    return check(args.target, solutions=args.solutions, timeout=args.timeout, test_timeout=args.test_timeout)


def cmd_hint(args: argparse.Namespace) -> int:
    """Show the next hint, or with a number any hint already revealed (or the next one);
    without an exercise, for the first exercise that has not passed yet."""
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    state = State(catalog.root)
    if args.exercise is None:
        exercise = next_unsolved(catalog, state)
        if exercise is None:
            print("Every exercise passed its last check: no hint needed. (`course hint 0.1` shows one anyway.)")
            return 0
    else:
        exercise = find_exercise(catalog, args.exercise)
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
    last = " (the last hint)" if index + 1 == total else ""
    print(f"Exercise {exercise.id} · {exercise.title}: hint {index + 1} of {total}{last}")
    print(f"  {exercise.hints[index]}")
    if index + 1 < total:
        print(f"Still stuck? Run `course hint {exercise.id}` again for a more explicit hint.")
    else:
        print("That was the last and most explicit hint. The lesson page on the website has the "
              "solution, folded, for when you have tried.")
    if index > 0:
        print(f"Earlier hints: `course hint {exercise.id} N` with N from 1 to {index}.")
    return 0


def _progress_status(result: dict) -> str:
    """The word ``progress`` shows for a recorded result (older state files kept a
    ``status`` string instead of an outcome)."""
    from recsys_course.tooling.grading.results import Outcome

    outcome = result.get("outcome")
    if outcome not in Outcome._value2member_map_:
        return str(result.get("status", "not checked"))
    if outcome == Outcome.FAILED.value and result.get("earned", 0) > 0:
        return "partial"
    return Outcome(outcome).words


def cmd_progress(args: argparse.Namespace) -> int:
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    state = State(catalog.root)
    earned_total = possible_total = 0
    changed_any = False
    for lesson in catalog.lessons:
        print(f"{lesson.slug}")
        earned_lesson = 0
        for ex in lesson.exercises:
            result = state.result(ex.id) or {}
            earned = result.get("earned", 0) if result.get("points") == ex.points else 0
            status = _progress_status(result) if result else "not checked"
            recorded = result.get("cell")
            changed = bool(recorded) and recorded != cell_digest(catalog, ex)
            changed_any |= changed
            earned_lesson += earned
            note = "  * changed since this check" if changed else ""
            print(f"  {ex.id:<6}{earned:>3}/{ex.points:<3} {status:<12} {ex.title}{note}")
        print(f"  {'subtotal':<6}{earned_lesson:>3}/{lesson.points}" if lesson.exercises
              else "  an appendix: no exercises")
        earned_total, possible_total = earned_total + earned_lesson, possible_total + lesson.points
    percent = 100 * earned_total / possible_total if possible_total else 0
    print(f"total: {earned_total}/{possible_total} points ({percent:.0f} %)")
    print("Points are from your last check of each exercise, not from the files as they are now.")
    if changed_any:
        print("* you changed that exercise in its lesson file after its last check: "
              "`course check N.M` gives its points now.")
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
    passed = {e.id for e in catalog.exercises if _passed(state.result(e.id), e)}
    pending = watch_queue(catalog, passed, args.target)
    if not pending:
        print("Everything here passes already. Well done!")
        return 0
    from recsys_course.tooling.grading import warm_worker as worker

    # A worker of our own, which leaves with us, unless one is running already.
    own = worker.enabled() and not worker.is_running(catalog.root)
    warm = worker.start(catalog.root, parent=os.getpid()) if own else None
    worker.wait_until_listening(catalog.root, warm)  # else the first check would start another
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
    from recsys_course.tooling.lessons import backup_lesson, make_stub, replace_exercise_cell, still_stubs
    from recsys_course.tooling.state import State

    catalog = load_catalog()
    exercise = find_exercise(catalog, args.exercise)
    lesson = catalog.lesson(exercise.lesson_id)
    path = catalog.root / "lessons" / lesson.filename
    stub = make_stub((catalog.root / "solutions" / lesson.filename).read_text(encoding="utf-8"), lesson)
    current = path.read_text(encoding="utf-8")
    state = State(catalog.root)
    if still_stubs(current, stub, [exercise.id]):
        state.forget_result(exercise.id)
        state.save()
        print(f"Exercise {exercise.id} is the stub already: nothing to reset.")
        return 0
    if not confirm(f"Replace your code for exercise {exercise.id} in {path.name} with the stub?",
                   yes=args.yes, how=f"`course reset {exercise.id} --yes` resets without asking"):
        print("Nothing changed.")
        return 1
    backup = backup_lesson(catalog.root, lesson, current)
    path.write_text(replace_exercise_cell(current, stub, exercise.id), encoding="utf-8")
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
