"""Processes of lesson 09's parameter-server job (started by
``recsys_course.cluster.launch.run_parameter_server_job``; not meant to be run by hand).

``python -m recsys_course.cluster.parameter_server_job serve`` runs a ``tf.distribute.Server`` for
the parameter-server or worker task named in ``TF_CONFIG`` until it is killed.
``python -m recsys_course.cluster.parameter_server_job chief FOLDER`` is the coordinator: it builds
an embedding table sharded over the parameter servers, trains it with Keras ``fit`` through
the workers, and writes ``FOLDER/result.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from recsys_course.cluster.lifetime import limit_lifetime

limit_lifetime()

import recsys_course  # noqa: E402 - sets TF_USE_LEGACY_KERAS=1 before TensorFlow
import tensorflow as tf  # noqa: E402


def serve() -> None:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
        protocol="grpc", start=True,
    )
    server.join()


def chief(folder: Path) -> None:
    settings = json.loads((folder / "settings.json").read_text())
    recsys_course.seed_everything(42)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver,
        variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(settings["n_shards"]),
    )
    n_items, dim = settings["n_items"], settings["embedding_dim"]
    with strategy.scope():
        # A matrix-factorisation-style scorer: item embedding . a learned query vector,
        # regressed on a target; small, but the table is the part that gets sharded.
        items = tf.keras.Input(shape=(), dtype=tf.int64)
        table = tf.keras.layers.Embedding(n_items, dim, name="item_table")
        score = tf.keras.layers.Dense(1, name="head")(table(items))
        model = tf.keras.Model(items, score)
        model.compile(tf.keras.optimizers.Adagrad(0.5), "mse", steps_per_execution=5)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ids = tf.random.stateless_uniform([4096], seed=[1, 2], maxval=n_items, dtype=tf.int64)
        # A target that depends on the item only: the table can learn it.
        target = tf.sin(tf.cast(ids, tf.float32))[:, None]
        batch = context.get_per_replica_batch_size(256)
        return tf.data.Dataset.from_tensor_slices((ids, target)).shuffle(4096, seed=3).repeat().batch(batch)

    data = tf.keras.utils.experimental.DatasetCreator(dataset_fn)
    shards = table.embeddings
    layout = [{"shape": list(v.shape), "device": v.device} for v in getattr(shards, "variables", [shards])]
    started = time.perf_counter()
    history = model.fit(data, epochs=2, steps_per_epoch=settings["steps"], verbose=0)
    seconds = time.perf_counter() - started
    (folder / "result.json").write_text(json.dumps({
        "strategy": type(strategy).__name__,
        "table_class": type(shards).__name__,
        "shards": layout,
        "loss_by_epoch": [float(v) for v in history.history["loss"]],
        "fit_seconds": seconds,
        "steps": 2 * settings["steps"],
    }))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["chief"]:
        chief(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m recsys_course.cluster.parameter_server_job serve | chief FOLDER")
