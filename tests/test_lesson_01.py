"""Graded tests for lesson 01 (matrix factorisation). Each test checks one behaviour of one
exercise on a tiny, hand-checkable fixture; the points add up to the exercise's points in
solutions/01_matrix_factorization.yml. Expected values are written out with the arithmetic
that produces them, so a learner can redo it by hand."""

from types import SimpleNamespace

import numpy as np
import pytest

from recsys_course.tooling.grading import exercise, sandboxed
from recsys_course.tooling.grading.messages import expect_arity, expect_shape, expect_type


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("01")


def hand_params(lesson):
    """3 user rows and 4 movie rows (row 0 = unknown, all zero), k = 2."""
    return lesson.MFParams(
        global_mean=3.5,
        user_bias=np.array([0.0, 0.5, -0.25]),
        item_bias=np.array([0.0, 0.1, -0.4, 0.2]),
        user_factors=np.array([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]]),
        item_factors=np.array([[0.0, 0.0], [0.5, 0.5], [1.0, -1.0], [2.0, 0.0]]),
    )


def hand_ratings(lesson):
    """User 1 rated movies 1 and 2, user 2 rated movie 3."""
    return lesson.Interactions(np.array([1, 2, 1]), np.array([1, 3, 2]), np.array([5.0, 2.0, 3.0]))


def reference_loss(params, data, reg):
    """The objective of exercise 1.3, written independently of the lesson."""
    p, q = params.user_factors[data.users], params.item_factors[data.items]
    b_u, b_i = params.user_bias[data.users], params.item_bias[data.items]
    errors = data.ratings - (params.global_mean + b_u + b_i + (p * q).sum(axis=1))
    penalty = (p**2).sum(axis=1) + (q**2).sum(axis=1) + b_u**2 + b_i**2
    return float(np.sum(errors**2 + reg * penalty))


# ---------------------------------------------------------------- 1.1 RMSE


