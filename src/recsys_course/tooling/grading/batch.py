"""Batch grading: a folder of submissions in, per-exercise results out.

The principle (docs/instructors.md says the same to instructors): **the code that decides a
grade never runs in a process that untrusted code can touch.**

* Calibration grades the reference solutions exactly as a submission is graded; unless the
  instructor allows it (``allow_imperfect_reference``), a reference that misses any point
  stops the batch before anything is written (:class:`ImperfectReference`).
* Intake (``intake.py``) copies only lesson files out of each folder or zip.
* Submissions are graded in chunks: one trusted pytest process runs the course's tests for
  every lesson of a chunk of submissions (from the grader's private copy, hidden tests
  included) with ``--sandbox``. The ``lesson`` fixture is a proxy (``proxy.py``); each
  submission gets one bubblewrap sandbox (``sandbox.py``) that sees only its lesson files,
  the package and the Python environment, read-only, and a zygote in it (``worker.py``)
  forks a worker per lesson that answers with plain data (``wire.py``). Hidden tests get a
  second sandbox. Assertions, expected values, the plugin and the report file stay in the
  trusted process.
* Time limits count CPU seconds of the sandbox, so grades do not depend on the machine's
  load; a worker that crashes or runs out of time costs the test that was running and the
  exercise's other tests; a cell that crashes it while loading costs that cell's exercise.
* Results are validated (``results.py``) and the reports (``reports.py``) are written
  atomically by this process, which no sandbox can signal (PID namespaces) or write to.
"""

from __future__ import annotations

import compileall
import math
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from recsys_course.tooling.catalog import Catalog, Lesson, load_catalog
from recsys_course.tooling.grading import similarity
from recsys_course.tooling.grading.intake import Submission, stage_all
from recsys_course.tooling.grading.proxy import preload_modules
from recsys_course.tooling.grading.results import ExerciseResult, ResultError
from recsys_course.tooling.grading.runner import GradingRun, SandboxSettings, run_tests
from recsys_course.tooling.grading.sandbox import Limits, SandboxUnavailable, isolation_summary, problem
from recsys_course.errors import CourseError, Refused
from recsys_course.paths import PACKAGE_DIR

REFERENCE = "reference-solutions"


class ImperfectReference(Refused):
    """The reference solutions do not earn full marks, so every grade would be wrong."""


@dataclass
class LessonRun:
    seconds: float
    mode: str  # "whole", "per-exercise" or "missing"
    notes: list[str]


@dataclass
class SubmissionGrade:
    submission: Submission
    exercises: dict[str, ExerciseResult] = field(default_factory=dict)
    lessons: dict[str, LessonRun] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(e.earned for e in self.exercises.values())

    @property
    def notes(self) -> list[str]:
        return self.submission.problems + [n for run in self.lessons.values() for n in run.notes]

    @property
    def flags(self) -> list[str]:
        return self.submission.flags


@dataclass
class Options:
    out: Path
    timeout: float = 900.0  # seconds for one lesson's whole run
    test_timeout: float = 120.0
    cell_timeout: float = 60.0
    memory_mb: int | None = 6144
    jobs: int = 2
    extra_tests: Path | None = None
    junit: bool = False
    hidden_summary: bool = True  # learners see "hidden checks: passed/failed" per exercise
    chunk: int = 8  # submissions graded per trusted pytest run (each still has its own sandboxes)
    shard: object | None = None  # a shards.Shard: grade only that part of the class
    wall_factor: float = 4.0  # wall-clock backstop of the CPU-time limits (sandbox.Limits)
    allow_imperfect_reference: bool = False  # grade even if the reference misses points


