"""The scale ladder's conclusions on made-up measurements: power-law fits, the "practical"
rule and the summary of a ladder (``recsys_course.scale.growth`` and ``.report``)."""

from __future__ import annotations

import math

import pytest

from recsys_course.scale import growth, report
from recsys_course.scale.rungs import parse_rung


def test_a_power_law_is_recovered_exactly():
    sizes = [1e3, 1e4, 1e5, 1e6]
    law = growth.fit_power_law(sizes, [3.0 * s**2 for s in sizes])
    assert law.exponent == pytest.approx(2.0) and law.coefficient == pytest.approx(3.0)
    assert law.r2 == pytest.approx(1.0) and law.points == 4 and law.sizes == (1e3, 1e6)
    assert law.predict(1e7) == pytest.approx(3e14)
    assert law.size_at(3e14) == pytest.approx(1e7)


def test_noisy_points_give_the_least_squares_slope_and_an_r2_below_one():
    law = growth.fit_power_law([10, 100, 1000], [10, 200, 1000])
    # log10 values: x = 1, 2, 3; y = 1, 2.301, 3 -> slope 1 (the middle point sits off the line)
    assert law.exponent == pytest.approx(1.0)
    assert 0 < law.r2 < 1


def test_points_a_logarithm_cannot_take_are_left_out():
    law = growth.fit_power_law([0, 10, 100, None, 1000], [5, 1, 10, 7, -1])
    assert law.points == 2 and law.exponent == pytest.approx(1.0)
    assert growth.fit_power_law([10, 10], [1, 2]) is None, "one distinct size is no line"
    assert growth.fit_power_law([10], [1]) is None


def test_a_law_that_does_not_grow_never_reaches_a_budget():
    flat = growth.PowerLaw(exponent=0.0, coefficient=1.0, points=2, sizes=(1, 2), r2=1.0)
    assert flat.size_at(10) == math.inf
    nearly_flat = growth.PowerLaw(exponent=1e-3, coefficient=1.0, points=2, sizes=(1, 2), r2=1.0)
    assert nearly_flat.size_at(1e6) == math.inf, "overflow means beyond any size"


def test_the_practical_limit_is_the_first_budget_broken():
    time_law = growth.PowerLaw(exponent=1.0, coefficient=1e-3, points=3, sizes=(1, 2), r2=1.0)  # 1 ms per unit
    memory_law = growth.PowerLaw(exponent=2.0, coefficient=1e-6, points=3, sizes=(1, 2), r2=1.0)
    # time reaches 3,600 s at 3.6e6; memory (100 fixed + 1e-6 n²) reaches 10,100 at 1e5
    limit = growth.practical_limit(time_law, memory_law, time_budget=3600, memory_budget=10_100, fixed_memory=100)
    assert limit.binding == "memory"
    assert limit.size == pytest.approx(1e5) and limit.by_time == pytest.approx(3.6e6)
    roomy = growth.practical_limit(time_law, memory_law, time_budget=3600, memory_budget=1e15, fixed_memory=100)
    assert roomy.binding == "time" and roomy.size == pytest.approx(3.6e6)
    no_memory = growth.practical_limit(time_law, None, time_budget=3600, memory_budget=1.0)
    assert no_memory.binding == "time" and no_memory.by_memory is None
    full = growth.practical_limit(time_law, memory_law, time_budget=3600, memory_budget=50, fixed_memory=100)
    assert full.size == 0 and full.binding == "memory", "no room left at all"
    nothing = growth.practical_limit(None, None, time_budget=1, memory_budget=1)
    assert nothing.size == math.inf and nothing.binding is None


def test_dense_matrix_bytes_and_this_machines_memory():
    assert growth.dense_matrix_bytes(62_423) == 62_423**2 * 8
    assert growth.dense_matrix_bytes(1000, matrices=2, bytes_per_number=4) == 8_000_000
    memory = growth.machine_memory_bytes()
    assert memory is None or memory > 2**28


@pytest.mark.parametrize("exponent, expected, verdict", [
    (2.8, 3.0, True), (2.6, 3.0, False), (1.25, 1.0, True), (0.3, report.SUBLINEAR, True),
    (0.8, report.SUBLINEAR, False), (None, 3.0, None), (1.0, None, None),
])
def test_agreement_with_the_expected_growth(exponent, expected, verdict):
    assert report.agrees(exponent, expected) is verdict