@exercise("1.1", points=1)
def test_rmse_of_two_rating_vectors(lesson):
    result = lesson.rmse(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    expect_type(result, float, "rmse(y_true, y_pred)")
    # errors 0, 0, 0, -2: sqrt((0 + 0 + 0 + 4) / 4) = 1
    assert result == pytest.approx(1.0), f"expected RMSE 1.0 for errors (0, 0, 0, -2), got {result}"


@exercise("1.1", points=1)
def test_rmse_uses_only_the_observed_cells(lesson):
    actual = np.array([[4.0, np.nan, 2.0], [np.nan, 5.0, np.nan]])
    predicted = np.array([[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]])
    observed = ~np.isnan(actual)
    result = lesson.rmse(actual, predicted, observed)
    expected = np.sqrt((1.0**2 + 1.0**2 + 2.0**2) / 3)  # three observed cells, errors 1, -1, 2
    assert not np.isnan(result), "got NaN: unobserved cells (holding NaN here) must not enter the sum"
    assert result == pytest.approx(expected), (
        f"3 observed cells with errors 1, -1 and 2: expected sqrt(6 / 3) = {expected:.4f}, got "
        f"{result:.4f}. Empty cells are unknown, not zeros: divide by the observed count only."
    )


# ---------------------------------------------------------------- 1.2 predict


@exercise("1.2", points=1)
def test_predict_adds_mean_biases_and_dot_product(lesson):
    params = hand_params(lesson)
    result = np.asarray(lesson.predict(params, np.array([1, 2, 1]), np.array([1, 3, 2])))
    expected = np.array(
        [
            3.5 + 0.5 + 0.1 + (1.0 * 0.5 + 2.0 * 0.5),  # user 1, movie 1 = 5.6
            3.5 - 0.25 + 0.2 + (-1.0 * 2.0 + 0.5 * 0.0),  # user 2, movie 3 = 1.45
            3.5 + 0.5 - 0.4 + (1.0 * 1.0 + 2.0 * -1.0),  # user 1, movie 2 = 2.6
        ]
    )
    expect_shape(result, (3,), "predict(params, users, items) (one prediction per pair)")
    np.testing.assert_allclose(
        result, expected, atol=1e-9,
        err_msg="prediction must be global mean + user bias + movie bias + p_u . q_i",
    )


def huge_catalogue(lesson):
    """Parameters of 2**32 users and 2**32 movies that take no memory: every table is a
    read-only broadcast view of one row. Any users x movies matrix of them has more bytes
    than a 64-bit machine can address, so NumPy refuses to create it at once (no allocation
    is attempted), while per-pair arithmetic reads three rows of each table. Built where
    ``predict`` runs (``sandboxed``): a view is not sent by value."""
    import numpy as np

    rows = 2**32
    return lesson.MFParams(
        3.0, np.broadcast_to(np.array(0.5), (rows,)), np.broadcast_to(np.array(-0.25), (rows,)),
        np.broadcast_to(np.array([1.0, 2.0]), (rows, 2)), np.broadcast_to(np.array([0.5, -1.0]), (rows, 2)),
    )


@exercise("1.2", points=1)
def test_predict_bias_only_model_and_unknown_rows(lesson):
    params = lesson.MFParams(3.0, np.array([0.0, 0.4]), np.array([0.0, -0.3, 0.6]), np.zeros((2, 0)), np.zeros((3, 0)))
    result = np.asarray(lesson.predict(params, np.array([1, 0, 1]), np.array([1, 2, 0])))
    expected = np.array([3.0 + 0.4 - 0.3, 3.0 + 0.0 + 0.6, 3.0 + 0.4 + 0.0])
    np.testing.assert_allclose(
        result, expected, atol=1e-9,
        err_msg="with k = 0 factors the prediction is global mean + user bias + movie bias "
        "(row 0, the unknown id, contributes zeros)",
    )
    # One dot product per pair, never the whole users x movies matrix (the prose's contract).
    params = sandboxed(lesson, huge_catalogue)(lesson)
    pairs = (np.array([0, 2**32 - 1, 123_456_789]), np.array([7, 0, 2**32 - 1]))
    try:
        result = np.asarray(lesson.predict(params, *pairs))
    except (ValueError, MemoryError) as error:
        raise AssertionError(
            "predict must compute one dot product per (user, movie) pair, without building the "
            "users x movies matrix: with 2**32 users and movies that matrix cannot exist, and "
            f"predict raised {type(error).__name__} ({str(error)[:80]})"
        ) from None
    # 3 + 0.5 - 0.25 + (1.0 * 0.5 + 2.0 * -1.0) = 1.75 for every pair
    np.testing.assert_allclose(result, [1.75, 1.75, 1.75], atol=1e-9,
                               err_msg="three pairs of the 2**32 x 2**32 catalogue")


# ---------------------------------------------------------------- 1.3 loss


@exercise("1.3", points=1)
def test_loss_without_regularisation_sums_squared_errors(lesson):
    result = lesson.regularized_loss(hand_params(lesson), hand_ratings(lesson), 0.0)
    # predictions 5.6, 1.45, 2.6 for ratings 5, 2, 3: errors -0.6, 0.55, 0.4
    expected = 0.6**2 + 0.55**2 + 0.4**2  # 0.8225, a sum over ratings, not a mean
    expect_type(result, float, "regularized_loss(params, data, reg)")
    assert result == pytest.approx(expected), (
        f"with reg = 0 the loss is the sum of squared errors, expected {expected:.4f}, got {result:.4f}"
    )


@exercise("1.3", points=1)
def test_loss_penalty_is_paid_per_rating(lesson):
    result = lesson.regularized_loss(hand_params(lesson), hand_ratings(lesson), 0.5)
    # per rating: |p_u|^2 + |q_i|^2 + b_u^2 + b_i^2
    penalties = [
        5.0 + 0.5 + 0.25 + 0.01,  # user 1, movie 1
        1.25 + 4.0 + 0.0625 + 0.04,  # user 2, movie 3
        5.0 + 2.0 + 0.25 + 0.16,  # user 1 again (pays again), movie 2
    ]
    expected = 0.8225 + 0.5 * sum(penalties)  # 10.08375
    assert result == pytest.approx(expected), (
        f"expected squared errors 0.8225 + 0.5 x penalties {sum(penalties):.4f} = {expected:.5f}, "
        f"got {result:.5f}. The penalty covers p_u, q_i, b_u and b_i and is paid once per rating."
    )


# ---------------------------------------------------------------- 1.4 SGD


def one_rating_params(lesson):
    return lesson.MFParams(
        3.0, np.array([0.0, 0.2]), np.array([0.0, -0.1]), np.array([[0.0, 0.0], [0.5, -0.5]]), np.array([[0.0, 0.0], [1.0, 0.2]])
    )


@exercise("1.4", points=1)
def test_sgd_step_on_one_rating_matches_the_update_rule(lesson):
    params = one_rating_params(lesson)
    data = lesson.Interactions(np.array([1]), np.array([1]), np.array([4.0]))
    returned = lesson.sgd_epoch(params, data, lr=0.1, reg=0.5, batch_size=8, rng=np.random.default_rng(0))
    assert returned is params, "sgd_epoch must update params in place and return that same object"
    # prediction 3 + 0.2 - 0.1 + (0.5 * 1.0 - 0.5 * 0.2) = 3.5, so e = 0.5
    assert params.user_bias[1] == pytest.approx(0.2 + 0.1 * (0.5 - 0.5 * 0.2)), (
        f"b_u += lr * (e - reg * b_u) should give 0.24, got {params.user_bias[1]:.4f}"
    )
    assert params.item_bias[1] == pytest.approx(-0.1 + 0.1 * (0.5 + 0.5 * 0.1)), (
        f"b_i += lr * (e - reg * b_i) should give -0.045, got {params.item_bias[1]:.4f}"
    )
    np.testing.assert_allclose(
        params.user_factors[1], [0.525, -0.465], atol=1e-9,
        err_msg="p_u += lr * (e * q_i - reg * p_u), with the q_i from before the step",
    )
    np.testing.assert_allclose(
        params.item_factors[1], [0.975, 0.165], atol=1e-9,
        err_msg="q_i += lr * (e * p_u - reg * q_i), with the p_u from BEFORE this step (not the updated one)",
    )
    assert params.global_mean == 3.0, "the global mean is fixed; SGD must not change it"


@exercise("1.4", points=1)
def test_sgd_user_twice_in_one_batch_gets_both_updates(lesson):
    params = lesson.MFParams(
        3.0, np.zeros(2), np.zeros(3), np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    )
    # user 1 rates movie 1 (prediction 4, rating 5, e = 1) and movie 2 (prediction 3, rating 2.5, e = -0.5)
    data = lesson.Interactions(np.array([1, 1]), np.array([1, 2]), np.array([5.0, 2.5]))
    lesson.sgd_epoch(params, data, lr=0.1, reg=0.0, batch_size=2, rng=np.random.default_rng(0))
    got = float(params.user_bias[1])
    # `a[idx] += v` with a repeated index keeps one of the two updates (0.1 or -0.05): say so
    # only when that is what happened, not for every wrong value.
    one_update = any(got == pytest.approx(v) for v in (0.1 * 1.0, 0.1 * -0.5))
    assert got == pytest.approx(0.1 * 1.0 + 0.1 * -0.5), (
        f"user 1 appears twice in the batch: expected b_u = 0.1 * 1 + 0.1 * (-0.5) = 0.05, got {got:.4f}"
        + (": only one of the two updates arrived. `a[idx] += v` keeps one update per repeated index; "
           "np.add.at adds them all." if one_update else ": each rating's update must be added to it.")
    )
    np.testing.assert_allclose(
        params.user_factors[1], [1.1, -0.05], atol=1e-9,
        err_msg="p_u must receive the updates of both ratings: [1, 0] + 0.1 * 1 * [1, 0] + 0.1 * (-0.5) * [0, 1]",
    )


def reference_epoch(params, data, lr, reg, batch_size, order):
    """Exercise 1.4's update rule, written independently of the lesson, visiting the
    ratings in ``order`` (arrays are updated in place)."""
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        u, i, r = data.users[batch], data.items[batch], data.ratings[batch]
        b_u, b_i = params.user_bias[u].copy(), params.item_bias[i].copy()
        p, q = params.user_factors[u].copy(), params.item_factors[i].copy()
        e = r - (params.global_mean + b_u + b_i + (p * q).sum(axis=1))
        np.add.at(params.user_bias, u, lr * (e - reg * b_u))
        np.add.at(params.item_bias, i, lr * (e - reg * b_i))
        np.add.at(params.user_factors, u, lr * (e[:, None] * q - reg * p))
        np.add.at(params.item_factors, i, lr * (e[:, None] * p - reg * q))


# Eight ratings of two users and two movies and a k = 1 start; with one rating per step, each
# step's error depends on the steps before it, so the visiting order shows in the result.
ORDER_DATA = (np.array([1, 2, 1, 2, 1, 2, 1, 2]), np.array([1, 1, 2, 2, 1, 2, 2, 1]),
              np.array([5.0, 1.0, 4.0, 2.0, 3.0, 5.0, 1.0, 4.0]))


def order_start():
    return SimpleNamespace(global_mean=3.0, user_bias=np.zeros(3), item_bias=np.zeros(3),
                           user_factors=np.array([[0.0], [0.5], [-0.5]]),
                           item_factors=np.array([[0.0], [1.0], [0.5]]))


def flat(params) -> np.ndarray:
    return np.concatenate([np.asarray(params.user_bias), np.asarray(params.item_bias),
                           np.asarray(params.user_factors).ravel(), np.asarray(params.item_factors).ravel()])


def check_permutation_order(lesson):
    # The contract fixes the order: rng.permutation(len(data.ratings)), then consecutive
    # batches. The expected result replays that order with the same seed, on this side.
    seed, lr = 11, 0.3
    start = order_start()
    params = lesson.MFParams(start.global_mean, start.user_bias, start.item_bias, start.user_factors,
                             start.item_factors)
    lesson.sgd_epoch(params, lesson.Interactions(*ORDER_DATA), lr=lr, reg=0.0, batch_size=1,
                     rng=np.random.default_rng(seed))
    data = SimpleNamespace(users=ORDER_DATA[0], items=ORDER_DATA[1], ratings=ORDER_DATA[2])
    outcomes = {}
    for name, visit in (("shuffled", np.random.default_rng(seed).permutation(8)), ("in order", np.arange(8)),
                        ("reversed", np.arange(8)[::-1])):
        reference = order_start()
        reference_epoch(reference, data, lr, 0.0, 1, visit)
        outcomes[name] = flat(reference)
    # Guard the fixture: the orders must give clearly different parameters.
    assert min(np.abs(outcomes["shuffled"] - outcomes[o]).max() for o in ("in order", "reversed")) > 1e-2, (
        "the test's fixture does not separate the orders (a bug in the test, not in your code)"
    )
    got = flat(params)
    if np.allclose(got, outcomes["in order"], atol=1e-9):
        raise AssertionError("the ratings were visited in their stored order: shuffle them first with "
                             "order = rng.permutation(len(data.ratings))")
    np.testing.assert_allclose(
        got, outcomes["shuffled"], atol=1e-9,
        err_msg="with batch_size=1 each rating's step depends on the steps before it: visit the ratings "
        "in the order rng.permutation(len(data.ratings)) (one draw from the rng you are given)",
    )


@exercise("1.4", points=1)
def test_sgd_follows_the_permutation_and_lowers_the_loss(lesson):
    check_permutation_order(lesson)
    rng = np.random.default_rng(7)
    users, items = rng.integers(1, 7, 60), rng.integers(1, 6, 60)
    taste, appeal = rng.normal(size=(7, 2)), rng.normal(size=(6, 2))  # ratings with a rank-2 structure
    ratings = np.clip(np.round(3.0 + (taste[users] * appeal[items]).sum(axis=1)), 1, 5)
    data = lesson.Interactions(users, items, ratings)
    params = lesson.init_params(7, 6, 3, float(ratings.mean()), seed=3)
    before = reference_loss(params, data, 0.05)
    for _ in range(10):
        lesson.sgd_epoch(params, data, lr=0.05, reg=0.05, batch_size=4, rng=rng)
    after = reference_loss(params, data, 0.05)
    assert after < 0.5 * before, (
        f"10 epochs should at least halve the regularised loss: before {before:.2f}, after {after:.2f}"
    )
    assert params.global_mean == pytest.approx(float(data.ratings.mean())), "the global mean must not change"


# ---------------------------------------------------------------- 1.5 Keras model

KERAS_P = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 1.0, 1.0]])
KERAS_Q = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.5, -1.0], [2.0, 0.0, 0.5], [1.0, 1.0, 1.0]])
KERAS_BU = np.array([[0.0], [0.3], [-0.2], [0.1]])
KERAS_BI = np.array([[0.0], [0.5], [0.0], [-0.4], [0.2]])


