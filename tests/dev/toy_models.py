"""Test fixtures: tiny deterministic models for the serving tests and
``scripts/bench_serving.py`` (a practice server to load without training anything): a few
users and movies, weights drawn from a seeded generator.

``export_toy_models(models_dir)`` writes version 1 of ``retrieval``, ``query_tower`` and
``ranker`` in TF Serving's layout, with the same signatures as the lesson's models.
"""

from __future__ import annotations

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

from pathlib import Path

import numpy as np
import tensorflow as tf

TOY_USERS = ("u1", "u2", "u3", "u4")
TOY_MOVIES = tuple(f"m{i}" for i in range(1, 9))
TOY_DIM = 4


def toy_user_model(users=TOY_USERS, dim: int = TOY_DIM, seed: int = 0) -> tf.keras.Model:
    """``tf.string [B]`` -> ``float32 [B, dim]``: a ``StringLookup`` and a seeded table (row 0
    for unknown users)."""
    ids = tf.keras.Input(shape=(), dtype=tf.string, name="user_id")
    lookup = tf.keras.layers.StringLookup(vocabulary=list(users), mask_token=None)
    table = tf.keras.layers.Embedding(len(users) + 1, dim)
    model = tf.keras.Model(ids, table(lookup(ids)), name="toy_user_model")
    table.set_weights([np.random.default_rng(seed).normal(size=(len(users) + 1, dim)).astype(np.float32)])
    return model


def toy_catalogue(movies=TOY_MOVIES, dim: int = TOY_DIM, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(movie_ids [n], float32 [n, dim] vectors)``."""
    vectors = np.random.default_rng(seed).normal(size=(len(movies), dim)).astype(np.float32)
    return np.asarray(movies), vectors


def toy_ranker(users=TOY_USERS, movies=TOY_MOVIES, seed: int = 2) -> tf.keras.Model:
    """An untrained but seeded :func:`recsys_course.models.ranking.build_ranker`."""
    from recsys_course.models.ranking import build_ranker

    tf.keras.utils.set_random_seed(seed)
    return build_ranker(users, movies, embedding_dim=4, hidden_units=8, mean_rating=3.5)


class Scaler(tf.Module):
    """``x float32 [B]`` -> ``{"y": factor * x}``: a model whose answers reveal its version."""

    def __init__(self, factor: float) -> None:
        super().__init__(name="scaler")
        self.factor = tf.Variable(float(factor))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": x * self.factor}


def toy_servables(k: int = 3) -> dict:
    """The three servables of the lesson, built from the toy models."""
    from recsys_course.serving.servables import QueryTowerServable, RankingServable, RetrievalServable

    user_model = toy_user_model()
    movie_ids, vectors = toy_catalogue()
    return {
        "retrieval": RetrievalServable(user_model, movie_ids, vectors, k=k),
        "query_tower": QueryTowerServable(user_model),
        "ranker": RankingServable(toy_ranker()),
    }


def export_toy_models(models_dir: str | Path, version: int = 1, k: int = 3) -> dict[str, Path]:
    """Export :func:`toy_servables` as ``models_dir/<name>/<version>``; return the paths."""
    from recsys_course.serving.export import save_version

    paths = {}
    for name, servable in toy_servables(k).items():
        paths[name] = save_version(
            servable, Path(models_dir) / name, version, signatures={"serving_default": servable.serve}
        )
    return paths
