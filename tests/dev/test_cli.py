"""The learner's loop as a learner meets it: check fails with a clear message, hints get more
explicit, a fix makes check pass and progress show the points; reset brings the stub back."""

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


def course(clone, *args):
    env = {"COURSE_ROOT": str(clone), "COURSE_DATA": "synthetic", "PATH": "/usr/bin:/bin",
           # the support package under test, not whichever copy is installed
           "PYTHONPATH": str(Path(recsys_course.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "recsys_course.tooling.cli", *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


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


def test_check_a_whole_lesson_and_unknown_ids(clone):
    for exercise in LESSON.exercises:
        solve(clone, exercise.id)
    code, out = course(clone, "check", "00")
    assert code == 0 and out.count("✓") == len(LESSON.exercises)
    assert f"lesson 00 subtotal: {LESSON.points}/{LESSON.points} points" in out
    code, out = course(clone, "hint", "9.9")
    assert code == 2 and "no exercise '9.9'" in out


def test_sync_check_detects_drift(clone):
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
    assert code == 3 and "0.2" in out and LESSON.filename in out and "--force" in out
    assert lesson_file.read_text() == mine, "the learner's file is untouched"
    code, out = course(clone, "sync", "--force")
    assert code == 0 and "previous version kept in" in out and "## 1. Changed" in lesson_file.read_text()
    assert any(b.read_text() == mine for b in (clone / ".course" / "backups").glob("*.py"))


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
