"""Per-exercise scores from per-test outcomes, and their table and JSON forms."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recsys_course.catalog import Catalog


@dataclass
class TestResult:
    nodeid: str
    exercise_id: str
    points: int
    passed: bool = False
    ran: bool = False  # False when the run ended before this test (collection error, crash)
    failure: str = ""  # first line of the failure, for learners and reports
    hidden: bool = False  # instructor-only test: counted, not shown to learners


@dataclass
class ExerciseScore:
    id: str
    title: str
    lesson: str
    points: int  # points the collected tests can award
    catalog_points: int
    earned: int = 0
    status: str = "not run"  # passed | partial | failed | not run
    first_failure: str = ""
    tests: list[TestResult] = field(default_factory=list)


def score(catalog: Catalog, results: list[TestResult], lesson_ids: set[str]) -> list[ExerciseScore]:
    """Fold test results into one row per catalog exercise of the lessons in ``lesson_ids``."""
    rows = []
    for lesson in catalog.lessons:
        if lesson.id not in lesson_ids:
            continue
        for ex in lesson.exercises:
            tests = [r for r in results if r.exercise_id == ex.id]
            row = ExerciseScore(ex.id, ex.title, lesson.id, sum(t.points for t in tests), ex.points)
            row.tests = tests
            row.earned = sum(t.points for t in tests if t.passed)
            if any(t.ran for t in tests):
                row.status = (
                    "passed" if row.earned == row.points else "partial" if row.earned else "failed"
                )
            failures = [t.failure for t in tests if not t.passed and not t.hidden]
            row.first_failure = failures[0] if failures else ""
            rows.append(row)
    return rows


def format_table(rows: list[ExerciseScore]) -> str:
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


def to_json(rows: list[ExerciseScore], **context: object) -> dict:
    earned, possible = sum(r.earned for r in rows), sum(r.points for r in rows)
    return {
        **context,
        "earned": earned,
        "possible": possible,
        "percent": round(100.0 * earned / possible, 2) if possible else 0.0,
        "exercises": [asdict(r) for r in rows],
    }


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
