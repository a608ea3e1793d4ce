"""The one definition of every lesson and exercise: ``solutions/NN_slug.yml``, beside the
lesson's source ``solutions/NN_slug.py``.

The site, the CLI, the tests and the grade reports all read exercises from here, so an id,
title, point value or hint is written exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from recsys_course.paths import course_root

EXERCISE_ID = re.compile(r"^\d+\.\d+$")
# libyaml's loader when PyYAML was built with it: the same documents, parsed ten times
# faster (every `course` command and every graded run reads the catalog).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Exercise:
    id: str  # "0.1": lesson number, dot, exercise number
    title: str
    points: int
    function: str  # the name the exercise cell defines and the tests call
    hints: tuple[str, ...]  # ordered from gentle to explicit
    lesson_id: str  # "00"


@dataclass(frozen=True)
class Lesson:
    id: str  # "00"
    slug: str  # "00_introduction", the file stem in solutions/ and lessons/
    title: str
    exercises: tuple[Exercise, ...]
    blurb: str = ""  # one line for the home page: what the learner builds in this lesson

    @property
    def filename(self) -> str:
        return f"{self.slug}.py"

    @property
    def points(self) -> int:
        return sum(e.points for e in self.exercises)


@dataclass(frozen=True)
class Catalog:
    root: Path
    lessons: tuple[Lesson, ...]

    def lesson(self, key: str) -> Lesson:
        """Find a lesson by id (``"00"``, ``"0"``) or slug (``"00_introduction"``)."""
        for lesson in self.lessons:
            if key in (lesson.id, lesson.slug) or (key.isdigit() and int(key) == int(lesson.id)):
                return lesson
        raise KeyError(f"no lesson {key!r}; known: {', '.join(l.slug for l in self.lessons)}")

    def exercise(self, exercise_id: str) -> Exercise:
        for exercise in self.exercises:
            if exercise.id == exercise_id:
                return exercise
        raise KeyError(
            f"no exercise {exercise_id!r}; known: {', '.join(e.id for e in self.exercises)}"
        )

    @property
    def exercises(self) -> list[Exercise]:
        return [e for lesson in self.lessons for e in lesson.exercises]


def parse_lesson(text: str, slug: str, seen: set[str]) -> Lesson:
    """Parse and validate one lesson's YAML; raise ``ValueError`` naming what is wrong."""
    raw = yaml.load(text, Loader=_LOADER) or {}
    lesson_id = str(raw["id"]).zfill(2)
    if not slug.startswith(lesson_id + "_"):
        raise ValueError(f"{slug}.yml: id {lesson_id} does not match the file name")
    exercises = []
    for ex in raw.get("exercises", []):
        ex_id = str(ex["id"])
        if not EXERCISE_ID.match(ex_id) or int(ex_id.split(".")[0]) != int(lesson_id):
            raise ValueError(f"exercise id {ex_id!r} must look like '{int(lesson_id)}.N'")
        if ex_id in seen:
            raise ValueError(f"exercise id {ex_id} is defined twice")
        seen.add(ex_id)
        points = int(ex["points"])
        hints = tuple(str(h).strip() for h in ex.get("hints", []))
        if points <= 0 or not hints:
            raise ValueError(f"exercise {ex_id} needs positive points and at least one hint")
        exercises.append(
            Exercise(ex_id, str(ex["title"]), points, str(ex["function"]), hints, lesson_id)
        )
    return Lesson(lesson_id, slug, str(raw["title"]), tuple(exercises), " ".join(str(raw.get("blurb", "")).split()))


@lru_cache(maxsize=4)
def load_catalog(root: Path | None = None) -> Catalog:
    """Every lesson with a ``solutions/NN_slug.yml``, in lesson order."""
    root = Path(root) if root is not None else course_root()
    seen: set[str] = set()
    lessons = []
    for path in sorted((root / "solutions").glob("[0-9][0-9]_*.yml")):
        try:
            lessons.append(parse_lesson(path.read_text(encoding="utf-8"), path.stem, seen))
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as error:
            raise ValueError(f"{path}: {error!r}") from error
    return Catalog(root, tuple(lessons))
