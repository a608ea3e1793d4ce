"""Graded tests for lesson 04. Each test checks one behaviour of one exercise on a tiny,
hand-checkable fixture; the points add up to the exercise's points in solutions/04_ranking.yml."""

import math

import numpy as np
import pytest

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("04")


def call_or_fail(what, function, *args):
    """Run ``function(*args)``; an exception becomes a failure message a learner can read."""
    try:
        return function(*args)
    except Exception as error:  # the learner's code may raise anything
        pytest.fail(f"{what} raised {type(error).__name__}: {str(error).splitlines()[0][:300]}", pytrace=False)


# ---------------------------------------------------------------- 4.1 RatingModel.compute_loss


def echo_scorer():
    """A scorer with known outputs: it predicts the feature ``guess`` as the rating.
    (Built where the lesson runs: in batch grading, the sandbox, via ``sandboxed``.)"""
    import tensorflow as tf

    class EchoScorer(tf.keras.Model):
        def call(self, features, training=False):
            return tf.reshape(tf.cast(features["guess"], tf.float32), (-1, 1))

    return EchoScorer()


# Squared errors 1, 0, 4 and 9: mean squared error 3.5, RMSE sqrt(3.5).
BATCH = {
    "guess": np.array([3.0, 4.0, 1.0, 5.0], np.float32),
    "user_rating": np.array([4.0, 4.0, 3.0, 2.0], np.float32),
}


def linear_scorer():
    """A one-layer linear scorer of the feature ``x`` (built where the lesson runs)."""
    import tensorflow as tf

    class LinearScorer(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf.keras.layers.Dense(1)

        def call(self, features, training=False):
            return self.dense(features["x"])

    return LinearScorer()


@exercise("4.1", points=1)
def test_compute_loss_is_the_mean_squared_error(lesson):
    tf = lesson.tf
    model = lesson.RatingModel(sandboxed(lesson, echo_scorer)())
    loss = model.compute_loss({k: tf.constant(v) for k, v in BATCH.items()}, training=False)
    value = np.asarray(loss)
    assert value.shape == (), f"expected a scalar loss, got an array of shape {value.shape}"
    assert float(value) == pytest.approx(3.5, rel=1e-5), (
        f"predictions 3, 4, 1, 5 against ratings 4, 4, 3, 2: expected mean squared error 3.5, "
        f"got {float(value):.4f}"
    )


@exercise("4.1", points=1)
def test_evaluate_reports_the_rmse_metric(lesson):
    tf = lesson.tf
    model = lesson.RatingModel(sandboxed(lesson, echo_scorer)())
    model.compile(optimizer=tf.keras.optimizers.SGD())
    dataset = tf.data.Dataset.from_tensor_slices(BATCH).batch(2)
    result = model.evaluate(dataset, return_dict=True, verbose=0)
    rmse = result.get("root_mean_squared_error")
    assert rmse is not None, (
        "evaluate() reported no root_mean_squared_error: the loss must be computed by "
        f"self.task so that the task's RMSE metric is updated (reported: {sorted(result)})"
    )
    assert rmse == pytest.approx(math.sqrt(3.5), rel=1e-4), (
        f"expected RMSE sqrt(3.5) = {math.sqrt(3.5):.4f} over the four ratings, got {rmse:.4f}"
    )


@exercise("4.1", points=1)
def test_training_lowers_the_loss(lesson):
    tf = lesson.tf
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    data = {"x": x, "user_rating": (x @ np.array([1.0, -0.5, 0.5]) + 3.0).astype(np.float32)}
    batches = tf.data.Dataset.from_tensor_slices(data).batch(16)
    everything = tf.data.Dataset.from_tensor_slices(data).batch(64)  # one batch: the full loss
    model = lesson.RatingModel(sandboxed(lesson, linear_scorer)())
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.1))
    before = model.evaluate(everything, return_dict=True, verbose=0)["loss"]
    model.fit(batches, epochs=15, verbose=0)
    after = model.evaluate(everything, return_dict=True, verbose=0)["loss"]
    assert after < 0.25 * before, (
        f"training a linear scorer on a linear target should cut the loss by at least 4x: "
        f"loss {before:.3f} before, {after:.3f} after 15 epochs"
    )


# ---------------------------------------------------------------- 4.2 ndcg_at_k


def gain(r):
    return 2.0**r - 1.0


def dcg(ratings_in_order):
    return sum(gain(r) / math.log2(p + 2) for p, r in enumerate(ratings_in_order))


