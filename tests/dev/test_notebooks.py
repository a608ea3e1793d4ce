"""The lessons as notebooks: generated from the percent-format sources, valid, runnable end to
end, set up by a first cell that does nothing inside a clone, and checked from the notebook
with the same tests and message as ``course check``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from recsys_course.paths import SRC_DIR
from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.site import repository
from recsys_course.tooling.site.execute import Job, LessonExecutionError, Sharing, execute_many, kernel_log
from recsys_course.tooling.site.notebooks import CHECK_TAG, SETUP_TAG, lesson_notebook, setup_cell, write

CATALOG = load_catalog()
ROOT = CATALOG.root
REPO = repository.Repository("https://github.com/someone/recsys-fork", "0123456789abcdef0123456789abcdef01234567")


def notebook_of(lesson_id: str, *, learner: bool) -> nbformat.NotebookNode:
    lesson = CATALOG.lesson(lesson_id)
    source = (ROOT / "solutions" / lesson.filename).read_text(encoding="utf-8")
    return lesson_notebook(source, lesson, REPO, learner=learner)


@pytest.mark.parametrize("lesson_id", [l.id for l in CATALOG.lessons])
def test_every_lesson_has_two_valid_notebooks_with_a_check_after_each_exercise(lesson_id):
    lesson = CATALOG.lesson(lesson_id)
    for learner in (True, False):
        notebook = nbformat.reads(write(notebook_of(lesson_id, learner=learner)), as_version=4)
        nbformat.validate(notebook)
        first = notebook.cells[0]
        assert first.cell_type == "code" and SETUP_TAG in first.metadata["tags"]
        assert REPO.revision in first.source and REPO.url in first.source
        exercises = [c for c in notebook.cells if c.metadata.get("exercise")]
        assert sorted(str(c.metadata["exercise"]) for c in exercises) == sorted(e.id for e in lesson.exercises)
        for cell in exercises:
            after = notebook.cells[notebook.cells.index(cell) + 1]
            assert CHECK_TAG in after.metadata["tags"]
            assert f'check("{cell.metadata["exercise"]}")' in after.source
            assert ("NotImplementedError" in cell.source) == learner, "stubs for learners, solutions otherwise"
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    assert write(notebook_of(lesson_id, learner=True)) == write(notebook_of(lesson_id, learner=True)), (
        "the same source and revision must give the same file"
    )


# Run inside a clone: every way of starting a process, opening a connection or moving
# elsewhere is replaced by one that records the attempt, then the set-up cell runs.
WATCHED = r"""
import json, os, socket, subprocess, sys
attempts = []
def record(name):
    def refuse(*args, **kwargs):
        command = args[0] if args and isinstance(args[0], list) else repr(args)[:200]
        attempts.append([name, command])
        raise RuntimeError(f"the set-up cell called {name}")
    return refuse
subprocess.run = record("subprocess.run")
subprocess.Popen = record("subprocess.Popen")
os.system = record("os.system")
os.chdir = record("os.chdir")
socket.socket.connect = record("socket.connect")
socket.create_connection = record("socket.create_connection")
error = None
try:
    exec(compile(open(sys.argv[1]).read(), "setup-cell", "exec"), {"__name__": "__main__"})
except Exception as caught:
    error = repr(caught)
