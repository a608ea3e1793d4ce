"""The pytest plugin behind every graded test run. Enable it with
``pytest_plugins = ["recsys_course.grading.plugin"]`` in ``tests/conftest.py``.

Which tree is graded: ``--lessons-dir PATH`` (or ``$COURSE_LESSONS_DIR``) names a folder of
lesson files; otherwise ``--tree lessons|solutions`` (or ``$COURSE_TREE``, default
``lessons``) picks one of the clone's trees.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from recsys_course.catalog import Catalog, load_catalog
from recsys_course.grading.guard import Guard, SubmissionMisbehaved, SubmissionTimeout, contained
from recsys_course.grading.messages import learner_message
from recsys_course.grading.scores import TestResult, format_table, score, to_json, write_json
from recsys_course.lessons import LessonLoadError, load_lesson

# Read once, before any graded code runs, and removed from the environment it can see.
_REPORT_FROM_ENV = os.environ.pop("COURSE_GRADE_REPORT", None)

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("course", "course grading")
    group.addoption("--tree", choices=["lessons", "solutions"], default=None,
                    help="grade the learner tree (default) or the reference solutions")
    group.addoption("--lessons-dir", default=None,
                    help="grade the lesson files in this folder instead of a tree of the clone")
    group.addoption("--grade-json", default=None, help="also write the score table as JSON here")
    group.addoption("--exercise", action="append", default=[],
                    help="run only the tests of this exercise id (repeatable)")
    group.addoption("--test-timeout", type=float, default=120.0,
                    help="seconds one graded test may run (0: no limit)")
    group.addoption("--cell-timeout", type=float, default=60.0,
                    help="seconds one setup or exercise cell may run while loading")
    group.addoption("--hidden-tests", default=None,
                    help="tests under this folder are instructor-only: counted, not shown")


def lessons_dir(config: pytest.Config, catalog: Catalog) -> Path:
    explicit = config.getoption("--lessons-dir") or os.environ.get("COURSE_LESSONS_DIR")
    if explicit:
        return Path(explicit).resolve()
    tree = config.getoption("--tree") or os.environ.get("COURSE_TREE") or "lessons"
    if tree not in ("lessons", "solutions"):
        raise pytest.UsageError(f"COURSE_TREE must be 'lessons' or 'solutions', not {tree!r}")
    return catalog.root / tree


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "exercise(id, points): graded test of exercise `id`")
    config.pluginmanager.register(GradeCollector(config), "course-grades")


@pytest.fixture(scope="session")
def grader_guard(pytestconfig: pytest.Config) -> Guard:
    return pytestconfig.pluginmanager.get_plugin("course-grades").guard


@pytest.fixture(scope="session")
def course_catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def graded_dir(pytestconfig: pytest.Config, course_catalog: Catalog) -> Path:
    return lessons_dir(pytestconfig, course_catalog)


@pytest.fixture(scope="session")
def lesson_loader(
    pytestconfig: pytest.Config, course_catalog: Catalog, graded_dir: Path, grader_guard: Guard
):
    """``lesson_loader("00")`` -> the graded lesson as a module (setup + exercise cells only).

    Whatever the lesson's code replaced in the grader while loading is put back at once.
    """
    cache: dict[str, object] = {}
    _defer_import("matplotlib.pyplot")  # lessons import it for plots that grading never draws

    def load(key: str):
        lesson = course_catalog.lesson(key)
        if lesson.id not in cache:
            path = graded_dir / lesson.filename
            if not path.exists():
                cache[lesson.id] = LessonLoadError(f"{path} does not exist")
            else:
                try:
                    cache[lesson.id] = load_lesson(
                        path, f"lesson_{lesson.id}", pytestconfig.getoption("--cell-timeout") or None,
                        # Checking a few exercises: skip the cells after them (and often the
                        # TensorFlow import of later sections).
                        exercises=set(pytestconfig.getoption("--exercise")) or None,
                    )
                except LessonLoadError as error:
                    cache[lesson.id] = error
                finally:
                    replaced = grader_guard.restore()
                    if replaced:
                        grader_guard.notes.append(
                            f"{lesson.filename} replaced {', '.join(replaced)} while loading; restored"
                        )
        loaded = cache[lesson.id]
        if isinstance(loaded, Exception):
            pytest.fail(str(loaded), pytrace=False)
        return loaded

    return load


class _DeferredModule(ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet; the first attribute use
    imports the real one (which then replaces it) and answers from it."""

    def __getattr__(self, attribute: str):
        if attribute.startswith("__") and attribute.endswith("__"):
            # Tools that walk sys.modules (inspect, when pytest formats a failure) probe
            # dunders such as __file__: not a use of the module, so do not import it.
            raise AttributeError(attribute)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attribute)


