"""Batch grading of a class folder with correct, empty, broken and hostile submissions.

Each hostile submission must earn exactly the points its honest code earns, must not change
anyone else's grade, and the batch must finish. One batch run (lesson 00 only, short time
limits) is shared by the tests below; a few of its submissions are graded a second time with
the grader's two jobs and a busy loop confined to one core (each sandbox gets about a third
of a core), and must get the same grades. The corpus covers every attack of
issue 14: forged reports, patched test machinery, value tricks, frame peeking, processes
that outlive the run, killing the grader, escaping the network namespace, interrupts,
cancelled alarms, reading the instructor's files.
"""

import contextlib
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from recsys_course.tooling.catalog import Catalog, load_catalog
from recsys_course.tooling.grading.batch import Grader, Options
from recsys_course.tooling.grading.reports import write_reports
from recsys_course.tooling.grading.runner import run_tests
from recsys_course.tooling.grading.sandbox import problem
from recsys_course.tooling.lessons import make_stub

# One shared batch run: keep every test of this module on one pytest-xdist worker. Where
# bubblewrap cannot run the module is skipped, except under COURSE_REQUIRE_SANDBOX=1 (CI),
# where a missing sandbox must fail loudly rather than skip the hostile corpus.
if problem() is not None and os.environ.get("COURSE_REQUIRE_SANDBOX") == "1":
    raise RuntimeError(f"COURSE_REQUIRE_SANDBOX=1 but the sandbox cannot run: {problem()}")
pytestmark = [pytest.mark.xdist_group("grade_batch"),
              pytest.mark.skipif(problem() is not None, reason=f"no sandbox here: {problem()}")]

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
for target in [pathlib.Path(os.environ.get("HOME", "/tmp")), *pathlib.Path.cwd().parents, pathlib.Path("/work")]:
    for tests in target.glob("**/tests/test_lesson_00.py"):
        try:
            tests.write_text("def test_everything_passes():\\n    pass\\n")
        except OSError:
            pass
"""
MARKER = "course-daemon-marker-7f3a"
ATEXIT_FORGERY = """
import atexit, json, os, glob
def forge():
    for path in glob.glob("/tmp/**/*.json", recursive=True) + [os.environ.get("COURSE_GRADE_REPORT", "")]:
        try:
            open(path, "w").write(json.dumps({"earned": 99, "possible": 99, "exercises": []}))
        except OSError:
            pass
atexit.register(forge)
"""
REPLACE_TEST_CODE = """
import gc
def _passes(*args, **kwargs):
    return None
for obj in gc.get_objects():
    if callable(obj) and getattr(obj, "__name__", "").startswith("test_") and hasattr(obj, "__code__"):
        try:
            obj.__code__ = _passes.__code__
        except (TypeError, ValueError):
            pass
"""
ALWAYS_EQUAL = """
class AlwaysEqual(float):
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
    __hash__ = float.__hash__
_real_sparsity = sparsity
def sparsity(ratings):
    return AlwaysEqual(0.123)
"""
DUCK_FRAME = """
class Anything:
    def __eq__(self, other):
        return True
    def __getattr__(self, name):
        return self
    def __call__(self, *args, **kwargs):
        return self
    def __getitem__(self, key):
        return self
    def __iter__(self):
        return iter([self, self, self])
    def __len__(self):
        return 3
def user_activity(ratings):
    return Anything()
"""
PEEK_FRAMES = """import sys
    frame = sys._getframe(1)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, float) and 0 < value < 1:
                return value
        frame = frame.f_back"""
PATCH_APPROX = """
import _pytest.approx
_pytest.approx.ApproxScalar.__eq__ = lambda self, actual: True
"""
DAEMON = f"""
import subprocess, sys
for _ in range(5):
    subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(600)", "{MARKER}"],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""
KILL_PARENT_AT_IMPORT = """
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
os.kill(1, signal.SIGKILL)
os.kill(os.getpid(), signal.SIGKILL)
"""
KILL_PARENT_IN_CALL = """import os, signal
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(1, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)"""
SETNS = """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            libc.setns(os.open(f"/proc/{pid}/ns/net", os.O_RDONLY), 0)
        except OSError:
            pass
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=1).sendall(b"escaped")
except OSError:
    pass
"""
CANCELLED_ALARM = """
import signal
for timer, number in ((signal.ITIMER_REAL, signal.SIGALRM), (signal.ITIMER_PROF, signal.SIGPROF),
                      (signal.ITIMER_VIRTUAL, signal.SIGVTALRM)):
    signal.setitimer(timer, 0)
    signal.signal(number, signal.SIG_IGN)
while True:
    pass
"""
# 2 s of CPU time on its first call (the limit is 4): within the limit on any machine, but
# past 4 s of wall-clock time when the sandbox gets less than half a core (loaded_batch).
SLOW_ONCE = """import time
    if not globals().get("_slow_done"):
        globals()["_slow_done"] = True
        start = time.process_time()
        while time.process_time() - start < 2.0:
            pass"""
