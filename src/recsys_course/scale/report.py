"""What the scale ladder concludes from its measurements, and the recorded run the page shows.

:func:`summarize` turns the measured ladder (``{rung: {method: entry}}`` with the rungs'
sizes) into the fitted growth exponents of every method next to the complexity it should
have (:data:`METHODS`), the size at which each stops being practical on the measuring
machine (:func:`recsys_course.scale.growth.practical_limit`), and EASE's predicted memory
at MovieLens 25M's catalogue. ``course bench ladder`` calls it; ``--record`` saves the
whole run as :data:`RECORDED`, which :func:`recorded_ladder` reads for the appendix page.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys_course.scale.growth import dense_matrix_bytes, fit_power_law, practical_limit

RECORDED = Path(__file__).parent / "ladder_recorded.json"

#: A fitted exponent agrees with the expected one when it is within this distance; a
#: "sub-linear" expectation holds when the exponent is at least this far below 1.
AGREEMENT = 0.3
#: The practical rule's budgets: a model retrained every night should train within an
#: hour, and one query's search should take at most 10 ms of a request's time.
TRAIN_BUDGET_SECONDS = 3600.0
QUERY_BUDGET_MS = 10.0
#: MovieLens 25M (GroupLens README): 25,000,095 ratings of 62,423 movies by 162,541 users.
ML25M = {"n_ratings": 25_000_095, "n_movies": 62_423, "n_users": 162_541}
SUBLINEAR = "sub-linear"
#: A limit more than this many times the largest measured size is not shown as a number: a
#: power law fitted over the ladder says nothing that far out.
EXTRAPOLATION_LIMIT = 1000.0


@dataclass(frozen=True)
class Method:
    """How a method's cost is measured and how it should grow.

    ``size``: the size its cost is fitted against (``n_ratings`` or ``n_movies``);
    ``time``: the entry key fitted (``train_seconds``, ``seconds_per_epoch``,
    ``inverse_seconds``, ``query_ms``); ``expected_time``/``expected_memory``: the exponent
    it should have (a number, :data:`SUBLINEAR`, or ``None`` when no single exponent
    describes it); ``complexity``: that in words; ``budget``: ``"train"`` or ``"query"``,
    the practical rule's time budget; ``memory``: whether the memory it adds is fitted (not
    for two workers, whose peak is the largest of several processes); ``fit_largest``: fit
    the time laws on the largest sizes only (that many), where the algorithm's own growth
    dominates the costs that flatten the small end (``None``: every size)."""

    label: str
    size: str
    time: str
    expected_time: float | str | None
    expected_memory: float | str | None
    complexity: str
    budget: str = "train"
    memory: bool = True
    fit_largest: int | None = None


METHODS: dict[str, Method] = {
    "popularity": Method("popularity", "n_ratings", "train_seconds", 1.0, 1.0,
                         "one pass over the ratings: time and memory ~ n_ratings"),
    "item_knn": Method("item-kNN", "n_ratings", "train_seconds", None, None,
                       "the Gram matrix costs the sum over users of their ratings squared, and every pair of "
                       "movies is compared once (~ n_movies²); memory keeps 100 neighbours per movie"),
    # The BLAS rate of a 1-thread inverse rises with the matrix (16 GFLOP/s at 891 movies,
    # 59 at 20,000 in the recorded run), which flattens a fit over every rung.
    "ease": Method("EASE", "n_movies", "inverse_seconds", 3.0, 2.0,
                   "an n_movies x n_movies inverse: time ~ n_movies³, memory ~ n_movies²", fit_largest=2),
    "two_tower": Method("two towers", "n_ratings", "seconds_per_epoch", 1.0, 1.0,
                        "one epoch is one pass over the ratings: time per epoch ~ n_ratings"),
    "two_tower_2workers": Method("two towers, 2 workers", "n_ratings", "seconds_per_epoch", 1.0, None,
                                 "one epoch is one pass over the ratings, shared by two workers", memory=False),
    "exact": Method("exact search", "n_movies", "query_ms", 1.0, 1.0,
                    "every query scores every movie: ~ n_movies per query", budget="query"),
    "annoy": Method("Annoy", "n_movies", "query_ms", SUBLINEAR, 1.0,
                    "a forest of trees: a query visits a fixed number of leaves, ~ log n_movies", budget="query"),
    "hnsw": Method("HNSW", "n_movies", "query_ms", SUBLINEAR, 1.0,
                   "a layered graph walk: ~ log n_movies per query", budget="query"),
}


#: Words for the measures and sizes on pages.
MEASURE_WORDS = {"train_seconds": "training time", "seconds_per_epoch": "time per epoch",
                 "inverse_seconds": "time of the inverse", "query_ms": "time per query"}
SIZE_WORDS = {"n_ratings": "ratings", "n_movies": "movies"}


def agrees(exponent: float | None, expected: float | str | None) -> bool | None:
    """Whether a fitted exponent matches the expected growth (:data:`AGREEMENT`); ``None``
    when either is missing or no single exponent is expected."""
    if exponent is None or expected is None:
        return None
    if expected == SUBLINEAR:
        return exponent <= 1.0 - AGREEMENT
    return abs(exponent - float(expected)) <= AGREEMENT


def measured(entry: dict) -> bool:
    """An entry holds measurements (it was neither skipped nor failed)."""
    return "error" not in entry and "skipped" not in entry


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _law_dict(law) -> dict | None:
    if law is None:
        return None
    return {"exponent": round(law.exponent, 3), "coefficient": law.coefficient, "r2": round(law.r2, 4),
            "points": law.points, "sizes": list(law.sizes)}


def _series(ladder: dict, rungs: dict, method: str, key: str, size: str):
    sizes, values = [], []
    for rung, entries in ladder.items():
        entry = entries.get(method) or {}
        if entry.get(key) is not None and measured(entry):
            sizes.append(rungs[rung][size])
            values.append(entry[key])
    return sizes, values


def _largest(series: tuple[list, list], count: int | None) -> tuple[list, list]:
    """The ``count`` points of ``(sizes, values)`` with the largest sizes (all when ``None``)."""
    if count is None:
        return series
    pairs = sorted(zip(*series))[-count:]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _memory_added(entry: dict) -> float | None:
    if entry.get("peak_rss_mb") is None or entry.get("start_rss_mb") is None:
        return None
    return max(entry["peak_rss_mb"] - entry["start_rss_mb"], 0.0)


def summarize(ladder: dict, rungs: dict, memory_bytes: int | None) -> dict:
    """The ladder's conclusions.

    Args:
        ladder: ``{rung: {method: entry}}``; an entry holds ``train_seconds``,
            ``peak_rss_mb`` (the process's peak resident memory), ``start_rss_mb`` (before
            it read the data) and the method's own timings (``seconds_per_epoch``,
            ``inverse_seconds``, ``query_ms``); an entry with ``"error"`` or ``"skipped"``
            is left out.
        rungs: ``{rung: {"n_ratings": ..., "n_movies": ...}}``.
        memory_bytes: the machine's memory, the practical rule's memory budget.

    Returns:
        ``{"exponents", "practical", "ease_at_25m"}``: per method the fitted time and
        memory laws (exponent, coefficient, R², points), the expected exponents and whether
        they agree; per method the practical limit, which budget binds, and how far beyond
        the largest measured size it lies (an extrapolation far beyond the ladder is a
        statement about the fitted law, not a measurement); and EASE's memory at 62,423
        movies (formula and fit) against ``memory_bytes``.
    """
    memory_mb = memory_bytes / 1e6 if memory_bytes else None
    exponents, practical = {}, {}
    for name, method in METHODS.items():
        if not any(name in entries for entries in ladder.values()):
            continue
        series = _series(ladder, rungs, name, method.time, method.size)
        time_law = fit_power_law(*_largest(series, method.fit_largest))
        rows = [(rungs[r][method.size], entries[name]) for r, entries in ladder.items()
                if name in entries and measured(entries[name])]
        memory_law = fit_power_law([s for s, _ in rows], [_memory_added(e) for _, e in rows]) if method.memory else None
        entry = {
            "size": method.size, "time_measure": method.time, "time": _law_dict(time_law),
            "memory_added": _law_dict(memory_law), "expected_time": method.expected_time,
            "expected_memory": method.expected_memory, "complexity": method.complexity,
            "time_agrees": agrees(time_law.exponent if time_law else None, method.expected_time),
            "memory_agrees": agrees(memory_law.exponent if memory_law else None, method.expected_memory),
        }
        if method.fit_largest is not None:
            entry["fitted_on"] = f"the {method.fit_largest} largest sizes"
            entry["time_every_size"] = _law_dict(fit_power_law(*series))
        total = fit_power_law(*_largest(_series(ladder, rungs, name, "train_seconds", method.size),
                                        method.fit_largest))
        if method.time != "train_seconds" and method.budget == "train":
            entry["train_seconds"] = _law_dict(total)  # the whole training, for the limit
        exponents[name] = entry
        limit_time = time_law if method.budget == "query" else total
        if limit_time is None and memory_law is None:  # e.g. two workers: timed per epoch, not trained
            continue
        fixed = [e.get("start_rss_mb") for _, e in rows if e.get("start_rss_mb") is not None]
        limit = practical_limit(
            limit_time, memory_law,
            time_budget=QUERY_BUDGET_MS if method.budget == "query" else TRAIN_BUDGET_SECONDS,
            memory_budget=memory_mb if memory_mb else math.inf,
            fixed_memory=float(pd.Series(fixed).median()) if fixed else 0.0)
        largest = max((s for s, _ in rows), default=None)
        practical[name] = {"size": method.size, "limit": _finite(limit.size), "binding": limit.binding,
                           "by_time": _finite(limit.by_time) if limit.by_time is not None else None,
                           "by_memory": _finite(limit.by_memory) if limit.by_memory is not None else None,
                           "largest_measured": largest,
                           "times_largest_measured": _finite(limit.size / largest) if largest else None}
    return {
        "exponents": exponents,
        "practical": {
            "rule": (f"A method is practical while its fitted training time stays within "
                     f"{TRAIN_BUDGET_SECONDS / 3600:g} hour (a search: {QUERY_BUDGET_MS:g} ms per query) and its "
                     "fitted peak memory (what its process holds before reading data, plus the fitted growth) "
                     "within the memory of the machine that ran the ladder; the limit is the smallest size "
                     "breaking either, extrapolated from the ladder's power laws."),
            "train_budget_seconds": TRAIN_BUDGET_SECONDS, "query_budget_ms": QUERY_BUDGET_MS,
            "memory_budget_mb": memory_mb, "limits": practical,
        },
        "ease_at_25m": ease_at(ML25M["n_movies"], ladder, rungs, exponents.get("ease"), memory_mb),
    }


def ease_at(n_movies: int, ladder: dict, rungs: dict, fitted: dict | None, memory_mb: float | None) -> dict:
    """EASE's memory for ``n_movies``: one float64 matrix (this implementation inverts the
    Gram matrix in place), two (the Gram matrix and its inverse, as a straightforward
    ``numpy.linalg.inv`` holds), and the ladder's fitted peak; plus the fitted time."""
    one = dense_matrix_bytes(n_movies, 1) / 1e6
    result = {"n_movies": n_movies, "one_matrix_mb": one, "gram_and_inverse_mb": 2 * one,
              "machine_memory_mb": memory_mb, "fitted_peak_mb": None, "fitted_train_seconds": None}
    if fitted and fitted.get("memory_added"):
        law = fitted["memory_added"]
        starts = [entries["ease"].get("start_rss_mb") for entries in ladder.values()
                  if "ease" in entries and entries["ease"].get("start_rss_mb") is not None]
        fixed = float(pd.Series(starts).median()) if starts else 0.0
        result["fitted_peak_mb"] = fixed + law["coefficient"] * n_movies ** law["exponent"]
    if fitted and fitted.get("train_seconds"):
        law = fitted["train_seconds"]
        result["fitted_train_seconds"] = law["coefficient"] * n_movies ** law["exponent"]
    if memory_mb:
        result["fits_in_memory"] = {"one_matrix": one <= memory_mb, "gram_and_inverse": 2 * one <= memory_mb}
    return result


