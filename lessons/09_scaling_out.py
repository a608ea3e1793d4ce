# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 09 · Scaling out: tf.data, tf.distribute and a TF Serving fleet
#
# **You will learn to**
#
# - find the input pipeline's share of training time, and speed a `tf.data` pipeline over
#   TFRecord shards up with `interleave`, parallel and vectorised parsing, `cache` and
#   `prefetch`;
# - read the `TF_CONFIG` that turns separate processes into one TensorFlow cluster, and
#   train the course's two-tower model on two worker processes with
#   `MultiWorkerMirroredStrategy`;
# - explain what splitting a batch across replicas does to the in-batch softmax, and write
#   the loss that gathers every replica's candidates with `ReplicaContext.all_gather`, run
#   on a `MirroredStrategy` of logical CPU devices in this one process;
# - explain what `ParameterServerStrategy` and sharded variables are for, and run a small
#   job with a chief, a parameter server and a worker;
# - write and check the files of a TF Serving fleet: several models with version labels,
#   request batching, replicas behind a load balancer and a canary;
# - place TensorFlow Recommenders in today's ecosystem, next to Keras Recommenders.
#
# Everything runs on this one machine: the "cluster" is a few processes talking over
# 127.0.0.1. That is slower than one process, and it is the point: the code, the
# configuration and the failure modes are the ones of a real cluster, only the addresses
# change. The larger measurements (millions of ratings) live in the benchmark,
# `course bench 09`.
#
# **How to work through it:** run the cells top to bottom. Exercises are functions whose
# body raises `NotImplementedError`; implement them, then check with `course check 9.1`
# (or `course check 09` for the whole lesson).

# %% tags=["setup"]
# Importing recsys_course first sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported.
import recsys_course

import json
import math
import socket
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from google.protobuf import text_format

from recsys_course import claims, models
from recsys_course.cluster.replicas import logical_cpus, mirrored_strategy, per_replica
from recsys_course.cluster.tfrecords import FEATURES

# Split this process's CPU into logical devices before TensorFlow starts its runtime, so that
# section 3 can run several replicas here (a MirroredStrategy needs one device per replica).
REPLICAS = 3
logical_cpus(REPLICAS)
SEED = recsys_course.seed_everything(42)
K = 10

# %% [markdown]
# ## 1. Where the time goes when the data grows
#
# Lessons 01-08 train on about 100,000 ratings that fit in memory as a NumPy array. A
# production recommender sees billions of interactions and millions of items, and three
# things break, each with a TensorFlow tool built for it:
#
# | what stops fitting | symptom | TensorFlow's answer | section |
# |---|---|---|---|
# | the data, in memory | training waits for input; cores idle | `tf.data` over sharded files | 2 |
# | the compute, on one machine | an epoch takes hours | `MultiWorkerMirroredStrategy` (data parallelism) | 3 |
# | the embedding tables, in one machine's memory | out of memory at model build | `ParameterServerStrategy` + sharded variables | 4 |
# | the requests, on one server | latency grows with traffic | TF Serving replicas, request batching, a load balancer | 5 |
#
# We take them in that order, measuring what runs here.

# %%
data = recsys_course.load_movielens()
print("Dataset:", data.summary())
train, test = recsys_course.split_ratings(data.ratings, 0.2, seed=SEED)
print(f"train: {len(train):,} ratings, test: {len(test):,} ratings")
workdir = Path(tempfile.mkdtemp(prefix="lesson07-"))  # every file of this lesson goes here

# %% [markdown]
# ## 2. Input pipelines at scale
#
# ### Files, shards and records
#
# At scale, ratings live in many files ("shards") rather than one: several readers can
# then work at once, and a cluster can give each worker its own files. TensorFlow's native
# format is **TFRecord**: a file of length-prefixed binary records, here each a
# `tf.train.Example` protocol buffer holding a dictionary of named features. A reader
# streams records without knowing how many there are, and parsing turns the bytes back into
# tensors with a *feature spec* (name, shape, dtype for each feature).
#
# To have enough rows to measure, we tile the ratings: each copy renames the users (new
# users with the same tastes) and jitters the ratings slightly. The lesson uses about
# 100,000 rows; the benchmark writes and reads millions.

# %%
from recsys_course.cluster.tfrecords import examples_per_second, pipeline_variants, tile_ratings, write_shards

big = tile_ratings(data.ratings, 100_000, seed=SEED)
files = write_shards(big, workdir / "shards", n_shards=8)
print(f"{len(big):,} ratings in {len(files)} shards of "
      f"{sum(f.stat().st_size for f in files) / len(files) / 1e6:.1f} MB each; feature spec:")
print({name: (spec.dtype.name, spec.shape) for name, spec in FEATURES.items()})

