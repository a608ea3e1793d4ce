"""The benchmark runner: how the course's quality and speed numbers are measured.

Each lesson registers one function in ``recsys_course/benchmarks/lesson_NN.py`` with
:func:`register`. It receives the loaded dataset and the lesson's reference solutions (the
``setup`` and ``exercise`` cells of ``solutions/NN_*.py``) and returns a dict of metrics,
including the same-run baselines. The runner adds the dataset and wall time and prints JSON.
Targets belong here, never in timed tests.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import time
from collections.abc import Callable

from recsys_course.catalog import load_catalog
from recsys_course.data import MovieLens, load_movielens
from recsys_course.lessons import load_lesson

Benchmark = Callable[[MovieLens, object], dict]
REGISTRY: dict[str, Benchmark] = {}


def register(lesson_id: str) -> Callable[[Benchmark], Benchmark]:
    def decorate(function: Benchmark) -> Benchmark:
        REGISTRY[lesson_id] = function
        return function

    return decorate


def discover() -> dict[str, Benchmark]:
    from recsys_course import benchmarks

    for info in pkgutil.iter_modules(benchmarks.__path__):
        importlib.import_module(f"{benchmarks.__name__}.{info.name}")
    return dict(sorted(REGISTRY.items()))


def run(lesson_ids: list[str] | None = None, source: str | None = None) -> dict:
    """Run the benchmarks of ``lesson_ids`` (all registered when None) on one dataset."""
    registry = discover()
    catalog = load_catalog()
    wanted = [catalog.lesson(key).id for key in lesson_ids] if lesson_ids else list(registry)
    unknown = [lid for lid in wanted if lid not in registry]
    if unknown:
        raise KeyError(f"no benchmark registered for lesson(s) {', '.join(unknown)}")
    started = time.perf_counter()
    data = load_movielens(source)
    results = {
        "dataset": data.source,
        "dataset_description": data.summary(),
        "load_seconds": round(time.perf_counter() - started, 2),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "lessons": {},
    }
    for lesson_id in wanted:
        lesson = catalog.lesson(lesson_id)
        solutions = load_lesson(catalog.root / "solutions" / lesson.filename, f"solutions_{lesson_id}")
        t0 = time.perf_counter()
        metrics = registry[lesson_id](data, solutions)
        results["lessons"][lesson_id] = {**metrics, "wall_seconds": round(time.perf_counter() - t0, 2)}
    return results
