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

import pytest

from recsys_course.tooling.catalog import Catalog, load_catalog
from recsys_course.tooling.grading.batch import Grader, ImperfectReference, Options
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
    assert earned == possible, f"lesson {lesson_id}: the reference earns {earned} of {possible} points"


def test_calibration_has_no_warnings_and_is_one_run(calibration):
    assert calibration["warnings"] == []
    assert calibration["runs"] == 1, "every lesson of the reference is graded in one trusted run"


def test_an_imperfect_reference_stops_the_batch(tmp_path):
    """A course whose reference of 0.2 is a stub: grading refuses unless told otherwise."""
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
    catalog = Catalog(root, (lesson,))

    grader = Grader(Options(out=tmp_path / "out", test_timeout=30, cell_timeout=20), catalog)
    try:
        with pytest.raises(ImperfectReference, match=r"(?s)0\.2 gets 0 of 2 points.*allow-imperfect-reference"):
            grader.grade([tmp_path / "class"])
    finally:
        grader.cleanup()

    allowed = Grader(Options(out=tmp_path / "out", test_timeout=30, cell_timeout=20,
                             allow_imperfect_reference=True), catalog)
    try:
        (tmp_path / "empty").mkdir()
        grades, warnings = allowed.grade([tmp_path / "empty"])
    finally:
        allowed.cleanup()
    assert grades == [] and len(warnings) == 1 and "0.2" in warnings[0]
