"""Tests of recsys_course.models: towers, the two-tower retrieval model and its training
loop, the ranker. Every expected loss is recomputed in NumPy from the towers' weights, on
hand-made batches whose answer does not depend on summation order beyond float tolerance."""

import numpy as np
import pandas as pd
import pytest

import recsys_course  # noqa: F401  (legacy Keras before TensorFlow)
import tensorflow as tf

from recsys_course import models
from recsys_course.models import features as ft
from recsys_course.models.training import LossPerExample


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Each row's cross-entropy with its diagonal entry as the label, ``float64 [rows]``."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return -np.diag(log_p[:, : len(logits)])


USERS = ["u1", "u2", "u3"]
MOVIES = ["m1", "m2", "m3", "m4"]
USER_TABLE = np.array([[0.0, 0.0], [1.0, 0.5], [0.2, 1.0], [-0.7, 0.3]], np.float32)  # row 0: OOV
MOVIE_TABLE = np.array([[0.0, 0.0], [0.9, -0.2], [0.1, 0.8], [-0.5, 0.6], [0.4, 0.4]], np.float32)


def fixed_model(**options) -> models.TwoTowerModel:
    """An id-only two-tower model with the hand-set tables above."""
    model = models.build_two_tower(USERS, MOVIES, embedding_dim=2, **options)
    model.query_model.set_weights([USER_TABLE])
    model.candidate_model.set_weights([MOVIE_TABLE])
    return model


def scores_of(users, movies) -> np.ndarray:
    u = USER_TABLE[[USERS.index(x) + 1 for x in users]]
    m = MOVIE_TABLE[[MOVIES.index(x) + 1 for x in movies]]
    return u.astype(np.float64) @ m.T.astype(np.float64)


# ---- towers ---------------------------------------------------------------------------------

def test_id_tower_shape_and_oov_row():
    tower = models.id_tower(["a", "b", "c"], 4, "user_model")
    table = tower.get_weights()[0]
    assert table.shape == (4, 4), f"expected (len(vocabulary) + 1, dim) = (4, 4), got {table.shape}"
    out = tower(tf.constant(["b", "zzz", "a", "never"])).numpy()
    assert out.shape == (4, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], table[2])  # "b" is vocabulary[1] -> row 2
    np.testing.assert_array_equal(out[2], table[1])
    np.testing.assert_array_equal(out[1], table[0])  # unknown ids share row 0
    np.testing.assert_array_equal(out[3], table[0])


def test_id_tower_refuses_a_bad_vocabulary():
    with pytest.raises(ValueError, match="twice"):
        models.id_tower(["a", "b", "a"], 2)
    with pytest.raises(ValueError, match="empty"):
        models.id_tower([], 2)


def test_feature_towers_shapes_and_injected_builders():
    calls = []

    def builder(vocabulary, dim):
        calls.append((len(vocabulary), dim))
        return models.id_tower(vocabulary, dim)

    titles = np.array(["Toy Story (1995)", "Heat (1995)", "Casino (1995)"], dtype=object)
    query = models.QueryTower(USERS, 6, timestamps=np.array([1.0, 2.0, 3.0, 4.0]), time_buckets=2,
                              id_tower_builder=builder)
    candidate = models.CandidateTower(MOVIES[:3], 6, titles=titles, genres=["Comedy", "Drama"],
                                      id_tower_builder=builder)
    batch = {
        "user_id": tf.constant(["u1", "nobody"]), "timestamp": tf.constant([1.5, 9.0], tf.float64),
        "movie_id": tf.constant(["m1", "m3"]), "movie_title": tf.constant(["Heat (1995)", "New"]),
        "movie_genres": tf.constant([["Drama", ""], ["Comedy", "Drama"]]),
    }
    assert tuple(query(batch).shape) == (2, 6)
    assert tuple(candidate(batch).shape) == (2, 6)
    assert calls == [(3, 6), (3, 6)], f"the injected id tower builder was called {calls}"
    id_only = models.CandidateTower(MOVIES, 6)
    assert len(id_only.trainable_weights) == 1, "with no side feature a tower is its id tower alone"


# ---- the retrieval loss ---------------------------------------------------------------------

BATCH_USERS = ["u1", "u2", "u3", "u2"]
BATCH_MOVIES = ["m1", "m2", "m3", "m4"]
PROBABILITY = np.array([0.5, 0.1, 0.3, 0.1], np.float32)


