"""Reading the MovieLens files GroupLens publishes, in every layout, into TFDS feature names.

GroupLens has used four layouts over the years; the folder's files say which one it is:

=================  ===========================================  ==========================
layout             files                                        datasets
=================  ===========================================  ==========================
``ml-100k``        ``u.data`` (tabs), ``u.item``, ``u.user``     MovieLens 100K
``ml-1m``          ``ratings.dat`` (``::``), ``movies.dat``,     MovieLens 1M
                   ``users.dat``
``ml-10m``         ``ratings.dat`` (``::``), ``movies.dat``      MovieLens 10M (no users)
``current``        ``ratings.csv``, ``movies.csv``              ml-20m, ml-25m, ml-32m,
                                                                ml-latest, ml-latest-small
=================  ===========================================  ==========================

The features are those of ``tfds.load("movielens/...")``: TFDS's own parsers
(``tensorflow_datasets.structured.movielens_parsing``) define them, and
``tests/dev/test_data.py`` checks that these readers give the same rows on every layout
TFDS has. The readers here are vectorised with pandas because TFDS's parsers build one
Python dictionary per rating: fine for 100,000 ratings, minutes and gigabytes for 25
million. Each movie's title and genre list are shared by all its rating rows (one list
object per movie), so a large dataset does not hold millions of copies.

Ratings whose movie (or, with demographics, user) is missing from the other files carry no
title or genres: they are dropped, and the loader reports how many.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_course.data.errors import DataSourceError

#: ``u.item``'s 19 genre flags in order, named as TFDS names them ("Children's" is "Children").
GENRES_100K = [
    "Unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]
#: TFDS's bucketized_user_age: the largest threshold not above the age (1 below 18).
AGE_THRESHOLDS = [18, 25, 35, 45, 50, 56]
#: MovieLens 100K occupations and the labels TFDS standardises them to (shared with 1M).
OCCUPATION_LABELS_100K = {
    "administrator": "clerical/admin", "artist": "artist", "doctor": "doctor/health care",
    "educator": "academic/educator", "engineer": "technician/engineer",
    "entertainment": "entertainment", "executive": "executive/managerial",
    "healthcare": "doctor/health care", "homemaker": "homemaker", "lawyer": "lawyer",
    "librarian": "librarian", "marketing": "sales/marketing", "none": "other/not specified",
    "other": "other/not specified", "programmer": "programmer", "retired": "retired",
    "salesman": "sales/marketing", "scientist": "scientist", "student": "student",
    "technician": "technician/engineer", "writer": "writer",
}
#: MovieLens 1M's occupation codes 0-20, as TFDS names them.
OCCUPATIONS_1M = [
    "other/not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]


def bucketize_age(ages) -> np.ndarray:
    """TFDS's ``bucketized_user_age`` of each age: the largest threshold not above it, else 1."""
    ages = np.asarray(ages)
    edges = np.asarray(AGE_THRESHOLDS)
    position = np.searchsorted(edges, ages, side="right")
    return np.where(position == 0, 1, edges[np.maximum(position - 1, 0)]).astype(int)


@dataclass(frozen=True)
class Orphans:
    """Ratings dropped because their movie (or user) is missing from the other files."""

    count: int = 0
    file: str = ""
    first_line: int = 0  # 1-based line number in ``file`` of the first one
    first_row: str = ""  # its fields, comma-joined


@dataclass(frozen=True)
class Layout:
    name: str
    needed: tuple[str, ...]  # files that must all be present
    read: Callable[[Path], tuple[pd.DataFrame, pd.DataFrame, Orphans]]
    label: str  # what readers know it as

    def label_of(self, root: Path) -> str:
        """What readers call the dataset in ``root`` (the current layout holds several)."""
        return f"MovieLens ({root.name})" if self.name == "current" else self.label


def detect(root: Path) -> Layout | None:
    """The layout of the folder ``root`` by the ratings file it holds, or None."""
    if (root / "u.data").exists():
        return LAYOUTS["ml-100k"]
    if (root / "ratings.dat").exists():
        return LAYOUTS["ml-1m"] if (root / "users.dat").exists() else LAYOUTS["ml-10m"]
    if (root / "ratings.csv").exists():
        return LAYOUTS["current"]
    return None


def expected_files() -> str:
    """The layouts, for error messages."""
    return "; ".join(f"{', '.join(l.needed)} ({l.label})" for l in LAYOUTS.values())


