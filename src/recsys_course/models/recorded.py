"""Searches run offline on validation splits, stated on the lesson pages instead of re-run.

A lesson that shows every grid point it chose from would take many minutes on real data, so
the larger grids (lesson 02's batch size and learning rate, lesson 03's history-tower
epochs, lesson 04's L2 strength and epochs) were run once on MovieLens 100K's validation
split by :mod:`recsys_course.tooling.benchmarks.searches`, and their results are stored
here as JSON, one file per search. Lessons read them with :func:`recorded_search`, show
them as tables and generate their sentences from them; the page then trains only the
chosen setting. Each file says what was searched, on which data, with which metric, and
which command reproduces it.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORDED_DIR = Path(__file__).resolve().parent / "recorded"


def recorded_search(name: str) -> dict:
    """The recorded search ``name`` (``models/recorded/<name>.json``) as a dict with at least
    ``search``, ``dataset``, ``protocol``, ``metric``, ``produced_by`` and ``rows``.

    Raises ``FileNotFoundError`` naming the searches that exist when ``name`` is unknown.
    """
    path = RECORDED_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in RECORDED_DIR.glob("*.json"))
        raise FileNotFoundError(f"no recorded search {name!r}; recorded: {', '.join(known) or 'none'}")
    return json.loads(path.read_text(encoding="utf-8"))
