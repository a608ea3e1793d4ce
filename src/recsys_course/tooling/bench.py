"""The benchmark runner: how the course's quality and speed numbers are measured.

Each lesson has one benchmark function in ``recsys_course/benchmarks/lesson_NN.py``, listed
in :data:`BENCHMARKS`. It receives the loaded dataset and the lesson's reference solutions
(the ``setup`` and ``exercise`` cells of ``solutions/NN_*.py``, loaded by
:func:`~recsys_course.tooling.grading.loader.load_lesson`) and returns a dict of metrics, including the
same-run baselines. The runner adds the dataset and wall time and prints JSON. Targets
belong here, never in timed tests.

``tests/dev/test_benchmarks.py`` checks that every ``lesson.<name>`` a benchmark reads is
defined by a setup or exercise cell of its lesson, and runs every benchmark on
``synthetic:tiny`` in quick mode (``COURSE_BENCH_QUICK=1``, :func:`recsys_course.tooling.benchmarks.quick`).

The appendix's scale ladder (lesson 10, also named ``ladder``) loads its own data: it runs
every size in fresh processes, so it receives the ``--data`` string (comma-separated
rungs), not a loaded dataset (:data:`OWN_DATA`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

from recsys_course.tooling.benchmarks import (
    ALIASES,
    QUICK_ENV,
    lesson_00,
    lesson_01,
    lesson_02,
    lesson_03,
    lesson_04,
    lesson_05,
    lesson_06,
    lesson_07,
    lesson_08,
    lesson_09,
    ladder,
    quick,
)
from recsys_course.tooling.catalog import load_catalog
from recsys_course.data import MovieLens, load_movielens
from recsys_course.errors import UnknownTarget
from recsys_course.tooling.grading.loader import load_lesson

Benchmark = Callable[[MovieLens, object], dict]

#: Lesson id -> its benchmark ``function(data, lesson) -> metrics``.
BENCHMARKS: dict[str, Benchmark] = {
    "00": lesson_00.popularity_baseline,
    "01": lesson_01.matrix_factorization,
    "02": lesson_02.two_tower_retrieval,
    "03": lesson_03.baselines_negatives_protocols,
    "04": lesson_04.ranking,
    "05": lesson_05.sequential_recommendation,
    "06": lesson_06.multitask_implicit_diverse,
    "07": lesson_07.annoy_benchmark,
    "08": lesson_08.serving_latency,
    "09": lesson_09.scaling_benchmark,
    "10": ladder.scale_ladder,
}
#: Benchmarks given the source string instead of a loaded dataset (they load their own).
OWN_DATA = {"10"}
#: Other names ``course bench`` accepts for a lesson's benchmark.


def run(lesson_ids: list[str] | None = None, source: str | None = None) -> dict:
    """Run the benchmarks of ``lesson_ids`` (ids or slugs; all when None) on one dataset.

    Raises :class:`~recsys_course.errors.UnknownTarget` for a lesson the catalog does not
    know or that has no benchmark.
    """
    catalog = load_catalog()
    try:
        wanted = [catalog.lesson(ALIASES.get(key, key)).id for key in lesson_ids] if lesson_ids else list(BENCHMARKS)
    except KeyError as error:
        raise UnknownTarget(error.args[0]) from None
    unknown = [lid for lid in wanted if lid not in BENCHMARKS]
    if unknown:
        raise UnknownTarget(f"no benchmark for lesson(s) {', '.join(unknown)}; "
                            f"benchmarked lessons: {', '.join(BENCHMARKS)}")
    started = time.perf_counter()
    data = load_movielens(source) if set(wanted) - OWN_DATA else None
    results = {
        "dataset": data.source if data else (source or "default"),
        "dataset_description": data.summary() if data else "the benchmarks' own data (" + (source or "default") + ")",
        "load_seconds": round(time.perf_counter() - started, 2),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "lessons": {},
    }
    if quick():
        results["quick"] = f"{QUICK_ENV} is set: a smoke run, not the lessons' measurements"
    for lesson_id in wanted:
        lesson = catalog.lesson(lesson_id)
        solutions = load_lesson(catalog.root / "solutions" / lesson.filename, f"solutions_{lesson_id}")
        t0 = time.perf_counter()
        metrics = BENCHMARKS[lesson_id](source if lesson_id in OWN_DATA else data, solutions)
        results["lessons"][lesson_id] = {**metrics, "wall_seconds": round(time.perf_counter() - t0, 2)}
    return results
