"""Execute a lesson as a notebook, with a cache so an unchanged lesson is not re-run.

The executed notebook records how long the real run took (``metadata["course"]``), so a
page rebuilt from the cache still shows the time measured when the lesson actually ran.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from recsys_course.claims import STRICT_ENV

RENDER_VERSION = "2"  # bump to invalidate every cached execution
SETUP_CELL = "from recsys_course.tooling.site.kernel_setup import configure\nconfigure()"
# The tooling renders pages; only the module the kernel imports changes an execution.
KERNEL_SIDE = {"kernel_setup.py"}


class LessonExecutionError(RuntimeError):
    """A cell raised while the site was being built; the message names lesson and cell."""


@dataclass(frozen=True)
class Run:
    """What the build measured when a lesson was executed (not when it was read from cache)."""

    seconds: float  # wall-clock time of the whole lesson, kernel start included
    data_spec: str  # the COURSE_DATA value it ran with
    cpus: int  # CPU cores the build machine had
    finished: str  # ISO 8601, UTC

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


def execute(
    source: str, *, name: str, cwd: Path, cache_dir: Path, key: str, data_spec: str,
    timeout: int = 1800,
) -> tuple[nbformat.NotebookNode, bool]:
    """Return the executed notebook of ``source`` and whether it came from the cache.

    Every cell must succeed: the first error raises :class:`LessonExecutionError` with the
    cell's source line and the error, so ``mkdocs build`` fails instead of publishing a
    traceback. The returned notebook has exactly the cells of ``source`` (the hidden display
    set-up cell is removed) and carries a :class:`Run` in ``metadata["course"]["run"]``.
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
    saved = {k: os.environ.get(k) for k in ("COURSE_DATA", "MPLBACKEND", STRICT_ENV)}
    os.environ["COURSE_DATA"] = data_spec
    os.environ[STRICT_ENV] = "1"  # a claim that is false on this data fails the build
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend captures the figures
    started = time.perf_counter()
    try:
        client = NotebookClient(
            notebook, timeout=timeout, kernel_name="python3",
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    except CellExecutionError as error:
        raise LessonExecutionError(f"{name}: a cell failed while building the site:\n{error}") from error
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - started
    notebook.cells.pop(0)
    run = Run(
        seconds=round(seconds, 1), data_spec=data_spec, cpus=os.cpu_count() or 1,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    notebook.metadata["course"] = {"run": run.__dict__}
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f"{cached.name.rsplit('-', 1)[0]}-*.ipynb"):
        stale.unlink()
    nbformat.write(notebook, cached)
    return notebook, False
