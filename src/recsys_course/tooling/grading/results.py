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
from enum import Enum
from pathlib import Path
from typing import Any

from recsys_course.tooling.catalog import Catalog


class ResultError(ValueError):
    """A report row that is not a valid exercise result."""


class Outcome(str, Enum):
    """How a graded test, or an exercise, ended: the one vocabulary the plugin writes, the
    JSON carries (as the value) and ``course check``, ``progress`` and the reports read.

    A failing test's kind is decided where its exception is worded
    (:func:`recsys_course.tooling.grading.messages.describe_failure`), never by matching
    the sentence afterwards.
    """

    PASSED = "passed"
    FAILED = "failed"  # an expectation of the test was not met (assertion, contract)
    NOT_SOLVED = "not_solved"  # the exercise is still the generated stub
    ERROR = "error"  # the learner's code raised, or the cell defining it did not run
    TIMED_OUT = "timed_out"  # ran past its time limit
    NOT_RUN = "not_run"  # never ran (other exercises checked, the run ended early, or an
    #                      earlier test of the exercise timed out)
    MISSING = "missing"  # the lesson file was not submitted

    def __str__(self) -> str:
        return self.value

    @property
    def words(self) -> str:
        """For people: "not solved", "timed out" ..."""
        return self.value.replace("_", " ")


# An exercise's outcome is its most telling failure: the first of these found among its
# failing tests (visible ones first), FAILED otherwise.
_PRECEDENCE = (Outcome.MISSING, Outcome.TIMED_OUT, Outcome.ERROR, Outcome.FAILED, Outcome.NOT_RUN)


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
    # Why it failed (set with ``failure``); PASSED/NOT_RUN follow from ``passed``/``ran``.
    kind: Outcome = Outcome.FAILED

    @property
    def outcome(self) -> Outcome:
        if self.passed:
            return Outcome.PASSED
        if not self.ran:
            return Outcome.NOT_RUN
        return self.kind

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
            _outcome(data.get("kind", Outcome.FAILED.value), "kind"),
        )

    def to_json(self) -> dict:
        return {**asdict(self), "kind": self.kind.value, "outcome": self.outcome.value}


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
    # Why: passed, not_solved, failed, error, timed_out, not_run or missing. Derived from
    # the tests (see :func:`score`), or from ``status`` for a row built without tests.
    outcome: Outcome | None = None

    def __post_init__(self) -> None:
        if self.outcome is None:
            self.outcome = exercise_outcome(self.tests, self.earned, self.points, self.status)

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
        data = asdict(self)
        data["outcome"] = Outcome(self.outcome).value
        data["tests"] = [t.to_json() for t in self.tests]
        return data

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
            _outcome(data["outcome"], "outcome") if "outcome" in data else None,
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
            failures = [t for t in tests if not t.passed and not t.hidden]
            failures.sort(key=lambda t: t.outcome is Outcome.NOT_RUN)  # a cause before its echo
            row.first_failure = failures[0].failure if failures else ""
            row.outcome = exercise_outcome(tests, row.earned, row.points, row.status)
            rows.append(row)
    return rows


def exercise_outcome(tests: list[TestOutcome], earned: int, points: int, status: str = "") -> Outcome:
    """One exercise's outcome from its tests: PASSED with every point; NOT_SOLVED when every
    failing test met the stub; otherwise the most telling kind among the failures (visible
    tests first). Without tests (a row a batch built itself), from its ``status``."""
    if not tests:
        return {"passed": Outcome.PASSED, "missing": Outcome.MISSING}.get(
            status, Outcome.NOT_RUN if status in ("not run", "") else Outcome.FAILED
        )
    if not any(t.ran for t in tests):
        return Outcome.NOT_RUN
    if earned == points:
        return Outcome.PASSED
    failing = [t for t in tests if not t.passed and not t.hidden] or [t for t in tests if not t.passed]
    kinds = {t.outcome for t in failing}
    if Outcome.NOT_SOLVED in kinds and kinds <= {Outcome.NOT_SOLVED, Outcome.NOT_RUN} and earned == 0:
        return Outcome.NOT_SOLVED
    return next((k for k in _PRECEDENCE if k in kinds), Outcome.FAILED)


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
    per exercise (its ``outcome`` and each test's ``kind`` and ``outcome`` as strings)."""
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


def _outcome(value: Any, name: str) -> Outcome:
    try:
        return Outcome(_typed(value, str, name))
    except ValueError:
        raise ResultError(f"unknown {name} {value!r}") from None


def _typed(value: Any, kind: type, name: str) -> Any:
    if type(value) is not kind:
        raise ResultError(f"{name} should be {kind.__name__}, got {type(value).__name__}")
    return value
