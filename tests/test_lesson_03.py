"""Graded tests for lesson 03. Each test checks one behaviour of one exercise on a tiny,
hand-checkable fixture; the points add up to the exercise's points in
solutions/03_baselines.yml."""

import numpy as np
import pytest

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("03")


@pytest.fixture(scope="module")
def tf():
    import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)
    import tensorflow

    return tensorflow


def call_or_fail(what, function, *args):
    """Run ``function(*args)``; an exception becomes a failure message a learner can read."""
    try:
        return function(*args)
    except Exception as error:  # the learner's code may raise anything
        pytest.fail(f"{what} raised {type(error).__name__}: {str(error).splitlines()[0][:300]}", pytrace=False)


# ----------------------------------------------------------------------------- 3.1
# Two movies watched by three users: G = [[2, 1], [1, 2]]. With lambda = 1 the constrained
# ridge regression of one column on the other is x0.x1 / (x0.x0 + 1) = 1 / 3.
TWO_MOVIES = np.array([[1, 1], [1, 0], [0, 1]], dtype=bool)
RANDOM_X = (np.random.default_rng(7).random((12, 6)) < 0.4).astype(float)


def ease_or_fail(lesson, interactions, l2):
    weights = call_or_fail(f"ease_weights(X, {l2})", lesson.ease_weights, interactions, l2)
    weights = np.asarray(weights, dtype=float)
    n = interactions.shape[1]
    assert weights.shape == (n, n), f"expected an item x item matrix of shape {(n, n)}, got {weights.shape}"
    return weights


@exercise("3.1", points=1)
def test_ease_on_two_movies_by_hand(lesson):
    weights = ease_or_fail(lesson, TWO_MOVIES, 1.0)
    expected = np.array([[0.0, 1 / 3], [1 / 3, 0.0]])
    assert np.allclose(weights, expected, atol=1e-9), (
        "with G = X^T X = [[2, 1], [1, 2]] and l2 = 1, P = inverse(G + I) = [[3, -1], [-1, 3]] / 8 "
        f"and B = [[0, 1/3], [1/3, 0]]; got {np.round(weights, 4).tolist()}"
    )


@exercise("3.1", points=1)
def test_ease_solves_the_constrained_ridge_regression(lesson):
    l2 = 2.0
    weights = ease_or_fail(lesson, RANDOM_X, l2)
    assert np.allclose(np.diag(weights), 0.0, atol=1e-9), (
        f"an item must not predict itself: the diagonal of B must be 0, got {np.round(np.diag(weights), 4).tolist()}"
    )
    # Optimality (Lagrange conditions): (G + l2 I) B - G is zero off the diagonal.
    gram = RANDOM_X.T @ RANDOM_X
    residual = (gram + l2 * np.eye(6)) @ weights - gram
    off = residual - np.diag(np.diag(residual))
    assert np.abs(off).max() < 1e-8, (
        "B does not minimise ||X - XB||^2 + l2 ||B||^2 under diag(B) = 0: (X^T X + l2 I) B - X^T X "
        f"should be zero off its diagonal, its largest off-diagonal entry is {np.abs(off).max():.4f}. "
        "Add l2 to the diagonal of the Gram matrix before inverting"
    )


@exercise("3.1", points=1)
def test_ease_rejects_a_non_positive_penalty_and_accepts_bool_input(lesson):
    as_float = ease_or_fail(lesson, RANDOM_X, 5.0)
    as_bool = ease_or_fail(lesson, RANDOM_X.astype(bool), 5.0)
    assert np.allclose(as_float, as_bool), "a bool interaction matrix must give the same weights as 0/1 floats"
    with pytest.raises(ValueError):
        lesson.ease_weights(RANDOM_X, 0.0)


# ----------------------------------------------------------------------------- 3.2
# Three pairs in two dimensions: every logit, and so the expected loss, is computed by hand
# below. The probabilities differ, so a correction applied to the rows instead of the
# columns (a constant per row, which a softmax ignores) changes nothing and is caught.
QUERIES = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")
CANDIDATES = np.array([[2.0, 0.0], [0.5, 1.0], [0.0, -1.0]], "float32")
PROBABILITY = np.array([0.5, 0.3, 0.2], "float32")


def expected_softmax_loss(probability=None):
    logits = QUERIES.astype(np.float64) @ CANDIDATES.T.astype(np.float64)
    if probability is not None:
        logits = logits - np.log(probability.astype(np.float64))[None, :]
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return float(-np.trace(log_p))