def keras_model_with_known_weights(lesson, reg):
    model = lesson.MatrixFactorization(4, 5, 3, reg=reg, global_mean=3.0, seed=1)
    inputs = {"user_index": np.array([1, 2, 3, 1]), "item_index": np.array([1, 3, 4, 2])}
    model(inputs)  # builds the layers
    model.user_factors.set_weights([KERAS_P])
    model.item_factors.set_weights([KERAS_Q])
    model.user_bias.set_weights([KERAS_BU])
    model.item_bias.set_weights([KERAS_BI])
    return model, inputs


@exercise("1.5", points=1)
def test_keras_model_predicts_the_biased_dot_product(lesson):
    model, inputs = keras_model_with_known_weights(lesson, reg=0.1)
    result = np.asarray(model(inputs, training=False))
    u, i = inputs["user_index"], inputs["item_index"]
    expected = 3.0 + KERAS_BU[u, 0] + KERAS_BI[i, 0] + (KERAS_P[u] * KERAS_Q[i]).sum(axis=1)  # 4.8, 3.3, 4.1, 1.8
    expect_shape(result, (4,), "the model's output (one rating per example)")
    np.testing.assert_allclose(
        result, expected, atol=1e-5, err_msg="call must return global_mean + b_u + b_i + p_u . q_i per example"
    )


