"""Graded tests for lesson 02. Each test checks one behaviour of one exercise on a tiny,
hand-checkable fixture; the points add up to the exercise's points in
solutions/02_retrieval.yml."""

import numpy as np
import pandas as pd
import pytest

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("02")


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


# ----------------------------------------------------------------------------- 2.1
VOCABULARY = ["u10", "u20", "u30"]


@exercise("2.1", points=1)
def test_id_tower_gives_every_known_id_its_vector(lesson, tf):
    tower = call_or_fail("build_id_tower(['u10', 'u20', 'u30'], 4)", lesson.build_id_tower, VOCABULARY, 4)
    out = call_or_fail(
        "calling the tower on ['u30', 'u10', 'u20', 'u30']",
        lambda: tower(tf.constant(["u30", "u10", "u20", "u30"])).numpy(),
    )
    assert out.shape == (4, 4), f"expected vectors of shape (4, 4), got {out.shape}"
    assert out.dtype == np.float32, f"expected float32 vectors, got {out.dtype}"
    assert np.allclose(out[0], out[3]), "the same id ('u30', asked twice) must get the same vector"
    distinct = {tuple(np.round(row, 6)) for row in out[:3]}
    assert len(distinct) == 3, "three different known ids must get three different vectors"


@exercise("2.1", points=1)
def test_id_tower_maps_unknown_ids_to_one_shared_vector(lesson, tf):
    tower = call_or_fail("build_id_tower", lesson.build_id_tower, VOCABULARY, 4)
    out = call_or_fail(
        "calling the tower on unknown ids ['nobody', 'stranger', 'u10']",
        lambda: tower(tf.constant(["nobody", "stranger", "u10"])).numpy(),
    )
    assert np.allclose(out[0], out[1]), (
        "two ids outside the vocabulary ('nobody', 'stranger') must share the one "
        "out-of-vocabulary vector; they got different vectors"
    )
    assert not np.allclose(out[0], out[2]), (
        "an unknown id got the same vector as the known id 'u10': unknown ids need their own row"
    )


@exercise("2.1", points=1)
def test_id_tower_table_has_one_extra_row(lesson, tf):
    tower = call_or_fail("build_id_tower", lesson.build_id_tower, VOCABULARY, 4)
    call_or_fail("calling the tower", lambda: tower(tf.constant(["u10"])))
    weights = sum(int(np.prod(w.shape)) for w in tower.trainable_weights)
    assert weights == (len(VOCABULARY) + 1) * 4, (
        f"3 ids and 4 numbers each: expected an embedding table of (3 + 1) x 4 = 16 weights "
        f"(one row per id plus one for unknown ids), got {weights}"
    )


# ----------------------------------------------------------------------------- 2.2
TITLES = np.array(["Alpha Beta (1990)", "Gamma (1991)", "Beta Delta Epsilon Zeta Eta (1992)"], dtype=object)


def title_vectors(tf, tower, titles):
    return tower(tf.constant(titles)).numpy()


@pytest.fixture(scope="module")
def title_tower(lesson, tf):
    return call_or_fail("build_title_tower(titles, 6)", lesson.build_title_tower, TITLES, 6)


@exercise("2.2", points=1)
def test_title_tower_output_shape(title_tower, tf):
    out = call_or_fail("calling the title tower on 3 titles", title_vectors, tf, title_tower, list(TITLES))
    assert out.shape == (3, 6), f"3 titles, 6 numbers each: expected shape (3, 6), got {out.shape}"
    assert out.dtype == np.float32, f"expected float32 vectors, got {out.dtype}"
    assert np.isfinite(out).all(), "the title vectors contain NaN or infinite values"


@exercise("2.2", points=1)
def test_title_vector_does_not_depend_on_padding(title_tower, tf):
    alone = call_or_fail("calling the title tower", title_vectors, tf, title_tower, ["Gamma"])[0]
    padded = call_or_fail(
        "calling the title tower", title_vectors, tf, title_tower,
        ["Gamma", "Beta Delta Epsilon Zeta Eta Alpha"],
    )[0]
    assert np.allclose(alone, padded, atol=1e-5), (
        "'Gamma' got a different vector when batched with a 6-word title: the padding zeros "
        f"entered the average (max difference {np.abs(alone - padded).max():.4f}). Use "
        "Embedding(..., mask_zero=True)"
    )


