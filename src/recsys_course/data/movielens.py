"""The in-memory form every data source produces."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: Columns every source provides, named as in ``tfds.load("movielens/100k-ratings")``.
RATING_COLUMNS = [
    "user_id",
    "movie_id",
    "movie_title",
    "movie_genres",
    "user_rating",
    "timestamp",
]
#: Demographic columns: present in MovieLens 100K and the synthetic data, absent from
#: ml-latest-small (GroupLens stopped publishing demographics).
USER_COLUMNS = [
    "raw_user_age",
    "bucketized_user_age",
    "user_gender",
    "user_occupation_label",
    "user_occupation_text",
    "user_zip_code",
]


@dataclass(frozen=True)
class MovieLens:
    """Ratings and movies from one source.

    ``ratings`` has one row per rating with the columns in :data:`RATING_COLUMNS` (ids as
    strings, ``user_rating`` float32 in 0.5-5, ``timestamp`` int64 seconds, ``movie_genres``
    a list of genre names) plus :data:`USER_COLUMNS` when the source has demographics.
    ``movies`` has one row per movie: ``movie_id``, ``movie_title``, ``movie_genres``.
    ``source`` is the concrete source that produced the data (never ``"auto"``), and
    ``description`` a one-line human summary for printing on pages and in benchmarks.
    """

    ratings: pd.DataFrame
    movies: pd.DataFrame
    source: str
    description: str

    @property
    def has_demographics(self) -> bool:
        return all(column in self.ratings.columns for column in USER_COLUMNS)

    def summary(self) -> str:
        r = self.ratings
        return (
            f"{self.description}: {len(r):,} ratings by {r['user_id'].nunique():,} users "
            f"on {r['movie_id'].nunique():,} movies ({len(self.movies):,} in the catalogue)"
        )

    def __repr__(self) -> str:  # the default would print both frames in full
        return f"MovieLens(source={self.source!r}, {self.summary()})"


def finish_frames(ratings: pd.DataFrame, movies: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give every source the same column order and dtypes.

    Genre lists become Python lists; a rating row whose genres are already a list keeps it
    (large sources share one list per movie across its rows, and copying would cost a list
    per rating)."""
    ratings = ratings.copy()
    ratings["user_id"] = ratings["user_id"].astype(str)
    ratings["movie_id"] = ratings["movie_id"].astype(str)
    ratings["user_rating"] = ratings["user_rating"].astype("float32")
    ratings["timestamp"] = ratings["timestamp"].astype("int64")
    ratings["movie_genres"] = ratings["movie_genres"].map(_as_list)
    for age in ("raw_user_age", "bucketized_user_age"):  # float32 in TFDS, from every source
        if age in ratings:
            ratings[age] = ratings[age].astype("float32")
    extra = [c for c in USER_COLUMNS if c in ratings.columns]
    ratings = ratings[RATING_COLUMNS + extra].reset_index(drop=True)
    movies = movies[["movie_id", "movie_title", "movie_genres"]].copy()
    movies["movie_id"] = movies["movie_id"].astype(str)
    movies["movie_genres"] = movies["movie_genres"].map(_as_list)
    return ratings, movies.reset_index(drop=True)


def _as_list(genres) -> list:
    return genres if type(genres) is list else list(genres)
