"""One exercise's grade, as the batch grader and its reports use it, with its JSON form.

The plugin's report (``scores.to_json``) is read through :meth:`ExerciseResult.from_report`,
which validates every field: a malformed row raises :class:`ResultError` (the batch turns it
into a note on that exercise) instead of a ``TypeError`` after every lesson was graded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class ResultError(ValueError):
    """A report row that is not a valid exercise result."""


@dataclass
class TestOutcome:
    test: str  # test function name (hidden tests: instructor reports only)
    points: int
    passed: bool
    failure: str = ""
    hidden: bool = False

    @classmethod
    def from_json(cls, data: Any) -> TestOutcome:
        if not isinstance(data, dict):
            raise ResultError("a test outcome is not an object")
        name = data.get("test", str(data.get("nodeid", "")).split("::")[-1])
        return cls(_typed(name, str, "test"), _typed(data.get("points"), int, "points"),
                   _typed(data.get("passed"), bool, "passed"), _typed(data.get("failure", ""), str, "failure"),
                   _typed(data.get("hidden", False), bool, "hidden"))


STATUSES = ("passed", "partial", "failed", "not run", "missing")


@dataclass
class ExerciseResult:
    id: str
    title: str
    points: int  # the maximum, hidden tests included
    earned: int = 0
    status: str = "not run"  # passed | partial | failed | not run | missing
    first_failure: str = ""  # from visible tests only: safe to show the learner
    tests: list[TestOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what went wrong while grading it

    @property
    def hidden_status(self) -> str:
        """"passed"/"failed" for the hidden checks of this exercise, "" when it has none."""
        hidden = [t for t in self.tests if t.hidden]
        if not hidden:
            return ""
        return "passed" if all(t.passed for t in hidden) else "failed"

    @property
    def visible_points(self) -> tuple[int, int]:
        """(earned, possible) over the visible tests only."""
        visible = [t for t in self.tests if not t.hidden]
        return sum(t.points for t in visible if t.passed), sum(t.points for t in visible)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ExerciseResult:
        if not isinstance(data, dict):
            raise ResultError("an exercise result is not an object")
        result = cls(
            _typed(data.get("id"), str, "id"), _typed(data.get("title", ""), str, "title"),
            _typed(data.get("points"), int, "points"), _typed(data.get("earned"), int, "earned"),
            _typed(data.get("status"), str, "status"), _typed(data.get("first_failure", ""), str, "first_failure"),
            [TestOutcome.from_json(t) for t in _typed(data.get("tests", []), list, "tests")],
            [_typed(n, str, "note") for n in _typed(data.get("notes", []), list, "notes")],
        )
        if result.status not in STATUSES:
            raise ResultError(f"unknown status {result.status!r}")
        if not 0 <= result.earned <= result.points:
            raise ResultError(f"earned {result.earned} is outside 0..{result.points}")
        if result.tests and sum(t.points for t in result.tests if t.passed) != result.earned:
            raise ResultError("earned points do not match the passed tests")
        return result

    @classmethod
    def from_report(cls, row: Any) -> ExerciseResult:
        """A row of the plugin's JSON report (``scores.to_json``)."""
        return cls.from_json(row)


def _typed(value: Any, kind: type, name: str) -> Any:
    if type(value) is not kind:
        raise ResultError(f"{name} should be {kind.__name__}, got {type(value).__name__}")
    return value