def read(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, Layout, Orphans]:
    """Ratings and movies of the GroupLens folder ``root`` with TFDS feature names, its layout
    and the orphan ratings dropped; :class:`DataSourceError` (naming the layout
    and the missing or damaged file) when the folder is incomplete or unreadable."""
    layout = detect(root)
    if layout is None:
        raise DataSourceError(
            f"{root} holds no MovieLens ratings: expected one of the GroupLens layouts: "
            f"{expected_files()}. Fix: point COURSE_DATA at the unpacked GroupLens folder or zip."
        )
    missing = [name for name in layout.needed if not (root / name).exists()]
    if missing:
        raise DataSourceError(
            f"{root} is missing {', '.join(missing)} (the {layout.name} layout of {layout.label} "
            f"needs {', '.join(layout.needed)}). Fix: unpack the complete GroupLens archive again."
        )
    try:
        ratings, movies, orphans = layout.read(root)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataSourceError(
            f"Could not parse the {layout.name} files in {root} ({type(error).__name__}: "
            f"{str(error)[:300]}). Fix: the files look damaged; download and unpack the "
            "GroupLens archive again."
        ) from error
    if ratings.empty:
        raise DataSourceError(f"{root} contains no ratings. Fix: unpack the archive again.")
    return ratings, movies, layout, orphans


# ----------------------------------------------------------------------------- helpers

def _split_lines(path: Path, separator: str, fields: int, encoding: str = "latin-1") -> list[list[str]]:
    """Lines of a small GroupLens file split on ``separator`` into at most ``fields`` parts
    (the last part keeps any separator inside it, as a title may)."""
    rows = []
    with open(path, encoding=encoding) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split(separator, fields - 1) if fields > 1 else [line]
            if len(parts) != fields:
                raise ValueError(f"{path.name} line {number} has {len(parts)} fields, expected {fields}")
            rows.append(parts)
    return rows


def _double_colon(path: Path, names: list[str]) -> pd.DataFrame:
    """A ``::``-separated numeric file (``ratings.dat``) read by pandas' C parser: splitting
    on ``:`` leaves an empty column between fields, which is dropped."""
    raw = pd.read_csv(path, sep=":", header=None, dtype=str, encoding="latin-1", engine="c")
    if raw.shape[1] != 2 * len(names) - 1:
        raise ValueError(f"{path.name} has {(raw.shape[1] + 1) // 2} fields per line, expected {len(names)}")
    frame = raw.iloc[:, ::2]
    frame.columns = names
    return frame


def _ratings_frame(ids: pd.DataFrame, movies: pd.DataFrame, users: pd.DataFrame | None,
                   file: str, header_lines: int) -> tuple[pd.DataFrame, Orphans]:
    """Rating rows with each movie's shared title and genre list (and the user columns),
    orphans dropped; ``ids`` has user_id, movie_id, user_rating, timestamp as strings, in
    file order after ``header_lines`` header lines."""
    known = ids["movie_id"].isin(movies["movie_id"])
    if users is not None:
        known &= ids["user_id"].isin(users["user_id"])
    orphans = Orphans()
    if not known.all():
        first = int(np.flatnonzero(~known.to_numpy())[0])
        orphans = Orphans(int((~known).sum()), file, first + 1 + header_lines,
                          ",".join(ids.iloc[first].astype(str)))
        ids = ids[known].reset_index(drop=True)
    by_movie = movies.set_index("movie_id")
    frame = pd.DataFrame({
        "user_id": ids["user_id"].astype(str).to_numpy(),
        "movie_id": ids["movie_id"].astype(str).to_numpy(),
        "movie_title": ids["movie_id"].map(by_movie["movie_title"]).to_numpy(),
        "movie_genres": ids["movie_id"].map(by_movie["movie_genres"]).to_numpy(),
        "user_rating": ids["user_rating"].astype("float32").to_numpy(),
        "timestamp": ids["timestamp"].astype("int64").to_numpy(),
    })
    if users is not None:
        by_user = users.set_index("user_id")
        for column in by_user.columns:
            frame[column] = ids["user_id"].map(by_user[column]).to_numpy()
    return frame, orphans


# ----------------------------------------------------------------------------- layouts

