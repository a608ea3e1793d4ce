"""One exercise's result, the only shape of it in the course, and its table and JSON forms.

The grading plugin records a :class:`TestOutcome` per graded test and folds them into one
:class:`ExerciseResult` per exercise (:func:`score`); it prints them with
:func:`format_table` and writes them with :func:`report_json`. ``course check`` and the
batch grader read that report back with :func:`read_report` / :meth:`ExerciseResult.from_json`,
which validate every field: a malformed row raises :class:`ResultError` (the batch turns it
into a note on that exercise) instead of a ``TypeError`` after every lesson was graded. The
batch's reports (``reports.py``) write :meth:`ExerciseResult.to_json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys_course.tooling.catalog import Catalog


class ResultError(ValueError):
    """A report row that is not a valid exercise result."""


@dataclass
class TestOutcome:
    """One graded test. The plugin fills ``ran``, ``passed`` and ``failure`` as pytest reports."""

    nodeid: str
    exercise_id: str
    points: int
    passed: bool = False
    ran: bool = False  # False when the run ended before this test (collection error, crash)
    failure: str = ""  # first line of the failure, for learners and reports
    hidden: bool = False  # instructor-only test: counted, never shown to learners

    @property
    def name(self) -> str:
        """The test function's name (``test_user_tower_output_shape``)."""
        return self.nodeid.split("::")[-1]

    @classmethod
    def from_json(cls, data: Any, exercise_id: str = "") -> TestOutcome:
        if not isinstance(data, dict):
            raise ResultError("a test outcome is not an object")
        return cls(
            _typed(data.get("nodeid"), str, "nodeid"),
            _typed(data.get("exercise_id", exercise_id), str, "exercise_id"),
            _typed(data.get("points"), int, "points"), _typed(data.get("passed"), bool, "passed"),
            _typed(data.get("ran", True), bool, "ran"), _typed(data.get("failure", ""), str, "failure"),
            _typed(data.get("hidden", False), bool, "hidden"),
        )


STATUSES = ("passed", "partial", "failed", "not run", "missing")


@dataclass
class ExerciseResult:
    id: str
    title: str
    points: int  # what its collected tests can award, hidden tests included
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
        """Read and validate one row of :func:`report_json` or :meth:`to_json`."""
        if not isinstance(data, dict):
            raise ResultError("an exercise result is not an object")
        exercise_id = _typed(data.get("id"), str, "id")
        result = cls(
            exercise_id, _typed(data.get("title", ""), str, "title"),
            _typed(data.get("points"), int, "points"), _typed(data.get("earned"), int, "earned"),
            _typed(data.get("status"), str, "status"), _typed(data.get("first_failure", ""), str, "first_failure"),
            [TestOutcome.from_json(t, exercise_id) for t in _typed(data.get("tests", []), list, "tests")],
            [_typed(n, str, "note") for n in _typed(data.get("notes", []), list, "notes")],
        )
        if result.status not in STATUSES:
            raise ResultError(f"unknown status {result.status!r}")
        if not 0 <= result.earned <= result.points:
            raise ResultError(f"earned {result.earned} is outside 0..{result.points}")
        if result.tests and sum(t.points for t in result.tests if t.passed) != result.earned:
            raise ResultError("earned points do not match the passed tests")
        return result


def score(catalog: Catalog, outcomes: list[TestOutcome], lesson_ids: set[str]) -> list[ExerciseResult]:
    """Fold test outcomes into one result per catalog exercise of the lessons in ``lesson_ids``."""
    rows = []
    for lesson in catalog.lessons:
        if lesson.id not in lesson_ids:
            continue
        for ex in lesson.exercises:
            tests = [t for t in outcomes if t.exercise_id == ex.id]
            row = ExerciseResult(ex.id, ex.title, sum(t.points for t in tests), tests=tests)
            row.earned = sum(t.points for t in tests if t.passed)
            if any(t.ran for t in tests):
                row.status = "passed" if row.earned == row.points else "partial" if row.earned else "failed"
            failures = [t.failure for t in tests if not t.passed and not t.hidden]
            row.first_failure = failures[0] if failures else ""
            rows.append(row)
    return rows


def format_table(rows: list[ExerciseResult]) -> str:
    """A plain-text score table: exercise, points, status and the first failure."""
    lines = [f"{'exercise':<9}{'points':>9}  {'status':<8} title / first failure"]
    for row in rows:
        lines.append(f"{row.id:<9}{row.earned:>4} / {row.points:<3} {row.status:<8} {row.title}")
        if row.first_failure:
            lines.append(f"{'':<24}-> {row.first_failure[:110]}")
    earned, possible = sum(r.earned for r in rows), sum(r.points for r in rows)
    percent = 100.0 * earned / possible if possible else 0.0
    lines.append(f"{'TOTAL':<9}{earned:>4} / {possible:<3} ({percent:.0f} %)")
    return "\n".join(lines)


def report_json(rows: list[ExerciseResult], **context: object) -> dict:
    """The plugin's JSON report: ``context``, totals and one :meth:`~ExerciseResult.to_json` row
    per exercise."""
    earned, possible = sum(r.earned for r in rows), sum(r.points for r in rows)
    return {
        **context,
        "earned": earned,
        "possible": possible,
        "percent": round(100.0 * earned / possible, 2) if possible else 0.0,
        "exercises": [r.to_json() for r in rows],
    }


def read_report(report: Any) -> list[ExerciseResult]:
    """The validated rows of a :func:`report_json` payload; raises :class:`ResultError`."""
    if not isinstance(report, dict) or not isinstance(report.get("exercises"), list):
        raise ResultError("a grading report is an object with a list of exercises")
    return [ExerciseResult.from_json(row) for row in report["exercises"]]


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def _typed(value: Any, kind: type, name: str) -> Any:
    if type(value) is not kind:
        raise ResultError(f"{name} should be {kind.__name__}, got {type(value).__name__}")
    return value
