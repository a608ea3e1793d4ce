"""Graded tests for lesson 06. Each test checks one behaviour of one exercise on a tiny,
hand-checkable fixture; the points add up to the exercise's points in
solutions/06_multitask_diversity.yml. Every fixture has a unique right answer (no ties)."""

import math

import numpy as np
import pytest

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("06")


# ---------------------------------------------------------------- 6.1 MultitaskModel.compute_loss

# The "towers" pass fixed 2-d vectors through unchanged, and the rating head sums the
# concatenated user and movie vectors, so every number below can be checked by hand.
USERS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
MOVIES = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32)
RATINGS = np.array([3.0, 3.0, 4.0], np.float32)
# Predicted ratings: row sums of [users, movies] = 2, 3, 2; errors 1, 0, 2 -> MSE 5/3.
MSE = 5.0 / 3.0


def softmax_loss() -> float:
    """Mean over rows of -log softmax(users @ movies.T)[i, i]: in-batch retrieval loss."""
    logits = USERS.astype(float) @ MOVIES.astype(float).T
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(np.diag(log_softmax)))


def multitask(lesson, rating_weight, retrieval_weight):
    tf = lesson.tf
    identity = tf.keras.layers.Lambda(lambda x: x)
    head = tf.keras.layers.Lambda(lambda x: tf.reduce_sum(x, axis=1, keepdims=True))
    return lesson.MultitaskModel(identity, tf.keras.layers.Lambda(lambda x: x), head,
                                 rating_weight=rating_weight, retrieval_weight=retrieval_weight)


def batch(tf):
    return {"user_id": tf.constant(USERS), "movie_id": tf.constant(MOVIES),
            "user_rating": tf.constant(RATINGS)}


def loss_of(lesson, rating_weight, retrieval_weight) -> float:
    model = multitask(lesson, rating_weight, retrieval_weight)
    value = np.asarray(model.compute_loss(batch(lesson.tf), training=False))
    assert value.shape == (), f"expected a scalar loss, got an array of shape {value.shape}"
    return float(value)


@exercise("6.1", points=1)
def test_rating_weight_only_gives_the_rating_loss(lesson):
    got = loss_of(lesson, 1.0, 0.0)
    assert got == pytest.approx(MSE, rel=1e-5), (
        f"with rating_weight=1 and retrieval_weight=0 the loss is the mean squared rating error "
        f"{MSE:.4f} (predictions 2, 3, 2 against ratings 3, 3, 4); got {got:.4f}"
    )


@exercise("6.1", points=1)
def test_retrieval_weight_only_gives_the_retrieval_loss(lesson):
    got = loss_of(lesson, 0.0, 1.0)
    assert got == pytest.approx(softmax_loss(), rel=1e-5), (
        f"with rating_weight=0 and retrieval_weight=1 the loss is the retrieval task's in-batch "
        f"softmax loss {softmax_loss():.4f}; got {got:.4f}"
    )


@exercise("6.1", points=1)
def test_weighted_sum_and_rmse_metric(lesson):
    tf = lesson.tf
    expected = 0.5 * MSE + 2.0 * softmax_loss()
    got = loss_of(lesson, 0.5, 2.0)
    assert got == pytest.approx(expected, rel=1e-5), (
        f"with rating_weight=0.5 and retrieval_weight=2 expected 0.5 * {MSE:.4f} + 2 * "
        f"{softmax_loss():.4f} = {expected:.4f}; got {got:.4f}"
    )
    model = multitask(lesson, 0.5, 2.0)
    model.compile(optimizer=tf.keras.optimizers.SGD())
    dataset = tf.data.Dataset.from_tensor_slices(
        {"user_id": USERS, "movie_id": MOVIES, "user_rating": RATINGS}).batch(3)
    result = model.evaluate(dataset, return_dict=True, verbose=0)
    rmse = result.get("root_mean_squared_error")
    assert rmse is not None and rmse == pytest.approx(math.sqrt(MSE), rel=1e-5), (
        "evaluate() must report the rating task's root_mean_squared_error "
        f"({math.sqrt(MSE):.4f}): compute the rating loss with self.rating_task; reported {result}"
    )


# ---------------------------------------------------------------- 6.2 bpr_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@exercise("6.2", points=1)
def test_bpr_loss_values(lesson):
    tf = lesson.tf
    # Pair 1: the rated movie scores 2 above the unrated one; pair 2: 1 below it.
    got = float(lesson.bpr_loss(tf.constant([2.0, 0.0]), tf.constant([0.0, 1.0])))
    expected = (softplus(-2.0) + softplus(1.0)) / 2
    assert got == pytest.approx(expected, rel=1e-5), (
        f"positive scores [2, 0], negative scores [0, 1]: expected the mean of -log sigmoid(2) and "
        f"-log sigmoid(-1) = {expected:.4f}; got {got:.4f}"
    )
    # Large margins: -log sigmoid(1000) is 0 and -log sigmoid(-1000) is 1000, so the mean is 500.
    # Computed as -log(sigmoid(d)), the second overflows: sigmoid(-1000) is 0 in float32.
    got = float(lesson.bpr_loss(tf.constant([1000.0, 0.0]), tf.constant([0.0, 1000.0])))
    assert math.isfinite(got) and got == pytest.approx(500.0, rel=1e-5), (
        "score differences of +1000 and -1000 give losses 0 and 1000, mean 500; got "
        f"{got}. -log(sigmoid(d)) overflows for large |d|: use tf.math.softplus(-d)"
    )


