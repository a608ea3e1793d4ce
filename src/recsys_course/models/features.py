"""Feature dictionaries for the course's Keras models, built from pandas rating frames.

A Keras tower reads a dictionary of NumPy arrays (one entry per feature, TFDS's MovieLens
feature names); this module is the one place that builds those dictionaries:

* ``rating_features`` (query and candidate features of every rating), ``movie_features``
  (the catalogue), ``user_features`` (one query per user), ``pair_features`` (ids only);
* ``candidate_probability``: each movie's share of the training rows, the ``q`` of the
  popularity (logQ) correction, stored under the one feature name :data:`PROBABILITY`;
* ``to_dataset``: cached, optionally shuffled ``tf.data`` batches of a dictionary.

Every function is deterministic for a given input order and seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1

#: Padding value of the fixed-width genre matrix; StringLookup(mask_token="") ignores it.
GENRE_PAD = ""
#: Name of the feature holding each training row's candidate popularity (the logQ
#: correction's ``q``); every model of the course reads it under this name.
PROBABILITY = "candidate_probability"


def quantile_boundaries(values: np.ndarray, n_buckets: int) -> list[float]:
    """Boundaries that cut ``values`` into ``n_buckets`` buckets of (about) equal counts.

    Returns the ``n_buckets - 1`` inner quantiles as a sorted list of floats, duplicates
    removed (so fewer when ``values`` has large ties), for
    ``tf.keras.layers.Discretization(bin_boundaries=...)``. Exact, unlike
    ``Discretization.adapt``, which summarises the data approximately.
    """
    cuts = np.quantile(np.asarray(values, dtype="float64"), np.linspace(0.0, 1.0, n_buckets + 1)[1:-1])
    return [float(c) for c in np.unique(cuts)]


def genre_width(movies: pd.DataFrame) -> int:
    """The largest number of genres of any movie in ``movies`` (at least 1)."""
    return max(1, int(movies["movie_genres"].map(len).max()))


def pad_genres(genres: pd.Series, width: int) -> np.ndarray:
    """Lists of genre names -> ``str`` array ``[n, width]``, padded with ``GENRE_PAD``.

    Lists longer than ``width`` are cut (the lesson sizes ``width`` from the catalogue, so
    that only happens for movies outside it).
    """
    rows = [(list(g) + [GENRE_PAD] * width)[:width] for g in genres]
    return np.array(rows, dtype=object).reshape(len(rows), width)


def movie_features(movies: pd.DataFrame, width: int) -> dict[str, np.ndarray]:
    """Candidate features of every row of ``movies``.

    Returns ``{"movie_id": str[n], "movie_title": str[n], "movie_genres": str[n, width]}``.
    """
    return {
        "movie_id": movies["movie_id"].astype(str).to_numpy(dtype=object),
        "movie_title": movies["movie_title"].astype(str).to_numpy(dtype=object),
        "movie_genres": pad_genres(movies["movie_genres"], width),
    }


def demographic_features(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Age (``float32``), occupation (``str``) and gender (``float32``, 1.0 = male, TFDS's
    ``user_gender`` True) of every row of ``frame``."""
    return {
        "raw_user_age": frame["raw_user_age"].to_numpy(dtype="float32"),
        "user_occupation_text": frame["user_occupation_text"].astype(str).to_numpy(dtype=object),
        "user_gender": frame["user_gender"].astype(bool).to_numpy(dtype="float32"),
    }


def candidate_probability(train: pd.DataFrame) -> pd.Series:
    """Share of the training rows that hold each movie, indexed by ``movie_id``.

    With in-batch negatives this is (up to the batch size, a constant) the probability that
    a movie shows up as a negative, the ``q`` of the logQ correction. Sums to 1.
    """
    return train["movie_id"].value_counts(normalize=True).astype("float64")


def probability_of(movie_ids: pd.Series, probability: pd.Series) -> np.ndarray:
    """``float32 [n]``: each of ``movie_ids``' share in ``probability`` (from
    :func:`candidate_probability`); movies absent from it get the smallest share seen.
    Ids are compared as strings, so int and str ids mix safely."""
    share = movie_ids.astype(str).map(probability.rename(index=str))
    return share.fillna(probability.min()).to_numpy(dtype="float32")


def pair_features(ratings: pd.DataFrame, *, probability: pd.Series | None = None) -> dict[str, np.ndarray]:
    """The (user, movie) ids of every rating row, in row order, for id-only towers.

    Returns ``{"user_id": str[n], "movie_id": str[n]}`` and, when ``probability`` (from
    :func:`candidate_probability`) is given, :data:`PROBABILITY` (``float32 [n]``, see
    :func:`probability_of`).
    """
    features = {
        "user_id": ratings["user_id"].astype(str).to_numpy(dtype=object),
        "movie_id": ratings["movie_id"].astype(str).to_numpy(dtype=object),
    }
    if probability is not None:
        features[PROBABILITY] = probability_of(ratings["movie_id"], probability)
    return features


def rating_features(
    ratings: pd.DataFrame,
    width: int,
    *,
    demographics: bool = False,
    probability: pd.Series | None = None,
) -> dict[str, np.ndarray]:
    """Query and candidate features of every rating row, in row order.

    Args:
        ratings: rating rows with the TFDS columns (``user_id``, ``movie_id``, ``movie_title``,
            ``movie_genres``, ``timestamp`` and, with ``demographics``, the user columns).
        width: genre matrix width, see :func:`genre_width`.
        demographics: also return ``raw_user_age``, ``user_occupation_text``, ``user_gender``.
        probability: if given, from :func:`candidate_probability`; adds
            ``candidate_probability`` (``float32``), each row's movie's share of training
            rows (movies absent from training get the smallest share seen).

    Returns:
        ``{"user_id": str[n], "timestamp": float64[n], "movie_id": str[n], "movie_title":
        str[n], "movie_genres": str[n, width], ...}``.
    """
    features = {
        "user_id": ratings["user_id"].astype(str).to_numpy(dtype=object),
        "timestamp": ratings["timestamp"].to_numpy(dtype="float64"),
        **movie_features(ratings, width),
    }
    if demographics:
        features.update(demographic_features(ratings))
    if probability is not None:
        features[PROBABILITY] = probability_of(ratings["movie_id"], probability)
    return features


def user_features(
    train: pd.DataFrame, users: list[str], *, demographics: bool = False
) -> dict[str, np.ndarray]:
    """One query per user of ``users`` (in that order), as the model would be asked at
    serving time: the user id, the time of the user's latest training rating and, with
    ``demographics``, the user's age, occupation and gender. Every user must appear in
    ``train``."""
    latest = train.sort_values("timestamp", kind="stable").groupby("user_id").tail(1)
    latest = latest.set_index("user_id").loc[users].reset_index()
    features = {
        "user_id": latest["user_id"].astype(str).to_numpy(dtype=object),
        "timestamp": latest["timestamp"].to_numpy(dtype="float64"),
    }
    if demographics:
        features.update(demographic_features(latest))
    return features


def take(features: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The same feature dictionary restricted to ``rows`` (indices or a boolean mask)."""
    return {name: values[rows] for name, values in features.items()}


def to_dataset(
    features: dict[str, np.ndarray], batch_size: int, *, shuffle_seed: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A cached ``tf.data.Dataset`` of feature batches.

    With ``shuffle_seed`` the rows are shuffled once with that seed before batching, and
    ``cache()`` then replays the same batches every epoch (the TFRS tutorials do the same).
    """
    n = len(next(iter(features.values())))
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=False)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).cache()
