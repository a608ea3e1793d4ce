"""Lesson 04: Annoy against exact search.

Two measurements, both with the lesson's reference functions:

1. **Movie agreement**: train the id-only two-tower model on the dataset (80/20 split, seed
   42, 3 epochs), index its movie embeddings with the inner-product-to-angular reduction,
   and report how much of TFRS ``BruteForce``'s top-10 Annoy returns for every training
   user, for several ``search_k``. Target: >= 0.95 at some setting.
2. **Sweep at scale**: ``COURSE_BENCH_04_ITEMS`` (default 1,000,000) synthetic clustered
   item embeddings of 32 dimensions and 200 queries. Exact search one query at a time with
   NumPy and with TFRS ``BruteForce``; the faster of the two is the baseline. Then recall@10,
   queries per second, build seconds and index bytes for a grid of ``n_trees`` x
   ``search_k`` with the reduction, and the same ``search_k`` values with Annoy's ``dot``
   metric. Target: recall@10 >= 0.95 at >= 10x the exact baseline's throughput.

Slow by design (minutes): run it with ``nice -n 10 course bench 04``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from recsys_course.annoy_sweep import annoy_sweep, best_setting, clustered_corpus, exact_baseline, timed_queries
from recsys_course.bench import register
from recsys_course.data import MovieLens, split_ratings

K = 10
SEED = 42
N_TREES_GRID = (10, 30, 60)
SEARCH_K_GRID = (1000, 2000, 5000, 10000, 30000)
DOT_N_TREES = 30
N_QUERIES = 200
REPEATS = 3


def movie_agreement(data: MovieLens, lesson) -> dict:
    """Annoy (reduction, 10 trees) against BruteForce on the trained movie embeddings."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from recsys_course.two_tower import train_two_tower

    train, _ = split_ratings(data.ratings, 0.2, seed=SEED)
    started = time.perf_counter()
    towers = train_two_tower(train, data.movies, embedding_dim=32, epochs=3, seed=SEED)
    train_seconds = time.perf_counter() - started

    users = np.array(sorted(train["user_id"].unique()))
    brute_force = tfrs.layers.factorized_top_k.BruteForce(towers.user_model, k=K)
    brute_force.index(tf.constant(towers.movie_embeddings), tf.constant(np.arange(len(towers.movie_ids))))
    _, exact = brute_force(tf.constant(users))
    exact = exact.numpy()

    augmented, _ = lesson.augment_for_mips(towers.movie_embeddings)
    index = lesson.build_annoy_index(augmented, metric="angular", n_trees=10, seed=SEED)
    vectors = towers.user_embeddings(users)
    agreement = {}
    for search_k in (-1, 200, 500, 2000):
        found = [lesson.mips_search(index, q, K, search_k) for q in vectors]
        agreement[str(search_k)] = round(lesson.recall_at_k(found, exact, K), 4)
    index.unload()
    return {
        "n_movies": int(len(towers.movie_ids)),
        "n_users": int(len(users)),
        "train_seconds": round(train_seconds, 1),
        "n_trees": 10,
        f"agreement@{K}_by_search_k": agreement,
        "target_agreement_0.95_met": max(agreement.values()) >= 0.95,
    }


def large_sweep(lesson, n_items: int) -> dict:
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    items, queries = clustered_corpus(n_items, N_QUERIES, dim=32, seed=SEED)
    truth, numpy_qps = exact_baseline(items, queries, lesson.exact_top_k, k=K, repeats=REPEATS)
    brute_force = tfrs.layers.factorized_top_k.BruteForce(k=K)
    brute_force.index(tf.constant(items))
    brute_qps, brute_answers = timed_queries(
        lambda q: brute_force(q[None, :])[1].numpy()[0], queries, REPEATS
    )
    exact_qps = max(numpy_qps, brute_qps)

    augmented, _ = lesson.augment_for_mips(items)
    table = annoy_sweep(
        augmented, queries, truth,
        build_index=lesson.build_annoy_index, search=lesson.mips_search, recall_at_k=lesson.recall_at_k,
        n_trees_grid=N_TREES_GRID, search_k_grid=SEARCH_K_GRID, metric="angular",
        exact_qps=exact_qps, k=K, repeats=REPEATS, seed=SEED,
    )
    del augmented
    dot_table = annoy_sweep(
        items, queries, truth,
        build_index=lesson.build_annoy_index,
        search=lambda index, q, k, search_k: index.get_nns_by_vector(q, k, search_k=search_k),
        recall_at_k=lesson.recall_at_k, n_trees_grid=(DOT_N_TREES,), search_k_grid=SEARCH_K_GRID,
        metric="dot", exact_qps=exact_qps, k=K, repeats=REPEATS, seed=SEED,
    )
    best = best_setting(table, 0.95, K)
    return {
        "n_items": n_items,
        "dim": int(items.shape[1]),
        "n_queries": N_QUERIES,
        "timing": f"one query at a time, fastest of {REPEATS} passes",
        "exact_qps_numpy": round(numpy_qps, 1),
        "exact_qps_tfrs_bruteforce": round(brute_qps, 1),
        "tfrs_bruteforce_recall_vs_numpy": round(lesson.recall_at_k(brute_answers, truth, K), 4),
        "exact_qps_baseline": round(exact_qps, 1),
        "reduction_angular": table.to_dict(orient="records"),
        "dot_metric": dot_table.to_dict(orient="records"),
        "fastest_at_recall_0.95": best,
        "target_recall_0.95_at_10x_met": bool(best is not None and best["speedup"] >= 10),
    }


@register("04")
def annoy_benchmark(data: MovieLens, lesson) -> dict:
    n_items = int(os.environ.get("COURSE_BENCH_04_ITEMS", "1000000"))
    return {
        "movie_agreement": movie_agreement(data, lesson),
        "sweep": large_sweep(lesson, n_items),
    }