CRASH_EVERY_CALL = """
import os as _os, signal as _signal
def _crashing(*args, **kwargs):
    _os.kill(_os.getpid(), _signal.SIGKILL)
for _name in ("sparsity", "user_activity", "temporal_split", "recommend_popular", "hit_rate_at_k"):
    globals()[_name] = _crashing
"""
READ_SOLUTIONS = """
import sys, pathlib
for root in [pathlib.Path(sys.prefix), *pathlib.Path(sys.prefix).parents, pathlib.Path("/work"), pathlib.Path("/root")]:
    candidate = root / "solutions" / "00_introduction.py"
    try:
        exec(candidate.read_text(), globals())
        break
    except OSError:
        pass
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
    "atexit_forgery": (after_cell(STUB, "0.1", ATEXIT_FORGERY), set(POINTS)),
    "replaces_test_code": (after_cell(STUB, "0.1", REPLACE_TEST_CODE), set(POINTS)),
    "always_equal_float": (after_cell(SOLUTION, "0.1", ALWAYS_EQUAL), {"0.1"}),
    "duck_typed_frame": (after_cell(SOLUTION, "0.2", DUCK_FRAME), {"0.2"}),
    "peeks_at_frames": (in_function(STUB, "0.1", PEEK_FRAMES), set(POINTS)),
    "patches_approx": (after_cell(STUB, "0.1", PATCH_APPROX), set(POINTS)),
    "setsid_daemons": (after_cell(SOLUTION, "0.2", DAEMON), set()),
    "kills_parent_at_import": (after_cell(SOLUTION, "0.5", KILL_PARENT_AT_IMPORT), {"0.5"}),
    "kills_parent_in_call": (in_function(SOLUTION, "0.4", KILL_PARENT_IN_CALL), {"0.4"}),
    "setns_network": (after_cell(SOLUTION, "0.1", SETNS), set()),
    "keyboard_interrupt": (in_function(SOLUTION, "0.2", "raise KeyboardInterrupt"), {"0.2"}),
    "cancelled_alarm_loop": (after_cell(SOLUTION, "0.3", CANCELLED_ALARM), {"0.3"}),
    "reads_solutions": (after_cell(STUB, "0.1", READ_SOLUTIONS), set(POINTS)),
    "crashes_every_call": (after_cell(SOLUTION, "0.5", CRASH_EVERY_CALL), set(POINTS)),
    "slow_but_within_limits": (in_function(SOLUTION, "0.2", SLOW_ONCE), set()),
    "zz_correct_after_hostiles": (SOLUTION, set()),
}


def _listener():
    """A loopback server that records every connection (none may come from a sandbox)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    connections: list[bytes] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return server, connections, stop


def _marked_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and MARKER.encode() in (entry / "cmdline").read_bytes():
                found.append(entry.name)
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    server, connections, stop = _listener()
    port = server.getsockname()[1]
    for name, (source, _) in LESSON_SUBMISSIONS.items():
        if name == "setns_network":
            source = source.replace("PORT", str(port))
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
    (own / "pytest.ini").write_text("[pytest]\naddopts = -p no:recsys_course.tooling.grading.plugin\n")
    (own / "tests").mkdir()
    (own / "tests" / "test_lesson_00.py").write_text("def test_all():\n    assert True\n")
    # lessons/ symlinked to the reference solutions: not followed, flagged.
    (root / "symlinked").mkdir()
    (root / "symlinked" / "lessons").symlink_to(CATALOG.root / "solutions")
    # A learner named in Chinese, and two learners with the same name (zip and folder).
    (root / "学生" / "lessons").mkdir(parents=True)
    (root / "学生" / "lessons" / LESSON.filename).write_text(STUB)
    (root / "Jurgen Muller" / "lessons").mkdir(parents=True)
    (root / "Jurgen Muller" / "lessons" / LESSON.filename).write_text(STUB)
    with zipfile.ZipFile(root / "Jurgen Muller.zip", "w") as archive:
        archive.writestr(f"lessons/{LESSON.filename}", STUB)
    # A zip with the solution under lessons/ plus files that must be ignored.
    with zipfile.ZipFile(root / "zipped.zip", "w") as archive:
        archive.writestr(f"clone/lessons/{LESSON.filename}", SOLUTION)
        archive.writestr(f"clone/scratch/{LESSON.filename}", STUB)  # lessons/ wins
        archive.writestr("clone/conftest.py", "raise SystemExit('must never be imported')\n")
    (root / "truncated.zip").write_bytes((root / "zipped.zip").read_bytes()[:40])

    hidden = tmp_path_factory.mktemp("instructor")
    (hidden / "test_lesson_00_hidden.py").write_text(
        "import pandas as pd\nimport pytest\nfrom recsys_course.tooling.grading import exercise\n\n"
        "@pytest.fixture(scope='module')\ndef lesson(lesson_loader):\n    return lesson_loader('00')\n\n"
        "SECRET_DATA = 'SECRET-DATA-a'\n\n"
        "@exercise('0.1', points=1)\ndef test_secret_single_user_case(lesson):\n"
        "    r = pd.DataFrame({'user_id': [SECRET_DATA, SECRET_DATA], 'movie_id': ['m', 'n']})\n"
        "    assert lesson.sparsity(r) == 0.0, 'SECRET-CASE-MESSAGE'\n"
    )
    out = tmp_path_factory.mktemp("out")
    options = hostile_options(out, hidden)
    grader = Grader(options, Catalog(CATALOG.root, (LESSON,)))
    try:
        grades, warnings = grader.grade([root])
        write_reports(grades, grader.catalog, options, warnings, grader.isolation())
    finally:
        grader.cleanup()
        stop.set()
        server.close()
    return {"grades": {g.submission.name: g for g in grades}, "warnings": warnings, "out": out,
            "connections": list(connections), "survivors": _marked_processes(), "class": root, "hidden": hidden}


