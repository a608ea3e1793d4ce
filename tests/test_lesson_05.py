"""Graded tests for lesson 05. Each test checks one behaviour of one exercise on a tiny,
hand-checkable fixture; the points add up to the exercise's points in
solutions/05_sequential.yml."""

import math

import numpy as np
import pandas as pd
import pytest

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("05")


def frame(rows, columns=("user_id", "movie_id", "timestamp")):
    return pd.DataFrame(rows, columns=list(columns))


# ---------------------------------------------------------------- 5.1 evaluate_cutoffs

# Twelve ratings at distinct times. With min_history=2 and horizon=2:
#   quantile 0.5  -> cutoff 10 (the 7th time): a (3 ratings before) and b (2) are tested,
#                    c (1) is not; a's test movies are m3, m4 (m5 is beyond the horizon),
#                    b's are m0, m5;
#   quantile 0.75 -> cutoff 13 (the 10th time): only b (a has nothing after 13).
CUTOFF_RATINGS = frame([
    ("a", "m0", 0), ("a", "m1", 1), ("a", "m2", 2), ("a", "m3", 10), ("a", "m4", 11), ("a", "m5", 12),
    ("b", "m1", 3), ("b", "m2", 4), ("b", "m0", 13), ("b", "m5", 14),
    ("c", "m0", 5), ("c", "m3", 15),
])
CATALOGUE = ["m0", "m1", "m2", "m3", "m4", "m5"]
OPTIONS = dict(k=2, min_history=2, horizon=2)
SECOND = 1 / math.log2(3)  # the discount of rank 2


def popularity_with_calls(calls):
    """A recommender that scores each movie by its number of ratings in the frame it is
    given (ties broken towards the first movie of the catalogue) and records each call."""

    def recommend(train, users, cutoff):
        calls.append({"cutoff": int(cutoff), "users": [str(u) for u in users],
                      "times": sorted(int(t) for t in train["timestamp"])})
        counts = train["movie_id"].astype(str).value_counts().reindex(CATALOGUE, fill_value=0).to_numpy(float)
        scores = counts + 0.01 * np.arange(len(CATALOGUE), 0, -1)
        return np.tile(scores, (len(users), 1))

    return recommend


def own_movies_first(train, users, cutoff):
    """Scores 10 for the movies the user rated in ``train``, then prefers the catalogue's
    first movies: a list that does not mask seen movies fills up with them."""
    scores = np.tile(0.01 * np.arange(len(CATALOGUE), 0, -1), (len(users), 1))
    for row, user in enumerate(users):
        rated = train.loc[train["user_id"].astype(str) == str(user), "movie_id"].astype(str)
        scores[row, [CATALOGUE.index(m) for m in rated]] += 10.0
    return scores


def run_cutoffs(lesson, recommend):
    result = lesson.evaluate_cutoffs(CUTOFF_RATINGS, [0.5, 0.75], recommend, CATALOGUE, **OPTIONS)
    assert isinstance(result, pd.DataFrame), f"evaluate_cutoffs must return a DataFrame, got {type(result).__name__}"
    missing = {"cutoff", "user_id", "recall@2", "ndcg@2"} - set(result.columns)
    assert not missing, f"the result lacks the column(s) {sorted(missing)}; it has {list(result.columns)}"
    return result


@exercise("5.1", points=1)
def test_one_row_per_user_cutoff_pair(lesson):
    result = run_cutoffs(lesson, popularity_with_calls([]))
    pairs = list(zip(result["cutoff"].astype(int), result["user_id"].astype(str)))
    assert pairs == [(10, "a"), (10, "b"), (13, "b")], (
        "expected one row per test user of each cutoff, cutoffs in order and users sorted: "
        f"(10, a), (10, b), (13, b); got {pairs}. A test user has at least min_history ratings "
        "before the cutoff and one at or after it (ev.global_time_split decides)"
    )


@exercise("5.1", points=1)
def test_the_recommender_sees_only_the_past(lesson):
    calls = []
    run_cutoffs(lesson, popularity_with_calls(calls))
    seen = [(c["cutoff"], c["times"]) for c in calls]
    expected = [(10, [0, 1, 2, 3, 4, 5]), (13, [0, 1, 2, 3, 4, 5, 10, 11, 12])]
    assert seen == expected, (
        "recommend must be called once per cutoff with every rating before that cutoff and "
        f"nothing else (the split's train frame); expected (cutoff, rating times) {expected}, "
        f"got {seen}"
    )
    assert [c["users"] for c in calls] == [["a", "b"], ["b"]], (
        f"recommend must be asked for the split's test users, sorted; got {[c['users'] for c in calls]}"
    )


