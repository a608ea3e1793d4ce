"""The one error type the data module raises for bad input."""


class DataSourceError(ValueError):
    """A data source could not be loaded. The message names what failed and how to fix it."""
