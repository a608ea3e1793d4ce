"""Graded tests for lesson 09 (scaling out). Each test checks one behaviour of one exercise
on a tiny fixture; the points add up to the exercise's points in
solutions/09_scaling_out.yml. No cluster is started here (see tests/dev/test_distributed.py);
9.2 runs on a MirroredStrategy of logical CPU devices in one process."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("09")


# ---------------------------------------------------------------- 9.1 tf.data pipeline

def write_shard_files(ratings, folder=None):
    """The four TFRecord files, written where the learner's code reads them (``sandboxed``:
    in the sandbox in batch grading, where a path names a file of the sandbox)."""
    import tempfile

    from recsys_course.cluster.tfrecords import write_shards

    return write_shards(ratings, folder or tempfile.mkdtemp(prefix="shards-"), n_shards=4)


@pytest.fixture(scope="module")
def shards(lesson, tmp_path_factory):
    ratings = pd.DataFrame({
        "user_id": [f"u{i % 17}" for i in range(103)],
        "movie_id": [f"m{(7 * i) % 41}" for i in range(103)],
        "user_rating": np.linspace(1.0, 5.0, 103).astype(np.float32),
    })
    write = sandboxed(lesson, write_shard_files)
    in_process = write is write_shard_files
    return ratings, write(ratings, tmp_path_factory.mktemp("shards") if in_process else None)


def _read_all(dataset):
    batches = [{k: v.numpy() for k, v in batch.items()} for batch in dataset]
    return batches


@exercise("9.1", points=1)
def test_pipeline_yields_every_record_once(lesson, shards):
    ratings, files = shards
    batches = _read_all(lesson.ratings_dataset(files, 10))
    got = Counter((u.decode(), m.decode()) for b in batches for u, m in zip(b["user_id"], b["movie_id"]))
    expected = Counter(zip(ratings["user_id"], ratings["movie_id"]))
    assert got == expected, (
        f"expected each of the {len(ratings)} records of the 4 files exactly once, got {sum(got.values())} "
        f"records, {len(set(got) ^ set(expected))} (user, movie) pairs differ"
    )


@exercise("9.1", points=1)
def test_pipeline_batches_keep_the_remainder(lesson, shards):
    _, files = shards
    sizes = sorted(len(b["user_id"]) for b in _read_all(lesson.ratings_dataset(files, 10)))
    assert sizes == [3] + [10] * 10, f"103 records in batches of 10: expected ten of 10 and one of 3, got {sizes}"


@exercise("9.1", points=1)
def test_pipeline_parses_types_and_values(lesson, shards):
    ratings, files = shards
    dataset = lesson.ratings_dataset([str(f) for f in files], 64)
    spec = dataset.element_spec
    assert isinstance(spec, dict) and set(spec) == {"user_id", "movie_id", "user_rating"}, f"expected a dict of the three features, got {spec}"
    assert spec["user_id"].dtype.name == "string" and spec["user_rating"].dtype.name == "float32", (
        f"expected string ids and float32 ratings, got {spec}"
    )
    batches = _read_all(dataset)
    by_pair = {(u.decode(), m.decode()): r for b in batches for u, m, r in zip(b["user_id"], b["movie_id"], b["user_rating"])}
    expected = {(u, m): r for u, m, r in zip(ratings["user_id"], ratings["movie_id"], ratings["user_rating"])}
    wrong = [pair for pair in expected if pair not in by_pair or abs(by_pair[pair] - expected[pair]) > 1e-5]
    assert not wrong, f"ratings differ from the files for {len(wrong)} pairs, e.g. {wrong[:3]}"


# ---------------------------------------------------------------- 9.2 gathered negatives
# A global batch of 6 pairs in 2 dimensions, split over 3 replicas (2 rows each) and, in the
# last test, of 9 pairs over the same 3 replicas (one process keeps one set of replicas:
# TensorFlow's collectives refuse a second strategy of another size). Every expected number
# is recomputed below in NumPy.
QUERIES = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5], [0.5, -0.5], [2.0, 0.0]], "float32")
CANDIDATES = np.array([[1.5, 0.0], [0.0, 2.0], [0.5, 0.5], [-1.0, 1.0], [0.2, -0.8], [1.0, -1.0]], "float32")

# Run where the lesson lives. TensorFlow can split the CPU into logical devices only before
# its runtime starts; a process in which it already started (another lesson's tests ran
# first) computes in a fresh interpreter instead, with the same code.
REPLICA_SCRIPT = """
import json, sys
import recsys_course
import numpy as np
from recsys_course.cluster.replicas import logical_cpus, mirrored_strategy, per_replica
args = json.loads(sys.argv[2])
logical_cpus(args["replicas"])
from recsys_course.tooling.grading.loader import load_lesson
lesson = load_lesson(sys.argv[1], "lesson_09_replicas")
strategy = mirrored_strategy(args["replicas"])
result = strategy.run(lesson.gathered_softmax_loss, args=(
    per_replica(strategy, np.asarray(args["queries"], "float32")),
    per_replica(strategy, np.asarray(args["candidates"], "float32"))))
