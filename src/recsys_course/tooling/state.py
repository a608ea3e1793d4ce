"""The learner's local state: hints revealed and the last result of each exercise.

Kept in ``<clone>/.course/state.json`` (ignored by git), written atomically so an
interrupted command never corrupts it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


class State:
    def __init__(self, root: Path) -> None:
        self.path = root / ".course" / "state.json"
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            self.data = {}
        self.data.setdefault("hints_shown", {})
        self.data.setdefault("results", {})

    def next_hint_index(self, exercise_id: str, n_hints: int) -> int:
        """Index of the hint to show now (stays on the last one once all were shown)."""
        shown = self.data["hints_shown"].get(exercise_id, 0)
        self.data["hints_shown"][exercise_id] = min(shown + 1, n_hints)
        return min(shown, n_hints - 1)

    def hints_revealed(self, exercise_id: str) -> int:
        """How many of the exercise's hints were shown so far."""
        return self.data["hints_shown"].get(exercise_id, 0)

    def forget_result(self, exercise_id: str) -> None:
        """Drop the exercise's last result (after ``course reset``), keeping its hints."""
        self.data["results"].pop(exercise_id, None)

    def record(self, exercise_id: str, earned: int, points: int, outcome: str, cell: str | None = None) -> None:
        """Keep an exercise's last result: its points, its outcome (a
        :class:`~recsys_course.tooling.grading.results.Outcome` value) and a hash of the
        exercise's cell as it was checked, so ``progress`` can tell when it changed since."""
        self.data["results"][exercise_id] = {
            "earned": earned, "points": points, "outcome": str(outcome), "cell": cell,
            "when": int(time.time()),
        }

    def result(self, exercise_id: str) -> dict | None:
        return self.data["results"].get(exercise_id)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle, indent=2)
        os.replace(tmp, self.path)