@exercise("1.5", points=1)
def test_keras_model_adds_the_l2_penalty_when_training(lesson):
    import tensorflow as tf

    model, inputs = keras_model_with_known_weights(lesson, reg=0.1)
    model(inputs, training=True)
    u, i = inputs["user_index"], inputs["item_index"]
    per_example = (KERAS_P[u] ** 2).sum(1) + (KERAS_Q[i] ** 2).sum(1) + KERAS_BU[u, 0] ** 2 + KERAS_BI[i, 0] ** 2
    expected = 0.1 * per_example.mean()
    assert model.losses, "no penalty found: with training=True, call must add reg * mean(...) with self.add_loss"
    penalty = float(tf.add_n(model.losses))
    assert penalty == pytest.approx(expected, rel=1e-4), (
        f"expected penalty reg * mean over the batch of (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2) = {expected:.4f}, "
        f"got {penalty:.4f}"
    )


@exercise("1.5", points=1)
def test_keras_model_learns_with_fit(lesson):
    tf = lesson.tf  # the lesson's TensorFlow: in batch grading, the optimizer must live in the sandbox

    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 6, 80), rng.integers(1, 7, 80)
    taste, appeal = rng.normal(size=6), rng.normal(size=7)
    ratings = np.clip(3.0 + taste[users] * appeal[items], 1.0, 5.0)
    inputs = {"user_index": users, "item_index": items}
    model = lesson.MatrixFactorization(6, 7, 2, reg=0.0, global_mean=float(ratings.mean()), seed=0)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.1), loss="mse")
    before = float(np.mean((np.asarray(model(inputs)) - ratings) ** 2))
    model.fit(inputs, ratings, epochs=20, batch_size=40, verbose=0)
    after = float(np.mean((np.asarray(model(inputs)) - ratings) ** 2))
    assert after < 0.5 * before, (
        f"20 epochs of fit should at least halve the training error: MSE before {before:.3f}, after {after:.3f}"
    )


