"""Popularity, item-kNN and EASE from a sparse interaction matrix: the course's item-based
baselines at any scale, without TensorFlow.

Each model reads an interaction matrix ``X`` (``[n_users, n_items]``: who rated what in
training, usually 0/1) and scores a user's items from that user's row ``h``:

* **popularity**: every user gets each item's number of training users
  (:func:`popularity_counts`);
* **item-kNN**: ``h @ S`` with ``S`` the cosine similarity between item columns, zero
  diagonal; optionally only each item's ``neighbours`` most similar items
  (:func:`item_knn_weights`);
* **EASE** (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
  ``h @ B`` with ``B`` the ridge regression of every item column on all the others, in
  closed form (:func:`ease_weights`).

``X`` may be a dense array (the lessons' small matrices) or a ``scipy.sparse`` matrix or
array. Nothing here densifies ``X``: the item x item Gram matrix ``X^T X`` is built from
the sparse matrix one block of columns at a time (:func:`gram_blocks`), so memory holds one
block of ``n_items x block`` numbers beside the result. Item-kNN with ``neighbours`` keeps
only a sparse ``[n_items, n_items]`` result; EASE needs one dense ``n_items x n_items``
float64 matrix (8 n² bytes), which it inverts in place (a Cholesky factorisation, about
n³ floating-point operations). That square and that cube are why EASE stops being
practical when the catalogue grows (the scale ladder, ``course bench ladder``, measures it).

On dense input every function returns what the dense formulas of lesson 03 return
(``tests/dev/test_baselines.py`` checks it). This module imports NumPy and SciPy only, so a
process fitting EASE does not pay for importing TensorFlow (``recsys_course.models`` does).
"""

from __future__ import annotations

from collections.abc import Iterator

import time

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

__all__ = [
    "ease_weights",
    "gram_blocks",
    "interaction_csr",
    "item_knn_weights",
    "popularity_counts",
    "scores",
]

#: Default bound on the numbers in one Gram block (float64: 32 MB).
BLOCK_NUMBERS = 4_000_000