def batch(movies=BATCH_MOVIES):
    return {"user_id": tf.constant(BATCH_USERS), "movie_id": tf.constant(movies),
            ft.PROBABILITY: tf.constant(PROBABILITY)}


def test_plain_loss_is_the_in_batch_softmax():
    loss = float(fixed_model().compute_loss(batch(), training=True))
    expected = softmax_rows(scores_of(BATCH_USERS, BATCH_MOVIES)).sum()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_correction_shifts_every_logit_by_minus_log_q():
    scores = scores_of(BATCH_USERS, BATCH_MOVIES)
    plain = float(fixed_model().compute_loss(batch(), training=True))
    corrected = float(fixed_model(correction=True).compute_loss(batch(), training=True))
    expected = softmax_rows(scores - np.log(PROBABILITY.astype(np.float64))[None, :]).sum()
    assert corrected == pytest.approx(expected, rel=1e-5)
    assert abs(corrected - plain) > 0.1, "the probabilities differ, so the correction must change the loss"


def test_correction_without_the_probability_feature_says_what_is_missing():
    features = batch()
    del features[ft.PROBABILITY]
    with pytest.raises(ValueError, match=ft.PROBABILITY):
        fixed_model(correction=True).compute_loss(features, training=True)


def test_temperature_divides_the_logits():
    loss = float(fixed_model(temperature=0.25).compute_loss(batch(), training=True))
    assert loss == pytest.approx(softmax_rows(scores_of(BATCH_USERS, BATCH_MOVIES) / 0.25).sum(), rel=1e-5)


def test_accidental_hits_are_masked_like_tfrs_does():
    movies = ["m1", "m2", "m1", "m4"]  # m1 twice: rows 0 and 2 are each other's accidental hit
    scores = scores_of(BATCH_USERS, movies)
    hits = np.array([[i != j and movies[i] == movies[j] for j in range(4)] for i in range(4)])
    masked = float(fixed_model(remove_accidental_hits=True).compute_loss(batch(movies), training=True))
    assert masked == pytest.approx(softmax_rows(np.where(hits, -np.inf, scores)).sum(), rel=1e-5)
    plain = float(fixed_model().compute_loss(batch(movies), training=True))
    assert masked < plain
    # TFRS's own remove_accidental_hits gives the same number.
    import tensorflow_recommenders as tfrs

    model = fixed_model()
    f = batch(movies)
    reference = tfrs.tasks.Retrieval(remove_accidental_hits=True)(
        model.query_model(f["user_id"]), model.candidate_model(f["movie_id"]),
        candidate_ids=f["movie_id"], compute_metrics=False)
    assert masked == pytest.approx(float(reference), rel=1e-5)


def test_accidental_hits_with_metrics_still_evaluate():
    import tensorflow_recommenders as tfrs

    model = fixed_model()
    candidates = tf.data.Dataset.from_tensor_slices(tf.constant(MOVIES)).batch(2).map(model.candidate_model)
    metric = tfrs.metrics.FactorizedTopK(candidates=candidates, ks=(1, 4))
    evaluated = models.TwoTowerModel(model.query_model, model.candidate_model, metrics=metric,
                                     remove_accidental_hits=True)
    evaluated.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    data = tf.data.Dataset.from_tensor_slices({"user_id": BATCH_USERS, "movie_id": ["m1", "m2", "m1", "m4"]})
    result = evaluated.evaluate(data.batch(4), return_dict=True, verbose=0)
    assert result["factorized_top_k/top_4_categorical_accuracy"] == pytest.approx(1.0)


# ---- training: loss per example -------------------------------------------------------------

def test_loss_per_example_is_the_mean_of_the_per_row_losses():
    users = ["u1", "u2", "u3", "u2", "u1", "u3", "u3"]
    movies = ["m1", "m2", "m3", "m4", "m2", "m1", "m4"]
    model = fixed_model(learning_rate=0.0)  # weights stay put, so every batch is scored alike
    data = tf.data.Dataset.from_tensor_slices({"user_id": users, "movie_id": movies}).batch(3)
    history = models.fit_with_loss_per_example(model, data, len(users), epochs=2)
    rows = np.concatenate([softmax_rows(scores_of(users[s:s + 3], movies[s:s + 3])) for s in (0, 3, 6)])
    assert len(rows) == 7
    assert history["loss_per_example"] == pytest.approx([rows.mean()] * 2, rel=1e-5)
    # Keras's own "loss" is the last batch's sum (one row here), not a per-example number.
    assert history["loss"][-1] == pytest.approx(rows[-1], rel=1e-5)

    held_out = {"user_id": np.array(users, dtype=object), "movie_id": np.array(movies, dtype=object)}
    full_batches = rows[:6].mean()  # loss_per_example (held-out) uses full batches only
    assert models.loss_per_example(model, held_out, 3) == pytest.approx(full_batches, rel=1e-5)


