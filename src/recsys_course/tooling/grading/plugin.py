"""The pytest plugin behind every graded test run.

It is registered through the ``pytest11`` entry point of the installed package (so a plain
``pytest`` finds it), by ``tests/conftest.py`` in a clone that is not installed, and with an
explicit ``-p recsys_course.tooling.grading.plugin`` by the runner, which turns plugin
autoloading off. Its state lives in ``config.stash`` (:data:`COLLECTOR`), and its settings
are read in :func:`pytest_configure`, never at import.

Which tree is graded: ``--lessons-dir PATH`` (or ``$COURSE_LESSONS_DIR``) names a folder of
lesson files; otherwise ``--tree lessons|solutions`` (or ``$COURSE_TREE``, default
``lessons``) picks one of the clone's trees. ``$COURSE_GRADE_REPORT`` (set by the runner)
is where the JSON report goes; it is read and removed from the environment before any
graded code can run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys_course.tooling.catalog import Catalog, load_catalog
from recsys_course.tooling.grading.guard import Guard, SubmissionMisbehaved, SubmissionTimeout, contained
from recsys_course.tooling.grading.messages import NotRun, apply_failure, failure_properties
from recsys_course.tooling.grading.results import TestOutcome, format_table, report_json, score, write_json
from recsys_course.tooling.grading.loader import LessonLoadError, defer_import, load_lesson

REPORT_ENV = "COURSE_GRADE_REPORT"

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
                    help="seconds one graded test may run (0: no limit); CPU seconds with --sandbox")
    group.addoption("--cell-timeout", type=float, default=60.0,
                    help="seconds one setup or exercise cell may run while loading; CPU seconds with --sandbox")
    group.addoption("--hidden-tests", default=None,
                    help="tests under this folder are instructor-only: counted, not shown")
    group.addoption("--sandbox", action="store_true", default=False,
                    help="run the graded lessons in a bubblewrap sandbox (batch grading)")
    group.addoption("--sandbox-memory-mb", type=int, default=6144,
                    help="address-space limit of a sandbox, in MB (0: none)")
    group.addoption("--sandbox-package", default=None,
                    help="the recsys_course package folder the sandbox imports (default: this one)")
    group.addoption("--submissions-file", default=None,
                    help="batch grading: a JSON object {name: lessons folder}; each test runs per submission")
    group.addoption("--lesson-timeout", type=float, default=900.0,
                    help="seconds a sandboxed lesson may take to load, all cells together")
    group.addoption("--sandbox-preload", default=None,
                    help="modules (comma-separated) the sandbox imports before any graded code "
                         "(default: those the reference solutions of the graded lessons import)")
    group.addoption("--sandbox-wall-factor", type=float, default=4.0,
                    help="sandbox limits count CPU seconds; a request is also stopped after this many "
                         "times its limit in wall-clock seconds (code that sleeps)")


def lessons_dir(config: pytest.Config, catalog: Catalog) -> Path:
    explicit = config.getoption("--lessons-dir") or os.environ.get("COURSE_LESSONS_DIR")
    if explicit:
        return Path(explicit).resolve()
    tree = config.getoption("--tree") or os.environ.get("COURSE_TREE") or "lessons"
    if tree not in ("lessons", "solutions"):
        raise pytest.UsageError(f"COURSE_TREE must be 'lessons' or 'solutions', not {tree!r}")
    return catalog.root / tree


COLLECTOR = pytest.StashKey["GradeCollector"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "exercise(id, points): graded test of exercise `id`")
    # Read once, before any graded code runs, and removed from the environment it can see.
    report = os.environ.pop(REPORT_ENV, None)
    collector = config.stash[COLLECTOR] = GradeCollector(config, report)
    config.pluginmanager.register(collector, "course-grades")


def collector_of(config: pytest.Config) -> GradeCollector | None:
    return config.stash.get(COLLECTOR, None)


@pytest.fixture(scope="session")
def grader_guard(pytestconfig: pytest.Config) -> Guard:
    return collector_of(pytestconfig).guard


@pytest.fixture(scope="session")
def course_catalog() -> Catalog:
    return load_catalog()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Batch grading of several submissions in one run (``--submissions-file``): every test
    that grades a lesson runs once per submission, grouped by submission."""
    collector = collector_of(metafunc.config)
    if collector is not None and collector.submissions and "graded_submission" in metafunc.fixturenames:
        names = list(collector.submissions)
        metafunc.parametrize("graded_submission", names, indirect=True, scope="session", ids=names)


@pytest.fixture(scope="session")
def graded_submission(request: pytest.FixtureRequest, pytestconfig: pytest.Config):
    """The submission being graded (``--submissions-file``), or None."""
    name = getattr(request, "param", None)
    yield name
    if name is not None:  # its sandboxes are not needed by the next submission's tests
        collector_of(pytestconfig).close_sessions(name)


@pytest.fixture(scope="session")
def graded_dir(pytestconfig: pytest.Config, course_catalog: Catalog, graded_submission) -> Path:
    if graded_submission is not None:
        return Path(collector_of(pytestconfig).submissions[graded_submission])
    return lessons_dir(pytestconfig, course_catalog)