def interaction_csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int],
                    dtype=np.float32) -> sparse.csr_array:
    """The 0/1 interaction matrix ``[n_users, n_items]`` with a one at each
    ``(users[r], items[r])`` (integer indices; a repeated pair is still one).

    ``float32`` by default: ones and the co-occurrence counts computed from them are exact
    up to 2**24, and half the memory of float64."""
    users, items = np.asarray(users), np.asarray(items)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(f"users and items must be 1-D of the same length, got {users.shape} and {items.shape}")
    matrix = sparse.csr_array((np.ones(len(users), dtype=dtype), (users, items)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


def _sparse(interactions) -> sparse.csr_array:
    """``interactions`` as a CSR array, values kept (a dense input is converted once)."""
    if sparse.issparse(interactions):
        matrix = sparse.csr_array(interactions)
    else:
        dense = np.asarray(interactions, dtype=np.float64)
        if dense.ndim != 2:
            raise ValueError(f"interactions must be a [n_users, n_items] matrix, got shape {dense.shape}")
        matrix = sparse.csr_array(dense)
    if matrix.ndim != 2:
        raise ValueError(f"interactions must be a [n_users, n_items] matrix, got shape {matrix.shape}")
    return matrix


def popularity_counts(interactions) -> np.ndarray:
    """``float64 [n_items]``: how many users interacted with each item (the nonzero entries
    of each column of ``interactions``)."""
    matrix = _sparse(interactions)
    matrix.eliminate_zeros()
    return np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float64)


def gram_blocks(interactions, block: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """The item x item Gram matrix ``G = X^T X`` one block of columns at a time.

    Yields ``(columns, G[:, columns])`` with the block as ``float64 [n_items, width]``,
    columns in order. Each block is a sparse product (``X^T`` times the block's columns of
    ``X``, whose cost grows with the sum over users of their number of items squared), then
    densified, so memory holds one block (``block`` columns, by default about
    :data:`BLOCK_NUMBERS` numbers), never ``X`` densified."""
    matrix = _sparse(interactions)
    n_items = matrix.shape[1]
    width = int(block or max(1, BLOCK_NUMBERS // max(n_items, 1)))
    if width < 1:
        raise ValueError(f"block must be a positive number of columns, got {block!r}")
    transposed = matrix.T.tocsr()  # [n_items, n_users]
    columns = matrix.tocsc()
    for start in range(0, n_items, width):
        cols = slice(start, min(start + width, n_items))
        yield cols, (transposed @ columns[:, cols]).toarray().astype(np.float64, copy=False)


def item_knn_weights(interactions, neighbours: int | None = None, *, block: int | None = None):
    """Cosine similarity between the item columns of ``interactions``, zero diagonal.

    ``S[i, j] = G[i, j] / max(sqrt(G[i, i] G[j, j]), 1e-12)`` with ``G = X^T X``, and
    ``S[j, j] = 0`` (an item does not vote for itself); an item no user interacted with
    has a zero row and column. A user's scores are ``h @ S``.

    Args:
        interactions: ``[n_users, n_items]``, dense or ``scipy.sparse``.
        neighbours: ``None`` for every similarity: a dense ``float64 [n_items, n_items]``
            array. An integer ``k`` keeps, in each column ``j``, only the ``k`` largest
            positive similarities (item ``j``'s ``k`` nearest neighbours; equal values
            are kept in order of the lower item index): a ``scipy.sparse`` CSR array with
            at most ``k`` entries per column, ``k * n_items`` numbers instead of ``n_items²``.
        block: columns per Gram block (see :func:`gram_blocks`).
    """
    if neighbours is not None and (isinstance(neighbours, bool) or int(neighbours) != neighbours or neighbours < 1):
        raise ValueError(f"neighbours must be a positive integer or None, got {neighbours!r}")
    matrix = _sparse(interactions)
    n_items = matrix.shape[1]
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0), dtype=np.float64).ravel())
    dense = np.zeros((n_items, n_items)) if neighbours is None else None
    rows, cols, values = [], [], []
    for columns, gram in gram_blocks(matrix, block):
        index = np.arange(columns.start, columns.stop)
        gram /= np.maximum(np.outer(norms, norms[index]), 1e-12)
        gram[index, index - columns.start] = 0.0
        if dense is not None:
            dense[:, columns] = gram
            continue
        keep = _top_per_column(gram, int(neighbours))
        row, col = np.nonzero(keep)
        rows.append(row)
        cols.append(col + columns.start)
        values.append(gram[row, col])
    if dense is not None:
        return dense
    row, col, value = (np.concatenate(parts) if parts else np.zeros(0) for parts in (rows, cols, values))
    return sparse.csr_array((value, (row.astype(np.int64), col.astype(np.int64))), shape=(n_items, n_items))


def _top_per_column(block: np.ndarray, k: int) -> np.ndarray:
    """``bool`` mask of each column's ``k`` largest positive values; among equal values at
    the cut, the lower row index wins (the same on every machine, unlike argpartition)."""
    positive = block > 0
    if k >= block.shape[0]:
        return positive
    threshold = -np.partition(-block, k - 1, axis=0)[k - 1]  # each column's k-th largest
    above = block > threshold
    tied = block == threshold
    room = k - above.sum(axis=0)
    return (above | (tied & (np.cumsum(tied, axis=0) <= room))) & positive


def ease_weights(interactions, l2: float, *, block: int | None = None, timings: dict | None = None) -> np.ndarray:
    """EASE's item-to-item weights ``float64 [n_items, n_items]`` (Steck, 2019).

    ``B`` minimises ``||X - X B||² + l2 ||B||²`` subject to ``diag(B) = 0``: with
    ``P = (X^T X + l2 I)^-1``, ``B[i, j] = -P[i, j] / P[j, j]`` for ``i != j`` and
    ``B[j, j] = 0``. An item no user interacted with has a zero Gram row, so its row and
    column of ``B`` are zero (the inverse leaves it out on its own).

    Memory: one dense ``n_items x n_items`` float64 matrix (the Gram matrix, factorised and
    inverted in place by LAPACK's Cholesky routines ``dpotrf``/``dpotri``, then turned into
    ``B`` in place) plus one Gram block. Time: the Gram blocks, then about ``n_items³``
    floating-point operations for the inverse.

    ``timings``: a dict that, if given, receives the seconds of the two phases,
    ``"gram_seconds"`` and ``"inverse_seconds"`` (the inverse and the weights from it).

    Raises ValueError when ``l2`` is not a positive number.
    """
    if isinstance(l2, bool) or not isinstance(l2, (int, float, np.integer, np.floating)) or not l2 > 0:
        raise ValueError(f"l2 must be a positive number, got {l2!r}")
    matrix = _sparse(interactions)
    n_items = matrix.shape[1]
    started = time.perf_counter()
    weights = np.empty((n_items, n_items))
    for columns, gram in gram_blocks(matrix, block):
        weights[:, columns] = gram
    weights[np.diag_indices(n_items)] += float(l2)
    inverted = time.perf_counter()
    _invert_in_place(weights)
    diagonal = np.diag(weights).copy()
    weights /= -diagonal[None, :]
    weights[np.diag_indices(n_items)] = 0.0
    if timings is not None:
        timings["gram_seconds"] = inverted - started
        timings["inverse_seconds"] = time.perf_counter() - inverted
    return weights


def _invert_in_place(matrix: np.ndarray) -> None:
    """Overwrite the symmetric positive definite C-ordered ``matrix`` with its inverse."""
    n = matrix.shape[0]
    if n == 0:
        return
    # LAPACK works on Fortran-ordered arrays; the transpose of a C-ordered array is one
    # (same memory), and for a symmetric matrix it is the same matrix. Its "upper" triangle
    # is the C-ordered lower one.
    factor, info = lapack.dpotrf(matrix.T, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (LAPACK dpotrf info={info})")
    inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky inverse failed (LAPACK dpotri info={info})")
    if not np.shares_memory(inverse, matrix):  # LAPACK wrappers copy when they must
        matrix[...] = inverse.T
    # Only the C-ordered lower triangle is valid: mirror it, one block of rows at a time.
    step = max(1, BLOCK_NUMBERS // n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
        square = matrix[start:stop, start:stop]
        square[np.triu_indices(stop - start, 1)] = square.T[np.triu_indices(stop - start, 1)]


def scores(history, weights) -> np.ndarray:
    """``float64 [n_users, n_items]``: ``history @ weights`` for a block of users' rows
    (dense or sparse) and item weights (dense or sparse); always dense."""
    result = _sparse(history) @ weights if sparse.issparse(history) or sparse.issparse(weights) \
        else np.asarray(history, dtype=np.float64) @ weights
    return result.toarray() if sparse.issparse(result) else np.asarray(result, dtype=np.float64)
