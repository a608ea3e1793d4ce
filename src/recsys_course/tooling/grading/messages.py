"""What a learner reads when a graded test fails: their real mistake, in one line.

The plugin turns each failing test's exception into one message, most specific first:

* a stub still in place -> ``not solved yet``;
* an exercise cell that did not run (syntax error...) -> file, line and error first;
* a time limit -> the limit, once;
* a test assertion -> its message (every assertion in tests/ carries one);
* a :class:`ContractViolation` (wrong type, shape, dtype, number of returned values) -> named so;
* any other exception raised inside the learner's file -> ``your code raised ...`` with its line;
* an exception raised by the test itself while reading the result (unpacking, indexing) ->
  a contract violation: the result does not have the shape the docstring promised.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from types import TracebackType

NOT_SOLVED = re.compile(r"Exercise (?P<id>[0-9]+\.[0-9]+) \((?P<title>[^\n]*?)\): not solved yet")
KERAS_WRAPPER = "Exception encountered when calling"


class ContractViolation(AssertionError):
    """The learner's function returned something its docstring rules out (type, shape...)."""


NUMPY_HEADERS = ("Not equal to tolerance", "Arrays are not", "Items are not equal")


def _exception_text(error: BaseException) -> str:
    """The exception's message in one line: without Keras's 'Exception encountered when
    calling' wrapper, and for NumPy's assertions the test's own message first, then what
    the learner's code returned against what was expected."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
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


def learner_message(error: BaseException, tb: TracebackType | None, graded_dir: Path) -> str:
    """One line (or a short block) saying what went wrong, in the learner's terms."""
    from recsys_course.tooling.grading.guard import SubmissionMisbehaved, SubmissionTimeout
    from recsys_course.tooling.grading.loader import ExerciseCellError

    full = str(error)
    stub = NOT_SOLVED.search(full)
    if stub:
        return (
            f"not solved yet: exercise {stub['id']} ({stub['title']}) still raises "
            f"NotImplementedError. Stuck? Run: course hint {stub['id']}"
        )
    name = type(error).__name__
    if isinstance(error, (ExerciseCellError, SubmissionTimeout, SubmissionMisbehaved)):
        return full
    if isinstance(error, ContractViolation):
        return f"contract violation: {_exception_text(error)}"
    if isinstance(error, AssertionError):
        return _exception_text(error) or "an assertion failed (no message)"
    if name in ("Failed", "Skipped"):  # pytest.fail / pytest.skip: already worded for learners
        return full.strip() or name
    text = _exception_text(error)
    graded = str(Path(graded_dir).resolve())
    frames = [f for f in traceback.extract_tb(tb) if str(Path(f.filename).resolve()).startswith(graded)]
    if frames:
        where = frames[-1]
        return f"your code raised {name}: {text} ({Path(where.filename).name}, line {where.lineno})"
    return (
        f"contract violation: the result does not have the type or shape the docstring "
        f"describes ({name}: {text})"
    )


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