@exercise("4.2", points=1)
def test_ndcg_on_a_hand_checked_list(lesson):
    # Shown order by score: ratings 1, 3, 2. Ideal order: 3, 2, 1.
    result = lesson.ndcg_at_k(np.array([0.9, 0.8, 0.7]), np.array([1.0, 3.0, 2.0]), k=3)
    expected = dcg([1, 3, 2]) / dcg([3, 2, 1])
    assert isinstance(result, float), f"expected a float, got {type(result).__name__}"
    assert result == pytest.approx(expected, rel=1e-6), (
        f"scores put ratings in the order 1, 3, 2; with gain 2**r - 1 and discount "
        f"1/log2(p+1): expected NDCG {expected:.4f}, got {result:.4f}"
    )
    perfect = lesson.ndcg_at_k(np.array([2.0, 5.0, 1.0]), np.array([4.0, 5.0, 1.0]), k=3)
    assert perfect == pytest.approx(1.0), f"a perfectly ordered list must score 1.0, got {perfect:.4f}"


@exercise("4.2", points=1)
def test_ndcg_counts_only_the_top_k_against_the_best_k(lesson):
    # The scores put the 2- and 1-star items on top; the 5-star item is third.
    scores, ratings = np.array([4.0, 3.0, 2.0, 1.0]), np.array([2.0, 1.0, 5.0, 0.0])
    result = lesson.ndcg_at_k(scores, ratings, k=2)
    expected = dcg([2, 1]) / dcg([5, 2])
    assert result == pytest.approx(expected, rel=1e-6), (
        f"with k=2 only the first two shown items count (ratings 2, 1), and the ideal is the "
        f"best two of the whole list (ratings 5, 2): expected {expected:.4f}, got {result:.4f}"
    )


@exercise("4.2", points=1)
def test_ndcg_ignores_shifts_and_keeps_ties_in_input_order(lesson):
    rng = np.random.default_rng(3)
    ratings = rng.integers(1, 6, size=12).astype(float)
    scores = rng.normal(size=12)
    base = lesson.ndcg_at_k(scores, ratings, k=5)
    shifted = lesson.ndcg_at_k(3.0 * scores + 7.0, ratings, k=5)
    assert 0.0 <= base <= 1.0, f"NDCG must lie in [0, 1], got {base}"
    assert shifted == pytest.approx(base, rel=1e-9), (
        f"NDCG depends only on the order of the scores: expected {base:.4f} after scaling and "
        f"shifting them, got {shifted:.4f}"
    )
    tied = lesson.ndcg_at_k(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0]), k=1)
    expected = gain(1) / gain(3)
    assert tied == pytest.approx(expected, rel=1e-6), (
        f"equal scores keep the input order, so the first item (rating 1) is shown first: "
        f"expected {expected:.4f}, got {tied:.4f}"
    )


@exercise("4.2", points=1)
def test_ndcg_handles_short_empty_and_gainless_lists(lesson):
    scores, ratings = np.array([0.9, 0.8, 0.7]), np.array([1.0, 3.0, 2.0])
    try:
        longer = lesson.ndcg_at_k(scores, ratings, k=10)
    except Exception as error:  # the learner's code may raise anything
        pytest.fail(f"ndcg_at_k with k=10 on a list of 3 items raised {type(error).__name__}: "
                    f"{error}. Only the first min(k, n) positions count.", pytrace=False)
    expected = dcg([1, 3, 2]) / dcg([3, 2, 1])
    assert longer == pytest.approx(expected, rel=1e-6), (
        f"k=10 on a list of 3 items must score like k=3 (only min(k, n) positions exist): "
        f"expected {expected:.4f}, got {longer}"
    )
    empty = lesson.ndcg_at_k(np.array([]), np.array([]), k=10)
    assert empty == 0.0, f"an empty list has no gain to find: expected 0.0, got {empty}"
    gainless = lesson.ndcg_at_k(np.array([0.5, 0.1]), np.array([0.0, 0.0]), k=2)
    assert gainless == 0.0, (
        f"when no item has a positive gain (all ratings 0), IDCG is 0 and NDCG must be 0.0, "
        f"got {gainless}"
    )


# ---------------------------------------------------------------- 4.3 cross_tower


@exercise("4.3", points=1)
def test_cross_tower_one_layer_by_hand(lesson):
    x0 = np.array([[1.0, 2.0]])
    kernel = np.array([[0.0, 1.0], [2.0, 0.0]])  # not symmetric: x @ W differs from W @ x
    bias = np.array([1.0, -1.0])
    # x0 @ W = [4, 1]; + b = [5, 0]; x0 * that = [5, 0]; + x0 = [6, 2]
    result = np.asarray(lesson.cross_tower(x0, [kernel], [bias]))
    assert result.shape == (1, 2), f"expected shape (1, 2), got {result.shape}"
    assert np.allclose(result, [[6.0, 2.0]]), (
        "one layer on x0 = [[1, 2]] with W = [[0, 1], [2, 0]] and b = [1, -1]: "
        f"x0 * (x0 @ W + b) + x0 should give [[6, 2]], got {result.tolist()}"
    )


