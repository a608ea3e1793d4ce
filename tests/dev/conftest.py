"""Developer tests: which of them make the fast subset (``make test-fast``, marker ``fast``).

A test is fast when it needs neither TensorFlow (training, or only its import) nor a
grading subprocess nor a site build. The files of :data:`FAST_FILES` are fast but for the
tests named in :data:`NOT_FAST`; any other file may mark single tests ``@pytest.mark.fast``
(the learner-loop smoke checks: a stub answered, one real check of lesson 00, the
commands that must not lose work). With ``-m fast`` the other files are not even
collected, so their imports (TensorFlow, the serving stack) cost nothing.
"""

from pathlib import Path

import pytest

FAST_FILES = {
    "test_ann_compare.py",
    "test_claims.py",
    "test_data.py",
    "test_evaluation.py",
    "test_grading_wire.py",
    "test_pipeline.py",
}
NOT_FAST = {
    "test_strict_build_fails_on_a_false_claim",  # builds the site
    "test_tfds_source_builds_real_tfds_dataset_offline",  # imports TensorFlow Datasets
    "test_every_exercise_function_is_defined_by_its_solution",  # loads every lesson, TensorFlow too
}
MARK = "pytest.mark.fast"


def _has_fast_tests(path: Path) -> bool:
    if path.name in FAST_FILES:
        return True
    try:
        return MARK in path.read_text(encoding="utf-8")
    except OSError:
        return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    """Under ``-m fast``, skip the files that hold no fast test."""
    if config.option.markexpr == "fast" and collection_path.suffix == ".py" \
            and collection_path.name.startswith("test_") and not _has_fast_tests(collection_path):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in FAST_FILES and item.path.parent == Path(__file__).parent \
                and item.originalname not in NOT_FAST:
            item.add_marker(pytest.mark.fast)
