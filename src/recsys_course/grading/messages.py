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


def _exception_text(error: BaseException) -> str:
    """The exception's message without Keras's 'Exception encountered when calling' wrapper."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith(KERAS_WRAPPER):
        lines = [l for l in lines[1:] if not l.startswith(("Call arguments received", "•"))]
    return lines[0] if lines else ""


def learner_message(error: BaseException, tb: TracebackType | None, graded_dir: Path) -> str:
    """One line (or a short block) saying what went wrong, in the learner's terms."""
    from recsys_course.grading.guard import SubmissionMisbehaved, SubmissionTimeout
    from recsys_course.lessons import ExerciseCellError

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