print(json.dumps([float(v) for v in strategy.experimental_local_results(result)]))
"""


def losses_by_replica(lesson, queries, candidates, replicas):
    """Each replica's value of the learner's loss under a MirroredStrategy of ``replicas``
    logical CPUs (an instructors' helper: it only runs the function)."""
    import json
    import subprocess
    import sys

    import numpy as np
    from recsys_course.cluster.replicas import logical_cpus, mirrored_strategy, per_replica

    if logical_cpus(replicas) >= replicas:
        strategy = mirrored_strategy(replicas)
        result = strategy.run(lesson.gathered_softmax_loss, args=(
            per_replica(strategy, np.asarray(queries, "float32")), per_replica(strategy, np.asarray(candidates, "float32"))))
        return [float(v) for v in strategy.experimental_local_results(result)]
    payload = json.dumps({"replicas": replicas, "queries": np.asarray(queries).tolist(),
                          "candidates": np.asarray(candidates).tolist()})
    done = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT, lesson.__file__, payload],
                          capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "the replica run failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_by_replica(queries, candidates, replicas):
    """Replica r's rows against every candidate, labels r * b + i, summed per replica."""
    logits = queries.astype(np.float64) @ candidates.T.astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    per_row = -np.diag(log_p)
    return per_row.reshape(replicas, -1).sum(axis=1)


def run_or_fail(lesson, queries, candidates, replicas):
    try:
        values = sandboxed(lesson, losses_by_replica)(lesson, queries, candidates, replicas)
    except Exception as error:  # the learner's code may raise anything
        pytest.fail(f"gathered_softmax_loss under a MirroredStrategy of {replicas} replicas raised "
                    f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}", pytrace=False)
    return np.asarray(values, dtype=np.float64)


@exercise("9.2", points=1)
def test_gathered_losses_add_up_to_the_one_device_loss(lesson):
    got = run_or_fail(lesson, QUERIES, CANDIDATES, 3)
    expected = expected_by_replica(QUERIES, CANDIDATES, 3).sum()
    assert got.shape == (3,), f"expected one scalar loss per replica (3), got {got.shape}"
    assert got.sum() == pytest.approx(expected, rel=1e-4), (
        f"summed over the 3 replicas, the loss should be the one-device in-batch softmax loss of all 6 pairs, "
        f"{expected:.4f}; got {got.sum():.4f} (per replica {np.round(got, 4).tolist()}). Each replica must score "
        "its queries against the candidates of every replica (all_gather), and sum, not average"
    )


@exercise("9.2", points=1)
def test_each_replica_labels_its_own_columns(lesson):
    got = run_or_fail(lesson, QUERIES, CANDIDATES, 3)
    expected = expected_by_replica(QUERIES, CANDIDATES, 3)
    assert np.allclose(got, expected, rtol=1e-4), (
        f"replica r's row i has its positive in column r * 2 + i of the gathered candidates: expected the "
        f"replicas' losses {np.round(expected, 4).tolist()}, got {np.round(got, 4).tolist()}"
    )


@exercise("9.2", points=1)
def test_gathered_loss_with_three_rows_per_replica(lesson):
    rng = np.random.default_rng(5)
    queries = rng.normal(size=(9, 3)).astype("float32")
    candidates = rng.normal(size=(9, 3)).astype("float32")
    got = run_or_fail(lesson, queries, candidates, 3)
    expected = expected_by_replica(queries, candidates, 3)
    assert np.allclose(got, expected, rtol=1e-4), (
        f"9 random pairs over 3 replicas of 3 rows: expected {np.round(expected, 4).tolist()}, "
        f"got {np.round(got, 4).tolist()} (the number of rows comes from the inputs, the replica from the context)"
    )
