"""Load benchmark of the practice server (`course serve`): not a test, a measurement.

Starts the server as a subprocess on 127.0.0.1 (a free port) with the toy models of
``tests/dev/toy_models.py`` (or ``--models DIR``, e.g. lesson 08's exported models), then
runs, each for a bounded time:

1. 8 and 64 concurrent clients, each on its own keep-alive connection, sending
   single-example ranker requests (``{"inputs": {"user_id": [u], "movie_id": [m]}}``);
2. 2,000 idle connections held open while 8 clients keep asking (the idle ones must not
   lock the clients out or crash the server);
3. an RSS run: 8 clients until ``--rss-requests`` requests (default 50,000), with the
   server's resident memory sampled as it goes;
4. the hostile requests of issue 36 (skip with ``--no-hostile``): one request of 1,000,000
   short strings (a 5 MB body), then eight such requests of 100,000 strings (0.5 MB) at once
   while a client asks for the model status every 50 ms; reported: statuses, seconds, the
   status latencies and the server's RSS before, after and at its peak.

Run it on two checkouts (``PYTHONPATH=<checkout>/src``) to compare a change under the same
load: the server subprocess imports the package from ``PYTHONPATH``.

Prints one JSON object: per phase the requests, errors, throughput (requests/s), p50/p99
latency (ms), the server's CPU time per request (ms; steadier than throughput on a busy
machine) and its RSS (MiB). Clients run in worker processes (threads within
each) so the client side is not one GIL. On a shared 2-core machine the numbers are noisy:
report the load next to them.

    python scripts/bench_serving.py                       # all phases, about 2-4 minutes
    python scripts/bench_serving.py --seconds 5 --rss-requests 5000
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import queue
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RANKER_BODY = [json.dumps({"inputs": {"user_id": [u], "movie_id": [m]}}).encode()
               for u in ("u1", "u2", "u3", "u4") for m in ("m1", "m3", "m5", "m7")]


def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (Linux /proc), None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used (Linux /proc), in seconds: less sensitive to
    other load on the machine than throughput."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_process(port: int, threads: int, seconds: float, max_requests: int, out) -> None:
    """``threads`` clients for ``seconds`` (or until ``max_requests`` in this process)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    budget = [max_requests]

    def client(index: int) -> None:
        connection = None
        i = index
        while time.monotonic() < stop_at:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            body = RANKER_BODY[i % len(RANKER_BODY)]
            i += 1
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("POST", "/v1/models/ranker:predict", body=body,
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {payload[:100]!r}")
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
            except Exception as error:  # every failure is counted
                with lock:
                    errors.append(type(error).__name__ + ": " + str(error)[:100])
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 60)
    out.put((latencies, errors))


