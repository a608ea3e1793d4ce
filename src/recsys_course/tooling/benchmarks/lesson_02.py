"""Lesson 02: two-tower retrieval against strong simple baselines, every model measured in
the same run, on two protocols.

Protocols (``recsys_course.evaluation``):

* ``random``: the TFRS tutorials' seeded 80/20 split of the rating rows; validation is a
  seeded 10 % of the training rows;
* ``temporal``: per user, the ``HOLDOUT`` latest ratings are test; validation is the
  ``HOLDOUT`` latest of what remains (``leave_last_k`` twice).

Every model learns from the *fit* split only (train minus validation) and chooses its
hyper-parameters on validation: EASE its lambda, the towers their epoch (best validation
factorized top-100, patience 2). Models:

* ``popularity``: the same most-rated movies for everybody;
* ``item_knn``: cosine item-to-item similarity of the fit interactions, all neighbours;
* ``ease``: Steck (2019), the lesson's ``ease_weights``, lambda from ``EASE_GRID``;
* ``history``: the lesson's history tower (``recsys_course.models.history``): the query is
  a bag of the user's fit movies, trained per user with a full softmax; the configuration
  (dot product or cosine with a temperature) chosen on validation from
  ``models.HISTORY_GRID`` (in each protocol), epoch too, then the best configuration alone
  or all of them joined into one two-tower model (``models.concatenate_towers``), whichever
  validation prefers (``form``);
* ``classic``, ``id_corrected``, ``side_corrected``: the lesson's towers (TFRS tutorial
  recipe with epochs on validation; logQ correction; side features on top);
* random protocol only: ``tutorial_reproduction`` (the TFRS basic tutorial exactly: 3
  epochs on the whole training split), ``side_corrected_1000_time_buckets`` (lesson 3.2),
  and the negatives ablation of ``id_corrected``: ``..._no_accidental_hits``,
  ``..._temperature_0.5``, ``..._hard_negatives_100``.

Metrics per model (test split, users with test ratings, queried once at their latest
training rating; full catalogue, seen = every training rating masked): ``recall@10_masked``,
``recall@50_masked``, ``ndcg@10``, ``coverage@10``, and ``test_top_100`` (share of test
pairs whose movie is in the user's unmasked top 100). ``best_two_tower`` is the tower with
the best *validation* masked recall@10, the rule the lesson uses to pick its final model.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd

from recsys_course import evaluation as ev, models
from recsys_course.tooling.benchmarks import quick
from recsys_course.models import features as mf
from recsys_course.data import MovieLens
from recsys_course.env import seed_everything

#: COURSE_BENCH_QUICK=1 (``quick()``) skips the tutorial reproduction and the random-protocol-only
#: variants (time buckets, negatives ablation) for a faster run on large data.
HOLDOUT = 5  #: ratings per user held out by the temporal protocol (test, then validation)
EASE_GRID = (10.0, 50.0, 200.0, 500.0, 2000.0)
TOWERS = {
    "classic": dict(side=False, correction=False, batch=8192, lr=0.1, epochs=6),
    "id_corrected": dict(side=False, correction=True, batch=1024, lr=0.05, epochs=10),
    "side_corrected": dict(side=True, correction=True, batch=1024, lr=0.05, epochs=10),
}
RANDOM_ONLY = {
    "side_corrected_1000_time_buckets": dict(TOWERS["side_corrected"], time_buckets=1000),
    "id_corrected_no_accidental_hits": dict(TOWERS["id_corrected"], accidental_hits=True),
    "id_corrected_temperature_0.5": dict(TOWERS["id_corrected"], temperature=0.5),
    "id_corrected_hard_negatives_100": dict(TOWERS["id_corrected"], hard_negatives=100),
}


class _Progress(dict):
    """The comparison dict; each finished model is also printed to stderr, so a long run
    that is stopped still leaves its numbers."""

    def __init__(self, protocol: str):
        super().__init__()
        self.protocol = protocol

    def __setitem__(self, name, row):
        super().__setitem__(name, row)
        print(json.dumps({self.protocol: {name: row}}), file=sys.stderr, flush=True)


def _splits(ratings: pd.DataFrame, protocol: str, seed: int):
    if protocol == "random":
        train, test = ev.random_split(ratings, 0.2, seed=seed)
        fit, validation = ev.random_split(train, 0.1, seed=seed)
    else:
        train, test = ev.leave_last_k(ratings, HOLDOUT)
        fit, validation = ev.leave_last_k(train, HOLDOUT)
    return train, test, fit, validation


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


def _protocol(data: MovieLens, lesson, protocol: str, extra_towers: dict) -> dict:
    tf, tfrs = lesson.tf, lesson.tfrs
    ks, dim, seed = lesson.TOP_KS, lesson.EMBEDDING_DIM, lesson.SEED
    ratings, movies = data.ratings, data.movies
    train, test, fit, validation = _splits(ratings, protocol, seed)
    demographics = data.has_demographics
    width = mf.genre_width(movies)
    movie_ids = movies["movie_id"].astype(str).tolist()
    titles = movies["movie_title"].to_numpy(dtype=object)
    genres = sorted({g for gs in movies["movie_genres"] for g in gs})
    candidates = tf.data.Dataset.from_tensor_slices(mf.movie_features(movies, width))

    # Evaluation sets: test users masked with all of train; validation users with fit.
    test_users = sorted(set(test["user_id"]) & set(train["user_id"]))
    test_seen = ev.interaction_matrix(train, test_users, movie_ids)
    test_relevant = ev.interaction_matrix(test, test_users, movie_ids)
    val_users = sorted(set(validation["user_id"]) & set(fit["user_id"]))
    val_relevant = ev.interaction_matrix(validation, val_users, movie_ids)
    fit_users = sorted(fit["user_id"].unique())
    fit_matrix = ev.interaction_matrix(fit, fit_users, movie_ids)
    row_of = pd.Index(fit_users)

    def history(users: list[str]) -> np.ndarray:
        rows = row_of.get_indexer(users)
        return np.where(rows[:, None] >= 0, fit_matrix[np.maximum(rows, 0)], False).astype(np.float64)

    test_history, val_history = history(test_users), history(val_users)

    def measure(scores: np.ndarray) -> dict:
        report = ev.evaluate(scores, test_relevant, seen=test_seen, ks=(10, 50))
        unmasked = ev.top_k(scores, 100)
        row = {key: report[key] for key in ("recall@10_masked", "recall@50_masked", "ndcg@10", "coverage@10")}
        row["test_top_100"] = ev.pair_recall_at_k(unmasked, test_relevant, 100)
        return ev.rounded(row)

    def validation_recall(scores: np.ndarray) -> float:
        ranked = ev.top_k(scores, 10, exclude=val_history > 0)
        return round(ev.recall_at_k(ranked, val_relevant, 10), 4)

    comparison = _Progress(protocol)
    started = time.perf_counter()
    popular = fit_matrix.sum(axis=0).astype(np.float64)
    comparison["popularity"] = {
        **measure(np.tile(popular, (len(test_users), 1))),
        "validation_recall@10_masked": validation_recall(np.tile(popular, (len(val_users), 1))),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    started = time.perf_counter()
    knn = lesson.item_knn_weights(fit_matrix)
    comparison["item_knn"] = {
        **measure(test_history @ knn), "validation_recall@10_masked": validation_recall(val_history @ knn),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    del knn
    started = time.perf_counter()
    ease_scores = _ease_scorer(lesson, fit_matrix)
    grid = {l2: validation_recall(ease_scores(val_history, l2)) for l2 in EASE_GRID}
    best_l2 = max(grid, key=grid.get)
    comparison["ease"] = {
        **measure(ease_scores(test_history, best_l2)),
        "lambda": best_l2, "validation_recall@10_masked": grid[best_l2],
        "validation_recall@10_by_lambda": {str(k): v for k, v in grid.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }

    started = time.perf_counter()
    runs = {}
    for config in models.HISTORY_GRID:
        run = models.train_history_model(fit_matrix, movie_ids, val_history, val_relevant, seed=seed, **config)
        runs[models.history_config_label(config)] = (run, config)
    chosen = max(runs, key=lambda key: runs[key][0].validation_recall)
    history_run, history_config = runs[chosen]
    # as in the lesson: the best configuration alone, or every configuration joined into
    # one two-tower model (models.concatenate_towers), whichever validation prefers
    joined = models.concatenate_towers([r.model for r, _ in runs.values()], val_history)
    joined_recall = ev.recall_at_k(ev.top_k(joined.scores(val_history), 10, exclude=val_history > 0), val_relevant, 10)
    use_joined = joined_recall > history_run.validation_recall  # unrounded, as the lesson compares
    history_model = joined if use_joined else history_run.model
    comparison["history"] = {
        **measure(history_model.scores(test_history)),
        "validation_recall@10_masked": round(joined_recall if use_joined else history_run.validation_recall, 4),
        "form": "all configurations joined" if use_joined else chosen,
        **history_config, "best_epoch_on_validation": history_run.best_epoch,
        "validation_recall@10_by_config": {key: round(r.validation_recall, 4) for key, (r, _) in runs.items()},
        "validation_recall@10_joined": round(joined_recall, 4),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    del joined, history_model
    runs.clear()  # free the other configurations' weights

    def build(frame: pd.DataFrame, side: bool, time_buckets: int = 20):
        seed_everything(seed)  # every model starts from the same seeded state
        users = sorted(frame["user_id"].unique())
        if side:
            query = lesson.QueryTower(
                users, dim, timestamps=frame["timestamp"].to_numpy(dtype="float64"),
                time_buckets=time_buckets,
                occupations=sorted(frame["user_occupation_text"].unique()) if demographics else None,
                ages=frame["raw_user_age"].to_numpy() if demographics else None,
            )
            candidate = lesson.CandidateTower(movie_ids, dim, titles=titles, genres=genres)
        else:
            query, candidate = lesson.QueryTower(users, dim), lesson.CandidateTower(movie_ids, dim)
        return query, candidate

    def compile_model(query, candidate, s: dict):
        metric = tfrs.metrics.FactorizedTopK(candidates=candidates.batch(4096).map(candidate), ks=ks)
        options = dict(metrics=metric, temperature=s.get("temperature"),
                       num_hard_negatives=s.get("hard_negatives"))
        if s.get("accidental_hits"):
            task = models.AccidentalHitsRetrieval(**options)
            candidate = task.recording(candidate)
        else:
            task = tfrs.tasks.Retrieval(**options)
        model = lesson.RetrievalModel(query, candidate, task, s["correction"])
        model.compile(optimizer=tf.keras.optimizers.Adagrad(s["lr"]))
        return model

    def tower_scores(model, frame: pd.DataFrame, users: list[str]) -> np.ndarray:
        vectors = np.concatenate([model.candidate_model(b).numpy() for b in candidates.batch(1024)])
        queries = mf.user_features(frame, users, demographics=demographics)
        return model.query_model(queries).numpy() @ vectors.T

    if protocol == "random" and not quick():
        # The TFRS basic retrieval tutorial, exactly: whole training split, 3 epochs.
        started = time.perf_counter()
        model = compile_model(*build(train, side=False), dict(correction=False, lr=0.1))
        model.fit(mf.to_dataset(mf.rating_features(train, width), 8192, shuffle_seed=seed), epochs=3, verbose=0)
        comparison["tutorial_reproduction"] = {
            **measure(tower_scores(model, train, test_users)), "epochs": 3,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }

    probability = mf.candidate_probability(fit)

    def features(frame):
        return mf.rating_features(frame, width, demographics=demographics, probability=probability)

    fit_features, val_features = features(fit), features(validation)
    for name, s in {**TOWERS, **extra_towers}.items():
        started = time.perf_counter()
        model = compile_model(*build(fit, s["side"], s.get("time_buckets", 20)), s)
        run = models.train_with_curves(
            model, mf.to_dataset(fit_features, s["batch"], shuffle_seed=seed),
            {"validation": val_features}, epochs=s["epochs"], ks=ks,
            patience=None if name == "classic" else 2,
        )
        comparison[name] = {
            **measure(tower_scores(model, train, test_users)),
            "validation_recall@10_masked": validation_recall(tower_scores(model, fit, val_users)),
            "best_epoch_on_validation": run.best_epoch,
            "epochs_run": int(run.curves["epoch"].max()),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    towers = [n for n in comparison if n not in ("popularity", "item_knn", "ease", "tutorial_reproduction")]
    best = max(towers, key=lambda n: comparison[n]["validation_recall@10_masked"])
    ranking = sorted(comparison, key=lambda n: -comparison[n]["recall@10_masked"])
    return {
        "rows": {"fit": len(fit), "validation": len(validation), "test": len(test),
                 "test_users": len(test_users)},
        "comparison": dict(comparison),
        "best_two_tower": best,
        "best_two_tower_vs_ease_recall@10": round(
            comparison[best]["recall@10_masked"] / max(comparison["ease"]["recall@10_masked"], 1e-12), 3
        ),
        "ranking_by_recall@10_masked": ranking,
    }


def two_tower_retrieval(data: MovieLens, lesson) -> dict:
    random_run = _protocol(data, lesson, "random", {} if quick() else RANDOM_ONLY)
    temporal_run = _protocol(data, lesson, "temporal", {})
    return {
        "protocols": {
            "random": "seeded 80/20 split of rating rows (seed 42); validation = 10 % of train",
            "temporal": f"per user, the {HOLDOUT} latest ratings are test; validation = the "
                        f"{HOLDOUT} latest of the rest",
        },
        "demographics": data.has_demographics,
        "comparison": random_run["comparison"],
        "best_two_tower": random_run["best_two_tower"],
        "random": {k: v for k, v in random_run.items() if k != "comparison"},
        "comparison_temporal": temporal_run["comparison"],
        "temporal": {k: v for k, v in temporal_run.items() if k != "comparison"},
    }
