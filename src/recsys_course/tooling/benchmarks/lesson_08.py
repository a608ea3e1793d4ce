"""Lesson 08: latency and throughput of serving the retrieval model.

The retrieval model (the id-only two-tower model trained on an 80/20 split, seed 42, three
epochs; TFRS ``BruteForce`` over the whole catalogue, k = 10) is built and exported with the
lesson's own functions (5.1 and 5.2). Then, in the same run:

* **REST on the practice server**: the server runs in its own process
  (``python -m recsys_course.serving``) on 127.0.0.1, and ``:predict`` requests in row format
  (one user each) are sent over loopback, first by one client (500 requests in sequence),
  then by 8 concurrent clients (200 requests each, one keep-alive connection per client);
* **in-process**: the same SavedModel loaded with ``tf.saved_model.load`` and its
  ``serving_default`` signature called directly, one thread and then 8 threads.

For each: p50 and p99 latency in milliseconds, requests per second over the whole batch of
requests, and the number of errors. The difference between the two is what HTTP, JSON and
the stand-in's Python request handling cost; real TF Serving (C++) is faster than the
stand-in, so read the REST numbers as an upper bound. With ``COURSE_BENCH_QUICK=1`` (a smoke
test) each load is 20 single requests and 5 per client.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from recsys_course.tooling.benchmarks import quick
from recsys_course.data import MovieLens, split_ratings

K = 10
SEED = 42
SINGLE_REQUESTS = 500
CLIENTS, PER_CLIENT = 8, 200
WARMUP = 20


def _stats(latencies: list[float], seconds: float, errors: int) -> dict:
    ms = np.asarray(latencies) * 1000
    return {
        "requests": int(len(latencies) + errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 3) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 3) if len(ms) else None,
        "requests_per_second": round(len(latencies) / seconds, 1) if seconds > 0 else None,
        "errors": int(errors),
    }


def _load(make_caller, users: list[str], clients: int, per_client: int) -> dict:
    """Run ``clients`` threads, each with its own ``make_caller()``, ``per_client`` calls each."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(offset: int) -> None:
        call = make_caller()
        for i in range(WARMUP):
            call(users[(offset + i) % len(users)])
        own, failed = [], 0
        barrier.wait()
        for i in range(per_client):
            user = users[(offset * per_client + i) % len(users)]
            t0 = time.perf_counter()
            try:
                call(user)
                own.append(time.perf_counter() - t0)
            except Exception:  # counted
                failed += 1
        with lock:
            latencies.extend(own)
            errors[0] += failed

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return _stats(latencies, time.perf_counter() - started, errors[0])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serving_latency(data: MovieLens, lesson) -> dict:
    import tensorflow as tf

    from recsys_course.serving.client import RestClient
    from recsys_course.models import train_two_tower

    single, per_client = (20, 5) if quick() else (SINGLE_REQUESTS, PER_CLIENT)
    train, _ = split_ratings(data.ratings, 0.2, seed=SEED)
    towers = train_two_tower(train, data.movies, embedding_dim=32, epochs=3, seed=SEED)
    module = lesson.make_retrieval_servable(towers.user_model, towers.movie_ids, towers.movie_embeddings, k=K)
    users = sorted(train["user_id"].astype(str).unique())
    metrics: dict = {
        "model": f"retrieval: TFRS BruteForce over {len(towers.movie_ids):,} movies, k={K}, 32-d",
        "request": "one user per :predict call, row format",
    }
    with tempfile.TemporaryDirectory(prefix="bench05-") as tmp:
        model_dir = Path(tmp) / "retrieval"
        path = lesson.export_version(module, model_dir, 1)
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]

        def in_process():
            return lambda user: signature(user_id=tf.constant([user]))

        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "recsys_course.serving", "--model-base-path", str(model_dir),
             "--model-name", "retrieval", "--port", str(port), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                try:
                    if RestClient(url, timeout=5).available_versions("retrieval") == [1]:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the practice server did not start")
                time.sleep(0.25)

            def rest():
                client = RestClient(url, timeout=30)
                return lambda user: client.predict("retrieval", {"instances": [{"user_id": user}]})

            check = RestClient(url).predict("retrieval", {"instances": [{"user_id": users[0]}]})
            local = signature(user_id=tf.constant([users[0]]))["movie_ids"].numpy().astype(str)[0].tolist()
            metrics["rest_answer_equals_in_process"] = check["predictions"][0]["movie_ids"] == local
            metrics["rest_single_client"] = _load(rest, users, 1, single)
            metrics["rest_8_clients"] = _load(rest, users, CLIENTS, per_client)
        finally:
            server.send_signal(2)  # SIGINT: the server's clean shutdown path
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        metrics["in_process_single_thread"] = _load(in_process, users, 1, single)
        metrics["in_process_8_threads"] = _load(in_process, users, CLIENTS, per_client)
    return metrics
