"""Jupyter notebooks of a lesson, generated from its percent-format source at site build time.

Two per lesson: the learner's (exercise bodies are the stubs of ``lessons/``) and the
reference (the solutions). Both are the lesson's cells, without outputs, plus:

* a first cell, :func:`setup_cell`, that does nothing but import the course package where
  it is installed (a clone with its environment), and elsewhere (Colab, a bare Jupyter)
  fetches the course at the revision the notebook was built from and installs it;
* after each exercise cell, a cell that checks that exercise with the course's tests
  (:func:`recsys_course.tooling.notebook.check`, what ``course check`` does in a clone).

Notebooks are build outputs, never committed to a source branch and never edited by hand:
the lesson's ``.py`` stays the one source. Cell ids are derived from the cell's position,
so the same source and revision give the same file.
"""

from __future__ import annotations

import jupytext
import nbformat

from recsys_course.tooling.catalog import Lesson
from recsys_course.tooling.lessons import make_stub
from recsys_course.tooling.site.repository import Repository

CLONE_FOLDER = "recsys-course"  # where the set-up cell puts the course when it is not installed
SETUP_TAG = "course-setup"
CHECK_TAG = "course-check"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

SETUP = '''\
# Set-up (generated). In a clone of the course with its environment this cell only imports
# the course package. Anywhere else (Google Colab, a Jupyter without the course) it fetches
# the course at the revision this notebook was built from and installs it: a few minutes,
# once per session. Data: MovieLens 100K from TFDS when online, synthetic data otherwise;
# set COURSE_DATA (e.g. os.environ["COURSE_DATA"] = "synthetic") before running it to choose.
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

COURSE_REPOSITORY = {repository!r}
COURSE_REVISION = {revision!r}
COURSE_CLONE = os.path.abspath({folder!r})

if importlib.util.find_spec("recsys_course") is None:
    if not os.path.isdir(os.path.join(COURSE_CLONE, "solutions")):
        for command in (
            ["git", "init", "--quiet", COURSE_CLONE],
            ["git", "-C", COURSE_CLONE, "fetch", "--quiet", "--depth=1", COURSE_REPOSITORY, COURSE_REVISION],
            ["git", "-C", COURSE_CLONE, "checkout", "--quiet", "FETCH_HEAD"],
        ):
            subprocess.run(command, check=True)
    loaded = {{name: importlib.metadata.version(name) for name in ("numpy", "pandas") if name in sys.modules}}
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", COURSE_CLONE], check=True)
    importlib.invalidate_caches()
    if any(importlib.metadata.version(name) != version for name, version in loaded.items()):
        print("The install replaced a library this session had loaded: restart the session, run this cell again.")
if os.path.isdir(os.path.join(COURSE_CLONE, "solutions")):
    os.chdir(COURSE_CLONE)  # lessons and checks run from the course's root, as in a clone

import recsys_course  # first: it sets TF_USE_LEGACY_KERAS before TensorFlow is imported
from recsys_course.data import resolve_source

print(f"Course package ready; data source: COURSE_DATA={{resolve_source()}}")
'''

CHECK = '''\
# Check exercise {id} with the course's tests (in a clone: `course check {id}`).
from recsys_course.tooling.notebook import check

check("{id}")
'''


def setup_cell(repository: Repository | None) -> str:
    """The first cell's source: a no-op where ``recsys_course`` imports, an install elsewhere.

    Without a known repository (a build with no ``repo_url``) the cell can only import.
    """
    if repository is None:
        return "import recsys_course  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported\n"
    return SETUP.format(repository=repository.url, revision=repository.revision, folder=CLONE_FOLDER)


def lesson_notebook(
    solution_source: str, lesson: Lesson, repository: Repository | None, *, learner: bool,
) -> nbformat.NotebookNode:
    """The learner's (``learner=True``) or the reference notebook of ``lesson``, validated."""
    source = make_stub(solution_source, lesson) if learner else solution_source
    lesson_cells = jupytext.reads(source, fmt="py:percent").cells
    cells = [nbformat.v4.new_code_cell(setup_cell(repository), metadata={"tags": [SETUP_TAG]})]
    for cell in lesson_cells:
        cells.append(cell)
        exercise = cell.metadata.get("exercise") if cell.cell_type == "code" else None
        if exercise:
            cells.append(nbformat.v4.new_code_cell(CHECK.format(id=exercise), metadata={"tags": [CHECK_TAG]}))
    for index, cell in enumerate(cells):
        cell.id = f"cell-{index}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python"},
        "colab": {"name": f"{lesson.slug}.ipynb", "provenance": []},
        "course": {
            "lesson": lesson.id,
            "version": "learner" if learner else "solutions",
            "repository": repository.url if repository else None,
            "revision": repository.revision if repository else None,
        },
    }
    nbformat.validate(notebook)
    return notebook


def notebook_paths(lesson: Lesson) -> dict[str, str]:
    """Where a lesson's notebooks go, relative to the site's ``notebooks/`` folder (which is
    also the root of the notebooks branch): ``lessons/`` and ``solutions/``, as in a clone."""
    return {"learner": f"lessons/{lesson.slug}.ipynb", "solutions": f"solutions/{lesson.slug}.ipynb"}


def write(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"
