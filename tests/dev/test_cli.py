"""The learner's loop as a learner meets it: check fails with a clear message, hints get more
explicit, a fix makes check pass and progress show the points; reset brings the stub back;
no command loses work (backups, sync, prompts without a terminal)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import recsys_course
from recsys_course.tooling.catalog import load_catalog

CATALOG = load_catalog()
LESSON = CATALOG.lesson("00")


@pytest.fixture()
def clone(tmp_path):
    """A learner's clone with lesson 00 only (fast), as `course` sees it via COURSE_ROOT."""
    for tree in ("solutions", "lessons"):
        (tmp_path / tree).mkdir()
        for suffix in (".py", ".yml") if tree == "solutions" else (".py",):
            shutil.copy(CATALOG.root / tree / f"{LESSON.slug}{suffix}", tmp_path / tree)
    (tmp_path / "tests").mkdir()
    for name in ("conftest.py", "test_lesson_00.py"):
        shutil.copy(CATALOG.root / "tests" / name, tmp_path / "tests")
    shutil.copy(CATALOG.root / "pyproject.toml", tmp_path)
    return tmp_path


def course(clone, *args, stdin=None, worker="off"):
    env = {"COURSE_ROOT": str(clone), "COURSE_DATA": "synthetic", "PATH": "/usr/bin:/bin",
           # the support package under test, not whichever copy is installed
           "PYTHONPATH": str(Path(recsys_course.__file__).resolve().parents[1]),
           # checks run cold here: a worker left behind would outlive the test
           "COURSE_WORKER": worker}
    done = subprocess.run([sys.executable, "-m", "recsys_course.tooling.cli", *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300, stdin=stdin)
    return done.returncode, done.stdout + done.stderr


def git(clone, *args):
    subprocess.run(["git", "-C", str(clone), *args], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(clone)})


def solve(clone, exercise_id):
    """Paste the reference solution of one exercise into the learner's file."""
    from recsys_course.tooling.lessons import replace_exercise_cell

    lesson_file = clone / "lessons" / LESSON.filename
    solution = (clone / "solutions" / LESSON.filename).read_text()
    lesson_file.write_text(replace_exercise_cell(lesson_file.read_text(), solution, exercise_id))


def test_check_hint_fix_progress_reset(clone):
    code, out = course(clone, "check", "0.1")
    assert code == 1 and "0/2 points" in out and "course hint 0.1" in out
    assert out.count("not solved yet") == 1, "a stub is reported once, not once per test"

    hints = [course(clone, "hint", "0.1")[1] for _ in range(4)]
    ex = CATALOG.exercise("0.1")
    assert [f"hint {i} of 3" in h for i, h in zip((1, 2, 3, 3), hints)] == [True] * 4
    assert ex.hints[0] in hints[0] and ex.hints[2] in hints[2]
    assert ["(the last hint)" in h for h in hints] == [False, False, True, True], "the last tier says so"

    solve(clone, "0.1")
    code, out = course(clone, "check", "0.1")
    assert code == 0 and "2/2 points" in out
    code, out = course(clone, "progress")
    assert re.search(r"0\.1\s+2/2\s+passed", out) and "total: 2/13" in out

    code, out = course(clone, "reset", "0.1", "--yes")
    assert code == 0 and ".course/backups" in out
    assert re.search(r"0\.1\s+0/2\s+not checked", course(clone, "progress")[1]), "reset clears the points"
    assert course(clone, "check", "0.1")[0] == 1
    backups = list((clone / ".course" / "backups").glob("*.py"))
    assert backups and "n_users = ratings" in backups[0].read_text(), "the backup keeps the learner's code"


