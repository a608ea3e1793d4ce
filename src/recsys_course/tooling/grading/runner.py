"""Run the course's graded tests on a folder of lesson files in a separate pytest process.

Used by ``course check`` (the learner's own ``lessons/``), the discrimination tests
(generated stubs and decoys) and batch grading. A subprocess keeps graded code out of the
caller's interpreter and lets a time limit end a hang. With :class:`SandboxSettings`
(batch grading) the pytest process itself runs no graded code: the lesson runs in
bubblewrap sandboxes (``sandbox.py``) that the tests call through a proxy (``proxy.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recsys_course.tooling.catalog import Catalog, load_catalog
from recsys_course.paths import SRC_DIR

PLUGIN = "recsys_course.tooling.grading.plugin"


@dataclass
class GradingRun:
    report: dict  # the plugin's JSON report ({} when the run produced none)
    returncode: int
    output: str  # pytest's combined stdout and stderr
    timed_out: bool = False


@dataclass(frozen=True)
class SandboxSettings:
    """Batch grading: the lessons run in bubblewrap sandboxes (``sandbox.py``) and the
    pytest process only runs the course's tests, which call into them."""

    memory_mb: int | None = 6144
    lesson_timeout: float = 900.0  # loading one lesson (all its cells) in a sandbox, CPU seconds
    package_dir: Path | None = None  # the package copy the sandbox imports
    wall_factor: float = 4.0  # wall-clock backstop of every CPU-time limit (sandbox.Limits)
    preload: tuple[str, ...] | None = None  # modules the zygote imports (None: the plugin's default)


def test_file(tests_dir: Path, lesson_id: str) -> Path:
    return tests_dir / f"test_lesson_{lesson_id}.py"


def run_tests(
    lessons_dir: Path,
    lesson_ids: list[str],
    *,
    catalog: Catalog | None = None,
    exercises: list[str] | None = None,
    timeout: float = 600.0,
    tests_dir: Path | None = None,
    extra_tests: list[Path] | None = None,
    hidden_dir: Path | None = None,
    test_timeout: float | None = None,
    cell_timeout: float | None = None,
    sandbox: SandboxSettings | None = None,
    env: dict[str, str] | None = None,
    submissions: dict[str, Path] | None = None,
    use_worker: bool = False,
) -> GradingRun:
    """Grade the lessons ``lesson_ids`` found in ``lessons_dir`` with the course's tests.

    ``exercises`` limits the run to those exercise ids (the report still lists every
    exercise of the lessons, the others as "not run"). ``tests_dir`` replaces the clone's
    ``tests/`` (batch grading uses a verified copy); ``extra_tests`` are added, and those
    under ``hidden_dir`` are instructor-only. The report path reaches the plugin through an
    environment variable the plugin removes before graded code runs.
    """
    catalog = catalog or load_catalog()
    env_extra = dict(env or {})
    tests_dir = tests_dir or catalog.root / "tests"
    files = [str(test_file(tests_dir, lid)) for lid in lesson_ids if test_file(tests_dir, lid).exists()]
    files += [str(p) for p in extra_tests or []]
    if not files:  # no test for these lessons (an appendix without exercises): nothing to run,
        # and pytest without paths would collect every test of the course
        from recsys_course.tooling.grading.results import report_json

        return GradingRun(report_json([], notes=[]), 0, "")
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp:
        report_path = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pytest", *files,
            f"--lessons-dir={lessons_dir}", f"--rootdir={tests_dir.parent}",
            # Plugin autoloading is off (below): the grading plugin is named explicitly.
            "-p", PLUGIN, "-p", "no:cacheprovider", "-q", "--tb=short",
        ]
        command += [f"--exercise={e}" for e in exercises or []]
        if hidden_dir is not None:
            command.append(f"--hidden-tests={hidden_dir}")
        if test_timeout is not None:
            command.append(f"--test-timeout={test_timeout}")
        if cell_timeout is not None:
            command.append(f"--cell-timeout={cell_timeout}")
        if submissions:  # several submissions in one run: the report has one part each
            listing = Path(tmp) / "submissions.json"
            listing.write_text(json.dumps({k: str(v) for k, v in submissions.items()}), encoding="utf-8")
            command.append(f"--submissions-file={listing}")
        if sandbox is not None:
            command += ["--sandbox", f"--sandbox-memory-mb={sandbox.memory_mb or 0}",
                        f"--lesson-timeout={sandbox.lesson_timeout}", f"--sandbox-wall-factor={sandbox.wall_factor}"]
            if sandbox.package_dir is not None:
                command.append(f"--sandbox-package={sandbox.package_dir}")
            if sandbox.preload is not None:
                command.append(f"--sandbox-preload={','.join(sandbox.preload)}")
        env = {
            **os.environ, "COURSE_ROOT": str(catalog.root), "TF_USE_LEGACY_KERAS": "1",
            "COURSE_GRADE_REPORT": str(report_path), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "MPLBACKEND": "Agg",
        }
        env.setdefault("COURSE_DATA", "synthetic")
        for variable in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONPATH", "PYTHONSTARTUP"):
            env.pop(variable, None)
        # The child imports this very package (a worktree's, not whatever the venv installed).
        env["PYTHONPATH"] = str(SRC_DIR)
        env.update(env_extra)
        if use_worker and sandbox is None:  # a learner's check: a warm worker, if one runs
            from recsys_course.tooling.grading.warm_worker import submit

            answer = submit(catalog.root, command[3:], env, str(catalog.root), timeout)
            if answer is not None:
                return GradingRun(
                    {} if answer["timed_out"] else _read_report(report_path),
                    answer["returncode"], answer["output"], timed_out=answer["timed_out"],
                )
        process = subprocess.Popen(
            command, cwd=catalog.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            output, _ = process.communicate()
            return GradingRun({}, -1, output or "", timed_out=True)
        except KeyboardInterrupt:  # the tests run in their own session: end them too
            _kill_group(process)
            raise
        return GradingRun(_read_report(report_path), process.returncode, output or "")


def _read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _kill_group(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