def run_clients(port: int, clients: int, seconds: float, pid: int, max_requests: int = 10**9) -> dict:
    processes = min(4, clients)
    per_process = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    out = mp.Queue()
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    workers = [mp.Process(target=_client_process, args=(port, n, seconds, max_requests // processes + 1, out))
               for n in per_process]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in workers:
        got_latencies, got_errors = out.get(timeout=seconds + 120)
        latencies += got_latencies
        errors += got_errors
    for worker in workers:
        worker.join(timeout=30)
    wall = time.monotonic() - started
    cpu_after = cpu_seconds(pid)
    latencies.sort()

    def percentile(p: float) -> float | None:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else None

    return {
        "clients": clients, "seconds": round(wall, 1), "requests": len(latencies), "errors": len(errors),
        "error_examples": sorted(set(errors))[:3], "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": percentile(0.50), "p99_ms": percentile(0.99), "server_rss_mib": rss_mib(pid),
        "server_cpu_ms_per_request": (round(1000 * (cpu_after - cpu_before) / len(latencies), 3)
                                      if latencies and cpu_before is not None and cpu_after is not None else None),
    }


def _memory(pid: int) -> dict[str, float | None]:
    """VmRSS and VmHWM (peak) of ``pid`` in MiB (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"rss": None, "peak": None}
    found = dict(re.findall(r"(VmRSS|VmHWM):\s+(\d+)", text))
    return {"rss": int(found["VmRSS"]) / 1024, "peak": int(found["VmHWM"]) / 1024}


def _post(port: int, body: bytes, timeout: float = 600) -> tuple[int, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/models/retrieval:predict", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


def hostile_phase(port: int, pid: int) -> dict:
    """The requests issue 36 measured: 1,000,000 short strings in one request (it took 69 s and
    3.6 GB before the limits), then eight 0.5 MB requests at once with status checks beside."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak from the current RSS
    except OSError:
        pass
    before = _memory(pid)
    status, seconds = _post(port, b'{"instances": [' + b",".join([b'"u1"'] * 1_000_000) + b"]}")
    result = {"one_million_instances": {"status": status, "seconds": round(seconds, 2)},
              "rss_before_mib": before["rss"] and round(before["rss"], 1)}
    body = b'{"instances": [' + b",".join([b'"u1"'] * 100_000) + b"]}"
    answers: list[tuple[int, float]] = []
    latencies: list[float] = []
    done = threading.Event()

    def health() -> None:
        while not done.is_set():
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                connection.request("GET", "/v1/models/retrieval")
                connection.getresponse().read()
            finally:
                connection.close()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)

    checker = threading.Thread(target=health)
    checker.start()
    senders = [threading.Thread(target=lambda: answers.append(_post(port, body))) for _ in range(8)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=900)
    done.set()
    checker.join(timeout=120)
    after = _memory(pid)
    result["eight_concurrent_half_mb"] = {
        "statuses": sorted(status for status, _ in answers),
        "slowest_seconds": round(max(seconds for _, seconds in answers), 2) if answers else None,
        "status_checks": len(latencies),
        "status_latency_max_ms": round(1000 * max(latencies), 1) if latencies else None,
    }
    result["rss_after_mib"] = after["rss"] and round(after["rss"], 1)
    result["rss_peak_mib"] = after["peak"] and round(after["peak"], 1)
    return result


def start_server(models: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys_course.serving", "--model-base-path", str(models), "--port", "0",
         "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + 300
    seen = []
    while time.monotonic() < deadline and process.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return process, int(match.group(1))
    process.kill()
    raise RuntimeError("the server did not start:\n" + "".join(seen)[-2000:])


def raise_own_file_limit(wanted: int) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, help="a folder of exported models with a 'ranker' (default: toy models)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each client phase (default 15)")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections in phase 2 (default 2000)")
    parser.add_argument("--rss-requests", type=int, default=50_000, help="requests in the RSS run (default 50,000)")
    parser.add_argument("--rss-max-seconds", type=float, default=240.0, help="time cap of the RSS run")
    parser.add_argument("--no-hostile", action="store_true", help="skip the hostile requests of issue 36")
    parser.add_argument("--server-args", default="",
                        help="extra options for the server, e.g. '--num-batch-threads 8' (quote them as one argument)")
    args = parser.parse_args(argv)

    raise_own_file_limit(args.idle + 512)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        models = args.models
        if models is None:
            import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dev"))  # the test fixtures
            from toy_models import export_toy_models

            models = Path(tmp) / "models"
            export_toy_models(models)
        process, port = start_server(models, args.server_args.split())
        result: dict = {"server": "practice server (waitress)", "server_args": args.server_args, "cpus": os.cpu_count(),
                        "load_average_before": os.getloadavg(), "phases": {}}
        try:
            result["server_rss_mib_start"] = rss_mib(process.pid)
            run_clients(port, 4, 2.0, process.pid)  # warm-up: first calls trace TF functions
            for clients in (8, 64):
                result["phases"][f"{clients}_clients"] = run_clients(port, clients, args.seconds, process.pid)
            idle = []
            try:
                for _ in range(args.idle):
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=30))
                phase = run_clients(port, 8, args.seconds, process.pid)
                phase["idle_connections"] = len(idle)
                phase["server_alive"] = process.poll() is None
                result["phases"]["8_clients_with_idle"] = phase
            finally:
                for sock in idle:
                    sock.close()
            rss = []
            done, started = 0, time.monotonic()
            step = max(args.rss_requests // 10, 1)
            while done < args.rss_requests and time.monotonic() - started < args.rss_max_seconds:
                phase = run_clients(port, 8, args.rss_max_seconds, process.pid, max_requests=step)
                done += phase["requests"]
                rss.append([done, phase["server_rss_mib"] and round(phase["server_rss_mib"], 1), phase["errors"]])
            result["phases"]["rss_run"] = {"requests": done, "samples_requests_rss_mib_errors": rss,
                                           "seconds": round(time.monotonic() - started, 1)}
            if not args.no_hostile:
                result["phases"]["hostile"] = hostile_phase(port, process.pid)
            result["server_alive_at_end"] = process.poll() is None
            result["load_average_after"] = os.getloadavg()
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
