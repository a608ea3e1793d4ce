"""Plumbing for lesson 02 (two-tower retrieval): feature dictionaries and tracked training.

The lesson teaches the models (preprocessing layers, towers, the retrieval loss, top-K
metrics). What it shares with its benchmark, and what is not worth re-reading in every
lesson, lives here:

* turning pandas rating frames into the dictionaries of NumPy arrays that Keras towers read
  (``rating_features``, ``movie_features``, ``user_features``), with the TFDS feature names;
* the popularity of each movie in training, which the popularity-corrected loss needs
  (``candidate_probability``);
* a training loop that records loss and factorized top-K accuracy on several splits after
  every epoch and keeps the weights of the epoch that scored best on the validation split
  (``train_with_curves``).

Every function is deterministic for a given input order and seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1
import tensorflow_recommenders as tfrs

#: Padding value of the fixed-width genre matrix; StringLookup(mask_token="") ignores it.
GENRE_PAD = ""
#: Name of the feature holding each training row's candidate popularity.
PROBABILITY = "candidate_probability"
TOP_K_KEY = "factorized_top_k/top_{k}_categorical_accuracy"


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
        share = ratings["movie_id"].map(probability).fillna(probability.min())
        features[PROBABILITY] = share.to_numpy(dtype="float32")
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


def interaction_matrix(frame: pd.DataFrame, users: list[str], movie_ids: list[str]) -> np.ndarray:
    """``bool [len(users), len(movie_ids)]``: True where the user rated the movie in
    ``frame``. Rows of ``frame`` whose user or movie is not listed are ignored."""
    user_index = pd.Index(users)
    movie_index = pd.Index(movie_ids)
    rows = user_index.get_indexer(frame["user_id"])
    cols = movie_index.get_indexer(frame["movie_id"])
    keep = (rows >= 0) & (cols >= 0)
    matrix = np.zeros((len(users), len(movie_ids)), dtype=bool)
    matrix[rows[keep], cols[keep]] = True
    return matrix


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


def loss_per_example(model: tf.keras.Model, features: dict[str, np.ndarray], batch_size: int) -> float:
    """Mean retrieval loss per (query, candidate) pair over full batches of ``batch_size``.

    The in-batch softmax loss of a batch depends on how many negatives it holds, so only
    full batches are used (rows beyond the last full batch are ignored); the result is
    comparable between splits evaluated with the same ``batch_size``. ``training=True``
    asks ``compute_loss`` for the training objective without computing top-K metrics.
    """
    total, rows = 0.0, 0
    for batch in to_dataset(features, batch_size, drop_remainder=True):
        total += float(model.compute_loss(batch, training=True))
        rows += batch_size
    return total / rows if rows else float("nan")


@dataclass
class TrainingRun:
    """What :func:`train_with_curves` measured.

    ``curves`` has one row per (epoch, split) with columns ``epoch`` (1-based), ``split``,
    ``loss`` (per example, see :func:`loss_per_example`) and ``top_K`` for every K asked.
    ``best_epoch`` is the epoch whose weights the model holds at the end.
    """

    curves: pd.DataFrame
    best_epoch: int
    seconds: float
    selected_on: str = ""

    def at(self, split: str, epoch: int | None = None) -> pd.Series:
        """The row of ``split`` at ``epoch`` (default: the best epoch)."""
        epoch = self.best_epoch if epoch is None else epoch
        rows = self.curves[(self.curves["split"] == split) & (self.curves["epoch"] == epoch)]
        return rows.iloc[0]


def train_with_curves(
    model: tf.keras.Model,
    train: tf.data.Dataset,
    evaluate_on: dict[str, dict[str, np.ndarray]],
    *,
    epochs: int,
    ks: tuple[int, ...] = (10, 50, 100),
    select_on: str | None = "validation",
    monitor: int = 100,
    patience: int | None = None,
    eval_batch_size: int = 4096,
    loss_batch_size: int = 1024,
) -> TrainingRun:
    """Train ``model`` one epoch at a time and measure it on every split after each epoch.

    Args:
        model: a compiled ``tfrs.Model`` whose task holds a ``FactorizedTopK`` metric with
            the ``ks`` below.
        train: batches to fit on (see :func:`to_dataset`).
        evaluate_on: ``{split name: feature dict}``; each is evaluated after every epoch
            with ``model.evaluate`` (factorized top-K) and :func:`loss_per_example`.
        epochs: the most epochs to train.
        select_on: the split whose ``top_{monitor}`` accuracy picks the epoch to keep; the
            model ends with that epoch's weights. ``None`` keeps the last epoch.
        patience: stop after this many epochs without improvement on ``select_on``.
        eval_batch_size, loss_batch_size: batch sizes for the metrics and for the loss.

    Returns:
        A :class:`TrainingRun` with the curves and the selected epoch.
    """
    started = time.perf_counter()
    eval_sets = {name: to_dataset(f, eval_batch_size) for name, f in evaluate_on.items()}
    rows, best_score, best_epoch, best_weights, waited = [], -np.inf, 0, None, 0
    if select_on is not None and select_on not in evaluate_on:
        raise ValueError(f"select_on={select_on!r} is not one of the evaluated splits {list(evaluate_on)}")
    for epoch in range(1, epochs + 1):
        model.fit(train, epochs=1, verbose=0)
        this_epoch = {}
        for name, dataset in eval_sets.items():
            result = model.evaluate(dataset, return_dict=True, verbose=0)
            row = {"epoch": epoch, "split": name,
                   "loss": loss_per_example(model, evaluate_on[name], loss_batch_size)}
            row.update({f"top_{k}": float(result[TOP_K_KEY.format(k=k)]) for k in ks})
            this_epoch[name] = row
        rows.extend(this_epoch.values())
        if select_on is None:
            best_epoch = epoch
            continue
        score = this_epoch[select_on][f"top_{monitor}"]
        if score > best_score:
            best_score, best_epoch, best_weights, waited = score, epoch, model.get_weights(), 0
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return TrainingRun(
        pd.DataFrame(rows), best_epoch, time.perf_counter() - started,
        selected_on=select_on or "last epoch",
    )


class _Slot:
    """Holds the current batch's candidate ids between the candidate tower and the task
    (a plain object, so Keras does not try to track the tensor as a weight)."""

    ids: tf.Tensor | None = None


class _IdRecordingTower(tf.keras.Model):
    def __init__(self, tower: tf.keras.Model, slot: _Slot, key: str):
        super().__init__()
        self.tower, self._slot, self._key = tower, slot, key

    def call(self, features: dict) -> tf.Tensor:
        self._slot.ids = features[self._key]
        return self.tower(features)


class AccidentalHitsRetrieval(tfrs.tasks.Retrieval):
    """``tfrs.tasks.Retrieval(remove_accidental_hits=True)`` for a model whose
    ``compute_loss`` does not pass ``candidate_ids``.

    Wrap the candidate tower with :meth:`recording` and give the model the wrapped tower:
    each time it embeds a training batch it records the batch's ``movie_id`` column, and
    the task hands it to TFRS, which then drops the logits of in-batch negatives that are
    the query's own movie. During evaluation (``compute_metrics=True``) the ids are not
    passed and no hit is removed: TFRS's factorized top-K metric would otherwise switch to
    id-based matching, which needs an index with ids. Other arguments as ``Retrieval``.
    """

    def __init__(self, **kwargs):
        super().__init__(remove_accidental_hits=True, **kwargs)
        self._slot = _Slot()

    def recording(self, candidate_model: tf.keras.Model, key: str = "movie_id") -> tf.keras.Model:
        """``candidate_model``, recording ``features[key]`` for the task at every call."""
        return _IdRecordingTower(candidate_model, self._slot, key)

    def call(self, query_embeddings, candidate_embeddings, *args, compute_metrics: bool = True, **kwargs):
        kwargs.pop("training", None)  # Keras adds it; Retrieval.call does not take it
        if compute_metrics:
            self._remove_accidental_hits = False
            try:
                return super().call(query_embeddings, candidate_embeddings, *args,
                                    compute_metrics=compute_metrics, **kwargs)
            finally:
                self._remove_accidental_hits = True
        if self._slot.ids is None:
            raise ValueError("AccidentalHitsRetrieval needs the candidate tower wrapped with "
                             "task.recording(tower) so that it sees the batch's candidate ids")
        kwargs["candidate_ids"] = self._slot.ids
        return super().call(query_embeddings, candidate_embeddings, *args,
                            compute_metrics=compute_metrics, **kwargs)