def bpr_slope_at_margin_one(lesson):
    """d loss / d positive score for one pair (positive 1, negative 0), computed where the
    lesson runs (a gradient tape cannot watch a call into the sandbox)."""
    import tensorflow as tf

    positive = tf.Variable([1.0])
    with tf.GradientTape() as tape:
        loss = lesson.bpr_loss(positive, tf.constant([0.0]))
    gradient = tape.gradient(loss, positive)
    return None if gradient is None else float(gradient[0])


@exercise("6.2", points=1)
def test_bpr_loss_is_a_mean_and_rewards_the_positive(lesson):
    tf = lesson.tf
    one = float(lesson.bpr_loss(tf.constant([1.0]), tf.constant([0.0])))
    four = float(lesson.bpr_loss(tf.constant([1.0] * 4), tf.constant([0.0] * 4)))
    assert four == pytest.approx(one, rel=1e-5), (
        f"four copies of one pair must give the same loss as the pair alone (a mean, not a sum): "
        f"{one:.4f} vs {four:.4f}"
    )
    slope = sandboxed(lesson, bpr_slope_at_margin_one)(lesson)
    expected = -1.0 / (1.0 + math.exp(1.0))
    assert slope is not None and slope == pytest.approx(expected, rel=1e-4), (
        f"d loss / d positive score at a margin of 1 is -sigmoid(-1) = {expected:.4f} (raising the "
        f"rated movie's score lowers the loss); got {slope}"
    )


# ---------------------------------------------------------------- 6.3 sample_unrated

# User 0 rated items 0, 2 and 4 of 6; user 1 rated all but item 5; user 2 rated everything.
RATED = np.array([
    [True, False, True, False, True, False],
    [True, True, True, True, True, False],
    [True, True, True, True, True, True],
])


@exercise("6.3", points=1)
def test_sample_unrated_never_returns_a_rated_item(lesson):
    users = np.array([0, 1] * 300)
    got = np.asarray(lesson.sample_unrated(RATED, users, np.random.default_rng(0)))
    assert got.shape == (600,), f"expected one negative per row, shape (600,), got {got.shape}"
    hits = RATED[users, got]
    assert not hits.any(), (
        f"{int(hits.sum())} of 600 sampled negatives are movies the user rated "
        f"(first at row {int(np.argmax(hits))}: user {users[np.argmax(hits)]}, item {got[np.argmax(hits)]})"
    )
    assert (got[users == 1] == 5).all(), "user 1's only unrated item is 5: every draw must be 5"
    with pytest.raises(ValueError):
        lesson.sample_unrated(RATED, np.array([0, 2]), np.random.default_rng(0))


@exercise("6.3", points=1)
def test_sample_unrated_draws_each_row_uniformly(lesson):
    users = np.zeros(600, dtype=np.int64)
    got = np.asarray(lesson.sample_unrated(RATED, users, np.random.default_rng(1)))
    counts = {item: int((got == item).sum()) for item in (1, 3, 5)}
    # 600 uniform draws over 3 items: about 200 each; below 100 is (practically) impossible.
    assert all(c >= 100 for c in counts.values()), (
        f"user 0's unrated items 1, 3 and 5 should each be drawn about 200 times in 600 rows "
        f"(independent draws per row); got {counts}"
    )


# ---------------------------------------------------------------- 6.4 listwise_loss


def log_softmax(scores: list[float]) -> np.ndarray:
    x = np.asarray(scores, dtype=float)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


def listwise(lesson, labels, scores, mask) -> float:
    tf = lesson.tf
    value = np.asarray(lesson.listwise_loss(tf.constant(labels, tf.float32), tf.constant(scores, tf.float32),
                                            tf.constant(mask, tf.bool)))
    assert value.shape == (), f"expected a scalar loss, got an array of shape {value.shape}"
    return float(value)


@exercise("6.4", points=1)
def test_listwise_loss_of_one_list(lesson):
    # One list of three candidates, the second one rated: -log softmax([1, 2, 0])[1].
    expected = -log_softmax([1.0, 2.0, 0.0])[1]
    got = listwise(lesson, [[0.0, 1.0, 0.0]], [[1.0, 2.0, 0.0]], [[True, True, True]])
    assert got == pytest.approx(expected, rel=1e-5), (
        f"labels [0, 1, 0], scores [1, 2, 0]: expected -log softmax(scores)[1] = {expected:.4f}; got {got:.4f}"
    )


