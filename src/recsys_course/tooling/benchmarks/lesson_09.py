"""Lesson 09: input pipeline throughput and multi-worker training, at a larger scale.

1. **Pipeline**: the dataset's ratings tiled to ``COURSE_BENCH_07_ROWS`` rows (default
   2,000,000; copies rename the users and jitter the ratings), written as 16 TFRecord
   shards; one pass of each variant of ``recsys_course.cluster.tfrecords.pipeline_variants``
   and of the lesson's ``ratings_dataset`` (7.2), in examples per second (the cached
   variant: its second pass). Target: the tuned pipeline (7.2) >= 3x the naive one.
2. **Training**: the id-only two-tower model (80/20 split, seed 42, 3 epochs, global batch
   4096, embeddings 32, Adagrad 0.1) trained with ``MultiWorkerMirroredStrategy`` on 1
   worker, on 2 workers with the softmax per replica, and on 2 workers with negatives
   gathered across replicas, each in fresh local processes. Fit and wall seconds,
   examples per second and recall@10 over the full catalogue on the same held-out split.
   Target: two workers within 0.01 recall@10 of one.

All workers share this machine's cores, so the throughput of two workers is a lower bound
for a real cluster. Slow by design: run it with ``nice -n 10 course bench 09``. With
``COURSE_BENCH_QUICK=1`` (a smoke test) the pipeline reads 20,000 rows by default and only
the gathered two-worker run trains, one epoch.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from recsys_course.tooling.benchmarks import quick
from recsys_course.data import MovieLens, split_ratings

SEED = 42
K = 10


def pipeline_benchmark(data: MovieLens, lesson, n_rows: int) -> dict:
    from recsys_course.cluster.tfrecords import (
        examples_per_second,
        pipeline_variants,
        tile_ratings,
        write_shards,
    )

    big = tile_ratings(data.ratings, n_rows, seed=SEED)
    with tempfile.TemporaryDirectory(prefix="bench07-") as folder:
        started = time.perf_counter()
        files = write_shards(big, Path(folder), n_shards=16)
        write_seconds = time.perf_counter() - started
        variants = pipeline_variants(files, 1024)
        variants["lesson ratings_dataset (7.2)"] = lambda: lesson.ratings_dataset(files, 1024)
        rates = {}
        for name, make in variants.items():
            rate, seen = examples_per_second(make, warm_passes=1 if "cache" in name else 0)
            if seen != len(big):
                raise RuntimeError(f"pipeline {name!r} yielded {seen} examples, expected {len(big)}")
            rates[name] = round(rate, 1)
    tuned = rates["lesson ratings_dataset (7.2)"] / rates["naive"]
    return {
        "rows": len(big), "shards": 16, "batch_size": 1024, "write_seconds": round(write_seconds, 1),
        "examples_per_second": rates,
        "tuned_over_naive": round(tuned, 2),
        "target_tuned_3x_naive_met": tuned >= 3,
    }


def training_benchmark(data: MovieLens) -> dict:
    from recsys_course.cluster.launch import held_out_recall, run_multiworker_training

    train, test = split_ratings(data.ratings, 0.2, seed=SEED)
    out = {}
    runs = [("1_worker", 1, False), ("2_workers_per_replica_softmax", 2, False),
            ("2_workers_gathered_negatives", 2, True)]
    epochs = 3
    if quick():  # a smoke run: one epoch of the two-worker set-up with gathered negatives
        runs, epochs = runs[2:], 1
    for label, workers, gather in runs:
        run = run_multiworker_training(train, data.movies, n_workers=workers, gather_negatives=gather,
                                       epochs=epochs, global_batch_size=4096, seed=SEED, timeout=1800)
        out[label] = {
            "per_replica_batch_size": run.per_replica_batch_size,
            "fit_seconds": round(run.fit_seconds, 2),
            "wall_seconds": round(run.wall_seconds, 2),
            "examples_per_second": round(run.examples_per_second, 1),
            "loss_per_example": [round(v, 5) for v in run.loss_per_example],
            f"recall@{K}": round(held_out_recall(run, train, test, K), 4),
        }
    for label, workers, _ in runs:
        if workers > 1 and "1_worker" in out:
            base = out["1_worker"][f"recall@{K}"]
            out[label][f"recall@{K}_minus_1_worker"] = round(out[label][f"recall@{K}"] - base, 4)
            out[label]["target_within_0.01_met"] = abs(out[label][f"recall@{K}"] - base) <= 0.01
    out["train_rows"] = len(train)
    out["test_rows"] = len(test)
    return out


def scaling_benchmark(data: MovieLens, lesson) -> dict:
    n_rows = int(os.environ.get("COURSE_BENCH_07_ROWS", "20000" if quick() else "2000000"))
    load = os.getloadavg()[0]
    result = {
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": round(load, 2),
        "pipeline": pipeline_benchmark(data, lesson, n_rows),
        "training": training_benchmark(data),
    }
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return result
