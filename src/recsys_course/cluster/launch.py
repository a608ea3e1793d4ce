"""Start and stop small TensorFlow clusters on this machine, for lesson 09 and its tests.

A ``tf.distribute`` cluster is a set of processes that find each other through the
``TF_CONFIG`` environment variable: a JSON object with the ``cluster`` (role name -> list of
``host:port`` addresses) and this process's own ``task`` (role and index). This module:

* picks free ports on 127.0.0.1 (:func:`free_ports`) and refuses a port that is taken with a
  clear :class:`PortInUseError` (:func:`ensure_ports_free`);
* writes ``TF_CONFIG`` (:func:`tf_config`);
* runs one process per task (:func:`run_tasks`), each in its own process group, with a hard
  deadline; when any task fails or the deadline passes, every process group is killed before
  the error is raised, so no worker outlives the call. Each task also carries a lifetime limit
  of its own (``SIGALRM``), so even a parent killed with ``SIGKILL`` leaves no orphan for long;
* wraps the two jobs of the lesson: multi-worker two-tower training
  (:func:`run_multiworker_training`, worker code in ``recsys_course.cluster.multiworker_two_tower``)
  and a parameter-server job (:func:`run_parameter_server_job`, code in
  ``recsys_course.cluster.parameter_server_job``).

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

HOST = "127.0.0.1"
__all__ = [
    "ClusterError", "ClusterTimeout", "PortInUseError", "Task", "TaskFailed", "ensure_ports_free",
    "free_ports", "held_out_recall", "run_multiworker_training", "run_parameter_server_job",
    "run_tasks", "tf_config",
]


class ClusterError(RuntimeError):
    """A local cluster could not be started or did not finish."""


class PortInUseError(ClusterError):
    """A port given for a task is already taken on 127.0.0.1."""


class TaskFailed(ClusterError):
    """A task exited with an error; the message ends with the tail of its log."""


class ClusterTimeout(ClusterError):
    """The tasks did not finish within the deadline (they were killed)."""


# ----------------------------------------------------------------------------- ports
def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that were free on 127.0.0.1 a moment ago.

    The sockets are bound to port 0 (the kernel picks a free port) all at once, so the
    ports differ, then closed. Another program could take one before TensorFlow binds it;
    :func:`run_tasks` then reports the failed task with its log.
    """
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ensure_ports_free(ports: list[int]) -> None:
    """Raise :class:`PortInUseError` naming the first port of ``ports`` already in use."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, int(port)))
            except OSError as error:
                raise PortInUseError(
                    f"port {port} on {HOST} is already in use ({error.strerror}); stop the "
                    "program that holds it, or pass ports=None to let free_ports() choose"
                ) from None


def tf_config(cluster: dict[str, list[str]], task_type: str, task_index: int) -> str:
    """The ``TF_CONFIG`` JSON string for task ``task_index`` of role ``task_type``."""
    if task_type not in cluster:
        raise ValueError(f"role {task_type!r} is not in the cluster (roles: {sorted(cluster)})")
    if not 0 <= task_index < len(cluster[task_type]):
        raise ValueError(
            f"{task_type} has {len(cluster[task_type])} task(s); index {task_index} is out of range"
        )
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": task_index}})


# ----------------------------------------------------------------------------- processes
@dataclass
class Task:
    """One process to run: a name for messages, its argv and extra environment variables.

    ``wait``: whether :func:`run_tasks` waits for it to exit (True, e.g. workers and the
    chief) or kills it once the waited-for tasks are done (False: servers that never exit).
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    wait: bool = True


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    # TensorFlow's C++ start-up chatter (W0000/I0000 lines) hides the real error.
    useful = [line for line in text if not line.startswith(("W0000", "I0000", "WARNING: All log"))]
    return "\n".join(useful[-lines:])


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def run_tasks(tasks: list[Task], timeout: float, log_dir: Path) -> dict[str, float]:
    """Run ``tasks`` as child processes and wait for those with ``wait=True``.

    Each task starts in a new session (its own process group) with stdout and stderr in
    ``log_dir/<name>.log``. Returns each waited-for task's wall seconds, from the start of
    all tasks to its exit. Raises :class:`TaskFailed` as soon as any task exits non-zero
    (including a server task, which should never exit), and :class:`ClusterTimeout` after
    ``timeout`` seconds. In every case, every process group still alive is killed with
    ``SIGKILL`` before this function returns or raises.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, subprocess.Popen] = {}
    done: dict[str, float] = {}
    started = time.monotonic()
    try:
        for task in tasks:
            with open(log_dir / f"{task.name}.log", "wb") as log:
                running[task.name] = subprocess.Popen(
                    task.argv, env={**os.environ, **task.env}, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
        waited = {task.name for task in tasks if task.wait}
        while waited - set(done):
            for task in tasks:
                code = running[task.name].poll()
                if code is None or task.name in done:
                    continue
                if code != 0 or not task.wait:
                    raise TaskFailed(
                        f"task {task.name} exited with code {code}; last lines of its log:\n"
                        f"{_tail(log_dir / f'{task.name}.log')}"
                    )
                done[task.name] = time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise ClusterTimeout(
                    f"tasks {sorted(waited - set(done))} did not finish within {timeout:.0f} s and "
                    "were killed; raise the timeout on a slow or busy machine"
                )
            time.sleep(0.05)
        return done
    finally:
        for process in running.values():
            _kill_group(process)


def _python_task(name: str, module: str, args: list[str], cluster: dict, role: str, index: int,
                 lifetime: float, wait: bool = True) -> Task:
    env = {
        "TF_CONFIG": tf_config(cluster, role, index),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "COURSE_TASK_LIFETIME": str(int(lifetime) + 1),
        "CUDA_VISIBLE_DEVICES": "-1",
    }
    return Task(name, [sys.executable, "-m", module, *args], env, wait)


# ----------------------------------------------------------------------------- multi-worker
@dataclass
class TrainingRun:
    """What one multi-worker training run produced (read from the chief's output).

    ``fit_seconds``: wall time of ``model.fit`` on the chief; ``wall_seconds``: from the
    launch of the processes to the chief's exit (includes importing TensorFlow and
    connecting the workers). ``examples_per_second``: training pairs seen (global batches
    run times their size, the last batch of an epoch may be smaller) divided by
    ``fit_seconds``. ``steps``: global batches run; ``seconds_per_step``: the chief's time per
    step once the first steps (tracing, filling the shuffle buffer) are over.
    ``user_ids``/``user_embeddings`` and ``movie_ids``/``movie_embeddings`` are the trained
    towers' outputs.
    """

    n_workers: int
    gather_negatives: bool
    fit_seconds: float
    wall_seconds: float
    examples_per_second: float
    global_batch_size: int
    per_replica_batch_size: int
    loss_per_example: list[float]
    user_ids: np.ndarray
    user_embeddings: np.ndarray
    movie_ids: np.ndarray
    movie_embeddings: np.ndarray
    steps: int = 0
    seconds_per_step: float = float("nan")


def run_multiworker_training(
    train: pd.DataFrame,
    movies: pd.DataFrame,
    *,
    n_workers: int = 2,
    epochs: int = 3,
    global_batch_size: int = 4096,
    embedding_dim: int = 32,
    learning_rate: float = 0.1,
    gather_negatives: bool = False,
    seed: int = 42,
    ports: list[int] | None = None,
    timeout: float = 300.0,
    fail_worker: int | None = None,
    steps_per_epoch: int | None = None,
) -> TrainingRun:
    """Train the course's id-only two-tower model with ``MultiWorkerMirroredStrategy`` on
    ``n_workers`` local processes and return the chief's results.

    Every worker reads the same pairs; tf.data's DATA auto-sharding gives each worker its
    part of every global batch of ``global_batch_size`` pairs. With ``gather_negatives``
    each replica scores its users against the movies of the *whole* global batch (an
    all-gather); otherwise only against its own share. ``ports``: one per worker (default:
    free ones). ``fail_worker``: index of a worker that exits with an error right after
    start-up (for tests of the clean-up). ``steps_per_epoch``: at most this many global
    batches per epoch (``None``: all), to time a slice of a long epoch. Raises :class:`PortInUseError`,
    :class:`TaskFailed` or :class:`ClusterTimeout`; no worker survives any of them.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, got {n_workers}")
    if global_batch_size % n_workers:
        raise ValueError(
            f"global_batch_size {global_batch_size} must divide evenly among {n_workers} workers"
        )
    if ports is None:
        ports = free_ports(n_workers)
    if len(ports) != n_workers:
        raise ValueError(f"need {n_workers} ports, got {len(ports)}")
    ensure_ports_free(ports)
    cluster = {"worker": [f"{HOST}:{port}" for port in ports]}
    with tempfile.TemporaryDirectory(prefix="course-multiworker-") as folder:
        work = Path(folder)
        np.savez(
            work / "data.npz",
            user_id=train["user_id"].astype(str).to_numpy().astype(str),
            movie_id=train["movie_id"].astype(str).to_numpy().astype(str),
            catalogue=np.unique(movies["movie_id"].astype(str).to_numpy().astype(str)),
        )
        settings = {
            "epochs": epochs, "global_batch_size": global_batch_size, "embedding_dim": embedding_dim,
            "learning_rate": learning_rate, "gather_negatives": gather_negatives, "seed": seed,
            "fail_worker": fail_worker, "steps_per_epoch": steps_per_epoch,
        }
        (work / "settings.json").write_text(json.dumps(settings))
        tasks = [
            _python_task(f"worker{i}", "recsys_course.cluster.multiworker_two_tower", [str(work)],
                         cluster, "worker", i, timeout)
            for i in range(n_workers)
        ]
        seconds = run_tasks(tasks, timeout, work / "logs")
        report = json.loads((work / "result.json").read_text())
        arrays = np.load(work / "embeddings.npz")
        return TrainingRun(
            n_workers=n_workers, gather_negatives=gather_negatives,
            fit_seconds=report["fit_seconds"], wall_seconds=seconds["worker0"],
            examples_per_second=min(report["steps"] * global_batch_size, epochs * len(train)) / report["fit_seconds"],
            global_batch_size=global_batch_size,
            per_replica_batch_size=report["per_replica_batch_size"],
            loss_per_example=report["loss_per_example"],
            user_ids=arrays["user_ids"], user_embeddings=arrays["user_embeddings"],
            movie_ids=arrays["movie_ids"], movie_embeddings=arrays["movie_embeddings"],
            steps=report["steps"], seconds_per_step=report["seconds_per_step"],
        )


