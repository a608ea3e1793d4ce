"""Grading core: a pytest plugin that loads lessons, scores exercises and reports points.

Test modules use :data:`exercise` to mark a test with the exercise it grades and its points::

    @exercise("0.1", points=2)
    def test_counts_unique_users(lesson00): ...
"""

import pytest

exercise = pytest.mark.exercise

__all__ = ["exercise"]
