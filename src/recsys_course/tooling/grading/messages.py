"""What a learner reads when a graded test fails: their real mistake, in one line, and the
kind of failure (:class:`~recsys_course.tooling.grading.results.Outcome`) decided here, where
the exception is still at hand, so nobody matches the sentence afterwards.

:func:`describe_failure` turns each failing test's exception into a :class:`Failure`, most
specific first:

* a stub still in place -> NOT_SOLVED, ``not solved yet``;
* an exercise cell that did not run (syntax error...) -> ERROR, file, line and error first;
* a name the lesson does not define -> ERROR, ``lesson defines no `f` (did you mean `g`?)``;
* a time limit -> TIMED_OUT, the limit, once; the exercise's later tests -> NOT_RUN;
* a test assertion -> FAILED, its message (every assertion in tests/ carries one);
* a :class:`ContractViolation` (wrong type, shape, dtype, number of returned values) -> FAILED;
* a None where the test expected a result -> FAILED, ``returned None: did you forget `return`?``;
* an exception the learner's code raised (in their file, or caught and reported by the test
  with ``pytest.fail``) -> ERROR, ``your code raised ...`` with its line;
* an exception raised by the test itself while reading the result (unpacking, indexing) ->
  FAILED, a contract violation: the result does not have the shape the docstring promised.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import sys
import textwrap
import traceback
from pathlib import Path
from types import ModuleType, TracebackType
from typing import NamedTuple

from recsys_course.tooling.grading.results import Outcome

NOT_SOLVED = re.compile(r"Exercise (?P<id>[0-9]+\.[0-9]+) \((?P<title>[^\n]*?)\): not solved yet")
KERAS_WRAPPER = "Exception encountered when calling"
# TensorFlow's op errors start with the graph node and end with an empty op name:
# "{{function_node __wrapped__ResourceGather_device_/job:...}} indices[0] = 3 ... name: ".
TF_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
TF_NAME = re.compile(r"\s+name:\s*$")
# The sentence :func:`missing_definition` writes; recognised again only when it comes back
# from a sandbox as a plain AttributeError (in-process, the error's ``obj`` says so).
MISSING_DEFINITION = re.compile(r"^\S+\.py defines no `[^`]+`")


class ContractViolation(AssertionError):
    """The learner's function returned something its docstring rules out (type, shape...)."""


class NotRun(Exception):
    """Raised instead of running a test whose exercise already ran past its time limit."""


class Failure(NamedTuple):
    kind: Outcome
    text: str


NUMPY_HEADERS = ("Not equal to tolerance", "Arrays are not", "Items are not equal")