def test_loss_per_example_needs_a_count():
    with pytest.raises(ValueError, match="number of training examples"):
        LossPerExample(0)


def clustered_interactions(n_users: int = 40, n_movies: int = 30, per_user: int = 8) -> pd.DataFrame:
    """Users in group g (user index % 3) only watch movies in group g (movie index % 3)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        group = [m for m in range(n_movies) if m % 3 == u % 3]
        for m in rng.choice(group, size=per_user, replace=False):
            rows.append((f"u{u}", f"m{m}"))
    return pd.DataFrame(rows, columns=["user_id", "movie_id"])


TRAIN = clustered_interactions()  # 320 pairs
# The catalogue holds two movies nobody watched: they must still get a vector.
CATALOGUE = pd.DataFrame({"movie_id": [f"m{m}" for m in range(32)]})


@pytest.fixture(scope="module")
def trained() -> models.TwoTower:
    # batch 60 leaves a partial last batch of 20 pairs, as real data usually does
    return models.train_two_tower(TRAIN, CATALOGUE, embedding_dim=8, epochs=30, batch_size=60,
                                  learning_rate=0.5)


def test_trained_shapes_dtypes_and_catalogue(trained):
    assert trained.movie_embeddings.shape == (32, 8)
    assert trained.movie_embeddings.dtype == np.float32
    assert trained.movie_ids.tolist() == sorted(CATALOGUE["movie_id"]), (
        "movie_ids must hold every movie of the catalogue, sorted, including unwatched ones"
    )
    users = trained.user_model(np.array(["u0", "u1", "never-seen"]))
    assert tuple(users.shape) == (3, 8) and users.dtype.name == "float32"
    assert trained.scores(["u0", "u1"]).shape == (2, 32)
    direct = trained.movie_model(np.array(trained.movie_ids[[0, 5, 31]])).numpy()
    np.testing.assert_allclose(direct, trained.movie_embeddings[[0, 5, 31]], rtol=1e-5, atol=1e-6)


def test_training_lowers_the_loss_and_learns_the_groups(trained):
    losses = trained.history["loss_per_example"]
    assert len(losses) == 30 and losses[-1] < losses[0], f"loss should fall: first {losses[0]}, last {losses[-1]}"
    # A blind model's per-example loss is about log(batch size); the first epoch starts there.
    chance = (5 * 60 * np.log(60) + 20 * np.log(20)) / 320
    assert losses[0] == pytest.approx(chance, rel=0.05)
    same_group = 0
    for u, row in zip(range(12), trained.scores([f"u{u}" for u in range(12)])):
        best = trained.movie_ids[int(np.argmax(row))]
        same_group += int(best[1:]) % 3 == u % 3
    assert same_group >= 10, f"expected most users' best movie in their own group, got {same_group}/12"


@pytest.mark.parametrize("options", [{}, {"correction": True, "remove_accidental_hits": True}])
def test_same_seed_same_embeddings(options):
    small = TRAIN.iloc[:120]
    a = models.train_two_tower(small, CATALOGUE, embedding_dim=4, epochs=2, batch_size=32, seed=7, **options)
    b = models.train_two_tower(small, CATALOGUE, embedding_dim=4, epochs=2, batch_size=32, seed=7, **options)
    np.testing.assert_allclose(a.movie_embeddings, b.movie_embeddings, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.history["loss_per_example"], b.history["loss_per_example"], rtol=1e-5)


def test_train_retrieval_keeps_the_best_validation_epoch_and_is_seeded():
    """Lesson 02's recipe: the epoch is chosen on the validation rows, never on anything else,
    and the same call gives the same towers."""
    fit, validation = TRAIN.iloc[:256], TRAIN.iloc[256:]
    options = dict(validation=validation, seed=3, embedding_dim=4, batch_size=64, max_epochs=4, patience=1)
    a = models.train_retrieval(fit, CATALOGUE, cache=False, **options)
    b = models.train_retrieval(fit, CATALOGUE, cache=False, **options)
    np.testing.assert_allclose(a.movie_embeddings, b.movie_embeddings, rtol=1e-5, atol=1e-6)
    assert not a.from_cache and not b.from_cache
    curve = a.history["validation_top_100"]
    assert a.history["epoch"] == list(range(1, len(curve) + 1))
    assert curve[a.best_epoch - 1] == max(curve), f"best epoch {a.best_epoch} is not the best of {curve}"
    assert a.movie_embeddings.shape == (32, 4) and a.movie_ids.tolist() == sorted(CATALOGUE["movie_id"])
    with pytest.raises(ValueError, match="unknown recipe"):
        models.train_retrieval(fit, CATALOGUE, validation=validation, epochs=3)


def test_train_retrieval_is_trained_once_and_reused(tmp_path, monkeypatch):
    """The second call with the same inputs loads the first call's towers from the cache;
    any change to the inputs (here one option) trains again."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    fit, validation = TRAIN.iloc[:256], TRAIN.iloc[256:]
    options = dict(validation=validation, seed=3, embedding_dim=4, batch_size=64, max_epochs=2, patience=1)
    first = models.train_retrieval(fit, CATALOGUE, **options)
    again = models.train_retrieval(fit, CATALOGUE, **options)
    assert not first.from_cache and again.from_cache
    np.testing.assert_allclose(again.movie_embeddings, first.movie_embeddings, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(again.scores(["u0", "u5"]), first.scores(["u0", "u5"]), rtol=1e-5, atol=1e-6)
    assert again.best_epoch == first.best_epoch and repr(again.history) == repr(first.history)
    other = models.train_retrieval(fit, CATALOGUE, correction=False, **options)
    assert not other.from_cache


def test_train_two_tower_names_missing_columns():
    with pytest.raises(ValueError, match="movie_id"):
        models.train_two_tower(TRAIN[["user_id"]], CATALOGUE)


def test_probability_feature_mixes_int_and_str_ids():
    train = pd.DataFrame({"user_id": [1, 1, 2, 3], "movie_id": [10, 10, 20, 30]})
    probability = ft.candidate_probability(train)
    features = ft.pair_features(pd.DataFrame({"user_id": [1, 2], "movie_id": ["10", "99"]}),
                                probability=probability)
    np.testing.assert_allclose(features[ft.PROBABILITY], [0.5, 0.25])


# ---- ranker ---------------------------------------------------------------------------------

def test_ranker_reads_only_the_ids_and_starts_from_the_mean():
    tf.keras.utils.set_random_seed(0)
    ranker = models.build_ranker(USERS, MOVIES, embedding_dim=3, hidden_units=(5, 4), mean_rating=3.5)
    features = {"user_id": tf.constant(["u1", "nobody"]), "movie_id": tf.constant(["m2", "m9"]),
                "user_rating": tf.constant([4.0, 1.0]), "timestamp": tf.constant([1.0, 2.0])}
    out = ranker(features).numpy()
    assert out.shape == (2, 1)
    assert ranker.head.layers[-1].get_weights()[1] == pytest.approx([3.5])
    assert [w.shape for w in ranker.user_embedding.get_weights()] == [(4, 3)]


def test_train_ranker_lowers_the_error():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"user_id": rng.choice(USERS, 300), "movie_id": rng.choice(MOVIES, 300)})
    frame["user_rating"] = (1.0 + frame["movie_id"].str[1:].astype(float)).astype("float32")
    model, losses = models.train_ranker(frame, epochs=8, batch_size=32, learning_rate=0.05, seed=3)
    assert losses[-1] < losses[0] and losses[-1] < 0.2, f"MSE per epoch {losses}"
    again, losses_again = models.train_ranker(frame, epochs=8, batch_size=32, learning_rate=0.05, seed=3)
    np.testing.assert_allclose(losses, losses_again, rtol=1e-5)


def test_ranker_draws_its_weights_at_the_first_call():
    """Lesson 04 builds the scorer, then seeds, then fits: the seed must decide the weights."""
    features = {"user_id": tf.constant(["u1", "u3"]), "movie_id": tf.constant(["m4", "m1"])}
    outputs = []
    for noise in (1, 2):  # a different random state while building
        tf.keras.utils.set_random_seed(noise)
        tf.random.uniform((noise,))
        ranker = models.build_ranker(USERS, MOVIES, embedding_dim=3, hidden_units=(4,))
        tf.keras.utils.set_random_seed(11)
        outputs.append(ranker(features).numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)
    with pytest.raises(ValueError, match="twice"):
        models.build_ranker(["u1", "u1"], MOVIES)
