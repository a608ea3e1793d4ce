"""Lesson 07: Annoy against exact search and against its peers.

Two measurements, both with the lesson's reference functions:

1. **Movie agreement**: train the id-only two-tower model on the dataset (80/20 split, seed
   42, the course's retrieval recipe ``models.train_retrieval``), index its movie embeddings
   with the inner-product-to-angular reduction, and report how much of TFRS
   ``BruteForce``'s top-10 Annoy returns for every training user (recall against exact
   search), for several ``search_k``; and how much of the exact cosine top-10 of every
   movie Annoy's ``get_nns_by_item`` returns.
2. **Libraries at scale**: ``COURSE_BENCH_04_ITEMS`` (default 1,000,000) synthetic clustered
   item embeddings of 32 dimensions and 200 queries, one ground truth, in one run:
   ``exact_single`` (NumPy, one query at a time), ``exact_batched`` (matrix product +
   ``argpartition``, several batch sizes), ``annoy`` (reduction, ``n_trees`` x
   ``search_k``), ``hnsw`` (Faiss HNSW, ``efSearch`` grid) and ``scann`` (when it can be
   imported; otherwise the reason is reported under ``skipped``). Each setting reports
   ``recall@10``, ``qps``, ``build_seconds``, ``index_mb``. Also Annoy's ``dot`` metric at
   10 trees and TFRS ``BruteForce`` one query at a time, for the lesson's comparisons.

Targets: some index reaches recall@10 >= 0.95 at >= 50x the single-query exact throughput
(``target_recall_0.95_at_50x_met``); the batch size at which batched exact search overtakes
Annoy's best setting at recall 0.95 is reported (``exact_batched_overtakes_annoy_at_batch``).

Slow by design (tens of minutes at 1M on 2 cores): ``nice -n 10 course bench 07``; set
``COURSE_BENCH_04_ITEMS=200000`` for a quicker run (``COURSE_BENCH_QUICK=1``, a smoke test:
1000 items by default).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from recsys_course.ann import compare as ann_compare
from recsys_course.ann.sweep import annoy_sweep, best_setting, clustered_corpus, timed_queries
from recsys_course.tooling.benchmarks import quick
from recsys_course.data import MovieLens, split_ratings

K = 10
SEED = 42
ANNOY_TREES = (10, 30)
SEARCH_K_GRID = (1000, 2000, 5000, 10000, 30000)
HNSW_M = (16,)
HNSW_EF = (16, 32, 64, 128, 256)
SCANN_LEAVES = (10, 25, 50, 100)
BATCH_SIZES = (1, 4, 16, 64, 200)
DOT_N_TREES = 10
N_QUERIES = 200
REPEATS = 2
LIBRARIES = ("annoy", "scann", "hnsw", "exact_single", "exact_batched")


def movie_agreement(data: MovieLens, lesson) -> dict:
    """Annoy against exact search on the trained movie embeddings (the course's retrieval
    recipe, ``models.train_retrieval``): user-to-movie (inner product, reduction, 10 trees)
    and movie-to-movie (angular, ``get_nns_by_item``)."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from recsys_course.env import seed_everything
    from recsys_course.models import train_retrieval

    train, _ = split_ratings(data.ratings, 0.2, seed=SEED)
    started = time.perf_counter()
    seed_everything(SEED)
    towers = train_retrieval(train, data.movies, seed=SEED)
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
        agreement[str(search_k)] = round(lesson.recall_against_exact(found, exact, K), 4)
    index.unload()

    unit = towers.movie_embeddings / np.linalg.norm(towers.movie_embeddings, axis=1, keepdims=True)
    similar_index = lesson.build_annoy_index(towers.movie_embeddings, metric="angular", n_trees=10, seed=SEED)
    exact_similar = [[i for i in lesson.exact_top_k(unit, unit[m], K + 1) if i != m][:K] for m in range(len(unit))]
    similar = {}
    for search_k in (-1, 200, 1000):
        found = [[i for i in similar_index.get_nns_by_item(m, K + 1, search_k=search_k) if i != m][:K]
                 for m in range(len(unit))]
        similar[str(search_k)] = round(lesson.recall_against_exact(found, exact_similar, K), 4)
    similar_index.unload()
    return {
        "n_movies": int(len(towers.movie_ids)),
        "n_users": int(len(users)),
        "train_seconds": round(train_seconds, 1),
        "best_epoch_on_validation": towers.best_epoch,
        "validation_top_100_by_epoch": [round(float(v), 4) for v in towers.history["validation_top_100"]],
        "n_trees": 10,
        f"agreement@{K}_by_search_k": agreement,
        f"similar_items_recall@{K}_by_search_k": similar,
        "target_agreement_0.95_met": max(agreement.values()) >= 0.95,
    }