@pytest.fixture(scope="module")
def lesson_loader(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config, course_catalog: Catalog,
    graded_dir: Path, grader_guard: Guard, graded_submission,
):
    """``lesson_loader("00")`` -> the graded lesson (setup + exercise cells only).

    In-process (``course check``, ``make test``): a module; whatever the lesson's code
    replaced in the grader while loading is put back at once. With ``--sandbox`` (batch
    grading): a :class:`~recsys_course.tooling.grading.proxy.RemoteLesson` whose code runs in a
    bubblewrap sandbox (one per submission, shared by its lessons); hidden tests get a
    sandbox of their own, so nothing the learner's code sees during them can reach the
    feedback of a visible test.
    """
    defer_import("matplotlib.pyplot")  # lessons import it for plots that grading never draws
    collector = collector_of(pytestconfig)
    hidden = collector.is_hidden(Path(str(request.path)))

    def load(key: str):
        lesson = course_catalog.lesson(key)
        path = graded_dir / lesson.filename
        if not path.exists():
            pytest.fail(f"{lesson.filename} was not found in the graded folder", pytrace=False)
        if collector.sandboxed:
            return collector.remote_lesson(lesson.id, path, hidden, graded_submission or "")
        cache = collector.modules
        key = f"{graded_submission or ''}/{lesson.id}"
        if key not in cache:
            try:
                cache[key] = load_lesson(
                    path, f"lesson_{lesson.id}", pytestconfig.getoption("--cell-timeout") or None,
                    # Checking a few exercises: skip the cells after them (and often the
                    # TensorFlow import of later sections).
                    exercises=set(pytestconfig.getoption("--exercise")) or None,
                )
            except LessonLoadError as error:
                cache[key] = error
            finally:
                replaced = grader_guard.restore()
                if replaced:
                    grader_guard.notes.append(
                        f"{lesson.filename} replaced {', '.join(replaced)} while loading; restored"
                    )
        loaded = cache[key]
        if isinstance(loaded, Exception):
            pytest.fail(str(loaded), pytrace=False)
        return loaded

    return load


