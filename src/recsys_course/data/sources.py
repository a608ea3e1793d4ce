"""Choosing and loading a MovieLens source.

A source is named by a string, passed as an argument or in the ``COURSE_DATA`` environment
variable (the argument wins):

``auto`` (default)   TFDS, falling back to ``synthetic`` with a loud warning when TFDS fails
``tfds``             ``tfds.load("movielens/100k-ratings")``; downloads once, then cached
``tfds:1m``          another TFDS MovieLens: ``1m``, ``20m``, ``25m`` or ``latest-small``;
                     the TFDS name itself (``movielens/1m-ratings``) works too
``synthetic``        the seeded generator, small (``synthetic:100k`` for MovieLens 100K's size,
                     ``synthetic:1m`` and ``synthetic:10m`` for the shapes of ML-1M and ML-20M,
                     ``synthetic:tiny`` for smoke tests)
a path               a GroupLens folder or zip in any of its layouts (``ml-100k``, ``ml-1m``,
                     ``ml-10m``, and ``ratings.csv`` + ``movies.csv`` for ml-20m, ml-25m,
                     ml-latest and ml-latest-small): see :mod:`recsys_course.data.grouplens`
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_course.data import grouplens
from recsys_course.data.errors import DataSourceError
from recsys_course.data.movielens import USER_COLUMNS, MovieLens, finish_frames

ENV_VAR = "COURSE_DATA"
CACHE_ENV_VAR = "COURSE_CACHE_DIR"
TFDS_RATINGS, TFDS_MOVIES = "movielens/100k-ratings", "movielens/100k-movies"
#: TFDS's MovieLens configurations (``movielens/<size>-ratings``) and what readers call them.
TFDS_SIZES = {"100k": "MovieLens 100K", "1m": "MovieLens 1M", "20m": "MovieLens 20M",
              "25m": "MovieLens 25M", "latest-small": "MovieLens latest-small"}
_TFDS_NAME = re.compile(r"^(?:tfds:)?(?:movielens/)?(100k|1m|20m|25m|latest-small)(?:-ratings)?$")


def resolve_source(source: str | None = None) -> str:
    """The source string in force: the argument, else ``$COURSE_DATA``, else ``"auto"``."""
    chosen = source if source is not None else os.environ.get(ENV_VAR, "")
    return chosen.strip() or "auto"


def cache_dir() -> Path:
    """Where extracted zips are kept: ``$COURSE_CACHE_DIR`` or ``~/.cache/recsys-course``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "recsys-course")