def libraries_at_scale(lesson, n_items: int) -> dict:
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    items, queries = clustered_corpus(n_items, N_QUERIES, dim=32, seed=SEED)
    started = time.perf_counter()
    table, truth, skipped = ann_compare.compare_libraries(
        items, queries, lesson, k=K, repeats=REPEATS, seed=SEED,
        annoy_trees=ANNOY_TREES, annoy_search_k=SEARCH_K_GRID, hnsw_m=HNSW_M, hnsw_ef=HNSW_EF,
        scann_leaves=SCANN_LEAVES, batch_sizes=BATCH_SIZES,
        log=lambda message: print(f"[bench 07] {time.perf_counter() - started:7.1f} s: {message}",
                                  file=sys.stderr, flush=True),  # stdout is the JSON
    )
    counts = ("n_trees", "search_k", "batch_size")  # float columns after the concat; ints here
    libraries = {
        library: [
            {key: int(value) if key in counts else value for key, value in row.items()}
            for row in table[table["library"] == library].drop(columns="library").dropna(axis=1, how="all")
            .to_dict(orient="records")
        ]
        for library in LIBRARIES
    }
    best = ann_compare.best_at_recall(table, 0.95, K)
    single_qps = float(table.loc[table["library"] == "exact_single", "qps"].iloc[0])
    indexes = {name: row for name, row in best.items() if name in ("annoy", "scann", "hnsw")}

    brute_force = tfrs.layers.factorized_top_k.BruteForce(k=K)
    brute_force.index(tf.constant(items))
    brute_qps, brute_answers = timed_queries(lambda q: brute_force(q[None, :])[1].numpy()[0], queries, REPEATS)

    dot_table = annoy_sweep(
        items, queries, truth,
        build_index=lesson.build_annoy_index,
        search=lambda index, q, k, search_k: index.get_nns_by_vector(q, k, search_k=search_k),
        recall_at_k=lesson.recall_against_exact, n_trees_grid=(DOT_N_TREES,), search_k_grid=SEARCH_K_GRID,
        metric="dot", exact_qps=single_qps, k=K, repeats=REPEATS, seed=SEED,
    )
    return {
        "n_items": n_items,
        "dim": int(items.shape[1]),
        "n_queries": N_QUERIES,
        "timing": (f"fastest of {REPEATS} passes, every search on one thread (builds may use every "
                   "core); single-query methods one query at a time"),
        "libraries": libraries,
        "skipped": skipped,
        "best_at_recall_0.95": {
            name: {key: row[key] for key in ("qps", "speedup_vs_exact_single", "setting")}
            for name, row in best.items()
        },
        "target_recall_0.95_at_50x_met": bool(any(r["speedup_vs_exact_single"] >= 50 for r in indexes.values())),
        "exact_batched_overtakes_annoy_at_batch": ann_compare.crossover_batch_size(table, "annoy", 0.95, K),
        "exact_qps_tfrs_bruteforce_single": round(brute_qps, 1),
        "tfrs_bruteforce_recall_vs_numpy": round(lesson.recall_against_exact(brute_answers, truth, K), 4),
        "annoy_dot_metric": dot_table.drop(columns="index_bytes").to_dict(orient="records"),
        "annoy_dot_best_at_recall_0.95": best_setting(dot_table, 0.95, K),
    }


def annoy_benchmark(data: MovieLens, lesson) -> dict:
    n_items = int(os.environ.get("COURSE_BENCH_04_ITEMS", "1000" if quick() else "1000000"))
    if n_items < 1000:
        raise ValueError(f"COURSE_BENCH_04_ITEMS={n_items}: use at least 1000 items (default 1000000)")
    scale = libraries_at_scale(lesson, n_items)
    return {
        # The contract: lessons["07"]["libraries"] and lessons["07"]["best_at_recall_0.95"].
        "libraries": scale.pop("libraries"),
        "best_at_recall_0.95": scale.pop("best_at_recall_0.95"),
        "sweep": scale,
        "movie_agreement": movie_agreement(data, lesson),
    }