class GradeCollector:
    """Records which exercise each test grades and whether it passed; reports at the end."""

    def __init__(self, config: pytest.Config, report: str | None = None) -> None:
        self.config = config
        self.report = report  # where the JSON report goes (from the environment)
        self.results: dict[str, TestOutcome] = {}
        self.guard = Guard()  # before any graded code can run
        # Exercises whose test ran past its limit or crashed the sandbox, per submission:
        # their other tests fail at once, so a hang or a crash costs one test, not one each.
        self.stopped: dict[tuple[str, str], str] = {}
        self.lesson_ids: set[str] = set()  # lessons of the collected tests (the zygote's imports)
        hidden = config.getoption("--hidden-tests")
        self.hidden_dir = Path(hidden).resolve() if hidden else None
        self.sandboxed = bool(config.getoption("--sandbox"))
        self.modules: dict[str, object] = {}  # in-process lessons, by lesson id
        self.sessions: dict[tuple[str, str, bool], object] = {}  # (submission, lesson, hidden)
        self.hosts: dict[tuple[str, bool], object] = {}  # (submission, hidden) -> its sandbox
        self.submissions: dict[str, str] = {}  # --submissions-file: name -> lessons folder
        self.submission_of: dict[str, str] = {}  # test node id -> submission name
        listing = config.getoption("--submissions-file")
        if listing:
            import json

            self.submissions = json.loads(Path(listing).read_text(encoding="utf-8"))

    def is_hidden(self, path: Path) -> bool:
        return self.hidden_dir is not None and self.hidden_dir in path.resolve().parents

    def close_sessions(self, submission: str) -> None:
        for (name, _, _), session in self.sessions.items():
            if name == submission:
                session.close()
        for (name, _), host in self.hosts.items():
            if name == submission:
                host.close()

    def _host(self, submission: str, hidden: bool, lessons_dir: Path):
        from recsys_course.tooling.grading.proxy import SandboxHost, preload_modules
        from recsys_course.tooling.grading.sandbox import Limits

        key = (submission, hidden)
        if key not in self.hosts:
            option = self.config.getoption
            package = option("--sandbox-package")
            preload = option("--sandbox-preload")
            if preload is None:  # what the reference solutions of the collected lessons import
                catalog = load_catalog()
                preload = ",".join(preload_modules(
                    [catalog.root / "solutions" / catalog.lesson(i).filename for i in sorted(self.lesson_ids)]))
            self.hosts[key] = SandboxHost(
                lessons_dir, limits=Limits(memory_mb=option("--sandbox-memory-mb") or None,
                                           wall_factor=option("--sandbox-wall-factor")),
                package_dir=Path(package) if package else None, preload=tuple(n for n in preload.split(",") if n),
            )
        return self.hosts[key]

    def remote_lesson(self, lesson_id: str, path: Path, hidden: bool, submission: str = ""):
        from recsys_course.tooling.grading.proxy import Session

        key = (submission, lesson_id, hidden)
        if key not in self.sessions:
            option = self.config.getoption
            self.sessions[key] = Session(
                path, f"lesson_{lesson_id}", self._host(submission, hidden, path.parent),
                call_timeout=option("--test-timeout") or 120.0, cell_timeout=option("--cell-timeout") or 60.0,
                load_timeout=option("--lesson-timeout") or 900.0,
            )
        return self.sessions[key].lesson

    def _begin_tests(self) -> None:
        for session in self.sessions.values():
            session.begin_test()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for remote in self.sessions.values():
            remote.close()
        for host in self.hosts.values():
            host.close()

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
            hidden = self.is_hidden(Path(item.path))
            points = int(marker.kwargs.get("points", 1))
            self.results[item.nodeid] = TestOutcome(item.nodeid, exercise_id, points, hidden=hidden)
            self.lesson_ids.add(catalog.exercise(exercise_id).lesson_id)
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "graded_submission" in callspec.params:
                self.submission_of[item.nodeid] = callspec.params["graded_submission"]
            # Travels with the test's reports, so a pytest-xdist controller (which collects
            # nothing itself) can still build the score table.
            item.user_properties.append(("course_exercise", (exercise_id, points, hidden)))

    def _exercise_key(self, item: pytest.Item) -> tuple[str, str] | None:
        marker = item.get_closest_marker("exercise")
        if marker is None:
            return None
        return self.submission_of.get(item.nodeid, ""), str(marker.args[0])

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Start each sandbox's clock for this test. After one test of an exercise timed
        out or crashed its sandbox, the exercise's other tests fail at once: an endless loop
        or a crash costs one time limit or one restart, not one per test."""
        self._begin_tests()
        key = self._exercise_key(item)
        if key is not None and key in self.stopped:
            raise NotRun(f"not run: an earlier test of exercise {key[1]} {self.stopped[key]}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        """Word a failure for the learner (see :mod:`recsys_course.tooling.grading.messages`)."""
        report = yield
        marker = item.get_closest_marker("exercise")
        if marker is not None and call.excinfo is not None and report.failed:
            from recsys_course.tooling.grading.sandbox import SandboxCrashed, SandboxTimeout

            key = self._exercise_key(item)
            if call.when == "call" and call.excinfo.errisinstance((SubmissionTimeout, SandboxTimeout)):
                self.stopped.setdefault(key, "ran past its time limit")
            elif call.when == "call" and call.excinfo.errisinstance(SandboxCrashed):
                self.stopped.setdefault(key, "crashed the sandbox")
            graded = lessons_dir(self.config, load_catalog())
            report.user_properties.extend(failure_properties(call.excinfo.value, call.excinfo.tb, graded))
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        """Run the test with exits and hangs contained; fail it if it rewrote the grader."""
        if self.sandboxed:  # no graded code runs in this process: nothing to contain
            self._begin_tests()
            return (yield)
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
            result = self.results[report.nodeid] = TestOutcome(report.nodeid, exercise_id, points, hidden=hidden)
        result.ran = True
        if report.when == "call" and report.passed:
            result.passed = True
        if report.failed:
            result.passed = False
            apply_failure(result, dict(report.user_properties), _first_line(report))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        replaced = self.guard.restore()
        if replaced:
            self.guard.notes.append(f"replaced {', '.join(replaced)} after the tests; restored")
        results = list(self.results.values())
        if not any(r.ran for r in results):  # --collect-only, or nothing graded
            return
        catalog = load_catalog()
        lesson_ids = {catalog.exercise(r.exercise_id).lesson_id for r in results}
        json_path = self.config.getoption("--grade-json") or self.report
        if self.submissions:  # one report per submission
            payloads = {}
            for name, folder in self.submissions.items():
                mine = [r for nodeid, r in self.results.items() if self.submission_of.get(nodeid) == name]
                rows = score(catalog, mine, lesson_ids)
                payloads[name] = report_json(rows, lessons_dir=folder, notes=self._notes(name))
                terminalreporter.write_line(f"{name}: {payloads[name]['earned']} / {payloads[name]['possible']}")
            if json_path:
                write_json(Path(json_path), {"submissions": payloads})
            return
        rows = score(catalog, results, lesson_ids)
        graded = lessons_dir(self.config, catalog)
        terminalreporter.section(f"course score ({graded})")
        terminalreporter.write_line(format_table(rows))
        if json_path:
            payload = report_json(rows, lessons_dir=str(graded), notes=self._notes(""))
            write_json(Path(json_path), payload)

    def _notes(self, submission: str) -> list[str]:
        notes = list(self.guard.notes)
        for (name, _lesson_id, hidden), session in sorted(self.sessions.items(), key=lambda kv: kv[0]):
            if name == submission:
                where = f"hidden checks of {session.lesson_file.name}" if hidden else session.lesson_file.name
                notes += [f"{where}: {note}" for note in session.notes]
        return notes


def _first_line(report: pytest.TestReport) -> str:
    """The first non-empty line of a failure: the assertion message learners should read."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed"
