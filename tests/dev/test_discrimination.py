"""The graded tests must discriminate: reference solutions score 100 %, the generated stubs
score 0, and every decoy (a typical wrong answer in tests/decoys/<lesson>/) loses points on
the exercise it targets. Each case grades a whole lesson in a subprocess, as learners and
instructors do."""

from pathlib import Path

import pytest

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.runner import run_tests
from recsys_course.tooling.lessons import make_stub

CATALOG = load_catalog()
DECOYS = Path(__file__).parents[1] / "decoys"
GRADED_LESSONS = [l for l in CATALOG.lessons if (CATALOG.root / "tests" / f"test_lesson_{l.id}.py").exists()]


def decoy_cases():
    for lesson in GRADED_LESSONS:
        for path in sorted((DECOYS / lesson.id).glob("*.py")):
            yield pytest.param(lesson, path, id=f"{lesson.id}-{path.stem}")


def decoy_target(path: Path) -> str:
    """A decoy's docstring starts with the exercise id it targets: '0.3: ...'."""
    first = path.read_text().split('"""')[1].strip()
    return first.split(":")[0]


def exercises(report):
    return {row["id"]: row for row in report["exercises"]}


@pytest.mark.parametrize("lesson", GRADED_LESSONS, ids=lambda l: l.id)
def test_solutions_score_full_marks(lesson):
    run = run_tests(CATALOG.root / "solutions", [lesson.id])
    assert run.report, run.output[-3000:]
    rows = exercises(run.report)
    assert set(rows) == {e.id for e in lesson.exercises}, "every exercise must have tests"
    for ex in lesson.exercises:
        assert rows[ex.id]["points"] == ex.points, (
            f"tests of {ex.id} award {rows[ex.id]['points']} points, {lesson.slug}.yml says {ex.points}"
        )
    assert run.report["percent"] == 100.0, run.output[-3000:]


@pytest.mark.parametrize("lesson", GRADED_LESSONS, ids=lambda l: l.id)
def test_generated_stubs_score_zero(lesson, tmp_path):
    source = (CATALOG.root / "solutions" / lesson.filename).read_text()
    (tmp_path / lesson.filename).write_text(make_stub(source, lesson))
    run = run_tests(tmp_path, [lesson.id])
    assert run.report, run.output[-3000:]
    assert run.report["earned"] == 0, f"stubs earned points:\n{run.output[-3000:]}"
    assert run.returncode != 0


@pytest.mark.parametrize("lesson,decoy", list(decoy_cases()))
def test_decoy_loses_points(lesson, decoy, tmp_path):
    target = decoy_target(decoy)
    assert target in {e.id for e in lesson.exercises}, f"{decoy.name}: unknown target {target}"
    source = (CATALOG.root / "solutions" / lesson.filename).read_text()
    # Appended as a later exercise cell, the decoy's definitions replace the reference ones.
    patched = source + f'\n\n# %% tags=["exercise"]\n{decoy.read_text()}'
    (tmp_path / lesson.filename).write_text(patched)
    run = run_tests(tmp_path, [lesson.id])
    rows = exercises(run.report)
    assert rows[target]["earned"] < rows[target]["points"], (
        f"decoy {decoy.name} still earns full marks on {target}: the tests miss this mistake"
    )
    others = [r for i, r in rows.items() if i != target and r["earned"] < r["points"]]
    assert not others, f"decoy {decoy.name} should only cost points on {target}: {others}"


def test_every_graded_lesson_has_decoys():
    for lesson in GRADED_LESSONS:
        targets = {decoy_target(p) for p in (DECOYS / lesson.id).glob("*.py")}
        missing = {e.id for e in lesson.exercises} - targets
        assert not missing, f"lesson {lesson.id}: exercises without a decoy: {sorted(missing)}"
