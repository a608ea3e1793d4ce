"""A small ranking model to serve as the second stage of the recommender in lesson 05.

Lesson 03 teaches ranking in depth; serving only needs *a* trained model that maps a
(user id, movie id) pair to a predicted rating. This one embeds both ids (``StringLookup``
then ``Embedding``, index 0 is the shared out-of-vocabulary row), concatenates the vectors
and passes them through one hidden layer; it is fitted with mean squared error.
"""

from __future__ import annotations

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pandas as pd
import tensorflow as tf


def build_ranker(
    user_vocabulary,
    movie_vocabulary,
    *,
    embedding_dim: int = 16,
    hidden_units: int = 32,
    mean_rating: float = 0.0,
) -> tf.keras.Model:
    """``{"user_id": string [B], "movie_id": string [B]}`` -> ``float32 [B, 1]`` ratings.

    The output bias starts at ``mean_rating``, so training begins from the global mean
    instead of spending its first steps climbing from 0 to about 3.5 stars.
    """
    user_id = tf.keras.Input(shape=(), dtype=tf.string, name="user_id")
    movie_id = tf.keras.Input(shape=(), dtype=tf.string, name="movie_id")
    vectors = []
    for ids, vocabulary in ((user_id, user_vocabulary), (movie_id, movie_vocabulary)):
        vocabulary = [str(v) for v in vocabulary]
        lookup = tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None)
        vectors.append(tf.keras.layers.Embedding(len(vocabulary) + 1, embedding_dim)(lookup(ids)))
    hidden = tf.keras.layers.Dense(hidden_units, activation="relu")(
        tf.keras.layers.Concatenate()(vectors)
    )
    rating = tf.keras.layers.Dense(
        1, bias_initializer=tf.keras.initializers.Constant(mean_rating)
    )(hidden)
    return tf.keras.Model({"user_id": user_id, "movie_id": movie_id}, rating, name="ranker")


def train_ranker(
    train: pd.DataFrame,
    *,
    embedding_dim: int = 16,
    hidden_units: int = 32,
    epochs: int = 3,
    batch_size: int = 1024,
    learning_rate: float = 0.01,
    seed: int = 42,
) -> tuple[tf.keras.Model, list[float]]:
    """Fit :func:`build_ranker` on ``train`` (columns ``user_id``, ``movie_id``,
    ``user_rating``) with Adam and mean squared error.

    Returns ``(model, losses)``: the trained model and the training loss of each epoch.
    Seeded with ``seed`` (initialisation and shuffling).
    """
    if train.empty:
        raise ValueError("train_ranker needs at least one rating")
    tf.keras.utils.set_random_seed(seed)
    users = np.unique(train["user_id"].astype(str))
    movies = np.unique(train["movie_id"].astype(str))
    ratings = train["user_rating"].to_numpy(dtype=np.float32)
    model = build_ranker(
        users, movies, embedding_dim=embedding_dim, hidden_units=hidden_units,
        mean_rating=float(ratings.mean()),
    )
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
