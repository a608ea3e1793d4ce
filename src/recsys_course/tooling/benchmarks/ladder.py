"""The scale ladder (``course bench ladder``, the appendix lesson 10): training time, peak
memory and recall@10 of every method on growing data, and how each cost grows.

Each rung (a data source, optionally ``@fraction`` of its movies) is prepared once in a
child process (:func:`recsys_course.scale.rungs.prepare_rung`), then every method runs in a
fresh child process of its own (``python -m recsys_course.scale.methods``). A method's
``peak_rss_mb`` is that child's peak resident set size, ``VmHWM`` from
``/proc/self/status`` read by the child as it finishes, or the ``ru_maxrss`` of the
processes it waited for if larger (the two-worker run: its largest worker, not their sum);
see :func:`recsys_course.scale.methods.peak_rss_mb` for why the parent's ``os.wait4``
rusage would overstate it. Fresh processes keep one method's memory from inflating the
next one's peak.

Every process computes on one thread (:data:`THREADS`: BLAS, OpenMP and TensorFlow's
intra-op pool), so a time measures work per core: on a busy machine, threads that wait for
each other make small multi-threaded products erratic (a 235 x 235 Cholesky factorisation
took from one millisecond to a second), which would bend the fitted exponents. One thread
each also lets two methods share a 2-core machine: the one-process towers train while the
baselines of :data:`BESIDE_TOWERS` run one after the other beside them. That costs a dense
inverse nothing measurable (two 1-thread 5,000 x 5,000 inverses at once took 5.6-6.8 s
each, alone 5.8-7.8 s; EASE's inverse at 20,000 movies: 135 s beside the towers, 130 s
alone), but an epoch of the towers beside EASE took up to a fifth longer, so the towers
report their fastest epoch (:func:`recsys_course.scale.methods.steady_epoch_seconds`). The
two-worker run, which uses both cores, runs alone.

Rungs: ``--data A,B,...`` (each anything ``COURSE_DATA`` accepts, plus ``@fraction``), by
default :data:`LADDER` (``synthetic:small`` to ``synthetic:10m``). In quick mode
(``COURSE_BENCH_QUICK=1``) the given source and a seeded half of its movies, with fewer
lambdas, epochs and queries, and the TensorFlow methods on the larger rung only (each
process imports TensorFlow for tens of seconds): a smoke test of every code path.

``course bench ladder --record`` writes the run, with the machine's load before and after,
to ``recsys_course/scale/ladder_recorded.json``, which the appendix page reads.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from recsys_course.data.errors import DataSourceError
from recsys_course.scale import growth, report
from recsys_course.scale.methods import EASE_TUNE_MAX_MOVIES, METHODS
from recsys_course.scale.rungs import parse_rung
from recsys_course.tooling.benchmarks import QUICK_ENV, QUICK_EPOCHS, quick
from recsys_course.tooling.site.markdown import reader_name

LADDER = ("synthetic:small", "synthetic:100k", "synthetic:1m", "synthetic:10m")
ORDER = ("popularity", "item_knn", "ease", "two_tower", "two_tower_2workers", "exact", "annoy", "hnsw")
NEEDS_VECTORS = ("exact", "annoy", "hnsw")  # they search the one-process two towers' vectors
BESIDE_TOWERS = ("popularity", "item_knn", "ease")  # run on the other core while "two_tower" trains
TOWERS = ("two_tower", "two_tower_2workers", *NEEDS_VECTORS)
TIMEOUT_SECONDS = 4 * 3600.0
THREADS = 1
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
QUICK_OPTIONS = {"ease": {"grid": [200.0, 500.0]}, "two_tower": {"max_epochs": QUICK_EPOCHS},
                 "two_tower_2workers": {"steps": 30},
                 "exact": {"queries": 50}, "annoy": {"queries": 50}, "hnsw": {"queries": 50}}


@dataclass
class ChildRun:
    """A finished child process: exit code, wall seconds and its log's tail."""

    returncode: int
    seconds: float
    log_tail: str


#: Children started by :func:`run_child` and not yet finished, in any thread: when the main
#: thread stops (Ctrl-C, SIGTERM), :func:`stop_all_children` ends them, so a thread waiting
#: for one returns, and no child starts after that.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def stop_all_children() -> None:
    """End every child of :func:`run_child` still running, in any thread, and refuse to
    start new ones until the next ladder run."""
    with _LIVE_LOCK:
        _STOPPING.set()
        live = list(_LIVE)
    for process in live:
        _stop_group(process)