def _made_up_ladder():
    """Four rungs; EASE's inverse ~ 1e-9 n³ s and added memory ~ 8e-6 n² MB; two towers
    ~ 2e-6 n_ratings s per epoch; popularity fails on the largest rung."""
    rungs, ladder = {}, {}
    for n_ratings, n_movies in ((1e5, 1000), (1e6, 4000), (1e7, 20000), (3e7, 30000)):
        name = f"r{int(n_ratings)}"
        rungs[name] = {"n_ratings": n_ratings, "n_movies": n_movies}
        ladder[name] = {
            "ease": {"train_seconds": 2e-9 * n_movies**3, "inverse_seconds": 1e-9 * n_movies**3,
                     "start_rss_mb": 150.0, "peak_rss_mb": 150.0 + 8e-6 * n_movies**2, "recall@10": 0.3},
            "two_tower": {"train_seconds": 3 * 2e-6 * n_ratings, "seconds_per_epoch": 2e-6 * n_ratings,
                          "start_rss_mb": 700.0, "peak_rss_mb": 700.0 + 1e-4 * n_ratings, "recall@10": 0.2},
            "popularity": {"train_seconds": 1e-8 * n_ratings, "start_rss_mb": 150.0,
                           "peak_rss_mb": 150.0 + 1e-5 * n_ratings, "recall@10": 0.1},
        }
    ladder["r30000000"]["popularity"] = {"error": "exit code 1"}
    ladder["r30000000"]["two_tower"]["skipped"] = "made up"
    return rungs, ladder


def test_summary_recovers_the_made_up_growth_and_limits():
    rungs, ladder = _made_up_ladder()
    summary = report.summarize(ladder, rungs, memory_bytes=int(24e9))
    ease = summary["exponents"]["ease"]
    assert ease["size"] == "n_movies" and ease["time"]["exponent"] == pytest.approx(3.0)
    assert ease["memory_added"]["exponent"] == pytest.approx(2.0)
    assert ease["time_agrees"] is True and ease["memory_agrees"] is True
    tower = summary["exponents"]["two_tower"]
    assert tower["time"]["exponent"] == pytest.approx(1.0) and tower["time"]["points"] == 3, "skipped rung left out"
    assert summary["exponents"]["popularity"]["time"]["points"] == 3, "failed rung left out"
    # EASE: 150 + 8e-6 n² reaches 24,000 MB at n = sqrt(23,850 / 8e-6); time (2e-9 n³) an hour at 1.2e4
    limit = summary["practical"]["limits"]["ease"]
    assert limit["binding"] == "time" and limit["limit"] == pytest.approx((3600 / 2e-9) ** (1 / 3), rel=1e-6)
    assert limit["by_memory"] == pytest.approx(math.sqrt(23_850 / 8e-6), rel=1e-6)
    assert limit["times_largest_measured"] == pytest.approx(limit["limit"] / 30000)
    assert "1 hour" in summary["practical"]["rule"]
    at_25m = summary["ease_at_25m"]
    assert at_25m["one_matrix_mb"] == pytest.approx(62_423**2 * 8 / 1e6)
    assert at_25m["gram_and_inverse_mb"] == pytest.approx(2 * at_25m["one_matrix_mb"])
    assert at_25m["fitted_peak_mb"] == pytest.approx(150 + 8e-6 * 62_423**2, rel=1e-6)
    assert at_25m["fits_in_memory"] == {"one_matrix": False, "gram_and_inverse": False}


def test_eases_law_is_read_from_the_two_largest_catalogues():
    """A rate that rises with the matrix flattens the small end: the time law is fitted on
    the two largest sizes (exactly n³ there), the line through every size is kept beside it."""
    rungs, ladder = _made_up_ladder()
    ladder["r100000"]["ease"]["inverse_seconds"] *= 4  # the smallest matrix ran at a quarter of the rate
    ease = report.summarize(ladder, rungs, memory_bytes=int(24e9))["exponents"]["ease"]
    assert ease["time"]["exponent"] == pytest.approx(3.0) and ease["time"]["points"] == 2
    assert ease["time"]["sizes"] == [20000, 30000] and ease["fitted_on"] == "the 2 largest sizes"
    assert ease["time_every_size"]["points"] == 4 and ease["time_every_size"]["exponent"] < 2.8
    assert ease["time_agrees"] is True