# ---------------------------------------------------------------- 1.6 most similar

VECTORS = np.array(
    [
        [1.0, 0.0],  # 0
        [10.0, 10.0],  # 1: long, 45 degrees away from row 0
        [1.0, 0.1],  # 2: short, almost parallel to row 0
        [0.0, 1.0],  # 3: orthogonal to row 0
        [-1.0, 0.0],  # 4: opposite to row 0
        [0.0, 0.0],  # 5: a zero vector
    ]
)


def cosine(a, b):
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


@exercise("1.6", points=1)
def test_most_similar_uses_cosine_not_dot_product(lesson):
    result = lesson.most_similar(VECTORS, 0, k=2)
    expect_arity(result, 2, "most_similar(vectors, query, k)")
    rows, similarities = result
    rows = [int(r) for r in rows]
    assert rows == [2, 1], (
        f"by cosine, row 2 (cos {cosine(VECTORS[0], VECTORS[2]):.3f}) beats row 1 (cos "
        f"{cosine(VECTORS[0], VECTORS[1]):.3f}) even though row 1's dot product is larger: expected [2, 1], got {rows}"
    )
    np.testing.assert_allclose(similarities, [cosine(VECTORS[0], VECTORS[2]), cosine(VECTORS[0], VECTORS[1])], atol=1e-6)


@exercise("1.6", points=1)
def test_most_similar_skips_the_query_and_returns_at_most_n_minus_1(lesson):
    result = lesson.most_similar(VECTORS, 2, k=10)
    expect_arity(result, 2, "most_similar(vectors, query, k)")
    rows, similarities = result
    rows = [int(r) for r in rows]
    assert 2 not in rows, f"the query (row 2) must not be its own neighbour, got rows {rows}"
    assert rows == [0, 1, 3, 5, 4], f"expected all 5 other rows by cosine descending, [0, 1, 3, 5, 4], got {rows}"
    expected = [cosine(VECTORS[2], VECTORS[r]) for r in (0, 1, 3, 5, 4)]
    np.testing.assert_allclose(
        similarities, expected, atol=1e-6, err_msg="similarities must be cosines, the zero vector scoring 0"
    )
