"""Lesson 02: two-tower retrieval, every model of the lesson measured in the same run.

* ``popularity``: the same K most-rated movies for every test pair (the non-personal floor);
* ``tutorial_reproduction``: the TFRS basic retrieval recipe exactly (id-only towers of 32,
  Adagrad 0.1, batches of 8,192, 3 epochs on the whole 80 % training split, seed-42 split);
* ``classic`` / ``id_corrected`` / ``side_corrected``: the lesson's protocol (train on 90 %
  of the training split, keep the epoch with the best validation top-100): the classic
  id-only model, then the popularity (logQ) correction, then side features on top;
* ``side_corrected_1000_time_buckets``: the same with 1,000 time buckets instead of 20, to
  measure how much a random split rewards session-sized buckets (see the lesson, 3.2).

Factorized top-K accuracies are on the test split; recall@k is per user with the movies
rated in training masked (``masked``) or not (``unmasked``), users queried at their latest
training timestamp.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from recsys_course.bench import register
from recsys_course.data import MovieLens, split_ratings
from recsys_course.env import seed_everything


def _test_metrics(model, rt, features: dict, ks) -> dict:
    result = model.evaluate(rt.to_dataset(features, 4096), return_dict=True, verbose=0)
    return {f"test_top_{k}": round(float(result[rt.TOP_K_KEY.format(k=k)]), 4) for k in ks}


@register("02")
def two_tower_retrieval(data: MovieLens, lesson) -> dict:
    tf, tfrs, rt = lesson.tf, lesson.tfrs, lesson.rt
    ks, dim, seed = lesson.TOP_KS, lesson.EMBEDDING_DIM, lesson.SEED
    ratings, movies = data.ratings, data.movies
    train, test = split_ratings(ratings, 0.2, seed=seed)
    fit, validation = split_ratings(train, 0.1, seed=seed)
    demographics = data.has_demographics
    width = rt.genre_width(movies)
    movie_ids = movies["movie_id"].astype(str).tolist()
    titles = movies["movie_title"].to_numpy(dtype=object)
    genres = sorted({g for gs in movies["movie_genres"] for g in gs})
    candidates = tf.data.Dataset.from_tensor_slices(rt.movie_features(movies, width))

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

    def compile_model(query, candidate, correction: bool, learning_rate: float):
        metric = tfrs.metrics.FactorizedTopK(candidates=candidates.batch(4096).map(candidate), ks=ks)
        model = lesson.RetrievalModel(query, candidate, tfrs.tasks.Retrieval(metrics=metric), correction)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
        return model

    users = sorted(set(test["user_id"]) & set(train["user_id"]))
    seen = rt.interaction_matrix(train, users, movie_ids)
    relevant = rt.interaction_matrix(test, users, movie_ids)

    def recall(model) -> dict:
        vectors = np.concatenate([model.candidate_model(b).numpy() for b in candidates.batch(1024)])
        queries = rt.user_features(train, users, demographics=demographics)
        scores = model.query_model(queries).numpy() @ vectors.T
        out = {}
        for k in (10, 50):
            out[f"recall@{k}_masked"] = round(lesson.masked_recall_at_k(scores, seen, relevant, k), 4)
            out[f"recall@{k}_unmasked"] = round(
                lesson.masked_recall_at_k(scores, np.zeros_like(seen), relevant, k), 4
            )
        return out

    metrics: dict = {
        "split": "random 80/20 (seed 42); validation = 10 % of train (seed 42)",
        "rows": {"fit": len(fit), "validation": len(validation), "test": len(test)},
        "demographics": demographics,
    }
    counts = train["movie_id"].value_counts()
    metrics["popularity"] = {
        f"test_top_{k}": round(float(test["movie_id"].isin(set(counts.index[:k])).mean()), 4) for k in ks
    }

    # The TFRS basic retrieval tutorial, exactly: whole training split, 3 epochs, no validation.
    started = time.perf_counter()
    train_features = rt.rating_features(train, width)
    model = compile_model(*build(train, side=False), correction=False, learning_rate=0.1)
    model.fit(rt.to_dataset(train_features, 8192, shuffle_seed=seed), epochs=3, verbose=0)
    test_all = rt.rating_features(test, width, demographics=demographics)
    metrics["tutorial_reproduction"] = {
        "epochs": 3, **_test_metrics(model, rt, test_all, ks), **recall(model),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }

    # The lesson's protocol: fit on 90 % of train, keep the best validation epoch.
    probability = rt.candidate_probability(fit)

    def features(frame):
        return rt.rating_features(frame, width, demographics=demographics, probability=probability)

    fit_features, val_features, test_features = features(fit), features(validation), features(test)
    settings = {
        "classic": dict(side=False, correction=False, batch=8192, lr=0.1, epochs=6, patience=None),
        "id_corrected": dict(side=False, correction=True, batch=1024, lr=0.05, epochs=10, patience=2),
        "side_corrected": dict(side=True, correction=True, batch=1024, lr=0.05, epochs=10, patience=2),
        "side_corrected_1000_time_buckets": dict(
            side=True, correction=True, batch=1024, lr=0.05, epochs=10, patience=2, time_buckets=1000
        ),
    }
    for name, s in settings.items():
        started = time.perf_counter()
        query, candidate = build(fit, s["side"], s.get("time_buckets", 20))
        model = compile_model(query, candidate, s["correction"], s["lr"])
        run = rt.train_with_curves(
            model, rt.to_dataset(fit_features, s["batch"], shuffle_seed=seed),
            {"validation": val_features}, epochs=s["epochs"], ks=ks, patience=s["patience"],
        )
        metrics[name] = {
            "epochs_run": int(run.curves["epoch"].max()),
            "best_epoch_on_validation": run.best_epoch,
            "validation_top_100": round(float(run.at("validation")["top_100"]), 4),
            **_test_metrics(model, rt, test_features, ks),
            **recall(model),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    return metrics