def hostile_options(out, hidden) -> Options:
    # Limits in CPU seconds: the same verdicts on a busy machine as on an idle one. (Lesson
    # 00's honest cells and calls take well under a second each.)
    return Options(out=out, timeout=60, test_timeout=4, cell_timeout=3, memory_mb=3000,
                   jobs=2, extra_tests=hidden, junit=True)


LOAD_CLASS = ["correct", "empty", "loop_in_exercise", "slow_but_within_limits"]


@contextlib.contextmanager
def one_busy_core():
    """Run the block on one core shared with a busy-loop process. The grader's threads,
    started inside the block, and every sandbox they start inherit the affinity, so its two
    jobs and the loop share a single core: each sandbox gets about a third of a core, and
    ``slow_but_within_limits`` (2 s of CPU) takes about 6 s of wall-clock time, past its
    4-second limit, whichever submission runs beside it. The rest of the test run keeps the
    other core."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            yield
        finally:
            hog.kill()
            hog.wait()
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def loaded_batch(batch, tmp_path_factory):
    """Part of the class graded again on one core shared with a busy loop."""
    root = tmp_path_factory.mktemp("loaded-class")
    for name in LOAD_CLASS:
        shutil.copytree(batch["class"] / name, root / name)
    with one_busy_core():
        grader = Grader(hostile_options(tmp_path_factory.mktemp("loaded-out"), batch["hidden"]),
                        Catalog(CATALOG.root, (LESSON,)))
        try:
            grades, _ = grader.grade([root])
        finally:
            grader.cleanup()
    return {g.submission.name: g for g in grades}


def test_grades_do_not_depend_on_load(batch, loaded_batch):
    def points(grade):
        return {e.id: (e.earned, [t.passed for t in e.tests]) for e in grade.exercises.values()}

    for name in LOAD_CLASS:
        assert points(loaded_batch[name]) == points(batch["grades"][name]), f"{name} graded differently under load"


def expected_total(lost: set[str]) -> int:
    full = {**POINTS, "0.1": POINTS["0.1"] + HIDDEN_POINTS}
    return sum(p for ex, p in full.items() if ex not in lost)


@pytest.mark.parametrize("name", list(LESSON_SUBMISSIONS))
def test_each_submission_earns_what_its_honest_code_earns(batch, name):
    grade = batch["grades"][name]
    lost = LESSON_SUBMISSIONS[name][1]
    by_exercise = {i: (e.earned, e.first_failure[:120]) for i, e in grade.exercises.items()}
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


def test_nothing_outlives_the_sandbox_or_reaches_the_network(batch):
    assert batch["survivors"] == [], "processes started by a submission survived the batch"
    assert batch["connections"] == [], "a submission reached a loopback server from the sandbox"
    loop = batch["grades"]["loop_in_exercise"].exercises["0.4"]
    assert "time limit" in loop.first_failure


def test_a_hang_or_a_crash_costs_one_test_per_exercise(batch):
    """After a test of an exercise ran out of time or crashed its worker, the exercise's
    other tests are not run: a hang costs one time limit, a crash one restart."""
    loop = batch["grades"]["loop_in_exercise"].exercises["0.4"]
    failures = [t.failure for t in loop.tests if not t.hidden]
    assert "time limit" in failures[0]
    assert all(f.startswith("not run: an earlier test of exercise 0.4 ran past its time limit") for f in failures[1:])
    for exercise in batch["grades"]["crashes_every_call"].exercises.values():
        failures = [t.failure for t in exercise.tests if not t.hidden]
        assert "crashed the sandbox" in failures[0], failures
        assert all(f.startswith(f"not run: an earlier test of exercise {exercise.id} crashed") for f in failures[1:])


def test_crashes_and_hangs_are_notes_on_their_exercise(batch):
    grades = batch["grades"]
    assert "crashed the sandbox" in grades["kills_parent_in_call"].exercises["0.4"].first_failure
    assert any("0.3" in n and "time limit" in n for n in grades["cancelled_alarm_loop"].notes)
    assert any("exercise 0.5" in n for n in grades["kills_parent_at_import"].notes)
    for grade in grades.values():
        assert not any("course-batch-" in n for n in grade.notes), f"a note quotes a temp path: {grade.notes}"


def test_provenance_and_similarity_are_flagged(batch):
    grades = batch["grades"]
    assert any("tried to read" in f and "solutions" in f for f in grades["reads_solutions"].flags)
    assert any("symlink" in f for f in grades["symlinked"].flags)
    assert grades["symlinked"].total == 0
    assert any("identical to the reference" in f for f in grades["correct"].flags)
    assert not grades["empty"].flags
    summary = (batch["out"] / "grades.csv").read_text(encoding="utf-8")
    assert "identical to the reference" in summary


def test_sources_keep_their_names(batch):
    with open(batch["out"] / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    sources = [r["source"] for r in rows]
    assert "学生" in sources
    assert {"Jurgen Muller", "Jurgen Muller.zip"} <= set(sources)
    names = [r["submission"] for r in rows]
    assert len(names) == len(set(names)), "duplicate learner names must get distinct report names"
    assert rows[0]["submission"] == "(maximum)" and rows[0]["0.1"] == str(POINTS["0.1"] + HIDDEN_POINTS)
    titles = (batch["out"] / "exercises.csv").read_text(encoding="utf-8")
    assert LESSON.exercises[0].title in titles


def test_the_attack_works_without_the_boundary(tmp_path):
    """The always-equal float earns points when graded in-process: the sandbox is what stops it."""
    (tmp_path / LESSON.filename).write_text(LESSON_SUBMISSIONS["always_equal_float"][0])
    run = run_tests(tmp_path, ["00"], exercises=["0.1"], timeout=300)
    row = next(r for r in run.report["exercises"] if r["id"] == "0.1")
    assert row["earned"] > 0, "without the sandbox, this value trick should have fooled the tests"


def test_reference_solutions_calibrate_the_maximum(batch):
    assert batch["warnings"] == []
    data = json.loads((batch["out"] / "grades.json").read_text())
    assert data["max_points"]["0.1"] == POINTS["0.1"] + HIDDEN_POINTS
    assert data["isolation"]["sandbox"] == "bubblewrap" and data["isolation"]["network_off"]
    assert data["possible"] == expected_total(set())


def test_csv_has_a_row_per_submission_and_a_column_per_exercise(batch):
    with open(batch["out"] / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[1:]  # row 1 holds the maxima
    assert {"0.1", "0.2", "0.3", "0.4", "0.5", "total", "max"} <= set(rows[0])
    correct = next(r for r in rows if r["submission"] == "correct")
    assert int(correct["total"]) == int(correct["max"]) == expected_total(set())
    syntax = next(r for r in rows if r["submission"] == "syntax_error")
    assert syntax["0.2"] == "0" and syntax["0.3"] == str(POINTS["0.3"])


def test_feedback_shows_points_and_hints_but_not_hidden_tests(batch):
    feedback = (batch["out"] / "feedback" / "empty.md").read_text()
    assert f"Total: 0 / {sum(POINTS.values())} points" in feedback, "learners see visible points only"
    assert "Hint:" in feedback and "NotImplementedError" in feedback
    every = "".join(p.read_text() for p in (batch["out"] / "feedback").glob("*.md"))
    every += "".join(p.read_text() for p in (batch["out"] / "junit").glob("*.xml"))
    for secret in ("SECRET-CASE-MESSAGE", "secret_single_user_case", "SECRET-DATA"):
        assert secret not in every, f"{secret} leaked into learner files"
    assert "hidden checks: failed" in (batch["out"] / "feedback" / "empty.md").read_text()
    report = (batch["out"] / "grades.json").read_text()
    assert "secret_single_user_case" in report, "the instructor report keeps hidden test details"


def test_junit_files_are_written(batch):
    xml = (batch["out"] / "junit" / "empty.xml").read_text()
    assert re.search(r'failures="\d+"', xml) and "exercise_0.1" in xml
