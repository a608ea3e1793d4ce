"""Lesson 06's MMR relevance (setup cells, not graded): the non-increasing fit, the hit-rate
curve by rank, the activity groups, the relevance scales and the base order MMR starts from.

Every expected value is computed by hand in the comments (or, for the least-squares slope,
by NumPy's own polynomial fit), on fixtures without ties unless a test is about ties."""

import math

import numpy as np
import pandas as pd
import pytest

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.loader import load_lesson


@pytest.fixture(scope="module")
def lesson():
    """The setup and exercise cells of solutions/06 (the reference, whatever tree is graded)."""
    catalog = load_catalog()
    return load_lesson(catalog.root / "solutions" / catalog.lesson("06").filename, "reference_lesson_06")


# ---------------------------------------------------------------- decreasing_fit


def test_decreasing_fit_pools_adjacent_violators(lesson):
    # 3 stays; 1 < 2 is a rise, pooled to 1.5 and 1.5; 0.5 stays.
    got = lesson.decreasing_fit(np.array([3.0, 1.0, 2.0, 0.5]), np.ones(4))
    np.testing.assert_allclose(got, [3.0, 1.5, 1.5, 0.5])


def test_decreasing_fit_weighs_the_pool(lesson):
    # 1 (weight 3) then 3 (weight 1) rise: pooled to (3 * 1 + 1 * 3) / 4 = 1.5.
    np.testing.assert_allclose(lesson.decreasing_fit(np.array([1.0, 3.0]), np.array([3.0, 1.0])), [1.5, 1.5])


