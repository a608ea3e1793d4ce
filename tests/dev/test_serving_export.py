"""Exports (recsys_course.serving.export, servables, warmup, ann): every exported model loads
in a fresh process and answers exactly like the in-memory model, saved_model_cli accepts the
exports, model config files parse back, warm-up files round-trip, version folders are read
in numeric order, and the Annoy index finds the dot-product neighbours."""

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from recsys_course.serving.ann import AnnoyCandidates
from recsys_course.serving.export import (
    docker_command,
    model_config_text,
    next_version,
    save_version,
    saved_model_cli,
    signature_section,
    version_dirs,
)
from recsys_course.serving.repository import VersionPolicy, specs_from_config_text
from toy_models import Scaler, toy_servables
from recsys_course.serving.warmup import MAX_WARMUP_RECORDS, read_warmup_requests, write_warmup_requests

USERS = ["u1", "u2", "u4", "unknown-user"]
PAIRS = {"user_id": ["u1", "u3", "u2"], "movie_id": ["m2", "m8", "unknown-movie"]}

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import recsys_course
    import tensorflow as tf
    paths, users, pairs = json.loads(sys.argv[1])
    out = {}
    for name, path in paths.items():
        fn = tf.saved_model.load(path).signatures["serving_default"]
        if name == "ranker":
            result = fn(user_id=tf.constant(pairs["user_id"]), movie_id=tf.constant(pairs["movie_id"]))
        else:
            result = fn(user_id=tf.constant(users))
        out[name] = {k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist()
                     for k, v in result.items()}
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    servables = toy_servables(k=3)
    paths = {
        name: save_version(servable, models / name, 1, signatures={"serving_default": servable.serve})
        for name, servable in servables.items()
    }
    return servables, paths


def in_memory(servables) -> dict:
    answers = {
        "retrieval": servables["retrieval"].serve(tf.constant(USERS)),
        "query_tower": servables["query_tower"].serve(tf.constant(USERS)),
        "ranker": servables["ranker"].serve(tf.constant(PAIRS["user_id"]), tf.constant(PAIRS["movie_id"])),
    }
    return {
        name: {k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist() for k, v in out.items()}
        for name, out in answers.items()
    }


def test_every_export_loads_in_a_fresh_process_with_the_same_answers(exported):
    servables, paths = exported
    argument = json.dumps([{k: str(v) for k, v in paths.items()}, USERS, PAIRS])
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, argument], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout.split("RESULT", 1)[1])
    expected = in_memory(servables)
    assert fresh["retrieval"]["movie_ids"] == expected["retrieval"]["movie_ids"]
    for name, key in [("retrieval", "scores"), ("query_tower", "embedding"), ("ranker", "score")]:
        np.testing.assert_allclose(fresh[name][key], expected[name][key], rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name}.{key} differs after reloading in a fresh process")


def test_saved_model_cli_shows_and_runs_the_serving_signature(exported):
    servables, paths = exported
    with ThreadPoolExecutor(max_workers=2) as pool:  # each run starts TensorFlow: overlap them
        show = pool.submit(saved_model_cli, "show", "--dir", paths["ranker"], "--all")
        run = pool.submit(
            saved_model_cli, "run", "--dir", paths["retrieval"], "--tag_set", "serve",
            "--signature_def", "serving_default", "--input_exprs", "user_id=['u2']",
        )
        shown, run = signature_section(show.result()), run.result()
    assert "signature_def['serving_default']" in shown
    for fragment in ("inputs['user_id']", "inputs['movie_id']", "outputs['score']", "DT_STRING", "DT_FLOAT"):
        assert fragment in shown, f"{fragment} missing from saved_model_cli show:\n{shown}"
    expected = servables["retrieval"].serve(tf.constant(["u2"]))["movie_ids"].numpy()[0]
    for movie in expected:
        assert repr(movie) in run, f"saved_model_cli run should list {movie!r}:\n{run}"


def test_model_config_text_round_trips_policies_and_labels(tmp_path):
    text = model_config_text(
        {"retrieval": "/models/retrieval", "ranker": "/models/ranker"},
        versions={"retrieval": [3, 4]}, labels={"retrieval": {"stable": 3, "canary": 4}},
    )
    assert "model_platform: \"tensorflow\"" in text
    specs = {s.name: s for s in specs_from_config_text(text)}
    assert specs["retrieval"].policy == VersionPolicy("specific", versions=(3, 4))
    assert dict(specs["retrieval"].labels) == {"stable": 3, "canary": 4}
    assert specs["ranker"].policy.select([1, 2, 10]) == [10], "the default policy serves the latest version"
    relative = specs_from_config_text(model_config_text({"m": "models/m"}), relative_to=tmp_path)
    assert relative[0].base_path == tmp_path / "models" / "m"
    with pytest.raises(ValueError):
        specs_from_config_text("model_config_list { config { nme: 'x' } }")