@exercise("4.3", points=1)
def test_cross_tower_two_layers_multiply_by_x0(lesson):
    x0 = np.array([[1.0, 2.0]])
    eye, zero = np.eye(2), np.zeros(2)
    # x1 = x0 * x0 + x0 = [2, 6]; x2 = x0 * x1 + x1 = [4, 18]
    result = np.asarray(lesson.cross_tower(x0, [eye, eye], [zero, zero]))
    assert np.allclose(result, [[4.0, 18.0]]), (
        "two identity layers on x0 = [[1, 2]]: x1 = x0*x0 + x0 = [2, 6], then "
        "x2 = x0*x1 + x1 = [4, 18] (every layer multiplies by the tower's input x0, not by its "
        f"own input); got {np.round(result, 4).tolist()}"
    )
    unchanged = np.asarray(lesson.cross_tower(x0, [], []))
    assert np.allclose(unchanged, x0), f"with no layers the tower returns x0 = [[1, 2]], got {unchanged.tolist()}"


@exercise("4.3", points=1)
def test_cross_tower_matches_tfrs_cross_layers(lesson):
    tf, tfrs = lesson.tf, lesson.tfrs
    tf.keras.utils.set_random_seed(1)
    x0 = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    first = tfrs.layers.dcn.Cross(bias_initializer="random_normal")
    second = tfrs.layers.dcn.Cross(bias_initializer="random_normal")
    expected = second(x0, first(x0)).numpy()
    (w1, b1), (w2, b2) = first.get_weights(), second.get_weights()
    result = np.asarray(lesson.cross_tower(x0, [w1, w2], [b1, b2]))
    assert result.shape == (5, 4), f"expected shape (5, 4) for a batch of 5, got {result.shape}"
    gap = float(np.abs(result - expected).max())
    assert np.allclose(result, expected, rtol=1e-4, atol=1e-5), (
        "two stacked tfrs.layers.dcn.Cross layers with the same weights give different numbers: "
        f"largest difference {gap:.4g} (check x @ W, not W @ x, and the product with x0)"
    )


# ---------------------------------------------------------------- 4.4 build_deep_cross


def deep_cross_facts(lesson, input_dim, n_cross, deep_units, x0):
    """Build the learner's network where the lesson runs and report plain facts about it: the
    class of every layer, the weights of the Cross and Dense layers in order, each Dense
    layer's activation, and the network's output on ``x0``. (Instructors' helper: it only
    collects, the test decides.)"""
    import numpy as np
    import tensorflow as tf

    model = lesson.build_deep_cross(input_dim, n_cross, deep_units)
    output = np.asarray(model(tf.constant(x0)))
    layers = [layer for layer in model.layers if layer.weights]
    return {
        "is_model": isinstance(model, tf.keras.Model),
        "classes": [type(layer).__name__ for layer in layers],
        "weights": [[np.asarray(w) for w in layer.get_weights()] for layer in layers],
        "activations": [getattr(getattr(layer, "activation", None), "__name__", "") for layer in layers],
        "output": output,
    }


def expected_output(facts, x0):
    """The stacked DCN's output recomputed in NumPy from the layers' own weights."""
    x0 = np.asarray(x0, dtype=np.float64)
    x = x0
    for cls, weights, activation in zip(facts["classes"], facts["weights"], facts["activations"]):
        if cls == "Cross":
            kernel, bias = weights[0], weights[1]
            x = x0 * (x @ kernel + bias) + x
        else:
            x = x @ weights[0] + weights[1]
            if activation == "relu":
                x = np.maximum(x, 0.0)
    return x


X0 = np.array([[1.0, -2.0, 0.5], [0.3, 0.8, -1.2], [-0.7, 0.1, 2.0], [1.5, 1.0, 1.0]], np.float32)


def facts_or_fail(lesson, n_cross, deep_units):
    return call_or_fail(f"build_deep_cross(3, n_cross={n_cross}, deep_units={deep_units}) on a batch of 4",
                        sandboxed(lesson, deep_cross_facts), lesson, 3, n_cross, deep_units, X0)


