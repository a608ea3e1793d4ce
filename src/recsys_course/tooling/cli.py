"""The ``course`` command: argument parsing and dispatch, by audience.

Learners: check, hint, progress, watch, reset, run, data, serve (:mod:`.commands.learner`).
Instructors: grade, merge (:mod:`.commands.instructor`). Authors and maintainers: sync, bench
(:mod:`.commands.author`). This module only declares the arguments and dispatches: a
:class:`~recsys_course.errors.CourseError` becomes ``error: <message>`` and its exit code;
Ctrl-C ends quietly with 130; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from recsys_course.tooling.commands import author, instructor, learner
from recsys_course.errors import CourseError

EPILOG = """\
instructors:
  grade       grade submissions (folders or zips) into CSV/JSON/feedback (course grade -h)
  merge       combine the outputs of course grade --shard I/N into one class's reports

authors and maintainers (not for learners: sync rewrites lessons/):
  sync        regenerate lessons/ from solutions/ (refuses to overwrite edited exercises)
  bench       run lesson benchmarks and print JSON

Add --verbose before the command to see TensorFlow's own log lines."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course",
        description="Recommender systems course: check your exercises, get hints, run lessons.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ and absl log lines (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands for learners")

    p = sub.add_parser("check", help="grade an exercise (0.1), a lesson (00) or all; "
                                     "alone, the first exercise not passed yet")
    p.add_argument("target", nargs="?", help="0.1, 00 or all (default: the next exercise to do)")
    p.add_argument("--solutions", action="store_true", help="check the reference solutions")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    p.add_argument("--test-timeout", type=float, default=60.0,
                   help="seconds one test may run; an exercise that runs past it stops there")
    p.set_defaults(func=learner.cmd_check)

    p = sub.add_parser("hint", help="show the next hint for an exercise (or hint N again)")
    p.add_argument("exercise", nargs="?", help="default: the first exercise not passed yet")
    p.add_argument("number", nargs="?", type=int, help="show this hint again (1 = the first)")
    p.set_defaults(func=learner.cmd_hint)

    p = sub.add_parser("progress", help="points per exercise and lesson from your last checks "
                                        "(and which exercises changed since)")
    p.set_defaults(func=learner.cmd_progress)

    p = sub.add_parser("watch", help="re-check the exercise you work on at every save, then move on")
    p.add_argument("target", nargs="?", help="start at an exercise (0.3) or lesson (00); default: all")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between looks")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--test-timeout", type=float, default=60.0)
    p.set_defaults(func=learner.cmd_watch)

    p = sub.add_parser("reset", help="restore an exercise's stub and clear its points (keeps a backup)")
    p.add_argument("exercise")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed without a terminal)")
    p.set_defaults(func=learner.cmd_reset)

    p = sub.add_parser("run", help="run a lesson, showing its tables and saving its figures")
    p.add_argument("lesson")
    p.add_argument("--data", help="data source (tfds, synthetic, or a path)")
    p.add_argument("--use-solutions", action="store_true",
                   help="run the reference solution of each exercise you have not solved yet")
    p.add_argument("--solutions", action="store_true", help="run the reference solution file")
    p.set_defaults(func=learner.cmd_run)

    p = sub.add_parser("data", help="load the dataset and print source, counts and caches")
    p.add_argument("--data", help="data source (auto, tfds, synthetic, synthetic:100k, or a path)")
    p.set_defaults(func=learner.cmd_data)

    p = sub.add_parser(
        "serve", add_help=False,
        help="the offline practice server for TF Serving's REST/gRPC API (lesson 08)",
    )
    p.add_argument("serve_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: learner.serve(args.serve_args))

    # Instructors' and authors' commands: listed in the epilog, not among the learner's.
    p = sub.add_parser("grade")
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
    p.add_argument("--lessons", help="grade only these lessons, e.g. 00,01 (default: all)")
    p.add_argument("--shard", metavar="I/N",
                   help="grade only shard I of N (0 <= I < N) of the class, for a scheduler's array "
                        "job; combine the shard outputs with course merge")
    p.add_argument("--allow-imperfect-reference", action="store_true",
                   help="write the reports even if the reference solutions miss points (they are refused otherwise)")
    p.set_defaults(func=instructor.cmd_grade)

    p = sub.add_parser("merge")
    p.add_argument("shards", nargs="+", metavar="SHARD_OUT", help="the --out folders of every shard")
    p.add_argument("--out", required=True, help="folder for the class's grades.csv, grades.json, feedback/")
    p.set_defaults(func=instructor.cmd_merge)

    p = sub.add_parser("sync")
    p.add_argument("lessons", nargs="*", help="lesson ids or slugs (default: all)")
    p.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    p.add_argument("--force", action="store_true",
                   help="also overwrite lesson files whose exercises were edited (after a backup)")
    p.set_defaults(func=author.cmd_sync)

    p = sub.add_parser("bench")
    p.add_argument("lessons", nargs="*", help="lesson ids, or ladder for the scale ladder (default: all registered)")
    p.add_argument("--data", help="data source (synthetic, tfds, or a path); for the ladder, comma-separated rungs")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--record", action="store_true",
                   help="save the scale ladder's run for its appendix page (course bench ladder --record)")
    p.set_defaults(func=author.cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from recsys_course.tooling.quiet import filter_stderr, quiet_environment

    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv[:1]
    if verbose:
        argv = argv[1:]
    quiet_environment(verbose)
    if not verbose:
        filter_stderr()
    try:
        if argv[:1] == ["serve"]:  # every option belongs to the server's own parser
            return learner.serve(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\nStopped.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `course progress | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