# %% [markdown]
# ### What makes a pipeline fast
#
# A naive pipeline reads one file after another and parses one record at a time on one
# thread, while the training step waits. Four techniques remove the waiting:
#
# - **`interleave`**: read several files at once (`cycle_length` of them), so a slow file
#   system or one slow file does not stall the stream;
# - **parallel `map`** (`num_parallel_calls=tf.data.AUTOTUNE`): parse on several threads;
# - **batch before parsing**: `tf.io.parse_example` parses a whole batch of serialized
#   records in one op. Per-record Python-free work is small, so per-op overhead dominates a
#   one-record parse; vectorising divides that overhead by the batch size;
# - **`cache`** keeps the parsed batches (in memory, or in a file given to `cache`) after
#   the first epoch, and **`prefetch`** prepares the next batches while the model trains on
#   the current one, overlapping input and compute.
#
# Order matters: `cache` goes after the expensive steps and before anything that must
# change every epoch (a shuffle), and `prefetch` goes last.
#
# ### Exercise 9.1 · A fast ratings pipeline
#
# Implement `ratings_dataset(files, batch_size)` with interleaved reading, batched
# vectorised parsing and prefetching.

# %% tags=["exercise"] exercise="9.1"
def ratings_dataset(files, batch_size: int) -> tf.data.Dataset:
    """One pass over every record of every TFRecord file in ``files``, in batches.

    Args:
        files: paths (``str`` or ``Path``) of TFRecord files of ``tf.train.Example``
            records with the features of ``FEATURES`` (user_id, movie_id: bytes;
            user_rating: float).
        batch_size: examples per batch; the last batch may be smaller (nothing dropped).

    Returns:
        A ``tf.data.Dataset`` of dicts ``{"user_id": tf.string [b], "movie_id":
        tf.string [b], "user_rating": tf.float32 [b]}`` holding every record exactly once.
        It reads several files at once (``interleave``), parses whole batches with
        ``tf.io.parse_example`` on parallel calls, and ends with ``prefetch``. The order of
        the records is not specified.
    """
    raise NotImplementedError(
        "Exercise 9.1 (A fast ratings pipeline): not solved yet. Stuck? Run: course hint 9.1"
    )


# %% [markdown]
# We time one pass of each variant (for the cached one, the second pass, once the cache is
# full), each variant adding one technique to the one before, and yours beside them.

# %%
from IPython.display import display

BATCH = 1024
variants = pipeline_variants(files, BATCH)
variants["your ratings_dataset"] = lambda: ratings_dataset(files, BATCH)
rows = []
for name, make in variants.items():
    rate, seen = examples_per_second(make, warm_passes=1 if "cache" in name else 0)
    rows.append({"pipeline": name, "examples/s": rate, "examples": seen})
pipelines = pd.DataFrame(rows).set_index("pipeline")
pipelines["speed-up"] = pipelines["examples/s"] / pipelines.loc["naive", "examples/s"]
display(pipelines.round({"examples/s": 0, "speed-up": 1}))

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.barh(pipelines.index[::-1], pipelines["examples/s"][::-1], color="tab:blue")
ax.set(xscale="log", xlabel="examples per second (log scale)", title=f"tf.data over {len(files)} TFRecord shards")
fig.tight_layout()
plt.show()

# %%
speedup = pipelines["speed-up"]
claims.say(
    f"Parsing whole batches with one op made the pipeline {claims.fmt(speedup['+ vectorised parse'], 'ratio')} as "
    f"fast as the naive one, and serving the second epoch from the cache "
    f"{claims.fmt(speedup['+ cache + prefetch'], 'ratio')}. With interleaving alone the pipeline ran at "
    f"{claims.fmt(speedup['+ interleave'], 'ratio')} the naive speed, and with single records parsed on parallel "
    f"threads at {claims.fmt(speedup['+ parallel map'], 'ratio')}: threads help only "
    "as far as there are idle cores, and the per-record overhead stays."
)


