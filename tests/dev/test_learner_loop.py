"""The learner's loop beyond check/hint/progress (tests/dev/test_cli.py): the wording of failures,
time limits, hints shown again, watch's order, `course run`, quiet output, Ctrl-C and
typed errors, and the warm worker. No verdict here depends on timing."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import recsys_course
from recsys_course.tooling import cli
from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.commands.learner import watch_queue
from recsys_course.errors import UnknownTarget
from recsys_course.tooling.grading.messages import ContractViolation, expect_arity, learner_message
from recsys_course.tooling.quiet import strip_noise

CATALOG = load_catalog()
LESSON = CATALOG.lesson("00")
SRC = str(Path(recsys_course.__file__).resolve().parents[1])


@pytest.fixture()
def clone(tmp_path):
    """A learner's clone with lesson 00 only, as `course` sees it via COURSE_ROOT."""
    for tree in ("solutions", "lessons"):
        (tmp_path / tree).mkdir()
        for suffix in (".py", ".yml") if tree == "solutions" else (".py",):
            shutil.copy(CATALOG.root / tree / f"{LESSON.slug}{suffix}", tmp_path / tree)
    (tmp_path / "tests").mkdir()
    for name in ("conftest.py", "test_lesson_00.py"):
        shutil.copy(CATALOG.root / "tests" / name, tmp_path / "tests")
    shutil.copy(CATALOG.root / "pyproject.toml", tmp_path)
    return tmp_path


def env_for(clone, **extra):
    """The environment of a `course` command in ``clone``; checks run cold (no warm worker,
    which would outlive the test) unless ``COURSE_WORKER="on"``."""
    return {"COURSE_ROOT": str(clone), "COURSE_DATA": "synthetic", "PATH": "/usr/bin:/bin",
            "PYTHONPATH": SRC, "COURSE_WORKER": "off", **extra}