module = sys.modules.get("recsys_course")
print(json.dumps({"attempts": attempts, "error": error, "module": getattr(module, "__file__", None)}))
"""


def run_setup_cell(tmp_path: Path, cwd: Path, env: dict, python_flags: tuple = ()) -> dict:
    cell = tmp_path / "setup_cell.py"
    cell.write_text(setup_cell(REPO))
    done = subprocess.run(
        [sys.executable, *python_flags, "-c", WATCHED, str(cell)], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_cell_is_a_no_op_inside_the_repository(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR), "COURSE_DATA": "synthetic"}
    facts = run_setup_cell(tmp_path, ROOT / "lessons", env)
    assert facts["error"] is None
    assert facts["attempts"] == [], "inside a clone the cell must install nothing and open no connection"
    assert Path(facts["module"]).resolve().is_relative_to(SRC_DIR.resolve()), "it imports the installed package"
    assert not (ROOT / "lessons" / "recsys-course").exists()


def test_the_first_cell_fetches_and_installs_the_course_at_its_revision_elsewhere(tmp_path):
    """Where ``recsys_course`` is not importable (-S: no site-packages, as on a machine
    without the course), the cell fetches exactly this revision and pip-installs the clone."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COURSE_ROOT")}
    facts = run_setup_cell(tmp_path, tmp_path, env, python_flags=("-S",))
    calls = [command for name, command in facts["attempts"] if name == "subprocess.run"]
    assert calls[0] == ["git", "init", "--quiet", str(tmp_path / "recsys-course")], facts
    assert "subprocess.run" in facts["error"], "the refused git call stops the cell"
    # Let git "succeed" to see the rest: fetch of the revision, checkout, pip install of the clone.
    script = tmp_path / "lenient.py"
    script.write_text(WATCHED.replace('raise RuntimeError(f"the set-up cell called {name}")', "return None"))
    cell = tmp_path / "setup_cell.py"
    done = subprocess.run([sys.executable, "-S", str(script), str(cell)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    commands = [command for name, command in facts["attempts"] if name == "subprocess.run"]
    clone = str(tmp_path / "recsys-course")
    assert commands[1] == ["git", "-C", clone, "fetch", "--quiet", "--depth=1", REPO.url, REPO.revision]
    assert commands[2] == ["git", "-C", clone, "checkout", "--quiet", "FETCH_HEAD"]
    assert commands[3][1:] == ["-m", "pip", "install", "--quiet", clone]
    assert "recsys_course" in (facts["error"] or ""), "nothing was really installed, so the import fails"


def course_copy(tmp_path: Path, lesson_id: str) -> Path:
    """A course root with one lesson's definition and graded tests, so checks run from a
    notebook record their results there, not in the developer's clone."""
    lesson = CATALOG.lesson(lesson_id)
    root = tmp_path / "course"
    (root / "solutions").mkdir(parents=True)
    (root / "tests").mkdir()
    for suffix in (".py", ".yml"):
        shutil.copy(ROOT / "solutions" / f"{lesson.slug}{suffix}", root / "solutions")
    for name in ("conftest.py", f"test_lesson_{lesson.id}.py"):
        shutil.copy(ROOT / "tests" / name, root / "tests")
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def test_lesson_00_notebook_runs_end_to_end_and_checks_from_the_notebook(tmp_path):
    """The reference notebook of lesson 00 runs top to bottom on synthetic data; each check
    cell prints ``course check``'s passing line; then the learner's stub of 0.1, run in the
    same kernel, makes the next check fail with the stub's message."""
    from nbclient import NotebookClient

    root = course_copy(tmp_path, "00")
    notebook = notebook_of("00", learner=False)
    learner = notebook_of("00", learner=True)
    stub = next(c for c in learner.cells if c.metadata.get("exercise") == "0.1")
    check_cell = learner.cells[learner.cells.index(stub) + 1]
    notebook.cells += [nbformat.v4.new_code_cell(stub.source), nbformat.v4.new_code_cell(check_cell.source)]
    # COURSE_WORKER=off: the checks would otherwise leave a warm worker behind for this
    # temporary copy, outliving the test (make test sets it; a bare pytest run does not).
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR), "COURSE_DATA": "synthetic", "COURSE_ROOT": str(root),
           "MPLBACKEND": "Agg", "COURSE_WORKER": "off"}
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env, transport_encryption="auto")
    checks = [c for c in notebook.cells if CHECK_TAG in c.metadata.get("tags", [])]
    lesson = CATALOG.lesson("00")
    for cell, exercise in zip(checks, lesson.exercises):
        text = outputs_text(cell)
        assert f"✓ {exercise.id} {exercise.title}: {exercise.points}/{exercise.points} points" in text, text
    failing = outputs_text(notebook.cells[-1])
    assert "✗ 0.1" in failing and "not solved yet" in failing, failing
    state = json.loads((root / ".course" / "state.json").read_text())
    assert "0.1" in json.dumps(state), "a check from a notebook is recorded like `course check`"