def test_decreasing_fit_fills_entries_without_weight(lesson):
    # Weighted entries 5 and 1 need no pooling; the unweighted 9 and 7 take the value before them.
    got = lesson.decreasing_fit(np.array([5.0, 9.0, 1.0, 7.0]), np.array([1.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose(got, [5.0, 5.0, 1.0, 1.0])
    # A leading unweighted entry takes the first fitted value: 2 < 4 pool to 3.
    got = lesson.decreasing_fit(np.array([9.0, 2.0, 4.0]), np.array([0.0, 1.0, 1.0]))
    np.testing.assert_allclose(got, [3.0, 3.0, 3.0])


def test_decreasing_fit_rejects_bad_weights(lesson):
    with pytest.raises(ValueError, match="weights"):
        lesson.decreasing_fit(np.array([1.0, 2.0]), np.zeros(2))
    with pytest.raises(ValueError, match="weights"):
        lesson.decreasing_fit(np.array([1.0, 2.0]), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="one length"):
        lesson.decreasing_fit(np.array([1.0, 2.0]), np.ones(3))


# ---------------------------------------------------------------- fit_rank_curve / HitRate.at


def test_fit_rank_curve_recovers_an_exact_curve(lesson):
    ranks = np.arange(10)
    rate = 0.02 + 0.1 / np.log2(ranks + 2)
    users = np.full(10, 50.0)
    rate[3], users[3] = 1.0, 0.0  # a rank without users carries no information
    intercept, slope = lesson.fit_rank_curve(rate, users)
    assert intercept == pytest.approx(0.02, abs=1e-9) and slope == pytest.approx(0.1, abs=1e-9)


def test_fit_rank_curve_is_weighted_least_squares(lesson):
    rate, users = np.array([0.3, 0.1, 0.12, 0.02]), np.array([10.0, 10.0, 5.0, 1.0])
    x = 1 / np.log2(np.arange(4) + 2)
    # np.polyfit minimises sum (w_i (y_i - p(x_i)))^2, so weights are sqrt(users).
    slope, intercept = np.polyfit(x, rate, 1, w=np.sqrt(users))
    got = lesson.fit_rank_curve(rate, users)
    assert got == pytest.approx((intercept, slope), abs=1e-9)


def test_fit_rank_curve_never_rises(lesson):
    # Rates rising with the rank: slope 0, intercept the weighted mean (0.1 + 0.2 + 2 * 0.3) / 4.
    intercept, slope = lesson.fit_rank_curve(np.array([0.1, 0.2, 0.3]), np.array([1.0, 1.0, 2.0]))
    assert slope == 0.0 and intercept == pytest.approx(0.225)
    with pytest.raises(ValueError, match="two ranks"):
        lesson.fit_rank_curve(np.array([0.1, 0.2]), np.array([3.0, 0.0]))


def test_hit_rate_at_rank(lesson):
    hit_rate = lesson.HitRate(intercept=-0.05, slope=0.1, by_group=np.ones(5))
    # rank 0: -0.05 + 0.1 = 0.05; rank 2: -0.05 + 0.1 / 2 = 0; rank 6: -0.05 + 0.1 / 3 < 0 -> 0.
    np.testing.assert_allclose(hit_rate.at(np.array([0, 2, 6])), [0.05, 0.0, 0.0], atol=1e-12)


# ---------------------------------------------------------------- activity_groups


def test_activity_groups_cut_at_quantiles(lesson):
    seen = np.arange(6)[None, :] < np.array([[1], [5], [2], [4], [3]])  # 1, 5, 2, 4, 3 items seen
    np.testing.assert_array_equal(lesson.activity_groups(seen, 5), [0, 4, 1, 3, 2])
    # Two groups, median 2 (between 1, 1 and 3, 5).
    seen = np.arange(6)[None, :] < np.array([[3], [1], [5], [1]])
    np.testing.assert_array_equal(lesson.activity_groups(seen, 2), [1, 0, 1, 0])


# ---------------------------------------------------------------- fit_hit_rate


def tiny_stage(lesson):
    """4 users, 10 movies. Every user's candidates are movies 7, 5, 6 with scores 1, 3, 2, so
    the base order is 5, 6, 7. Users 0..3 have seen 4, 3, 2, 1 movies (among 0..3) and rated
    {5, 6}, {5}, {5}, {} in the held-out split."""
    n_items = 10
    seen = np.arange(n_items)[None, :] < np.array([[4], [3], [2], [1]])
    rated = np.zeros((4, n_items), dtype=bool)
    rated[0, [5, 6]] = rated[1, 5] = rated[2, 5] = True
    stage = lesson.Stage(users=np.array(["a", "b", "c", "d"]), movies=np.array([f"m{i}" for i in range(n_items)]),
                         seen=seen, rated=rated, liked=rated, gains=rated.astype(float))
    candidates = np.tile([7, 5, 6], (4, 1))
    scores = np.tile([1.0, 3.0, 2.0], (4, 1))
    return stage, candidates, scores


def test_fit_hit_rate_by_rank_and_activity(lesson):
    stage, candidates, scores = tiny_stage(lesson)
    hit_rate = lesson.fit_hit_rate(candidates, scores, stage)
    # Hit rates by rank: 3 of 4 users at rank 0, 1 of 4 at rank 1, none at rank 2.
    x = 1 / np.log2(np.arange(3) + 2)
    slope, intercept = np.polyfit(x, [0.75, 0.25, 0.0], 1)
    assert (hit_rate.intercept, hit_rate.slope) == pytest.approx((intercept, slope), abs=1e-9)
    # Seen counts 4, 3, 2, 1 fall in groups 4, 3, 1, 0 (quantile edges 1.6, 2.2, 2.8, 3.4);
    # their hits are 2, 1, 1, 0, already non-decreasing in activity; empty group 2 takes the
    # value of the more active group next to it (group 3).
    np.testing.assert_allclose(hit_rate.by_group, [0.0, 1.0, 1.0, 1.0, 2.0])


def test_fit_hit_rate_needs_a_hit(lesson):
    stage, candidates, scores = tiny_stage(lesson)
    stage = stage._replace(rated=np.zeros_like(stage.rated))
    with pytest.raises(ValueError, match="hit"):
        lesson.fit_hit_rate(candidates, scores, stage)


# ---------------------------------------------------------------- mmr_relevance


CANDIDATES = np.array([[10, 11, 12], [20, -1, 21]])
SCORES = np.array([[0.1, 0.9, 0.5], [3.0, 9.0, 1.0]])  # the padding's score must not count
# Base ranks: user 0 -> 11, 12, 10 = [2, 0, 1]; user 1 -> 20, 21, padding = [0, 2, 1].
HIT_RATE_KW = {"intercept": 0.02, "slope": 0.1, "by_group": np.array([0.5, 1.0])}


def test_mmr_relevance_rank_scale(lesson):
    hit_rate = lesson.HitRate(**HIT_RATE_KW)
    got = lesson.mmr_relevance("rank", CANDIDATES, SCORES, hit_rate, np.array([0, 1]))
    np.testing.assert_allclose(got, [[1 / 3, 1.0, 2 / 3], [1.0, 1 / 3, 2 / 3]])


def test_mmr_relevance_hit_rate_scales(lesson):
    hit_rate = lesson.HitRate(**HIT_RATE_KW)
    h0, h1, h2 = 0.02 + 0.1, 0.02 + 0.1 / math.log2(3), 0.02 + 0.1 / 2
    by_rank = np.array([[h2, h0, h1], [h0, h2, h1]]) / h0
    got = lesson.mmr_relevance("hit rate", CANDIDATES, SCORES, hit_rate, np.array([0, 1]))
    np.testing.assert_allclose(got, by_rank)
    got = lesson.mmr_relevance("hit rate x activity", CANDIDATES, SCORES, hit_rate, np.array([0, 1]))
    np.testing.assert_allclose(got, by_rank * np.array([[0.5], [1.0]]))
    with pytest.raises(ValueError, match="scale"):
        lesson.mmr_relevance("stars", CANDIDATES, SCORES, hit_rate, np.array([0, 1]))


# ---------------------------------------------------------------- diversify


def test_diversify_starts_from_the_base_order(lesson):
    # Equal relevance everywhere: at λ = 1 the ties go to the better base rank, so the list is
    # the order of the scores (11, 12, 10), not the order of the candidate array.
    genres = np.eye(30)
    relevance = np.ones((2, 3))
    got = lesson.diversify(CANDIDATES, SCORES, relevance, genres, 1.0, "max", k=3)
    np.testing.assert_array_equal(got, [[11, 12, 10], [20, 21, -1]])


def test_diversify_mean_redundancy_prefers_a_new_genre(lesson):
    # One user, candidates 0, 1, 2 in base order; 0 and 1 share their genre, 2 has its own.
    genres = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    candidates, scores = np.array([[0, 1, 2]]), np.array([[3.0, 2.0, 1.0]])
    relevance = np.array([[1.0, 0.9, 0.8]])
    # λ = 0.5, second pick: 1 scores 0.45 - 0.5 * 1 = -0.05, 2 scores 0.4 - 0 = 0.4.
    got = lesson.diversify(candidates, scores, relevance, genres, 0.5, "mean", k=2)
    np.testing.assert_array_equal(got, [[0, 2]])


# ---------------------------------------------------------------- choosing λ
def test_precision_cost_and_its_bound(lesson):
    # drops 0.1, 0, 0.1 (the nan user is left out): cost = (0.2 / 3) / 0.2 = 1/3; their
    # standard deviation is 0.1 / sqrt(3), so the standard error 0.1 / 3, over 0.2: 1/6
    cost, bound = lesson.precision_cost(np.array([0.2, 0.1, 0.3, np.nan]), np.array([0.1, 0.1, 0.2, 0.5]), z=1.0)
    assert cost == pytest.approx(1 / 3)
    assert bound == pytest.approx(1 / 3 + 1 / 6)
    assert lesson.precision_cost(np.array([0.2, 0.1, 0.3]), np.array([0.1, 0.1, 0.2]), z=2.0)[1] == pytest.approx(
        1 / 3 + 2 / 6)
    with pytest.raises(ValueError, match="hits nothing"):
        lesson.precision_cost(np.zeros(3), np.zeros(3))


def test_affordable_lambda_stops_at_the_first_breach_of_the_bound(lesson):
    curve = pd.DataFrame({"diversity@10": [0.50, 0.60, 0.55, 0.70, 0.80],
                          "cost bound": [0.0, 0.04, 0.03, 0.06, 0.02]},
                         index=pd.Index([1.0, 0.9, 0.8, 0.7, 0.6], name="λ"))
    # 0.7 breaks the 5 % bound: 0.6 is never reached although its bound is low; the most
    # diverse of 1, 0.9 and 0.8 is 0.9
    assert lesson.affordable_lambda(curve, max_loss=0.05) == 0.9
    assert lesson.affordable_lambda(curve, max_loss=0.10) == 0.6
    assert lesson.affordable_lambda(curve, max_loss=0.0) == 1.0


# ---------------------------------------------------------------- the calibrated scale
def test_logistic_fit_recovers_a_saturated_model(lesson):
    # Two groups: x = (1, 0) with hits 1 of 4, x = (1, 1) with hits 2 of 4. The fitted
    # probabilities are the groups' rates: w0 = log(1/3), w0 + w1 = log(1) = 0.
    x = np.array([[1.0, 0.0]] * 4 + [[1.0, 1.0]] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    np.testing.assert_allclose(lesson.logistic_fit(x, y), [math.log(1 / 3), math.log(3)], atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        lesson.logistic_fit(x, y[:3])


def test_calibration_features(lesson):
    seen = np.zeros((2, 30), dtype=bool)
    seen[0, :3] = True  # user 0 has seen 3 movies, user 1 none
    got = lesson.calibration_features(CANDIDATES, SCORES, seen)
    # user 0: scores 0.1, 0.9, 0.5 -> mean 0.5, standard deviation sqrt(0.32 / 3); ranks 2, 0, 1
    sd = math.sqrt(0.32 / 3)
    np.testing.assert_allclose(got[0], [[1, 1 / 2, -0.4 / sd, math.log(4)],
                                        [1, 1.0, 0.4 / sd, math.log(4)],
                                        [1, 1 / math.log2(3), 0.0, math.log(4)]])
    # user 1: scores 3 and 1 (the padding's 9 does not count) -> z-scores 1 and -1; padding is 0
    np.testing.assert_allclose(got[1], [[1, 1.0, 1.0, 0.0], [0, 0, 0, 0], [1, 1 / math.log2(3), -1.0, 0.0]])


def test_mmr_relevance_calibrated_scale(lesson):
    seen = np.zeros((2, 30), dtype=bool)
    hit_rate = lesson.HitRate(**HIT_RATE_KW, calibration=np.array([0.0, 0.0, 1.0, 0.0]), calibrated_top=0.5)
    got = lesson.mmr_relevance("calibrated score", CANDIDATES, SCORES, hit_rate, np.array([0, 1]), seen)
    sd = math.sqrt(0.32 / 3)

    def sigmoid(v):
        return 1 / (1 + math.exp(-v))

    np.testing.assert_allclose(got, [[sigmoid(-0.4 / sd) / 0.5, sigmoid(0.4 / sd) / 0.5, 1.0],
                                     [sigmoid(1.0) / 0.5, 0.0, sigmoid(-1.0) / 0.5]])
    with pytest.raises(ValueError, match="calibration"):
        lesson.mmr_relevance("calibrated score", CANDIDATES, SCORES, lesson.HitRate(**HIT_RATE_KW),
                             np.array([0, 1]), seen)


def test_affordable_lambda_is_nan_when_the_start_breaks_the_budget(lesson):
    # The variant's own order (λ = 1) already costs 6 % against the reference: nothing is affordable.
    curve = pd.DataFrame({"diversity@10": [0.50, 0.60], "cost bound": [0.06, 0.01]},
                         index=pd.Index([1.0, 0.9], name="λ"))
    assert math.isnan(lesson.affordable_lambda(curve, max_loss=0.05))
    assert lesson.affordable_lambda(curve, max_loss=0.06) == 0.9


def test_chosen_mmr_skips_variants_without_an_affordable_lambda(lesson):
    table = pd.DataFrame({"λ": [np.nan, 0.8, 0.9], "diversity@10": [np.nan, 0.7, 0.75]},
                         index=pd.MultiIndex.from_tuples([("a", "max"), ("b", "max"), ("b", "mean")],
                                                         names=["relevance", "redundancy"]))
    assert lesson.chosen_mmr(table) == ("b", "mean", 0.9)


# ---------------------------------------------------------------- the two-stage scale
def test_genre_taste(lesson):
    # 4 movies over 2 genres: 0 = (1, 0), 1 = (0, 1), 2 = (1, 1), 3 = no genre.
    genres = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    seen = np.array([[True, True, True, False],    # profile (2, 2): cosine 1/√2 with 0 and 1, 1 with 2
                     [False, False, False, False]])  # has seen nothing: taste 0
    candidates = np.array([[0, 2, 3, -1], [0, 1, 2, 3]])
    got = lesson.genre_taste(candidates, seen, genres)
    np.testing.assert_allclose(got, [[1 / math.sqrt(2), 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_calibration_features_with_both_stages(lesson):
    seen = np.zeros((2, 30), dtype=bool)
    seen[0, [10, 13]] = True
    genres = np.zeros((30, 2))
    genres[[10, 13, 20]] = [1.0, 0.0]
    genres[[11, 12, 21]] = [0.0, 1.0]
    retrieval = np.array([[3.0, 1.0, 2.0], [1.0, 5.0, 2.0]])  # retrieval ranks: user 0 -> 0, 2, 1; user 1 -> 1, -, 0
    got = lesson.calibration_features(CANDIDATES, SCORES, seen, retrieval, genres)
    assert got.shape == (2, 3, 6)
    np.testing.assert_allclose(got[..., :4], lesson.calibration_features(CANDIDATES, SCORES, seen))
    np.testing.assert_allclose(got[0, :, 4], [1.0, 1 / 2, 1 / math.log2(3)])
    np.testing.assert_allclose(got[1, :, 4], [1 / math.log2(3), 0.0, 1.0])
    # user 0 has seen two movies of genre 0: taste 1 for movie 10, 0 for 11 and 12; user 1 has seen nothing
    np.testing.assert_allclose(got[..., 5], [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="both"):
        lesson.calibration_features(CANDIDATES, SCORES, seen, retrieval)


def test_mmr_relevance_two_stage_scale(lesson):
    seen = np.zeros((2, 30), dtype=bool)
    genres = np.ones((30, 1))
    retrieval = np.array([[3.0, 1.0, 2.0], [1.0, 5.0, 2.0]])
    # Only the retrieval rank discount counts: sigmoid(2 * discount) over two_stage_top 0.9.
    hit_rate = lesson.HitRate(**HIT_RATE_KW, two_stage=np.array([0.0, 0.0, 0.0, 0.0, 2.0, 0.0]), two_stage_top=0.9)
    got = lesson.mmr_relevance("two-stage calibrated", CANDIDATES, SCORES, hit_rate, np.array([0, 1]), seen,
                               retrieval, genres)

    def sigmoid(v):
        return 1 / (1 + math.exp(-v))

    discount = [[1.0, 1 / 2, 1 / math.log2(3)], [1 / math.log2(3), None, 1.0]]
    want = [[sigmoid(2 * d) / 0.9 if d is not None else 0.0 for d in row] for row in discount]
    np.testing.assert_allclose(got, want)
    with pytest.raises(ValueError, match="retrieval_scores"):
        lesson.mmr_relevance("two-stage calibrated", CANDIDATES, SCORES, hit_rate, np.array([0, 1]), seen)
    with pytest.raises(ValueError, match="two-stage"):
        lesson.mmr_relevance("two-stage calibrated", CANDIDATES, SCORES, lesson.HitRate(**HIT_RATE_KW),
                             np.array([0, 1]), seen, retrieval, genres)


def test_fit_hit_rate_fits_the_two_stage_model_only_when_asked(lesson):
    stage, candidates, scores = tiny_stage(lesson)
    assert lesson.fit_hit_rate(candidates, scores, stage).two_stage is None
    genres = np.eye(10)
    hit_rate = lesson.fit_hit_rate(candidates, scores, stage, retrieval_scores=-scores, genres=genres)
    assert hit_rate.two_stage.shape == (6,)
    # The largest fitted probability of a validation candidate scales the relevance to about 1.
    features = lesson.calibration_features(candidates, scores, stage.seen, -scores, genres)
    top = (1 / (1 + np.exp(-(features.reshape(-1, 6) @ hit_rate.two_stage)))).max()
    assert hit_rate.two_stage_top == pytest.approx(top)