def course(clone, *args, **extra):
    done = subprocess.run([sys.executable, "-m", "recsys_course.tooling.cli", *args], cwd=clone,
                          env=env_for(clone, **extra), capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def write_exercise(clone, exercise_id, body):
    """Replace the code of one exercise cell in the learner's lesson 00."""
    from recsys_course.tooling.lessons import _exercise_cell_span

    path = clone / "lessons" / LESSON.filename
    lines = path.read_text().splitlines()
    a, b = _exercise_cell_span(lines, exercise_id)
    header = lines[a]
    path.write_text("\n".join(lines[:a] + [header, textwrap.dedent(body).strip(), ""] + lines[b:]) + "\n")


# ----------------------------------------------------------------------------- messages

MISTAKES = {  # one typical mistake per exercise of lesson 00, checked in one run
    "0.1": "def sparsity(ratings):\n    return 'half'\n",
    "0.3": "def temporal_split(ratings, test_fraction=0.2):\n    ordered = ratings.sort_values('timestamp')\n",
    "0.4": "def recommend_popularr(ratings, users, k=10):\n    return {}\n",
    "0.5": "def hit_rate_at_k(recommendations, held_out, k=10):\n    return held_out['no_such_column'].sum()\n",
}


def test_a_syntax_error_is_reported_with_file_and_line_first(clone):
    write_exercise(clone, "0.2", "def user_activity(ratings):\n    return ratings.groupby(\n")
    code, out = course(clone, "check", "0.2")
    failure = next(line.strip() for line in out.splitlines() if "SyntaxError" in line)
    assert code == 1 and failure.startswith(f"{LESSON.filename}, line "), out
    assert "AttributeError" not in out


@pytest.mark.fast
def test_messages_lead_with_the_mistake(clone):
    for exercise_id, body in MISTAKES.items():
        write_exercise(clone, exercise_id, body)
    code, out = course(clone, "check", "00")
    blocks = {b.split()[1]: b for b in re.split(r"\n(?=[✓✗] )", out) if b[:1] in ("✓", "✗")}
    assert code == 1 and set(MISTAKES) <= set(blocks), out
    assert "contract violation: sparsity(ratings) must return a float, got str" in blocks["0.1"]
    assert "`temporal_split` returned None: did you forget `return`?" in blocks["0.3"], blocks["0.3"]
    assert (f"{LESSON.filename} defines no `recommend_popular` (did you mean `recommend_popularr`?)"
            in blocks["0.4"]), blocks["0.4"]
    assert "your code raised KeyError" in blocks["0.5"] and f"({LESSON.filename}, line" in blocks["0.5"]


@pytest.mark.fast
def test_an_exercise_lists_what_the_test_expected_before_what_raised(capsys):
    from recsys_course.tooling.commands.learner import _print_exercise
    from recsys_course.tooling.grading.results import ExerciseResult, Outcome, TestOutcome

    raised = TestOutcome("t::test_tower_runs", "2.1", 1, ran=True, failure="calling the tower raised "
                         "InvalidArgumentError: indices[0] = 3 is not in [0, 3)", kind=Outcome.ERROR)
    expected = TestOutcome("t::test_table_size", "2.1", 1, ran=True,
                           failure="expected 16 weights, got 12", kind=Outcome.FAILED)
    passed = TestOutcome("t::test_same_id_same_vector", "2.1", 1, ran=True, passed=True)
    row = ExerciseResult("2.1", "An id tower", 3, 1, "partial", tests=[raised, expected, passed])
    assert row.outcome is Outcome.ERROR
    assert _print_exercise(row) == 1
    out = capsys.readouterr().out
    assert out.index("expected 16 weights") < out.index("InvalidArgumentError"), out
    assert "Stuck? Run: course hint 2.1" in out


@pytest.mark.fast
def test_an_error_a_test_caught_is_an_error_worded_without_framework_wrappers():
    from recsys_course.tooling.grading.messages import describe_failure
    from recsys_course.tooling.grading.results import Outcome

    keras = ("Exception encountered when calling layer 'embedding' (type Embedding).\n\n{{function_node "
             "__wrapped__ResourceGather_device_/job:localhost/replica:0}} indices[0] = 3 is not in [0, 3) "
             "[Op:ResourceGather] name: \n\nCall arguments received by layer 'embedding':\n  • inputs=tf.Tensor")
    try:
        try:
            raise ValueError(keras)
        except ValueError as error:  # what the tests' call_or_fail does
            pytest.fail(f"calling the tower raised ValueError: {str(error).splitlines()[0]}", pytrace=False)
    except pytest.fail.Exception as failed:
        failure = describe_failure(failed, failed.__traceback__, Path("/nonexistent-lessons"))
    assert failure.kind is Outcome.ERROR
    assert failure.text == "calling the tower raised ValueError: indices[0] = 3 is not in [0, 3) [Op:ResourceGather]"


@pytest.mark.fast
def test_outcomes_travel_in_the_json_and_older_rows_still_read():
    from recsys_course.tooling.grading.results import ExerciseResult, Outcome, TestOutcome, exercise_outcome

    stub = TestOutcome("t::a", "0.1", 2, ran=True, failure="not solved yet: ...", kind=Outcome.NOT_SOLVED)
    row = ExerciseResult("0.1", "t", 2, 0, "failed", "not solved yet: ...", [stub])
    data = row.to_json()
    assert data["outcome"] == "not_solved" and data["tests"][0]["outcome"] == "not_solved"
    assert ExerciseResult.from_json(json.loads(json.dumps(data))).outcome is Outcome.NOT_SOLVED
    del data["outcome"], data["tests"][0]["kind"]  # a report written before outcomes existed
    assert ExerciseResult.from_json(data).outcome is Outcome.FAILED
    missing = ExerciseResult("0.2", "t", 3, 0, "missing", "lesson file not submitted")
    assert missing.outcome is Outcome.MISSING
    timed_out = TestOutcome("t::b", "0.1", 1, ran=True, failure="did not finish", kind=Outcome.TIMED_OUT)
    skipped = TestOutcome("t::c", "0.1", 1, ran=True, failure="not run: ...", kind=Outcome.NOT_RUN)
    assert exercise_outcome([timed_out, skipped], 0, 2) is Outcome.TIMED_OUT


@pytest.mark.fast
def test_contract_helpers_and_wording():
    with pytest.raises(ContractViolation, match="must return 2 values \\(a tuple\\), got one list"):
        expect_arity([1, 2], 2, "split(ratings)")
    try:
        _ = [1, 2, 3][7]  # an error raised by a test reading a malformed result
    except IndexError as error:
        message = learner_message(error, error.__traceback__, Path("/nonexistent-lessons"))
    assert message.startswith("contract violation:") and "IndexError" in message
    wrapped = NotImplementedError(
        "Exception encountered when calling layer 'mf' (type MF).\n\nExercise 1.5 (A matrix "
        "factorisation model in Keras): not solved yet. Stuck? Run: course hint 1.5\n"
    )
    assert learner_message(wrapped, None, Path(".")).startswith("not solved yet: exercise 1.5")
    import numpy as np

    try:
        np.testing.assert_allclose([1.0, 2.0], [1.0, 3.0], err_msg="the second rating is wrong")
    except AssertionError as error:
        message = learner_message(error, None, Path("."))
    assert message.startswith("the second rating is wrong (got array([1., 2.]), expected")


def test_every_assertion_in_the_tests_of_lessons_00_and_01_has_a_message():
    import ast

    for name in ("test_lesson_00.py", "test_lesson_01.py"):
        tree = ast.parse((CATALOG.root / "tests" / name).read_text())
        bare = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert) and n.msg is None]
        assert not bare, f"{name}: assertions without a message at lines {bare}"