# ----------------------------------------------------------------------------- the recorded run
def recorded_ladder(path: str | os.PathLike = RECORDED) -> dict | None:
    """The ladder's result in the recorded ``course bench ladder --record`` run (``rungs``,
    ``ladder``, ``exponents``, ``practical``, ``ease_at_25m``, ``settings``, ``run``), or
    ``None`` when the file is absent."""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["lessons"]["10"]


def ladder_table(result: dict) -> pd.DataFrame:
    """One row per (rung, method): sizes, training seconds, peak memory, recall@10 and the
    method's own timings, in the ladder's order."""
    rows = []
    for rung, entries in result["ladder"].items():
        sizes = result["rungs"][rung]
        for name, entry in entries.items():
            rows.append({"rung": rung, "method": name, "label": METHODS[name].label if name in METHODS else name,
                         "n_ratings": sizes["n_ratings"], "n_movies": sizes["n_movies"],
                         **{key: value for key, value in entry.items() if not isinstance(value, (dict, list))}})
    return pd.DataFrame(rows)


def rung_columns(result: dict) -> dict[str, str]:
    """``{rung: column title}``: each rung named by its number of ratings (``"35,866 ratings"``)."""
    from recsys_course.claims import fmt

    return {rung: f"{fmt(sizes['n_ratings'], 'count')} ratings" for rung, sizes in result["rungs"].items()}


