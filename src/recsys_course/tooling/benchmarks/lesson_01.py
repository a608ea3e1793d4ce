"""Lesson 01: test RMSE and MAE of every model of the lesson on the seeded 80/20 split.

Models: the global mean, damped user + movie biases, matrix factorisation trained with the
lesson's NumPy SGD, and the lesson's Keras model. All of them are fitted on the same 90 % of
the training part (the other 10 % chooses the bias damping and stops Keras early), with the
lesson's own constants (``NUMPY_MF``, ``KERAS_MF``), and scored once on the 20 % test part.
``COURSE_BENCH_QUICK=1`` (a smoke test) trains each for at most three epochs.
"""

from __future__ import annotations

import time

import numpy as np

from recsys_course.tooling.benchmarks import quick
from recsys_course.data import MovieLens, split_ratings

SEED = 42


def _recipe(recipe: dict) -> dict:
    """The lesson's training recipe; in quick mode (a smoke test) at most three epochs."""
    return {**recipe, "epochs": min(recipe["epochs"], 3)} if quick() else dict(recipe)


def _scores(lesson, test, predictions: np.ndarray, seconds: float) -> dict:
    errors = test.ratings - predictions
    return {
        "test_rmse": round(lesson.rmse(test.ratings, predictions), 4),
        "test_mae": round(float(np.mean(np.abs(errors))), 4),
        "fit_seconds": round(seconds, 2),
    }


def _paired_gain(test, baseline: np.ndarray, model: np.ndarray) -> dict:
    """How much lower the model's test MSE is than the baseline's, with the standard error of
    that difference over the paired per-rating squared errors (z > 3: not a fluke of the split)."""
    diff = (test.ratings - baseline) ** 2 - (test.ratings - model) ** 2
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    gain = float(diff.mean())
    return {"mse_gain": round(gain, 5), "standard_error": round(se, 5), "z": round(gain / se, 1)}


def _genre_agreement(lesson, vectors: np.ndarray, genres: list[set], k: int = 10) -> tuple[float, float]:
    """Mean Jaccard overlap of genres between each movie and its k cosine neighbours, and
    between each movie and k random movies (the chance level)."""
    rng = np.random.default_rng(SEED)
    near, chance = [], []
    for row in range(len(vectors)):
        neighbours, _ = lesson.most_similar(vectors, row, k)
        others = rng.choice(np.delete(np.arange(len(vectors)), row), size=len(neighbours), replace=False)
        for pool, rows in ((near, neighbours), (chance, others)):
            pool.extend(len(genres[row] & genres[r]) / max(1, len(genres[row] | genres[r])) for r in rows)
    return float(np.mean(near)), float(np.mean(chance))


def matrix_factorization(data: MovieLens, lesson) -> dict:
    train_frame, test_frame = split_ratings(data.ratings, 0.2, seed=SEED)
    fit_frame, valid_frame = split_ratings(train_frame, lesson.VALID_FRACTION, seed=SEED)
    user_vocab = lesson.build_vocabulary(fit_frame["user_id"])
    item_vocab = lesson.build_vocabulary(fit_frame["movie_id"])
    n_users, n_items = len(user_vocab) + 1, len(item_vocab) + 1
    fit, valid, test = (lesson.encode(f, user_vocab, item_vocab) for f in (fit_frame, valid_frame, test_frame))
    models: dict[str, dict] = {}

    t0 = time.perf_counter()
    mean_model = lesson.init_params(n_users, n_items, 0, fit.ratings.mean(), SEED)
    predicted = lesson.predict(mean_model, test.users, test.items)
    models["global_mean"] = _scores(lesson, test, predicted, time.perf_counter() - t0)

    t0 = time.perf_counter()
    search = {}
    for reg in (0.0, 1.0, 3.0, 10.0, 30.0):
        candidate = lesson.fit_baseline(fit, n_users, n_items, reg)
        search[reg] = lesson.rmse(valid.ratings, lesson.predict(candidate, valid.users, valid.items))
    bias_reg = min(search, key=search.get)
    bias_model = lesson.fit_baseline(fit, n_users, n_items, bias_reg)
    bias_predictions = lesson.predict(bias_model, test.users, test.items)
    models["biases"] = {
        **_scores(lesson, test, bias_predictions, time.perf_counter() - t0),
        "lambda_chosen_on_validation": bias_reg,
    }

    t0 = time.perf_counter()
    numpy_model, numpy_curves = lesson.train_numpy_mf(
        fit, n_users, n_items, **_recipe(lesson.NUMPY_MF), seed=SEED, watch={"validation": valid}
    )
    numpy_predictions = lesson.predict(numpy_model, test.users, test.items)
    models["numpy_mf"] = {
        **_scores(lesson, test, numpy_predictions, time.perf_counter() - t0),
        "epochs": len(numpy_curves),
        "validation_rmse": round(float(numpy_curves["validation"].iloc[-1]), 4),
        **{k: v for k, v in lesson.NUMPY_MF.items() if k in ("dim", "lr", "reg", "batch_size")},
    }

    t0 = time.perf_counter()
    keras_model, keras_curves = lesson.train_keras_mf(
        fit, valid, n_users, n_items, **_recipe(lesson.KERAS_MF), seed=SEED, watch={"validation": valid}, verbose=0
    )
    keras_predictions = lesson.keras_predict(keras_model, test)
    models["keras_mf"] = {
        **_scores(lesson, test, keras_predictions, time.perf_counter() - t0),
        "epochs_run": len(keras_curves),
        "best_epoch": int(keras_curves["validation"].idxmin()) + 1,
        "validation_rmse": round(float(keras_curves["validation"].min()), 4),
        **{k: v for k, v in lesson.KERAS_MF.items() if k in ("dim", "lr", "reg", "batch_size")},
    }

    # Do the Keras movie vectors put movies of the same genres together? Only movies with at
    # least 20 fitting ratings, as in the lesson.
    support = np.bincount(fit.items, minlength=n_items)
    rows = np.flatnonzero(support >= 20)
    row_to_movie = {row: movie for movie, row in item_vocab.items()}
    genres_of = data.movies.set_index("movie_id")["movie_genres"]
    genres = [set(genres_of[row_to_movie[r]]) for r in rows]
    vectors = keras_model.item_factors.get_weights()[0][rows]
    near, chance = _genre_agreement(lesson, vectors, genres)

    bias_rmse = models["biases"]["test_rmse"]
    return {
        "split": "seeded random 80/20 (seed 42); models fit on 90% of train, 10% validation",
        "ratings": {"fit": len(fit.ratings), "validation": len(valid.ratings), "test": len(test.ratings)},
        "test_share_unknown_movie": round(float(np.mean(test.items == 0)), 4),
        "models": models,
        "keras_mf_minus_biases_rmse": round(models["keras_mf"]["test_rmse"] - bias_rmse, 4),
        "numpy_mf_minus_biases_rmse": round(models["numpy_mf"]["test_rmse"] - bias_rmse, 4),
        "keras_mf_vs_biases_paired": _paired_gain(test, bias_predictions, keras_predictions),
        "numpy_mf_vs_biases_paired": _paired_gain(test, bias_predictions, numpy_predictions),
        "neighbour_genre_jaccard@10": {"keras_mf": round(near, 4), "random": round(chance, 4), "movies": len(rows)},
    }