def test_an_endless_loop_is_reported_once_and_stops_the_exercise(clone):
    write_exercise(clone, "0.1", "def sparsity(ratings):\n    while True:\n        pass\n")
    code, out = course(clone, "check", "0.1", "--test-timeout", "2")
    assert code == 1 and out.count("did not finish within 2 s") == 1, out
    assert "not run: an earlier test" not in out  # the second test was not run, and not shown


# ----------------------------------------------------------------------------- hints, watch

def test_hint_n_shows_an_earlier_hint_again(clone):
    hints = CATALOG.exercise("0.1").hints
    course(clone, "hint", "0.1")
    course(clone, "hint", "0.1")
    code, out = course(clone, "hint", "0.1", "1")
    assert code == 0 and hints[0] in out and "hint 1 of 3" in out
    code, out = course(clone, "hint", "0.1", "3")  # not revealed yet: the next one comes first
    assert "hint 3 of 3" in out and hints[2] in out
    code, out = course(clone, "hint", "0.1", "9")
    assert code == 2 and "hints 1 to 3" in out


@pytest.mark.fast
def test_watch_starts_at_the_target_and_moves_on_to_the_next_unpassed_exercises():
    queue = [e.id for e in watch_queue(CATALOG, {"0.3", "1.1"}, "0.2")]
    assert queue[:4] == ["0.2", "0.4", "0.5", "1.2"]
    assert [e.id for e in watch_queue(CATALOG, set(), "01")][0] == "1.1"
    assert len(watch_queue(CATALOG, set(), None)) == len(CATALOG.exercises)


def test_watch_moves_on_after_a_pass_and_stops_its_worker(clone):
    from recsys_course.tooling.grading import warm_worker as worker
    from recsys_course.tooling.lessons import replace_exercise_cell

    path = clone / "lessons" / LESSON.filename
    solution = (clone / "solutions" / LESSON.filename).read_text()
    for exercise_id in ("0.4", "0.5"):  # solved in the file, never checked
        path.write_text(replace_exercise_cell(path.read_text(), solution, exercise_id))
    code, out = course(clone, "watch", "0.4", "--interval", "0.1", COURSE_WORKER_PRELOAD="pytest",
                       COURSE_WORKER="on")
    assert code == 0, out
    assert out.index("=== Exercise 0.4") < out.index("Passed: moving on.") < out.index("=== Exercise 0.5")
    assert "All watched exercises pass." in out
    assert not worker.is_running(clone), "watch stops the worker it started"


# ----------------------------------------------------------------------------- course run

