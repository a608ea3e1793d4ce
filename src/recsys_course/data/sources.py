"""Choosing and loading a MovieLens source.

A source is named by a string, passed as an argument or in the ``COURSE_DATA`` environment
variable (the argument wins):

``auto`` (default)   TFDS, falling back to ``synthetic`` with a loud warning when TFDS fails
``tfds``             ``tfds.load("movielens/100k-ratings")``; downloads once, then cached
``synthetic``        the seeded generator, small (``synthetic:100k`` for MovieLens 100K's size,
                     ``synthetic:tiny`` for smoke tests)
a path               a GroupLens folder or zip: ``ml-100k`` (``u.data``) or the current
                     format (``ratings.csv`` + ``movies.csv``, e.g. ``ml-latest-small``)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import pandas as pd

from recsys_course.data.errors import DataSourceError
from recsys_course.data.movielens import USER_COLUMNS, MovieLens, finish_frames

ENV_VAR = "COURSE_DATA"
CACHE_ENV_VAR = "COURSE_CACHE_DIR"
TFDS_RATINGS, TFDS_MOVIES = "movielens/100k-ratings", "movielens/100k-movies"


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
    if spec == "tfds":
        try:
            return _load_tfds()
        except Exception as error:
            raise DataSourceError(
                f"COURSE_DATA=tfds: tfds.load({TFDS_RATINGS!r}) failed ({type(error).__name__}: "
                f"{error}). It needs the network once to download into {tfds_data_dir()}. Fix: "
                "connect once, or download ml-100k.zip from GroupLens and set "
                "COURSE_DATA=/path/to/ml-100k.zip, or use COURSE_DATA=synthetic."
            ) from error
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _load_synthetic(spec.partition(":")[2] or "small", seed)
    if _looks_like_path(spec):
        return _load_local(Path(spec).expanduser())
    raise DataSourceError(
        f"Unknown data source {spec!r}. Use one of: auto, tfds, synthetic, synthetic:100k, "
        "or a path to a GroupLens folder or zip (ml-100k, ml-latest-small)."
    )


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


def _check_download_possible(tfds, data_dir: str) -> None:
    """Fail fast when MovieLens is not prepared yet and its host cannot be reached.

    Without this check an offline ``tfds.load`` retries the download for minutes.
    """
    prepared = all(
        tfds.builder(name, data_dir=data_dir).is_prepared() for name in (TFDS_RATINGS, TFDS_MOVIES)
    )
    if prepared:
        return
    try:
        socket.create_connection((GROUPLENS_HOST, 443), timeout=3).close()
    except OSError as error:
        raise ConnectionError(
            f"MovieLens is not in {data_dir} yet and {GROUPLENS_HOST} cannot be reached ({error})"
        ) from error


def _load_tfds() -> MovieLens:
    import tensorflow_datasets as tfds

    data_dir = str(tfds_data_dir())
    _check_download_possible(tfds, data_dir)
    ratings_ds, info = tfds.load(TFDS_RATINGS, split="train", with_info=True, data_dir=data_dir)
    movies_ds = tfds.load(TFDS_MOVIES, split="train", data_dir=data_dir)
    genre_names = info.features["movie_genres"].feature.names
    occupation_names = info.features["user_occupation_label"].names

    def text(value: bytes) -> str:
        return value.decode("utf-8", errors="replace")

    rows = []
    for ex in tfds.as_numpy(ratings_ds):
        rows.append(
            {
                "user_id": text(ex["user_id"]),
                "movie_id": text(ex["movie_id"]),
                "movie_title": text(ex["movie_title"]),
                "movie_genres": [genre_names[g] for g in ex["movie_genres"]],
                "user_rating": ex["user_rating"],
                "timestamp": ex["timestamp"],
                "raw_user_age": ex["raw_user_age"],
                "bucketized_user_age": ex["bucketized_user_age"],
                "user_gender": bool(ex["user_gender"]),
                "user_occupation_label": occupation_names[ex["user_occupation_label"]],
                "user_occupation_text": text(ex["user_occupation_text"]),
                "user_zip_code": text(ex["user_zip_code"]),
            }
        )
    movies = [
        {
            "movie_id": text(ex["movie_id"]),
            "movie_title": text(ex["movie_title"]),
            "movie_genres": [genre_names[g] for g in ex["movie_genres"]],
        }
        for ex in tfds.as_numpy(movies_ds)
    ]
    ratings_df, movies_df = finish_frames(pd.DataFrame(rows), pd.DataFrame(movies))
    return MovieLens(ratings_df, movies_df, "tfds", f"MovieLens 100K via TFDS ({data_dir})")


def _load_local(path: Path) -> MovieLens:
    if not path.exists():
        raise DataSourceError(
            f"Data path {path} does not exist. Fix: point COURSE_DATA at a GroupLens folder "
            "(containing u.data or ratings.csv) or its zip, e.g. COURSE_DATA=~/data/ml-100k.zip."
        )
    folder = _extract_zip(path) if path.is_file() else path
    root = _find_dataset_root(folder)
    if root is None:
        raise DataSourceError(
            f"{path} holds no MovieLens ratings: expected u.data (ml-100k) or ratings.csv "
            "(ml-latest-small, ml-25m) in it or one folder below. Fix: point COURSE_DATA at "
            "the unpacked GroupLens folder or the zip you downloaded."
        )
    from tensorflow_datasets.structured import movielens_parsing as parsing

    if (root / "u.data").exists():
        needed, fmt = ["u.data", "u.item", "u.user"], "ml-100k"
        parse_ratings, parse_movies = parsing.parse_100k_ratings_data, parsing.parse_100k_movies_data
    else:
        needed, fmt = ["ratings.csv", "movies.csv"], "current"
        parse_ratings, parse_movies = parsing.parse_current_ratings_data, parsing.parse_current_movies_data
    missing = [name for name in needed if not (root / name).exists()]
    if missing:
        raise DataSourceError(
            f"{root} is missing {', '.join(missing)} ({fmt} format needs {', '.join(needed)}). "
            "Fix: unpack the complete GroupLens archive again."
        )
    parse_root, skipped = _without_orphan_ratings(root, fmt)
    try:
        ratings = pd.DataFrame([ex for _, ex in parse_ratings(str(parse_root))])
        movies = pd.DataFrame([ex for _, ex in parse_movies(str(root))])
    except (ValueError, KeyError, UnicodeDecodeError) as error:
        raise DataSourceError(
            f"Could not parse the {fmt} files in {root} ({type(error).__name__}: {error}). "
            "Fix: the files look damaged; download and unpack the GroupLens archive again."
        ) from error
    if ratings.empty:
        raise DataSourceError(f"{root} contains no ratings. Fix: unpack the archive again.")
    ratings["user_rating"] = ratings["user_rating"].astype(float)
    ratings["timestamp"] = ratings["timestamp"].astype("int64")
    ratings, movies = finish_frames(ratings, movies)
    kind = "MovieLens 100K" if fmt == "ml-100k" else f"MovieLens ({root.name})"
    has_demo = " with demographics" if all(c in ratings for c in USER_COLUMNS) else ""
    note = f" ({skipped} orphan rating{'s' * (skipped != 1)} skipped)" if skipped else ""
    return MovieLens(ratings, movies, f"local:{path}", f"{kind}{has_demo} from {path}{note}")


def _without_orphan_ratings(root: Path, fmt: str) -> tuple[Path, int]:
    """Return a folder TFDS's parser can read, and how many ratings were skipped.

    TFDS's parsers stop with a bare ``KeyError`` on a rating whose movie (or, in ml-100k,
    user) is missing from the other files. Such ratings carry no title or genres, so they are
    dropped, loudly, from a cleaned copy in the cache; the original files are not touched.
    """
    if fmt == "ml-100k":
        name = "u.data"
        table = pd.read_csv(root / name, sep="\t", header=None, dtype=str, encoding="latin-1")
        movie_col, user_col = table[1], table[0]
        movie_ids = pd.read_csv(root / "u.item", sep="|", header=None, dtype=str, encoding="latin-1")[0]
        user_ids = pd.read_csv(root / "u.user", sep="|", header=None, dtype=str, encoding="latin-1")[0]
        orphan = ~movie_col.isin(set(movie_ids)) | ~user_col.isin(set(user_ids))
        line_offset = 1
    else:
        name = "ratings.csv"
        table = pd.read_csv(root / name, dtype=str)
        movie_ids = pd.read_csv(root / "movies.csv", dtype=str)["movieId"]
        orphan = ~table["movieId"].isin(set(movie_ids))
        line_offset = 2  # header line, then 1-based numbering
    count = int(orphan.sum())
    if not count:
        return root, 0
    first = int(orphan.to_numpy().nonzero()[0][0])
    message = (
        f"{root / name}: {count} rating(s) refer to a movie or user missing from the other "
        f"files (first at line {first + line_offset}: {','.join(table.iloc[first].astype(str))}). "
        "They were skipped; your files were not changed. Fix: re-download the archive if "
        "this is unexpected."
    )
    print(f"\n*** WARNING: {message}\n", file=sys.stderr)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    digest = hashlib.sha1(f"{root.resolve()}:{(root / name).stat().st_mtime_ns}".encode()).hexdigest()[:12]
    cleaned = cache_dir() / "cleaned" / f"{root.name}-{digest}"
    if (cleaned / ".complete").exists():
        return cleaned, count
    # Built in a private folder and renamed into place, so concurrent loads never see a
    # half-written file.
    cleaned.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cleaned.parent, prefix=".building-"))
    for item in root.iterdir():
        if item.name != name and item.is_file():
            (staging / item.name).symlink_to(item.resolve())
    kept = table[~orphan]
    if fmt == "ml-100k":
        kept.to_csv(staging / name, sep="\t", header=False, index=False, encoding="latin-1")
    else:
        kept.to_csv(staging / name, index=False)
    (staging / ".complete").touch()
    try:
        staging.rename(cleaned)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return cleaned, count


def _find_dataset_root(folder: Path) -> Path | None:
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (candidate / "u.data").exists() or (candidate / "ratings.csv").exists():
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