@pytest.mark.fast
def test_a_stub_is_answered_without_running_the_lesson_or_its_tests(clone):
    (clone / "tests" / "test_lesson_00.py").unlink()  # a check that ran tests could not answer
    code, out = course(clone, "check", "0.3")
    assert code == 1 and "not solved yet: exercise 0.3" in out and "0/3 points" in out, out
    code, out = course(clone, "check", "00")
    assert out.count("not solved yet") == len(LESSON.exercises) and "subtotal: 0/13" in out, out
    assert re.search(r"0\.3\s+0/3\s+not solved", course(clone, "progress")[1])
    # The same check for a notebook cell: the text the command prints, and its exit code.
    script = ("import json; from recsys_course.tooling.commands.learner import check_message; "
              "print(json.dumps(check_message('0.3')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"COURSE_ROOT": str(clone), "PATH": "/usr/bin:/bin", "COURSE_WORKER": "off",
                               "PYTHONPATH": str(Path(recsys_course.__file__).resolve().parents[1])})
    code, text = json.loads(done.stdout)
    assert code == 1 and text.startswith("✗ 0.3") and "not solved yet: exercise 0.3" in text, done.stderr


def test_check_and_hint_without_an_exercise_take_the_first_one_not_passed(clone):
    code, out = course(clone, "check")
    assert code == 1 and "Checking 0.1" in out and "not solved yet: exercise 0.1" in out, out
    solve(clone, "0.1")
    assert course(clone, "check")[0] == 0  # 0.1 again: it has not passed yet
    code, out = course(clone, "check")
    assert "Checking 0.2" in out, out
    code, out = course(clone, "hint")
    assert code == 0 and "Exercise 0.2" in out and "hint 1 of" in out, out


def test_progress_says_which_exercises_changed_since_their_check(clone):
    solve(clone, "0.1")
    assert course(clone, "check", "0.1")[0] == 0
    assert "changed since" not in course(clone, "progress")[1]
    path = clone / "lessons" / LESSON.filename
    path.write_text(path.read_text().replace("def sparsity(", "# trying something\ndef sparsity(", 1))
    out = course(clone, "progress")[1]
    assert re.search(r"0\.1\s+2/2\s+passed.*changed since this check", out), out
    assert "from your last check" in out


@pytest.mark.fast
def test_two_resets_in_the_same_second_keep_two_backups(clone, monkeypatch):
    from recsys_course.tooling import lessons

    monkeypatch.setattr(lessons.time, "strftime", lambda fmt: "20250101-120000")  # one second
    first = lessons.backup_lesson(clone, LESSON, "first")
    second = lessons.backup_lesson(clone, LESSON, "second")
    assert first != second and first.read_text() == "first" and second.read_text() == "second"

    solve(clone, "0.1")
    solve(clone, "0.2")
    assert course(clone, "reset", "0.1", "--yes")[0] == 0
    assert course(clone, "reset", "0.2", "--yes")[0] == 0  # within the same second, most likely
    kept = [b.read_text() for b in (clone / ".course" / "backups").glob("*.py")]
    assert any("n_users = ratings" in text for text in kept), "the 0.1 work survives the second reset"
    assert len(kept) == 4


@pytest.mark.fast
def test_a_prompt_without_a_terminal_is_a_clean_error(clone):
    solve(clone, "0.1")
    before = (clone / "lessons" / LESSON.filename).read_text()
    code, out = course(clone, "reset", "0.1", stdin=subprocess.DEVNULL)
    assert code == 3 and "Traceback" not in out and "--yes" in out, out
    assert (clone / "lessons" / LESSON.filename).read_text() == before, "nothing changed"
    code, out = course(clone, "reset", "0.2")  # still the stub: nothing to ask
    assert code == 0 and "stub already" in out


@pytest.mark.fast
def test_checking_the_solutions_leaves_no_learner_state(clone):
    code, out = course(clone, "check", "00", "--solutions", worker="on")
    assert code == 0 and f"subtotal: {LESSON.points}/{LESSON.points}" in out, out
    assert not (clone / ".course").exists(), "no state, backup or worker for a check of the solutions"


def test_check_a_whole_lesson_and_unknown_ids(clone):
    for exercise in LESSON.exercises:
        solve(clone, exercise.id)
    code, out = course(clone, "check", "00")
    assert code == 0 and out.count("✓") == len(LESSON.exercises)
    assert f"lesson 00 subtotal: {LESSON.points}/{LESSON.points} points" in out
    code, out = course(clone, "hint", "9.9")
    assert code == 2 and "no exercise '9.9'" in out


