"""The comparison machinery of lesson 07 (recsys_course.ann.compare): batched exact top-k and
the summaries the lesson and the benchmark print. Fixtures have unique answers (no ties)."""

import numpy as np
import pandas as pd
import pytest

from recsys_course.ann import compare as ann_compare


def distinct_scores(n_items: int, n_queries: int, seed: int):
    """Items and queries whose inner products are well separated for every query."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n_items, 8)).astype(np.float32)
    queries = rng.normal(size=(n_queries, 8)).astype(np.float32)
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    top = -np.sort(-scores, axis=1)[:, :11]
    assert np.min(-np.diff(top, axis=1)) > 1e-4, "fixture has near-ties"
    return items, queries, scores


@pytest.mark.parametrize("item_block", [None, 7, 64, 10_000])
def test_batched_exact_top_k_is_the_full_sort(item_block):
    items, queries, scores = distinct_scores(300, 5, seed=1)
    expected = np.argsort(-scores, axis=1)[:, :10]
    result = ann_compare.exact_top_k_batched(items, queries, 10, item_block=item_block)
    assert result.shape == (5, 10) and np.issubdtype(result.dtype, np.integer)
    assert np.array_equal(result, expected)


def test_batched_exact_top_k_caps_k_and_accepts_one_query():
    items, queries, scores = distinct_scores(4, 1, seed=2)
    result = ann_compare.exact_top_k_batched(items, queries[0], 10)
    assert np.array_equal(result, np.argsort(-scores, axis=1))


def summary_table() -> pd.DataFrame:
    rows = [
        ("exact_single", "one", 1.0, 100.0, None),
        ("exact_batched", "batch=1", 1.0, 90.0, 1), ("exact_batched", "batch=16", 1.0, 400.0, 16),
        ("exact_batched", "batch=64", 1.0, 900.0, 64),
        ("annoy", "a", 0.90, 2000.0, None), ("annoy", "b", 0.96, 500.0, None), ("annoy", "c", 0.99, 200.0, None),
        ("hnsw", "x", 0.97, 5000.0, None), ("hnsw", "y", 0.80, 9000.0, None),
    ]
    return pd.DataFrame(rows, columns=["library", "setting", "recall@10", "qps", "batch_size"])


def test_best_at_recall_picks_the_fastest_good_enough_setting():
    best = ann_compare.best_at_recall(summary_table(), 0.95)
    assert best["annoy"]["setting"] == "b" and best["annoy"]["speedup_vs_exact_single"] == 5.0
    assert best["hnsw"]["setting"] == "x" and best["hnsw"]["qps"] == 5000.0
    assert "scann" not in best


def test_crossover_is_the_first_batch_size_faster_than_annoy():
    assert ann_compare.crossover_batch_size(summary_table(), "annoy", 0.95) == 64
    assert ann_compare.crossover_batch_size(summary_table(), "hnsw", 0.95) is None
    assert ann_compare.crossover_batch_size(summary_table(), "annoy", 0.999) is None


def test_pareto_front_keeps_only_undominated_rows():
    front = ann_compare.pareto_front(summary_table())
    assert list(front["setting"]) == ["y", "x", "batch=64"]
