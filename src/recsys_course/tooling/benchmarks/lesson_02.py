"""Lesson 02: two-tower retrieval with TFRS, the classic model and its side-feature variant,
against the popularity list, every model measured in the same run.

Protocol (``recsys_course.evaluation``): the TFRS tutorials' seeded 80/20 split of the
rating rows; validation is a seeded 10 % of the training rows. Every tower learns from the
*fit* split (train minus validation) with the course's retrieval recipe
(``models.RETRIEVAL_RECIPE``: batch size, Adagrad rate, at most ``max_epochs`` with the
epoch chosen on validation factorized top-100, patience), built from the lesson's own code
(``QueryTower``, ``CandidateTower``, ``RetrievalModel``). Models:

* ``popularity``: the same most-rated movies for everybody;
* ``tutorial_reproduction``: the TFRS basic retrieval tutorial exactly (batches of 8,192,
  Adagrad 0.1, 3 epochs on the whole training split);
* ``classic``: id-only towers with the recipe;
* ``side``: time, demographics, title and genre features added (one change);
* ``side_1000_time_buckets`` (not in quick mode): the same with 1,000 time buckets instead
  of 20 (lesson 02, section 3.2: fine buckets leak the session on a random split).

Metrics per model (test split, users with test ratings, queried once at their latest
training rating; full catalogue, seen = every training rating masked): ``recall@10_masked``,
``recall@50_masked``, ``ndcg@10``, ``coverage@10``, and ``test_top_100`` (share of test
pairs whose movie is in the user's unmasked top 100). Lesson 03's benchmark measures the
baselines (item-kNN, EASE), the logQ correction, the negatives ablation, the history tower
and the other protocols; between them they hold every key of the former single benchmark.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd

from recsys_course import evaluation as ev, models
from recsys_course.data import MovieLens
from recsys_course.env import seed_everything
from recsys_course.models import features as mf
from recsys_course.tooling.benchmarks import quick

HOLDOUT = 5  #: ratings per user held out by the per-user holdout protocol (test, then validation)


class Progress(dict):
    """A comparison dict; each finished model is also printed to stderr, so a long run that
    is stopped still leaves its numbers."""

    def __init__(self, protocol: str):
        super().__init__()
        self.protocol = protocol

    def __setitem__(self, name, row):
        super().__setitem__(name, row)
        print(json.dumps({self.protocol: {name: row}}), file=sys.stderr, flush=True)


def splits(ratings: pd.DataFrame, protocol: str, seed: int):
    """(train, test, fit, validation) of a protocol: ``random`` (seeded 80/20, validation a
    seeded 10 % of train), ``temporal`` (per-user holdout: ``leave_last_k`` twice) or
    ``global_time`` (a global time split at the 80 % timestamp quantile, validation the same
    rule inside the training period)."""
    if protocol == "random":
        train, test = ev.random_split(ratings, 0.2, seed=seed)
        fit, validation = ev.random_split(train, 0.1, seed=seed)
    elif protocol == "temporal":
        train, test = ev.leave_last_k(ratings, HOLDOUT)
        fit, validation = ev.leave_last_k(train, HOLDOUT)
    elif protocol == "global_time":
        cut = ev.global_time_split(ratings, quantile=0.8)
        inner = ev.global_time_split(cut.train, quantile=0.8)
        train, test, fit, validation = cut.train, cut.test, inner.train, inner.test
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    return train, test, fit, validation


class Evaluation:
    """The test and validation matrices of one protocol over ``movie_ids``, and the two
    ways every benchmark row is measured (:meth:`measure`, :meth:`validation_recall`)."""

    def __init__(self, train, test, fit, validation, movie_ids):
        self.movie_ids = movie_ids
        self.test_users = sorted(set(test["user_id"]) & set(fit["user_id"]))
        self.test_seen = ev.interaction_matrix(train, self.test_users, movie_ids)
        self.test_relevant = ev.interaction_matrix(test, self.test_users, movie_ids)
        self.val_users = sorted(set(validation["user_id"]) & set(fit["user_id"]))
        self.val_relevant = ev.interaction_matrix(validation, self.val_users, movie_ids)
        self.fit_users = sorted(fit["user_id"].unique())
        self.fit_matrix = ev.interaction_matrix(fit, self.fit_users, movie_ids)
        row_of = pd.Index(self.fit_users)
        self.test_history = self.fit_matrix[row_of.get_indexer(self.test_users)].astype(np.float64)
        self.val_history = self.fit_matrix[row_of.get_indexer(self.val_users)].astype(np.float64)

    def measure(self, scores: np.ndarray) -> dict:
        report = ev.evaluate(scores, self.test_relevant, seen=self.test_seen, ks=(10, 50))
        row = {key: report[key] for key in ("recall@10_masked", "recall@50_masked", "ndcg@10", "coverage@10")}
        row["test_top_100"] = ev.pair_recall_at_k(ev.top_k(scores, 100), self.test_relevant, 100)
        return ev.rounded(row)

    def validation_recall(self, scores: np.ndarray) -> float:
        ranked = ev.top_k(scores, 10, exclude=self.val_history > 0)
        return round(ev.recall_at_k(ranked, self.val_relevant, 10), 4)

    def popularity(self) -> dict:
        popular = self.fit_matrix.sum(axis=0).astype(np.float64)
        return {**self.measure(np.tile(popular, (len(self.test_users), 1))),
                "validation_recall@10_masked": self.validation_recall(np.tile(popular, (len(self.val_users), 1)))}


def two_tower_retrieval(data: MovieLens, lesson) -> dict:
    tf, tfrs = lesson.tf, lesson.tfrs
    ks, dim, seed, recipe = lesson.TOP_KS, lesson.EMBEDDING_DIM, lesson.SEED, lesson.RECIPE
    ratings, movies = data.ratings, data.movies
    train, test, fit, validation = splits(ratings, "random", seed)
    demographics = data.has_demographics
    width = mf.genre_width(movies)
    movie_ids = movies["movie_id"].astype(str).tolist()
    titles = movies["movie_title"].to_numpy(dtype=object)
    genres = sorted({g for gs in movies["movie_genres"] for g in gs})
    candidates = tf.data.Dataset.from_tensor_slices(mf.movie_features(movies, width))
    evaluation = Evaluation(train, test, fit, validation, movie_ids)

    def build(frame: pd.DataFrame, side: bool, time_buckets: int = 20):
        seed_everything(seed)  # every model starts from the same seeded state
        users = sorted(frame["user_id"].unique())
        if not side:
            return lesson.QueryTower(users, dim), lesson.CandidateTower(movie_ids, dim)
        query = lesson.QueryTower(
            users, dim, timestamps=frame["timestamp"].to_numpy(dtype="float64"), time_buckets=time_buckets,
            occupations=sorted(frame["user_occupation_text"].unique()) if demographics else None,
            ages=frame["raw_user_age"].to_numpy() if demographics else None,
        )
        return query, lesson.CandidateTower(movie_ids, dim, titles=titles, genres=genres)

    def compile_model(query, candidate, learning_rate: float):
        metric = tfrs.metrics.FactorizedTopK(candidates=candidates.batch(4096).map(candidate), ks=ks)
        model = lesson.RetrievalModel(query, candidate, tfrs.tasks.Retrieval(metrics=metric))
        model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
        return model

    def scores(model, frame: pd.DataFrame, users: list[str]) -> np.ndarray:
        vectors = np.concatenate([model.candidate_model(b).numpy() for b in candidates.batch(1024)])
        return model.query_model(mf.user_features(frame, users, demographics=demographics)).numpy() @ vectors.T

    comparison = Progress("random")
    comparison["popularity"] = evaluation.popularity()
    if not quick():
        started = time.perf_counter()
        model = compile_model(*build(train, side=False), 0.1)
        model.fit(mf.to_dataset(mf.rating_features(train, width), 8192, shuffle_seed=seed), epochs=3, verbose=0)
        comparison["tutorial_reproduction"] = {**evaluation.measure(scores(model, train, evaluation.test_users)),
                                               "epochs": 3, "wall_seconds": round(time.perf_counter() - started, 1)}
    fit_features = mf.rating_features(fit, width, demographics=demographics)
    val_features = mf.rating_features(validation, width, demographics=demographics)
    towers = {"classic": dict(side=False), "side": dict(side=True)}
    if not quick():
        towers["side_1000_time_buckets"] = dict(side=True, time_buckets=1000)
    for name, options in towers.items():
        started = time.perf_counter()
        model = compile_model(*build(fit, **options), recipe["learning_rate"])
        run = models.train_with_curves(
            model, mf.to_dataset(fit_features, recipe["batch_size"], shuffle_seed=seed),
            {"validation": val_features}, epochs=recipe["max_epochs"], ks=ks, patience=recipe["patience"],
        )
        comparison[name] = {
            **evaluation.measure(scores(model, train, evaluation.test_users)),
            "validation_recall@10_masked": evaluation.validation_recall(scores(model, fit, evaluation.val_users)),
            "best_epoch_on_validation": run.best_epoch, "epochs_run": int(run.curves["epoch"].max()),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    trained = [n for n in comparison if n not in ("popularity", "tutorial_reproduction")]
    best = max(trained, key=lambda n: comparison[n]["validation_recall@10_masked"])
    return {
        "protocols": {"random": "seeded 80/20 split of rating rows (seed 42); validation = 10 % of train"},
        "demographics": data.has_demographics,
        "recipe": dict(recipe),
        "comparison": dict(comparison),
        "best_two_tower": best,
        "random": {"rows": {"fit": len(fit), "validation": len(validation), "test": len(test),
                            "test_users": len(evaluation.test_users)},
                   "best_two_tower": best,
                   "ranking_by_recall@10_masked": sorted(comparison, key=lambda n: -comparison[n]["recall@10_masked"])},
    }