def test_docker_command_mounts_models_and_publishes_both_ports_on_loopback(tmp_path):
    command = docker_command(tmp_path, poll_seconds=5)
    for fragment in ("docker run", "-p 127.0.0.1:8500:8500", "-p 127.0.0.1:8501:8501",
                     f"source={tmp_path.resolve()},target=/models", "--model_config_file=/models/models.config",
                     "--model_config_file_poll_wait_seconds=5", "tensorflow/serving"):
        assert fragment in command, f"{fragment!r} missing from:\n{command}"



def test_docker_command_keeps_a_relative_models_folder_relative():
    command = docker_command(Path(".course/lesson05/models"), poll_seconds=5)
    assert 'source="$PWD/.course/lesson05/models",target=/models' in command, command
    assert str(Path.cwd()) not in command, "the printed command must not show this machine's paths"


def test_version_folders_are_numeric_and_complete_only(tmp_path):
    for name in ("1", "2", "9", "10", ".tmp-11", "notes", "12"):
        (tmp_path / name).mkdir()
    for name in ("1", "2", "9", "10", ".tmp-11"):
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    assert version_dirs(tmp_path) == [1, 2, 9, 10], "hidden, non-numeric and incomplete folders are not versions"
    assert next_version(tmp_path) == 11
    assert next_version(tmp_path / "missing") == 1
    assert VersionPolicy("latest", num_versions=2).select([9, 10, 1]) == [9, 10]
    assert VersionPolicy("all").select([3, 1]) == [1, 3]
    assert VersionPolicy("specific", versions=(1, 7)).select([1, 2]) == [1]


def test_save_version_refuses_overwrite_and_cleans_up_failures(tmp_path):
    scaler = Scaler(2.0)
    save_version(scaler, tmp_path, 1, signatures={"serving_default": scaler.serve})
    with pytest.raises(FileExistsError):
        save_version(scaler, tmp_path, 1, signatures={"serving_default": scaler.serve})
    with pytest.raises(Exception):  # noqa: B017 - any failure of tf.saved_model.save will do
        save_version(object(), tmp_path, 2, signatures={})  # not trackable: tf.saved_model.save fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"], "a failed export must leave nothing behind"
    assert save_version(scaler, tmp_path, signatures={"serving_default": scaler.serve}).name == "2"


def test_warmup_file_round_trips(tmp_path):
    path = write_warmup_requests(tmp_path, [{"user_id": ["u1", "u2"]}, {"user_id": ["u3"]}], model_name="retrieval")
    assert path == tmp_path / "assets.extra" / "tf_serving_warmup_requests"
    requests = read_warmup_requests(tmp_path)
    assert len(requests) == 2
    first = requests[0]
    assert first.model_spec.name == "retrieval" and first.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(first.inputs["user_id"]).tolist() == [b"u1", b"u2"]
    with pytest.raises(ValueError):
        write_warmup_requests(tmp_path, [{"user_id": ["u"]}] * (MAX_WARMUP_RECORDS + 1))
    assert read_warmup_requests(tmp_path / "nothing-here") == []


def test_annoy_candidates_find_dot_product_neighbours(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 8)).astype(np.float32) * rng.uniform(0.2, 3.0, size=(500, 1)).astype(np.float32)
    ids = [f"m{i}" for i in range(500)]
    index = AnnoyCandidates(ids, vectors, n_trees=20, seed=1)
    queries = rng.normal(size=(30, 8)).astype(np.float32)
    recalls = []
    for query in queries:
        exact = {ids[i] for i in np.argsort(-(vectors @ query))[:10]}
        recalls.append(len(exact & set(index.query(query, 10))) / 10)
    assert np.mean(recalls) >= 0.9, f"recall@10 against exact dot product is {np.mean(recalls):.2f}"
    index.save(tmp_path / "annoy")
    loaded = AnnoyCandidates.load(tmp_path / "annoy")
    assert loaded.query(queries[0], 10) == index.query(queries[0], 10)
    with pytest.raises(ValueError):
        index.query(np.zeros(3), 5)