LESSON_TEXT = '''\
# %% tags=["setup"]
import pandas as pd

# %% tags=["exercise"] exercise="9.1"
def double(x):
    raise NotImplementedError(
        "Exercise 9.1 (Double it): not solved yet. Stuck? Run: course hint 9.1"
    )

# %%
table = pd.DataFrame({"movie": ["A", "B"], "hits": [double(1), double(2)]})
table

# %% tags=["check"]
bool(table["hits"].sum() > 0)

# %%
import sys
import types

class Callback:
    pass

class Model:
    name = "toy"

    def fit(self, epochs=1, verbose="auto", callbacks=()):
        for callback in callbacks:
            callback.params, callback.model = {"epochs": epochs}, self
            callback.on_train_begin()
        for epoch in range(epochs):
            for callback in callbacks:
                callback.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})

sys.modules["keras"] = types.SimpleNamespace(Model=Model, callbacks=types.SimpleNamespace(Callback=Callback))

# %%
Model().fit(epochs=3, verbose=0)
Model().fit(epochs=2, verbose=2)

# %%
import matplotlib.pyplot as plt
for _ in range(2):
    plt.figure()
    plt.plot([1, 2], [3, 4])
    plt.title("Hits by movie (synthetic)")
plt.figure()
plt.plot([1, 2], [3, 4])
"the end"
'''


def run_lesson(tmp_path, *options):
    lesson, solution = tmp_path / "lessons" / "09_t.py", tmp_path / "solutions" / "09_t.py"
    for path in (lesson, solution):
        path.parent.mkdir(exist_ok=True)
    lesson.write_text(LESSON_TEXT)
    solution.write_text(LESSON_TEXT.replace(
        '    raise NotImplementedError(\n        "Exercise 9.1 (Double it): not solved yet. Stuck? Run: course hint 9.1"\n    )',
        "    return 2 * x"))
    done = subprocess.run(
        [sys.executable, "-m", "recsys_course.tooling.lesson_run", str(lesson), "--solutions", str(solution),
         "--figures", str(tmp_path / "figures"), "--command", "course run 09", *options],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "MPLBACKEND": "Agg"},
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    return done.returncode, done.stdout, done.stderr


def test_run_stops_at_an_unsolved_exercise_with_one_line(tmp_path):
    code, out, err = run_lesson(tmp_path)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "Stopped at line 11: exercise 9.1 (Double it) is not solved yet. Solve it and check it "
        "with `course check 9.1`, or see the rest of the lesson with `course run 09 --use-solutions`."
    ]


def test_run_with_solutions_displays_tables_values_progress_and_figures(tmp_path):
    code, out, err = run_lesson(tmp_path, "--use-solutions")
    assert code == 0, err
    assert "exercise 9.1 is not solved yet: running the reference solution" in out
    assert "movie  hits" in out and "B     4" in out  # the bare `table` expression, shown
    assert "'the end'" in out
    assert "True" not in out, "a check cell's value is for the site build, not displayed"
    epochs = [line for line in err.splitlines() if line.startswith("[training toy")]
    assert [line.split(",")[0] for line in epochs] == [f"[training toy: epoch {i}/3" for i in (1, 2, 3)], err
    assert "loss 0.5" in epochs[1], "each line carries the epoch's metrics"
    names = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert names == ["cell07-3.png", "hits-by-movie-synthetic-2.png", "hits-by-movie-synthetic.png"], names
    assert all(f"[figure saved: {tmp_path / 'figures' / name}]" in out for name in names)


# ----------------------------------------------------------------------------- quiet, errors

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796126540.129639   10506 port.cc:153] oneDNN custom operations are on.\n",
    "E0000 00:00:1796126543.471188   10506 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n",
    "E0000 00:00:1796126543.471188   10506 meta_optimizer.cc:966] NodeDef mentions attribute use_unbounded_threadpool\n",
    "WARNING:absl:Variant folder /root/tensorflow_datasets/movielens has no dataset_info.json\n",
]


def test_tensorflow_noise_is_stripped_and_other_lines_kept():
    assert strip_noise("".join(NOISE) + "Epoch 1: rmse 0.93\n") == "Epoch 1: rmse 0.93\n"