@exercise("2.2", points=1)
def test_title_vector_is_the_mean_of_word_vectors(title_tower, tf):
    out = call_or_fail(
        "calling the title tower", title_vectors, tf, title_tower,
        ["Alpha", "Gamma", "Alpha Gamma", "alpha ALPHA", "qwerty", "zxcvb"],
    )
    alpha, gamma, both, twice, unknown_1, unknown_2 = out
    assert not np.allclose(alpha, gamma), (
        "'Alpha' and 'Gamma' got the same vector: the vocabulary must be learned from the "
        "titles (adapt the TextVectorization layer on them)"
    )
    assert np.allclose(both, (alpha + gamma) / 2, atol=1e-5), (
        "the vector of 'Alpha Gamma' must be the mean of the vectors of 'Alpha' and 'Gamma'"
    )
    assert np.allclose(twice, alpha, atol=1e-5), (
        "'alpha ALPHA' must give the same vector as 'Alpha' (lower-cased words, averaged)"
    )
    assert np.allclose(unknown_1, unknown_2, atol=1e-5), "unknown words must share one vector"


# ----------------------------------------------------------------------------- 2.3
QUERY_TABLE = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5], [0.5, 0.5, 0.0], [-1.0, 0.3, 0.2]], "float32")
CANDIDATE_TABLE = np.array([[0.2, 1.0, 0.0], [1.0, -0.4, 0.3], [0.0, 0.1, 1.0], [0.7, 0.7, -0.2]], "float32")
USERS, MOVIES = [0, 1, 2, 3], [2, 0, 3, 1]


def softmax_loss(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.trace(log_p))


def expected_loss():
    scores = QUERY_TABLE[USERS] @ CANDIDATE_TABLE[MOVIES].T  # row b: query b, column j: movie of row j
    return softmax_loss(scores)


