"""Tests of recsys_course.models.history: the history query tower, its full-softmax loss
(recomputed in NumPy from hand-set weights) and the training loop's epoch choice."""

import numpy as np
import pytest

import recsys_course  # first: legacy Keras before TensorFlow
import tensorflow as tf

from recsys_course import evaluation as ev, models
from recsys_course.models.history import HISTORY

MOVIES = ["m1", "m2", "m3"]
BAG = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, -1.0]], np.float32)  # one row per movie
VECTORS = np.array([[0.0, 0.0], [0.5, -0.2], [0.1, 0.4], [-0.3, 0.2]], np.float32)  # row 0: OOV
BIASES = np.array([[0.0], [0.1], [-0.2], [0.3]], np.float32)


def fixed_model(dropout: float = 0.5, l2: float = 0.0, temperature: float | None = None
                ) -> models.HistoryRetrievalModel:
    model = models.build_history_model(MOVIES, 2, dropout=dropout, l2=l2, temperature=temperature)
    model.query_model(tf.zeros((1, 3)))  # build the bag
    model.query_model.bag.set_weights([BAG])
    model.candidate_model.get_layer("movie_model").set_weights([VECTORS])
    model.candidate_model.get_layer("movie_bias_model").set_weights([BIASES])
    return model


def test_query_is_the_bag_over_sqrt_length_with_a_constant_one():
    model = fixed_model()
    history = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], np.float32)
    queries = model.query_model(tf.constant(history)).numpy()
    expected = np.array([[4.0 / np.sqrt(2), -1.0 / np.sqrt(2), 1.0], [0.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    np.testing.assert_allclose(queries, expected, rtol=1e-6)


def test_scores_are_query_dot_movie_vector_plus_bias():
    model = fixed_model()
    history = np.array([[1, 0, 1]], np.float32)
    q = (BAG[0] + BAG[2]) / np.sqrt(2)
    expected = q @ VECTORS[1:].T + BIASES[1:, 0]
    np.testing.assert_allclose(model.scores(history)[0], expected, rtol=1e-5)


def test_cosine_scores_are_cosine_over_temperature_plus_bias():
    model = fixed_model(temperature=0.25)
    history = np.array([[1, 0, 1], [0, 0, 0]], np.float32)
    q = BAG[0] + BAG[2]  # the 1/sqrt(length) factor cannot change a cosine
    v = VECTORS[1:]
    cosine = (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    scores = model.scores(history)
    np.testing.assert_allclose(scores[0], cosine / 0.25 + BIASES[1:, 0], rtol=1e-5)
    # an empty history has no direction: its query is zero and only the biases rank
    np.testing.assert_allclose(scores[1], BIASES[1:, 0], atol=1e-6)
    queries = model.query_model(tf.constant(history)).numpy()
    np.testing.assert_allclose(np.linalg.norm(queries[0, :-1]), 4.0, rtol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_bad_temperature_is_refused_with_a_reason(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        models.build_history_model(MOVIES, 2, temperature=temperature)


def test_every_grid_configuration_has_its_own_label():
    labels = [models.history_config_label(config) for config in models.HISTORY_GRID]
    assert len(set(labels)) == len(labels)
    assert models.history_config_label({"embedding_dim": 8, "l2": 1e-4, "temperature": None}) == "8 dims, dot, L2 0.0001"
    assert models.history_config_label({"embedding_dim": 8, "l2": 0.0, "temperature": 0.2}) == "8 dims, cosine / 0.2"


def test_loss_is_the_softmax_cross_entropy_of_the_hidden_movies_over_the_unshown(monkeypatch):
    model = fixed_model(l2=0.01)
    history = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    # user 0 shows m1 and hides m2 (m3 unrated: a negative); user 1 hides m1 and shows
    # nothing. Uniform draws below the dropout rate hide, the others show.
    draws = np.array([[0.9, 0.1, 0.9], [0.1, 0.9, 0.9]], np.float32)
    monkeypatch.setattr(tf.random, "uniform", lambda shape, **_: tf.constant(draws))
    loss = float(model.compute_loss({HISTORY: tf.constant(history)}, training=True))
    shown = history * (draws >= 0.5)
    target = history * (draws < 0.5)
    lengths = np.maximum(shown.sum(axis=1, keepdims=True), 1.0)
    logits = (shown @ BAG / np.sqrt(lengths)) @ VECTORS[1:].T + BIASES[1:, 0]
    per_user = []
    for row in range(2):
        pool = shown[row] == 0  # the softmax runs over the movies the query was not shown
        log_p = logits[row, pool] - np.log(np.exp(logits[row, pool]).sum())
        per_user.append(-(target[row, pool] * log_p).sum() / target[row].sum())
    penalty = 0.01 * 0.5 * (np.sum(BAG**2) + np.sum(VECTORS**2))
    assert loss == pytest.approx(np.mean(per_user) + penalty, rel=1e-5)


def test_a_shown_movie_is_not_a_negative(monkeypatch):
    """Moving a shown movie's candidate vector (and bias) changes nothing in the loss."""
    history = np.array([[1, 1, 0]], np.float32)
    draws = np.array([[0.9, 0.1, 0.9]], np.float32)  # m1 shown, m2 hidden
    monkeypatch.setattr(tf.random, "uniform", lambda shape, **_: tf.constant(draws))
    model = fixed_model()
    before = float(model.compute_loss({HISTORY: tf.constant(history)}, training=True))
    vectors, biases = VECTORS.copy(), BIASES.copy()
    vectors[1], biases[1] = [4.0, 4.0], [5.0]  # row 1 is m1 (row 0 is the OOV row)
    model.candidate_model.get_layer("movie_model").set_weights([vectors])
    model.candidate_model.get_layer("movie_bias_model").set_weights([biases])
    after = float(model.compute_loss({HISTORY: tf.constant(history)}, training=True))
    assert np.isfinite(before)
    assert after == pytest.approx(before, rel=1e-6)


def test_users_with_nothing_hidden_do_not_count(monkeypatch):
    model = fixed_model()
    history = np.array([[1, 1, 0], [0, 0, 1]], np.float32)
    draws = np.array([[0.9, 0.1, 0.9], [0.9, 0.9, 0.9]], np.float32)  # user 1 hides nothing
    monkeypatch.setattr(tf.random, "uniform", lambda shape, **_: tf.constant(draws))
    both = float(model.compute_loss({HISTORY: tf.constant(history)}, training=True))
    alone = float(model.compute_loss({HISTORY: tf.constant(history[:1])}, training=True))
    assert both == pytest.approx(alone, rel=1e-6)


@pytest.mark.parametrize("dropout", [0.0, 1.0, -0.5])
def test_bad_dropout_is_refused_with_a_reason(dropout):
    with pytest.raises(ValueError, match="share of the history hidden"):
        models.build_history_model(MOVIES, 2, dropout=dropout)


def test_training_learns_two_taste_groups_and_keeps_the_best_epoch():
    # 40 users: the first half rate movies 0-9, the second half movies 10-19, each user 6
    # of their group's 10; one more movie per user is held out for validation.
    rng = np.random.default_rng(0)
    n_users, n_movies = 40, 20
    fit = np.zeros((n_users, n_movies), np.float32)
    relevant = np.zeros_like(fit)
    for user in range(n_users):
        group = np.arange(10) + (10 if user >= n_users // 2 else 0)
        chosen = rng.choice(group, size=7, replace=False)
        fit[user, chosen[:6]] = 1.0
        relevant[user, chosen[6]] = 1.0
    movie_ids = [f"m{i}" for i in range(n_movies)]
    run = models.train_history_model(fit, movie_ids, fit, relevant, embedding_dim=8, l2=0.0,
                                      learning_rate=0.05, batch_size=8, max_epochs=20, every=5)
    # 4 unseen movies of the user's group among 14 unseen: recall@10 of a model that knows
    # the groups is 1; one that does not (random order) about 10 / 14 ~ 0.71
    assert run.validation_recall > 0.95, run.curve
    assert run.best_epoch == run.curve.loc[run.curve["validation recall@10"].idxmax(), "epoch"]
    ranked = ev.top_k(run.model.scores(fit), 10, exclude=fit > 0)
    assert ev.recall_at_k(ranked, relevant, 10) == pytest.approx(run.validation_recall)


def test_refit_trains_the_chosen_epoch_count_again_from_the_same_start_on_the_refit_data():
    # The epoch count is chosen on the first 30 users' validation; the model then ends as a
    # model started from the same weights and seed and trained on all 40 users for that
    # many epochs would.
    rng = np.random.default_rng(1)
    everyone = (rng.random((40, 20)) < 0.3).astype(np.float32)
    fit, relevant = everyone[:30], (rng.random((30, 20)) < 0.1).astype(np.float32)
    movie_ids = [f"m{i}" for i in range(20)]
    settings = {"embedding_dim": 4, "l2": 0.0, "learning_rate": 0.05, "batch_size": 8}
    refitted = models.train_history_model(fit, movie_ids, fit, relevant, max_epochs=6, every=2, patience=3,
                                          seed=7, refit_matrix=everyone, **settings)
    curve = refitted.curve.set_index("epoch")["validation recall@10"]
    assert refitted.best_epoch == curve.idxmax() and refitted.validation_recall == curve.max()

    recsys_course.seed_everything(7)  # the same start, by hand: build, one loss (creates every weight), reseed
    by_hand = models.build_history_model(movie_ids, 4, l2=0.0, learning_rate=0.05)
    by_hand.compute_loss(next(iter(tf.data.Dataset.from_tensor_slices({HISTORY: fit}).batch(8))))
    recsys_course.seed_everything(7)
    by_hand.fit(tf.data.Dataset.from_tensor_slices({HISTORY: everyone}).shuffle(40, seed=7).batch(8),
                epochs=refitted.best_epoch, verbose=0)
    np.testing.assert_allclose(refitted.model.scores(everyone), by_hand.scores(everyone), rtol=1e-4, atol=1e-5)


def test_training_rejects_a_matrix_of_the_wrong_width():
    with pytest.raises(ValueError, match="fit_matrix must be"):
        models.train_history_model(np.zeros((3, 2)), MOVIES, np.zeros((3, 3)), np.zeros((3, 3)))


def test_concatenated_towers_score_the_weighted_sum_of_their_models_in_one_dot_product():
    dot, cosine = fixed_model(), fixed_model(temperature=0.5)
    history = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], np.float32)
    joined = models.concatenate_towers([dot, cosine], history)
    outside = history == 0
    spreads = np.array([dot.scores(history)[outside].std(), cosine.scores(history)[outside].std()])
    np.testing.assert_allclose(joined.weights, 1.0 / spreads, rtol=1e-6)
    expected = dot.scores(history) / spreads[0] + cosine.scores(history) / spreads[1]
    np.testing.assert_allclose(joined.scores(history), expected, rtol=1e-5, atol=1e-6)
    # one query vector a user and one vector a movie: the widths of both models added
    assert joined.query_vectors(history).shape == (3, 6)
    assert joined.catalogue_vectors().shape == (3, 6)


def test_concatenating_nothing_or_constant_scores_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        models.concatenate_towers([], np.zeros((1, 3)))
    flat = fixed_model()
    flat.candidate_model.get_layer("movie_model").set_weights([np.zeros_like(VECTORS)])
    flat.candidate_model.get_layer("movie_bias_model").set_weights([np.zeros_like(BIASES)])
    with pytest.raises(ValueError, match="must vary"):
        models.concatenate_towers([flat], np.array([[1, 0, 0]], np.float32))
