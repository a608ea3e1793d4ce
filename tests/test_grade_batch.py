"""Batch grading of a class folder with correct, empty, broken and hostile submissions.

Each hostile submission must earn exactly the points its honest code earns, must not change
anyone else's grade, and the batch must finish. One batch run (lesson 00 only, short time
limits) is shared by the tests below.
"""

import csv
import json
import re
import zipfile
from pathlib import Path

import pytest

from recsys_course.catalog import Catalog, load_catalog

# One shared batch run: keep every test of this module on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("grade_batch")
from recsys_course.grading.batch import Grader, Options, write_reports
from recsys_course.lessons import make_stub

CATALOG = load_catalog()
LESSON = CATALOG.lesson("00")
SOLUTION = (CATALOG.root / "solutions" / LESSON.filename).read_text()
STUB = make_stub(SOLUTION, LESSON)
POINTS = {e.id: e.points for e in LESSON.exercises}  # 0.1: 2, 0.2: 2, 0.3: 3, 0.4: 3, 0.5: 3
HIDDEN_POINTS = 1  # the instructor-only test below, on exercise 0.1


def after_cell(source: str, exercise_id: str, code: str) -> str:
    """Insert module-level ``code`` at the end of an exercise's cell."""
    start = source.index(f'exercise="{exercise_id}"')
    end = source.index("\n# %%", start)
    return source[:end] + "\n" + code + "\n" + source[end:]


def in_function(source: str, exercise_id: str, code: str) -> str:
    """Insert ``code`` as the first statement of the exercise's body (solution or stub)."""
    start = source.index(f'exercise="{exercise_id}"')
    marker = re.compile(r"# BEGIN SOLUTION|raise NotImplementedError\(").search(source, start).start()
    return source[:marker] + code + "\n    " + source[marker:]


GRADER_PATCHES = """
import _pytest.reports
_pytest.reports.BaseReport.passed = property(lambda self: True)
_pytest.reports.BaseReport.failed = property(lambda self: False)
"""
PATCH_AT_CALL = """import _pytest.reports
    _pytest.reports.BaseReport.failed = property(lambda self: False)
    _pytest.reports.BaseReport.passed = property(lambda self: True)"""
WRITE_OUTSIDE = """
import os, pathlib
home = pathlib.Path(os.environ["HOME"])
for target in home.parents:
    tests = target / "grader" / "tests" / "test_lesson_00.py"
    if tests.exists():
        tests.write_text("def test_everything_passes():\\n    pass\\n")
(home / ".." / ".." / ".." / "escaped.txt").write_text("I was here")
"""
FAKE_OUTPUT = """
print("=" * 30, "13 passed in 0.12s", "=" * 30)
print("TOTAL      13 / 13  (100 %)")
"""

