"""Graded tests for lesson 00. Each test checks one behaviour of one exercise on a tiny,
hand-checkable fixture; the points add up to the exercise's points in solutions/00_introduction.yml."""

import math

import pandas as pd
import pytest

from recsys_course.tooling.grading import exercise
from recsys_course.tooling.grading.messages import expect_arity, expect_type


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("00")


def frame(rows, columns=("user_id", "movie_id", "user_rating", "timestamp")):
    return pd.DataFrame(rows, columns=list(columns))


# Three users, four movies, five distinct (user, movie) pairs; ids are not 1..n on purpose.
SMALL = frame(
    [
        ("u7", "m10", 4.0, 100),
        ("u7", "m20", 3.0, 300),
        ("u9", "m10", 5.0, 200),
        ("u3", "m30", 2.0, 400),
        ("u3", "m40", 1.0, 500),
    ]
)


@exercise("0.1", points=1)
def test_sparsity_of_small_matrix(lesson):
    result = lesson.sparsity(SMALL)
    expect_type(result, float, "sparsity(ratings)")
    assert result == pytest.approx(1 - 5 / 12), (
        f"3 users x 4 movies with 5 ratings: expected {1 - 5 / 12:.4f} empty, got {result:.4f}"
    )


@exercise("0.1", points=1)
def test_sparsity_counts_a_repeated_rating_once(lesson):
    repeated = pd.concat([SMALL, SMALL.iloc[[0]].assign(timestamp=999)], ignore_index=True)
    result = lesson.sparsity(repeated)
    assert result == pytest.approx(1 - 5 / 12), (
        f"a user who rated the same movie twice fills one cell: expected {1 - 5 / 12:.4f}, "
        f"got {result:.4f}"
    )


ACTIVITY = frame(
    [
        ("b", "m1", 4.0, 1), ("b", "m2", 2.0, 2),
        ("a", "m1", 5.0, 3), ("a", "m3", 3.0, 4),
        ("c", "m1", 1.0, 5), ("c", "m2", 2.0, 6), ("c", "m3", 3.0, 7),
    ]
)


@exercise("0.2", points=1)
def test_activity_counts_and_means(lesson):
    stats = lesson.user_activity(ACTIVITY).set_index("user_id")
    assert {"n_ratings", "mean_rating"} <= set(stats.columns), (
        f"expected columns user_id, n_ratings, mean_rating; got {list(stats.columns)}"
    )
    assert stats.loc["c", "n_ratings"] == 3 and stats.loc["a", "n_ratings"] == 2, (
        f"user c rated 3 movies and user a 2: got n_ratings {stats.loc['c', 'n_ratings']} and "
        f"{stats.loc['a', 'n_ratings']}"
    )
    assert stats.loc["c", "mean_rating"] == pytest.approx(2.0), (
        f"user c rated 1, 2 and 3: expected mean 2.0, got {stats.loc['c', 'mean_rating']}"
    )
    assert stats.loc["a", "mean_rating"] == pytest.approx(4.0), (
        f"user a rated 5 and 3: expected mean 4.0, got {stats.loc['a', 'mean_rating']}"
    )


@exercise("0.2", points=1)
def test_activity_sorted_most_active_first_ties_by_id(lesson):
    stats = lesson.user_activity(ACTIVITY)
    order = list(stats["user_id"])
    assert order == ["c", "a", "b"], f"expected users in order ['c', 'a', 'b'], got {order}"
    assert list(stats.index) == [0, 1, 2], "expected a fresh 0..n-1 index (reset_index)"


def shuffled_log(n=50):
    rows = [(f"u{i % 7}", f"m{i % 11}", float(1 + i % 5), (i * 37) % 1000) for i in range(n)]
    return frame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)


@exercise("0.3", points=1)
def test_split_puts_the_future_in_test(lesson):
    log = shuffled_log()
    result = lesson.temporal_split(log, test_fraction=0.2)
    expect_arity(result, 2, "temporal_split(ratings, test_fraction)")
    train, test = result
    assert train["timestamp"].max() <= test["timestamp"].min(), (
        "leakage: the training set contains a rating made after a test rating "
        f"(latest train {train['timestamp'].max()}, earliest test {test['timestamp'].min()})"
    )


