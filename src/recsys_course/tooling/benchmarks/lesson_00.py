"""Lesson 00: the popularity baseline, measured on the temporal and the random split."""

from __future__ import annotations

import numpy as np

from recsys_course.data import MovieLens, split_ratings


def popularity_baseline(data: MovieLens, lesson) -> dict:
    ratings = data.ratings
    train, test = lesson.temporal_split(ratings, test_fraction=0.2)
    users = sorted(test["user_id"].unique())
    rng = np.random.default_rng(42)
    catalogue = ratings["movie_id"].unique()
    metrics: dict = {"split": "temporal 80/20", "test_users": len(users)}
    for k in (10, 50):
        popular = lesson.recommend_popular(train, users, k=k)
        random = {u: list(rng.choice(catalogue, size=k, replace=False)) for u in users}
        metrics[f"popularity_hit_rate@{k}"] = round(lesson.hit_rate_at_k(popular, test, k=k), 4)
        metrics[f"random_hit_rate@{k}"] = round(lesson.hit_rate_at_k(random, test, k=k), 4)
    leaky_train, leaky_test = split_ratings(ratings, 0.2, seed=42)
    leaky_users = sorted(leaky_test["user_id"].unique())
    leaky = lesson.recommend_popular(leaky_train, leaky_users, k=10)
    metrics["popularity_hit_rate@10_random_split"] = round(lesson.hit_rate_at_k(leaky, leaky_test, k=10), 4)
    metrics["sparsity"] = round(lesson.sparsity(ratings), 4)
    return metrics