def _read_100k(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, Orphans]:
    ids = pd.read_csv(root / "u.data", sep="\t", header=None, dtype=str, encoding="latin-1",
                      names=["user_id", "movie_id", "user_rating", "timestamp"])
    movies = pd.DataFrame(
        [(fields[0], fields[1], [g for g, flag in zip(GENRES_100K, fields[5:]) if flag == "1"])
         for fields in _split_lines(root / "u.item", "|", 5 + len(GENRES_100K))],
        columns=["movie_id", "movie_title", "movie_genres"],
    )
    users = pd.DataFrame(_split_lines(root / "u.user", "|", 5),
                         columns=["user_id", "age", "gender", "occupation", "zip"])
    unknown = sorted(set(users["occupation"]) - set(OCCUPATION_LABELS_100K))
    if unknown:
        raise ValueError(f"u.user names occupations TFDS does not know: {unknown[:5]}")
    age = users["age"].astype(int)
    users = pd.DataFrame({
        "user_id": users["user_id"],
        "raw_user_age": age.astype("float32"),
        "bucketized_user_age": bucketize_age(age).astype("float32"),
        "user_gender": (users["gender"] == "M").to_numpy(),
        "user_occupation_label": users["occupation"].map(OCCUPATION_LABELS_100K),
        "user_occupation_text": users["occupation"],
        "user_zip_code": users["zip"],
    })
    ratings, orphans = _ratings_frame(ids, movies, users, "u.data", 0)
    return ratings, movies, orphans


def _dat_movies(root: Path) -> pd.DataFrame:
    rows = _split_lines(root / "movies.dat", "::", 3)
    return pd.DataFrame(
        [(i, title, ["Children" if g == "Children's" else g for g in genres.split("|")])
         for i, title, genres in rows],
        columns=["movie_id", "movie_title", "movie_genres"],
    )


def _read_1m(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, Orphans]:
    ids = _double_colon(root / "ratings.dat", ["user_id", "movie_id", "user_rating", "timestamp"])
    movies = _dat_movies(root)
    users = _double_colon(root / "users.dat", ["user_id", "gender", "age", "occupation", "zip"])
    occupation = users["occupation"].astype(int).map(dict(enumerate(OCCUPATIONS_1M)))
    if occupation.isna().any():
        raise ValueError("users.dat has occupation codes outside 0-20")
    # ML-1M publishes age groups only (1, 18, 25, ...), which are TFDS's buckets; it has
    # no raw age, so these data have no `raw_user_age` (and no full set of demographics).
    students = occupation.isin(["K-12 student", "college/grad student"])  # TFDS merges them
    users = pd.DataFrame({
        "user_id": users["user_id"],
        "bucketized_user_age": users["age"].astype("float32"),
        "user_gender": (users["gender"] == "M").to_numpy(),
        "user_occupation_label": occupation.where(~students, "student"),
        "user_occupation_text": occupation,
        "user_zip_code": users["zip"],
    })
    ratings, orphans = _ratings_frame(ids, movies, users, "ratings.dat", 0)
    return ratings, movies, orphans


def _read_10m(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, Orphans]:
    ids = _double_colon(root / "ratings.dat", ["user_id", "movie_id", "user_rating", "timestamp"])
    movies = _dat_movies(root)
    ratings, orphans = _ratings_frame(ids, movies, None, "ratings.dat", 0)
    return ratings, movies, orphans


def _read_current(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, Orphans]:
    ids = pd.read_csv(root / "ratings.csv", dtype=str, usecols=["userId", "movieId", "rating", "timestamp"],
                      engine="c").rename(columns={"userId": "user_id", "movieId": "movie_id",
                                                  "rating": "user_rating"})
    with open(root / "movies.csv", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        movies = pd.DataFrame(
            [(row["movieId"], row["title"], row["genres"].split("|")) for row in reader],
            columns=["movie_id", "movie_title", "movie_genres"],
        )
    ratings, orphans = _ratings_frame(ids, movies, None, "ratings.csv", 1)
    return ratings, movies, orphans


LAYOUTS: dict[str, Layout] = {
    "ml-100k": Layout("ml-100k", ("u.data", "u.item", "u.user"), _read_100k, "MovieLens 100K"),
    "ml-1m": Layout("ml-1m", ("ratings.dat", "movies.dat", "users.dat"), _read_1m, "MovieLens 1M"),
    "ml-10m": Layout("ml-10m", ("ratings.dat", "movies.dat"), _read_10m, "MovieLens 10M"),
    "current": Layout("current", ("ratings.csv", "movies.csv"), _read_current,
                      "MovieLens 20M, 25M, 32M, latest and latest-small"),
}
