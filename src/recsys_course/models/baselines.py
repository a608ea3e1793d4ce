"""The item-based baselines of the course, one home for each: popularity, item-kNN and EASE.

Each works on a ``[n_users, n_items]`` interaction matrix ``X`` (0/1: who rated what in
training) and scores a user's items from their history row ``h`` (the same 0/1 row):

* **popularity**: every user gets each item's number of training users
  (:func:`popularity_counts`);
* **item-kNN**: ``h @ S`` with ``S`` the cosine similarity between item columns, zero
  diagonal (:func:`item_knn_weights`);
* **EASE** (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
  ``h @ B`` with ``B`` the ridge regression of every item column on all the others, in
  closed form (:func:`ease_weights`).

Lesson 03 has learners write EASE (its exercise); ``tests/dev/test_funnel.py`` checks that
this version gives the lesson's reference weights. Lesson 06's funnel and lesson 08's
served funnel use these as candidate sources.
"""

from __future__ import annotations

import numpy as np


def _interactions(interactions) -> np.ndarray:
    x = np.asarray(interactions, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"interactions must be a [n_users, n_items] matrix, got shape {x.shape}")
    return x


def popularity_counts(interactions) -> np.ndarray:
    """``float64 [n_items]``: how many users interacted with each item (nonzero entries of
    each column of ``interactions``)."""
    return (_interactions(interactions) != 0).sum(axis=0).astype(np.float64)


def item_knn_weights(interactions) -> np.ndarray:
    """``float64 [n_items, n_items]``: cosine similarity between the item columns of
    ``interactions``, with a zero diagonal (an item does not vote for itself); an item no
    user interacted with has a zero row and column."""
    x = _interactions(interactions)
    gram = x.T @ x
    norms = np.sqrt(np.diag(gram))
    similarity = gram / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def ease_weights(interactions, l2: float) -> np.ndarray:
    """EASE's item-to-item weights ``float64 [n_items, n_items]`` (Steck, 2019).

    ``B`` minimises ``||X - X B||² + l2 ||B||²`` subject to ``diag(B) = 0``: with
    ``P = (X^T X + l2 I)^-1``, ``B[i, j] = -P[i, j] / P[j, j]`` for ``i != j``. Items no
    user interacted with are left out of the inverse and get zero weights (their Gram row is
    zero, so they could not be predicted from anything anyway), which also keeps the
    inverse small on a catalogue with many unrated items.

    Raises ValueError when ``l2`` is not a positive number.
    """
    if not (isinstance(l2, (int, float, np.floating)) and l2 > 0):
        raise ValueError(f"l2 must be a positive number, got {l2!r}")
    x = _interactions(interactions)
    active = np.flatnonzero((x != 0).any(axis=0))
    weights = np.zeros((x.shape[1], x.shape[1]))
    if active.size == 0:
        return weights
    part = x[:, active]
    precision = np.linalg.inv(part.T @ part + l2 * np.eye(active.size))
    block = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(block, 0.0)
    weights[np.ix_(active, active)] = block
    return weights
