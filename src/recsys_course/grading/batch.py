"""Batch grading: a folder of submissions in, per-exercise points and reports out.

What a submission can and cannot do (docs/instructors.md says the same to instructors):

* Only its lesson files are used, copied out of its folder or zip (never extracted whole):
  its ``tests/``, ``conftest.py``, ``pytest.ini``, ``pyproject.toml`` and plugins are
  ignored, and the course's own tests grade it from a copy whose checksum is verified after
  every run.
* Each lesson is graded in its own process, with a time limit, an address-space limit, no
  network (a fresh network namespace where ``unshare`` works) and its own scratch folder as
  ``HOME``/``TMPDIR``. Inside, exits, hangs and replaced grader functions are contained per
  test (``guard.py``). When a lesson's process still dies or times out, its exercises are
  graded one by one, so a crash costs only the exercise that crashes.
* It is not a security sandbox: the graded code runs with the grader's user rights and
  could read or damage what that user can. Grade untrusted code in a container or VM.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import stat
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from recsys_course.catalog import Catalog, Lesson, load_catalog
from recsys_course.grading.runner import GradingRun, Isolation, network_off_prefix, run_tests

MAX_LESSON_BYTES = 2 * 1024 * 1024  # a lesson file is a few dozen KB; refuse anything huge


@dataclass
class Submission:
    name: str
    source: Path
    folder: Path  # staging folder: lessons/ holds the copied lesson files
    found: dict[str, str] = field(default_factory=dict)  # lesson filename -> where it came from
    problems: list[str] = field(default_factory=list)

    @property
    def lessons_dir(self) -> Path:
        return self.folder / "lessons"


@dataclass
class ExerciseGrade:
    id: str
    title: str
    points: int
    earned: int
    status: str
    first_failure: str  # from visible tests only: safe to show the learner
    tests: list[dict]  # every test, hidden ones included: instructor only


@dataclass
class LessonRun:
    seconds: float
    mode: str  # "whole", "per-exercise" or "missing"
    notes: list[str]


@dataclass
class SubmissionGrade:
    submission: Submission
    exercises: dict[str, ExerciseGrade] = field(default_factory=dict)
    lessons: dict[str, LessonRun] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(e.earned for e in self.exercises.values())

    @property
    def notes(self) -> list[str]:
        return self.submission.problems + [n for run in self.lessons.values() for n in run.notes]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "submission"


def expand(paths: list[Path], catalog: Catalog) -> list[Path]:
    """Each path is a submission, unless it is a folder holding no lesson files itself, in
    which case every folder and zip inside it is one (a class folder)."""
    names = {l.filename for l in catalog.lessons}
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and not any(
            (path / n).exists() or (path / "lessons" / n).exists() for n in names
        ):
            found += sorted(p for p in path.iterdir() if p.is_dir() or p.suffix == ".zip")
        else:
            found.append(path)
    return found


def stage(source: Path, staging: Path, catalog: Catalog, taken: set[str]) -> Submission:
    """Copy a submission's lesson files (and nothing else) into ``staging``."""
    name = safe_name(source.stem if source.suffix == ".zip" else source.name)
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    sub = Submission(name, source, staging / name)
    sub.lessons_dir.mkdir(parents=True)
    wanted = {l.filename for l in catalog.lessons}
    if not source.exists():
        sub.problems.append(f"{source} does not exist")
    elif source.is_dir():
        for filename in sorted(wanted):
            for candidate in (source / "lessons" / filename, source / filename):
                if candidate.is_symlink() or not candidate.is_file():
                    continue
                if candidate.stat().st_size > MAX_LESSON_BYTES:
                    sub.problems.append(f"{candidate.name} is larger than 2 MB; not graded")
                    break
                _keep(sub, filename, candidate.read_bytes(), str(candidate.relative_to(source)))
                break
    elif zipfile.is_zipfile(source):
        _stage_zip(sub, source, wanted)
    else:
        sub.problems.append(f"{source.name} is neither a folder nor a readable zip archive")
    if not sub.found and not sub.problems:
        sub.problems.append("no lesson files found (expected lessons/NN_*.py)")
    return sub