@exercise("5.1", points=1)
def test_movies_rated_before_the_cutoff_are_masked(lesson):
    result = run_cutoffs(lesson, own_movies_first)
    # masked, a's list is m3, m4 (both relevant) and b's m0, m3 (m0 relevant)
    got = result["recall@2"].round(6).tolist()
    assert got == [1.0, 0.5, 0.5], (
        "a recommender that puts each user's already rated movies first must still reach "
        f"recall@2 of 1, 0.5, 0.5 once they are excluded from the lists; got {got}. Exclude the "
        "movies each user rated *before the cutoff* (their training movies, not their test movies)"
    )


@exercise("5.1", points=1)
def test_recall_and_ndcg_of_each_pair(lesson):
    result = run_cutoffs(lesson, popularity_with_calls([]))
    # cutoff 10: a's list m3, m4 finds both test movies; b's list m0, m3 finds m0 at rank 1
    # (of m0, m5); cutoff 13: b's list m0, m3 again.
    ideal_two = 1 + SECOND
    expected_recall = [1.0, 0.5, 0.5]
    expected_ndcg = [1.0, 1 / ideal_two, 1 / ideal_two]
    np.testing.assert_allclose(result["recall@2"].to_numpy(float), expected_recall, atol=1e-9, err_msg=(
        "recall@2 per pair: the test movies are each user's first `horizon` ratings from the cutoff on"))
    np.testing.assert_allclose(result["ndcg@2"].to_numpy(float), expected_ndcg, atol=1e-9, err_msg=(
        "NDCG@2 per pair (ev.ndcg_by_user on the masked top-k lists)"))


# ---------------------------------------------------------------- 5.2 recent_popularity

RECENT = frame([
    ("u1", "m0", 0), ("u2", "m0", 40), ("u3", "m0", 50), ("u1", "m1", 60), ("u2", "m1", 70),
    ("u3", "m1", 75), ("u1", "m2", 99), ("u2", "m3", 100), ("u3", "m3", 120), ("u4", "zz", 80),
])


def recent(lesson, movie_ids, now=100, window=50):
    result = np.asarray(lesson.recent_popularity(RECENT, movie_ids, now, window), dtype=float)
    assert result.shape == (len(movie_ids),), f"expected one count per movie, shape ({len(movie_ids)},), got {result.shape}"
    return result


@exercise("5.2", points=1)
def test_counts_the_window_before_now(lesson):
    got = recent(lesson, ["m0", "m1", "m2", "m3"])
    assert got.tolist() == [1.0, 3.0, 1.0, 0.0], (
        "with now=100 and window=50, the window is 50 <= t < 100: m0 once (at 50), m1 three "
        f"times, m2 once, m3 never (its ratings at 100 and 120 are not before now); got {got.tolist()}"
    )


@exercise("5.2", points=1)
def test_the_future_in_the_frame_is_ignored(lesson):
    got = recent(lesson, ["m0", "m1", "m2", "m3"], now=76, window=30)
    assert got.tolist() == [1.0, 3.0, 0.0, 0.0], (
        "with now=76 and window=30 (46 <= t < 76): m0 once, m1 three times; the ratings at 80 "
        f"and later have not happened yet at `now` and must not count; got {got.tolist()}"
    )


@exercise("5.2", points=1)
def test_counts_follow_the_catalogue_order(lesson):
    got = recent(lesson, ["m2", "m0", "m3", "m1", "m9"])
    assert got.tolist() == [1.0, 1.0, 0.0, 3.0, 0.0], (
        "the counts must line up with movie_ids as given (m2, m0, m3, m1, m9), with 0 for "
        f"movies without a recent rating; got {got.tolist()}"
    )


# ---------------------------------------------------------------- 5.3 next_item_examples

# Rows (position: user, time): 0: u2@5, 1: u1@3, 2: u1@1, 3: u3@7, 4: u1@3, 5: u2@2, 6: u1@9.
# u1 in time order: rows 2, 1, 4, 6 (rows 1 and 4 share time 3: row order decides);
# u2: rows 5, 0; u3 has one rating and no example.
EXAMPLES = frame([
    ("u2", "a", 5), ("u1", "b", 3), ("u1", "c", 1), ("u3", "d", 7), ("u1", "e", 3), ("u2", "f", 2), ("u1", "g", 9),
])