# %% [markdown]
# Two cautions before caching everything. A cache holds the whole parsed dataset: in
# memory, it must fit; on disk (`cache(filename)`), it must be rebuilt when the data
# changes. And a fast pipeline only matters if input is the bottleneck: compare the
# pipeline's examples per second with what the model's training steps consume (section 3
# measures that), and stop tuning once input keeps up. The
# [tf.data performance guide](https://www.tensorflow.org/guide/data_performance) and the
# TensorBoard profiler's input-pipeline analyser show where the time goes.
#
# ## 3. Data parallelism with MultiWorkerMirroredStrategy
#
# ### The idea
#
# **Data parallelism** puts a full copy of the model on every *replica* (a device: here,
# one CPU per worker process) and gives each a different slice of every batch. Each step:
#
# 1. every replica computes the loss and the gradients on its slice;
# 2. an **all-reduce** sums the gradients across replicas, so every replica holds the same
#    total gradient;
# 3. every replica applies that gradient, and the copies stay identical.
#
# `tf.distribute.MirroredStrategy` does this across the devices of one machine;
# `MultiWorkerMirroredStrategy` does it across processes (usually machines), using
# collective operations over gRPC (or NCCL between GPUs). The variables stay in sync
# without any central server, which suits models whose variables fit on each worker.
#
# ```mermaid
# flowchart LR
#     D[(global batch)] -->|first half| W0[worker 0: model copy]
#     D -->|second half| W1[worker 1: model copy]
#     W0 -->|gradients| AR{{all-reduce: sum}}
#     W1 -->|gradients| AR
#     AR -->|same total gradient| W0
#     AR -->|same total gradient| W1
# ```
#
# ### TF_CONFIG: how processes become a cluster
#
# Each process reads the environment variable `TF_CONFIG`, a JSON object with two keys:
# `cluster` maps each role ("worker", "chief", "ps", "evaluator") to the list of its
# tasks' `host:port` addresses, the same in every process; `task` says which of those
# tasks *this* process is: `{"type": "worker", "index": 1}`. Worker 0 plays the chief's
# part (it saves checkpoints and writes summaries) when there is no explicit chief.
#
# The course's helper `recsys_course.cluster.launch.tf_config` writes it; the cell below
# shows what worker 1 of a two-worker cluster reads.

# %% [markdown]
# The course's helper module `recsys_course.cluster.launch` starts clusters for this lesson.
# It finds free ports by binding sockets to port 0 on 127.0.0.1 (the kernel picks a free
# one), starts one process per task with its `TF_CONFIG`, each in its own process group,
# and kills every group when a task fails or a deadline passes, so no worker outlives a
# failed run. A port that is already taken gives a clear error before anything starts:

# %%
from recsys_course.cluster.launch import (
    PortInUseError,
    free_ports,
    run_multiworker_training,
    tf_config,
)

ports = free_ports(2)
cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
print("TF_CONFIG of worker 1:", json.dumps(json.loads(tf_config(cluster, "worker", 1)), indent=1)
      .replace(str(ports[0]), "<port 0>").replace(str(ports[1]), "<port 1>"))

with socket.socket() as squatter:  # take a port, then ask for a cluster on it
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    try:
        run_multiworker_training(train, data.movies, n_workers=2, ports=[taken, ports[1]])
    except PortInUseError as error:
        print("PortInUseError:", str(error).replace(str(taken), "<port>"))

# %% [markdown]
# ### Global and per-replica batch size
#
# In Keras with a distribution strategy, the batch size you give the dataset is the
# **global batch size**: the examples consumed by *all* replicas in one step. Each replica
# processes `global / replicas` of them, the **per-replica batch size**. One step still
# applies one update computed from the whole global batch, so with the same global batch
# size, the same learning rate and the same number of epochs, the optimisation is the same
# as on one worker, only the work of each step is split, with one exception that matters
# for retrieval (next). (Keeping the per-replica size fixed instead grows the global batch
# with the cluster; the learning rate then usually needs retuning.) For the global batch of
# lesson 02's recipe:

# %%
GLOBAL_BATCH, EPOCHS = models.RETRIEVAL_RECIPE["batch_size"], 3
pd.DataFrame({
    f"{r} replica(s)": {"per-replica batch": GLOBAL_BATCH // r,
                        "steps per epoch": math.ceil(len(train) / GLOBAL_BATCH),
                        "negatives per pair, softmax per replica": GLOBAL_BATCH // r - 1,
                        "negatives per pair, gathered": GLOBAL_BATCH - 1}
    for r in (1, 2, 4, 8)
})

# %% [markdown]
# ### What happens to the in-batch softmax
#
# Our retrieval loss is a softmax over the batch: for a user $u_i$ and their movie $m_i$,
#
# $$\ell_i = -\log \frac{\exp(u_i \cdot m_i)}{\sum_{j \in \text{batch}} \exp(u_i \cdot m_j)},$$
#
# so the other movies of the batch are the negatives. Under data parallelism the loss is
# computed **on each replica's slice**: with $R$ replicas and a global batch $B$, each user
# is contrasted with only $B/R - 1$ negatives instead of $B - 1$. The loss is a different
# (easier) one: fewer, and on average less hard, negatives, which usually costs retrieval
# quality as $R$ grows. The fix is to **gather** the movie vectors of all replicas before the
# softmax: each replica scores its own users against the movies of *every* replica, so
# every user again sees the whole global batch, and the sum of the replicas' losses is the
# single-worker loss exactly. Gathering costs one extra collective of $B \times d$ floats
# per step.
#
# Inside a replica, `tf.distribute.get_replica_context()` gives the collectives:
# `context.all_gather(x, axis=0)` concatenates every replica's `x` in replica order, and
# `context.replica_id_in_sync_group` says which replica this is. After the gather, replica
# $r$'s positives are no longer on the diagonal of its score matrix: with $b$ rows per
# replica, row $i$'s own movie sits in column $r \cdot b + i$.
#
# ### Exercise 9.2 · Gathered negatives across replicas
#
# Implement `gathered_softmax_loss(queries, candidates)`, the loss one replica computes
# inside `strategy.run`.

