"""Graded tests for lesson 09 (scaling out). Each test checks one behaviour of one exercise
on a tiny fixture; the points add up to the exercise's points in
solutions/09_scaling_out.yml. No cluster is started here (see tests/dev/test_distributed.py)."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("09")


# ---------------------------------------------------------------- 9.1 TF_CONFIG

CLUSTER = {
    "chief": ["127.0.0.1:3000"],
    "worker": ["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"],
    "ps": ["127.0.0.1:3004"],
}


@exercise("9.1", points=1)
def test_tf_config_holds_the_whole_cluster_and_the_task(lesson):
    text = lesson.tf_config_for(CLUSTER, "worker", 2)
    assert isinstance(text, str), f"TF_CONFIG is an environment variable: expected a JSON string, got {type(text).__name__}"
    config = json.loads(text)
    expected = {"cluster": CLUSTER, "task": {"type": "worker", "index": 2}}
    assert config == expected, f"expected {expected}, got {config}"


@exercise("9.1", points=1)
def test_tf_config_rejects_an_unknown_role(lesson):
    with pytest.raises(ValueError):
        lesson.tf_config_for(CLUSTER, "evaluator", 0)


@exercise("9.1", points=1)
def test_tf_config_rejects_an_index_out_of_range(lesson):
    for index in (3, -1):
        with pytest.raises(ValueError):
            lesson.tf_config_for(CLUSTER, "worker", index)
    assert json.loads(lesson.tf_config_for(CLUSTER, "ps", 0))["task"] == {"type": "ps", "index": 0}


# ---------------------------------------------------------------- 9.2 tf.data pipeline

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


@exercise("9.2", points=1)
def test_pipeline_yields_every_record_once(lesson, shards):
    ratings, files = shards
    batches = _read_all(lesson.ratings_dataset(files, 10))
    got = Counter((u.decode(), m.decode()) for b in batches for u, m in zip(b["user_id"], b["movie_id"]))
    expected = Counter(zip(ratings["user_id"], ratings["movie_id"]))
    assert got == expected, (
        f"expected each of the {len(ratings)} records of the 4 files exactly once, got {sum(got.values())} "
        f"records, {len(set(got) ^ set(expected))} (user, movie) pairs differ"
    )


@exercise("9.2", points=1)
def test_pipeline_batches_keep_the_remainder(lesson, shards):
    _, files = shards
    sizes = sorted(len(b["user_id"]) for b in _read_all(lesson.ratings_dataset(files, 10)))
    assert sizes == [3] + [10] * 10, f"103 records in batches of 10: expected ten of 10 and one of 3, got {sizes}"


@exercise("9.2", points=1)
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


# ---------------------------------------------------------------- 9.3 batch arithmetic

@exercise("9.3", points=1)
def test_batch_plan_splits_the_global_batch(lesson):
    plan = lesson.batch_plan(10_000, 256, 4)
    expected = {"per_replica_batch_size": 64, "steps_per_epoch": 40, "negatives_per_example": 63}
    assert plan == expected, f"10,000 examples, global batch 256 on 4 replicas: expected {expected}, got {plan}"


@exercise("9.3", points=1)
def test_batch_plan_counts_a_partial_last_step(lesson):
    plan = lesson.batch_plan(1001, 250, 2)
    assert plan["steps_per_epoch"] == 5, f"1,001 examples in global batches of 250 take 5 steps (the last one partial), got {plan['steps_per_epoch']}"
    assert plan["per_replica_batch_size"] == 125 and plan["negatives_per_example"] == 124, (
        f"global batch 250 on 2 replicas: expected 125 per replica and 124 negatives, got {plan}"
    )


@exercise("9.3", points=1)
def test_batch_plan_rejects_an_uneven_split(lesson):
    with pytest.raises(ValueError):
        lesson.batch_plan(1000, 100, 3)
    assert lesson.batch_plan(1000, 100, 1) == {"per_replica_batch_size": 100, "steps_per_epoch": 10, "negatives_per_example": 99}


# ---------------------------------------------------------------- 9.4 batching parameters

def _parse(text):
    from recsys_course.serving.batching_proto import parse_batching_parameters

    return parse_batching_parameters(text)


@exercise("9.4", points=1)
def test_batching_text_parses_with_the_scalar_settings(lesson):
    text = lesson.batching_parameters_text(128, timeout_ms=2.5, num_batch_threads=6, max_enqueued_batches=40)
    parsed = _parse(text)
    got = (parsed.max_batch_size.value, parsed.batch_timeout_micros.value, parsed.num_batch_threads.value,
           parsed.max_enqueued_batches.value)
    assert got == (128, 2500, 6, 40), (
        f"expected max_batch_size 128, batch_timeout_micros 2500 (2.5 ms), 6 threads, 40 batches; got {got}"
    )
    assert list(parsed.allowed_batch_sizes) == [], f"no allowed sizes were given, got {list(parsed.allowed_batch_sizes)}"


@exercise("9.4", points=1)
def test_batching_text_lists_the_allowed_sizes(lesson):
    parsed = _parse(lesson.batching_parameters_text(32, 1, 2, 10, allowed_batch_sizes=(4, 8, 32)))
    assert list(parsed.allowed_batch_sizes) == [4, 8, 32], f"expected allowed sizes [4, 8, 32], got {list(parsed.allowed_batch_sizes)}"
    assert parsed.max_batch_size.value == 32 and parsed.batch_timeout_micros.value == 1000


@exercise("9.4", points=1)
def test_batching_text_rejects_bad_allowed_sizes(lesson):
    for sizes in ((4, 8, 16), (8, 4, 32), (4, 4, 32)):
        with pytest.raises(ValueError):
            lesson.batching_parameters_text(32, 1, 2, 10, allowed_batch_sizes=sizes)
