"""Run the course's graded tests on a folder of lesson files in a separate process.

Used by ``course check`` (the learner's own ``lessons/``), the discrimination tests
(generated stubs and decoys) and batch grading. A subprocess keeps the graded code out of
the caller's interpreter and lets a time limit end a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recsys_course.catalog import Catalog, load_catalog


@dataclass
class GradingRun:
    report: dict  # the plugin's JSON report ({} when the run produced none)
    returncode: int
    output: str  # pytest's combined stdout and stderr
    timed_out: bool = False


def test_file(catalog: Catalog, lesson_id: str) -> Path:
    return catalog.root / "tests" / f"test_lesson_{lesson_id}.py"


def run_tests(
    lessons_dir: Path,
    lesson_ids: list[str],
    *,
    catalog: Catalog | None = None,
    exercises: list[str] | None = None,
    timeout: float = 600.0,
    extra_args: list[str] | None = None,
) -> GradingRun:
    """Grade the lessons ``lesson_ids`` found in ``lessons_dir`` with the course's tests.

    ``exercises`` limits the run to those exercise ids (the JSON report still lists every
    exercise of the lessons, the others as "not run").
    """
    catalog = catalog or load_catalog()
    files = [str(test_file(catalog, lid)) for lid in lesson_ids if test_file(catalog, lid).exists()]
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp:
        report_path = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pytest", *files,
            f"--lessons-dir={lessons_dir}", f"--grade-json={report_path}",
            f"--rootdir={catalog.root}", "-p", "no:cacheprovider", "-q", "--tb=short",
            *(extra_args or []),
        ]
        command += [f"--exercise={e}" for e in exercises or []]
        env = {**os.environ, "COURSE_ROOT": str(catalog.root), "TF_USE_LEGACY_KERAS": "1"}
        env.setdefault("COURSE_DATA", "synthetic")
        try:
            done = subprocess.run(
                command, cwd=catalog.root, env=env, capture_output=True, text=True,
                timeout=timeout, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as expired:
            output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            return GradingRun({}, -1, output, timed_out=True)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        return GradingRun(report, done.returncode, done.stdout + done.stderr)
