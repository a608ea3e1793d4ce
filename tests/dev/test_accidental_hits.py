"""recsys_course.models.retrieval.AccidentalHitsRetrieval: TFRS's remove_accidental_hits for a model that does not pass
candidate ids itself (lesson 02, section 12)."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tf():
    import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)
    import tensorflow

    return tensorflow


def softmax_loss(scores):
    top = scores.max(axis=1, keepdims=True)
    log_p = scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))
    return float(-np.trace(log_p))


def test_duplicates_of_the_positive_are_not_negatives(tf):
    import tensorflow_recommenders as tfrs
    from recsys_course.models import retrieval as rt

    vectors = {"a": [1.0, 0.5], "b": [0.2, 1.0]}
    ids = ["a", "b", "a"]  # movie "a" twice: each copy is an accidental hit of the other row
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")

    class Tower(tf.keras.Model):
        def call(self, features):
            is_a = tf.equal(features["movie_id"], "a")[:, None]
            return tf.where(is_a, tf.constant([vectors["a"]]), tf.constant([vectors["b"]]))

    task = rt.AccidentalHitsRetrieval()
    tower = task.recording(Tower())
    features = {"movie_id": tf.constant(ids)}
    loss = float(task(tf.constant(queries), tower(features), compute_metrics=False))

    scores = queries @ np.array([vectors[i] for i in ids]).T
    hits = np.array([[i != j and ids[i] == ids[j] for j in range(3)] for i in range(3)])
    expected = softmax_loss(np.where(hits, -1e30, scores))
    plain = float(tfrs.tasks.Retrieval()(tf.constant(queries), tower(features)))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert plain == pytest.approx(softmax_loss(scores), rel=1e-5)
    assert loss < plain


def test_needs_the_recording_tower(tf):
    from recsys_course.models import retrieval as rt

    task = rt.AccidentalHitsRetrieval()
    with pytest.raises(ValueError, match="recording"):
        task(tf.ones((2, 2)), tf.ones((2, 2)), compute_metrics=False)