def _exception_text(error: BaseException) -> str:
    """The exception's message in one line: without Keras's 'Exception encountered when
    calling' wrapper, and for NumPy's assertions the test's own message first, then what
    the learner's code returned against what was expected."""
    text = TF_NODE.sub("", str(error))
    lines = [TF_NAME.sub("", line.strip()) for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith(KERAS_WRAPPER):
        lines = [l for l in lines[1:] if not l.startswith(("Call arguments received", "•"))]
    if lines and lines[0].startswith(NUMPY_HEADERS):
        values = {
            l.split(":", 1)[0]: l.split(":", 1)[1].strip() for l in lines if l.startswith(("ACTUAL:", "DESIRED:"))
        }
        own = lines[1] if len(lines) > 1 and not lines[1].startswith(("Mismatch", "Max ", "ACTUAL", "x:")) else lines[0]
        if values:
            own += f" (got {values.get('ACTUAL', '?')}, expected {values.get('DESIRED', '?')})"
        return own
    return lines[0] if lines else ""


def not_solved_text(exercise_id: str, title: str) -> str:
    """What a learner reads for an exercise that is still the stub (from its tests'
    failures, or from ``course check`` comparing the cell with the stub)."""
    return (f"not solved yet: exercise {exercise_id} ({title}) still raises NotImplementedError. "
            f"Stuck? Run: course hint {exercise_id}")


def missing_definition(filename: str, name: str, namespace: dict) -> str:
    """"02_retrieval.py defines no `build_id_tower` (did you mean `build_id_towr`?)": for a
    name a test asks a lesson for, with the closest names the lesson does define."""
    candidates = [] if name.startswith("__") else [n for n in namespace if not n.startswith("_")]
    close = difflib.get_close_matches(name, candidates, n=2, cutoff=0.7)
    guess = f" (did you mean {' or '.join(f'`{c}`' for c in close)}?)" if close else ""
    return f"{filename} defines no `{name}`{guess}: the tests call it by that name"


def _chain(error: BaseException) -> list[BaseException]:
    """The error and the exceptions it was raised from or while handling, innermost last."""
    seen: list[BaseException] = []
    while error is not None and error not in seen and len(seen) < 10:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _is_lesson(value: object) -> bool:
    return isinstance(value, ModuleType) and "__lesson_errors__" in vars(value)


def _graded_exercise(tb: TracebackType | None) -> tuple[str | None, ModuleType | None]:
    """(the exercise's function name, the graded lesson module) for the test in ``tb``:
    from the test function's ``exercise`` mark and the lesson among its local values."""
    from recsys_course.tooling.catalog import load_catalog

    for frame, _ in traceback.walk_tb(tb):
        function = frame.f_globals.get(frame.f_code.co_name)
        marks = getattr(function, "pytestmark", [])
        exercise = next((m.args[0] for m in marks if getattr(m, "name", "") == "exercise" and m.args), None)
        if exercise is None:
            continue
        module = next((v for v in frame.f_locals.values() if _is_lesson(v)), None)
        try:
            return load_catalog().exercise(str(exercise)).function, module
        except KeyError:
            return None, module
    return None, None


def _returns_a_value(function: object) -> bool | None:
    """Whether ``function``'s own body has a ``return`` with a value (None: cannot tell)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    definition = tree.body[0] if tree.body else None
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None

    def walk(node: ast.AST):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue  # a nested function's return is not this one's
            yield child
            yield from walk(child)

    return any(isinstance(n, ast.Return) and n.value is not None for n in walk(definition))


def _returned_none(tb: TracebackType | None, detail: str) -> str:
    function, module = _graded_exercise(tb)
    if function is None:
        return f"your function returned None where the test expected a result: did you forget `return`? ({detail})"
    defined = getattr(module, function, None) if module is not None else None
    if defined is not None and _returns_a_value(defined) is False:
        return (f"`{function}` returned None: did you forget `return`? (its body has no `return` "
                f"with a value; the test got {detail})")
    return f"`{function}` returned None where the test expected a result: did you forget `return`? ({detail})"


def describe_failure(error: BaseException, tb: TracebackType | None, graded_dir: Path) -> Failure:
    """The kind of a failing test and one line (or a short block) saying what went wrong,
    in the learner's terms."""
    from recsys_course.tooling.grading.guard import SubmissionMisbehaved, SubmissionTimeout
    from recsys_course.tooling.grading.loader import ExerciseCellError

    chain = _chain(error)
    for cause in chain:
        stub = NOT_SOLVED.search(str(cause))
        if stub:
            return Failure(Outcome.NOT_SOLVED, not_solved_text(stub["id"], stub["title"]))
    full = str(error)
    name = type(error).__name__
    sandbox = sys.modules.get("recsys_course.tooling.grading.sandbox")
    if isinstance(error, NotRun):
        return Failure(Outcome.NOT_RUN, full)
    if isinstance(error, SubmissionTimeout) or (sandbox is not None and isinstance(error, sandbox.SandboxTimeout)):
        return Failure(Outcome.TIMED_OUT, full)
    if isinstance(error, (ExerciseCellError, SubmissionMisbehaved)) or (
        sandbox is not None and isinstance(error, sandbox.SandboxError)
    ):
        return Failure(Outcome.ERROR, full)
    in_lesson = isinstance(error, AttributeError) and _is_lesson(getattr(error, "obj", None))
    if in_lesson or (isinstance(error, AttributeError) and MISSING_DEFINITION.match(full)):
        if in_lesson and not MISSING_DEFINITION.match(full):
            module = error.obj
            full = missing_definition(Path(module.__file__ or "lesson.py").name, str(error.name), vars(module))
        return Failure(Outcome.ERROR, full)
    if isinstance(error, ContractViolation):
        if re.search(r"\bgot (one )?NoneType\b", full):
            return Failure(Outcome.FAILED, _returned_none(tb, _exception_text(error)))
        return Failure(Outcome.FAILED, f"contract violation: {_exception_text(error)}")
    if isinstance(error, AssertionError):
        return Failure(Outcome.FAILED, _exception_text(error) or "an assertion failed (no message)")
    if name in ("Failed", "Skipped"):  # pytest.fail / pytest.skip: already worded for learners
        caught = [c for c in chain[1:] if isinstance(c, Exception) and not isinstance(c, AssertionError)]
        text = full.strip() or name
        if caught and KERAS_WRAPPER in text:  # the test quoted Keras's wrapper, not the error
            text = f"{text.split(KERAS_WRAPPER)[0]}{_exception_text(caught[0])}"
        return Failure(Outcome.ERROR if caught else Outcome.FAILED, text)
    text = _exception_text(error)
    graded = str(Path(graded_dir).resolve())
    frames = [f for f in traceback.extract_tb(tb) if str(Path(f.filename).resolve()).startswith(graded)]
    if frames:
        where = frames[-1]
        where = f"{Path(where.filename).name}, line {where.lineno}"
        return Failure(Outcome.ERROR, f"your code raised {name}: {text} ({where})")
    if "NoneType" in text:
        return Failure(Outcome.FAILED, _returned_none(tb, f"{name}: {text}"))
    return Failure(Outcome.FAILED, (
        f"contract violation: the result does not have the type or shape the docstring "
        f"describes ({name}: {text})"
    ))


def learner_message(error: BaseException, tb: TracebackType | None, graded_dir: Path) -> str:
    """The text of :func:`describe_failure`."""
    return describe_failure(error, tb, graded_dir).text


def failure_properties(error: BaseException, tb: TracebackType | None, graded_dir: Path) -> list[tuple[str, str]]:
    """What the grading plugin attaches to a failing test's report (plain strings, so they
    travel through pytest-xdist): the learner's message and the failure's kind."""
    failure = describe_failure(error, tb, graded_dir)
    return [("course_failure", failure.text), ("course_outcome", failure.kind.value)]


def apply_failure(outcome, properties: dict, fallback: str) -> None:
    """Copy :func:`failure_properties` onto a failing
    :class:`~recsys_course.tooling.grading.results.TestOutcome`, or ``fallback`` (pytest's
    own first line) when the failure was not worded; the first failure of a test (its
    setup's, then its call's) wins."""
    if not outcome.failure:
        outcome.failure = properties.get("course_failure") or fallback
        kind = properties.get("course_outcome")
        outcome.kind = Outcome(kind) if kind in Outcome._value2member_map_ else Outcome.FAILED


# Contract checks for tests: each raises ContractViolation naming the function and the rule.
def expect_type(value: object, kinds: type | tuple[type, ...], what: str) -> None:
    """``what`` (e.g. "sparsity(...)") must return an instance of ``kinds``."""
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise ContractViolation(f"{what} must return a {names}, got {type(value).__name__}")


def expect_shape(array: object, shape: tuple, what: str) -> None:
    """``what`` must be an array of exactly ``shape``."""
    got = getattr(array, "shape", None)
    if got is None:
        raise ContractViolation(f"{what} must be an array of shape {shape}, got {type(array).__name__}")
    if tuple(got) != tuple(shape):
        raise ContractViolation(f"{what} must have shape {tuple(shape)}, got {tuple(got)}")


def expect_dtype(array: object, kind: str, what: str) -> None:
    """``what`` must have a dtype of NumPy kind ``kind`` ("f" float, "i" integer...)."""
    dtype = getattr(array, "dtype", None)
    if dtype is None or dtype.kind not in kind:
        raise ContractViolation(f"{what} must hold {'floats' if kind == 'f' else kind} values, got dtype {dtype}")


def expect_arity(value: object, count: int, what: str) -> None:
    """``what`` must return a tuple of ``count`` values."""
    if not isinstance(value, tuple) or len(value) != count:
        got = f"{len(value)} values" if isinstance(value, tuple) else f"one {type(value).__name__}"
        raise ContractViolation(f"{what} must return {count} values (a tuple), got {got}")
