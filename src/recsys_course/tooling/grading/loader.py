"""Loading a lesson for grading and benchmarks: only its ``setup`` and ``exercise`` cells run,
each contained (:mod:`recsys_course.tooling.grading.guard`), into a fresh module."""

from __future__ import annotations

import ast
import importlib
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from recsys_course.tooling.grading.guard import contained
from recsys_course.tooling.lessons import GRADED_TAGS, parse_cells


# Imported by every lesson for plots that grading never draws: loaded only when used.
DEFERRED = ("matplotlib.pyplot",)


class _DeferredModule(ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet; the first attribute use
    imports the real one (which then replaces it) and answers from it."""

    def __getattr__(self, attribute: str):
        if attribute.startswith("__") and attribute.endswith("__"):
            # Tools that walk sys.modules (inspect, when pytest formats a failure) probe
            # dunders such as __file__: not a use of the module, so do not import it.
            raise AttributeError(attribute)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attribute)


def defer_import(name: str) -> None:
    """Make ``import name`` free until the module is used. Setup cells import pyplot for
    plots that grading never draws, and it costs about 0.3 s of a check meant to take under
    two seconds (and 0.6 s of CPU per sandbox). (``importlib.util.LazyLoader`` does not help
    here: the import statement itself reads the module's ``__spec__``, which loads it.)"""
    if name not in sys.modules:
        sys.modules[name] = _DeferredModule(name)


class LessonLoadError(RuntimeError):
    """A lesson's setup cells failed to run, so none of its exercises can be graded."""


class ExerciseCellError(AttributeError):
    """A name a test needs is missing because the exercise cell defining it failed to run.

    The message leads with the learner's real error (file, line, exception), not with the
    missing name. It is an ``AttributeError`` so ``hasattr`` and ``getattr`` defaults work.
    """


def describe_cell_error(error: BaseException, path: Path) -> str:
    """``file, line N: SyntaxError: message`` for the error a cell of ``path`` raised."""
    line = None
    if isinstance(error, SyntaxError) and error.filename == str(path):
        line = error.lineno
        text = f"{type(error).__name__}: {error.msg}"
    else:
        text = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()[-1]
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(path)]
        line = frames[-1].lineno if frames else None
    return f"{path.name}, line {line}: {text}" if line else f"{path.name}: {text}"


def graded_cells(source: str) -> list:
    """The cells grading runs (``setup`` and ``exercise``), in order."""
    return [c for c in parse_cells(source) if c.kind == "code" and c.tags & GRADED_TAGS]


def imported_modules(cells, *, submodules: bool = False) -> list[str]:
    """The absolute module names the ``cells`` import, in order of first appearance (cells
    that do not parse are skipped). With ``submodules``, ``from a import b`` also names
    ``a.b``, which is a module when ``b`` is one (``from recsys_course import models``)."""
    names: dict[str, None] = {}
    for cell in cells:
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update((alias.name, None) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names[node.module] = None
                if submodules:
                    names.update((f"{node.module}.{alias.name}", None) for alias in node.names)
    return list(names)


def cell_label(cell) -> str:
    """``exercise 1.2`` or ``setup cell``: how notes and errors name a graded cell."""
    return f"exercise {cell.exercise}" if cell.exercise else "setup cell"


def load_lesson(
    path: Path,
    module_name: str = "lesson",
    cell_timeout: float | None = 60.0,
    exercises: set[str] | None = None,
    *,
    on_cell: Callable[[int, str], None] | None = None,
    skip: dict[int, str] | None = None,
    interrupts_are_errors: bool = False,
    cpu_clock: bool = False,
) -> ModuleType:
    """Execute only the ``setup`` and ``exercise`` cells of ``path`` into a fresh module.

    Each cell runs under :func:`~recsys_course.tooling.grading.guard.contained`: a call to
    ``sys.exit``/``os._exit`` or a cell running past ``cell_timeout`` seconds becomes that
    cell's error instead of ending or hanging the grader.

    With ``exercises`` (ids), loading stops after the last of those exercises' cells: the
    cells below it cannot be needed to define them, and skipping them keeps a check of an
    early NumPy exercise from importing TensorFlow for a later one.

    Tracebacks point at the real lines of ``path``. A failing setup cell raises
    :class:`LessonLoadError` (nothing in the lesson can be graded without its imports). A
    failing exercise cell is recorded in ``module.__lesson_errors__`` and the other exercises
    stay gradable; asking the module for a name that cell should have defined raises
    :class:`ExerciseCellError`, whose message starts with the cell's error and line.

    For the sandbox worker (``grading/worker.py``): ``on_cell(index, label)`` is called
    before each graded cell runs, with its position among :func:`graded_cells` (so the
    trusted side, which parses the same file, knows which cell hung or crashed the process),
    ``skip`` maps cell positions to an error recorded instead of running them, with
    ``interrupts_are_errors`` a ``KeyboardInterrupt`` raised by a cell is that cell's error
    (nobody can press Ctrl-C in a sandbox), and with ``cpu_clock`` the cell time limit counts
    the process's CPU time, so that a busy machine does not change the verdict.
    """
    path = Path(path)
    cells = graded_cells(path.read_text(encoding="utf-8"))
    if exercises:
        last = max((i for i, c in enumerate(cells) if c.exercise in exercises), default=None)
        if last is not None:
            cells = cells[: last + 1]

    module = ModuleType(module_name)
    module.__file__ = str(path)
    errors: dict[str, str] = {}
    module.__dict__["__lesson_errors__"] = errors

    def missing(name: str):
        if not errors:  # worded once, with the closest names, for in-process and sandbox alike
            from recsys_course.tooling.grading.messages import missing_definition

            raise AttributeError(missing_definition(path.name, name, module.__dict__))
        causes = "; ".join(f"{err} ({cell} did not run)" for cell, err in errors.items())
        raise ExerciseCellError(f"{causes}, so {name!r} is not defined")

    module.__dict__["__getattr__"] = missing
    # Registered while it loads, as a real import would be: dataclasses, pickling and
    # typing look classes' modules up in sys.modules.
    sys.modules[module_name] = module
    for index, cell in enumerate(cells):
        label = cell_label(cell)
        if skip and index in skip:
            if "setup" in cell.tags:
                raise LessonLoadError(f"a setup cell failed: {skip[index]}")
            errors[label] = skip[index]
            continue
        if on_cell is not None:
            on_cell(index, label)
        try:
            code = compile("\n" * (cell.first_line - 1) + cell.source, str(path), "exec")
            with contained(cell_timeout, f"the {label} of {path.name}", cpu=cpu_clock):
                exec(code, module.__dict__)  # running the lesson is the point
        except KeyboardInterrupt:
            if not interrupts_are_errors:
                raise
            errors[label] = "KeyboardInterrupt raised while the cell ran"
        except BaseException as error:  # reported, never swallowed
            summary = describe_cell_error(error, path)
            if "setup" in cell.tags:
                raise LessonLoadError(f"a setup cell failed: {summary}") from error
            errors[label] = summary
    return module
