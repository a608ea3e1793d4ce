"""The package's models do not drift from the lessons' exercises.

Lesson 02 has learners write the id tower (2.1), the title tower (2.2) and the retrieval
model's ``compute_loss`` (2.3); lesson 03 the in-batch softmax with the logQ correction by
hand (3.2). The package has its own versions, used by every other lesson, the benchmarks and
serving. Here the *reference solutions* of those exercises (always ``solutions/``, whatever
tree is graded) and the package's versions get identical weights and a fixed batch, and
must give the same vectors and the same loss.
"""

import numpy as np
import pytest

import recsys_course  # noqa: F401  (legacy Keras before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_course import models
from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.loader import load_lesson

USERS = ["u10", "u20", "u30", "u40"]
MOVIES = ["m1", "m2", "m3", "m4", "m5"]
TITLES = np.array(["Toy Story (1995)", "Heat (1995)", "Casino Royale (2006)", "Toy Soldiers (1991)",
                   "Heat Wave (1990)"], dtype=object)
GENRES = ["Action", "Comedy", "Drama"]
TIMESTAMPS = np.array([100.0, 250.0, 400.0, 800.0, 900.0, 1000.0])


@pytest.fixture(scope="module")
def reference():
    """Lesson 02 of solutions/, loaded up to exercise 2.3 as grading loads it."""
    catalog = load_catalog()
    lesson = catalog.lesson("02")
    return load_lesson(catalog.root / "solutions" / lesson.filename, "reference_lesson_02",
                       exercises={"2.1", "2.2", "2.3"})


def batch() -> dict:
    """Six (user, movie) rows; m2 twice so rows share a candidate; one unknown user and movie."""
    return {
        "user_id": tf.constant(["u10", "u20", "u30", "nobody", "u40", "u20"]),
        "timestamp": tf.constant([120.0, 260.0, 410.0, 780.0, 950.0, 1200.0], tf.float64),
        "movie_id": tf.constant(["m1", "m2", "m3", "m2", "m5", "unknown"]),
        "movie_title": tf.constant(["Toy Story (1995)", "Heat (1995)", "Casino Royale (2006)",
                                    "Heat (1995)", "Heat Wave (1990)", "Brand New (2030)"]),
        "movie_genres": tf.constant([["Comedy", ""], ["Action", "Drama"], ["Action", ""],
                                     ["Action", "Drama"], ["Drama", ""], ["Horror", ""]]),
        models.PROBABILITY: tf.constant([0.3, 0.25, 0.1, 0.25, 0.05, 0.05]),
    }


def copy_weights(source: tf.keras.Model, target: tf.keras.Model) -> None:
    shapes = ([w.shape for w in source.get_weights()], [w.shape for w in target.get_weights()])
    assert shapes[0] == shapes[1], f"the lesson's and the package's weights differ in layout: {shapes}"
    target.set_weights(source.get_weights())


def test_id_tower_matches_exercise_2_1(reference):
    tf.keras.utils.set_random_seed(1)
    lesson_tower = reference.build_id_tower(USERS, 4)
    package_tower = models.id_tower(USERS, 4)
    ids = tf.constant(["u30", "stranger", "u10", "u40"])
    lesson_out = lesson_tower(ids).numpy()
    copy_weights(lesson_tower, package_tower)
    np.testing.assert_allclose(package_tower(ids).numpy(), lesson_out, rtol=1e-6, atol=1e-7)


def test_title_tower_matches_exercise_2_2(reference):
    tf.keras.utils.set_random_seed(2)
    lesson_tower = reference.build_title_tower(TITLES, 6)
    package_tower = models.title_tower(TITLES, 6)
    assert lesson_tower.layers[0].get_vocabulary() == package_tower.layers[0].get_vocabulary()
    titles = tf.constant(["Toy Story (1995)", "heat", "Unknown words only", "Casino Heat Wave"])
    lesson_out = lesson_tower(titles).numpy()
    copy_weights(lesson_tower, package_tower)
    np.testing.assert_allclose(package_tower(titles).numpy(), lesson_out, rtol=1e-6, atol=1e-7)


def feature_towers(id_builder=None, title_builder=None):
    query = models.QueryTower(USERS, 8, timestamps=TIMESTAMPS, time_buckets=3, id_tower_builder=id_builder)
    candidate = models.CandidateTower(MOVIES, 8, titles=TITLES, genres=GENRES,
                                      id_tower_builder=id_builder, title_tower_builder=title_builder)
    return query, candidate


def test_two_tower_model_matches_exercise_2_3(reference):
    tf.keras.utils.set_random_seed(3)
    lesson_query, lesson_candidate = feature_towers(reference.build_id_tower, reference.build_title_tower)
    lesson_model = reference.RetrievalModel(lesson_query, lesson_candidate, tfrs.tasks.Retrieval())
    package_query, package_candidate = feature_towers()
    package_model = models.TwoTowerModel(package_query, package_candidate, query_feature=None,
                                         candidate_feature=None)
    features = batch()
    lesson_loss = float(lesson_model.compute_loss(features, training=True))
    package_model.compute_loss(features, training=True)  # builds the towers' weights
    copy_weights(lesson_query, package_query)
    copy_weights(lesson_candidate, package_candidate)
    package_loss = float(package_model.compute_loss(features, training=True))
    assert package_loss == pytest.approx(lesson_loss, rel=1e-5)
    assert float(package_model.compute_loss(features, training=False)) == pytest.approx(
        float(lesson_model.compute_loss(features, training=False)), rel=1e-5)


def test_lesson_feature_towers_match_the_package(reference):
    """While lesson 02 defines its own QueryTower/CandidateTower, they must agree with the
    package's."""
    own = [getattr(reference, name, None) for name in ("QueryTower", "CandidateTower")]
    if any(cls is None for cls in own) or own == [models.QueryTower, models.CandidateTower]:
        pytest.skip("lesson 02 builds its towers with recsys_course.models: nothing of its own to compare")
    tf.keras.utils.set_random_seed(4)
    lesson_query = reference.QueryTower(USERS, 8, timestamps=TIMESTAMPS, time_buckets=3)
    lesson_candidate = reference.CandidateTower(MOVIES, 8, titles=TITLES, genres=GENRES)
    package_query, package_candidate = feature_towers()
    features = batch()
    for lesson_tower, package_tower in ((lesson_query, package_query), (lesson_candidate, package_candidate)):
        expected = lesson_tower(features).numpy()
        package_tower(features)
        copy_weights(lesson_tower, package_tower)
        np.testing.assert_allclose(package_tower(features).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def reference_03():
    """Lesson 03 of solutions/, loaded up to exercise 3.2."""
    catalog = load_catalog()
    lesson = catalog.lesson("03")
    return load_lesson(catalog.root / "solutions" / lesson.filename, "reference_lesson_03", exercises={"3.1", "3.2"})


@pytest.mark.parametrize("correction", [False, True])
def test_package_logq_correction_matches_exercise_3_2(reference_03, correction):
    """The package's TwoTowerModel (``correction=True``: TFRS's candidate_sampling_probability)
    computes the loss lesson 03's learners write by hand."""
    tf.keras.utils.set_random_seed(5)
    query, candidate = feature_towers()
    model = models.TwoTowerModel(query, candidate, query_feature=None, candidate_feature=None, correction=correction)
    features = batch()
    package_loss = float(model.compute_loss(features, training=True))
    by_hand = float(reference_03.in_batch_softmax_loss(
        query(features), candidate(features), features[models.PROBABILITY] if correction else None))
    assert package_loss == pytest.approx(by_hand, rel=1e-5)
