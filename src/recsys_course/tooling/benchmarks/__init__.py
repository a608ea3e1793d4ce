"""One module per lesson, each with the lesson's benchmark function; ``recsys_course.tooling.bench``
lists them in its ``BENCHMARKS`` table and runs them."""

from __future__ import annotations

import os

QUICK_ENV = "COURSE_BENCH_QUICK"
#: Names ``course bench`` accepts besides lesson ids.
ALIASES = {"ladder": "10"}


def quick() -> bool:
    """True when ``COURSE_BENCH_QUICK`` is set (not empty, not ``0``): a benchmark then runs
    every code path with fewer requests, workers or variants, as a smoke test. Numbers from
    a quick run are not the lesson's measurements."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


#: The most epochs any model trains for in a quick run: enough to go through early
#: stopping's "better" and "not better" branches, not enough to learn anything.
QUICK_EPOCHS = 2


def epochs(full: int) -> int:
    """``full`` epochs, or at most :data:`QUICK_EPOCHS` in a quick run."""
    return min(full, QUICK_EPOCHS) if quick() else full


def when_quick(**options) -> dict:
    """``options`` in a quick run, ``{}`` otherwise: ``train(..., **when_quick(max_epochs=2))``."""
    return options if quick() else {}