@exercise("6.4", points=1)
def test_listwise_loss_ignores_padding_and_lists_without_positives(lesson):
    # Row 0 has a padding entry with a high score (it must not enter the softmax); row 1 has
    # no positive (it must not count in the mean); row 2 is a plain list.
    labels = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    scores = [[2.0, 1.0, 0.0, 5.0], [1.0, 2.0, 3.0, 4.0], [0.5, 1.5, -1.0, 3.0]]
    mask = [[True, True, True, False], [True, True, True, True], [True, True, True, True]]
    rows = [-log_softmax([2.0, 1.0, 0.0])[0], -log_softmax(scores[2])[2]]
    expected = float(np.mean(rows))
    got = listwise(lesson, labels, scores, mask)
    assert got == pytest.approx(expected, rel=1e-5), (
        f"expected the mean over the two lists with a positive ({rows[0]:.4f} and {rows[1]:.4f}) = "
        f"{expected:.4f}, with row 0's masked entry (score 5) left out of its softmax; got {got:.4f}"
    )


@exercise("6.4", points=1)
def test_listwise_loss_shares_the_weight_of_positives_and_stays_finite(lesson):
    # Graded positives share the list's weight in proportion to their labels: 3/4 and 1/4.
    scores = [0.5, 1.5, -1.0, 3.0]
    expected = -(0.75 * log_softmax(scores)[1] + 0.25 * log_softmax(scores)[2])
    got = listwise(lesson, [[0.0, 3.0, 1.0, 0.0]], [scores], [[True] * 4])
    assert got == pytest.approx(expected, rel=1e-5), (
        f"labels [0, 3, 1, 0]: the positives weigh 3/4 and 1/4 (labels over their sum), expected "
        f"{expected:.4f}; got {got:.4f}"
    )
    # The rated movie scores 2000 below the other: the loss is 2000, finite. A softmax
    # computed first underflows to 0 and its log is -inf.
    got = listwise(lesson, [[0.0, 1.0]], [[1000.0, -1000.0]], [[True, True]])
    assert math.isfinite(got) and got == pytest.approx(2000.0, rel=1e-4), (
        f"scores [1000, -1000] with the second rated: expected a loss of 2000; got {got}. "
        "Use tf.nn.log_softmax rather than the log of a softmax"
    )


# ---------------------------------------------------------------- 6.5 mmr_rerank

RELEVANCE = np.array([0.9, 1.0, 0.7, 0.6, 0.2, 0.5])
SIMILARITY = np.array([
    [1.0, 0.9, 0.1, 0.5, 0.0, 0.3],
    [0.9, 1.0, 0.2, 0.6, 0.1, 0.8],
    [0.1, 0.2, 1.0, 0.4, 0.3, 0.7],
    [0.5, 0.6, 0.4, 1.0, 0.2, 0.1],
    [0.0, 0.1, 0.3, 0.2, 1.0, 0.0],
    [0.3, 0.8, 0.7, 0.1, 0.0, 1.0],
])


def mmr(lesson, k, lam):
    return [int(i) for i in np.asarray(lesson.mmr_rerank(RELEVANCE.copy(), SIMILARITY.copy(), k, lam))]


@exercise("6.5", points=1)
def test_mmr_with_lambda_one_is_the_relevance_order(lesson):
    got = mmr(lesson, 10, 1.0)
    assert got == [1, 0, 2, 3, 5, 4], (
        f"lam=1 ignores similarity: expected all 6 positions by relevance [1, 0, 2, 3, 5, 4] "
        f"(k=10 > 6 candidates), got {got}"
    )


@exercise("6.5", points=1)
def test_mmr_penalises_the_maximum_similarity(lesson):
    # lam = 0.3. Step 2: 0.3 r - 0.7 sim(., 1) is best for 2 (0.07). Step 3: the penalty is the
    # max similarity to {1, 2}: 4 scores 0.06 - 0.21 = -0.15, beating 3 (-0.24) and 0 (-0.36).
    # Step 4: 3 (0.18 - 0.42 = -0.24) beats 0 (-0.36) and 5 (-0.41).
    got = mmr(lesson, 4, 0.3)
    assert got == [1, 2, 4, 3], f"lam=0.3, k=4: expected [1, 2, 4, 3], got {got}"


@exercise("6.5", points=1)
def test_mmr_with_lambda_zero_picks_the_least_similar(lesson):
    got = mmr(lesson, 4, 0.0)
    assert got == [1, 4, 2, 3], (
        f"lam=0: the first pick is the most relevant (1), then each next one has the lowest "
        f"maximum similarity to those chosen: expected [1, 4, 2, 3], got {got}"
    )