def held_out_recall(run: TrainingRun, train: pd.DataFrame, test: pd.DataFrame, k: int = 10) -> float:
    """recall@k over the full catalogue for the test users the model saw in training, with
    each user's training movies excluded (``recsys_course.evaluation``)."""
    from recsys_course import evaluation

    known = set(run.user_ids)
    users = np.array(sorted(set(test["user_id"].astype(str)) & known))
    rows = pd.Index(run.user_ids).get_indexer(users)
    scores = run.user_embeddings[rows] @ run.movie_embeddings.T
    def as_str(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(user_id=frame["user_id"].astype(str), movie_id=frame["movie_id"].astype(str))

    seen = evaluation.interaction_matrix(as_str(train), users, run.movie_ids)
    relevant = evaluation.interaction_matrix(as_str(test), users, run.movie_ids)
    ranked = evaluation.top_k(scores, k, exclude=seen)
    return evaluation.recall_at_k(ranked, relevant, k)


# ----------------------------------------------------------------------------- parameter server
def run_parameter_server_job(
    *, n_items: int = 100_000, embedding_dim: int = 16, n_shards: int = 2, steps: int = 20,
    ports: list[int] | None = None, timeout: float = 180.0,
) -> dict:
    """Run a small ``ParameterServerStrategy`` job: one chief, one parameter server and one
    worker, three processes on 127.0.0.1.

    The chief builds an ``n_items x embedding_dim`` embedding table split into ``n_shards``
    shards on the parameter server, trains it for ``steps`` steps through the worker, and
    reports (as a dict) each shard's shape and device, the loss before and after, and the
    wall seconds of training. The parameter server and worker only serve; they are killed
    when the chief is done (or fails, or the ``timeout`` passes).
    """
    if ports is None:
        ports = free_ports(3)
    if len(ports) != 3:
        raise ValueError(f"need 3 ports (chief, ps, worker), got {len(ports)}")
    ensure_ports_free(ports)
    cluster = {role: [f"{HOST}:{port}"] for role, port in zip(("chief", "ps", "worker"), ports)}
    with tempfile.TemporaryDirectory(prefix="course-ps-") as folder:
        work = Path(folder)
        settings = {"n_items": n_items, "embedding_dim": embedding_dim, "n_shards": n_shards, "steps": steps}
        (work / "settings.json").write_text(json.dumps(settings))
        module = "recsys_course.cluster.parameter_server_job"
        tasks = [
            _python_task("ps0", module, ["serve"], cluster, "ps", 0, timeout, wait=False),
            _python_task("worker0", module, ["serve"], cluster, "worker", 0, timeout, wait=False),
            _python_task("chief", module, ["chief", str(work)], cluster, "chief", 0, timeout),
        ]
        seconds = run_tasks(tasks, timeout, work / "logs")
        report = json.loads((work / "result.json").read_text())
        report["wall_seconds"] = seconds["chief"]
        return report
