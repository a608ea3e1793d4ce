"""The course's id-based ranking model: (user id, movie id) -> predicted rating.

Both ids go through an :func:`~recsys_course.models.towers.id_tower` (row 0 is the shared
out-of-vocabulary row); the two vectors are concatenated and passed through a multilayer
perceptron whose output bias starts at the mean training rating. It is the second stage
that lesson 08 serves, and lesson 04's baseline scorer (the architecture of TFRS's basic
ranking tutorial). Lesson 04 teaches the richer ranker (side features, a cross layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1

from recsys_course.models.towers import check_vocabulary, id_tower


class Ranker(tf.keras.Model):
    """``{"user_id": string [B], "movie_id": string [B], ...}`` -> ``float32 [B, 1]`` ratings.

    Keys other than ``user_id`` and ``movie_id`` are ignored (a label, side features), so
    the model can score any feature dictionary of the course. ``hidden_units`` are the
    ReLU layers' widths, in order; the output ``Dense(1)``'s bias starts at
    ``mean_rating``, so training begins from the mean instead of climbing from 0 stars.
    """

    def __init__(self, user_vocabulary, movie_vocabulary, *, embedding_dim: int = 16,
                 hidden_units: int | Sequence[int] = (32,), mean_rating: float = 0.0) -> None:
        super().__init__()
        widths = [hidden_units] if isinstance(hidden_units, int) else list(hidden_units)
        self._vocabularies = (check_vocabulary(user_vocabulary, "Ranker users"),
                              check_vocabulary(movie_vocabulary, "Ranker movies"))
        self.embedding_dim = int(embedding_dim)
        self.user_embedding: tf.keras.Model | None = None
        self.movie_embedding: tf.keras.Model | None = None
        self.head = tf.keras.Sequential(
            [tf.keras.layers.Dense(width, activation="relu") for width in widths]
            + [tf.keras.layers.Dense(1, bias_initializer=tf.keras.initializers.Constant(mean_rating))]
        )

    def build(self, input_shape) -> None:
        # The towers (and so every weight) are created at the first call, not in __init__:
        # a caller that seeds between building and fitting (lesson 04) then gets weights
        # drawn from that seed, in the order user table, movie table, head.
        users, movies = self._vocabularies
        self.user_embedding = id_tower(users, self.embedding_dim, "user_embedding")
        self.movie_embedding = id_tower(movies, self.embedding_dim, "movie_embedding")
        super().build(input_shape)

    def call(self, features: dict, training: bool = False) -> tf.Tensor:
        pair = tf.concat(
            [self.user_embedding(features["user_id"]), self.movie_embedding(features["movie_id"])], axis=1
        )
        return self.head(pair, training=training)


def build_ranker(
    user_vocabulary,
    movie_vocabulary,
    *,
    embedding_dim: int = 16,
    hidden_units: int | Sequence[int] = 32,
    mean_rating: float = 0.0,
) -> Ranker:
    """An untrained, uncompiled :class:`Ranker` (see there for inputs and outputs)."""
    return Ranker(user_vocabulary, movie_vocabulary, embedding_dim=embedding_dim,
                  hidden_units=hidden_units, mean_rating=mean_rating)


def train_ranker(
    train: pd.DataFrame,
    *,
    embedding_dim: int = 16,
    hidden_units: int | Sequence[int] = 32,
    epochs: int = 3,
    batch_size: int = 1024,
    learning_rate: float = 0.01,
    seed: int = 42,
) -> tuple[Ranker, list[float]]:
    """Fit :func:`build_ranker` on ``train`` (columns ``user_id``, ``movie_id``,
    ``user_rating``) with Adam and mean squared error, reshuffling every epoch with ``seed``.

    Returns ``(model, losses)``: the trained model and each epoch's mean squared error per
    training rating (Keras averages the compiled loss over the epoch's examples).
    Seeded with ``seed`` (initialisation and shuffling).
    """
    missing = [c for c in ("user_id", "movie_id", "user_rating") if c not in train.columns]
    if missing:
        raise ValueError(f"train_ranker: train lacks the column(s) {missing}")
    if train.empty:
        raise ValueError("train_ranker needs at least one rating")
    tf.keras.utils.set_random_seed(seed)
    users = np.unique(train["user_id"].astype(str))
    movies = np.unique(train["movie_id"].astype(str))
    ratings = train["user_rating"].to_numpy(dtype=np.float32)
    model = build_ranker(users, movies, embedding_dim=embedding_dim, hidden_units=hidden_units,
                         mean_rating=float(ratings.mean()))
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss="mse")
    features = {
        "user_id": train["user_id"].astype(str).to_numpy(),
        "movie_id": train["movie_id"].astype(str).to_numpy(),
    }
    data = (
        tf.data.Dataset.from_tensor_slices((features, ratings))
        .shuffle(len(train), seed=seed)
        .batch(batch_size)
    )
    history = model.fit(data, epochs=epochs, verbose=0)
    return model, [float(v) for v in history.history["loss"]]
