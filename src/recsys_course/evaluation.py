"""Top-k evaluation of recommenders: one home for every top-k metric and split of the course.

A model is evaluated in three steps, each a function here:

1. **Split** the interactions: :func:`random_split` (seeded, the protocol of the TFRS
   tutorials), :func:`leave_last_k` (per-user holdout: each user's ``k`` latest
   interactions go to test, while training keeps other users' later ones) or
   :func:`global_time_split` / :func:`rolling_time_splits` (everything before a cutoff
   trains, each user's next interactions test: nothing from the future is seen).
2. **Rank** with :func:`top_k`: each user's ``k`` best items by score, the items in
   ``exclude`` (usually the ones the user met in training) never ranked. Ties are broken
   by the *lower item index*: the sort is a stable ``numpy.lexsort`` on (excluded, -score),
   so the order never depends on NumPy's build, the CPU or ``argpartition``.
3. **Measure** the ranked lists against a relevance matrix (``relevant[u, i] > 0`` when
   item ``i`` is a held-out item of user ``u``; graded values for graded NDCG):
   :func:`recall_at_k`, :func:`pair_recall_at_k`, :func:`precision_at_k`, :func:`ndcg_at_k`,
   :func:`hit_rate_at_k`, :func:`mrr_at_k`, :func:`recall_by_user`, :func:`precision_by_user`
   and :func:`ndcg_by_user` (one value per user), :func:`coverage_at_k`, :func:`novelty_at_k`,
   :func:`intra_list_diversity_at_k`; :func:`evaluate` computes the usual set at once.

**Always over the full catalogue.** Every user's list is ranked among *all* items, never
among a sample of, say, 100 random negatives plus the held-out item. Krichene and Rendle
(2020, "On Sampled Metrics for Item Recommendation", KDD) showed that sampled metrics are
not consistent with the exact ones: they can change the order of two models, and with few
samples they collapse towards a measure of popularity rather than of ranking quality.

Conventions (the same everywhere, tested in ``tests/dev/test_evaluation.py``):

* Users without any relevant item are left out of the per-user means (their recall is
  undefined); when no user has one, the metric is ``nan``.
* ``k`` larger than the catalogue is allowed: the list simply holds every rankable item.
  A user with fewer rankable items than ``k`` (most excluded) gets a shorter list, padded
  with ``-1`` in the array :func:`top_k` returns; padding is never a hit.
* precision@k divides by ``k`` (the slots asked for), recall@k by the user's number of
  relevant items, NDCG@k by the DCG of the ideal list of length ``k``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from recsys_course.data.split import (
    TimeSplit,
    global_time_split,
    leave_last_k,
    rolling_time_splits,
    split_ratings as random_split,
)

__all__ = [
    "TimeSplit",
    "coverage_at_k",
    "evaluate",
    "global_time_split",
    "hit_rate_at_k",
    "interaction_matrix",
    "intra_list_diversity_at_k",
    "item_probability",
    "leave_last_k",
    "mrr_at_k",
    "ndcg_at_k",
    "ndcg_by_user",
    "novelty_at_k",
    "pair_recall_at_k",
    "precision_at_k",
    "precision_by_user",
    "paired_standard_error",
    "random_split",
    "recall_at_k",
    "recall_by_user",
    "rolling_time_splits",
    "standard_error",
    "top_k",
]

PAD = -1  #: the item index that fills a list shorter than k


# ----------------------------------------------------------------------------- inputs
def interaction_matrix(frame: pd.DataFrame, users, items, *, user_col: str = "user_id",
                       item_col: str = "movie_id", value_col: str | None = None) -> np.ndarray:
    """Dense ``[len(users), len(items)]`` matrix of the interactions in ``frame``.

    ``bool`` (True where the user interacted with the item) unless ``value_col`` is given,
    then ``float64`` holding that column's value (e.g. the rating, for graded NDCG). Rows
    whose user or item is not listed are ignored; a repeated pair keeps its last value.
    """
    rows = pd.Index(list(users)).get_indexer(frame[user_col])
    cols = pd.Index(list(items)).get_indexer(frame[item_col])
    keep = (rows >= 0) & (cols >= 0)
    if value_col is None:
        matrix = np.zeros((len(users), len(items)), dtype=bool)
        matrix[rows[keep], cols[keep]] = True
    else:
        matrix = np.zeros((len(users), len(items)), dtype=np.float64)
        matrix[rows[keep], cols[keep]] = frame[value_col].to_numpy(dtype=np.float64)[keep]
    return matrix


def ranked_matrix(recommendations: Mapping, users, items, k: int) -> np.ndarray:
    """``int64 [len(users), k]``: lists of ids (``{user: [item, ...]}``, best first) as the
    item indices that the metrics below take. Items not in ``items`` and users missing from
    ``recommendations`` leave :data:`PAD` (``-1``), which never counts as a hit."""
    k = _check_k(k)
    index = pd.Index(list(items))
    ranked = np.full((len(users), k), PAD, dtype=np.int64)
    for row, user in enumerate(users):
        found = index.get_indexer(list(recommendations.get(user, []))[:k])
        found = found[found >= 0]
        ranked[row, : len(found)] = found
    return ranked


def _matrix(name: str, value, ndim: int = 2) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    return array


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


# ----------------------------------------------------------------------------- ranking
def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Each row's ``k`` highest-scoring items, best first.

    Args:
        scores: ``float [n_users, n_items]``, higher is better; no NaN.
        k: list length; may exceed ``n_items``.
        exclude: optional ``bool [n_users, n_items]``; True items are never listed.

    Returns:
        ``int64 [n_users, min(k, n_items)]`` item indices. Equal scores are ordered by the
        lower item index (a stable sort, the same on every machine). Where a user has fewer
        than ``min(k, n_items)`` items left after ``exclude``, the row ends with ``-1``.
    """
    scores = _matrix("scores", scores).astype(np.float64, copy=False)
    k = _check_k(k)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: top_k cannot rank them (replace them, e.g. with -inf)")
    excluded = np.zeros(scores.shape, dtype=bool) if exclude is None else _matrix("exclude", exclude).astype(bool)
    if excluded.shape != scores.shape:
        raise ValueError(f"exclude has shape {excluded.shape}, scores {scores.shape}: they must match")
    width = min(k, scores.shape[1])
    # lexsort: the last key is the primary one; it is stable, so equal keys keep index order.
    order = np.lexsort((-scores, excluded), axis=-1)[:, :width]
    return np.where(np.take_along_axis(excluded, order, axis=1), PAD, order).astype(np.int64)


