"""The one error type the data module raises for bad input."""

from recsys_course.errors import CourseError


class DataSourceError(CourseError, ValueError):
    """A data source could not be loaded. The message names what failed and how to fix it."""
