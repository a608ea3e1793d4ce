"""recsys_course.evaluation: every metric on a fixture small enough to compute by hand.

Fixture (3 users x 5 items, k = 3, items seen in training excluded):

    scores  u0 [0.9, 0.1, 0.5, 0.5, 0.3]  seen {0}  relevant {1, 3}  -> top 3 [2, 3, 4]
            u1 [0.2, 0.8, 0.8, 0.1, 0.4]  seen {1}  relevant {0}     -> top 3 [2, 4, 0]
            u2 [0.0, 0.0, 0.0, 0.0, 0.0]  seen {}   relevant {}      -> top 3 [0, 1, 2]

u0's items 2 and 3 tie at 0.5 and u2's all tie: the lower index comes first. u2 has no
relevant item, so it is left out of every accuracy mean.
"""

import math

import numpy as np
import pandas as pd
import pytest

from recsys_course import evaluation as ev

SCORES = np.array(
    [[0.9, 0.1, 0.5, 0.5, 0.3], [0.2, 0.8, 0.8, 0.1, 0.4], [0.0, 0.0, 0.0, 0.0, 0.0]]
)
SEEN = np.zeros((3, 5), dtype=bool)
SEEN[0, 0] = SEEN[1, 1] = True
RELEVANT = np.zeros((3, 5), dtype=bool)
RELEVANT[0, [1, 3]] = True
RELEVANT[1, 0] = True
GRADED = np.zeros((3, 5))
GRADED[0, 1], GRADED[0, 3], GRADED[1, 0] = 5.0, 2.0, 3.0
L2 = math.log2


@pytest.fixture
def ranked():
    return ev.top_k(SCORES, 3, exclude=SEEN)


def test_top_k_masks_seen_and_breaks_ties_by_index(ranked):
    assert ranked.tolist() == [[2, 3, 4], [2, 4, 0], [0, 1, 2]]
    assert ranked.dtype == np.int64


def test_top_k_without_exclusions():
    assert ev.top_k(SCORES, 2).tolist() == [[0, 2], [1, 2], [0, 1]]


def test_top_k_ties_follow_item_index_not_sort_internals():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 40)).astype(float)  # many ties
    exclude = rng.random((50, 40)) < 0.3
    ranked = ev.top_k(scores, 40, exclude=exclude)
    for u in range(50):
        expected = sorted((i for i in range(40) if not exclude[u, i]), key=lambda i: (-scores[u, i], i))
        row = ranked[u].tolist()
        assert row[: len(expected)] == expected
        assert row[len(expected):] == [-1] * (40 - len(expected))


def test_top_k_k_larger_than_catalogue_pads_excluded_slots():
    ranked = ev.top_k(SCORES, 10, exclude=SEEN)
    assert ranked.tolist() == [[2, 3, 4, 1, -1], [2, 4, 0, 3, -1], [0, 1, 2, 3, 4]]


def test_top_k_keeps_non_excluded_minus_infinity_items():
    scores = np.array([[-np.inf, 1.0, -np.inf]])
    assert ev.top_k(scores, 3, exclude=np.array([[False, False, True]])).tolist() == [[1, 0, -1]]


