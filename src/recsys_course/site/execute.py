"""Execute a lesson as a notebook, with a cache so an unchanged lesson is not re-run."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nbformat

from recsys_course.claims import STRICT_ENV

RENDER_VERSION = "1"  # bump to invalidate every cached execution


class LessonExecutionError(RuntimeError):
    """A cell raised while the site was being built; the message names lesson and cell."""


def support_code_digest(package_dir: Path) -> str:
    """Hash of the support package's sources: lessons call it, so its changes change outputs."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(source: str, data_spec: str, support_digest: str) -> str:
    parts = [RENDER_VERSION, source, data_spec, support_digest]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def execute(
    source: str, *, name: str, cwd: Path, cache_dir: Path, key: str, data_spec: str,
    timeout: int = 1800,
) -> tuple[nbformat.NotebookNode, bool]:
    """Return the executed notebook of ``source`` and whether it came from the cache.

    Every cell must succeed: the first error raises :class:`LessonExecutionError` with the
    cell's source line and the error, so ``mkdocs build`` fails instead of publishing a
    traceback.
    """
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cached = cache_dir / f"{name}-{key}.ipynb"
    if cached.exists():
        return nbformat.read(cached, as_version=4), True
    notebook = jupytext.reads(source, fmt="py:percent")
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    saved = {k: os.environ.get(k) for k in ("COURSE_DATA", "MPLBACKEND", STRICT_ENV)}
    os.environ["COURSE_DATA"] = data_spec
    os.environ[STRICT_ENV] = "1"  # a claim that is false on this data fails the build
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend captures the figures
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
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f"{name}-*.ipynb"):
        stale.unlink()
    nbformat.write(notebook, cached)
    return notebook, False
