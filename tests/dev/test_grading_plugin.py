"""The grading plugin as pytest expects a plugin to be: an entry point, state in
``config.stash``, settings read at configure time, checked with pytest's own ``pytester``.

The runs below are small pytest sessions in a temporary folder that grade a stand-in for
exercise 0.1 (no lesson is loaded), so they take a second each.
"""

import importlib
import json
import os
import sys

import pytest

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading import plugin
from recsys_course.tooling.grading.runner import PLUGIN

CATALOG = load_catalog()
POINTS = CATALOG.exercise("0.1").points

TESTS = f"""
import os
from recsys_course.tooling.grading import exercise

@exercise("0.1", points={POINTS - 1})
def test_passes():
    # Graded code runs after configure: the report path is gone from its environment.
    assert "COURSE_GRADE_REPORT" not in os.environ

@exercise("0.1", points=1)
def test_fails():
    assert False, "a stand-in failure"

def test_collector_lives_in_the_stash(pytestconfig):
    from recsys_course.tooling.grading.plugin import COLLECTOR, GradeCollector
    assert isinstance(pytestconfig.stash[COLLECTOR], GradeCollector)
"""


@pytest.fixture
def graded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COURSE_ROOT", str(CATALOG.root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_stand_in=TESTS)
    return pytester


def test_the_plugin_is_a_pytest11_entry_point():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((CATALOG.root / "pyproject.toml").read_text())
    points = project["project"]["entry-points"]["pytest11"]
    # Named by its module path: conftest.py and `-p` then name the same plugin.
    assert points == {PLUGIN: PLUGIN}
    assert importlib.import_module(points[PLUGIN]) is plugin


def test_explicit_p_with_autoload_off_grades_and_reports(graded, tmp_path, monkeypatch):
    report = tmp_path / "report.json"
    monkeypatch.setenv(plugin.REPORT_ENV, str(report))
    result = graded.runpytest_subprocess("-p", PLUGIN, "--tree", "solutions")
    result.assert_outcomes(passed=2, failed=1)
    data = json.loads(report.read_text())
    row = next(r for r in data["exercises"] if r["id"] == "0.1")
    assert (row["earned"], row["points"]) == (POINTS - 1, POINTS)
    assert "a stand-in failure" in row["first_failure"]


def test_conftest_and_p_register_one_plugin(graded):
    """A clone's conftest names the plugin and the runner passes -p: no duplicate."""
    graded.makeconftest(f"pytest_plugins = [{PLUGIN!r}]\n")
    result = graded.runpytest_subprocess("-p", PLUGIN, "--tree", "solutions")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*course score*"])


def test_settings_are_read_at_configure_not_at_import():
    code = ("import os; os.environ['COURSE_GRADE_REPORT'] = 'r.json'; "
            "import recsys_course.tooling.grading.plugin; print(os.environ.get('COURSE_GRADE_REPORT'))")
    assert _python(code) == "r.json", "importing the plugin must not read (or remove) its settings"


def test_the_plugin_runs_in_process_with_pytester(graded, tmp_path, monkeypatch):
    report = tmp_path / "report.json"
    monkeypatch.setenv(plugin.REPORT_ENV, str(report))
    result = graded.runpytest_inprocess("-p", PLUGIN, "--tree", "solutions")
    result.assert_outcomes(passed=2, failed=1)
    assert plugin.REPORT_ENV not in os.environ, "the report path is removed before graded code runs"
    assert json.loads(report.read_text())["earned"] == POINTS - 1


def test_the_sandbox_worker_does_not_import_pytest():
    code = ("import sys; import recsys_course.tooling.grading.worker, recsys_course.tooling.grading.loader; "
            "print('pytest' in sys.modules)")
    assert _python(code) == "False"


def _python(code: str) -> str:
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