def test_sync_check_detects_drift(clone):
    git(clone, "init", "-q")  # an author's clone
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "the course as cloned")
    assert course(clone, "sync", "--check")[0] == 0
    source = clone / "solutions" / LESSON.filename
    source.write_text(source.read_text().replace("## 1. What a recommender does", "## 1. Changed"))
    code, out = course(clone, "sync", "--check")
    assert code == 1 and "out of date" in out and "learners: nothing to do" in out
    assert course(clone, "sync")[0] == 0 and course(clone, "sync", "--check")[0] == 0


def test_sync_refuses_to_overwrite_a_learners_exercises(clone):
    solve(clone, "0.2")
    lesson_file = clone / "lessons" / LESSON.filename
    mine = lesson_file.read_text()
    source = clone / "solutions" / LESSON.filename
    source.write_text(source.read_text().replace("## 1. What a recommender does", "## 1. Changed"))
    code, out = course(clone, "sync")
    assert code == 3 and "exercise 0.2 (edited)" in out and LESSON.filename in out and "--force" in out
    assert lesson_file.read_text() == mine, "the learner's file is untouched"
    code, out = course(clone, "sync", "--force")
    assert code == 0 and "previous version kept in" in out and "## 1. Changed" in lesson_file.read_text()
    assert any(b.read_text() == mine for b in (clone / ".course" / "backups").glob("*.py"))


def add_notes_cell(path):
    """A learner's own markdown cell after the first exercise; returns its header's line number."""
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if 'exercise="0.2"' in line)
    path.write_text("\n".join(lines[:at] + ["# %% [markdown]", "# My notes: sparsity is 1 - density.", ""]
                              + lines[at:]) + "\n")
    return at + 1


@pytest.mark.fast
def test_sync_counts_a_new_cell_anywhere_as_work_and_names_it(clone):
    git(clone, "init", "-q")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "the course as cloned")
    source = clone / "solutions" / LESSON.filename
    source.write_text(source.read_text().replace("## 1. What a recommender does", "## 1. Changed"))
    # An author's fresh clone: lessons/ is what the committed solution generates, so it is
    # regenerated without --force.
    assert course(clone, "sync")[0] == 0 and "## 1. Changed" in (clone / "lessons" / LESSON.filename).read_text()

    git(clone, "checkout", "-q", "--", ".")  # back to the clone as committed, then a learner's note
    lesson_file = clone / "lessons" / LESSON.filename
    line = add_notes_cell(lesson_file)
    mine = lesson_file.read_text()
    source.write_text(source.read_text().replace("## 1. What a recommender does", "## 1. Changed"))
    code, out = course(clone, "sync")
    assert code == 3 and f"a new markdown cell at line {line}" in out, out
    assert "## 1." not in out, "the author's change is not the learner's"
    assert lesson_file.read_text() == mine
    code, out = course(clone, "sync", "--force")
    assert code == 0 and any("My notes" in b.read_text() for b in (clone / ".course" / "backups").glob("*.py"))


def test_learner_help_lists_learner_commands_and_keeps_sync_for_authors(clone):
    code, out = course(clone, "--help")
    learner_part, _, rest = out.partition("instructors:")
    assert code == 0 and "check" in learner_part and "watch" in learner_part
    assert "sync" not in learner_part and "sync" in rest.split("authors and maintainers")[1]


def test_errors_a_user_can_fix_are_worded_and_bugs_are_not(clone, monkeypatch):
    code, out = course(clone, "bench", "42")
    assert code == 2 and out.startswith("error: no lesson '42'"), out
    code, out = course(clone, "data", "--data", "synthetic:huge")
    assert code == 2 and "error: Unknown synthetic size 'huge'" in out and "Traceback" not in out
    # Any other exception is a bug: the dispatcher lets it through with its traceback.
    from recsys_course.tooling import cli, quiet
    from recsys_course.tooling.commands import learner

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(learner, "cmd_progress", broken)
    monkeypatch.setattr(quiet, "quiet_environment", lambda verbose: None)  # keep this process's
    monkeypatch.setattr(quiet, "filter_stderr", lambda: None)  # environment and stderr as they are
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["progress"])