# name -> (lesson source, exercises whose points are lost)
LESSON_SUBMISSIONS = {
    "correct": (SOLUTION, set()),
    "empty": (STUB, set(POINTS)),
    "syntax_error": (after_cell(SOLUTION, "0.2", "def broken(:\n    pass"), {"0.2"}),
    "loop_at_import": (after_cell(SOLUTION, "0.3", "while True:\n    pass"), set()),
    "loop_in_exercise": (in_function(SOLUTION, "0.4", "while True:\n        pass"), {"0.4"}),
    "os_exit_at_import": (after_cell(SOLUTION, "0.1", "import os\nos._exit(3)"), set()),
    "sys_exit_at_import": (after_cell(SOLUTION, "0.5", "import sys\nsys.exit(0)"), set()),
    "fake_pytest_output": (after_cell(STUB, "0.1", FAKE_OUTPUT), set(POINTS)),
    "patches_the_grader": (in_function(after_cell(STUB, "0.1", GRADER_PATCHES), "0.2", PATCH_AT_CALL), set(POINTS)),
    "memory_hog": (in_function(SOLUTION, "0.5", "hog = []\n        while True:\n            hog.append(bytearray(50_000_000))"), {"0.5"}),
    "writes_outside": (after_cell(SOLUTION, "0.1", WRITE_OUTSIDE), set()),
    "zz_correct_after_hostiles": (SOLUTION, set()),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    for name, (source, _) in LESSON_SUBMISSIONS.items():
        (root / name / "lessons").mkdir(parents=True)
        (root / name / "lessons" / LESSON.filename).write_text(source)
    # A learner's clone with its own conftest, pytest.ini and tests that claim success.
    own = root / "own_conftest"
    (own / "lessons").mkdir(parents=True)
    (own / "lessons" / LESSON.filename).write_text(STUB)
    (own / "conftest.py").write_text(
        "import pytest\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n"
    )
    (own / "pytest.ini").write_text("[pytest]\naddopts = -p no:recsys_course.grading.plugin\n")
    (own / "tests").mkdir()
    (own / "tests" / "test_lesson_00.py").write_text("def test_all():\n    assert True\n")
    # A zip with the solution under lessons/ plus files that must be ignored.
    with zipfile.ZipFile(root / "zipped.zip", "w") as archive:
        archive.writestr(f"clone/lessons/{LESSON.filename}", SOLUTION)
        archive.writestr(f"clone/scratch/{LESSON.filename}", STUB)  # lessons/ wins
        archive.writestr("clone/conftest.py", "raise SystemExit('must never be imported')\n")
    (root / "truncated.zip").write_bytes((root / "zipped.zip").read_bytes()[:40])

    hidden = tmp_path_factory.mktemp("instructor")
    (hidden / "test_lesson_00_hidden.py").write_text(
        "import pandas as pd\nimport pytest\nfrom recsys_course.grading import exercise\n\n"
        "@pytest.fixture(scope='module')\ndef lesson(lesson_loader):\n    return lesson_loader('00')\n\n"
        "@exercise('0.1', points=1)\ndef test_secret_single_user_case(lesson):\n"
        "    r = pd.DataFrame({'user_id': ['a', 'a'], 'movie_id': ['m', 'n']})\n"
        "    assert lesson.sparsity(r) == 0.0, 'SECRET-CASE-MESSAGE'\n"
    )
    out = tmp_path_factory.mktemp("out")
    options = Options(out=out, timeout=120, test_timeout=3, cell_timeout=3, memory_mb=3000,
                      jobs=1, extra_tests=hidden, junit=True)
    grader = Grader(options, Catalog(CATALOG.root, (LESSON,)))
    tests_before = (grader.tests / "test_lesson_00.py").read_text()
    try:
        grades, warnings = grader.grade([root])
        write_reports(grades, grader.catalog, options, warnings)
        tests_after = (grader.tests / "test_lesson_00.py").read_text()
    finally:
        grader.cleanup()
    return {"grades": {g.submission.name: g for g in grades}, "warnings": warnings, "out": out,
            "tests_unchanged": tests_before == tests_after}


def expected_total(lost: set[str]) -> int:
    full = {**POINTS, "0.1": POINTS["0.1"] + HIDDEN_POINTS}
    return sum(p for ex, p in full.items() if ex not in lost)


@pytest.mark.parametrize("name", list(LESSON_SUBMISSIONS))
def test_each_submission_earns_what_its_honest_code_earns(batch, name):
    grade = batch["grades"][name]
    lost = LESSON_SUBMISSIONS[name][1]
    by_exercise = {i: e.earned for i, e in grade.exercises.items()}
    assert grade.total == expected_total(lost), f"{name}: {by_exercise}; notes: {grade.notes}"


def test_own_conftest_and_tests_are_ignored(batch):
    assert batch["grades"]["own_conftest"].total == 0


def test_zip_takes_only_the_lesson_files(batch):
    grade = batch["grades"]["zipped"]
    assert grade.total == expected_total(set())
    assert grade.submission.found == {LESSON.filename: f"clone/lessons/{LESSON.filename}"}


def test_unreadable_zip_scores_zero_with_a_reason(batch):
    grade = batch["grades"]["truncated"]
    assert grade.total == 0 and any("zip" in n for n in grade.notes)


def test_hostile_acts_are_reported_and_undone(batch):
    grades = batch["grades"]
    assert batch["tests_unchanged"], "the grader's test copy must be restored"
    assert any("changed grader files" in n for n in grades["writes_outside"].notes)
    loop = grades["loop_in_exercise"].exercises["0.4"]
    assert "did not finish within" in loop.first_failure


def test_reference_solutions_calibrate_the_maximum(batch):
    assert batch["warnings"] == []
    data = json.loads((batch["out"] / "grades.json").read_text())
    assert data["max_points"]["0.1"] == POINTS["0.1"] + HIDDEN_POINTS
    assert data["possible"] == expected_total(set())


def test_csv_has_a_row_per_submission_and_a_column_per_exercise(batch):
    with open(batch["out"] / "grades.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["submission"] for r in rows] == sorted(r["submission"] for r in rows)
    assert {"0.1", "0.2", "0.3", "0.4", "0.5", "total", "max"} <= set(rows[0])
    correct = next(r for r in rows if r["submission"] == "correct")
    assert int(correct["total"]) == int(correct["max"]) == expected_total(set())
    syntax = next(r for r in rows if r["submission"] == "syntax_error")
    assert syntax["0.2"] == "0" and syntax["0.3"] == str(POINTS["0.3"])


def test_feedback_shows_points_and_hints_but_not_hidden_tests(batch):
    feedback = (batch["out"] / "feedback" / "empty.md").read_text()
    assert f"Total: 0 / {expected_total(set())} points" in feedback
    assert "Hint:" in feedback and "NotImplementedError" in feedback
    every = "".join(p.read_text() for p in (batch["out"] / "feedback").glob("*.md"))
    assert "SECRET-CASE-MESSAGE" not in every and "secret_single_user_case" not in every
    report = (batch["out"] / "grades.json").read_text()
    assert "secret_single_user_case" in report, "the instructor report keeps hidden test details"


def test_junit_files_are_written(batch):
    xml = (batch["out"] / "junit" / "empty.xml").read_text()
    assert re.search(r'failures="\d+"', xml) and "exercise_0.1" in xml
