"""Lesson 03: retrieval against strong simple baselines, with corrected negatives and a
history query tower, on three protocols, every model measured in the same run.

Protocols (``recsys_course.evaluation``, see :func:`recsys_course.tooling.benchmarks.lesson_02.splits`):

* ``random``: the TFRS tutorials' seeded 80/20 split; validation a seeded 10 % of train;
* ``temporal`` (per-user holdout): each user's ``HOLDOUT`` latest ratings are test, the
  ``HOLDOUT`` before them validation (``leave_last_k`` twice); other users' later ratings
  still train;
* ``global_time``: a global time split at the 80 % timestamp quantile (nothing after the
  cutoff trains; each user with 5 earlier ratings is tested on their next 10), validation
  the same rule inside the training period.

Every model learns from the *fit* split and chooses on validation: EASE its lambda
(``lesson.EASE_GRID``), the towers their epoch. Models:

* ``popularity``, ``item_knn`` (cosine, all neighbours), ``ease`` (the lesson's
  ``ease_weights``; exact Woodbury form when movies outnumber users);
* ``classic`` and ``id_corrected``: ``models.train_retrieval`` (lesson 02's recipe) without
  and with the logQ correction (one change); ``side_corrected``: side features + correction
  (the package's feature towers, the same recipe);
* ``history``: the history towers of ``models.HISTORY_GRID``, each epoch chosen on
  validation (every 5, patience 3), then the best configuration alone or all joined
  (``models.concatenate_towers``), whichever validation prefers (``form``);
* random protocol only (not in quick mode): ``side_corrected_1000_time_buckets`` and the
  negatives ablation of ``id_corrected``: ``..._no_accidental_hits``, ``..._temperature_0.5``,
  ``..._hard_negatives_100``.

A quick run (``COURSE_BENCH_QUICK``) trains the towers on the random protocol only; the
other two protocols get their splits and the three baselines, and ``best_two_tower`` ``None``.

Metrics per model as in lesson 02's benchmark (``recall@10_masked``, ``recall@50_masked``,
``ndcg@10``, ``coverage@10``, ``test_top_100``), plus validation masked recall@10.
``best_two_tower`` is the tower with the best *validation* masked recall@10, the lesson's
rule for its final model. Lesson 02's benchmark holds the tutorial reproduction and the
models of lesson 02 without the correction.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from recsys_course import evaluation as ev, models
from recsys_course.data import MovieLens
from recsys_course.env import seed_everything
from recsys_course.models import features as mf
from recsys_course.tooling.benchmarks import QUICK_EPOCHS, epochs, quick, when_quick
from recsys_course.tooling.benchmarks.lesson_02 import HOLDOUT, Evaluation, Progress, splits

ID_TOWERS = {
    "classic": dict(correction=False),
    "id_corrected": dict(correction=True),
}
RANDOM_ONLY = {
    "id_corrected_no_accidental_hits": dict(correction=True, remove_accidental_hits=True),
    "id_corrected_temperature_0.5": dict(correction=True, temperature=0.5),
    "id_corrected_hard_negatives_100": dict(correction=True, num_hard_negatives=100),
}


def _ease(lesson, matrix: np.ndarray, l2: float) -> np.ndarray:
    """EASE weights over the whole catalogue, computed on the movies with fit ratings only:
    a movie nobody rated has a zero Gram row and column, so its weights are exactly 0."""
    active = matrix.any(axis=0)
    weights = np.zeros((matrix.shape[1], matrix.shape[1]))
    weights[np.ix_(active, active)] = lesson.ease_weights(matrix[:, active], l2)
    return weights


def _ease_scores_woodbury(matrix: np.ndarray, history: np.ndarray, l2: float) -> np.ndarray:
    """``history @ B`` for the EASE weights B of ``matrix`` (users x items), without the
    items x items inverse: by the Woodbury identity, with K = X X^T + l2 I (users x users)
    and Y = K^-1 X, P = (X^T X + l2 I)^-1 = (I - X^T Y) / l2, so diag(P) = (1 - colsum(X*Y))
    / l2 and history @ B = H - (H - (H X^T) Y) / (1 - colsum(X*Y)). Exact; O(users^2 items)
    instead of O(items^3), which matters when movies far outnumber users (ml-latest-small)."""
    x = np.asarray(matrix, dtype=np.float64)
    h = np.asarray(history, dtype=np.float64)
    y = np.linalg.solve(x @ x.T + l2 * np.eye(x.shape[0]), x)
    return h - (h - (h @ x.T) @ y) / (1.0 - np.einsum("ui,ui->i", x, y))[None, :]


def _ease_scorer(lesson, matrix: np.ndarray):
    """``score(history, l2)``: the lesson's ``ease_weights`` when items are few; the exact
    Woodbury form when items outnumber users, checked against ``ease_weights`` on a slice."""
    if matrix.shape[1] <= max(3000, matrix.shape[0]):
        return lambda history, l2: history @ _ease(lesson, matrix, l2)
    part = matrix[:, :400]
    reference = part.astype(np.float64) @ lesson.ease_weights(part, 100.0)
    fast = _ease_scores_woodbury(part, part, 100.0)
    if not np.allclose(reference, fast, atol=1e-8):
        raise AssertionError("the Woodbury EASE scores differ from ease_weights: fix the benchmark")
    return lambda history, l2: _ease_scores_woodbury(matrix, history, l2)


def _timed(row: dict, started: float) -> dict:
    return {**row, "wall_seconds": round(time.perf_counter() - started, 1)}


def _protocol(data: MovieLens, lesson, protocol: str) -> dict:
    seed = lesson.SEED
    movies = data.movies.assign(movie_id=data.movies["movie_id"].astype(str)).sort_values("movie_id")
    movie_ids = movies["movie_id"].tolist()  # the order of models.train_retrieval's catalogue
    train, test, fit, validation = splits(data.ratings, protocol, seed)
    e = Evaluation(train, test, fit, validation, movie_ids)
    comparison = Progress(protocol)
    started = time.perf_counter()
    comparison["popularity"] = _timed(e.popularity(), started)
    started = time.perf_counter()
    knn = lesson.item_knn_weights(e.fit_matrix)
    comparison["item_knn"] = _timed({**e.measure(e.test_history @ knn),
                                     "validation_recall@10_masked": e.validation_recall(e.val_history @ knn)}, started)
    del knn
    started = time.perf_counter()
    ease_scores = _ease_scorer(lesson, e.fit_matrix)
    grid = {l2: e.validation_recall(ease_scores(e.val_history, l2)) for l2 in lesson.EASE_GRID}
    best_l2 = max(grid, key=grid.get)
    comparison["ease"] = _timed({**e.measure(ease_scores(e.test_history, best_l2)), "lambda": best_l2,
                                 "validation_recall@10_masked": grid[best_l2],
                                 "validation_recall@10_by_lambda": {str(k): v for k, v in grid.items()}}, started)

    if quick() and protocol != "random":
        # A quick run trains the towers on one protocol: the code that trains and measures
        # them is the same for every protocol, only the split above differs.
        return _summary(comparison, fit, validation, test, e)

    started = time.perf_counter()
    runs = {}
    for config in models.HISTORY_GRID:
        runs[models.history_config_label(config)] = (
            models.train_history_model(e.fit_matrix, movie_ids, e.val_history, e.val_relevant, seed=seed,
                                       # a quick run: one validation measure (every 5 epochs), then stop
                                       **{**config, **when_quick(max_epochs=5, patience=1)}),
            config)
    chosen = max(runs, key=lambda key: runs[key][0].validation_recall)
    history_run, history_config = runs[chosen]
    joined = models.concatenate_towers([r.model for r, _ in runs.values()], e.val_history)
    joined_recall = ev.recall_at_k(ev.top_k(joined.scores(e.val_history), 10, exclude=e.val_history > 0),
                                   e.val_relevant, 10)
    use_joined = joined_recall > history_run.validation_recall
    history_model = joined if use_joined else history_run.model
    comparison["history"] = _timed({
        **e.measure(history_model.scores(e.test_history)),
        "validation_recall@10_masked": round(joined_recall if use_joined else history_run.validation_recall, 4),
        "form": "all configurations joined" if use_joined else chosen,
        **history_config, "best_epoch_on_validation": history_run.best_epoch,
        "validation_recall@10_by_config": {key: round(r.validation_recall, 4) for key, (r, _) in runs.items()},
        "validation_recall@10_joined": round(joined_recall, 4),
    }, started)
    del joined, history_model
    runs.clear()

    towers = dict(ID_TOWERS)
    if protocol == "random" and not quick():
        towers.update(RANDOM_ONLY)
    for name, options in towers.items():
        started = time.perf_counter()
        seed_everything(seed)
        trained = models.train_retrieval(fit, movies, validation=validation, seed=seed, **options,
                                         **when_quick(max_epochs=QUICK_EPOCHS))
        comparison[name] = _timed({
            **e.measure(trained.scores(e.test_users)),
            "validation_recall@10_masked": e.validation_recall(trained.scores(e.val_users)),
            "best_epoch_on_validation": trained.best_epoch,
        }, started)
    side = {"side_corrected": 20}
    if protocol == "random" and not quick():
        side["side_corrected_1000_time_buckets"] = 1000
    for name, buckets in side.items():
        started = time.perf_counter()
        model, run = _side_corrected(data, lesson, fit, validation, movies, buckets)
        comparison[name] = _timed({
            **e.measure(_side_scores(model, movies, train, e.test_users, data.has_demographics)),
            "validation_recall@10_masked": e.validation_recall(
                _side_scores(model, movies, fit, e.val_users, data.has_demographics)),
            "best_epoch_on_validation": run.best_epoch, "epochs_run": int(run.curves["epoch"].max()),
        }, started)

    return _summary(comparison, fit, validation, test, e)


BASELINES = ("popularity", "item_knn", "ease")


def _summary(comparison: dict, fit, validation, test, e: Evaluation) -> dict:
    """One protocol's record: split sizes, the comparison, the two-tower model best on
    validation (``None`` when no tower was trained: a quick run's other protocols)."""
    tower_names = [n for n in comparison if n not in BASELINES]
    best = max(tower_names, key=lambda n: comparison[n]["validation_recall@10_masked"]) if tower_names else None
    return {
        "rows": {"fit": len(fit), "validation": len(validation), "test": len(test), "test_users": len(e.test_users)},
        "comparison": dict(comparison),
        "best_two_tower": best,
        "best_two_tower_vs_ease_recall@10": None if best is None else round(
            comparison[best]["recall@10_masked"] / max(comparison["ease"]["recall@10_masked"], 1e-12), 3),
        "ranking_by_recall@10_masked": sorted(comparison, key=lambda n: -comparison[n]["recall@10_masked"]),
    }


def _side_corrected(data: MovieLens, lesson, fit, validation, movies, time_buckets: int):
    """The package's feature towers with the logQ correction, trained with the course's
    retrieval recipe (epoch chosen on validation factorized top-100)."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    recipe, seed, demographics = models.RETRIEVAL_RECIPE, lesson.SEED, data.has_demographics
    width = mf.genre_width(movies)
    seed_everything(seed)
    query = models.QueryTower(
        sorted(fit["user_id"].unique()), recipe["embedding_dim"], timestamps=fit["timestamp"].to_numpy(dtype="float64"),
        time_buckets=time_buckets,
        occupations=sorted(fit["user_occupation_text"].unique()) if demographics else None,
        ages=fit["raw_user_age"].to_numpy() if demographics else None,
    )
    candidate = models.CandidateTower(movies["movie_id"].tolist(), recipe["embedding_dim"],
                                      titles=movies["movie_title"].to_numpy(dtype=object),
                                      genres=sorted({g for gs in movies["movie_genres"] for g in gs}))
    catalogue = tf.data.Dataset.from_tensor_slices(mf.movie_features(movies, width)).batch(4096)
    metric = tfrs.metrics.FactorizedTopK(candidates=catalogue.map(candidate), ks=(100,))
    model = models.TwoTowerModel(query, candidate, query_feature=None, candidate_feature=None, correction=True,
                                 metrics=metric)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(recipe["learning_rate"]))
    probability = mf.candidate_probability(fit)

    def features(frame):
        return mf.rating_features(frame, width, demographics=demographics, probability=probability)

    run = models.train_with_curves(model, mf.to_dataset(features(fit), recipe["batch_size"], shuffle_seed=seed),
                                   {"validation": features(validation)}, epochs=epochs(recipe["max_epochs"]), ks=(100,),
                                   patience=recipe["patience"])
    return model, run


def _side_scores(model, movies, frame: pd.DataFrame, users: list, demographics: bool) -> np.ndarray:
    import tensorflow as tf

    width = mf.genre_width(movies)
    catalogue = tf.data.Dataset.from_tensor_slices(mf.movie_features(movies, width)).batch(1024)
    vectors = np.concatenate([model.candidate_model(batch).numpy() for batch in catalogue])
    return model.query_model(mf.user_features(frame, users, demographics=demographics)).numpy() @ vectors.T


def baselines_negatives_protocols(data: MovieLens, lesson) -> dict:
    runs = {protocol: _protocol(data, lesson, protocol) for protocol in ("random", "temporal", "global_time")}
    return {
        "protocols": {
            "random": "seeded 80/20 split of rating rows (seed 42); validation = 10 % of train",
            "temporal": f"per-user holdout: per user, the {HOLDOUT} latest ratings are test; validation = the "
                        f"{HOLDOUT} latest of the rest (other users' later ratings still train)",
            "global_time": "global time split at the 80 % timestamp quantile: each user with 5 earlier ratings is "
                           "tested on their next 10; validation = the same rule inside the training period",
        },
        "demographics": data.has_demographics,
        "comparison": runs["random"]["comparison"],
        "best_two_tower": runs["random"]["best_two_tower"],
        "random": {k: v for k, v in runs["random"].items() if k != "comparison"},
        "comparison_temporal": runs["temporal"]["comparison"],
        "temporal": {k: v for k, v in runs["temporal"].items() if k != "comparison"},
        "comparison_global_time": runs["global_time"]["comparison"],
        "global_time": {k: v for k, v in runs["global_time"].items() if k != "comparison"},
    }