def test_stderr_filter_drops_noise_from_this_process_and_its_children(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(f"import os\nos.write(2, {NOISE[3]!r}.encode() + b'kept from a child\\n')\n")
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import os, subprocess, sys\n"
        "from recsys_course.tooling.quiet import filter_stderr\n"
        "filter_stderr()\n"
        f"os.write(2, {''.join(NOISE)!r}.encode())\n"
        "print('kept from the parent', file=sys.stderr, flush=True)\n"
        f"subprocess.run([sys.executable, {str(child)!r}])\n"
    )
    done = subprocess.run([sys.executable, str(parent)], env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.stderr.splitlines() == ["kept from the parent", "kept from a child"], done.stderr


def test_ctrl_c_ends_quietly_and_bugs_keep_their_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    def buggy(args):
        raise KeyError("an internal bug")

    monkeypatch.setattr(cli.learner, "cmd_progress", interrupted)
    monkeypatch.setattr("recsys_course.tooling.quiet.filter_stderr", lambda: None)
    assert cli.main(["progress"]) == 130 and "Stopped." in capsys.readouterr().err
    monkeypatch.setattr(cli.learner, "cmd_progress", buggy)
    with pytest.raises(KeyError, match="an internal bug"):
        cli.main(["progress"])  # not turned into "error: ...": a bug must be seen
    with pytest.raises(UnknownTarget):
        cli.learner.resolve_target(CATALOG, "9.9")


# ----------------------------------------------------------------------------- warm worker

def test_check_leaves_a_warm_worker_that_the_next_check_uses(clone, monkeypatch):
    from recsys_course.tooling.grading import warm_worker as worker

    monkeypatch.setenv("COURSE_WORKER", "on")  # `make test` turns workers off for everything else

    warm = {"COURSE_WORKER": "on", "COURSE_WORKER_PRELOAD": "pytest,pandas", "COURSE_WORKER_IDLE": "120"}
    write_exercise(clone, "0.1", "def sparsity(ratings):\n    return 'half'\n")
    try:
        code, out = course(clone, "check", "0.2", **warm)  # a stub: answered at once ...
        assert code == 1 and "not solved yet" in out, out
        deadline = time.monotonic() + 120  # ... and a worker warms up in the background
        while not worker.info_path(clone).exists():
            assert time.monotonic() < deadline, "a check of a stub starts a worker for the next check"
            time.sleep(0.1)
        pid = json.loads(worker.info_path(clone).read_text())["pid"]
        code, out = course(clone, "check", "0.1", **warm)  # waits for that worker, starts none
        assert code == 1 and "contract violation" in out, out
        assert worker.is_running(clone), "a check leaves a worker behind for the next one"
        assert json.loads(worker.info_path(clone).read_text())["pid"] == pid
        assert oct(worker.socket_path(clone).stat().st_mode & 0o777) == "0o600", "nobody else may connect"
        code, out = course(clone, "check", "0.1", **warm)  # the same verdict, from the same worker
        assert code == 1 and "contract violation" in out, out
        assert json.loads(worker.info_path(clone).read_text())["pid"] == pid
        answer = worker.submit(clone, ["--version"], dict(os.environ), str(clone), 60)
        assert answer is not None and answer["returncode"] == 0 and "pytest" in answer["output"]
    finally:
        worker.stop(clone)
    deadline = time.monotonic() + 60
    while worker.socket_path(clone).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker.socket_path(clone).exists(), "the worker removes its socket when it stops"


# ----------------------------------------------------------------------------- lesson files

@pytest.mark.fast
@pytest.mark.parametrize("lesson", [pytest.param(l, id=l.id) for l in CATALOG.lessons])
def test_exercises_appear_in_their_numbered_order(lesson):
    from recsys_course.tooling.lessons import parse_cells

    def number(exercise_id):
        return tuple(int(part) for part in exercise_id.split("."))

    for tree in ("solutions", "lessons"):
        found = [c.exercise for c in parse_cells((CATALOG.root / tree / lesson.filename).read_text())
                 if c.exercise]
        assert found == sorted(found, key=number), f"{tree}/{lesson.filename}: exercises in the order {found}"
        assert found == [e.id for e in lesson.exercises], f"{lesson.slug}.yml lists them in another order"
