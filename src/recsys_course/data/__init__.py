"""MovieLens ratings with TensorFlow Datasets' feature names, from TFDS, a local folder or zip,
or a seeded synthetic generator. See :func:`load_movielens`."""

from recsys_course.data.errors import DataSourceError
from recsys_course.data.movielens import MovieLens, RATING_COLUMNS, USER_COLUMNS
from recsys_course.data.sources import load_movielens, resolve_source, tfds_data_dir
from recsys_course.data.split import leave_last_k, split_folds, split_ratings

__all__ = [
    "DataSourceError",
    "MovieLens",
    "RATING_COLUMNS",
    "USER_COLUMNS",
    "leave_last_k",
    "load_movielens",
    "resolve_source",
    "split_folds",
    "split_ratings",
    "tfds_data_dir",
]