@exercise("0.3", points=1)
def test_split_sizes_and_no_lost_rows(lesson):
    log = shuffled_log(51)
    result = lesson.temporal_split(log, test_fraction=0.3)
    expect_arity(result, 2, "temporal_split(ratings, test_fraction)")
    train, test = result
    assert len(test) == round(51 * 0.3), f"expected {round(51 * 0.3)} test rows, got {len(test)}"
    assert len(train) + len(test) == 51, "every rating must land in exactly one of train/test"
    together = pd.concat([train, test]).sort_values(list(log.columns)).reset_index(drop=True)
    expected = log.sort_values(list(log.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(together, expected, check_dtype=False)


@exercise("0.3", points=1)
def test_split_is_deterministic_with_tied_timestamps(lesson):
    log = frame([(f"u{i}", f"m{i}", 3.0, 10 if i < 6 else 20) for i in range(10)])
    result = lesson.temporal_split(log, test_fraction=0.5)
    expect_arity(result, 2, "temporal_split(ratings, test_fraction)")
    train, test = result
    assert list(test["user_id"]) == ["u5", "u6", "u7", "u8", "u9"], (
        "rows with equal timestamps must keep their input order (stable sort): expected test "
        f"users u5..u9, got {list(test['user_id'])}"
    )


# m1 has many low ratings, m2 few high ones: popularity counts ratings, it does not average.
POPULAR = frame(
    [
        ("u1", "m1", 1.0, 1), ("u2", "m1", 2.0, 2), ("u3", "m1", 1.0, 3), ("u4", "m1", 2.0, 4),
        ("u1", "m2", 5.0, 5), ("u2", "m2", 5.0, 6), ("u3", "m2", 5.0, 7),
        ("u1", "m3", 5.0, 8), ("u4", "m3", 4.0, 9),
        ("u2", "m4", 4.0, 10), ("u3", "m5", 3.0, 11),
    ]
)


@exercise("0.4", points=1)
def test_popularity_counts_ratings(lesson):
    recs = lesson.recommend_popular(POPULAR, ["new"], k=3)
    assert recs["new"] == ["m1", "m2", "m3"], (
        f"a new user should get the three most-rated movies ['m1', 'm2', 'm3'], got {recs['new']}"
    )


@exercise("0.4", points=1)
def test_popularity_skips_movies_the_user_rated(lesson):
    recs = lesson.recommend_popular(POPULAR, ["u1", "u4"], k=2)
    assert recs["u1"] == ["m4", "m5"], (
        f"u1 already rated m1, m2 and m3: expected ['m4', 'm5'], got {recs['u1']}"
    )
    assert recs["u4"] == ["m2", "m4"], f"expected ['m2', 'm4'] for u4, got {recs['u4']}"


@exercise("0.4", points=1)
def test_popularity_ties_by_id_and_k(lesson):
    recs = lesson.recommend_popular(POPULAR, ["u2", "u5"], k=10)
    assert recs["u2"] == ["m3", "m5"], (
        f"u2 rated m1, m2, m4; the rest in order is ['m3', 'm5'], got {recs['u2']}"
    )
    assert recs["u5"] == ["m1", "m2", "m3", "m4", "m5"], (
        f"m4 and m5 tie on one rating each and must be ordered by id; got {recs['u5']}"
    )


TEST_LOG = frame(
    [
        ("u1", "m9", 4.0, 1), ("u1", "m8", 4.0, 2),
        ("u2", "m7", 3.0, 3),
        ("u3", "m1", 5.0, 4),
        ("u4", "m2", 2.0, 5),
    ]
)


@exercise("0.5", points=1)
def test_hit_rate_on_hand_checked_example(lesson):
    recs = {"u1": ["m1", "m8"], "u2": ["m1", "m2"], "u3": ["m1", "m5"], "u4": ["m3", "m4"]}
    result = lesson.hit_rate_at_k(recs, TEST_LOG, k=2)
    assert result == pytest.approx(0.5), f"u1 and u3 are hits, u2 and u4 are not: expected 0.5, got {result}"


@exercise("0.5", points=1)
def test_hit_rate_counts_only_the_first_k(lesson):
    recs = {"u1": ["m1", "m2", "m9"], "u2": ["m7"], "u3": ["x", "y", "m1"], "u4": ["m2"]}
    result = lesson.hit_rate_at_k(recs, TEST_LOG, k=2)
    assert result == pytest.approx(0.5), (
        f"with k=2 the third recommendation must not count: expected 0.5, got {result}"
    )


@exercise("0.5", points=1)
def test_hit_rate_averages_over_test_users(lesson):
    recs = {"u1": ["m9"], "u9": ["m1"], "u8": ["m2"]}  # u2, u3, u4 have no recommendations
    result = lesson.hit_rate_at_k(recs, TEST_LOG, k=5)
    assert not math.isnan(result), "got NaN: average over the users who appear in the test log"
    assert result == pytest.approx(0.25), (
        "average over the 4 users in test (missing users are misses, extra users are ignored): "
        f"expected 0.25, got {result}"
    )