# %% tags=["exercise"] exercise="9.2"
def gathered_softmax_loss(queries: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """This replica's in-batch softmax loss against the candidates of *all* replicas.

    Called inside ``strategy.run`` on every replica with that replica's slice of the global
    batch; every replica has the same number of rows ``b``.

    Args:
        queries: ``float32 [b, d]``, this replica's query vectors.
        candidates: ``float32 [b, d]``, this replica's candidate vectors (row ``i`` is the
            positive of query ``i``).

    Returns:
        A scalar: the sum over this replica's rows ``i`` of the softmax cross-entropy of
        ``queries[i] @ all_candidates.T`` with label ``r * b + i``, where
        ``all_candidates`` (``[R * b, d]``) is every replica's ``candidates`` gathered in
        replica order and ``r`` this replica's position. Summed over the replicas, it is
        the in-batch softmax loss of the global batch on one device.
    """
    raise NotImplementedError(
        "Exercise 9.2 (Gathered negatives across replicas): not solved yet. Stuck? Run: course hint 9.2"
    )


# %% [markdown]
# Three replicas on this one machine: the process split its CPU into logical devices at the
# start (`recsys_course.cluster.replicas.logical_cpus`), and a `MirroredStrategy` runs one
# replica on each, with the same collectives a multi-GPU or multi-machine job uses. One
# global batch of training pairs, embedded by an untrained id-only two-tower model, gives the
# loss three ways:

# %%
strategy = mirrored_strategy(REPLICAS)
recsys_course.seed_everything(SEED)
towers = models.build_two_tower(sorted(train["user_id"].unique()), sorted(data.movies["movie_id"].unique()))
pairs = train.sample(n=REPLICAS * 256, random_state=SEED)
user_vectors = towers.query_model(tf.constant(pairs["user_id"].to_numpy(str)))
movie_vectors = towers.candidate_model(tf.constant(pairs["movie_id"].to_numpy(str)))


def local_softmax_loss(queries: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """The in-batch softmax over this replica's own rows only: what `fit` computes by default."""
    rows = tf.shape(queries)[0]
    logits = tf.matmul(queries, candidates, transpose_b=True)
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.range(rows), logits=logits))


single_device = float(local_softmax_loss(user_vectors, movie_vectors))
by_replica = {}
for name, loss in (("softmax per replica", local_softmax_loss), ("gathered negatives (yours)", gathered_softmax_loss)):
    result = strategy.run(loss, args=(per_replica(strategy, user_vectors), per_replica(strategy, movie_vectors)))
    by_replica[name] = [float(v) for v in strategy.experimental_local_results(result)]
losses = pd.DataFrame({name: {**{f"replica {r}": v for r, v in enumerate(values)}, "sum": sum(values)}
                       for name, values in by_replica.items()}).T
losses["one device, whole batch"] = single_device
losses.round(3)

# %%
gathered_sum, local_sum = sum(by_replica["gathered negatives (yours)"]), sum(by_replica["softmax per replica"])
claims.say(
    f"Gathered, the three replicas' losses add up to {claims.fmt(gathered_sum, 'error')}, the one-device loss of the "
    f"whole batch ({claims.fmt(single_device, 'error')}); each replica alone, with its {claims.fmt(len(pairs) // REPLICAS)} "
    f"rows as the only negatives, gives {claims.fmt(local_sum, 'error')}: "
    + claims.pick(claims.compare(local_sum, single_device, noise=1e-3 * abs(single_device)).direction == "lower",
                  "a smaller loss, because fewer negatives make an easier softmax.",
                  "a different loss, the objective of a smaller batch.")
)

# %% tags=["check"]
claims.claim(abs(gathered_sum - single_device) < 1e-3 * abs(single_device),
             "the three replicas' losses add up to the one-device loss of the whole batch")

# %% [markdown]
# ### Training on two workers, for real
#
# We train the course's id-only two-tower model (`recsys_course.models`, embeddings of 32,
# Adagrad 0.1 and a global batch of 1,024 as in lesson 02's recipe, 3 epochs, without the
# logQ correction) three ways, each in fresh processes started by
# `run_multiworker_training`:
#
# 1. one worker (the baseline);
# 2. two workers, softmax per replica (what `fit` does by default);
# 3. two workers, negatives gathered across replicas.
#
# Every worker reads the same shuffled stream; `tf.data`'s DATA auto-sharding hands each
# worker its half of every global batch. Then we score the held-out ratings with recall@10
# over the full catalogue (`recsys_course.evaluation`, training movies excluded).

# %%
from recsys_course.cluster.launch import held_out_recall