def build_retrieval_model(lesson, ks=None):
    """The learner's RetrievalModel around two fixed lookup towers and a TFRS task. Runs
    where the lesson lives (the sandbox, in batch grading): the towers are Keras models."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    class Pick(tf.keras.Model):
        def __init__(self, key, table):
            super().__init__()
            self.key = key
            self.table = tf.keras.layers.Embedding(
                table.shape[0], table.shape[1], embeddings_initializer=tf.keras.initializers.Constant(table)
            )

        def call(self, features):
            return self.table(features[self.key])

    query, candidate = Pick("user", QUERY_TABLE), Pick("movie", CANDIDATE_TABLE)
    metrics = None
    if ks:
        index = tfrs.layers.factorized_top_k.BruteForce().index(tf.constant(CANDIDATE_TABLE))
        metrics = tfrs.metrics.FactorizedTopK(candidates=index, ks=ks)
    task = tfrs.tasks.Retrieval(metrics=metrics)
    return lesson.RetrievalModel(query, candidate, task)


def make_retrieval_model(lesson, tf, ks=None):
    return call_or_fail(
        "RetrievalModel(query_model, candidate_model, task)",
        sandboxed(lesson, build_retrieval_model), lesson, ks,
    )


def batch(tf):
    return {"user": tf.constant(USERS), "movie": tf.constant(MOVIES)}


@exercise("2.3", points=1)
def test_loss_is_the_in_batch_softmax(lesson, tf):
    model = make_retrieval_model(lesson, tf)
    loss = call_or_fail("compute_loss(batch, training=True)", lambda: float(model.compute_loss(batch(tf), training=True)))
    expected = expected_loss()
    assert loss == pytest.approx(expected, rel=1e-4), (
        "for 4 pairs, the loss is the sum over rows of the softmax cross-entropy of the "
        f"query x candidate score matrix, diagonal as labels: expected {expected:.4f}, got {loss:.4f}"
    )


@exercise("2.3", points=1)
def test_training_lowers_the_loss(lesson, tf):
    model = make_retrieval_model(lesson, tf)
    ltf = lesson.tf  # optimizer and dataset live where the model lives (the sandbox, in batch grading)
    model.compile(optimizer=ltf.keras.optimizers.SGD(0.1))
    dataset = ltf.data.Dataset.from_tensor_slices(batch(tf)).batch(4)
    before = call_or_fail("compute_loss", lambda: float(model.compute_loss(batch(tf), training=True)))
    call_or_fail("model.fit", lambda: model.fit(dataset, epochs=20, verbose=0))
    after = float(model.compute_loss(batch(tf), training=True))
    assert after < before - 0.05, (
        f"20 steps of gradient descent should lower the loss clearly: it went from {before:.4f} to {after:.4f}"
    )


@exercise("2.3", points=1)
def test_top_k_metrics_only_outside_training(lesson, tf):
    model = make_retrieval_model(lesson, tf, ks=(4,))
    metric = model.task.factorized_metrics[0]
    call_or_fail("compute_loss(batch, training=True)", lambda: model.compute_loss(batch(tf), training=True))
    during_training = float(metric.result()[0])
    call_or_fail("compute_loss(batch, training=False)", lambda: model.compute_loss(batch(tf), training=False))
    when_evaluating = float(metric.result()[0])
    assert during_training == 0.0, (
        "compute_loss(training=True) updated the top-K metric: pass compute_metrics=not training "
        "so that fit() skips the expensive metrics"
    )
    assert when_evaluating == pytest.approx(1.0), (
        "compute_loss(training=False) must update the top-K metric (every true movie is in the "
        f"top 4 of 4 candidates, so it should read 1.0), got {when_evaluating}"
    )


# ----------------------------------------------------------------------------- 2.4
CATALOGUE = pd.DataFrame(
    {"movie_id": ["50", "7", "31", "1"], "movie_title": ["Fifty (1990)", "Seven (1995)", "Thirty-One (1991)", "One (1999)"]}
)


@exercise("2.4", points=1)
def test_titles_follow_the_ranking_of_byte_ids(lesson, tf):
    ids = tf.constant([b"31", b"50", b"1"])
    titles = call_or_fail("ids_to_titles(tf.constant([b'31', b'50', b'1']), movies)", lesson.ids_to_titles, ids, CATALOGUE)
    expected = ["Thirty-One (1991)", "Fifty (1990)", "One (1999)"]
    assert list(titles) == expected, f"expected the titles in ranking order {expected}, got {list(titles)}"


@exercise("2.4", points=1)
def test_titles_are_looked_up_by_id_not_position(lesson):
    ids = np.array(["1", "7"], dtype=object)
    titles = call_or_fail("ids_to_titles(np.array(['1', '7']), movies)", lesson.ids_to_titles, ids, CATALOGUE)
    expected = ["One (1999)", "Seven (1995)"]
    assert list(titles) == expected, (
        f"movie ids are labels, not row numbers: expected {expected}, got {list(titles)}"
    )


# ----------------------------------------------------------------------------- 2.5
@exercise("2.5", points=1)
def test_recall_masks_seen_movies(lesson):
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    seen = np.array([[True, False, False, False]])
    relevant = np.array([[False, False, True, False]])
    result = call_or_fail("masked_recall_at_k", lesson.masked_recall_at_k, scores, seen, relevant, 2)
    assert result == pytest.approx(1.0), (
        "movie 0 was seen in training, so the top 2 are movies 1 and 2, and movie 2 is the "
        f"relevant one: expected recall 1.0, got {result}"
    )


@exercise("2.5", points=1)
def test_recall_divides_by_the_number_of_relevant_movies(lesson):
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    seen = np.zeros((2, 6), dtype=bool)
    relevant = np.array([[True, False, True, True, True, False], [False, False, False, False, False, True]])
    result = call_or_fail("masked_recall_at_k", lesson.masked_recall_at_k, scores, seen, relevant, 2)
    assert result == pytest.approx((1 / 4 + 1 / 1) / 2), (
        "user 0 finds 1 of its 4 relevant movies (1/4), user 1 finds its only one (1/1): "
        f"expected the mean 0.625, got {result}"
    )


@exercise("2.5", points=1)
def test_recall_averages_over_users_with_relevant_movies(lesson):
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.9, 0.1], [0.3, 0.2, 0.9]])
    seen = np.zeros((3, 3), dtype=bool)
    relevant = np.array([[True, False, False], [False, False, False], [True, False, False]])
    result = call_or_fail("masked_recall_at_k", lesson.masked_recall_at_k, scores, seen, relevant, 1)
    assert result == pytest.approx(0.5), (
        "user 1 has no test movies and is left out; user 0 finds its movie (1.0), user 2 does "
        f"not (0.0): expected 0.5, got {result}"
    )
