"""The learner's loop beyond check/hint/progress (tests/dev/test_cli.py): the wording of failures,
time limits, hints shown again, watch's order, `course run`, quiet output, Ctrl-C and
typed errors, and the warm worker. No verdict here depends on timing."""

import os
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
    return {"COURSE_ROOT": str(clone), "COURSE_DATA": "synthetic", "PATH": "/usr/bin:/bin",
            "PYTHONPATH": SRC, **extra}


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

def test_a_syntax_error_is_reported_with_file_and_line_first(clone):
    write_exercise(clone, "0.2", "def user_activity(ratings):\n    return ratings.groupby(\n")
    code, out = course(clone, "check", "0.2")
    failure = next(line.strip() for line in out.splitlines() if "SyntaxError" in line)
    assert code == 1 and failure.startswith(f"{LESSON.filename}, line "), out
    assert "AttributeError" not in out


def test_an_error_in_the_learners_code_names_its_line(clone):
    write_exercise(clone, "0.1", "def sparsity(ratings):\n    return ratings['no_such_column'].sum()\n")
    code, out = course(clone, "check", "0.1")
    assert code == 1 and "your code raised KeyError" in out and f"({LESSON.filename}, line" in out


def test_a_wrong_return_type_is_named_a_contract_violation(clone):
    write_exercise(clone, "0.1", "def sparsity(ratings):\n    return 'half'\n")
    code, out = course(clone, "check", "0.1")
    assert code == 1 and "contract violation: sparsity(ratings) must return a float, got str" in out


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
    code, out = course(clone, "watch", "0.4", "--interval", "0.1", COURSE_WORKER_PRELOAD="pytest")
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

# %%
import matplotlib.pyplot as plt
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


def test_run_with_solutions_displays_tables_values_and_figures(tmp_path):
    code, out, err = run_lesson(tmp_path, "--use-solutions")
    assert code == 0, err
    assert "exercise 9.1 is not solved yet: running the reference solution" in out
    assert "movie  hits" in out and "B     4" in out  # the bare `table` expression, shown
    assert "'the end'" in out
    figures = list((tmp_path / "figures").glob("*.png"))
    assert len(figures) == 1 and f"[figure saved: {figures[0]}]" in out


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

def test_check_uses_a_running_worker_and_gets_the_same_verdicts(clone):
    from recsys_course.tooling.grading import warm_worker as worker

    env = env_for(clone, COURSE_WORKER_PRELOAD="pytest,pandas")
    server = subprocess.Popen([sys.executable, "-m", "recsys_course.tooling.grading.warm_worker", str(clone)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not worker.is_running(clone):
            assert server.poll() is None and time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.2)
        write_exercise(clone, "0.1", "def sparsity(ratings):\n    return 'half'\n")
        code, out = course(clone, "check", "0.1")
        assert code == 1 and "contract violation" in out
        answer = worker.submit(clone, ["--version"], dict(os.environ), str(clone), 60)
        assert answer is not None and answer["returncode"] == 0 and "pytest" in answer["output"]
    finally:
        server.terminate()
        server.wait(30)
    assert not worker.socket_path(clone).exists(), "the worker removes its socket when it stops"