def test_top_k_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        ev.top_k(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(ValueError, match="positive integer"):
        ev.top_k(SCORES, 0)
    with pytest.raises(ValueError, match="must match"):
        ev.top_k(SCORES, 2, exclude=np.zeros((2, 5), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        ev.top_k(np.zeros(5), 2)


def test_recall(ranked):
    # u0 finds 3 of {1, 3}: 1/2; u1 finds 0 of {0}: 1; u2 has nothing relevant, left out
    assert ev.recall_at_k(ranked, RELEVANT, 3) == pytest.approx(0.75)
    assert ev.recall_at_k(ranked, RELEVANT, 1) == pytest.approx(0.0)


def test_recall_by_user(ranked):
    # u0 finds 3 of {1, 3} in its top 3 (1/2), u1 finds 0 (1/1); u2 has nothing relevant: nan
    got = ev.recall_by_user(ranked, RELEVANT, 3)
    np.testing.assert_allclose(got[:2], [1 / 2, 1.0])
    assert math.isnan(got[2])
    assert np.nanmean(got) == pytest.approx(ev.recall_at_k(ranked, RELEVANT, 3))


def test_pair_recall_weighs_pairs_not_users(ranked):
    # three relevant pairs (u0: 1, 3; u1: 0), two found in the top 3
    assert ev.pair_recall_at_k(ranked, RELEVANT, 3) == pytest.approx(2 / 3)
    assert math.isnan(ev.pair_recall_at_k(ranked, np.zeros_like(RELEVANT), 3))


def test_precision(ranked):
    assert ev.precision_at_k(ranked, RELEVANT, 3) == pytest.approx(1 / 3)
    assert ev.precision_at_k(ranked, RELEVANT, 2) == pytest.approx((1 / 2 + 0) / 2)


def test_precision_by_user(ranked):
    # u0 finds 1 of its top 2 in {1, 3}, u1 none; u2 has nothing relevant: nan
    got = ev.precision_by_user(ranked, RELEVANT, 2)
    np.testing.assert_allclose(got[:2], [1 / 2, 0.0])
    assert math.isnan(got[2])
    assert np.nanmean(ev.precision_by_user(ranked, RELEVANT, 3)) == pytest.approx(ev.precision_at_k(ranked, RELEVANT, 3))


def test_hit_rate_and_mrr(ranked):
    assert ev.hit_rate_at_k(ranked, RELEVANT, 3) == pytest.approx(1.0)
    assert ev.hit_rate_at_k(ranked, RELEVANT, 2) == pytest.approx(0.5)
    # first hits at rank 2 (u0) and rank 3 (u1)
    assert ev.mrr_at_k(ranked, RELEVANT, 3) == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert ev.mrr_at_k(ranked, RELEVANT, 2) == pytest.approx((1 / 2 + 0) / 2)


def test_binary_ndcg(ranked):
    u0 = (1 / L2(3)) / (1 + 1 / L2(3))  # hit at rank 2, two relevant items
    u1 = (1 / L2(4)) / 1.0  # hit at rank 3, one relevant item
    assert ev.ndcg_at_k(ranked, RELEVANT, 3) == pytest.approx((u0 + u1) / 2)


def test_graded_ndcg(ranked):
    u0 = (2 / L2(3)) / (5 + 2 / L2(3))  # the grade-2 item at rank 2; ideal: 5 then 2
    u1 = (3 / L2(4)) / 3.0
    assert ev.ndcg_at_k(ranked, GRADED, 3) == pytest.approx((u0 + u1) / 2)


def test_ndcg_by_user(ranked):
    # one value per user, nan for u2 (nothing relevant); their mean is ndcg_at_k
    got = ev.ndcg_by_user(ranked, RELEVANT, 3)
    assert math.isnan(got[2]) and not np.isnan(got[:2]).any()
    assert np.nanmean(got) == pytest.approx(ev.ndcg_at_k(ranked, RELEVANT, 3))


def test_rating_gains_are_two_to_the_stars_minus_one_and_zero_unrated():
    np.testing.assert_array_equal(ev.rating_gains(np.array([[0.0, 1.0], [3.0, 5.0]])), [[0.0, 1.0], [7.0, 31.0]])


def test_ndcg_k_larger_than_catalogue():
    ranked = ev.top_k(SCORES, 10, exclude=SEEN)  # 5 columns, the last one padding for u0, u1
    u0 = (1 / L2(3) + 1 / L2(5)) / (1 + 1 / L2(3))
    u1 = 1 / L2(4)
    assert ev.ndcg_at_k(ranked, RELEVANT, 10) == pytest.approx((u0 + u1) / 2)
    assert ev.recall_at_k(ranked, RELEVANT, 10) == pytest.approx(1.0)
    assert ev.precision_at_k(ranked, RELEVANT, 10) == pytest.approx((2 / 10 + 1 / 10) / 2)


def test_users_without_relevant_items_are_left_out_or_nan(ranked):
    nobody = np.zeros_like(RELEVANT)
    for metric in (ev.recall_at_k, ev.precision_at_k, ev.ndcg_at_k, ev.hit_rate_at_k, ev.mrr_at_k):
        assert math.isnan(metric(ranked, nobody, 3)), metric.__name__
    only_u2 = RELEVANT[[2, 0]]  # u2 (nothing relevant) first must not shift u0's value
    assert ev.recall_at_k(ranked[[2, 0]], only_u2, 3) == pytest.approx(0.5)


def test_empty_lists_are_never_hits():
    everything_seen = np.ones((1, 5), dtype=bool)
    ranked = ev.top_k(SCORES[:1], 3, exclude=everything_seen)
    assert ranked.tolist() == [[-1, -1, -1]]
    relevant = RELEVANT[:1]
    assert ev.recall_at_k(ranked, relevant, 3) == 0.0
    assert ev.ndcg_at_k(ranked, relevant, 3) == 0.0
    assert ev.mrr_at_k(ranked, relevant, 3) == 0.0
    assert ev.coverage_at_k(ranked, 5, 3) == 0.0
    assert math.isnan(ev.novelty_at_k(ranked, np.full(5, 0.5), 3))
    assert math.isnan(ev.intra_list_diversity_at_k(ranked, np.eye(5), 3))
    empty_catalogue = ev.top_k(np.zeros((2, 0)), 3)
    assert empty_catalogue.shape == (2, 0)
    assert ev.recall_at_k(empty_catalogue, np.ones((2, 0), dtype=bool), 3) != 1.0


def test_coverage(ranked):
    assert ev.coverage_at_k(ranked, 5, 3) == pytest.approx(1.0)  # {2,3,4} | {2,4,0} | {0,1,2}
    assert ev.coverage_at_k(ranked, 5, 1) == pytest.approx(2 / 5)  # {2, 0}
    assert ev.coverage_at_k(ranked, 10, 1) == pytest.approx(2 / 10)


def test_novelty(ranked):
    probability = np.array([0.5, 0.25, 0.5, 0.125, 1.0])
    assert ev.novelty_at_k(ranked, probability, 1) == pytest.approx(1.0)  # items 2, 2, 0
    # lists [2, 3], [2, 4], [0, 1] -> bits 1, 3, 1, 0, 1, 2
    assert ev.novelty_at_k(ranked, probability, 2) == pytest.approx(8 / 6)
    with pytest.raises(ValueError, match="smooth"):
        ev.novelty_at_k(ranked, np.array([0.5, 0.0, 0.5, 0.5, 0.5]), 2)


def test_item_probability_is_smoothed_user_share():
    seen = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 0]], dtype=bool)
    assert ev.item_probability(seen).tolist() == pytest.approx([4 / 4, 1 / 4, 2 / 4])