runs = {}
for label, workers, gather in [("1 worker", 1, False), ("2 workers, per-replica softmax", 2, False),
                               ("2 workers, gathered negatives", 2, True)]:
    runs[label] = run_multiworker_training(
        train, data.movies, n_workers=workers, gather_negatives=gather, epochs=EPOCHS,
        global_batch_size=GLOBAL_BATCH, seed=SEED, timeout=600,
    )
training = pd.DataFrame({
    label: {
        "per-replica batch": run.per_replica_batch_size,
        "loss per example, last epoch": run.loss_per_example[-1],
        f"recall@{K}": held_out_recall(run, train, test, K),
        "fit seconds": run.fit_seconds,
        "examples/s": run.examples_per_second,
        "wall seconds (with start-up)": run.wall_seconds,
    }
    for label, run in runs.items()
}).T
display(training.astype({"per-replica batch": int}).round(4))

# %%
one, local, gathered = (training.loc[label] for label in runs)
loss_gap = abs(gathered["loss per example, last epoch"] - one["loss per example, last epoch"])
LOSS_TOLERANCE = 0.01  # a loss is lower or higher only by more than 1 % of the reference's: a stated tolerance
local_loss = claims.compare(local["loss per example, last epoch"], one["loss per example, last epoch"],
                            noise=LOSS_TOLERANCE * abs(one["loss per example, last epoch"]), kind="error")
speed = claims.compare(local["examples/s"], one["examples/s"], noise=0.1 * one["examples/s"], kind="count")
claims.say(
    f"With gathered negatives, two workers optimise the single-worker loss: the last epoch's loss per example "
    f"is {claims.fmt(gathered['loss per example, last epoch'], 'error')} "
    f"({claims.fmt(one['loss per example, last epoch'], 'error')} on one worker), and recall@{K} is "
    f"{claims.fmt(gathered[f'recall@{K}'])} against "
    f"{claims.fmt(one[f'recall@{K}'])} on one worker. With the softmax per replica, the loss is a different "
    f"number ({claims.fmt(local['loss per example, last epoch'], 'error')} against "
    f"{claims.fmt(one['loss per example, last epoch'], 'error')}"
    + claims.pick(local_loss.direction == "lower", ": a softmax over fewer negatives is easier", "")
    + f") and recall@{K} is {claims.fmt(local[f'recall@{K}'])}. "
    + {"higher": f"Two workers trained at {claims.fmt(speed.value / speed.reference, 'ratio')} the single worker's "
                 "examples per second, on the same two cores.",
       "about the same": f"Two workers were about as fast as one ({claims.fmt(speed.value, 'count')} against "
                         f"{claims.fmt(speed.reference, 'count')} examples per second, within 10 %): both share this "
                         "machine's two cores, and each step waits for a gradient exchange.",
       "lower": f"Two workers were slower here ({claims.fmt(speed.value, 'count')} against "
                f"{claims.fmt(speed.reference, 'count')} examples per second): both share this machine's two cores, "
                "and each step waits for a gradient exchange over the network stack."}[speed.direction]
)

# %% tags=["check"]
claims.claim(loss_gap < 1e-3, "With gathered negatives, two workers optimise the single-worker loss")

# %% [markdown]
# Part of the difference in speed is the loss itself. The in-batch softmax scores every
# user of a replica's batch against every candidate, a matrix of (users x candidates): with
# a global batch $B$ that is $B^2$ scores per step on one worker, $2 \cdot (B/2)^2 = B^2/2$
# over two replicas with the per-replica softmax (half the work, and half the negatives),
# and $2 \cdot (B/2) \cdot B = B^2$ with gathered negatives (the single worker's work, split
# over two processes, plus the all-gather).
#
# On one machine, two workers share the same cores, so do not read the throughput as a
# prediction for a real cluster: there, each worker brings its own cores and the question
# becomes whether the all-reduce of the gradients (here the two embedding tables' touched
# rows) keeps up with the compute. The benchmark (`course bench 09`) records the same
# three runs.
#
# ## 4. Embedding tables too big for one machine
#
# Data parallelism copies *every* variable to *every* worker. A recommender's embedding
# tables break that: a catalogue of 100 million items with 64-dimensional float32
# embeddings is 25.6 GB for the table alone, and an optimiser such as Adagrad or Adam keeps
# one or two more tables of the same size. The arithmetic:

# %%
def table_gigabytes(rows: int, dim: int, optimizer_slots: int) -> float:
    """Memory of a float32 embedding table plus its optimiser slots, in GB (1e9 bytes)."""
    return rows * dim * 4 * (1 + optimizer_slots) / 1e9


sizes = pd.DataFrame(
    [{"rows": f"{rows:,}", "dim": dim, "optimiser": opt, "GB": table_gigabytes(rows, dim, slots)}
     for rows in (1_000_000, 100_000_000) for dim in (32, 64)
     for opt, slots in (("SGD", 0), ("Adagrad", 1), ("Adam", 2))]
)
display(sizes.round(2))

