"""Grading core: a pytest plugin that loads lessons, scores exercises and reports points.

Test modules use :data:`exercise` to mark a test with the exercise it grades and its points::

    @exercise("0.1", points=2)
    def test_counts_unique_users(lesson00): ...

pytest is imported on first use of :data:`exercise`, not with this package: ``course check``
reads reports and talks to the warm worker through its modules, and the sandbox worker
imports it (for ``wire``), all without loading pytest.
"""


def __getattr__(name: str):
    if name == "exercise":
        import pytest

        return pytest.mark.exercise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sandboxed(lesson, function, *, uses=()):
    """See :func:`recsys_course.tooling.grading.proxy.sandboxed` (imported lazily)."""
    from recsys_course.tooling.grading.proxy import sandboxed as define

    return define(lesson, function, uses=uses)


def type_names(value) -> list[str]:
    """See :func:`recsys_course.tooling.grading.proxy.type_names`."""
    from recsys_course.tooling.grading.proxy import type_names as names

    return names(value)


__all__ = ["exercise", "sandboxed", "type_names"]