def _defer_import(name: str) -> None:
    """Make ``import name`` free until the module is used. Setup cells import pyplot for
    plots that grading never draws, and it costs about 0.3 s of a check meant to take under
    two seconds. (``importlib.util.LazyLoader`` does not help here: the import statement
    itself reads the module's ``__spec__``, which loads it.)"""
    if name not in sys.modules:
        sys.modules[name] = _DeferredModule(name)


class GradeCollector:
    """Records which exercise each test grades and whether it passed; reports at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[str, TestResult] = {}
        self.guard = Guard()  # before any graded code can run
        self.timed_out: set[str] = set()  # exercises whose test ran past its limit
        hidden = config.getoption("--hidden-tests")
        self.hidden_dir = Path(hidden).resolve() if hidden else None

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        catalog = load_catalog()
        known = {e.id for e in catalog.exercises}
        only = set(self.config.getoption("--exercise"))
        if only:
            keep = [i for i in items if (m := i.get_closest_marker("exercise")) and str(m.args[0]) in only]
            self.config.hook.pytest_deselected(items=[i for i in items if i not in keep])
            items[:] = keep
        for item in items:
            marker = item.get_closest_marker("exercise")
            if marker is None:
                continue
            exercise_id = str(marker.args[0])
            if exercise_id not in known:
                raise pytest.UsageError(
                    f"{item.nodeid}: exercise {exercise_id} is not defined in any solutions/NN_*.yml"
                )
            hidden = self.hidden_dir is not None and self.hidden_dir in Path(item.path).resolve().parents
            points = int(marker.kwargs.get("points", 1))
            self.results[item.nodeid] = TestResult(item.nodeid, exercise_id, points, hidden=hidden)
            # Travels with the test's reports, so a pytest-xdist controller (which collects
            # nothing itself) can still build the score table.
            item.user_properties.append(("course_exercise", (exercise_id, points, hidden)))

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """After one test of an exercise timed out, its other tests fail at once: an endless
        loop costs one time limit, not one per test."""
        marker = item.get_closest_marker("exercise")
        if marker is not None and str(marker.args[0]) in self.timed_out:
            pytest.fail(
                f"not run: an earlier test of exercise {marker.args[0]} ran past its time limit",
                pytrace=False,
            )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        """Word a failure for the learner (see :mod:`recsys_course.grading.messages`)."""
        report = yield
        marker = item.get_closest_marker("exercise")
        if marker is not None and call.excinfo is not None and report.failed:
            if call.excinfo.errisinstance(SubmissionTimeout):
                self.timed_out.add(str(marker.args[0]))
            graded = lessons_dir(self.config, load_catalog())
            message = learner_message(call.excinfo.value, call.excinfo.tb, graded)
            report.user_properties.append(("course_failure", message))
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        """Run the test with exits and hangs contained; fail it if it rewrote the grader."""
        limit = self.config.getoption("--test-timeout") or None
        try:
            with contained(limit, f"test {item.name}"):
                return (yield)
        finally:
            replaced = self.guard.restore()
            if replaced:
                raise SubmissionMisbehaved(
                    f"the graded code replaced {', '.join(replaced)}; this test does not count"
                )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.get(report.nodeid)
        if result is None:
            graded = dict(report.user_properties).get("course_exercise")
            if graded is None:
                return
            exercise_id, points, hidden = graded
            result = self.results[report.nodeid] = TestResult(report.nodeid, exercise_id, points, hidden=hidden)
        result.ran = True
        if report.when == "call" and report.passed:
            result.passed = True
        if report.failed:
            result.passed = False
            worded = dict(report.user_properties).get("course_failure")
            result.failure = result.failure or worded or _first_line(report)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        replaced = self.guard.restore()
        if replaced:
            self.guard.notes.append(f"replaced {', '.join(replaced)} after the tests; restored")
        results = list(self.results.values())
        if not any(r.ran for r in results):  # --collect-only, or nothing graded
            return
        catalog = load_catalog()
        lesson_ids = {catalog.exercise(r.exercise_id).lesson_id for r in results}
        rows = score(catalog, results, lesson_ids)
        graded = lessons_dir(self.config, catalog)
        terminalreporter.section(f"course score ({graded})")
        terminalreporter.write_line(format_table(rows))
        json_path = self.config.getoption("--grade-json") or _REPORT_FROM_ENV
        if json_path:
            payload = to_json(rows, lessons_dir=str(graded), notes=list(self.guard.notes))
            write_json(Path(json_path), payload)


def _first_line(report: pytest.TestReport) -> str:
    """The first non-empty line of a failure: the assertion message learners should read."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed"
