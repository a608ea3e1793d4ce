"""The sequence helpers of lesson 05 (``recsys_course.models.sequential``) on hand-checkable
frames: nothing a query or a training position reads comes from its future."""

import numpy as np
import pandas as pd
import pytest

from recsys_course.models import sequential as sq

MOVIES = ["a", "b", "c", "d"]
DAY = sq.DAY
# u1 rates a, b, c (b and c at the same second: row order decides), u2 rates b then d.
RATINGS = pd.DataFrame({
    "user_id": ["u1", "u2", "u1", "u1", "u2"],
    "movie_id": ["a", "b", "b", "c", "d"],
    "timestamp": [0, 1 * DAY, 2 * DAY, 2 * DAY, 3 * DAY],
})


def test_gap_bucket_is_log2_of_minutes_and_clipped():
    assert sq.gap_bucket([-5, 0, 59, 60, 3 * 60, 10 ** 12]).tolist() == [0, 0, 0, 1, 2, sq.GAP_BUCKETS - 1]


def test_latest_sequences_are_left_padded_in_time_order():
    items, last = sq.latest_sequences(RATINGS, ["u1", "u2", "nobody"], MOVIES, 3)
    # sequence index = catalogue position + 1: a 1, b 2, c 3, d 4
    assert items.tolist() == [[1, 2, 3], [0, 2, 4], [0, 0, 0]]
    assert last.tolist() == [2 * DAY, 3 * DAY, -1]
    short, _ = sq.latest_sequences(RATINGS, ["u1"], MOVIES, 2)
    assert short.tolist() == [[2, 3]], "only the latest `length` movies are kept"


def test_recency_counts_only_ratings_before_the_moment():
    recency = sq.Recency.build(RATINGS, MOVIES, window=2 * DAY)
    # at 3 days: the window [1 day, 3 days) holds b (u2), b (u1) and c; d at 3 days is not before
    np.testing.assert_allclose(recency.at(3 * DAY), np.log1p([0, 2, 1, 0]))
    np.testing.assert_allclose(recency.table[recency.step_of([3 * DAY])[0]], recency.at(3 * DAY))
    with pytest.raises(ValueError, match="window"):
        sq.Recency.build(RATINGS, MOVIES, window=0)


def test_markov_chain_recommends_what_followed_the_last_movie():
    scores = sq.markov_scores(RATINGS, ["u1", "u2"], MOVIES, last=1)
    # transitions: a -> b, b -> c (u1), b -> d (u2); u1's last movie is c (never followed:
    # popularity order only), u2's is d (never followed either)
    query = pd.DataFrame({"user_id": ["u3"], "movie_id": ["b"], "timestamp": [9 * DAY]})
    both = sq.markov_scores(pd.concat([RATINGS, query], ignore_index=True), ["u3"], MOVIES, last=1)[0]
    assert both[2] == pytest.approx(both[3]) and both[2] > 0.4 and both[0] < 1e-3
    assert np.argmax(scores[0]) == 1, "with no transition out of c, the most rated movie (b) leads"


def test_towers_do_not_read_the_future():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    early, late = [[0, 1, 2, 3], [0, 1, 2, 4]]
    for tower in (sq.GRUTower(4, 8, dropout=0.0), sq.AttentionTower(4, 8, 4, dropout=0.0)):
        out = tower(tf.constant([early, late])).numpy()
        assert out.shape == (2, 4, 8)
        np.testing.assert_allclose(out[0, :3], out[1, :3], atol=1e-5)
        assert np.abs(out[0, 3] - out[1, 3]).max() > 1e-4
    mask = sq.causal_mask(tf.constant([[False, True, True]])).numpy()[0].astype(int)
    assert mask.tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_example_features_pair_each_input_with_the_rating_after_it():
    inputs = np.array([[-1, 0, 2]])   # rows of RATINGS: u1's a, then b
    targets = np.array([[-1, 2, 3]])  # b, then c
    recency = sq.Recency.build(RATINGS, MOVIES, window=DAY)
    features = sq.example_features(RATINGS, inputs, targets, MOVIES, recency)
    assert features["items"].tolist() == [[0, 1, 2]] and features["targets"].tolist() == [[0, 2, 3]]
    assert features["gap"].tolist() == [[0, int(sq.gap_bucket(2 * DAY)), 0]]
    with pytest.raises(ValueError, match="same shape"):
        sq.example_features(RATINGS, inputs, targets[:, :2], MOVIES)
