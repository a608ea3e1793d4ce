"""Ratings as TFRecord shards, and the input-pipeline variants lesson 09 measures.

Each record is one ``tf.train.Example`` with three features: ``user_id`` and ``movie_id``
(bytes) and ``user_rating`` (float). :func:`write_shards` writes them round-robin into
``n_shards`` files; :data:`FEATURES` is the parsing spec; :func:`pipeline_variants` builds
the same batches five ways, from a naive one-record-at-a-time reader to an interleaved,
vectorised, cached and prefetched one; :func:`examples_per_second` times one of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable

import recsys_course  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow)

import numpy as np
import pandas as pd
import tensorflow as tf

FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "movie_id": tf.io.FixedLenFeature([], tf.string),
    "user_rating": tf.io.FixedLenFeature([], tf.float32),
}


def tile_ratings(ratings: pd.DataFrame, n_rows: int, seed: int = 0) -> pd.DataFrame:
    """At least ``n_rows`` ratings made of copies of ``ratings``: copy ``c`` renames every
    user to ``"<id>~c"`` (new users with the same tastes) and jitters the ratings by a
    seeded +-0.5, so the copies are not byte-identical. Columns: user_id, movie_id,
    user_rating."""
    copies = max(1, -(-n_rows // len(ratings)))
    rng = np.random.default_rng(seed)
    base = ratings[["user_id", "movie_id", "user_rating"]].astype({"user_id": str, "movie_id": str})
    parts = []
    for c in range(copies):
        part = base.copy()
        if c:
            part["user_id"] = part["user_id"] + f"~{c}"
            part["user_rating"] = (part["user_rating"] + rng.uniform(-0.5, 0.5, len(part))).astype("float32")
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def write_shards(ratings: pd.DataFrame, folder: Path, n_shards: int = 8) -> list[Path]:
    """Write ``ratings`` (user_id, movie_id, user_rating) as ``n_shards`` TFRecord files
    ``ratings-<i>-of-<n>.tfrecord`` in ``folder``, row ``r`` going to shard ``r % n_shards``.
    Returns the paths, in shard order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"ratings-{i:03d}-of-{n_shards:03d}.tfrecord" for i in range(n_shards)]
    users = ratings["user_id"].astype(str).str.encode("utf-8").to_numpy()
    movies = ratings["movie_id"].astype(str).str.encode("utf-8").to_numpy()
    stars = ratings["user_rating"].to_numpy(dtype=np.float32)
    Feature, Features = tf.train.Feature, tf.train.Features
    for shard, path in enumerate(paths):
        with tf.io.TFRecordWriter(str(path)) as writer:
            for r in range(shard, len(ratings), n_shards):
                example = tf.train.Example(features=Features(feature={
                    "user_id": Feature(bytes_list=tf.train.BytesList(value=[users[r]])),
                    "movie_id": Feature(bytes_list=tf.train.BytesList(value=[movies[r]])),
                    "user_rating": Feature(float_list=tf.train.FloatList(value=[stars[r]])),
                }))
                writer.write(example.SerializeToString())
    return paths


def pipeline_variants(files: list[Path], batch_size: int) -> dict[str, Callable[[], tf.data.Dataset]]:
    """Name -> a function building one pass over ``files`` as dict batches of ``batch_size``.

    Each variant adds one technique to the one before it:

    * ``naive``: files read one after another, one record parsed at a time, sequentially;
    * ``+ interleave``: several files read at once (``interleave``, parallel);
    * ``+ parallel map``: records parsed on several threads (``num_parallel_calls``);
    * ``+ vectorised parse``: batch first, then parse a whole batch with one op;
    * ``+ cache + prefetch``: parsed batches kept in memory after the first pass and
      prepared while the consumer works (the timed pass is the second one).
    """
    names = [str(f) for f in files]
    auto = tf.data.AUTOTUNE
    one = lambda record: tf.io.parse_single_example(record, FEATURES)  # noqa: E731
    many = lambda records: tf.io.parse_example(records, FEATURES)  # noqa: E731

    def read(parallel: bool) -> tf.data.Dataset:
        files_ds = tf.data.Dataset.from_tensor_slices(names)
        if not parallel:
            return tf.data.TFRecordDataset(files_ds)
        return files_ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(names)),
                                   num_parallel_calls=auto, deterministic=False)

    cached = read(True).batch(batch_size).map(many, num_parallel_calls=auto).cache().prefetch(auto)
    return {
        "naive": lambda: read(False).map(one).batch(batch_size),
        "+ interleave": lambda: read(True).map(one).batch(batch_size),
        "+ parallel map": lambda: read(True).map(one, num_parallel_calls=auto).batch(batch_size),
        "+ vectorised parse": lambda: read(True).batch(batch_size).map(many, num_parallel_calls=auto),
        "+ cache + prefetch": lambda: cached,
    }


def examples_per_second(make: Callable[[], tf.data.Dataset], warm_passes: int = 0) -> tuple[float, int]:
    """Iterate ``make()`` to the end (after ``warm_passes`` untimed passes, which fill a
    cache) and return ``(examples per second, examples seen)`` of the timed pass."""
    dataset = make()
    for _ in range(warm_passes):
        for _ in dataset:
            pass
    seen, started = 0, time.perf_counter()
    for batch in dataset:
        seen += int(batch["user_id"].shape[0])
    return seen / (time.perf_counter() - started), seen