def run_child(argv: list[str], log: Path, timeout: float = TIMEOUT_SECONDS) -> ChildRun:
    """Run ``argv`` in its own process group and wait for it.

    After ``timeout`` seconds the whole group is killed (and the run reported as failed).
    Output goes to ``log``; ``log_tail`` holds its last lines without TensorFlow's start-up
    chatter."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1",
           **{name: str(THREADS) for name in THREAD_ENV}}
    started = time.perf_counter()
    with _LIVE_LOCK:
        if _STOPPING.is_set():
            return ChildRun(-signal.SIGTERM, 0.0, "not started: the ladder is stopping")
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        _LIVE.add(process)
    timer = threading.Timer(timeout, lambda: _stop_group(process))
    timer.start()
    try:
        process.wait()
    finally:  # also on Ctrl-C or SIGTERM: the child's group is its own, so end it here
        timer.cancel()
        _stop_group(process)  # and anything the child left behind
        with _LIVE_LOCK:
            _LIVE.discard(process)
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if not line.startswith(("W0000", "I0000", "WARNING: All log"))]
    return ChildRun(process.returncode, time.perf_counter() - started, "\n".join(lines[-15:]))


def _stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the child's process group (a method process then stops the workers it
    started), SIGKILL after ``grace`` seconds if the child is still there."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _rungs(source: str | None) -> list[str]:
    given = [part.strip() for part in (source or "").split(",") if part.strip() and part.strip() != "auto"]
    if quick():
        base = given[-1] if given else "synthetic:tiny"
        rungs = [f"{base}@0.5", base] if len(given) < 2 else given
    else:
        rungs = given or list(LADDER)
    for spec in rungs:
        try:
            parse_rung(spec)
        except ValueError as error:
            raise DataSourceError(f"--data: {error}") from None
    return rungs


def _last_error(log_tail: str) -> str:
    """The message of the exception a child process died with (its log's last
    ``SomeError: message`` line), else the log's last line."""
    lines = [line for line in log_tail.splitlines() if line.strip()]
    for line in reversed(lines):
        name, colon, message = line.partition(": ")
        if colon and name.rsplit(".", 1)[-1].endswith(("Error", "Exception")):
            return message
    return lines[-1] if lines else "no output"


def _log(message: str) -> None:
    print(f"[ladder] {message}", file=sys.stderr, flush=True)


