"""Authors' and maintainers' commands: ``sync`` (regenerate lessons/) and ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys_course.tooling.catalog import load_catalog


def cmd_sync(args: argparse.Namespace) -> int:
    from recsys_course.tooling.lessons import LearnerWorkError, sync

    root = load_catalog().root
    try:
        results = sync(check=args.check, only=args.lessons or None, force=args.force)
    except LearnerWorkError as refused:
        _print_sync(refused.results, root, args.check)
        raise
    _print_sync(results, root, args.check)
    if args.check and any(r.changed for r in results):
        print(
            "lessons/ differs from what solutions/ generates. Authors: regenerate it with "
            "`course sync` and commit both (learners: nothing to do).",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_sync(results, root: Path, check: bool) -> None:
    for r in results:
        if not r.changed:
            state = "up to date"
        elif check:
            state = "out of date" + (f" (changed by you: {', '.join(r.edited)})" if r.edited else "")
        elif r.written:
            state = "regenerated" + (f" (your {', '.join(r.edited)} are in the backup)" if r.edited else "")
        else:
            state = f"NOT regenerated: it would lose your {', '.join(r.edited)}"
        print(f"{r.path.relative_to(root)}: {state}")
        if r.backup:
            print(f"  previous version kept in {r.backup}")


def cmd_bench(args: argparse.Namespace) -> int:
    from recsys_course.errors import UnknownTarget
    from recsys_course.tooling.benchmarks import ALIASES

    catalog = load_catalog()
    for key in args.lessons or []:  # a typo is answered before the benchmarks (and TensorFlow) load
        try:
            catalog.lesson(ALIASES.get(key, key))
        except KeyError as error:
            raise UnknownTarget(error.args[0]) from None
    from recsys_course.tooling import bench

    if args.record and [key if key not in bench.ALIASES and not key.startswith("10") else "10"
                        for key in args.lessons] != ["10"]:
        raise UnknownTarget("--record saves the scale ladder's run only: course bench ladder --record")
    results = bench.run(args.lessons or None, args.data)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.record:
        from recsys_course.tooling.benchmarks import ladder

        print(f"recorded in {ladder.record(results)}", file=sys.stderr)
    return 0