def test_the_check_refuses_all_and_a_missing_notebook_context():
    from recsys_course.errors import CourseError
    from recsys_course.tooling.notebook import check, run_check

    with pytest.raises(CourseError, match="one lesson"):
        run_check("all", {})
    with pytest.raises(CourseError, match="course check 0.1"):
        check("0.1")  # not in a notebook kernel


def test_repository_address_comes_from_the_environment_a_fork_runs_in(tmp_path):
    configured = "https://github.com/recsys-course/recsys-course"
    actions = {"GITHUB_REPOSITORY": "Ada/recsys-fork", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_SHA": "abc"}
    repo = repository.from_environment(configured, tmp_path, actions)
    assert (repo.url, repo.revision, repo.name) == ("https://github.com/Ada/recsys-fork", "abc", "Ada/recsys-fork")
    assert repository.site_url(repo, None, actions) == "https://ada.github.io/recsys-fork/"
    assert repository.site_url(repo, None, {**actions, "COURSE_SITE_URL": "https://course.example.org"}) == (
        "https://course.example.org/"
    )
    assert repo.colab("lessons/00_introduction.ipynb") == (
        "https://colab.research.google.com/github/Ada/recsys-fork/blob/notebooks/lessons/00_introduction.ipynb"
    )
    local = repository.from_environment(configured, tmp_path, {"COURSE_REPO_URL": "https://github.com/me/c.git/"})
    assert (local.url, local.revision) == ("https://github.com/me/c", "main"), "no git checkout: the branch"
    assert repository.site_url(local, "https://x.org/y", {}) == "https://x.org/y/"
    plain = repository.from_environment(configured, tmp_path, {})
    assert plain.url == configured and repository.site_url(plain, None, {}) is None
    other = repository.Repository("https://gitlab.com/me/course", "main")
    assert other.colab("lessons/x.ipynb") is None and other.pages_url() is None
    assert repository.Repository("https://github.com/Me/me.github.io", "x").pages_url() == "https://me.github.io/"


def test_sharing_follows_course_site_jobs():
    assert Sharing.choose("1", 2) == Sharing(1, None)
    assert Sharing.choose("2", 2) == Sharing(2, 1)
    assert Sharing.choose("2", 8) == Sharing(2, 4)
    assert Sharing.choose("", 1) == Sharing(1, None)
    assert Sharing.choose("", 2, lessons=1) == Sharing(1, None), "a lone lesson gets every core"
    with pytest.raises(ValueError, match="COURSE_SITE_JOBS"):
        Sharing.choose("two", 2)


def test_lessons_execute_at_the_same_time_with_their_thread_limit_and_a_failure_names_its_lesson(tmp_path):
    """Each of two lessons waits for a file the other writes: run one after the other, the
    first would give up after 60 s and fail; at the same time both finish."""
    def waiting(me: str, other: str) -> str:
        return (
            "# %%\nimport os, pathlib, time\n"
            f"pathlib.Path({str(tmp_path / me)!r}).touch()\n"
            f"deadline = time.time() + 60\n"
            f"while not pathlib.Path({str(tmp_path / other)!r}).exists():\n"
            "    assert time.time() < deadline, 'the other lesson never ran alongside'\n"
            "    time.sleep(0.1)\n"
            "print(os.environ['OMP_NUM_THREADS'], os.environ['TF_NUM_INTRAOP_THREADS'])\n"
        )

    jobs = [Job("a", waiting("a", "b"), "k1"), Job("b", waiting("b", "a"), "k2")]
    done = execute_many(jobs, cwd=tmp_path, cache_dir=tmp_path / "cache", data_spec="synthetic",
                        sharing=Sharing(2, 1))
    for name in ("a", "b"):
        assert done[name].cells[0].outputs[0].text.split() == ["1", "1"]
        assert done[name].metadata["course"]["run"]["alongside"] == 2
        assert kernel_log(tmp_path / "cache", name).exists(), "the kernel's own output has a file"
    broken = [Job("fine", "# %%\nprint('ok')\n", "k3"), Job("broken_lesson", "# %%\n1 / 0\n", "k4")]
    with pytest.raises(LessonExecutionError, match=r"(?s)broken_lesson.*ZeroDivisionError"):
        execute_many(broken, cwd=tmp_path, cache_dir=tmp_path / "cache", data_spec="synthetic",
                     sharing=Sharing(2, 1))
