"""The local-cluster helpers of lesson 09 (recsys_course.cluster.launch, .replicas): ports, deadlines and,
above all, that no process survives a failed or timed-out run. Every process binds
127.0.0.1 only and every wait has a hard limit. Only one test starts TensorFlow workers."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from recsys_course.cluster.launch import (
    ClusterTimeout,
    PortInUseError,
    Task,
    TaskFailed,
    ensure_ports_free,
    free_ports,
    run_multiworker_training,
    run_tasks,
    tf_config,
)


def processes_with_marker(marker: str) -> list[int]:
    """Pids of this user's processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_gone(marker: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def marker(monkeypatch):
    value = f"course-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("COURSE_TEST_MARKER", value)
    yield value
    for pid in processes_with_marker(value):  # never leave anything behind, even on failure
        os.kill(pid, signal.SIGKILL)


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    ensure_ports_free(ports)


def test_a_taken_port_gives_a_clear_error_before_anything_starts(marker):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            run_multiworker_training(pd.DataFrame({"user_id": ["1"], "movie_id": ["1"]}),
                                     pd.DataFrame({"movie_id": ["1"]}), n_workers=2, global_batch_size=2,
                                     ports=[port, free_ports(1)[0]])
    assert processes_with_marker(marker) == []


def test_tf_config_names_the_task_and_checks_it():
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert '"task": {"type": "worker", "index": 1}' in tf_config(cluster, "worker", 1)
    with pytest.raises(ValueError, match="out of range"):
        tf_config(cluster, "worker", 2)


# Sleeps, with a sleeping child of its own: killing the process group must end both.
SLEEPER = (
    "import time, subprocess, sys; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)


def test_a_failing_task_kills_the_others_and_their_children(marker, tmp_path):
    tasks = [
        Task("server", [sys.executable, "-c", SLEEPER], wait=False),
        Task("worker0", [sys.executable, "-c", SLEEPER]),
        Task("worker1", [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit('boom')"]),
    ]
    started = time.monotonic()
    with pytest.raises(TaskFailed, match="(?s)worker1 exited with code 1.*boom"):
        run_tasks(tasks, timeout=30, log_dir=tmp_path)
    assert time.monotonic() - started < 20
    assert wait_gone(marker) == [], "processes of the failed run survived"


def test_the_deadline_kills_everything(marker, tmp_path):
    with pytest.raises(ClusterTimeout, match="did not finish within 1 s"):
        run_tasks([Task("worker0", [sys.executable, "-c", SLEEPER])], timeout=1, log_dir=tmp_path)
    assert wait_gone(marker) == []


def test_a_task_ends_itself_after_its_lifetime(marker):
    code = ("from recsys_course.cluster.lifetime import limit_lifetime; limit_lifetime(); "
            "import time; time.sleep(60)")
    env = {**os.environ, "COURSE_TASK_LIFETIME": "1"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        assert process.wait(timeout=20) == -signal.SIGALRM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_failing_tensorflow_worker_leaves_no_process(marker):
    """Worker 1 exits with an error after start-up; worker 0, blocked waiting for it in the
    collective set-up, must be killed and the error must say which worker failed."""
    pairs = pd.DataFrame({"user_id": ["1", "2", "3", "4"], "movie_id": ["1", "2", "1", "2"]})
    with pytest.raises(TaskFailed, match="(?s)worker1 exited with code 3.*failing on purpose"):
        run_multiworker_training(pairs, pd.DataFrame({"movie_id": ["1", "2"]}), n_workers=2,
                                 global_batch_size=2, epochs=1, fail_worker=1, timeout=240)
    assert wait_gone(marker) == [], "a worker survived the failed run"


def test_steps_per_epoch_trains_a_timed_slice_of_the_epoch(marker):
    """Two real workers, 64 pairs in global batches of 4 (16 per epoch), capped at 6: the
    chief reports 6 steps and a positive time per step, and no worker outlives the run."""
    pairs = pd.DataFrame({"user_id": [str(i % 8) for i in range(64)], "movie_id": [str(i % 5) for i in range(64)]})
    run = run_multiworker_training(pairs, pd.DataFrame({"movie_id": [str(i) for i in range(5)]}), n_workers=2,
                                   global_batch_size=4, epochs=1, steps_per_epoch=6, gather_negatives=True,
                                   timeout=240)
    assert run.steps == 6
    assert 0 < run.seconds_per_step < run.fit_seconds
    assert run.examples_per_second == pytest.approx(6 * 4 / run.fit_seconds)
    assert wait_gone(marker) == []


# ---- several replicas in one process (recsys_course.cluster.replicas) ---------------------------
REPLICAS_SCRIPT = """
import json
import recsys_course
import numpy as np
import tensorflow as tf
from recsys_course.cluster.replicas import logical_cpus, mirrored_strategy, per_replica

found = logical_cpus(3)
strategy = mirrored_strategy(3)


def gathered_rows(x):
    return tf.distribute.get_replica_context().all_gather(x, axis=0)


out = {"devices": found, "replicas": strategy.num_replicas_in_sync, "gathered": []}
for rows in (6, 9):  # a second gather of another shape must work in the same process
    values = np.arange(rows * 2, dtype="float32").reshape(rows, 2)
    result = strategy.run(gathered_rows, args=(per_replica(strategy, values),))
    out["gathered"].append([np.asarray(v).tolist() for v in strategy.experimental_local_results(result)])
try:
    per_replica(strategy, np.zeros((4, 2), "float32"))
except ValueError as error:
    out["uneven"] = str(error)
print(json.dumps(out))
"""


def test_logical_cpus_give_a_mirrored_strategy_whose_gathers_change_shape():
    done = subprocess.run([sys.executable, "-c", REPLICAS_SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 3 and out["replicas"] == 3
    for rows, gathered in zip((6, 9), out["gathered"]):
        everything = [[float(2 * r), float(2 * r + 1)] for r in range(rows)]
        assert gathered == [everything] * 3, f"every replica must see all {rows} rows in replica order"
    assert "do not split evenly" in out["uneven"]


def test_mirrored_strategy_explains_missing_devices():
    script = ("import recsys_course, tensorflow as tf\n"
              "tf.constant(1.0)  # starts the runtime: too late to split the CPU\n"
              "from recsys_course.cluster.replicas import logical_cpus, mirrored_strategy\n"
              "assert logical_cpus(3) == 1\n"
              "try:\n    mirrored_strategy(3)\nexcept RuntimeError as error:\n    print(error)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "logical_cpus(3)" in done.stdout and "restart" in done.stdout