def pivot(result: dict, measure: str, methods: list[str] | None = None) -> pd.DataFrame:
    """One measure (``train_seconds``, ``peak_rss_mb``, ``recall@10``, ``query_ms``...) of
    every method (rows, by label) on every rung (columns, by number of ratings); a missing,
    skipped or failed measurement is left empty."""
    names = methods or [name for name in METHODS if any(name in entries for entries in result["ladder"].values())]
    columns = rung_columns(result)
    table = pd.DataFrame(
        {columns[rung]: [entries.get(name, {}).get(measure) if measured(entries.get(name, {})) else None
                         for name in names]
         for rung, entries in result["ladder"].items()},
        index=pd.Index([METHODS[name].label for name in names], name="method"),
    )
    return table.astype(float)


def exponent_table(result: dict) -> pd.DataFrame:
    """Per method: what its cost is fitted against, the fitted time and memory exponents,
    the expected ones, and whether they agree (within :data:`AGREEMENT`)."""
    rows = []
    for name, entry in result["exponents"].items():
        time, memory = entry.get("time") or {}, entry.get("memory_added") or {}
        rows.append({
            "method": METHODS[name].label, "grows with": SIZE_WORDS[entry["size"]],
            "time measured": MEASURE_WORDS[entry["time_measure"]],
            "fitted on": entry.get("fitted_on", "every size"),
            "time exponent": time.get("exponent"), "expected": _expected(entry["expected_time"]),
            "agrees": _verdict(entry["time_agrees"]),
            "memory exponent": memory.get("exponent"), "expected memory": _expected(entry["expected_memory"]),
            "memory agrees": _verdict(entry["memory_agrees"]),
        })
    return pd.DataFrame(rows).set_index("method")


def _expected(value) -> str:
    if value is None:
        return "no single exponent"
    return value if isinstance(value, str) else f"{value:g}"


def expected_words(value) -> str:
    """An expected exponent in a sentence: ``"1"``, ``"3"``, ``"sub-linear (below 1)"``."""
    if value == SUBLINEAR:
        return "sub-linear (below 1)"
    return _expected(value)


def _verdict(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def limit_table(result: dict) -> pd.DataFrame:
    """Per method: the size where it stops being practical, the budget that binds, and that
    size as a multiple of the largest size measured; a limit beyond
    :data:`EXTRAPOLATION_LIMIT` times the ladder (or never reached) is left empty."""
    rows = []
    for name, limit in result["practical"]["limits"].items():
        factor = limit["times_largest_measured"]
        near = factor is not None and factor <= EXTRAPOLATION_LIMIT
        rows.append({"method": METHODS[name].label, "size": SIZE_WORDS[limit["size"]],
                     "practical up to": limit["limit"] if near else None,
                     "budget reached first": (limit["binding"] or "-") if near else "neither within reach",
                     "x largest measured": factor if near else None})
    return pd.DataFrame(rows).set_index("method")