class Grader:
    """Grades submissions against the grader's private copy of the course's tests."""

    def __init__(self, options: Options, catalog: Catalog | None = None) -> None:
        reason = problem()
        if reason:
            raise SandboxUnavailable(reason)
        self.options = options
        try:
            self.limits = Limits(memory_mb=options.memory_mb, wall_factor=options.wall_factor)
        except ValueError as error:  # e.g. --memory-mb too small for the sandbox's tmpfs
            raise CourseError(f"{error}: raise --memory-mb (0 means no limit)") from None
        self.catalog = catalog or load_catalog()
        self.work = Path(tempfile.mkdtemp(prefix="course-batch-"))
        # The trusted pytest runs the grader's own copy of the tests, definitions and
        # package; the sandboxes import that package copy read-only.
        self.private = self.work / "grader"
        self.tests = self.private / "tests"
        shutil.copytree(self.catalog.root / "tests", self.tests,
                        ignore=shutil.ignore_patterns("__pycache__", "decoys", "browser", "dev"))
        shutil.copy2(self.catalog.root / "pyproject.toml", self.private / "pyproject.toml")
        (self.private / "solutions").mkdir()
        for definition in (self.catalog.root / "solutions").glob("*.yml"):
            shutil.copy2(definition, self.private / "solutions" / definition.name)
        package = PACKAGE_DIR
        self.package = self.private / "src" / package.name
        shutil.copytree(package, self.package, ignore=shutil.ignore_patterns("__pycache__"))
        # Compiled once here: the sandboxes see the copy read-only and would compile it anew.
        compileall.compile_dir(self.package, quiet=1)
        self.hidden = None
        if options.extra_tests:
            self.hidden = self.tests / "_instructor"
            shutil.copytree(options.extra_tests, self.hidden, ignore=shutil.ignore_patterns("__pycache__"))
        self.expected: dict[str, dict[str, int]] = {}  # lesson -> exercise -> max points
        self.runs = 0  # trusted pytest processes started
        # What the zygote of every sandbox imports before graded code exists: the modules the
        # reference solutions import (from the clone, not from any submission).
        self.preload = preload_modules([self.catalog.root / "solutions" / lesson.filename
                                        for lesson in self.catalog.lessons])
        self.reference_totals: dict[str, tuple[int, int]] = {}  # lesson -> (earned, possible)

    def extra_for(self, lesson: Lesson) -> list[Path]:
        if self.hidden is None:
            return []
        return sorted(self.hidden.glob(f"test_lesson_{lesson.id}*.py"))

    def _run(self, lessons_dir: Path, lessons: Lesson | list[Lesson], exercises: list[str] | None = None,
             submissions: dict[str, Path] | None = None) -> GradingRun:
        lessons = [lessons] if isinstance(lessons, Lesson) else lessons
        self.runs += 1
        # A backstop for the trusted process only: every test and cell has its own limits.
        backstop = self.limits.wall(self.options.timeout) * len(lessons) * max(1, len(submissions or {}))
        return run_tests(
            lessons_dir, [lesson.id for lesson in lessons], catalog=self.catalog, exercises=exercises,
            submissions=submissions, timeout=backstop, tests_dir=self.tests,
            extra_tests=[p for lesson in lessons for p in self.extra_for(lesson)], hidden_dir=self.hidden,
            test_timeout=self.options.test_timeout, cell_timeout=self.options.cell_timeout,
            sandbox=SandboxSettings(memory_mb=self.options.memory_mb, lesson_timeout=self.options.timeout,
                                    package_dir=self.package, wall_factor=self.options.wall_factor,
                                    preload=self.preload),
            env={"PYTHONPATH": str(self.private / "src"), "COURSE_ROOT": str(self.private),
                 "COURSE_SANDBOX_CHECKED": "1"},
        )

    def calibrate(self) -> list[str]:
        """Grade the reference solutions as a submission, through the same path as every
        submission: the maximum points per exercise (hidden tests included), and a warning
        for every exercise the solutions do not pass."""
        reference = Submission(REFERENCE, self.catalog.root / "solutions", self.work / "reference")
        reference.lessons_dir.mkdir(parents=True)
        for lesson in self.catalog.lessons:  # the lesson files only, as intake takes them
            shutil.copy2(self.catalog.root / "solutions" / lesson.filename, reference.lessons_dir / lesson.filename)
            reference.found[lesson.filename] = f"solutions/{lesson.filename}"
        run = self._run(reference.lessons_dir, list(self.catalog.lessons),
                        submissions={reference.name: reference.lessons_dir})
        parts = run.report.get("submissions", {}) if isinstance(run.report, dict) else {}
        rows = _rows(parts.get(reference.name, {}) if isinstance(parts, dict) else {})
        warnings = []
        for lesson in self.catalog.lessons:
            self.expected[lesson.id] = {
                e.id: rows[e.id].points if e.id in rows else e.points for e in lesson.exercises
            }
            earned = sum(rows[e.id].earned for e in lesson.exercises if e.id in rows)
            self.reference_totals[lesson.id] = (earned, sum(self.expected[lesson.id].values()))
            for ex in lesson.exercises:
                row = rows.get(ex.id)
                if row is None:
                    warnings.append(f"the reference solution of {ex.id} could not be graded: check the tests")
                elif row.earned != row.points:
                    why = f" ({row.first_failure[:200]})" if row.first_failure else ""
                    warnings.append(f"the reference solution of {ex.id} gets {row.earned} of {row.points} "
                                    f"points{why}: check the tests")
        return warnings

    def _missing(self, lesson: Lesson) -> dict[str, ExerciseResult]:
        expected = self.expected[lesson.id]
        return {e.id: ExerciseResult(e.id, e.title, expected[e.id], 0, "missing", "lesson file not submitted")
                for e in lesson.exercises}

    def _accept(self, sub: Submission, lesson: Lesson, report: object,
                seconds: float) -> tuple[dict[str, ExerciseResult], LessonRun] | None:
        """The lesson's results from a plugin report, or None if it is not a complete,
        valid report (then the lesson is graded again on its own)."""
        if not isinstance(report, dict) or not report:
            return None
        notes: list[str] = []
        rows = _rows(report, self.expected[lesson.id], notes)
        exercises = self._missing(lesson)
        if not all(e in rows for e in exercises):
            return None
        exercises = {e: rows[e] for e in exercises}
        notes += [_clean(n, sub) for n in report.get("notes", [])
                  if isinstance(n, str) and n.startswith((f"{lesson.filename}:", f"hidden checks of {lesson.filename}:",
                                                          "replaced"))][:50]
        self._flag_provenance(sub, report)
        return exercises, LessonRun(seconds, "whole", notes)

    def grade_chunk(self, lessons: list[Lesson], subs: list[Submission]) -> list[tuple]:
        """Grade every lesson of several submissions in one trusted pytest run (its imports
        are paid once); each submission still gets a sandbox of its own. A lesson whose
        part of the report is missing or invalid is graded again alone."""
        started = time.perf_counter()
        run = self._run(subs[0].lessons_dir, lessons, submissions={s.name: s.lessons_dir for s in subs})
        parts = run.report.get("submissions", {}) if isinstance(run.report, dict) else {}
        seconds = (time.perf_counter() - started) / len(subs) / max(1, len(lessons))
        graded = []
        for sub in subs:
            part = parts.get(sub.name) if isinstance(parts, dict) else None
            for lesson in lessons:
                if lesson.filename not in sub.found:
                    graded.append((sub, lesson, self._missing(lesson), LessonRun(0.0, "missing", [])))
                    continue
                accepted = self._accept(sub, lesson, part, seconds)
                graded.append((sub, lesson, *(accepted or self.grade_lesson(sub, lesson))))
        return graded

    def grade_lesson(self, sub: Submission, lesson: Lesson) -> tuple[dict[str, ExerciseResult], LessonRun]:
        started = time.perf_counter()
        expected = self.expected[lesson.id]
        exercises = self._missing(lesson)
        if lesson.filename not in sub.found:
            return exercises, LessonRun(0.0, "missing", [])
        notes: list[str] = []
        run = self._run(sub.lessons_dir, lesson)
        accepted = self._accept(sub, lesson, run.report, time.perf_counter() - started)
        if accepted is not None:
            return accepted
        # The trusted pytest process itself failed (it never runs graded code, so this is
        # rare: a time-out over the whole lesson, or a bug). Grade exercise by exercise.
        why = "timed out" if run.timed_out else f"ended with exit code {run.returncode} without a valid report"
        notes.append(f"{lesson.filename}: the grading process {why}; exercises were graded one by one")
        for ex in lesson.exercises:
            single = self._run(sub.lessons_dir, lesson, exercises=[ex.id])
            got = _rows(single.report, expected, notes).get(ex.id)
            if got is not None:
                exercises[ex.id] = got
            else:
                reason = "timed out" if single.timed_out else "could not be graded"
                exercises[ex.id] = ExerciseResult(ex.id, ex.title, expected[ex.id], 0, "failed",
                                                  f"the grading of this exercise {reason}",
                                                  notes=[f"grading {reason}"])
        return exercises, LessonRun(time.perf_counter() - started, "per-exercise", notes)

    @staticmethod
    def _flag_provenance(sub: Submission, report: dict) -> None:
        for note in report.get("notes", []):
            if isinstance(note, str) and "provenance: tried to read" in note:
                what = note.split("tried to read", 1)[1].strip()[:120]
                flag = f"tried to read files outside its lesson ({what})"
                if flag not in sub.flags:
                    sub.flags.append(flag)

    def chunks(self, subs: list[Submission]) -> list[list[Submission]]:
        """Even chunks of at most ``options.chunk`` submissions, a multiple of ``jobs`` of
        them, so that the parallel runs finish together."""
        jobs, size = max(1, self.options.jobs), max(1, self.options.chunk)
        count = min(len(subs), jobs * math.ceil(len(subs) / (jobs * size))) if subs else 0
        return [subs[i::count] for i in range(count)]

    def grade(self, sources: list[Path], progress=None) -> tuple[list[SubmissionGrade], list[str]]:
        warnings = self.calibrate()
        if warnings and not self.options.allow_imperfect_reference:
            raise ImperfectReference(
                "the reference solutions do not earn full marks, so no grade would be right:\n  "
                + "\n  ".join(warnings) + "\nFix the tests (or the solutions) and grade again; to write the "
                "reports anyway, pass --allow-imperfect-reference."
            )
        subs = stage_all(sources, self.work / "submissions", self.catalog)
        similarity.flag(subs, self.catalog, self.catalog.root / "solutions")
        if self.options.shard is not None:  # intake and flags saw the whole class; grade a part
            subs = self.options.shard.select(subs)
        grades = {s.name: SubmissionGrade(s) for s in subs}
        lessons = list(self.catalog.lessons)
        graded_any = [s for s in subs if s.found]
        for sub in subs:
            if not sub.found:
                for lesson in lessons:
                    grades[sub.name].exercises.update(self._missing(lesson))
                    grades[sub.name].lessons[lesson.id] = LessonRun(0.0, "missing", [])
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            futures = {pool.submit(self.grade_chunk, lessons, chunk): chunk for chunk in self.chunks(graded_any)}
            for future in as_completed(futures):
                chunk = futures[future]
                try:
                    graded = future.result()
                except Exception as error:  # one chunk never stops the batch
                    graded = []
                    for sub in chunk:
                        for lesson in lessons:
                            failed = {e.id: ExerciseResult(e.id, e.title, self.expected[lesson.id][e.id], 0,
                                                           "failed", "this lesson could not be graded")
                                      for e in lesson.exercises}
                            note = f"{lesson.filename}: grading failed ({type(error).__name__})"
                            graded.append((sub, lesson, failed, LessonRun(0.0, "failed", [note])))
                for sub, lesson, exercises, run in graded:
                    grades[sub.name].exercises.update(exercises)
                    grades[sub.name].lessons[lesson.id] = run
                    if progress:
                        progress(sub, lesson, exercises)
        ordered = []
        for s in subs:
            grade = grades[s.name]
            grade.exercises = {e.id: grade.exercises[e.id] for e in self.catalog.exercises}
            ordered.append(grade)
        return ordered, warnings

    def isolation(self) -> dict:
        return {**isolation_summary(self.limits), "lesson_timeout_s": self.options.timeout,
                "test_timeout_s": self.options.test_timeout, "cell_timeout_s": self.options.cell_timeout}

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _rows(report: dict, expected: dict[str, int] | None = None,
          notes: list[str] | None = None) -> dict[str, ExerciseResult]:
    """Validated exercise rows of a plugin report; a malformed or unexpected row becomes
    a note and is left out (the exercise is then graded again on its own, or scores 0).
    With ``expected`` (one lesson's maxima), rows of other lessons are not this lesson's
    to judge: a run grades every lesson of a submission."""
    rows: dict[str, ExerciseResult] = {}
    for raw in report.get("exercises", []) if isinstance(report, dict) else []:
        if isinstance(raw, dict) and expected is not None and raw.get("id") not in expected:
            continue  # another lesson's exercise
        if isinstance(raw, dict) and raw.get("status") == "not run" and expected is not None:
            continue  # outside this run's --exercise selection
        try:
            row = ExerciseResult.from_json(raw)
            if expected is not None and row.points != expected.get(row.id):
                raise ResultError(f"maximum {row.points} differs from the calibrated {expected.get(row.id)}")
        except ResultError as error:
            if notes is not None:
                notes.append(f"a result row was rejected: {error}")
            continue
        rows[row.id] = row
    return rows


def _clean(note: str, sub: Submission) -> str:
    """A note without the grader's temporary paths."""
    return note.replace(str(sub.lessons_dir) + "/", "").replace(str(sub.folder), "<submission>")