def test_intra_list_diversity(ranked):
    features = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 0]], dtype=float)
    # [2, 3]: 1 - cos45 ; [2, 4]: zero vector, distance 1 ; [0, 1]: orthogonal, distance 1
    expected = ((1 - 1 / math.sqrt(2)) + 1 + 1) / 3
    assert ev.intra_list_diversity_at_k(ranked, features, 2) == pytest.approx(expected)
    # a list of one item has no pair: left out
    assert math.isnan(ev.intra_list_diversity_at_k(ranked, features, 1))


def test_evaluate_collects_the_metrics(ranked):
    report = ev.evaluate(SCORES, RELEVANT, seen=SEEN, ks=(3,), probability=np.full(5, 0.5),
                         item_features=np.eye(5))
    assert report["recall@3_masked"] == pytest.approx(0.75)
    assert report["ndcg@3"] == pytest.approx(ev.ndcg_at_k(ranked, RELEVANT, 3))
    assert report["coverage@3"] == pytest.approx(1.0)
    assert report["novelty@3"] == pytest.approx(1.0)
    assert report["diversity@3"] == pytest.approx(1.0)
    assert "recall@3" in ev.evaluate(SCORES, RELEVANT, ks=(3,))


def test_interaction_matrix_bool_and_graded():
    frame = pd.DataFrame({"user_id": ["a", "b", "a", "zz"], "movie_id": ["m2", "m1", "m1", "m1"],
                          "user_rating": [4.0, 2.0, 5.0, 1.0]})
    users, items = ["a", "b"], ["m1", "m2", "m3"]
    assert ev.interaction_matrix(frame, users, items).tolist() == [[True, True, False], [True, False, False]]
    graded = ev.interaction_matrix(frame, users, items, value_col="user_rating")
    assert graded.tolist() == [[5.0, 4.0, 0.0], [2.0, 0.0, 0.0]]


def test_ranked_matrix_from_id_lists_pads_unknown_and_missing():
    lists = {"a": ["m3", "zz", "m1", "m2"], "b": []}
    ranked = ev.ranked_matrix(lists, ["a", "b", "c"], ["m1", "m2", "m3"], k=3)
    # "zz" is not in the catalogue: dropped, later items move up; k cuts the raw list first.
    assert ranked.tolist() == [[2, 0, -1], [-1, -1, -1], [-1, -1, -1]]
    relevant = np.array([[True, False, False], [False, True, False], [False, False, True]])
    assert ev.hit_rate_at_k(ranked, relevant, 3) == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- splits
