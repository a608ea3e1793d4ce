"""Batch grading: a folder of submissions in, per-exercise results out.

The principle (docs/instructors.md says the same to instructors): **the code that decides a
grade never runs in a process that untrusted code can touch.**

* Intake (``intake.py``) copies only lesson files out of each folder or zip.
* For each lesson of each submission, a trusted pytest process runs the course's tests
  (from the grader's private copy, hidden tests included) with ``--sandbox``: the
  ``lesson`` fixture is a proxy (``proxy.py``) and the learner's code runs in a bubblewrap
  sandbox (``sandbox.py``, ``worker.py``) that sees only that one lesson file, the package
  and the Python environment, read-only, and answers with plain data (``wire.py``).
  Assertions, expected values, the plugin and the report file stay in the trusted process.
* A sandbox that crashes, hangs or is killed costs the test that was running (the next test
  gets a fresh sandbox); a cell that crashes it while loading costs that cell's exercise.
* Results are validated (``results.py``) and the reports (``reports.py``) are written
  atomically by this process, which no sandbox can signal (PID namespaces) or write to.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from recsys_course.tooling.catalog import Catalog, Lesson, load_catalog
from recsys_course.tooling.grading import similarity
from recsys_course.tooling.grading.intake import Submission, stage_all
from recsys_course.tooling.grading.results import ExerciseResult, ResultError
from recsys_course.tooling.grading.runner import GradingRun, SandboxSettings, run_tests
from recsys_course.tooling.grading.sandbox import Limits, SandboxUnavailable, isolation_summary, problem
from recsys_course.paths import PACKAGE_DIR


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


class Grader:
    """Grades submissions against the grader's private copy of the course's tests."""

    def __init__(self, options: Options, catalog: Catalog | None = None) -> None:
        reason = problem()
        if reason:
            raise SandboxUnavailable(reason)
        self.options = options
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
        self.hidden = None
        if options.extra_tests:
            self.hidden = self.tests / "_instructor"
            shutil.copytree(options.extra_tests, self.hidden, ignore=shutil.ignore_patterns("__pycache__"))
        self.expected: dict[str, dict[str, int]] = {}  # lesson -> exercise -> max points
        self.limits = Limits(memory_mb=options.memory_mb)

    def extra_for(self, lesson: Lesson) -> list[Path]:
        if self.hidden is None:
            return []
        return sorted(self.hidden.glob(f"test_lesson_{lesson.id}*.py"))

    def _run(self, lessons_dir: Path, lesson: Lesson, exercises: list[str] | None = None,
             submissions: dict[str, Path] | None = None) -> GradingRun:
        return run_tests(
            lessons_dir, [lesson.id], catalog=self.catalog, exercises=exercises, submissions=submissions,
            timeout=self.options.timeout * 2 * max(1, len(submissions or {})), tests_dir=self.tests,
            extra_tests=self.extra_for(lesson), hidden_dir=self.hidden,
            test_timeout=self.options.test_timeout, cell_timeout=self.options.cell_timeout,
            sandbox=SandboxSettings(memory_mb=self.options.memory_mb, lesson_timeout=self.options.timeout,
                                    package_dir=self.package),
            env={"PYTHONPATH": str(self.private / "src"), "COURSE_ROOT": str(self.private),
                 "COURSE_SANDBOX_CHECKED": "1"},
        )

    def calibrate(self) -> list[str]:
        """Grade the reference solutions: the maximum points per exercise (hidden tests
        included), and a warning for every exercise the solutions do not pass."""
        warnings = []
        for lesson in self.catalog.lessons:
            run = self._run(self.catalog.root / "solutions", lesson)
            rows = _rows(run.report)
            self.expected[lesson.id] = {
                e.id: rows[e.id].points if e.id in rows else e.points for e in lesson.exercises
            }
            for ex in lesson.exercises:
                row = rows.get(ex.id)
                if row is None or row.earned != row.points:
                    warnings.append(f"the reference solution of {ex.id} does not get full marks: check the tests")
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
        exercises.update(rows)
        notes += [_clean(n, sub) for n in report.get("notes", []) if isinstance(n, str)]
        self._flag_provenance(sub, report)
        return exercises, LessonRun(seconds, "whole", notes)

    def grade_chunk(self, lesson: Lesson, subs: list[Submission]) -> list[tuple]:
        """Grade one lesson of several submissions in one trusted pytest run (its imports
        are paid once); each submission still gets sandboxes of its own. A submission
        whose part of the report is missing or invalid is graded again alone."""
        started = time.perf_counter()
        run = self._run(subs[0].lessons_dir, lesson, submissions={s.name: s.lessons_dir for s in subs})
        parts = run.report.get("submissions", {}) if isinstance(run.report, dict) else {}
        seconds = (time.perf_counter() - started) / len(subs)
        graded = []
        for sub in subs:
            accepted = self._accept(sub, lesson, parts.get(sub.name) if isinstance(parts, dict) else None, seconds)
            graded.append((sub, *(accepted or self.grade_lesson(sub, lesson))))
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

    def grade(self, sources: list[Path], progress=None) -> tuple[list[SubmissionGrade], list[str]]:
        warnings = self.calibrate()
        subs = stage_all(sources, self.work / "submissions", self.catalog)
        similarity.flag(subs, self.catalog, self.catalog.root / "solutions")
        if self.options.shard is not None:  # intake and flags saw the whole class; grade a part
            subs = self.options.shard.select(subs)
        grades = {s.name: SubmissionGrade(s) for s in subs}
        tasks = []
        for lesson in self.catalog.lessons:
            present = [s for s in subs if lesson.filename in s.found]
            for sub in subs:
                if lesson.filename not in sub.found:
                    grades[sub.name].exercises.update(self._missing(lesson))
                    grades[sub.name].lessons[lesson.id] = LessonRun(0.0, "missing", [])
            size = max(1, self.options.chunk)
            tasks += [(lesson, present[i:i + size]) for i in range(0, len(present), size)]
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            futures = {pool.submit(self.grade_chunk, lesson, chunk): (lesson, chunk) for lesson, chunk in tasks}
            for future in as_completed(futures):
                lesson, chunk = futures[future]
                try:
                    graded = future.result()
                except Exception as error:  # one lesson never stops the batch
                    failed = {e.id: ExerciseResult(e.id, e.title, self.expected[lesson.id][e.id], 0, "failed",
                                                   "this lesson could not be graded") for e in lesson.exercises}
                    run = LessonRun(0.0, "failed", [f"{lesson.filename}: grading failed ({type(error).__name__})"])
                    graded = [(sub, {k: ExerciseResult.from_json(v.to_json()) for k, v in failed.items()}, run)
                              for sub in chunk]
                for sub, exercises, run in graded:
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
    a note and is left out (the exercise is then graded again on its own, or scores 0)."""
    rows: dict[str, ExerciseResult] = {}
    for raw in report.get("exercises", []) if isinstance(report, dict) else []:
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
