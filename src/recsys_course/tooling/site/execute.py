"""Execute lessons as notebooks, with a cache so an unchanged lesson is not re-run.

The executed notebook records how long the real run took and how the machine was shared
(``metadata["course"]``), so a page rebuilt from the cache still shows the time measured
when the lesson actually ran. :func:`execute_many` runs several lessons at once, each
kernel limited to a number of threads, so a strict build on two cores takes about half as
long as running the lessons one after the other (see docs/authoring.md, "Building the site").
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from recsys_course.claims import STRICT_ENV

RENDER_VERSION = "2"  # bump to invalidate every cached execution
SETUP_CELL = "from recsys_course.tooling.site.kernel_setup import configure\nconfigure()"
# The tooling renders pages; only the module the kernel imports changes an execution.
KERNEL_SIDE = {"kernel_setup.py"}
# What a kernel limited to N threads gets: OpenMP and BLAS pools (NumPy, Faiss, Annoy's
# builds) and TensorFlow's pool of threads within one operation, which TensorFlow reads
# from the environment when it starts.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


class LessonExecutionError(RuntimeError):
    """A cell raised while the site was being built; the message names lesson and cell."""


@dataclass(frozen=True)
class Run:
    """What the build measured when a lesson was executed (not when it was read from cache)."""

    seconds: float  # wall-clock time of the whole lesson, kernel start included
    data_spec: str  # the COURSE_DATA value it ran with
    cpus: int  # CPU cores the build machine had
    finished: str  # ISO 8601, UTC
    threads: int | None = None  # the kernel's thread limit (None: as many as it wanted)
    alongside: int = 1  # how many lessons the build ran at the same time

    @classmethod
    def from_notebook(cls, notebook: nbformat.NotebookNode) -> Run | None:
        raw = notebook.metadata.get("course", {}).get("run")
        return cls(**raw) if raw else None


def support_code_digest(package_dir: Path) -> str:
    """Hash of the library the lessons import: its changes change outputs.

    The course's tooling (``tooling/``: CLI, grading, site, benchmarks) is left out, except
    the module the kernel imports, so a grading, CLI or page-rendering edit re-executes no
    lesson.
    """
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if relative.parts[0] == "tooling" and relative.name not in KERNEL_SIDE:
            continue
        digest.update(relative.as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(source: str, data_spec: str, support_digest: str) -> str:
    parts = [RENDER_VERSION, source, data_spec, support_digest]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def cache_path(cache_dir: Path, name: str, data_spec: str, key: str) -> Path:
    """One cached execution per lesson *and dataset*: switching data back is free."""
    data_tag = hashlib.sha256(data_spec.encode()).hexdigest()[:8]
    return cache_dir / f"{name}-{data_tag}-{key}.ipynb"


def kernel_log(cache_dir: Path, name: str) -> Path:
    """Where the last execution of lesson ``name`` left its kernel's own output."""
    return cache_dir / f"{name}.kernel.log"


def kernel_environment(data_spec: str, threads: int | None) -> dict[str, str]:
    """The environment of a lesson's kernel: the build's, with the data it must use, strict
    claims, the inline figure backend and (with ``threads``) a limit on its thread pools.

    Passed to the kernel rather than set in ``os.environ``, so lessons executed at the same
    time from several threads of the build cannot see each other's settings.
    """
    env = dict(os.environ)
    env["COURSE_DATA"] = data_spec
    env[STRICT_ENV] = "1"  # a claim that is false on this data fails the build
    env.pop("MPLBACKEND", None)  # the kernel's inline backend captures the figures
    if threads:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    return env


def execute(
    source: str, *, name: str, cwd: Path, cache_dir: Path, key: str, data_spec: str,
    timeout: int = 1800, threads: int | None = None, alongside: int = 1,
) -> tuple[nbformat.NotebookNode, bool]:
    """Return the executed notebook of ``source`` and whether it came from the cache.

    Every cell must succeed: the first error raises :class:`LessonExecutionError` with the
    cell's source line and the error, so ``mkdocs build`` fails instead of publishing a
    traceback. The returned notebook has exactly the cells of ``source`` (the hidden display
    set-up cell is removed) and carries a :class:`Run` in ``metadata["course"]["run"]``.
    ``threads`` limits the kernel's thread pools; ``alongside`` (how many lessons the build
    runs at once) is only recorded, so the page can say how its runtime was measured.
    """
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cached = cache_path(cache_dir, name, data_spec, key)
    if cached.exists():
        return nbformat.read(cached, as_version=4), True
    notebook = jupytext.reads(source, fmt="py:percent")
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells.insert(0, nbformat.v4.new_code_cell(SETUP_CELL))
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # What the kernel process writes to its own stdout and stderr (TensorFlow's C++ logs,
    # a crash) goes to a log file beside the cache rather than into the build's log, where
    # two lessons would interleave; the notebook's outputs have it too.
    with open(kernel_log(cache_dir, name), "w", encoding="utf-8") as log:
        try:
            client = NotebookClient(
                notebook, timeout=timeout, kernel_name="python3",
                resources={"metadata": {"path": str(cwd)}},
            )
            # CurveZMQ keys for the kernel's sockets: its traffic is encrypted, and it no
            # longer logs a warning about plain-text TCP for every lesson.
            client.execute(
                env=kernel_environment(data_spec, threads), transport_encryption="auto",
                stdout=log, stderr=subprocess.STDOUT,
            )
        except CellExecutionError as error:
            raise LessonExecutionError(f"{name}: a cell failed while building the site:\n{error}") from error
    seconds = time.perf_counter() - started
    notebook.cells.pop(0)
    run = Run(
        seconds=round(seconds, 1), data_spec=data_spec, cpus=os.cpu_count() or 1,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        threads=threads, alongside=alongside,
    )
    notebook.metadata["course"] = {"run": run.__dict__}
    for stale in cache_dir.glob(f"{cached.name.rsplit('-', 1)[0]}-*.ipynb"):
        stale.unlink()
    nbformat.write(notebook, cached)
    return notebook, False