def scale_ladder(source: str | None, lesson: object = None) -> dict:
    """Run the ladder on the rungs named by ``source`` (comma-separated; default
    :data:`LADDER`) and return ``rungs``, ``ladder`` (``{rung: {method: entry}}``), the
    summary of :func:`recsys_course.scale.report.summarize` and how the run went.
    ``lesson`` (the appendix's solutions module) is not read: the ladder needs none of it."""
    rungs = _rungs(source)
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread
        return _ladder(rungs)
    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill` runs the clean-up of the children
    try:
        return _ladder(rungs)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _ladder(rungs: list[str]) -> dict:
    _STOPPING.clear()
    load_before = os.getloadavg()
    started = time.perf_counter()
    ladder: dict[str, dict] = {}
    sizes: dict[str, dict] = {}
    tuned: dict | None = None  # EASE's lambda on the largest tuned rung so far
    with tempfile.TemporaryDirectory(prefix="course-ladder-") as work:
        for number, spec in enumerate(rungs):
            folder = Path(work) / f"rung{number}"
            folder.mkdir()
            _log(f"{spec}: preparing")
            prep = run_child([sys.executable, "-m", "recsys_course.scale.rungs", spec, str(folder)],
                             folder / "prepare.log")
            if prep.returncode != 0:
                raise DataSourceError(f"could not prepare the rung {spec!r}: {_last_error(prep.log_tail)}")
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            label = reader_name(meta["data_source"], meta["data_description"])
            if meta["fraction"] < 1:
                label += f", {meta['fraction']:g} of its movies"
            sizes[spec] = {**meta, "label": label, "prepare_seconds": round(prep.seconds, 2)}
            ladder[spec] = {}
            run = partial(_method_entry, spec=spec, folder=folder, last=number == len(rungs) - 1, tuned=tuned)
            with ThreadPoolExecutor(max_workers=1) as beside:
                towers = beside.submit(run, "two_tower")
                try:
                    done = {method: run(method) for method in BESIDE_TOWERS}
                    done["two_tower"] = towers.result()
                except BaseException:  # stopped: end the towers' process too, then leave
                    stop_all_children()
                    raise
            for method in ORDER:
                ladder[spec][method] = done[method] if method in done else run(method)
            ease = ladder[spec].get("ease", {})
            chosen = ease.get("l2_how", "").startswith("chosen")
            if "l2" in ease and chosen and meta["n_movies"] <= EASE_TUNE_MAX_MOVIES:
                tuned = {"l2": ease["l2"], "mean_count": ease["mean_ratings_per_movie"]}
            _add_paired_errors(ladder[spec], folder)
    memory = growth.machine_memory_bytes()
    summary = report.summarize(ladder, sizes, memory)
    return {
        "rungs": sizes,
        "ladder": ladder,
        **summary,
        "settings": _settings(),
        "run": {
            "wall_seconds": round(time.perf_counter() - started, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "memory_mb": round(memory / 1e6) if memory else None,
            "platform": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
            "peak_rss": ("VmHWM of each method's process read from /proc/self/status as it finishes, or the "
                         "ru_maxrss of the processes it waited for if larger (the two-worker run's largest worker)"),
            **({"quick": f"{QUICK_ENV} is set: a smoke run, not the measurements"} if quick() else {}),
        },
    }


def _method_entry(method: str, *, spec: str, folder: Path, last: bool, tuned: dict | None) -> dict:
    """Run one method on the rung ``spec`` prepared in ``folder`` (``last``: the ladder's last
    rung; ``tuned``: EASE's lambda from a smaller rung) and return its entry, or why it was
    skipped."""
    if quick() and method in TOWERS and not last:
        return {"skipped": "quick mode: TensorFlow methods on the last rung only"}
    options = dict(QUICK_OPTIONS.get(method, {})) if quick() else {}
    if method == "ease" and tuned is not None:
        options["l2_from"] = tuned
    if method in NEEDS_VECTORS and not (folder / "vectors.npz").exists():
        return {"skipped": "no two-tower vectors to search"}
    _log(f"{spec}: {method}")
    return _run_method(method, folder, options)


def _run_method(method: str, folder: Path, options: dict) -> dict:
    run = run_child([sys.executable, "-m", "recsys_course.scale.methods", method, str(folder), json.dumps(options)],
                    folder / f"{method}.log")
    result_file = folder / f"{method}.json"
    if run.returncode != 0 or not result_file.exists():
        return {"error": f"exit code {run.returncode}: {run.log_tail[-600:]}"}
    entry = json.loads(result_file.read_text(encoding="utf-8"))
    entry["process_seconds"] = round(run.seconds, 2)
    return _rounded(entry)


def _add_paired_errors(entries: dict, folder: Path) -> None:
    """Each method's recall@10 minus EASE's, with the paired standard error over the same
    users (``recsys_course.evaluation.paired_standard_error``), for the page's comparisons."""
    import numpy as np

    from recsys_course.evaluation import paired_standard_error

    reference = folder / "ease.recall.npy"
    if not reference.exists():
        return
    ease = np.load(reference)
    for method, entry in entries.items():
        path = folder / f"{method}.recall.npy"
        if method == "ease" or not report.measured(entry) or not path.exists():
            continue
        values = np.load(path)
        if values.shape == ease.shape:
            entry["recall@10_minus_ease"] = round(float(values.mean() - ease.mean()), 5)
            entry["recall@10_minus_ease_se"] = round(paired_standard_error(values, ease), 5)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6) if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _settings() -> dict:
    from recsys_course.scale import methods, rungs

    return {"threads_per_process": THREADS, "k": methods.K, "item_knn_neighbours": methods.NEIGHBOURS,
            "ease_grid": list(methods.EASE_GRID),
            "ease_tune_max_movies": methods.EASE_TUNE_MAX_MOVIES, "two_tower": methods.TOWER,
            "two_tower_max_epochs": methods.MAX_EPOCHS, "two_tower_patience": methods.PATIENCE,
            "two_worker_steps_timed": methods.TWO_WORKER_STEPS, "beside_two_tower": list(BESIDE_TOWERS),
            "annoy_trees": methods.ANNOY_TREES,
            "hnsw": {"M": methods.HNSW_M, "efConstruction": methods.HNSW_EF_CONSTRUCTION,
                     "efSearch": methods.HNSW_EF_SEARCH},
            "queries": methods.QUERIES, "eval_users": rungs.EVAL_USERS, "validation_users": rungs.VALIDATION_USERS,
            "methods": list(METHODS)}


def record(results: dict, path: Path = report.RECORDED) -> Path:
    """Save a full ``course bench ladder`` run (the runner's record) for the appendix page."""
    if results.get("quick") or results["lessons"]["10"].get("run", {}).get("quick"):
        raise ValueError(f"refusing to record a quick run ({QUICK_ENV} is set): its numbers are a smoke test")
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return path