def loss_value(lesson, tf, queries, candidates, probability=None):
    args = [tf.constant(queries), tf.constant(candidates)]
    if probability is not None:
        args.append(tf.constant(probability))
    what = "in_batch_softmax_loss(queries, candidates" + (", candidate_probability)" if probability is not None else ")")
    value = np.asarray(call_or_fail(what, lesson.in_batch_softmax_loss, *args), dtype=np.float64)
    assert value.shape == (), f"expected a scalar loss, got an array of shape {value.shape}"
    return float(value)


@exercise("3.2", points=1)
def test_softmax_loss_without_correction(lesson, tf):
    got = loss_value(lesson, tf, QUERIES, CANDIDATES)
    expected = expected_softmax_loss()
    assert got == pytest.approx(expected, rel=1e-5), (
        "without a probability the loss is the SUM over the 3 rows of -log softmax(row)[own column], with "
        f"logits = queries @ candidates.T: expected {expected:.5f}, got {got:.5f}"
        + (f" (the mean over rows would be {expected / 3:.5f})" if got == pytest.approx(expected / 3, rel=1e-5) else "")
    )


@exercise("3.2", points=1)
def test_softmax_loss_subtracts_log_q_from_each_column(lesson, tf):
    got = loss_value(lesson, tf, QUERIES, CANDIDATES, PROBABILITY)
    expected = expected_softmax_loss(PROBABILITY)
    plain, wrong_sign = expected_softmax_loss(), expected_softmax_loss(1.0 / PROBABILITY)
    hint = ""
    if got == pytest.approx(plain, rel=1e-5):
        hint = " That is the loss without any correction: subtract log(q) along the columns, not the rows."
    elif got == pytest.approx(wrong_sign, rel=1e-5):
        hint = " That is the loss with + log(q): the correction subtracts it."
    assert got == pytest.approx(expected, rel=1e-5), (
        "with candidate_probability q, every logit of column j becomes logit - log(q[j]): expected "
        f"{expected:.5f}, got {got:.5f}.{hint}"
    )


@exercise("3.2", points=1)
def test_softmax_loss_matches_tfrs_retrieval(lesson, tf):
    import tensorflow_recommenders as tfrs

    rng = np.random.default_rng(11)
    queries = rng.normal(size=(6, 4)).astype("float32")
    candidates = rng.normal(size=(6, 4)).astype("float32")
    probability = rng.uniform(0.05, 0.6, size=6).astype("float32")
    task = tfrs.tasks.Retrieval()
    for q in (None, probability):
        expected = float(task(tf.constant(queries), tf.constant(candidates),
                              candidate_sampling_probability=None if q is None else tf.constant(q)))
        got = loss_value(lesson, tf, queries, candidates, q)
        assert got == pytest.approx(expected, rel=1e-4), (
            f"on a random batch of 6 pairs {'with' if q is not None else 'without'} the correction, TFRS's "
            f"Retrieval task gives {expected:.5f} and your function {got:.5f}"
        )


def gradient_of_loss(lesson, queries, candidates):
    """The gradient of the learner's loss with respect to the queries, computed where the
    lesson runs (TensorFlow must be able to differentiate it)."""
    import tensorflow as tf

    q = tf.Variable(queries)
    with tf.GradientTape() as tape:
        loss = lesson.in_batch_softmax_loss(q, tf.constant(candidates))
    gradient = tape.gradient(loss, q)
    return None if gradient is None else gradient.numpy()


@exercise("3.2", points=1)
def test_softmax_loss_has_gradients(lesson):
    gradient = call_or_fail("the gradient of in_batch_softmax_loss with respect to the queries",
                            sandboxed(lesson, gradient_of_loss), lesson, QUERIES, CANDIDATES)
    assert gradient is not None, (
        "TensorFlow found no gradient from the loss to the queries: compute it with TensorFlow operations "
        "(tf.matmul, tf.nn...), not NumPy, so that training can follow it"
    )
    logits = QUERIES.astype(np.float64) @ CANDIDATES.T.astype(np.float64)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    expected = (softmax - np.eye(3)) @ CANDIDATES.astype(np.float64)
    assert np.allclose(gradient, expected, atol=1e-5), (
        f"the gradient with respect to the queries should be (softmax - I) @ candidates = "
        f"{np.round(expected, 4).tolist()}, got {np.round(np.asarray(gradient), 4).tolist()}"
    )