def tfds_data_dir() -> Path:
    """Where TFDS keeps downloaded datasets (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def load_movielens(source: str | None = None, *, seed: int = 0) -> MovieLens:
    """Load MovieLens ratings and movies from ``source`` (see the module docstring).

    ``seed`` only affects the synthetic source. Raises :class:`DataSourceError` with the
    failing file and the fix for a missing path, a folder without ratings, a corrupted zip or
    an unknown source name. Under ``auto``, a failing TFDS load falls back to synthetic data
    and says so on stderr and as a warning.
    """
    spec = resolve_source(source)
    if spec == "auto":
        try:
            return _load_tfds()
        except Exception as error:  # any TFDS failure means "fall back"
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            message = (
                "TFDS could not load MovieLens 100K "
                f"({reason[:300]}). FALLING BACK TO SYNTHETIC DATA: numbers will not match "
                "the real dataset. Set COURSE_DATA=synthetic to silence this, or "
                "COURSE_DATA=/path/to/ml-100k to use a local copy."
            )
            print(f"\n*** WARNING: {message}\n", file=sys.stderr)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return _load_synthetic("small", seed)
    size = tfds_size(spec)
    if size is not None:
        try:
            return _load_tfds(size)
        except Exception as error:
            raise DataSourceError(
                f"COURSE_DATA={spec}: tfds.load('movielens/{size}-ratings') failed "
                f"({type(error).__name__}: {error}). It needs the network once to download into "
                f"{tfds_data_dir()}. Fix: connect once, or download the ml-{size} zip from GroupLens "
                "and set COURSE_DATA=/path/to/that.zip, or use COURSE_DATA=synthetic."
            ) from error
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _load_synthetic(spec.partition(":")[2] or "small", seed)
    if _looks_like_path(spec):
        return _load_local(Path(spec).expanduser())
    raise DataSourceError(
        f"Unknown data source {spec!r}. Use one of: auto, tfds, tfds:1m, tfds:20m, tfds:25m, "
        "tfds:latest-small, synthetic, synthetic:100k, synthetic:1m, synthetic:10m, or a path to "
        "a GroupLens folder or zip (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-latest, "
        "ml-latest-small)."
    )


def tfds_size(spec: str) -> str | None:
    """The TFDS MovieLens size a source string names (``tfds`` is 100k), or None."""
    if spec == "tfds":
        return "100k"
    match = _TFDS_NAME.match(spec)
    return match[1] if match and (spec.startswith(("tfds:", "movielens/"))) else None


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith(".zip") or Path(spec).exists()


def _load_synthetic(size: str, seed: int) -> MovieLens:
    from recsys_course.data import synthetic

    if size not in synthetic.SIZES:
        raise DataSourceError(
            f"Unknown synthetic size {size!r}. Use one of: "
            + ", ".join(f"synthetic:{s}" for s in synthetic.SIZES)
        )
    ratings, movies = synthetic.generate(size, seed=seed)
    ratings, movies = finish_frames(ratings, movies)
    label = "synthetic" if size == "small" else f"synthetic:{size}"
    return MovieLens(ratings, movies, label, f"Synthetic MovieLens-shaped data ({size}, seed {seed})")


GROUPLENS_HOST = "files.grouplens.org"  # where TFDS downloads MovieLens from


def _check_download_possible(tfds, data_dir: str, names: tuple[str, ...] = (TFDS_RATINGS, TFDS_MOVIES)) -> None:
    """Fail fast when MovieLens is not prepared yet and its host cannot be reached.

    Without this check an offline ``tfds.load`` retries the download for minutes.
    """
    prepared = all(tfds.builder(name, data_dir=data_dir).is_prepared() for name in names)
    if prepared:
        return
    try:
        socket.create_connection((GROUPLENS_HOST, 443), timeout=3).close()
    except OSError as error:
        raise ConnectionError(
            f"MovieLens is not in {data_dir} yet and {GROUPLENS_HOST} cannot be reached ({error})"
        ) from error


def _load_tfds(size: str = "100k") -> MovieLens:
    """A TFDS MovieLens dataset, read a batch at a time (a Python dictionary per rating, as
    ``tfds.as_numpy`` over single examples gives, costs minutes at 25 million ratings)."""
    import tensorflow_datasets as tfds

    data_dir = str(tfds_data_dir())
    ratings_name, movies_name = f"movielens/{size}-ratings", f"movielens/{size}-movies"
    _check_download_possible(tfds, data_dir, (ratings_name, movies_name))
    ratings_ds, info = tfds.load(ratings_name, split="train", with_info=True, data_dir=data_dir)
    movies_ds = tfds.load(movies_name, split="train", data_dir=data_dir)
    genre_names = info.features["movie_genres"].feature.names

    def text(values) -> list[str]:
        return [v.decode("utf-8", errors="replace") for v in values]

    movies = pd.DataFrame(
        [
            {
                "movie_id": ex["movie_id"].decode("utf-8", errors="replace"),
                "movie_title": ex["movie_title"].decode("utf-8", errors="replace"),
                "movie_genres": [genre_names[g] for g in ex["movie_genres"]],
            }
            for ex in tfds.as_numpy(movies_ds)
        ]
    )
    # Genres are a variable-length feature that cannot be batched; they come from the movies.
    scalar = [name for name, feature in info.features.items() if name != "movie_genres"]
    batches = tfds.as_numpy(ratings_ds.map(lambda ex: {k: ex[k] for k in scalar}).batch(65_536))
    columns: dict[str, list] = {name: [] for name in scalar}
    for batch in batches:
        for name in scalar:
            columns[name].append(batch[name])
    raw = {name: np.concatenate(parts) if parts else np.array([]) for name, parts in columns.items()}
    frame = {
        "user_id": text(raw["user_id"]), "movie_id": text(raw["movie_id"]),
        "user_rating": raw["user_rating"], "timestamp": raw["timestamp"],
    }
    if "raw_user_age" in raw:
        frame["raw_user_age"] = raw["raw_user_age"]
    if "bucketized_user_age" in raw:
        frame["bucketized_user_age"] = raw["bucketized_user_age"]
    if "user_gender" in raw:
        frame["user_gender"] = raw["user_gender"].astype(bool)
    if "user_occupation_label" in raw:
        labels = info.features["user_occupation_label"].names
        frame["user_occupation_label"] = [labels[i] for i in raw["user_occupation_label"]]
        frame["user_occupation_text"] = text(raw["user_occupation_text"])
        frame["user_zip_code"] = text(raw["user_zip_code"])
    ratings = pd.DataFrame(frame)
    by_movie = movies.set_index("movie_id")
    ratings["movie_title"] = ratings["movie_id"].map(by_movie["movie_title"])
    ratings["movie_genres"] = ratings["movie_id"].map(by_movie["movie_genres"])
    ratings_df, movies_df = finish_frames(ratings, movies)
    label = "tfds" if size == "100k" else f"tfds:{size}"
    return MovieLens(ratings_df, movies_df, label, f"{TFDS_SIZES[size]} via TFDS ({data_dir})")


def _load_local(path: Path) -> MovieLens:
    if not path.exists():
        raise DataSourceError(
            f"Data path {path} does not exist. Fix: point COURSE_DATA at a GroupLens folder "
            "(containing u.data, ratings.dat or ratings.csv) or its zip, e.g. "
            "COURSE_DATA=~/data/ml-100k.zip."
        )
    folder = _extract_zip(path) if path.is_file() else path
    root = _find_dataset_root(folder)
    if root is None:
        raise DataSourceError(
            f"{path} holds no MovieLens ratings: expected u.data (ml-100k), ratings.dat (ml-1m, "
            "ml-10m) or ratings.csv (ml-20m, ml-25m, ml-latest, ml-latest-small) in it or one "
            "folder below. Fix: point COURSE_DATA at the unpacked GroupLens folder or the zip "
            "you downloaded."
        )
    ratings, movies, layout, orphans = grouplens.read(root)
    if orphans.count:
        message = (
            f"{root / orphans.file}: {orphans.count} rating(s) refer to a movie or user missing "
            f"from the other files (first at line {orphans.first_line}: {orphans.first_row}). "
            "They were skipped; your files were not changed. Fix: re-download the archive if "
            "this is unexpected."
        )
        print(f"\n*** WARNING: {message}\n", file=sys.stderr)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    ratings, movies = finish_frames(ratings, movies)
    has_demo = " with demographics" if all(c in ratings for c in USER_COLUMNS) else ""
    skipped = orphans.count
    note = f" ({skipped} orphan rating{'s' * (skipped != 1)} skipped)" if skipped else ""
    return MovieLens(ratings, movies, f"local:{path}", f"{layout.label_of(root)}{has_demo} from {path}{note}")


def _find_dataset_root(folder: Path) -> Path | None:
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if grouplens.detect(candidate) is not None:
            return candidate
    return None


def _extract_zip(path: Path) -> Path:
    """Unpack ``path`` once into the cache (keyed by content hash) and return the folder."""
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    target = cache_dir() / "extracted" / f"{path.stem}-{digest}"
    if (target / ".complete").exists():
        return target
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"CRC check failed for {bad}")
            archive.extractall(target)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise DataSourceError(
            f"{path} is not a readable zip archive ({error}); it is probably corrupted or "
            "truncated by an interrupted download. Fix: delete it and download it again."
        ) from error
    (target / ".complete").touch()
    return target