# %% [markdown]
# **`ParameterServerStrategy`** separates the variables from the compute. Some tasks are
# **parameter servers** (`ps`): they only store variables. **Workers** run training steps,
# reading the variables they need from the parameter servers and sending updates back. A
# **chief** (the coordinator) builds the model, creates the variables on the parameter
# servers and schedules steps on the workers, asynchronously: a slow worker delays nobody.
#
# **Sharded variables** are how one table spreads over several servers: with a
# `variable_partitioner` (e.g. `FixedShardsPartitioner(n)` or `MinSizePartitioner`), a
# variable created in the strategy's scope becomes a `ShardedVariable`, a list of row
# blocks placed on the parameter servers in turn. An embedding lookup then fetches only the
# rows a batch uses from the shards that hold them, and the update touches only those rows.
# A table bigger than any one machine fits as soon as there are enough servers.
#
# We run a small job: a chief, one parameter server and one worker, three processes on
# 127.0.0.1. The chief builds a 100,000-row table split into two shards (both on the one
# parameter server, to keep this small) and trains a tiny regression on it with Keras
# `fit`, which under this strategy needs a dataset *function* (each worker builds its own
# input) and a fixed number of steps per epoch.

# %%
from recsys_course.cluster.launch import run_parameter_server_job

ps_job = run_parameter_server_job(n_items=100_000, embedding_dim=16, n_shards=2, steps=20, timeout=600)
shards = pd.DataFrame(ps_job["shards"])
shards["device"] = shards["device"].str.replace("/replica:0", "")
print("strategy:", ps_job["strategy"], "| the table is a", ps_job["table_class"])
display(shards)
print("loss by epoch:", np.round(ps_job["loss_by_epoch"], 4))

# %%
claims.say(
    f"The table was created as a {ps_job['table_class']} of {len(shards)} shards on the parameter "
    f"server, and {ps_job['steps']} steps run by the worker "
    + claims.pick(claims.compare(ps_job["loss_by_epoch"][-1], ps_job["loss_by_epoch"][0],
                                 noise=LOSS_TOLERANCE * abs(ps_job["loss_by_epoch"][0])).direction == "lower",
                  f"lowered the loss (by more than {claims.fmt(LOSS_TOLERANCE, 'percent')} of its first value).",
                  f"did not lower the loss by more than {claims.fmt(LOSS_TOLERANCE, 'percent')} of its first "
                  "value: the job ran, but learned nothing here.")
)

# %% [markdown]
# Two notes for real deployments. Parameter-server training is asynchronous, so the
# updates of different workers interleave and a run is not bit-for-bit reproducible; and
# the chief must be told when a worker or server fails (the coordinator retries steps on
# another worker, but a lost parameter server stops training until it is back, restored
# from a checkpoint). For TPUs, TensorFlow has `tf.tpu.experimental.embedding.TPUEmbedding`,
# which shards tables over the TPU cores' memory instead.
#
# ## 5. A serving fleet, in files
#
# Lesson 08 served one model from one process. A fleet serves several models, several
# versions of each, from many identical replicas:
#
# ```mermaid
# flowchart LR
#     C[clients] --> LB[load balancer: gRPC / HTTP]
#     LB --> R1[tensorflow_model_server replica 1]
#     LB --> R2[tensorflow_model_server replica 2]
#     LB --> R3[tensorflow_model_server replica 3]
#     S[(model store: retrieval/1, retrieval/2, ranking/1)] -.polled.-> R1
#     S -.polled.-> R2
#     S -.polled.-> R3
# ```
#
# Every replica runs the same command with the same two files:
#
# - a **model server config** listing the models, where their versions live, which
#   versions to keep loaded, and **version labels**: stable names such as `stable` and
#   `canary` that clients call (`/v1/models/retrieval/labels/canary:predict`) instead of
#   version numbers;
# - a **batching parameters** file: the server holds requests for up to
#   `batch_timeout_micros` to merge them into one batch of at most `max_batch_size`, which
#   multiplies throughput on CPU and GPU at the price of that wait.
#
# We write both files with the formats' own tools and parse them back with TF Serving's
# protocol buffers (from the `tensorflow-serving-api` package), which is what the server
# does when it starts.

# %%
from tensorflow_serving.config import model_server_config_pb2

fleet = model_server_config_pb2.ModelServerConfig()
retrieval = fleet.model_config_list.config.add(name="retrieval", base_path="/models/retrieval", model_platform="tensorflow")
retrieval.model_version_policy.specific.versions.extend([1, 2])
retrieval.version_labels["stable"] = 1
retrieval.version_labels["canary"] = 2
ranking = fleet.model_config_list.config.add(name="ranking", base_path="/models/ranking", model_platform="tensorflow")
ranking.model_version_policy.latest.num_versions = 1
models_config = text_format.MessageToString(fleet)
(workdir / "models.config").write_text(models_config)
print(models_config)

