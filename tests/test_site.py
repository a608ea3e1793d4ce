"""The site renderer: exercise cells become task boxes, outputs become Markdown, and a
strict build fails on a failing cell or a broken link."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from recsys_course.catalog import Exercise, Lesson, load_catalog
from recsys_course.lessons import make_stub
from recsys_course.site.markdown import to_markdown

ROOT = load_catalog().root
LESSON = Lesson(
    "09", "09_test", "Test", 1,
    (Exercise("9.1", "Double it", 2, "double", ("gentle", "explicit"), "09"),),
)
SOURCE = '''# %% [markdown]
# # Lesson 09

# %% tags=["exercise"] exercise="9.1"
def double(x):
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION

# %%
print("I0000 00:00:1.1 123 port.cc:153] oneDNN noise")
print("result", double(2))
'''


def executed_notebook():
    nb = jupytext.reads(SOURCE, fmt="py:percent")
    nb.cells[2].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="I0000 00:00:1.1 123 port.cc:153] oneDNN noise\nresult 4\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="}),
    ]
    return nb


def test_exercise_cell_becomes_a_task_box_with_hints_and_folded_solution():
    stubs = jupytext.reads(make_stub(SOURCE, LESSON), fmt="py:percent")
    page = to_markdown(LESSON, executed_notebook(), stubs, "Synthetic data")
    md = page.markdown
    assert '!!! question "Exercise 9.1 · Double it · 2 points"' in md
    assert "`course check 9.1`" in md and "NotImplementedError" in md
    assert '??? tip "Hint 1 of 2"' in md and '??? tip "Hint 2 of 2"' in md
    solution = md.split('??? success "Solution"')[1]
    assert "return 2 * x" in solution and "BEGIN SOLUTION" not in md
    assert md.index("Hint 1 of 2") < md.index("Hint 2 of 2") < md.index("Solution")
    assert "Synthetic data" in md.split("Exercise 9.1")[0], "the dataset banner comes first"


def test_outputs_keep_results_drop_log_noise_and_extract_figures():
    stubs = jupytext.reads(make_stub(SOURCE, LESSON), fmt="py:percent")
    page = to_markdown(LESSON, executed_notebook(), stubs, "x")
    assert "```text\nresult 4\n```" in page.markdown, "the log line must be dropped from the output"
    (name,) = page.figures
    assert f"]({name})" in page.markdown and page.figures[name].startswith(b"\x89PNG")


def build_copy(tmp_path: Path, solution: str, extra_page: str = "") -> subprocess.CompletedProcess:
    """Build a minimal copy of the site (lesson 00 only) with ``mkdocs build --strict``."""
    for name in ("mkdocs.yml",):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    hook = tmp_path / "src" / "recsys_course" / "site"
    hook.mkdir(parents=True)
    shutil.copy(ROOT / "src" / "recsys_course" / "site" / "hook.py", hook / "hook.py")
    (tmp_path / "solutions").mkdir()
    shutil.copy(ROOT / "solutions" / "00_introduction.yml", tmp_path / "solutions")
    (tmp_path / "solutions" / "00_introduction.py").write_text(solution)
    if extra_page:
        (tmp_path / "docs" / "learners.md").write_text(extra_page)
    env = {**os.environ, "COURSE_DATA": "synthetic", "COURSE_ROOT": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def lesson00():
    return (ROOT / "solutions" / "00_introduction.py").read_text()


def test_strict_build_fails_on_a_failing_cell(tmp_path, lesson00):
    broken = lesson00.replace('print("Dataset:", data.summary())', 'print("Dataset:", data.summary())\n1 / 0')
    done = build_copy(tmp_path, broken)
    assert done.returncode != 0
    assert "ZeroDivisionError" in done.stdout + done.stderr


def test_strict_build_fails_on_a_broken_link(tmp_path, lesson00):
    done = build_copy(tmp_path, lesson00, "# Learners\n\nSee [the missing page](nowhere.md).\n")
    assert done.returncode != 0
    assert "nowhere.md" in done.stdout + done.stderr