@exercise("4.4", points=1)
def test_deep_cross_has_the_layers_asked_for(lesson):
    facts = facts_or_fail(lesson, 2, (5, 4))
    assert facts["is_model"], "build_deep_cross must return a tf.keras.Model"
    assert facts["classes"] == ["Cross", "Cross", "Dense", "Dense", "Dense"], (
        "n_cross=2 and deep_units=(5, 4): expected the layers Cross, Cross, Dense(5), Dense(4), Dense(1) in "
        f"that order, got {facts['classes']}"
    )
    widths = [w[0].shape[1] for cls, w in zip(facts["classes"], facts["weights"]) if cls == "Dense"]
    assert widths == [5, 4, 1], f"the Dense layers should have 5, 4 and 1 units, got {widths}"
    assert np.asarray(facts["output"]).shape == (4, 1), (
        f"a batch of 4 should give predictions of shape (4, 1), got {np.asarray(facts['output']).shape}"
    )
    none = facts_or_fail(lesson, 0, (4,))
    assert none["classes"] == ["Dense", "Dense"], (
        f"n_cross=0 means no cross layer: expected Dense(4), Dense(1), got {none['classes']}"
    )


@exercise("4.4", points=1)
def test_deep_cross_stacks_every_layer_on_x0(lesson):
    facts = facts_or_fail(lesson, 2, (5,))
    if facts["classes"][:2] != ["Cross", "Cross"]:
        pytest.fail(f"expected two Cross layers first, got {facts['classes']}", pytrace=False)
    expected = expected_output(facts, X0)
    got = np.asarray(facts["output"], dtype=np.float64)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4), (
        "with the network's own weights, x1 = x0 * (x0 W1 + b1) + x0, x2 = x0 * (x1 W2 + b2) + x1, then the "
        f"MLP on x2 gives {np.round(expected.ravel(), 4).tolist()}; your network gives "
        f"{np.round(got.ravel(), 4).tolist()}. Each Cross layer takes (x0, x), and the MLP reads the last one"
    )


@exercise("4.4", points=1)
def test_deep_cross_output_layer_is_linear(lesson):
    facts = facts_or_fail(lesson, 1, (3,))
    expected = expected_output(facts, X0)
    got = np.asarray(facts["output"], dtype=np.float64)
    assert facts["activations"][-1] in ("linear", ""), (
        f"the last Dense(1) must have no activation (a rating can be any number); it has {facts['activations'][-1]!r}"
    )
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4), (
        f"one Cross layer, Dense(3, relu), Dense(1): expected {np.round(expected.ravel(), 4).tolist()}, got "
        f"{np.round(got.ravel(), 4).tolist()}"
    )


# ---------------------------------------------------------------- 4.5 rerank

SCORES = {"m1": 3.0, "m2": 4.5, "m3": 1.0, "m4": 4.5, "m5": 2.0}
CANDIDATES = ["m1", "m2", "m3", "m4", "m5"]  # retrieval order


def keras_like_scores(ids):
    """Scores shaped (m, 1), as model.predict returns them."""
    return np.array([[SCORES[i]] for i in ids], dtype=np.float32)


@exercise("4.5", points=1)
def test_rerank_orders_by_score(lesson):
    try:
        result = lesson.rerank(CANDIDATES, keras_like_scores, k=3)
    except (TypeError, IndexError, ValueError) as error:
        pytest.fail(
            f"rerank failed with {type(error).__name__}: {error}, when score_fn returns shape "
            "(m, 1) as model.predict does; flatten the scores to shape (m,) before sorting",
            pytrace=False,
        )
    assert list(result) == ["m2", "m4", "m1"], (
        "scores m1=3, m2=4.5, m3=1, m4=4.5, m5=2 (returned with shape (m, 1)): expected the top 3 "
        f"['m2', 'm4', 'm1'], highest first and the m2/m4 tie in retrieval order; got {list(result)}"
    )


@exercise("4.5", points=1)
def test_rerank_drops_excluded_movies(lesson):
    result = lesson.rerank(CANDIDATES, keras_like_scores, k=2, exclude={"m2", "m3"})
    assert list(result) == ["m4", "m1"], (
        f"m2 is excluded (already rated), so the top 2 are ['m4', 'm1']; got {list(result)}"
    )


@exercise("4.5", points=1)
def test_rerank_returns_a_list_of_at_most_k_ids(lesson):
    result = lesson.rerank(["m3", "m5", "m1"], lambda ids: np.array([SCORES[i] for i in ids]), k=10)
    assert isinstance(result, list), f"expected a list of ids, got {type(result).__name__}"
    assert result == ["m1", "m5", "m3"], (
        f"three candidates and k=10: expected all three by score ['m1', 'm5', 'm3'], got {result}"
    )
    assert all(isinstance(m, str) for m in result), "expected movie ids (strings), not positions"