def _stage_zip(sub: Submission, source: Path, wanted: set[str]) -> None:
    try:
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            # Prefer lessons/NAME over NAME elsewhere; ignore symlinks stored in the zip.
            members.sort(key=lambda m: (not m.filename.endswith(f"lessons/{Path(m.filename).name}"), m.filename))
            for member in members:
                filename = Path(member.filename).name
                is_link = stat.S_ISLNK(member.external_attr >> 16)
                if filename not in wanted or filename in sub.found or is_link:
                    continue
                if member.file_size > MAX_LESSON_BYTES:
                    sub.problems.append(f"{member.filename} is larger than 2 MB; not graded")
                    continue
                with archive.open(member) as handle:
                    data = handle.read(MAX_LESSON_BYTES + 1)
                _keep(sub, filename, data[:MAX_LESSON_BYTES], member.filename)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        sub.problems.append(f"{source.name} could not be read as a zip archive ({error})")


def _keep(sub: Submission, filename: str, data: bytes, origin: str) -> None:
    (sub.lessons_dir / filename).write_bytes(data)
    sub.found[filename] = origin


class ProtectedTree:
    """A folder the grader trusts (its private copy of tests, definitions and package):
    remembered at the start, checked after every graded run, and put back if graded code
    changed it. New files are deleted too: a planted ``conftest.py`` would be loaded by
    later runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.content = {p: p.read_bytes() for p in self._files()}

    def _files(self) -> list[Path]:
        return [p for p in self.folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]

    def restore(self) -> list[str]:
        """Undo changes; return the changed paths (empty when nothing changed)."""
        changed = []
        for path in self._files():
            if path not in self.content:
                path.unlink()
                changed.append(f"{path} (added, removed)")
        for path, data in self.content.items():
            try:
                same = path.read_bytes() == data
            except OSError:
                same = False
            if not same:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                changed.append(str(path))
        return changed


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


class Grader:
    """Grades submissions against a verified copy of the course's tests."""

    def __init__(self, options: Options, catalog: Catalog | None = None) -> None:
        self.options = options
        self.catalog = catalog or load_catalog()
        self.work = Path(tempfile.mkdtemp(prefix="course-batch-"))
        # Graded processes see a private copy of everything the grader trusts (tests,
        # exercise definitions, the support package via PYTHONPATH), never the clone itself:
        # what a submission changes there is undone after each run, and the clone an
        # instructor works in is never written to.
        self.private = self.work / "grader"
        self.tests = self.private / "tests"
        shutil.copytree(self.catalog.root / "tests", self.tests,
                        ignore=shutil.ignore_patterns("__pycache__", "decoys", "browser"))
        shutil.copy2(self.catalog.root / "pyproject.toml", self.private / "pyproject.toml")
        (self.private / "solutions").mkdir()
        for definition in (self.catalog.root / "solutions").glob("*.yml"):
            shutil.copy2(definition, self.private / "solutions" / definition.name)
        package = Path(__file__).resolve().parents[1]
        shutil.copytree(package, self.private / "src" / package.name,
                        ignore=shutil.ignore_patterns("__pycache__"))
        self.hidden = None
        if options.extra_tests:
            self.hidden = self.tests / "_instructor"
            shutil.copytree(options.extra_tests, self.hidden, ignore=shutil.ignore_patterns("__pycache__"))
        self.protected = ProtectedTree(self.private)
        self.child_env = {"PYTHONPATH": str(self.private / "src"), "COURSE_ROOT": str(self.private)}
        self.expected: dict[str, dict[str, int]] = {}  # lesson -> exercise -> max points

    def extra_for(self, lesson: Lesson) -> list[Path]:
        if self.hidden is None:
            return []
        return sorted(self.hidden.glob(f"test_lesson_{lesson.id}*.py"))

    def _run(self, lessons_dir: Path, lesson: Lesson, scratch: Path, exercises: list[str] | None = None,
             timeout: float | None = None) -> GradingRun:
        scratch.mkdir(parents=True, exist_ok=True)
        return run_tests(
            lessons_dir, [lesson.id], catalog=self.catalog, exercises=exercises,
            timeout=timeout or self.options.timeout, tests_dir=self.tests,
            extra_tests=self.extra_for(lesson), hidden_dir=self.hidden,
            isolation=Isolation(memory_mb=self.options.memory_mb, home=scratch, extra_env=self.child_env),
            test_timeout=self.options.test_timeout, cell_timeout=self.options.cell_timeout,
        )

    def calibrate(self) -> list[str]:
        """Grade the reference solutions: the maximum points per exercise (hidden tests
        included), and a warning for every exercise the solutions do not pass."""
        warnings = []
        for lesson in self.catalog.lessons:
            run = self._run(self.catalog.root / "solutions", lesson, self.work / "calibration" / lesson.id)
            rows = {r["id"]: r for r in run.report.get("exercises", [])}
            self.expected[lesson.id] = {e.id: rows.get(e.id, {}).get("points", e.points) for e in lesson.exercises}
            for ex in lesson.exercises:
                row = rows.get(ex.id)
                if row is None or row["earned"] != row["points"]:
                    warnings.append(f"the reference solution of {ex.id} does not get full marks: check the tests")
        return warnings

    def _restore_protected(self, lesson: Lesson, notes: list[str]) -> None:
        changed = self.protected.restore()
        if changed:
            notes.append(
                f"{lesson.filename} changed grader files ({', '.join(changed[:3])}); they were "
                "restored before the next run (this run's tests had already been loaded)"
            )

    def _valid(self, report: dict, lesson: Lesson, exercises: list[str] | None) -> bool:
        rows = {r.get("id"): r for r in report.get("exercises", [])}
        expected = self.expected.get(lesson.id, {})
        for ex_id in exercises or [e.id for e in lesson.exercises]:
            row = rows.get(ex_id)
            if row is None or row.get("points") != expected.get(ex_id) or not 0 <= row.get("earned", -1) <= row["points"]:
                return False
        return True

    def grade_lesson(self, sub: Submission, lesson: Lesson) -> tuple[dict[str, ExerciseGrade], LessonRun]:
        started = time.perf_counter()
        expected = self.expected[lesson.id]
        exercises = {
            e.id: ExerciseGrade(e.id, e.title, expected[e.id], 0, "missing", "lesson file not submitted", [])
            for e in lesson.exercises
        }
        if lesson.filename not in sub.found:
            return exercises, LessonRun(0.0, "missing", [])
        notes: list[str] = []
        scratch = sub.folder / "scratch" / lesson.id
        run = self._run(sub.lessons_dir, lesson, scratch)
        self._restore_protected(lesson, notes)
        if run.report and self._valid(run.report, lesson, None):
            self._fill(exercises, run.report)
            notes += [f"{lesson.filename}: {n}" for n in run.report.get("notes", [])]
            return exercises, LessonRun(time.perf_counter() - started, "whole", notes)
        why = "timed out" if run.timed_out else f"ended with exit code {run.returncode} without a valid report"
        notes.append(f"{lesson.filename}: the grading process {why}; exercises were graded one by one")
        for ex in lesson.exercises:
            single = self._run(sub.lessons_dir, lesson, scratch, exercises=[ex.id])
            self._restore_protected(lesson, notes)
            if single.report and self._valid(single.report, lesson, [ex.id]):
                self._fill(exercises, single.report, only=ex.id)
            else:
                reason = "timed out" if single.timed_out else f"crashed the grader (exit code {single.returncode})"
                self._zero({ex.id: exercises[ex.id]}, f"the code of this exercise {reason}")
        return exercises, LessonRun(time.perf_counter() - started, "per-exercise", notes)

    @staticmethod
    def _zero(exercises: dict[str, ExerciseGrade], why: str) -> dict[str, ExerciseGrade]:
        for grade in exercises.values():
            grade.earned, grade.status, grade.first_failure = 0, "failed", why
        return exercises

    @staticmethod
    def _fill(exercises: dict[str, ExerciseGrade], report: dict, only: str | None = None) -> None:
        for row in report["exercises"]:
            if row["id"] in exercises and (only is None or row["id"] == only):
                grade = exercises[row["id"]]
                grade.earned, grade.status = row["earned"], row["status"]
                grade.first_failure = row.get("first_failure", "")
                grade.tests = [
                    {"test": t["nodeid"].split("::")[-1], "points": t["points"], "passed": t["passed"],
                     "failure": t["failure"], "hidden": t["hidden"]}
                    for t in row.get("tests", [])
                ]

    def grade(self, sources: list[Path], progress=None) -> tuple[list[SubmissionGrade], list[str]]:
        warnings = self.calibrate()
        taken: set[str] = set()
        subs = [stage(s, self.work / "submissions", self.catalog, taken) for s in expand(sources, self.catalog)]
        grades = {s.name: SubmissionGrade(s) for s in subs}
        tasks = [(s, l) for s in subs for l in self.catalog.lessons]
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            futures = {pool.submit(self.grade_lesson, s, l): (s, l) for s, l in tasks}
            for future in as_completed(futures):
                sub, lesson = futures[future]
                exercises, run = future.result()
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

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def max_points(grades: list[SubmissionGrade], catalog: Catalog) -> dict[str, int]:
    if grades:
        return {i: e.points for i, e in grades[0].exercises.items()}
    return {e.id: e.points for e in catalog.exercises}


