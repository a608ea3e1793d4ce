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
