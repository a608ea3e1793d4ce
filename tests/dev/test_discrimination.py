"""The graded tests must discriminate: the generated stubs score 0 (each exercise "not
solved"), and every decoy (a typical wrong answer in tests/decoys/<lesson>/) loses points on
the exercise it targets and nowhere else. That the reference solutions earn every point is
checked through the instructors' door, the sandboxed calibration of
tests/dev/test_grade_reference.py, and in-process by the graded tests themselves (``make
test`` runs tests/test_lesson_*.py against solutions/).

All variants of a lesson are graded in one pytest run, each as a submission
(``--submissions-file``, as batch grading does). The runs go through the learners' door for
``course check``: a warm worker that has imported pytest, pandas and TensorFlow once and
forks a fresh process for each run, so ten lessons cost one import of the libraries, not
ten. The worker serves one run at a time, so every test here is in one xdist group.
"""

import contextlib
import os
from pathlib import Path

import pytest

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading import warm_worker
from recsys_course.tooling.grading.runner import run_tests
from recsys_course.tooling.lessons import make_stub

CATALOG = load_catalog()
DECOYS = Path(__file__).parents[1] / "decoys"
GRADED_LESSONS = [l for l in CATALOG.lessons if (CATALOG.root / "tests" / f"test_lesson_{l.id}.py").exists()]


def decoys(lesson) -> list[Path]:
    return sorted((DECOYS / lesson.id).glob("*.py"))


def decoy_target(path: Path) -> str:
    """A decoy's docstring starts with the exercise id it targets: '0.3: ...'."""
    first = path.read_text().split('"""')[1].strip()
    return first.split(":")[0]


#: The graded tests on one xdist worker: they share its graded runs and its warm worker.
SHARED_RUNS = pytest.mark.xdist_group("discrimination")


def variants(lesson, folder: Path) -> dict[str, Path]:
    """Submission name -> a folder holding that variant of the lesson file."""
    source = (CATALOG.root / "solutions" / lesson.filename).read_text()
    texts = {"stub": make_stub(source, lesson)}
    for decoy in decoys(lesson):
        # Appended as a later exercise cell, the decoy's definitions replace the reference ones.
        texts[f"decoy-{decoy.stem}"] = source + f'\n\n# %% tags=["exercise"]\n{decoy.read_text()}'
    folders = {}
    for name, text in texts.items():
        folders[name] = folder / name
        folders[name].mkdir()
        (folders[name] / lesson.filename).write_text(text)
    return folders


@contextlib.contextmanager
def workers_allowed():
    """``make test`` sets COURSE_WORKER=off so that the learner commands under test leave no
    worker behind; these runs use one, started and stopped here."""
    before = os.environ.get(warm_worker.DISABLE_ENV)
    os.environ[warm_worker.DISABLE_ENV] = "on"
    try:
        yield
    finally:
        if before is None:
            del os.environ[warm_worker.DISABLE_ENV]
        else:
            os.environ[warm_worker.DISABLE_ENV] = before


@pytest.fixture(scope="session")
def warm():
    """A warm worker for the clone for the duration of these tests; it also leaves when
    this test process ends. A worker that was already running (a developer's) is used and
    left running. Without one (it could not start), the runs are cold: slower, same verdicts."""
    root = CATALOG.root
    with workers_allowed():
        already = warm_worker.is_running(root)
        up = warm_worker.ensure(root, warm_worker.PRELOAD, parent=os.getpid())
    yield up
    if up and not already:
        warm_worker.stop(root)


@pytest.fixture(scope="session")
def graded(tmp_path_factory, warm):
    """``graded(lesson)`` -> ({submission: its report}, pytest's output), one run per lesson."""
    runs: dict[str, tuple[dict, str]] = {}

    def grade(lesson):
        if lesson.id not in runs:
            folders = variants(lesson, tmp_path_factory.mktemp(f"variants-{lesson.id}"))
            with workers_allowed():
                run = run_tests(CATALOG.root / "solutions", [lesson.id], submissions=folders, timeout=1800,
                                use_worker=warm)
            runs[lesson.id] = (run.report.get("submissions", {}), run.output)
        reports, output = runs[lesson.id]
        assert reports, f"lesson {lesson.id}: the graded run produced no report\n{output[-3000:]}"
        return reports, output

    return grade


def exercises(report):
    return {row["id"]: row for row in report["exercises"]}


def lesson_params():
    return [pytest.param(l, id=l.id) for l in GRADED_LESSONS]


@SHARED_RUNS
@pytest.mark.parametrize("lesson", lesson_params())
def test_generated_stubs_score_zero_and_are_not_solved(lesson, graded):
    reports, output = graded(lesson)
    assert set(exercises(reports["stub"])) == {e.id for e in lesson.exercises}, "every exercise must have tests"
    assert reports["stub"]["earned"] == 0, f"stubs earned points:\n{output[-3000:]}"
    # The same verdict `course check` gives a stub without running anything.
    other = {i: (r["outcome"], r["first_failure"]) for i, r in exercises(reports["stub"]).items()
             if r["outcome"] != "not_solved"}
    assert not other, f"a stub's tests must fail as 'not solved yet': {other}"


def decoy_cases():
    for lesson in GRADED_LESSONS:
        for path in decoys(lesson):
            yield pytest.param(lesson, path, id=f"{lesson.id}-{path.stem}")


@SHARED_RUNS
@pytest.mark.parametrize("lesson,decoy", list(decoy_cases()))
def test_decoy_loses_points(lesson, decoy, graded):
    target = decoy_target(decoy)
    assert target in {e.id for e in lesson.exercises}, f"{decoy.name}: unknown target {target}"
    reports, output = graded(lesson)
    rows = exercises(reports[f"decoy-{decoy.stem}"])
    assert rows[target]["earned"] < rows[target]["points"], (
        f"decoy {decoy.name} still earns full marks on {target}: the tests miss this mistake"
    )
    others = [r for i, r in rows.items() if i != target and r["earned"] < r["points"]]
    assert not others, f"decoy {decoy.name} should only cost points on {target}: {others}"


def test_every_graded_lesson_has_decoys():
    for lesson in GRADED_LESSONS:
        targets = {decoy_target(p) for p in decoys(lesson)}
        missing = {e.id for e in lesson.exercises} - targets
        assert not missing, f"lesson {lesson.id}: exercises without a decoy: {sorted(missing)}"