def examples(lesson, length):
    result = lesson.next_item_examples(EXAMPLES, length)
    assert isinstance(result, tuple) and len(result) == 2, "next_item_examples must return (inputs, targets)"
    inputs, targets = (np.asarray(part) for part in result)
    assert inputs.shape == targets.shape == (2, length), (
        f"expected inputs and targets of shape (2 users, {length}), got {inputs.shape} and {targets.shape} "
        "(one row per user with at least two ratings)"
    )
    return inputs.tolist(), targets.tolist()


@exercise("5.3", points=1)
def test_targets_follow_their_inputs_in_time(lesson):
    inputs, targets = examples(lesson, 3)
    assert inputs[0] == [2, 1, 4] and targets[0] == [1, 4, 6], (
        "u1's ratings in time order are rows 2, 1, 4, 6 (rows 1 and 4 share a time: row order); "
        f"expected inputs [2, 1, 4] and targets [1, 4, 6], got {inputs[0]} and {targets[0]}"
    )


@exercise("5.3", points=1)
def test_short_histories_are_padded_on_the_left(lesson):
    inputs, targets = examples(lesson, 3)
    assert inputs[1] == [-1, -1, 5] and targets[1] == [-1, -1, 0], (
        "u2 has two ratings (rows 5 then 0): one example, right-aligned so that the last "
        f"position holds the latest; expected [-1, -1, 5] and [-1, -1, 0], got {inputs[1]} and {targets[1]}"
    )


@exercise("5.3", points=1)
def test_long_histories_keep_their_latest_ratings(lesson):
    inputs, targets = examples(lesson, 2)
    assert (inputs, targets) == ([[1, 4], [-1, 5]], [[4, 6], [-1, 0]]), (
        "with length 2, u1 keeps its latest 3 ratings (rows 1, 4, 6): inputs [1, 4], targets "
        f"[4, 6]; u2 [-1, 5] and [-1, 0]; got inputs {inputs} and targets {targets}"
    )


# ---------------------------------------------------------------- 5.4 causal_attention_mask

VALID = [[False, True, True, True], [True, True, True, True]]
EXPECTED_MASK = [
    [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]],
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
]


def mask_in_graph(lesson, valid):
    """The learner's mask computed inside a tf.function, as it is while the model trains."""
    import numpy as np
    import tensorflow as tf

    return np.asarray(tf.function(lesson.causal_attention_mask)(tf.constant(valid)))


def attention_outputs(lesson, sequences):
    """Outputs of the package's attention tower built with the learner's mask (seeded,
    without dropout)."""
    import numpy as np
    import tensorflow as tf

    from recsys_course.models.sequential import AttentionTower

    tf.keras.utils.set_random_seed(0)
    tower = AttentionTower(6, 8, 4, blocks=1, heads=1, dropout=0.0, mask_builder=lesson.causal_attention_mask)
    return np.asarray(tower(tf.constant(sequences, dtype=tf.int32)))


@exercise("5.4", points=1)
def test_mask_values(lesson):
    import tensorflow as tf

    got = np.asarray(lesson.causal_attention_mask(tf.constant(VALID)))
    assert got.shape == (2, 4, 4), f"expected a [batch, length, length] mask of shape (2, 4, 4), got {got.shape}"
    assert got.astype(int).tolist() == EXPECTED_MASK, (
        "position i may attend to position j exactly when j <= i and j holds a movie; for "
        f"valid {VALID} expected {EXPECTED_MASK}, got {got.astype(int).tolist()}"
    )


@exercise("5.4", points=1)
def test_mask_works_inside_a_graph(lesson):
    got = sandboxed(lesson, mask_in_graph)(lesson, VALID)
    assert np.asarray(got).astype(int).tolist() == EXPECTED_MASK, (
        "inside tf.function the mask must be the same: build it with TensorFlow ops "
        "(tf.linalg.band_part, tf.logical_and), not NumPy"
    )


@exercise("5.4", points=1)
def test_later_movies_do_not_change_earlier_outputs(lesson):
    first, second = [[0, 1, 2, 3], [0, 1, 2, 5]]
    out = np.asarray(sandboxed(lesson, attention_outputs)(lesson, [first, second]))
    assert out.shape == (2, 4, 8), f"the attention tower returned shape {out.shape}, expected (2, 4, 8)"
    gap = float(np.abs(out[0, :3] - out[1, :3]).max())
    assert gap < 1e-5, (
        "two sequences that differ only in their last movie must give the same outputs at the "
        f"earlier positions (they cannot read the future); they differ by {gap:.3g}"
    )
    assert float(np.abs(out[0, 3] - out[1, 3]).max()) > 1e-4, "the last position must read its own movie"
