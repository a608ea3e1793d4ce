"""The sparse baselines of ``recsys_course.baselines`` give the dense formulas' answers.

The dense formulas below are lesson 03's (popularity, cosine item-kNN, EASE with
``numpy.linalg.inv``), written out once here as the reference. Blocks as small as three
columns make every code path of the blocked Gram matrix run on a small fixture.
"""

from __future__ import annotations

import numpy as np
import pytest

sparse = pytest.importorskip("scipy.sparse")

from recsys_course import baselines  # noqa: E402


def dense_knn(x: np.ndarray) -> np.ndarray:
    gram = x.T @ x
    norms = np.sqrt(np.diag(gram))
    similarity = gram / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def dense_ease(x: np.ndarray, l2: float) -> np.ndarray:
    precision = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


@pytest.fixture(scope="module")
def interactions() -> np.ndarray:
    """40 users x 11 items, 0/1, item 7 never rated (a zero column)."""
    x = (np.random.default_rng(3).random((40, 11)) < 0.3).astype(np.float64)
    x[:, 7] = 0.0
    return x


@pytest.fixture(params=["dense", "sparse"])
def given(request, interactions):
    return interactions if request.param == "dense" else sparse.csr_array(interactions)


def test_interaction_csr_has_one_per_pair():
    matrix = baselines.interaction_csr(np.array([0, 0, 2, 2]), np.array([1, 1, 0, 3]), (3, 4))
    expected = np.zeros((3, 4))
    expected[0, 1] = expected[2, 0] = expected[2, 3] = 1
    assert np.array_equal(matrix.toarray(), expected)
    with pytest.raises(ValueError, match="same length"):
        baselines.interaction_csr(np.array([0, 1]), np.array([0]), (2, 2))


def test_popularity_counts_users_per_item(given, interactions):
    assert np.array_equal(baselines.popularity_counts(given), (interactions != 0).sum(axis=0))


def test_gram_blocks_assemble_x_transpose_x(given, interactions):
    blocks = list(baselines.gram_blocks(given, block=3))
    assert [b.shape for _, b in blocks] == [(11, 3), (11, 3), (11, 3), (11, 2)]
    assert np.allclose(np.concatenate([b for _, b in blocks], axis=1), interactions.T @ interactions)


def test_item_knn_with_every_neighbour_is_the_dense_cosine(given, interactions):
    weights = baselines.item_knn_weights(given, block=3)
    assert isinstance(weights, np.ndarray) and weights.shape == (11, 11)
    assert np.allclose(weights, dense_knn(interactions), atol=1e-12)
    assert not weights[7].any() and not weights[:, 7].any()


def test_item_knn_neighbours_keeps_each_columns_k_largest(given, interactions):
    full = dense_knn(interactions)
    kept = baselines.item_knn_weights(given, neighbours=3, block=4)
    assert sparse.issparse(kept)
    kept = kept.toarray()
    for j in range(11):
        column = full[:, j]
        expected = np.zeros(11)
        best = np.lexsort((np.arange(11), -column))[:3]  # ties: lower index first
        expected[best] = column[best]
        expected[expected <= 0] = 0
        assert np.allclose(kept[:, j], expected, atol=1e-12), f"column {j}"


def test_item_knn_breaks_ties_at_the_cut_by_the_lower_index():
    # Items 1, 2 and 3 are each rated by the same two users as item 0: all three tie as
    # item 0's neighbours, so k = 2 keeps items 1 and 2.
    x = np.zeros((4, 5))
    x[:2, :4] = 1
    x[2:, 4] = 1
    kept = baselines.item_knn_weights(x, neighbours=2).toarray()
    assert np.flatnonzero(kept[:, 0]).tolist() == [1, 2]
    assert not kept[:, 4].any(), "an item with no co-rated neighbour keeps no zero-similarity entries"


def test_ease_is_the_dense_closed_form(given, interactions):
    weights = baselines.ease_weights(given, 5.0, block=3)
    assert weights.shape == (11, 11)
    assert np.allclose(weights, dense_ease(interactions, 5.0), atol=1e-10)
    assert np.all(np.diag(weights) == 0)
    assert not weights[7].any() and not weights[:, 7].any(), "an unrated item has zero weights"


def test_ease_two_items_by_hand():
    # G = [[2, 1], [1, 2]], l2 = 1: each weight is the one-variable ridge 1 / (2 + 1).
    x = np.array([[1, 1], [1, 0], [0, 1]], dtype=float)
    assert np.allclose(baselines.ease_weights(x, 1.0), [[0, 1 / 3], [1 / 3, 0]])


@pytest.mark.parametrize("l2", [0, -1.0, True, "5", float("nan")])
def test_ease_refuses_a_penalty_that_is_not_positive(l2, interactions):
    with pytest.raises(ValueError, match="l2 must be a positive number"):
        baselines.ease_weights(interactions, l2)


def test_scores_agree_for_dense_and_sparse_operands(interactions):
    knn = baselines.item_knn_weights(interactions, neighbours=4)
    history = interactions[:6]
    expected = history @ knn.toarray()
    for h in (history, sparse.csr_array(history)):
        for w in (knn, knn.toarray()):
            assert np.allclose(baselines.scores(h, w), expected)
