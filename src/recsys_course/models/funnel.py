"""The recommendation funnel: candidates from several sources, one learned ranker over them.

A production recommender rarely trusts one model to find candidates. Here four sources each
propose their ``n`` best unseen movies for a user:

* **two-tower**: the dot product of the user's and the movie's vectors (lesson 02's model);
* **EASE** and **item-kNN**: the user's history row times an item-to-item matrix
  (:mod:`recsys_course.baselines`);
* **popularity**: the movies most users rated.

Their lists are merged, duplicates dropped (:func:`union_lists`, :func:`merge_candidates`),
and a ranker scores every candidate from features no single source has
(:data:`FEATURES`): each source's score (a z-score over the user's unseen catalogue) and
rank, whether it proposed the movie, the movie's popularity and age in the training data,
the user's activity and genre affinity, and a rating model's predicted stars.

:class:`FunnelFeatures` computes those features with TensorFlow ops from a user id and a
movie id, so the very same code builds the ranker's training data, scores offline and runs
inside the served SavedModel (no training/serving skew). :class:`FunnelRanker` is a deep &
cross network (Wang et al., 2017; TFRS's ``Cross`` layer) over them, trained with a
listwise softmax loss (:func:`listwise_softmax_loss`) on implicit labels: which candidates
of a user's list the user rated in a held-out period or split. :class:`Funnel` ties the two
together.

Shapes: ``U`` users, ``n_items`` movies in the sorted catalogue ``movie_ids``, candidate
lists ``[U, L]`` of item indices padded with ``-1`` (:data:`recsys_course.evaluation.PAD`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1
import tensorflow_recommenders as tfrs

from recsys_course import evaluation
from recsys_course import baselines
from recsys_course.models.retrieval import TwoTower

#: The candidate sources, in the order of their scores and of the merged list.
SOURCES = ("two-tower", "EASE", "item-kNN", "popularity")
#: Sources with a score of their own per user (popularity's score is the item's popularity).
SCORED_SOURCES = SOURCES[:3]
#: The ranker's input features, in column order.
FEATURES = (
    *(f"{s} {part}" for s in SCORED_SOURCES for part in ("z-score", "rank discount", "proposed")),
    "popularity rank discount", "popularity proposed",
    "log item popularity", "log item age (days)", "log user activity", "genre affinity",
    "predicted rating",
)
SECONDS_PER_DAY = 86_400.0


# ----------------------------------------------------------------------------- merging lists
def merge_candidates(lists: Iterable[Iterable[Hashable]], exclude: Iterable[Hashable] = ()) -> list:
    """One list from several: every id in the order of first appearance (the first list's
    ids first, then each next list's new ones), duplicates and ``exclude`` dropped."""
    excluded = set(exclude)
    merged = dict.fromkeys(item for items in lists for item in items if item not in excluded)
    return list(merged)


def union_lists(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Row-wise :func:`merge_candidates` of item-index lists ``[U, n_s]`` (padding ``-1``
    skipped): ``int64 [U, L]``, ``L`` the longest merged row, padded with ``-1``."""
    if not lists:
        raise ValueError("union_lists needs at least one list of candidates")
    rows = [merge_candidates(row[row >= 0] for row in parts) for parts in zip(*map(np.asarray, lists))]
    out = np.full((len(rows), max(map(len, rows), default=0)), evaluation.PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


# ----------------------------------------------------------------------------- the sources
def genre_matrix(movies: pd.DataFrame, movie_ids: Sequence[str]) -> np.ndarray:
    """``float64 [n_items, n_genres]`` multi-hot genres of ``movie_ids`` (rows in that order;
    columns: the sorted genre names of ``movies``; a movie missing from ``movies`` gets a
    zero row)."""
    names = sorted({g for gs in movies["movie_genres"] for g in gs})
    column = {g: j for j, g in enumerate(names)}
    by_id = movies.assign(movie_id=movies["movie_id"].astype(str)).set_index("movie_id")["movie_genres"]
    out = np.zeros((len(movie_ids), len(names)))
    for i, movie in enumerate(movie_ids):
        out[i, [column[g] for g in by_id.get(str(movie), [])]] = 1.0
    return out


@dataclass
class Sources:
    """Every candidate source and item fact of the funnel, fitted on one training frame.

    Attributes:
        user_ids: ``str [n_users]``, the sorted training users (the rows of ``history``).
        movie_ids: ``str [n_items]``, the sorted catalogue (the two-tower's ``movie_ids``).
        history: ``float32 [n_users, n_items]``, 1 where the user rated the movie in training
            (the "seen" movies, never proposed).
        two_tower: the trained two-tower model.
        ease, item_knn: ``float32 [n_items, n_items]`` item-to-item weights.
        popularity: ``float64 [n_items]``, training users per movie.
        age_days: ``float64 [n_items]``, days from the movie's first training rating to the
            last training timestamp (0 for a movie without training ratings).
        genres: ``float64 [n_items, n_genres]`` multi-hot genres.
    """

    user_ids: np.ndarray
    movie_ids: np.ndarray
    history: np.ndarray
    two_tower: TwoTower
    ease: np.ndarray
    item_knn: np.ndarray
    popularity: np.ndarray
    age_days: np.ndarray
    genres: np.ndarray


def build_sources(frame: pd.DataFrame, movies: pd.DataFrame, two_tower: TwoTower, *, ease_l2: float) -> Sources:
    """Fit EASE (ridge ``ease_l2``), item-kNN and popularity on the ratings of ``frame``
    (columns ``user_id``, ``movie_id``, ``timestamp``) and bundle them with ``two_tower``
    (trained on the same frame by the caller) over its catalogue."""
    missing = [c for c in ("user_id", "movie_id", "timestamp") if c not in frame.columns]
    if missing:
        raise ValueError(f"build_sources: frame lacks the column(s) {missing}")
    movie_ids = np.asarray(two_tower.movie_ids).astype(str)
    frame = frame.assign(user_id=frame["user_id"].astype(str), movie_id=frame["movie_id"].astype(str))
    unknown = ~frame["movie_id"].isin(movie_ids)
    if unknown.any():
        raise ValueError(f"{int(unknown.sum())} ratings name movies outside the two-tower's catalogue "
                         f"(e.g. {frame.loc[unknown, 'movie_id'].iloc[0]!r}); train it with the same movies frame")
    user_ids = np.unique(frame["user_id"].to_numpy()).astype(str)
    history = evaluation.interaction_matrix(frame, user_ids, movie_ids).astype(np.float32)
    first = frame.groupby("movie_id")["timestamp"].min().reindex(movie_ids)
    age = (frame["timestamp"].max() - first.to_numpy(dtype=np.float64)) / SECONDS_PER_DAY
    return Sources(
        user_ids=user_ids, movie_ids=movie_ids, history=history, two_tower=two_tower,
        ease=baselines.ease_weights(history, ease_l2).astype(np.float32),
        item_knn=baselines.item_knn_weights(history).astype(np.float32),
        popularity=baselines.popularity_counts(history),
        age_days=np.nan_to_num(age, nan=0.0),
        genres=genre_matrix(movies, movie_ids),
    )


class PairRating(tf.Module):
    """Adapter: a rating model called on a feature dictionary (the course's
    :class:`~recsys_course.models.ranking.Ranker`) as ``predict_rating(user_ids, movie_ids)``,
    the interface :class:`FunnelFeatures` reads."""

    def __init__(self, model: tf.keras.Model) -> None:
        super().__init__(name="pair_rating")
        self.model = model

    def predict_rating(self, user_ids: tf.Tensor, movie_ids: tf.Tensor) -> tf.Tensor:
        return self.model({"user_id": user_ids, "movie_id": movie_ids})


def _unit_rows(x: tf.Tensor) -> tf.Tensor:
    """Rows scaled to length 1; an all-zero row stays zero."""
    return tf.math.divide_no_nan(x, tf.norm(x, axis=-1, keepdims=True))


class FunnelFeatures(tf.Module):
    """Sources and item facts as TensorFlow state; (user id, movie id) -> ranker features.

    Args:
        sources: from :func:`build_sources`.
        rating_model: an object with ``predict_rating(user_ids, movie_ids)`` (``tf.string
            [n]`` each) -> ``[n]`` or ``[n, 1]`` predicted stars (lesson 06's multitask model,
            or :class:`PairRating` around a :class:`~recsys_course.models.ranking.Ranker`).
        n_candidates: how many movies each source proposes (a source "proposed" a movie
            when it ranks among its first ``n_candidates`` unseen ones).

    A user outside the training users has an empty history (EASE and item-kNN score 0,
    activity 0) and the two-tower's out-of-vocabulary vector; a movie outside the catalogue
    is an error (``tf.errors.InvalidArgumentError``, a 400 answer when served).
    """

    def __init__(self, sources: Sources, rating_model, n_candidates: int) -> None:
        super().__init__(name="funnel_features")
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be a positive integer, got {n_candidates}")
        self.n_candidates = int(n_candidates)
        self.user_ids = np.asarray(sources.user_ids).astype(str)
        self.movie_ids = np.asarray(sources.movie_ids).astype(str)
        n_users = len(self.user_ids)
        self.user_index = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.user_ids), tf.range(1, n_users + 1, dtype=tf.int64)), default_value=0)
        self.movie_index = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.movie_ids), tf.range(len(self.movie_ids), dtype=tf.int64)), default_value=-1)

        def constant(value, name):
            return tf.Variable(np.asarray(value, dtype=np.float32), trainable=False, name=name)

        # Row 0 of the history: the empty history of a user outside the training users.
        history = np.vstack([np.zeros((1, len(self.movie_ids)), np.float32), sources.history])
        self.history = constant(history, "history")
        self.ease = constant(sources.ease, "ease")
        self.item_knn = constant(sources.item_knn, "item_knn")
        self.log_popularity = constant(np.log1p(sources.popularity), "log_popularity")
        self.log_age = constant(np.log1p(sources.age_days), "log_age")
        self.genres = constant(sources.genres, "genres")
        self.user_tower = sources.two_tower.user_model
        self.movie_embeddings = constant(sources.two_tower.movie_embeddings, "movie_embeddings")
        self.rating_model = rating_model

    @property
    def n_items(self) -> int:
        return len(self.movie_ids)

    def source_scores(self, user_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(scores float32 [U, 4, n_items], seen bool [U, n_items])`` for ``user_ids``
        ``tf.string [U]``: every source's score of every movie (in :data:`SOURCES` order;
        popularity's is the log of its training users) and the movies each user has seen."""
        history = tf.gather(self.history, self.user_index.lookup(user_ids))
        two_tower = tf.matmul(self.user_tower(user_ids), self.movie_embeddings, transpose_b=True)
        popularity = tf.broadcast_to(self.log_popularity[None, :], tf.shape(history))
        scores = tf.stack([two_tower, history @ self.ease, history @ self.item_knn, popularity], axis=1)
        return scores, history > 0

    def top_lists(self, user_ids: tf.Tensor, n: int | None = None) -> tf.Tensor:
        """``int64 [U, 4, n]``: each source's ``n`` (default ``n_candidates``) best unseen
        movies per user as catalogue indices, best first (ties: lower index first, as
        :func:`recsys_course.evaluation.top_k`); ``-1`` pads a user with fewer unseen movies."""
        scores, seen = self.source_scores(user_ids)
        masked = tf.where(seen[:, None, :], tf.constant(-np.inf, tf.float32), scores)
        best = tf.math.top_k(masked, k=min(n or self.n_candidates, self.n_items))
        return tf.where(tf.math.is_inf(best.values), tf.constant(-1, tf.int64), tf.cast(best.indices, tf.int64))

    def __call__(self, user_ids: tf.Tensor, movie_ids: tf.Tensor) -> tf.Tensor:
        """``float32 [n, len(FEATURES)]`` for ``n`` (user, movie) pairs (``tf.string [n]`` each).

        Per source: the score as a z-score over the user's unseen movies, the rank discount
        ``1 / log2(rank + 2)`` of the movie's rank among them (0 = best; seen movies rank
        after every unseen one) and whether the rank is below ``n_candidates``; then the log
        of the movie's training users and of its age in days, the log of the user's number of
        training ratings, the cosine between the user's genre profile (the genres of the
        movies they rated, summed) and the movie's genres, and the predicted rating.
        """
        user_ids = tf.convert_to_tensor(user_ids, tf.string)
        movie_ids = tf.convert_to_tensor(movie_ids, tf.string)
        items = self.movie_index.lookup(movie_ids)
        check = tf.debugging.assert_non_negative(
            items, message="a movie_id is not in the funnel's catalogue (the movies it was trained with)")
        with tf.control_dependencies([check]):
            users, pair_user = tf.unique(user_ids)
        scores, seen = self.source_scores(users)  # [U, 4, n_items], [U, n_items]
        unseen = tf.cast(~seen, tf.float32)[:, None, :]
        count = tf.maximum(tf.reduce_sum(unseen, axis=-1, keepdims=True), 1.0)
        finite = scores * unseen
        mean = tf.reduce_sum(finite, axis=-1, keepdims=True) / count
        spread = tf.sqrt(tf.reduce_sum(tf.square(scores - mean) * unseen, axis=-1, keepdims=True) / count)
        z = tf.math.divide_no_nan(scores - mean, spread)
        masked = tf.where(seen[:, None, :], tf.constant(-np.inf, tf.float32), scores)
        order = tf.argsort(masked, axis=-1, direction="DESCENDING", stable=True)
        rank = tf.cast(tf.argsort(order, axis=-1, stable=True), tf.float32)  # inverse permutation
        where = tf.stack([tf.cast(pair_user, tf.int64), items], axis=1)

        def at_pairs(values: tf.Tensor) -> tf.Tensor:  # [U, 4, n_items] -> [n, 4]
            return tf.gather_nd(tf.transpose(values, [0, 2, 1]), where)

        pair_z, pair_rank = at_pairs(z), at_pairs(rank)
        discount = 1.0 / (tf.math.log(pair_rank + 2.0) / np.log(2.0))
        proposed = tf.cast(pair_rank < self.n_candidates, tf.float32)
        history = tf.gather(self.history, self.user_index.lookup(users))
        profile = _unit_rows(history @ self.genres)
        movie_genres = _unit_rows(tf.gather(self.genres, items))
        columns = []
        for s in range(len(SCORED_SOURCES)):
            columns += [pair_z[:, s], discount[:, s], proposed[:, s]]
        rating = self.rating_model.predict_rating(user_ids, movie_ids)
        columns += [
            discount[:, 3], proposed[:, 3],
            tf.gather(self.log_popularity, items), tf.gather(self.log_age, items),
            tf.gather(tf.math.log1p(tf.reduce_sum(history, axis=1)), pair_user),
            tf.reduce_sum(tf.gather(profile, pair_user) * movie_genres, axis=1),
            tf.reshape(tf.cast(rating, tf.float32), [-1]),
        ]
        return tf.stack(columns, axis=1)


# ----------------------------------------------------------------------------- the ranker
def listwise_softmax_loss(labels: tf.Tensor, scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy over each user's candidate list (ListNet's top-one loss, Cao et
    al., 2007), averaged over the lists that hold at least one positive.

    ``labels`` float ``[B, L]`` (>= 0; 1 for a candidate the user went on to rate),
    ``scores`` float ``[B, L]``, ``mask`` bool ``[B, L]`` (False for padding). A list's loss
    is ``-sum_i (y_i / sum_j y_j) log softmax(scores)_i``, the softmax over its unmasked
    candidates only. Returns a scalar (0 when no list has a positive).
    """
    labels = tf.cast(labels, tf.float32)
    scores = tf.cast(scores, tf.float32)
    mask = tf.cast(mask, tf.bool)
    log_p = tf.nn.log_softmax(tf.where(mask, scores, tf.float32.min / 2), axis=-1)
    labels = tf.where(mask, labels, 0.0)
    totals = tf.reduce_sum(labels, axis=-1)
    per_list = -tf.reduce_sum(labels * tf.where(mask, log_p, 0.0), axis=-1) / tf.maximum(totals, 1e-12)
    has_positive = tf.cast(totals > 0, tf.float32)
    return tf.reduce_sum(per_list * has_positive) / tf.maximum(tf.reduce_sum(has_positive), 1.0)


class FunnelRanker(tf.keras.Model):
    """Features ``[..., d]`` -> scores ``[...]``: standardise each feature (with the training
    rows' ``mean`` and ``std``, stored in the model), then an optional cross layer
    (``tfrs.layers.dcn.Cross``: ``x0 * (W x + b) + x``, explicit feature crosses) and a
    ReLU multilayer perceptron of widths ``hidden`` ending in one linear unit."""

    def __init__(self, mean, std, *, cross: bool = True, hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        self.mean = tf.Variable(np.asarray(mean, np.float32), trainable=False, name="feature_mean")
        self.std = tf.Variable(np.maximum(np.asarray(std, np.float32), 1e-6), trainable=False, name="feature_std")
        self.use_cross = bool(cross)
        self.cross = tfrs.layers.dcn.Cross() if cross else None
        self.deep = tf.keras.Sequential([tf.keras.layers.Dense(int(w), activation="relu") for w in hidden]
                                        + [tf.keras.layers.Dense(1)])

    def call(self, features: tf.Tensor) -> tf.Tensor:
        x = (tf.cast(features, tf.float32) - self.mean) / self.std
        if self.cross is not None:
            x = self.cross(x)
        return tf.squeeze(self.deep(x), axis=-1)


class RankerEnsemble(tf.keras.Model):
    """The mean score of several rankers (the same features in, one score out): averaging
    rankers trained from different seeds evens out the noise of training on few labels."""

    def __init__(self, members: Sequence[tf.keras.Model]) -> None:
        super().__init__()
        if not members:
            raise ValueError("RankerEnsemble needs at least one ranker")
        self.members = list(members)

    def call(self, features: tf.Tensor) -> tf.Tensor:
        return tf.add_n([member(features) for member in self.members]) / float(len(self.members))


LossFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def train_ranker(features: np.ndarray, labels: np.ndarray, mask: np.ndarray, *, cross: bool = True,
                 hidden: Sequence[int] = (64, 32), epochs: int = 10, batch_size: int = 64,
                 learning_rate: float = 0.003, seed: int = 42, loss: LossFn = listwise_softmax_loss,
                 after_epoch: Callable[[FunnelRanker], object] | None = None) -> tuple[FunnelRanker, list]:
    """Fit a :class:`FunnelRanker` on users' candidate lists with Adam.

    Args:
        features: ``float32 [U, L, d]``; labels: ``[U, L]`` (1 for a positive); mask:
            ``bool [U, L]``, False for padding. The standardisation uses the unmasked rows.
        cross, hidden: the architecture (see :class:`FunnelRanker`).
        epochs, batch_size (lists per step), learning_rate, seed: training; seeded, lists
            reshuffled every epoch.
        loss: ``(labels, scores, mask) -> scalar``, :func:`listwise_softmax_loss` by default.
        after_epoch: called with the model after every epoch; its values are returned.

    Returns ``(model, [after_epoch(model) per epoch])`` (an empty list without ``after_epoch``).
    """
    features = np.asarray(features, np.float32)
    mask = np.asarray(mask, bool)
    if features.ndim != 3 or mask.shape != features.shape[:2] or np.shape(labels) != mask.shape:
        raise ValueError(f"features must be [U, L, d] with labels and mask [U, L]; got {features.shape}, "
                         f"{np.shape(labels)} and {mask.shape}")
    if not mask.any():
        raise ValueError("train_ranker needs at least one candidate (mask is all False)")
    tf.keras.utils.set_random_seed(seed)
    rows = features[mask]
    model = FunnelRanker(rows.mean(axis=0), rows.std(axis=0), cross=cross, hidden=hidden)
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    data = tf.data.Dataset.from_tensor_slices((features, np.asarray(labels, np.float32), mask))
    batches = data.shuffle(len(features), seed=seed, reshuffle_each_iteration=True).batch(batch_size)

    # One trace for every batch (the last one is smaller): the shapes say only the list width.
    @tf.function(input_signature=[tf.TensorSpec([None, *features.shape[1:]], tf.float32),
                                  tf.TensorSpec([None, features.shape[1]], tf.float32),
                                  tf.TensorSpec([None, features.shape[1]], tf.bool)])
    def step(x, y, m):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True), m)
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    history = []
    for _ in range(epochs):
        for x, y, m in batches:
            step(x, y, m)
        if after_epoch is not None:
            history.append(after_epoch(model))
    return model, history


def train_ensemble(features: np.ndarray, labels: np.ndarray, mask: np.ndarray, *, members: int = 3,
                   seed: int = 42, **training) -> RankerEnsemble:
    """:func:`train_ranker` ``members`` times, with seeds ``seed``, ``seed + 1``, ..., averaged
    in a :class:`RankerEnsemble`; ``training`` goes to :func:`train_ranker`."""
    return RankerEnsemble([train_ranker(features, labels, mask, seed=seed + i, **training)[0]
                           for i in range(members)])


# ----------------------------------------------------------------------------- the funnel
def _chunks(n: int, size: int) -> Iterable[slice]:
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


@dataclass
class Funnel:
    """Sources (inside ``features``) and a ranker: candidates, features and the final order.

    ``ranker`` may be ``None`` while the ranker is being trained (features and candidates
    work without it). Methods take user ids (``str [U]``) and return NumPy arrays.
    """

    features: FunnelFeatures
    ranker: tf.keras.Model | None = None  # a FunnelRanker or a RankerEnsemble
    users_per_call: int = 64  # users per TensorFlow call: bounds the [U, 4, n_items] scores

    @property
    def movie_ids(self) -> np.ndarray:
        return self.features.movie_ids

    def source_lists(self, user_ids, n: int | None = None) -> dict[str, np.ndarray]:
        """Each source's list: :data:`SOURCES` name -> ``int64 [U, n]`` item indices."""
        user_ids = np.asarray(user_ids).astype(str)
        parts = [self.features.top_lists(tf.constant(user_ids[s]), n).numpy()
                 for s in _chunks(len(user_ids), self.users_per_call)]
        lists = np.concatenate(parts) if parts else np.zeros((0, len(SOURCES), n or 0), np.int64)
        return {name: lists[:, i] for i, name in enumerate(SOURCES)}

    def candidates(self, user_ids, sources: Sequence[str] = SOURCES) -> np.ndarray:
        """The merged candidates ``int64 [U, L]`` of ``sources`` (in that order), padded -1."""
        lists = self.source_lists(user_ids)
        return union_lists([lists[name] for name in sources])

    def feature_lists(self, user_ids, candidates: np.ndarray) -> np.ndarray:
        """``float32 [U, L, len(FEATURES)]`` for each user's candidates (zeros for padding)."""
        user_ids = np.asarray(user_ids).astype(str)
        candidates = np.asarray(candidates)
        out = np.zeros(candidates.shape + (len(FEATURES),), np.float32)
        for rows in _chunks(len(user_ids), self.users_per_call):
            valid = candidates[rows] >= 0
            users = np.repeat(user_ids[rows], valid.sum(axis=1))
            movies = self.movie_ids[candidates[rows][valid]]
            block = out[rows]
            block[valid] = self.features(tf.constant(users), tf.constant(movies)).numpy()
            out[rows] = block
        return out

    def scores(self, user_ids, candidates: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """The ranker's scores ``float32 [U, L]`` of each user's candidates (-inf for padding)."""
        if self.ranker is None:
            raise ValueError("this funnel has no ranker yet: train one with train_ranker")
        features = self.feature_lists(user_ids, candidates) if features is None else features
        values = self.ranker(tf.constant(features)).numpy()
        return np.where(np.asarray(candidates) >= 0, values, -np.inf)

    def recommend(self, user_ids, k: int, candidates: np.ndarray | None = None,
                  features: np.ndarray | None = None) -> np.ndarray:
        """Each user's top ``k`` item indices ``int64 [U, k]`` by the ranker (ties keep the
        candidate order; -1 pads a user with fewer than ``k`` candidates)."""
        candidates = self.candidates(user_ids) if candidates is None else np.asarray(candidates)
        return order_by(candidates, self.scores(user_ids, candidates, features), k)


def order_by(candidates: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The top ``k`` of each user's candidates ``[U, L]`` by ``scores`` ``[U, L]`` (higher
    first; ties keep the candidate order; padding -1 last) as item indices ``[U, k]``."""
    candidates = np.asarray(candidates)
    scores = np.where(candidates >= 0, np.asarray(scores, np.float64), -np.inf)
    best = evaluation.top_k(np.nan_to_num(scores, nan=-np.inf, posinf=np.finfo(np.float64).max), k)
    picked = np.take_along_axis(candidates, np.maximum(best, 0), axis=1)
    return np.where((best >= 0) & (np.take_along_axis(scores, np.maximum(best, 0), axis=1) > -np.inf), picked,
                    evaluation.PAD)


def list_labels(candidates: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """``float32 [U, L]``: each candidate's value in ``relevant`` (``[U, n_items]``: bool for
    1/0 labels, or graded gains such as ``2**rating - 1``), 0 for padding."""
    candidates = np.asarray(candidates)
    values = np.take_along_axis(np.asarray(relevant, np.float32), np.maximum(candidates, 0), axis=1)
    return np.where(candidates >= 0, values, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- labelled lists
@dataclass
class RankerLists:
    """Candidate lists with their features and held-out ratings: the ranker's training or
    checking data, one row per (user, held-out part).

    Attributes:
        users: ``str [R]``; a user has one row per part (fold) they have held-out ratings in.
        parts: ``int [R]``, the part (fold) number of each row.
        candidates: ``int64 [R, L]`` the union of the sources' lists, padded with ``-1``.
        features: ``float32 [R, L, len(FEATURES)]`` (zeros for padding).
        stars: ``float32 [R, n_items]``, the row's held-out ratings (0 = not held out).
        seen: ``bool [R, n_items]``, the ratings the row's sources were fitted on.
        sources: :data:`SOURCES` name -> ``int64 [R, n]``, each source's own list.
    """

    users: np.ndarray
    parts: np.ndarray
    candidates: np.ndarray
    features: np.ndarray
    stars: np.ndarray
    seen: np.ndarray
    sources: dict[str, np.ndarray]

    @property
    def mask(self) -> np.ndarray:
        """``bool [R, L]``: True for a real candidate, False for padding."""
        return self.candidates >= 0

    @property
    def rated(self) -> np.ndarray:
        """``bool [R, n_items]``: the held-out ratings."""
        return self.stars > 0

    def labels(self, weigh: Callable[[np.ndarray], np.ndarray] = evaluation.rating_gains) -> np.ndarray:
        """``float32 [R, L]``: each candidate's label, ``weigh`` of the held-out stars
        (``[R, n_items]`` -> same shape, 0 where nothing was held out), by default the gain
        ``2**r - 1`` of a rating of ``r`` stars (:func:`recsys_course.evaluation.rating_gains`);
        0 for padding."""
        return list_labels(self.candidates, weigh(self.stars))

    def rows(self, index) -> RankerLists:
        """The lists at ``index`` (int indices or a bool mask over the rows)."""
        return RankerLists(users=self.users[index], parts=self.parts[index], candidates=self.candidates[index],
                           features=self.features[index], stars=self.stars[index], seen=self.seen[index],
                           sources={name: items[index] for name, items in self.sources.items()})


def held_out_lists(funnel: Funnel, before: pd.DataFrame, held_out: pd.DataFrame, part: int = 0) -> RankerLists:
    """The funnel's union lists and features for the users of ``held_out`` who also rated in
    ``before`` (the ratings the funnel's sources were fitted on), sorted by id, with
    ``held_out``'s ratings (column ``user_rating``) as their labels."""
    users = np.array(sorted(set(held_out["user_id"].astype(str)) & set(before["user_id"].astype(str))), dtype=str)
    movie_ids = funnel.movie_ids
    lists = funnel.source_lists(users)
    union = union_lists([lists[name] for name in SOURCES])
    return RankerLists(
        users=users, parts=np.full(len(users), part, dtype=np.int64), candidates=union,
        features=funnel.feature_lists(users, union),
        stars=evaluation.interaction_matrix(held_out.assign(user_id=held_out["user_id"].astype(str)), users,
                                            movie_ids, value_col="user_rating").astype(np.float32),
        seen=evaluation.interaction_matrix(before.assign(user_id=before["user_id"].astype(str)), users, movie_ids),
        sources=lists)


def concat_lists(parts: Sequence[RankerLists]) -> RankerLists:
    """The rows of several :class:`RankerLists` (same catalogue) in order, the candidate
    lists padded to the widest."""
    if not parts:
        raise ValueError("concat_lists needs at least one RankerLists")
    width = max(p.candidates.shape[1] for p in parts)

    def widened(values: np.ndarray, fill) -> np.ndarray:
        pad = [(0, 0), (0, width - values.shape[1])] + [(0, 0)] * (values.ndim - 2)
        return np.pad(values, pad, constant_values=fill)

    return RankerLists(
        users=np.concatenate([p.users for p in parts]), parts=np.concatenate([p.parts for p in parts]),
        candidates=np.concatenate([widened(p.candidates, evaluation.PAD) for p in parts]),
        features=np.concatenate([widened(p.features, 0.0) for p in parts]),
        stars=np.concatenate([p.stars for p in parts]), seen=np.concatenate([p.seen for p in parts]),
        sources={name: np.concatenate([p.sources[name] for p in parts]) for name in parts[0].sources})


def cross_fitted_lists(folds: Sequence[pd.DataFrame], fit_funnel: Callable[[pd.DataFrame], Funnel]) -> RankerLists:
    """Cross-fitting (stacking's out-of-fold predictions, Wolpert, 1992): for each fold, a
    funnel fitted by ``fit_funnel`` on all the *other* folds' ratings proposes and featurises
    the candidates of the fold's users, labelled by the fold's ratings
    (:func:`held_out_lists`). Every rating labels a list once, and no list's features come
    from sources that saw its labels. ``folds``: e.g. from
    :func:`recsys_course.data.split_folds`; ``fit_funnel(ratings) -> Funnel`` fits every
    source (and the rating model) on ``ratings``."""
    if len(folds) < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {len(folds)}")
    parts = []
    for f, fold in enumerate(folds):
        rest = pd.concat([other for g, other in enumerate(folds) if g != f], ignore_index=True)
        parts.append(held_out_lists(fit_funnel(rest), rest, fold, part=f))
    return concat_lists(parts)


# ----------------------------------------------------------------------------- choices
def split_rows(n: int, seed: int, share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of the rows ``0 .. n-1`` into two sorted index arrays, the
    first holding ``round(share * n)`` of them."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(share * n))
    return np.sort(order[:cut]), np.sort(order[cut:])


def split_users(users: np.ndarray, seed: int, share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_rows` over the distinct ``users`` (``[R]``, a user may own several rows):
    two sorted arrays of row indices, every row of a user on the same side."""
    users = np.asarray(users).astype(str)
    distinct = np.unique(users)
    first, _ = split_rows(len(distinct), seed, share)
    on_first = np.isin(users, distinct[first])
    return np.flatnonzero(on_first), np.flatnonzero(~on_first)


#: The ranker variants compared on validation: name -> whether it has the cross layer.
RANKER_VARIANTS = {"DCN (cross layer + deep)": True, "deep only (no cross layer)": False}


@dataclass
class RankerChoice:
    """What :func:`choose_ranker` measured and chose.

    ``curves``: precision@k of the checking users after each epoch (index: epoch from 1;
    columns: the variants); ``variant``/``cross``/``epochs``: the best cell (the first of
    equals); ``check_model``: that variant trained on the training rows only, with the
    weights of its best epoch, to make later choices on the checking users (e.g. MMR's λ)
    with a ranker that never saw their labels.
    """

    curves: pd.DataFrame
    variant: str
    cross: bool
    epochs: int
    check_model: FunnelRanker


def choose_ranker(features: np.ndarray, labels: np.ndarray, candidates: np.ndarray, relevant: np.ndarray, *,
                  train_rows: np.ndarray, check_rows: np.ndarray, k: int, max_epochs: int,
                  variants: dict[str, bool] | None = None, seed: int = 42,
                  loss: LossFn = listwise_softmax_loss, criterion: Callable[[np.ndarray], float] | None = None,
                  **training) -> RankerChoice:
    """Train each variant (name -> cross layer or not) on the lists of ``train_rows`` for
    ``max_epochs`` epochs, measure the check lists after each epoch, and choose the variant
    and epoch count with the best value. The measure is ``criterion(ranked)`` of the top k of
    the ``check_rows`` lists (``int [len(check_rows), k]``), by default their precision@k
    against ``relevant`` (bool ``[U, n_items]``). ``features [U, L, d]``, ``labels [U, L]`` and
    ``candidates [U, L]`` hold every user's lists; ``training`` goes to :func:`train_ranker`
    (hidden, batch size, rate)."""
    variants = RANKER_VARIANTS if variants is None else variants
    mask = np.asarray(candidates) >= 0
    check_candidates, check_features = candidates[check_rows], tf.constant(features[check_rows])
    check_relevant = np.asarray(relevant)[check_rows]
    if criterion is None:
        def criterion(ranked: np.ndarray) -> float:
            return evaluation.precision_at_k(ranked, check_relevant, k)
    curves, models = {}, {}
    for name, cross in variants.items():
        best = {"value": -np.inf, "weights": None}

        def measure(model: FunnelRanker, best=best) -> float:
            ranked = order_by(check_candidates, model(check_features).numpy(), k)
            value = float(criterion(ranked))
            if value > best["value"]:  # keep the weights of the best epoch so far
                best["value"], best["weights"] = value, model.get_weights()
            return value

        model, curve = train_ranker(features[train_rows], labels[train_rows], mask[train_rows], cross=cross,
                                    epochs=max_epochs, seed=seed, loss=loss, after_epoch=measure, **training)
        model.set_weights(best["weights"])
        models[name] = model
        curves[name] = pd.Series(curve, index=pd.RangeIndex(1, len(curve) + 1, name="epoch"))
    table = pd.DataFrame(curves)
    variant = str(table.max().idxmax())
    return RankerChoice(curves=table, variant=variant, cross=variants[variant], epochs=int(table[variant].idxmax()),
                        check_model=models[variant])