@dataclass(frozen=True)
class Job:
    """One lesson to execute: its name (the slug), percent-format source and cache key."""

    name: str
    source: str
    key: str


@dataclass(frozen=True)
class Sharing:
    """How the build shares the machine: lessons executed at once, threads for each."""

    at_once: int
    threads: int | None  # None: each kernel uses as many threads as its libraries like

    @classmethod
    def choose(cls, setting: str | None, cpus: int, lessons: int | None = None) -> Sharing:
        """From ``$COURSE_SITE_JOBS``: ``1`` runs one lesson at a time with every core, ``N``
        runs N at once with ``cpus // N`` threads each (at least one); empty means
        :data:`DEFAULT_AT_ONCE` (at most one lesson per core). Never more at once than the
        ``lessons`` to execute: a lone lesson gets every core."""
        text = (setting or "").strip()
        if text and not (text.isdigit() and int(text) >= 1):
            raise ValueError(f"COURSE_SITE_JOBS must be a whole number of lessons >= 1, not {text!r}")
        at_once = int(text) if text else min(DEFAULT_AT_ONCE, max(1, cpus))
        at_once = min(at_once, lessons) if lessons else at_once
        return cls(at_once, None if at_once == 1 else max(1, cpus // at_once))

    def describe(self) -> str:
        if self.at_once == 1:
            return "one lesson at a time"
        each = f"{self.threads} thread{'s' if self.threads != 1 else ''} each"
        return f"{self.at_once} lessons at a time, {each}"


DEFAULT_AT_ONCE = 2


def execute_many(
    jobs: Iterable[Job], *, cwd: Path, cache_dir: Path, data_spec: str, sharing: Sharing,
    on_start: Callable[[Job], None] = lambda job: None,
    on_done: Callable[[Job, nbformat.NotebookNode, float], None] = lambda job, notebook, seconds: None,
) -> dict[str, nbformat.NotebookNode]:
    """Execute ``jobs`` (none cached: the caller reads the cache first), ``sharing.at_once``
    at a time; return the executed notebooks by job name.

    The first failing lesson stops the build from starting further lessons; the lessons
    already running finish (and are cached, so the next build does not repeat them), then
    :class:`LessonExecutionError` names every lesson that failed, with its cell and error.
    ``on_start`` and ``on_done`` (job, notebook, seconds) are called from the worker threads,
    for progress logs.
    """
    pending = list(jobs)
    total = len(pending)
    alongside = min(sharing.at_once, total)
    done: dict[str, nbformat.NotebookNode] = {}
    failures: list[LessonExecutionError] = []

    def run(job: Job) -> nbformat.NotebookNode:
        on_start(job)
        started = time.perf_counter()
        try:
            notebook, _ = execute(
                job.source, name=job.name, cwd=cwd, cache_dir=cache_dir, key=job.key,
                data_spec=data_spec, threads=sharing.threads, alongside=alongside,
            )
        except LessonExecutionError:
            raise
        except Exception as error:  # a dead kernel or a cell past its time limit
            raise LessonExecutionError(
                f"{job.name}: {type(error).__name__}: {error} (the kernel's own output: "
                f"{kernel_log(cache_dir, job.name)})"
            ) from error
        on_done(job, notebook, time.perf_counter() - started)
        return notebook

    # Daemon threads rather than a ThreadPoolExecutor, whose threads the interpreter waits
    # for at exit: Ctrl-C during `make site` then ends the build at once, and each kernel
    # (in its own session, so the terminal's Ctrl-C does not reach it) exits when it sees
    # its parent gone.
    results: queue.Queue = queue.Queue()

    def work(job: Job) -> None:
        try:
            results.put((job, run(job), None))
        except BaseException as error:  # handed to the main thread, which decides
            results.put((job, None, error))

    running = 0
    while (pending and not failures) or running:
        while pending and not failures and running < sharing.at_once:
            job = pending.pop(0)
            threading.Thread(target=work, args=(job,), name=f"lesson-{job.name}", daemon=True).start()
            running += 1
        job, notebook, error = results.get()
        running -= 1
        if isinstance(error, LessonExecutionError):
            failures.append(error)
        elif error is not None:
            raise error
        else:
            done[job.name] = notebook
    if failures:
        skipped = total - len(done) - len(failures)
        note = f"\n({skipped} lesson(s) not started after the first failure)" if skipped else ""
        raise LessonExecutionError("\n\n".join(str(f) for f in failures) + note)
    return done