def write_reports(grades: list[SubmissionGrade], catalog: Catalog, options: Options, warnings: list[str]) -> None:
    out = options.out
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    maxima = max_points(grades, catalog)
    possible = sum(maxima.values())
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", *maxima, "total", "max", "notes"])
        for g in grades:
            writer.writerow([g.submission.name, *(g.exercises[i].earned for i in maxima), g.total, possible,
                             " | ".join(g.notes)])
    payload = {
        "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "max_points": maxima,
        "possible": possible,
        "isolation": {
            "network_off": bool(network_off_prefix()),
            "memory_mb": options.memory_mb,
            "lesson_timeout_s": options.timeout,
            "test_timeout_s": options.test_timeout,
        },
        "warnings": warnings,
        "submissions": [
            {
                "name": g.submission.name,
                "source": str(g.submission.source),
                "lesson_files": g.submission.found,
                "total": g.total,
                "possible": possible,
                "percent": round(100 * g.total / possible, 2) if possible else 0.0,
                "notes": g.notes,
                "lessons": {k: vars(v) for k, v in sorted(g.lessons.items())},
                "exercises": [vars(e) for e in g.exercises.values()],
            }
            for g in grades
        ],
    }
    (out / "grades.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    for g in grades:
        (out / "feedback" / f"{g.submission.name}.md").write_text(feedback(g, catalog, possible), encoding="utf-8")
    if options.junit:
        (out / "junit").mkdir(exist_ok=True)
        for g in grades:
            junit(g).write(out / "junit" / f"{g.submission.name}.xml", encoding="utf-8", xml_declaration=True)


def feedback(grade: SubmissionGrade, catalog: Catalog, possible: int) -> str:
    """Learner-facing Markdown: points, first visible failure and a hint per exercise.
    Instructor-only tests count in the points but their names and messages are left out."""
    lines = [f"# Feedback for {grade.submission.name}", "",
             f"**Total: {grade.total} / {possible} points**", ""]
    for problem in grade.submission.problems:
        lines.append(f"- Note: {problem}")
    lines += ["", "| exercise | points | status | what to look at |", "|---|---|---|---|"]
    for ex_id, ex in grade.exercises.items():
        hint = ""
        if ex.earned < ex.points:
            hint = f"Hint: {catalog.exercise(ex_id).hints[0]}"
        message = ex.first_failure.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {ex_id} {ex.title} | {ex.earned} / {ex.points} | {ex.status} | {message} {hint} |")
    return "\n".join(lines) + "\n"


def junit(grade: SubmissionGrade) -> ET.ElementTree:
    suite = ET.Element("testsuite", name=grade.submission.name)
    count = failures = 0
    for ex in grade.exercises.values():
        for test in ex.tests or [{"test": "lesson", "passed": False, "failure": ex.first_failure, "points": ex.points}]:
            count += 1
            case = ET.SubElement(suite, "testcase", classname=f"exercise_{ex.id}", name=test["test"])
            if not test["passed"]:
                failures += 1
                ET.SubElement(case, "failure", message=test.get("failure", "")[:500])
    suite.set("tests", str(count))
    suite.set("failures", str(failures))
    return ET.ElementTree(suite)


def summary_table(grades: list[SubmissionGrade], possible: int) -> str:
    width = max([len(g.submission.name) for g in grades] + [10])
    lines = [f"{'submission':<{width}}  {'points':>11}  notes"]
    for g in grades:
        percent = 100 * g.total / possible if possible else 0
        note = g.notes[0][:70] + (" ..." if len(g.notes) > 1 else "") if g.notes else ""
        lines.append(f"{g.submission.name:<{width}}  {g.total:>4}/{possible:<3} {percent:3.0f}%  {note}")
    return "\n".join(lines)