def test_a_method_timed_per_epoch_only_gets_no_practical_limit():
    """The two-worker run has a time per epoch, no training time and no memory law: no limit."""
    rungs, ladder = _made_up_ladder()
    for name, entries in ladder.items():
        entries["two_tower_2workers"] = {"seconds_per_epoch": 3e-6 * rungs[name]["n_ratings"],
                                         "start_rss_mb": 700.0, "peak_rss_mb": 900.0}
    summary = report.summarize(ladder, rungs, memory_bytes=int(24e9))
    assert summary["exponents"]["two_tower_2workers"]["time"]["exponent"] == pytest.approx(1.0)
    assert "two_tower_2workers" not in summary["practical"]["limits"]


def test_a_ladder_table_has_one_row_per_rung_and_method():
    rungs, ladder = _made_up_ladder()
    table = report.ladder_table({"rungs": rungs, "ladder": ladder})
    assert len(table) == 12 and {"rung", "method", "label", "n_ratings", "n_movies"} <= set(table.columns)
    assert table.loc[table["method"] == "ease", "label"].unique().tolist() == ["EASE"]


@pytest.mark.parametrize("spec, expected", [
    ("synthetic:1m", ("synthetic:1m", 1.0)), ("/data/ml-25m@0.1", ("/data/ml-25m", 0.1)),
])
def test_rung_names(spec, expected):
    assert parse_rung(spec) == expected


@pytest.mark.parametrize("spec", ["synthetic:1m@half", "synthetic:1m@0", "synthetic:1m@1.5"])
def test_a_bad_fraction_is_refused_with_the_fix(spec):
    with pytest.raises(ValueError, match="fraction"):
        parse_rung(spec)


def test_the_ladders_rungs_from_data_and_quick_mode(monkeypatch):
    from recsys_course.data.errors import DataSourceError
    from recsys_course.tooling.benchmarks import ladder

    monkeypatch.delenv("COURSE_BENCH_QUICK", raising=False)
    assert ladder._rungs(None) == list(ladder.LADDER)
    assert ladder._rungs("synthetic:100k, /data/ml-1m@0.5") == ["synthetic:100k", "/data/ml-1m@0.5"]
    monkeypatch.setenv("COURSE_BENCH_QUICK", "1")
    assert ladder._rungs("synthetic:tiny") == ["synthetic:tiny@0.5", "synthetic:tiny"], "two sizes to fit"
    with pytest.raises(DataSourceError, match="fraction"):
        ladder._rungs("synthetic:tiny@2")


def test_a_failed_child_is_reported_by_its_error_message():
    from recsys_course.tooling.benchmarks.ladder import _last_error

    tail = "Traceback (most recent call last):\n  File x\nrecsys_course.data.errors.DataSourceError: Unknown data source 'x'."
    assert _last_error(tail) == "Unknown data source 'x'."
    assert _last_error("Killed") == "Killed"


def test_stopping_the_ladder_ends_a_child_another_thread_waits_for(tmp_path):
    """The towers' process runs in a second thread while the baselines run: when the main
    thread stops, ``stop_all_children`` ends it, the waiting thread returns, and no child
    starts afterwards (until the next ladder run)."""
    import sys
    import threading
    import time

    from recsys_course.tooling.benchmarks import ladder

    runs = []
    waiter = threading.Thread(target=lambda: runs.append(ladder.run_child(
        [sys.executable, "-c", "import time; time.sleep(120)"], tmp_path / "sleeper.log")))
    waiter.start()
    deadline = time.monotonic() + 30
    while not ladder._LIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ladder._LIVE, "the child never started"
    try:
        ladder.stop_all_children()
        waiter.join(30)
        assert not waiter.is_alive() and runs[0].returncode != 0
        late = ladder.run_child([sys.executable, "-c", "pass"], tmp_path / "late.log")
        assert late.returncode != 0 and "not started" in late.log_tail
    finally:
        ladder._STOPPING.clear()
    assert ladder.run_child([sys.executable, "-c", "pass"], tmp_path / "again.log").returncode == 0
