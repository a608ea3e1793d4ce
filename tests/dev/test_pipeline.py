"""The lesson pipeline: stubs are generated faithfully, lessons/ never drifts from
solutions/, and loading a lesson for grading runs only its setup and exercise cells."""

import textwrap

import pytest

from recsys_course.tooling.catalog import Exercise, Lesson, load_catalog
from recsys_course.tooling.grading.loader import LessonLoadError, load_lesson
from recsys_course.tooling.lessons import LessonFormatError, make_stub, sync

CATALOG = load_catalog()
LESSON = Lesson(
    "09", "09_test", "Test",
    (Exercise("9.1", "Double it", 1, "double", ("hint",), "09"),),
)

SOURCE = textwrap.dedent(
    '''\
    # %% [markdown]
    # # A lesson

    # %% tags=["setup"]
    import math

    # %% tags=["exercise"] exercise="9.1"
    def double(x):
        """Twice x."""
        # BEGIN SOLUTION
        y = x * 2
        return y
        # END SOLUTION

    # %%
    raise RuntimeError("training cell: must not run during grading")
    '''
)


def test_lessons_tree_matches_solutions():
    drift = [r.path.name for r in sync(CATALOG, check=True) if r.changed]
    assert not drift, f"lessons/ is out of date for {drift}: run `course sync` and commit"


def test_every_exercise_function_is_defined_by_its_solution():
    for lesson in CATALOG.lessons:
        module = load_lesson(CATALOG.root / "solutions" / lesson.filename, f"s{lesson.id}")
        for ex in lesson.exercises:
            assert callable(getattr(module, ex.function, None)), (
                f"{lesson.filename} does not define {ex.function} for exercise {ex.id}"
            )


def test_stub_replaces_only_the_solution_block():
    stub = make_stub(SOURCE, LESSON)
    assert "y = x * 2" not in stub and "BEGIN SOLUTION" not in stub
    assert "NotImplementedError" in stub and "course hint 9.1" in stub
    kept = [l for l in SOURCE.splitlines() if "SOLUTION" not in l and "y = x" not in l and "return y" not in l]
    assert all(line in stub.splitlines() for line in kept)


@pytest.mark.parametrize(
    "broken, message",
    [
        (SOURCE.replace("    # END SOLUTION\n", ""), "never closed"),
        (SOURCE.replace('exercise="9.1"', ""), "outside a cell"),
        (SOURCE.replace('exercise="9.1"', 'exercise="9.2"'), "not in 09_test.yml"),
        (SOURCE.replace("# BEGIN SOLUTION", "# BEGIN").replace("# END SOLUTION", "# END"), "exactly one solution block"),
    ],
    ids=["unclosed", "outside-exercise", "unknown-id", "missing-block"],
)
def test_marker_mistakes_are_reported_with_their_line(broken, message):
    with pytest.raises(LessonFormatError, match=message):
        make_stub(broken, LESSON, "09_test.py")


def test_grading_runs_only_setup_and_exercise_cells(tmp_path):
    path = tmp_path / "09_test.py"
    path.write_text(SOURCE)
    module = load_lesson(path)
    assert module.double(4) == 8 and module.math.pi > 3


def test_a_broken_exercise_cell_does_not_hide_the_others(tmp_path):
    path = tmp_path / "09_test.py"
    path.write_text(SOURCE + '\n# %% tags=["exercise"] exercise="9.2"\ndef half(x):\n    return x / 0 +\n')
    module = load_lesson(path)
    assert module.double(2) == 4
    with pytest.raises(AttributeError) as error:
        _ = module.half
    # The learner's real mistake (file, line, syntax error) comes first, the missing name last.
    line = len(SOURCE.splitlines()) + 4
    assert str(error.value).startswith(f"09_test.py, line {line}: SyntaxError")
    assert "exercise 9.2 did not run" in str(error.value) and str(error.value).endswith("'half' is not defined")
    assert "exercise 9.2" in module.__lesson_errors__


def test_a_broken_setup_cell_fails_the_whole_lesson_clearly(tmp_path):
    path = tmp_path / "09_test.py"
    path.write_text(SOURCE.replace("import math", "import no_such_module_here"))
    with pytest.raises(LessonLoadError, match="setup cell failed.*no_such_module_here"):
        load_lesson(path)


def test_tracebacks_point_at_the_lesson_file_lines(tmp_path):
    path = tmp_path / "09_test.py"
    path.write_text(SOURCE.replace("y = x * 2", "y = x * undefined_name"))
    module = load_lesson(path)
    with pytest.raises(NameError) as error:
        module.double(1)
    frame = error.traceback[-1]
    assert frame.path == path and frame.lineno + 1 == SOURCE.splitlines().index("    y = x * 2") + 1


def test_dataclasses_work_in_graded_cells(tmp_path):
    path = tmp_path / "09_test.py"
    path.write_text(SOURCE.replace("import math", "import math\nfrom dataclasses import dataclass\n\n@dataclass\nclass Pair:\n    a: int\n    b: int"))
    module = load_lesson(path, "lesson_09_dataclass")
    assert module.Pair(1, 2).b == 2