RATINGS = pd.DataFrame(
    {
        "user_id": ["a", "a", "a", "b", "b", "c", "a", "b"],
        "movie_id": ["1", "2", "3", "1", "4", "5", "6", "7"],
        "timestamp": [30, 10, 20, 5, 5, 1, 30, 9],
    }
)


def test_leave_last_k_takes_each_users_latest_rows():
    train, test = ev.leave_last_k(RATINGS, k=1)
    # a: latest time 30 twice (rows 0 and 6): the later row (6, movie 6) goes to test
    # b: latest is movie 7 (time 9); c has one rating: kept in train, no test row
    assert sorted(zip(test["user_id"], test["movie_id"])) == [("a", "6"), ("b", "7")]
    assert len(train) + len(test) == len(RATINGS)
    assert set(train["movie_id"]) == {"1", "2", "3", "4", "5"}


def test_leave_last_k_with_k_2_and_min_train():
    train, test = ev.leave_last_k(RATINGS, k=2, min_train=2)
    # only a has >= 4 rows: its two latest (times 30, 30) go to test
    assert sorted(test["movie_id"]) == ["1", "6"]
    assert len(train) == 6
    with pytest.raises(ValueError, match="positive integer"):
        ev.leave_last_k(RATINGS, k=0)
    with pytest.raises(ValueError, match="column"):
        ev.leave_last_k(RATINGS.drop(columns="timestamp"))


def test_random_split_is_seeded_and_disjoint():
    train, test = ev.random_split(RATINGS, 0.25, seed=3)
    again, _ = ev.random_split(RATINGS, 0.25, seed=3)
    assert train.equals(again)
    assert len(test) == 2 and len(train) == 6
    pairs = set(zip(train["user_id"], train["movie_id"]))
    assert not pairs & set(zip(test["user_id"], test["movie_id"]))


# ------------------------------------------------------------------ global time splits

def _timed(rows):
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "timestamp"])


def test_global_time_split_trains_on_the_past_only_and_tests_the_next_ratings():
    rows = [("a", f"m{i}", i) for i in range(8)]  # a: times 0..7
    rows += [("b", "m0", 1), ("b", "m1", 2), ("b", "m2", 9)]  # b: too little history
    rows += [("c", "m5", 6), ("c", "m6", 7)]  # c: nothing before the cutoff
    split = ev.global_time_split(_timed(rows), cutoff=5, min_history=3, horizon=2)
    assert split.cutoff == 5 and (split.train["timestamp"] < 5).all()
    assert len(split.train) == 7, "every rating before the cutoff trains, test user or not"
    assert split.test.values.tolist() == [["a", "m5", 5], ["a", "m6", 6]], (
        "only a has 3 ratings of history; its first 2 ratings from the cutoff on are its test rows"
    )
    assert list(split.test_users) == ["a"]


def test_global_time_split_breaks_equal_timestamps_by_row_order():
    rows = [("a", "m0", 0), ("a", "m1", 1), ("a", "x", 5), ("a", "y", 5), ("a", "z", 5)]
    split = ev.global_time_split(_timed(rows), cutoff=5, min_history=2, horizon=2)
    assert split.test["movie_id"].tolist() == ["x", "y"]


def test_global_time_split_cutoff_from_a_quantile_counts_ratings():
    rows = [("a", f"m{i}", t) for i, t in enumerate([0, 1, 2, 3, 100, 200, 300, 400, 500, 600])]
    split = ev.global_time_split(_timed(rows), quantile=0.5, min_history=1, horizon=1)
    assert split.cutoff == 200 and split.quantile == 0.5
    assert len(split.train) == 5 and split.test["timestamp"].tolist() == [200]


def test_rolling_time_splits_and_bad_arguments():
    rows = [("a", f"m{i}", i) for i in range(20)] + [("b", f"m{i}", i) for i in range(0, 20, 2)]
    splits = ev.rolling_time_splits(_timed(rows), (0.5, 0.8), min_history=2, horizon=3)
    assert [s.quantile for s in splits] == [0.5, 0.8] and splits[0].cutoff < splits[1].cutoff
    with pytest.raises(ValueError, match="exactly one"):
        ev.global_time_split(_timed(rows))
    with pytest.raises(ValueError, match="between 0 and 1"):
        ev.global_time_split(_timed(rows), quantile=1.0)
    with pytest.raises(ValueError, match="horizon"):
        ev.global_time_split(_timed(rows), cutoff=3, horizon=0)
