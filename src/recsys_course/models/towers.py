"""Towers: Keras models that turn raw features into vectors.

* :func:`id_tower`, the course's one id tower: ``StringLookup`` (row 0 is the shared
  out-of-vocabulary row) then ``Embedding``, ``tf.string [batch]`` -> ``float32 [batch, dim]``;
* :func:`title_tower`, words of a title -> the mean of their vectors;
* :class:`QueryTower` and :class:`CandidateTower`, lesson 02's feature towers: the id
  tower, plus optional side features (time and demographics for users, title and genres
  for movies) projected to one vector.

Lesson 02 has learners write the id and title towers (exercises 2.1 and 2.2). The feature
towers take the builders as arguments (``id_tower_builder``, ``title_tower_builder``), so
the lesson can assemble them from the learner's functions while everything else uses the
package's own; ``tests/dev/test_models_match_lessons.py`` proves the two give the same vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1

from recsys_course.models.features import quantile_boundaries

#: ``(vocabulary, embedding_dim) -> tf.string [batch] -> float32 [batch, embedding_dim]``
IdTowerBuilder = Callable[[Sequence[str], int], tf.keras.Model]
#: ``(titles, embedding_dim) -> tf.string [batch] -> float32 [batch, embedding_dim]``
TitleTowerBuilder = Callable[[np.ndarray, int], tf.keras.Model]


def check_vocabulary(vocabulary: Sequence, what: str) -> list[str]:
    """``vocabulary`` as a list of ``str``; ValueError (naming ``what``) when it is empty or
    lists an id twice, which ``StringLookup`` would reject less clearly."""
    words = [str(v) for v in vocabulary]
    if not words:
        raise ValueError(f"{what}: the vocabulary is empty; pass the known ids (e.g. the training ids)")
    if len(set(words)) != len(words):
        raise ValueError(f"{what}: the vocabulary lists some ids twice; pass each id once "
                         "(np.unique(ids) or sorted(set(ids)))")
    return words


def id_tower(vocabulary: Sequence, embedding_dim: int, name: str | None = None) -> tf.keras.Model:
    """``tf.string [batch]`` -> ``float32 [batch, embedding_dim]``: lookup, then embedding.

    ``vocabulary`` lists the known ids once each (cast to ``str``). The table has
    ``len(vocabulary) + 1`` rows: row 0 serves every id outside ``vocabulary``, row ``i + 1``
    is ``vocabulary[i]``. Its only weight is that table, laid out as in lesson 02's
    ``build_id_tower``, so weights copy across between the two. ``name`` names the model
    (the input is then named ``name`` with ``_model`` replaced by ``_id``).
    """
    words = check_vocabulary(vocabulary, f"id_tower({name or ''})")
    ids = tf.keras.Input(shape=(), dtype=tf.string, name=name.replace("_model", "_id") if name else None)
    lookup = tf.keras.layers.StringLookup(vocabulary=words, mask_token=None)
    table = tf.keras.layers.Embedding(len(words) + 1, embedding_dim)
    return tf.keras.Model(ids, table(lookup(ids)), name=name)


def title_tower(titles: np.ndarray, embedding_dim: int, max_tokens: int = 10_000) -> tf.keras.Model:
    """``tf.string [batch]`` titles -> ``float32 [batch, embedding_dim]``: the mean of the
    vectors of each title's words (``TextVectorization`` adapted on ``titles``, default
    standardisation; padding is masked out of the mean; unknown words share one vector)."""
    vectorizer = tf.keras.layers.TextVectorization(max_tokens=max_tokens)
    vectorizer.adapt(np.asarray(titles, dtype=object))
    return tf.keras.Sequential(
        [
            vectorizer,
            tf.keras.layers.Embedding(vectorizer.vocabulary_size(), embedding_dim, mask_zero=True),
            tf.keras.layers.GlobalAveragePooling1D(),
        ]
    )


class QueryTower(tf.keras.Model):
    """Query features -> query vector.

    Reads ``features["user_id"]`` (``tf.string [batch]``); with ``timestamps`` also
    ``features["timestamp"]`` (``float64 [batch]``), and with ``occupations`` also
    ``raw_user_age`` (``float32``), ``user_occupation_text`` (``tf.string``) and
    ``user_gender`` (``float32`` 0/1). Returns ``float32 [batch, embedding_dim]``. With no
    side feature it is just the id tower; otherwise the parts are concatenated and projected
    by a ``Dense(embedding_dim)``.

    Args:
        users: the user vocabulary.
        timestamps: training timestamps, to adapt the time normalisation and cut
            ``time_buckets`` equal-count buckets.
        occupations, ages: the occupation vocabulary and training ages (demographics).
        id_tower_builder: builds the id towers (default :func:`id_tower`).
    """

    def __init__(self, users: Sequence[str], embedding_dim: int, *, timestamps=None,
                 time_buckets: int = 20, occupations=None, ages=None,
                 id_tower_builder: IdTowerBuilder | None = None):
        super().__init__()
        build = id_tower_builder or id_tower
        self.user_embedding = build(users, embedding_dim)
        self.use_time = timestamps is not None
        self.use_demographics = occupations is not None
        if self.use_demographics and ages is None:
            raise ValueError("QueryTower: occupations given without ages; pass both or neither")
        if self.use_time:
            self.time_normalization = tf.keras.layers.Normalization(axis=None)
            self.time_normalization.adapt(np.asarray(timestamps, dtype="float64"))
            boundaries = quantile_boundaries(timestamps, time_buckets)
            self.time_embedding = tf.keras.Sequential(
                [
                    tf.keras.layers.Discretization(bin_boundaries=boundaries),
                    tf.keras.layers.Embedding(len(boundaries) + 1, embedding_dim),
                ]
            )
        if self.use_demographics:
            self.occupation_embedding = build(list(occupations), 8)
            self.age_normalization = tf.keras.layers.Normalization(axis=None)
            self.age_normalization.adapt(np.asarray(ages, dtype="float32"))
        self.projection = (
            tf.keras.layers.Dense(embedding_dim) if self.use_time or self.use_demographics else None
        )

    def call(self, features: dict) -> tf.Tensor:
        user = self.user_embedding(features["user_id"])
        if self.projection is None:
            return user
        parts = [user]
        if self.use_time:
            parts.append(self.time_embedding(features["timestamp"]))
            parts.append(tf.reshape(self.time_normalization(features["timestamp"]), (-1, 1)))
        if self.use_demographics:
            parts.append(self.occupation_embedding(features["user_occupation_text"]))
            parts.append(tf.reshape(self.age_normalization(features["raw_user_age"]), (-1, 1)))
            parts.append(tf.reshape(tf.cast(features["user_gender"], tf.float32), (-1, 1)))
        return self.projection(tf.concat(parts, axis=1))


class CandidateTower(tf.keras.Model):
    """Candidate features -> candidate vector.

    Reads ``features["movie_id"]`` (``tf.string [batch]``); with ``titles`` also
    ``movie_title`` (``tf.string [batch]``), with ``genres`` also ``movie_genres``
    (``tf.string [batch, width]`` padded with ``""``). Returns ``float32 [batch, dim]``.
    With no side feature it is just the id tower; otherwise the parts are concatenated and
    projected by a ``Dense(embedding_dim)``. Genres become a multi-hot vector and a
    ``Dense`` layer without bias (the sum of one learned vector per genre).

    Args:
        movie_ids: the movie vocabulary.
        titles: titles to adapt the title tower's vocabulary on.
        genres: the genre vocabulary.
        id_tower_builder: builds the id tower (default :func:`id_tower`).
        title_tower_builder: builds the title tower (default :func:`title_tower`).
    """

    def __init__(self, movie_ids: Sequence[str], embedding_dim: int, *, titles=None, genres=None,
                 id_tower_builder: IdTowerBuilder | None = None,
                 title_tower_builder: TitleTowerBuilder | None = None):
        super().__init__()
        self.movie_embedding = (id_tower_builder or id_tower)(movie_ids, embedding_dim)
        self.title_embedding = (
            None if titles is None else (title_tower_builder or title_tower)(titles, embedding_dim)
        )
        self.genre_embedding = None
        if genres is not None:
            self.genre_embedding = tf.keras.Sequential(
                [
                    tf.keras.layers.StringLookup(
                        vocabulary=list(genres), mask_token="", output_mode="multi_hot"
                    ),
                    tf.keras.layers.Dense(embedding_dim, use_bias=False),
                ]
            )
        side = titles is not None or genres is not None
        self.projection = tf.keras.layers.Dense(embedding_dim) if side else None

    def call(self, features: dict) -> tf.Tensor:
        movie = self.movie_embedding(features["movie_id"])
        if self.projection is None:
            return movie
        parts = [movie]
        if self.title_embedding is not None:
            parts.append(self.title_embedding(features["movie_title"]))
        if self.genre_embedding is not None:
            parts.append(self.genre_embedding(features["movie_genres"]))
        return self.projection(tf.concat(parts, axis=1))
