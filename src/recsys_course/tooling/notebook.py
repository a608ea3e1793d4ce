"""``course check`` from a notebook: ``check("2.1")`` grades the code the notebook ran.

The generated notebooks (:mod:`recsys_course.tooling.site.notebooks`) call it after each
exercise cell. A notebook's code lives in its kernel, not in ``lessons/``, so the check
writes a temporary lesson file: the learner's version of the lesson, with each exercise
cell replaced by the notebook cell that last defined the exercise's function or class (the
kernel keeps every cell's source). It then grades that file with the very function behind
``course check`` (:func:`recsys_course.tooling.commands.learner.check`): same tests, same
separate pytest process, same message, and the result is recorded as ``course progress``
shows it. An exercise whose cell has not been run yet is graded as its stub ("not solved
yet"); like ``course check``, grading runs the lesson's ``setup`` cells from the course's
own source and never the notebook's other cells.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import tempfile
from pathlib import Path
from types import CodeType

from recsys_course.errors import CourseError, UnknownTarget
from recsys_course.tooling.catalog import Catalog, Lesson, load_catalog
from recsys_course.tooling.commands import learner
from recsys_course.tooling.lessons import CELL_HEADER, EXERCISE_META, make_stub, replace_exercise_cell


def check(target: str, namespace: dict | None = None) -> None:
    """Check an exercise (``"2.1"``) or a whole lesson (``"02"``) with the code this
    notebook ran, printing what ``course check`` prints. Returns nothing, so the notebook
    shows only the report; :func:`run_check` returns the exit code.

    ``namespace`` is where the exercise functions are defined: by default the globals of
    the caller, which in a notebook are the notebook's.
    """
    if namespace is None:
        if "IPython" not in sys.modules or sys.modules["IPython"].get_ipython() is None:
            raise CourseError(
                f"check() grades a notebook's cells; in a script or an editor run `course check {target}`"
            )
        namespace = sys._getframe(1).f_globals
    run_check(target, namespace)


def run_check(target: str, namespace: dict) -> int:
    """Grade ``target`` as :func:`check` does and return ``course check``'s exit code."""
    catalog = load_catalog()
    if target == "all":
        raise UnknownTarget('a notebook holds one lesson: check one exercise ("2.1") or this lesson ("02")')
    lessons, _ = learner.resolve_target(catalog, target)
    with tempfile.TemporaryDirectory(prefix="course-notebook-") as folder:
        for lesson in lessons:
            (Path(folder) / lesson.filename).write_text(lesson_file(catalog, lesson, namespace), encoding="utf-8")
        return learner.check(target, lessons_dir=Path(folder))


def lesson_file(catalog: Catalog, lesson: Lesson, namespace: dict) -> str:
    """The learner's version of ``lesson`` with each exercise cell the notebook ran in place
    of its stub."""
    solution = (catalog.root / "solutions" / lesson.filename).read_text(encoding="utf-8")
    text = make_stub(solution, lesson)
    headers = _exercise_headers(text)
    for exercise in lesson.exercises:
        cell = defining_cell(namespace.get(exercise.function))
        if cell is not None:
            text = replace_exercise_cell(text, f"{headers[exercise.id]}\n{cell}", exercise.id)
    return text


def defining_cell(obj: object) -> str | None:
    """The source of the notebook cell that defined ``obj`` (a function or a class), as the
    kernel last ran it; None when ``obj`` is missing or was not defined by a notebook cell."""
    if getattr(obj, "__module__", None) != "__main__":  # missing, or imported from a module
        return None
    code = _code_of(obj)
    if code is None:
        return None
    lines = linecache.getlines(code.co_filename)  # IPython keeps each cell's source there
    return "".join(lines).rstrip("\n") if lines else None


def _code_of(obj: object) -> CodeType | None:
    if obj is None:
        return None
    if inspect.isclass(obj):  # a class: the code of any function its body defines
        for member in vars(obj).values():
            function = getattr(member, "fget", None) or getattr(member, "__func__", None) or member
            if inspect.isfunction(function):
                return inspect.unwrap(function).__code__
        return None
    function = inspect.unwrap(obj) if callable(obj) else None
    return getattr(function, "__code__", None)


def _exercise_headers(text: str) -> dict[str, str]:
    """Each exercise id's ``# %% ...`` header line in a lesson file."""
    headers = {}
    for line in text.splitlines():
        match = CELL_HEADER.match(line)
        meta = EXERCISE_META.search(match["rest"]) if match else None
        if meta:
            headers[meta["id"]] = line
    return headers