# %%
parsed = text_format.Parse((workdir / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
print("models:", [(m.name, dict(m.version_labels)) for m in parsed.model_config_list.config])

# %% [markdown]
# ### The batching parameters file
#
# TF Serving reads `--batching_parameters_file` as a text-format `BatchingParameters`
# message. Its scalar settings are *wrapped* numbers, written `max_batch_size { value: 64 }`,
# while `allowed_batch_sizes` is a plain repeated number (one line per size). The
# server requires the allowed sizes to increase and the last one to equal
# `max_batch_size`, and its timeout is in microseconds.

# %%
def batching_parameters_text(max_batch_size: int, timeout_ms: float, num_batch_threads: int,
                             max_enqueued_batches: int, allowed_batch_sizes=()) -> str:
    """The text of a TF Serving batching parameters file.

    Args:
        max_batch_size: the largest batch the server forms.
        timeout_ms: the longest a request waits for a batch to fill, in **milliseconds**
            (the file holds microseconds: ``batch_timeout_micros``, an integer).
        num_batch_threads: threads that run batches.
        max_enqueued_batches: batches that may wait in the queue.
        allowed_batch_sizes: optional sizes a batch is padded up to; when given, strictly
            increasing and ending with ``max_batch_size``.

    Returns:
        Text format of ``BatchingParameters`` with ``max_batch_size``,
        ``batch_timeout_micros``, ``num_batch_threads`` and ``max_enqueued_batches`` set
        (each as ``name { value: N }``) and one ``allowed_batch_sizes: N`` line per size.

    Raises:
        ValueError: when ``allowed_batch_sizes`` is given but not strictly increasing or its
            last entry is not ``max_batch_size``.
    """
    sizes = [int(s) for s in allowed_batch_sizes]
    if sizes and (sizes[-1] != max_batch_size or any(a >= b for a, b in zip(sizes, sizes[1:]))):
        raise ValueError(f"allowed_batch_sizes {sizes} must increase strictly and end with max_batch_size={max_batch_size}")
    lines = [
        f"max_batch_size {{ value: {int(max_batch_size)} }}",
        f"batch_timeout_micros {{ value: {int(round(timeout_ms * 1000))} }}",
        f"num_batch_threads {{ value: {int(num_batch_threads)} }}",
        f"max_enqueued_batches {{ value: {int(max_enqueued_batches)} }}",
    ]
    lines += [f"allowed_batch_sizes: {s}" for s in sizes]
    return "\n".join(lines) + "\n"


# %%
from recsys_course.serving.batching_proto import parse_batching_parameters

batching = batching_parameters_text(64, timeout_ms=2, num_batch_threads=2, max_enqueued_batches=100,
                                    allowed_batch_sizes=(8, 16, 32, 64))
(workdir / "batching.config").write_text(batching)
checked = parse_batching_parameters((workdir / "batching.config").read_text())
print(batching)
print("parsed back: max_batch_size", checked.max_batch_size.value, "| timeout",
      checked.batch_timeout_micros.value, "µs | allowed", list(checked.allowed_batch_sizes))

# %% [markdown]
# `BatchingParameters` is defined in TF Serving's `session_bundle_config.proto`, which the
# `tensorflow-serving-api` wheel does not include; `recsys_course.serving.batching_proto`
# declares the message's fields so the file is still checked by a real protobuf parser.
#
# ### Replicas, the load balancer and a canary
#
# The command line is the same on every replica, only the ports differ when several share
# a host (in containers each gets its own address and the default ports):

# %%
commands = [
    " ".join([
        "tensorflow_model_server",
        f"--port={8500 + 10 * r}", f"--rest_api_port={8501 + 10 * r}",
        "--model_config_file=models.config", "--model_config_file_poll_wait_seconds=60",
        "--enable_batching", "--batching_parameters_file=batching.config",
    ])
    for r in range(3)
]
print(*commands, sep="\n")

# %% [markdown]
# - **Load balancer.** Any L7 balancer that speaks gRPC (Envoy, NGINX, a cloud balancer,
#   a Kubernetes Service with a gRPC-aware mesh) spreads requests over the replicas and
#   checks their health (TF Serving answers model status at `/v1/models/<name>`). Because
#   gRPC keeps long-lived connections, balance per request, not per connection, or one
#   replica gets all the traffic of a busy client.
# - **Canary rollout.** Put version 2 in the model store, add it to `versions` and point
#   the `canary` label at it; the servers pick up the changed config file within
#   `--model_config_file_poll_wait_seconds`. Send a small share of traffic (say 1-5 %) to
#   the `canary` label, from the balancer or the caller, and compare its online metrics
#   and latency with `stable`'s. If it holds up, move `stable` to 2 and drop version 1;
#   if not, point `canary` back. A label can only point at a version that is loaded,
#   unless the server runs with `--allow_version_labels_for_unavailable_models`.
# - **Batching and replicas interact**: batching raises each replica's throughput and adds
#   up to `batch_timeout_micros` of latency; more replicas add throughput without adding
#   latency. Size batching for your latency budget first, then add replicas for traffic.
#
# ## 6. Where the ecosystem is going
#
# TensorFlow Recommenders (TFRS, the library of this course) is built on Keras 2. Since
# TensorFlow 2.16, `tf.keras` is Keras 3 unless `TF_USE_LEGACY_KERAS=1` selects the
# `tf-keras` package, and TFRS 0.7.7 refuses to import otherwise (its `__init__` checks the
# Keras version): that is why `import recsys_course` comes first in every lesson.
#
# Its successor for Keras 3 is **Keras Recommenders** (`pip install keras-rs`), from the
# Keras team. Per its documentation it runs on TensorFlow, JAX or PyTorch, and provides
# building blocks that map onto what this course used:
#
# | this course (TFRS, Keras 2) | Keras Recommenders (Keras 3) |
# |---|---|
# | `tfrs.tasks.Retrieval` (in-batch softmax loss) | a Keras softmax cross-entropy over in-batch scores, with the layers `RemoveAccidentalHits`, `SamplingProbabilityCorrection`, `HardNegativeMining` |
# | `tfrs.layers.factorized_top_k.BruteForce` | `keras_rs.layers.BruteForceRetrieval` (a `keras_rs.layers.Retrieval` layer) |
# | `tfrs.layers.dcn.Cross` | `keras_rs.layers.FeatureCross` |
# | `tfrs.tasks.Ranking` and Keras metrics | `keras_rs.losses` (pairwise hinge, logistic, MSE, soft 0-1) and `keras_rs.metrics` (MRR, MAP, DCG, nDCG) |
# | `tf.distribute` + sharded variables | `keras_rs.layers.DistributedEmbedding`, built for TPU SparseCore (examples for JAX and TensorFlow) |
#
# What changes for this course's code: no `tfrs.Model` with `compute_loss`; you write a
# plain Keras 3 model and loss, and `tf.data` pipelines still feed it on the TensorFlow
# backend. The concepts (towers, in-batch negatives, top-k retrieval, serving exported
# models) carry over unchanged; the Keras RS examples include the same MovieLens retrieval
# and ranking tutorials, and one on retrieval with data-parallel training.
#
# ## Summary
#
# - Store large interaction logs as sharded files; read them with `interleave`, parse
#   *batches* with `tf.io.parse_example`, `cache` what is expensive and fits, `prefetch`
#   last; measure examples per second before and after each change.
# - `TF_CONFIG` makes processes a cluster: the same `cluster` everywhere, a different
#   `task` in each process. Start, time-limit and clean up worker processes as a group.
# - With `MultiWorkerMirroredStrategy` the dataset's batch size is the global one; each
#   replica gets `global / replicas`. An in-batch softmax computed per replica sees only
#   its share of the negatives; gathering them across replicas restores the
#   single-worker loss exactly.
# - Embedding tables too large for one machine go to parameter servers as sharded
#   variables (`ParameterServerStrategy` with a `variable_partitioner`).
# - A serving fleet is identical replicas with the same model config (several models,
#   version labels for stable and canary) and batching file, behind a per-request load
#   balancer; canaries move by relabelling.
# - TFRS needs Keras 2 (`tf-keras`); Keras Recommenders is its Keras 3, multi-backend
#   successor.
#
# ## Further reading
#
# - TensorFlow guide: [Better performance with the tf.data API](https://www.tensorflow.org/guide/data_performance)
#   and [TFRecord and tf.train.Example](https://www.tensorflow.org/tutorials/load_data/tfrecord).
# - TensorFlow guide: [Distributed training with TensorFlow](https://www.tensorflow.org/guide/distributed_training);
#   tutorial: [Multi-worker training with Keras](https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras);
#   tutorial: [Parameter server training](https://www.tensorflow.org/tutorials/distribute/parameter_server_training).
# - TFRS tutorial: [Distributed training](https://www.tensorflow.org/recommenders/examples/diststrat_retrieval)
#   (retrieval under a distribution strategy).
# - TF Serving: [configuration](https://www.tensorflow.org/tfx/serving/serving_config)
#   (model config, version labels, batching flags) and the
#   [batching guide](https://github.com/tensorflow/serving/blob/master/tensorflow_serving/batching/README.md).
# - Keras Recommenders: [keras.io/keras_rs](https://keras.io/keras_rs/) and its
#   [API documentation](https://keras.io/keras_rs/api/).
# - Yi et al. (2019), "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
#   Recommendations", RecSys: in-batch negatives at YouTube scale, and the popularity
#   correction that `SamplingProbabilityCorrection` implements.
