"""``tf.Module`` wrappers that give each model of the recommender an explicit serving
signature taking raw strings, so clients never see vocabularies or integer indices.

Each class has one ``serve`` method, a ``tf.function`` with a fixed ``input_signature``;
export it with ``signatures={"serving_default": servable.serve}``. The signature's input
names (the ``name=`` of each ``TensorSpec``) and output names (the keys of the returned
dict) are what REST and gRPC clients use.

===================  ==============================  =======================================
servable             inputs                          outputs
===================  ==============================  =======================================
RetrievalServable    ``user_id`` string ``[B]``      ``movie_ids`` string ``[B, k]``,
                                                     ``scores`` float32 ``[B, k]``, best first
QueryTowerServable   ``user_id`` string ``[B]``      ``embedding`` float32 ``[B, dim]``
RankingServable      ``user_id``, ``movie_id``       ``score`` float32 ``[B]``
                     string ``[B]`` each
CandidatesServable   ``user_id`` string ``[B]``      ``ease``, ``item_knn``, ``popularity``
                                                     string ``[B, n]``: each source's best
                                                     unseen movies, best first
FunnelRankerServable ``user_id``, ``movie_id``       ``score`` float32 ``[B]``: the funnel
                     string ``[B]`` each             ranker's score of each pair
===================  ==============================  =======================================

The last two serve lesson 06's funnel (:mod:`recsys_course.models.funnel`): the application
gets the two-tower model's candidates from the query tower and an ANN index, the other
sources' lists from ``CandidatesServable``, merges them and asks ``FunnelRankerServable`` to
score the union. Both hold the same :class:`~recsys_course.models.funnel.FunnelFeatures`, so
the served features are computed by the code that computed the training features.
"""

from __future__ import annotations

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_course.models.funnel import SOURCES, FunnelFeatures

USER_ID = tf.TensorSpec(shape=[None], dtype=tf.string, name="user_id")
MOVIE_ID = tf.TensorSpec(shape=[None], dtype=tf.string, name="movie_id")


class RetrievalServable(tf.Module):
    """User id -> the ``k`` highest-scoring movie ids, exact search with TFRS ``BruteForce``.

    The whole catalogue's embeddings are stored in the SavedModel as a variable, and top-k
    is a TensorFlow op, so stock TF Serving can serve it without custom code.
    """

    def __init__(self, user_model: tf.keras.Model, movie_ids, movie_embeddings, k: int = 10):
        super().__init__(name="retrieval")
        movie_ids = np.asarray(movie_ids).astype(str)
        embeddings = np.asarray(movie_embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(movie_ids):
            raise ValueError(
                f"movie_embeddings must be [n_movies, dim] with n_movies = {len(movie_ids)}, "
                f"got shape {embeddings.shape}"
            )
        self.k = int(min(k, len(movie_ids)))
        self.index = tfrs.layers.factorized_top_k.BruteForce(user_model, k=self.k)
        self.index.index(tf.constant(embeddings), tf.constant(movie_ids))

    @tf.function(input_signature=[USER_ID])
    def serve(self, user_id):
        scores, movie_ids = self.index(user_id, k=self.k)
        return {"movie_ids": movie_ids, "scores": scores}


class QueryTowerServable(tf.Module):
    """User id -> the user's query embedding (what an ANN index outside TensorFlow needs)."""

    def __init__(self, user_model: tf.keras.Model):
        super().__init__(name="query_tower")
        self.user_model = user_model

    @tf.function(input_signature=[USER_ID])
    def serve(self, user_id):
        return {"embedding": tf.cast(self.user_model(user_id), tf.float32)}


class RankingServable(tf.Module):
    """(user id, movie id) pairs -> predicted rating, one score per pair."""

    def __init__(self, ranking_model: tf.keras.Model):
        super().__init__(name="ranker")
        self.ranking_model = ranking_model

    @tf.function(input_signature=[USER_ID, MOVIE_ID])
    def serve(self, user_id, movie_id):
        score = self.ranking_model({"user_id": user_id, "movie_id": movie_id})
        return {"score": tf.reshape(tf.cast(score, tf.float32), [-1])}


#: Output names of :class:`CandidatesServable`, one per item-based source of the funnel.
CANDIDATE_OUTPUTS = {"EASE": "ease", "item-kNN": "item_knn", "popularity": "popularity"}


class CandidatesServable(tf.Module):
    """User id -> the ``n`` best unseen movie ids of each item-based funnel source (EASE,
    item-kNN, popularity), exact top-n from the user's training history inside the graph.
    A slot beyond a user's unseen movies holds ``""``."""

    def __init__(self, features: FunnelFeatures, n: int | None = None):
        super().__init__(name="candidates")
        self.features = features
        self.n = int(n or features.n_candidates)
        self.movie_ids = tf.constant(np.append(features.movie_ids, ""))  # index -1 -> ""

    @tf.function(input_signature=[USER_ID])
    def serve(self, user_id):
        lists = self.features.top_lists(user_id, self.n)  # [B, 4, n], -1 for padding
        ids = tf.gather(self.movie_ids, tf.where(lists < 0, tf.cast(tf.size(self.movie_ids) - 1, tf.int64), lists))
        return {output: ids[:, SOURCES.index(source)] for source, output in CANDIDATE_OUTPUTS.items()}


class FunnelRankerServable(tf.Module):
    """(user id, movie id) pairs -> the funnel ranker's score, one per pair (higher first).
    ``ranker`` maps features ``[n, d]`` to scores ``[n]`` (a ``FunnelRanker`` or a
    ``RankerEnsemble`` of :mod:`recsys_course.models.funnel`).

    A movie outside the funnel's catalogue is refused (``InvalidArgumentError``: a 400 answer
    naming the problem), not scored."""

    def __init__(self, features: FunnelFeatures, ranker: tf.keras.Model):
        super().__init__(name="funnel_ranker")
        self.features = features
        self.ranker = ranker

    @tf.function(input_signature=[USER_ID, MOVIE_ID])
    def serve(self, user_id, movie_id):
        return {"score": tf.reshape(self.ranker(self.features(user_id, movie_id)), [-1])}