def _hits(ranked: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """``float [n_users, min(k, width)]``: the relevance of each listed item (0 for padding)."""
    ranked = _matrix("ranked", ranked)[:, : _check_k(k)]
    relevant = _matrix("relevant", relevant)
    if ranked.shape[0] != relevant.shape[0]:
        raise ValueError(f"ranked has {ranked.shape[0]} users, relevant {relevant.shape[0]}: they must match")
    valid = ranked >= 0
    gains = np.take_along_axis(relevant.astype(np.float64), np.where(valid, ranked, 0), axis=1)
    return np.where(valid, gains, 0.0)


def _users_with_relevant(relevant: np.ndarray) -> np.ndarray:
    return (np.asarray(relevant) > 0).sum(axis=1) > 0


def _mean(values: np.ndarray, users: np.ndarray) -> float:
    return float(np.mean(values[users])) if users.any() else float("nan")


# ----------------------------------------------------------------------------- accuracy
def recall_by_user(ranked: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """``float [n_users]``: each user's |top k ∩ relevant| / |relevant|, ``nan`` for a user
    without relevant items (the users :func:`recall_at_k` leaves out). Two models' values on
    the same users give the paired standard error of their difference
    (:func:`paired_standard_error`)."""
    hit = _hits(ranked, relevant, k) > 0
    counts = (np.asarray(relevant) > 0).sum(axis=1)
    return np.where(counts > 0, hit.sum(axis=1) / np.maximum(counts, 1), np.nan)


def recall_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean over users with relevant items of |top k ∩ relevant| / |relevant|."""
    return _mean(recall_by_user(ranked, relevant, k), _users_with_relevant(relevant))


def pair_recall_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Share of all relevant (user, item) pairs found in their user's top k (micro-averaged
    recall: users with many relevant items weigh more). On unmasked lists this is TFRS's
    factorized top-k accuracy when each user is queried once. ``nan`` without pairs."""
    hit = _hits(ranked, relevant, k) > 0
    total = int((np.asarray(relevant) > 0).sum())
    return float(hit.sum() / total) if total else float("nan")


def precision_by_user(ranked: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """``float [n_users]``: each user's |top k ∩ relevant| / k, ``nan`` for a user without
    relevant items (the users :func:`precision_at_k` leaves out). Per-user values give, e.g.,
    the standard error of a difference in precision between two lists of the same users."""
    hit = _hits(ranked, relevant, k) > 0
    return np.where(_users_with_relevant(relevant), hit.sum(axis=1) / _check_k(k), np.nan)


def precision_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean over users with relevant items of |top k ∩ relevant| / k."""
    return _mean(precision_by_user(ranked, relevant, k), _users_with_relevant(relevant))


def hit_rate_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Share of users (with relevant items) that have at least one relevant item in the top k."""
    hit = _hits(ranked, relevant, k) > 0
    return _mean(hit.any(axis=1).astype(np.float64), _users_with_relevant(relevant))


def mrr_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean reciprocal rank of each user's first relevant item in the top k (0 if none)."""
    hit = _hits(ranked, relevant, k) > 0
    first = np.argmax(hit, axis=1)  # index of the first True (0 when there is none)
    reciprocal = np.where(hit.any(axis=1), 1.0 / (first + 1), 0.0)
    return _mean(reciprocal, _users_with_relevant(relevant))


def rating_gains(stars: np.ndarray) -> np.ndarray:
    """Graded gains ``2**r - 1`` of ratings of ``r`` stars (``float64``, same shape), 0 where
    ``stars`` is 0 (no rating): the ``relevant`` of graded NDCG (:func:`ndcg_at_k`)."""
    stars = np.asarray(stars, np.float64)
    return np.where(stars > 0, 2.0**stars - 1.0, 0.0)


def ndcg_by_user(ranked: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """``float [n_users]``: each user's NDCG@k (see :func:`ndcg_at_k`), ``nan`` for a user
    without relevant items (the users :func:`ndcg_at_k` leaves out)."""
    relevant = _matrix("relevant", relevant).astype(np.float64)
    if (relevant < 0).any():
        raise ValueError("relevant holds negative gains; NDCG needs gains >= 0")
    gains = _hits(ranked, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    dcg = (gains * discounts).sum(axis=1)
    ideal_width = min(_check_k(k), relevant.shape[1])
    ideal = -np.sort(-relevant, axis=1)[:, :ideal_width]
    idcg = (ideal * (1.0 / np.log2(np.arange(2, ideal_width + 2)))).sum(axis=1)
    users = idcg > 0
    return np.where(users, dcg / np.where(users, idcg, 1.0), np.nan)


def ndcg_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean NDCG@k over users with relevant items.

    The gain of an item is its value in ``relevant`` (bool gives binary NDCG; pass ratings
    or ``2**rating - 1`` for graded NDCG). DCG@k = sum over ranks r = 1..k of
    gain / log2(r + 1); it is divided by the DCG of the ideal list: the user's ``k``
    largest gains (fewer when the catalogue or the user's relevant set is smaller).
    """
    values = ndcg_by_user(ranked, relevant, k)
    return _mean(values, ~np.isnan(values))


# ----------------------------------------------------------------------------- beyond accuracy
def coverage_at_k(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one user's top k."""
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    listed = _matrix("ranked", ranked)[:, : _check_k(k)]
    return float(np.unique(listed[listed >= 0]).size / n_items)


def item_probability(seen: np.ndarray) -> np.ndarray:
    """``float [n_items]``: the smoothed share of users who interacted with each item,
    ``(users with the item + 1) / (n_users + 1)``; the +1 keeps a never-seen item's
    self-information finite. ``seen`` is the ``bool [n_users, n_items]`` training matrix."""
    seen = _matrix("seen", seen).astype(bool)
    return (seen.sum(axis=0) + 1.0) / (seen.shape[0] + 1.0)


def novelty_at_k(ranked: np.ndarray, probability: np.ndarray, k: int) -> float:
    """Mean self-information -log2 p(item) of the recommended items (Zhou et al. 2010).

    ``probability``: ``float [n_items]`` in (0, 1], e.g. :func:`item_probability`. Averaged
    over every listed (user, slot); higher means less popular recommendations. ``nan`` when
    nothing is listed.
    """
    probability = _matrix("probability", probability, ndim=1).astype(np.float64)
    if ((probability <= 0) | (probability > 1)).any():
        raise ValueError("probability must lie in (0, 1]; smooth zero counts (see item_probability)")
    listed = _matrix("ranked", ranked)[:, : _check_k(k)]
    listed = listed[listed >= 0]
    return float(np.mean(-np.log2(probability[listed]))) if listed.size else float("nan")


def intra_list_diversity_at_k(ranked: np.ndarray, item_features: np.ndarray, k: int) -> float:
    """Mean over users of the mean pairwise cosine *distance* (1 - cosine similarity)
    between the feature vectors (``float [n_items, d]``, e.g. multi-hot genres) of the items
    in their top k. Lists with fewer than two items are left out (``nan`` if all are); an
    all-zero feature vector has similarity 0 with everything."""
    features = _matrix("item_features", item_features).astype(np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)
    listed = _matrix("ranked", ranked)[:, : _check_k(k)]
    valid = listed >= 0
    # One einsum over all lists instead of a small matrix product per user: einsum runs its
    # own loops, so it never pays for BLAS threads (which dominate tiny products on a busy
    # machine). Padding gets a zero vector and is left out of the pair count.
    vectors = np.where(valid[..., None], unit[np.where(valid, listed, 0)], 0.0)
    similarity = np.einsum("ukd,uld->ukl", vectors, vectors)
    n = valid.sum(axis=1)
    users = n >= 2
    off_diagonal = similarity.sum(axis=(1, 2)) - np.einsum("ukk->u", similarity)
    values = 1.0 - off_diagonal[users] / (n[users] * (n[users] - 1))
    return float(np.mean(values)) if values.size else float("nan")


# ----------------------------------------------------------------------------- all at once
def evaluate(
    scores: np.ndarray,
    relevant: np.ndarray,
    *,
    seen: np.ndarray | None = None,
    ks: tuple[int, ...] = (10, 50),
    probability: np.ndarray | None = None,
    item_features: np.ndarray | None = None,
) -> dict[str, float]:
    """The standard report of a score matrix: for every ``k`` in ``ks``, recall, precision,
    NDCG, hit rate, MRR and coverage, plus novelty (with ``probability``) and intra-list
    diversity (with ``item_features``). Items in ``seen`` are excluded from the lists (the
    keys then say ``_masked`` for recall: ``recall@10_masked``)."""
    ranked = top_k(scores, max(ks), exclude=seen)
    suffix = "_masked" if seen is not None else ""
    n_items = np.asarray(scores).shape[1]
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}{suffix}"] = recall_at_k(ranked, relevant, k)
        out[f"precision@{k}"] = precision_at_k(ranked, relevant, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
        out[f"hit_rate@{k}"] = hit_rate_at_k(ranked, relevant, k)
        out[f"mrr@{k}"] = mrr_at_k(ranked, relevant, k)
        out[f"coverage@{k}"] = coverage_at_k(ranked, n_items, k)
        if probability is not None:
            out[f"novelty@{k}"] = novelty_at_k(ranked, probability, k)
        if item_features is not None:
            out[f"diversity@{k}"] = intra_list_diversity_at_k(ranked, item_features, k)
    return out


def standard_error(values) -> float:
    """Standard error of the mean of ``values`` (NaNs dropped; nan for fewer than two)."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size < 2:
        return float("nan")
    return float(x.std(ddof=1) / np.sqrt(x.size))


def paired_standard_error(a, b) -> float:
    """Standard error of ``mean(a) - mean(b)`` when ``a[i]`` and ``b[i]`` were measured on the
    same user (or user-cutoff pair, or seed): the standard error of the paired differences.
    Pairs with a NaN on either side are dropped. Raises ``ValueError`` when the shapes differ.
    """
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length, got {a.size} and {b.size}")
    return standard_error(a - b)


def rounded(metrics: Mapping[str, float], digits: int = 4) -> dict[str, float]:
    """The same metrics rounded for printing or JSON."""
    return {key: round(float(value), digits) for key, value in metrics.items()}
