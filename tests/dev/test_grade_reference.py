"""The reference solutions earn full marks through the sandboxed batch grader, lesson by lesson.

Calibration is the door instructors use: ``Grader.calibrate`` stages ``solutions/`` as a
submission and grades every lesson of the catalog in one trusted pytest run with
``--sandbox``, exactly as ``course grade`` grades a learner. One run is shared by the
module (lessons added to the catalog are checked without touching this file). A missed
point here means every learner would lose it too; ``course grade`` refuses to write
reports in that case (tested below on a course whose reference is wrong on purpose).
"""

import os
import shutil
import subprocess
import sys

import pytest

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.batch import Grader, Options
from recsys_course.tooling.grading.sandbox import problem
from recsys_course.tooling.lessons import make_stub

if problem() is not None and os.environ.get("COURSE_REQUIRE_SANDBOX") == "1":
    raise RuntimeError(f"COURSE_REQUIRE_SANDBOX=1 but the sandbox cannot run: {problem()}")
pytestmark = [pytest.mark.xdist_group("grade_reference"),
              pytest.mark.skipif(problem() is not None, reason=f"no sandbox here: {problem()}")]

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    grader = Grader(Options(out=tmp_path_factory.mktemp("out")))
    try:
        warnings = grader.calibrate()
        return {"totals": grader.reference_totals, "warnings": warnings, "runs": grader.runs,
                "expected": grader.expected}
    finally:
        grader.cleanup()


@pytest.mark.parametrize("lesson_id", [lesson.id for lesson in CATALOG.lessons])
def test_the_reference_earns_every_point_of_the_lesson(calibration, lesson_id):
    lesson = CATALOG.lesson(lesson_id)
    earned, possible = calibration["totals"][lesson_id]
    mine = [w for w in calibration["warnings"] if any(f" {e.id} " in w for e in lesson.exercises)]
    assert mine == [], "\n".join(mine)
    assert possible == sum(e.points for e in lesson.exercises), "the maximum differs from the catalog's points"
    for ex in lesson.exercises:
        tested = calibration["expected"][lesson_id][ex.id]
        assert tested == ex.points, f"tests of {ex.id} award {tested} points, {lesson.slug}.yml says {ex.points}"
    assert earned == possible, f"lesson {lesson_id}: the reference earns {earned} of {possible} points"


def test_calibration_has_no_warnings_and_is_one_run(calibration):
    assert calibration["warnings"] == []
    assert calibration["runs"] == 1, "every lesson of the reference is graded in one trusted run"


def test_an_imperfect_reference_stops_course_grade(tmp_path):
    """``course grade`` on a course whose reference of 0.2 is a stub: a clear error, exit
    code 3 and no reports, unless the instructor passes --allow-imperfect-reference."""
    lesson = CATALOG.lesson("00")
    root = tmp_path / "course"
    (root / "tests").mkdir(parents=True)
    (root / "solutions").mkdir()
    shutil.copy2(CATALOG.root / "pyproject.toml", root / "pyproject.toml")
    shutil.copy2(CATALOG.root / "tests" / "conftest.py", root / "tests" / "conftest.py")
    shutil.copy2(CATALOG.root / "tests" / "test_lesson_00.py", root / "tests" / "test_lesson_00.py")
    shutil.copy2(CATALOG.root / "solutions" / f"{lesson.slug}.yml", root / "solutions" / f"{lesson.slug}.yml")
    source = (CATALOG.root / "solutions" / lesson.filename).read_text()
    stub = make_stub(source, lesson)
    # The solution of every exercise but 0.2.
    start = stub.index('exercise="0.2"')
    end = stub.index("\n# %%", start)
    mixed = source[:source.index('exercise="0.2"')] + stub[start:end] + \
        source[source.index("\n# %%", source.index('exercise="0.2"')):]
    (root / "solutions" / lesson.filename).write_text(mixed)
    (tmp_path / "class" / "learner" / "lessons").mkdir(parents=True)
    (tmp_path / "class" / "learner" / "lessons" / lesson.filename).write_text(source)

    def grade(*extra):
        command = [sys.executable, "-m", "recsys_course.tooling.cli", "grade", str(tmp_path / "class"),
                   "--out", str(tmp_path / "out"), "--test-timeout", "30", "--cell-timeout", "20", *extra]
        env = {**os.environ, "COURSE_ROOT": str(root), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)

    refused = grade()
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert "error: the reference solutions do not earn full marks" in refused.stderr
    assert "0.2 gets 0 of 2 points" in refused.stderr and "--allow-imperfect-reference" in refused.stderr
    assert not (tmp_path / "out" / "grades.csv").exists(), "no report may be written"

    allowed = grade("--allow-imperfect-reference")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "WARNING: the reference solution of 0.2 gets 0 of 2 points" in allowed.stderr
    assert (tmp_path / "out" / "grades.csv").exists()
