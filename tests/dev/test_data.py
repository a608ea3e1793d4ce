"""The data module: every source yields TFDS feature names, bad input gives clear errors,
and the synthetic data is deterministic and MovieLens-shaped. Nothing here uses the network:
the TFDS path is exercised by building TFDS's real MovieLens dataset from local files."""

import zipfile

import numpy as np
import pandas as pd
import pytest

from recsys_course.data import (
    RATING_COLUMNS,
    USER_COLUMNS,
    DataSourceError,
    load_movielens,
    resolve_source,
    split_ratings,
)
from recsys_course.data import sources
from recsys_course.data.synthetic import GENRES

ML100K_GENRES = ["Unknown", *GENRES]  # u.item's 19 genre flags, in TFDS's order


def write_ml100k(folder, data):
    """Write a MovieLens object in GroupLens's ml-100k file format (u.data, u.item, u.user)."""
    folder.mkdir(parents=True, exist_ok=True)
    r = data.ratings
    r[["user_id", "movie_id", "user_rating", "timestamp"]].astype(
        {"user_rating": int}
    ).to_csv(folder / "u.data", sep="\t", header=False, index=False)
    with open(folder / "u.item", "w", encoding="latin-1") as f:
        for m in data.movies.itertuples():
            flags = "|".join("1" if g in m.movie_genres else "0" for g in ML100K_GENRES)
            f.write(f"{m.movie_id}|{m.movie_title}|01-Jan-1995||http://x|{flags}\n")
    users = r.drop_duplicates("user_id")
    with open(folder / "u.user", "w", encoding="latin-1") as f:
        for u in users.itertuples():
            gender = "M" if u.user_gender else "F"
            f.write(f"{u.user_id}|{int(u.raw_user_age)}|{gender}|{u.user_occupation_text}|{u.user_zip_code}\n")
    return folder


@pytest.fixture(scope="module")
def synthetic():
    return load_movielens("synthetic")


def canonical(frame):
    frame = frame.copy()
    frame["movie_genres"] = frame["movie_genres"].map(lambda g: "|".join(sorted(g)))
    return frame.sort_values(["user_id", "movie_id", "timestamp"]).reset_index(drop=True)


def test_synthetic_has_tfds_columns_and_movielens_shape(synthetic):
    r = synthetic.ratings
    assert list(r.columns) == RATING_COLUMNS + USER_COLUMNS
    assert synthetic.source == "synthetic" and synthetic.has_demographics
    assert r["user_rating"].between(1, 5).all()
    assert r.groupby("user_id").size().min() >= 20, "every MovieLens 100K user has 20+ ratings"
    assert not r.duplicated(["user_id", "movie_id"]).any()
    assert 3.2 < r["user_rating"].mean() < 3.8
    counts = r["movie_id"].value_counts()
    assert counts.iloc[: len(counts) // 10].sum() > 0.25 * len(r), "popularity should be skewed"
    assert r["movie_title"].str.match(r".+ \(\d{4}\)$").all(), "titles look like 'Title (Year)'"


def test_synthetic_is_deterministic_and_seeded():
    a, b = load_movielens("synthetic"), load_movielens("synthetic")
    pd.testing.assert_frame_equal(a.ratings, b.ratings)
    c = load_movielens("synthetic", seed=1)
    assert not a.ratings["user_rating"].equals(c.ratings["user_rating"])


def test_synthetic_ratings_follow_planted_structure(synthetic):
    """Held-out ratings are predictable from a user's other ratings of similar movies: a
    user-mean + movie-mean baseline beats the global mean (there is signal to learn)."""
    train, test = split_ratings(synthetic.ratings, 0.2, seed=0)
    mu = train["user_rating"].mean()
    user = train.groupby("user_id")["user_rating"].mean() - mu
    movie = train.groupby("movie_id")["user_rating"].mean() - mu
    pred = mu + test["user_id"].map(user).fillna(0) + test["movie_id"].map(movie).fillna(0)
    rmse = np.sqrt(np.mean((test["user_rating"] - pred) ** 2))
    rmse_global = np.sqrt(np.mean((test["user_rating"] - mu) ** 2))
    assert rmse < rmse_global - 0.05, (rmse, rmse_global)


def test_split_is_seeded_complete_and_disjoint(synthetic):
    r = synthetic.ratings
    train, test = split_ratings(r, 0.2, seed=7)
    again, _ = split_ratings(r, 0.2, seed=7)
    pd.testing.assert_frame_equal(train, again)
    assert len(test) == round(0.2 * len(r)) and len(train) + len(test) == len(r)
    keys = lambda f: set(zip(f["user_id"], f["movie_id"]))  # noqa: E731
    assert not keys(train) & keys(test)
    with pytest.raises(ValueError, match="test_fraction"):
        split_ratings(r, 1.5)


def test_local_ml100k_folder_and_zip_match(tmp_path, synthetic):
    folder = write_ml100k(tmp_path / "ml-100k", synthetic)
    local = load_movielens(str(folder))
    assert list(local.ratings.columns) == RATING_COLUMNS + USER_COLUMNS
    pd.testing.assert_frame_equal(
        canonical(local.ratings)[RATING_COLUMNS], canonical(synthetic.ratings)[RATING_COLUMNS],
        check_dtype=False,
    )
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"ml-100k/{f.name}")
    zipped = load_movielens(str(archive))
    pd.testing.assert_frame_equal(canonical(zipped.ratings), canonical(local.ratings))


def test_current_format_folder(tmp_path):
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,"Heat, The (1995)",Crime\n'
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.5,964982703\n1,2,3.0,964981247\n2,1,5.0,964982224\n"
    )
    data = load_movielens(str(tmp_path))
    assert list(data.ratings.columns) == RATING_COLUMNS and not data.has_demographics
    assert data.ratings["user_rating"].tolist() == [4.5, 3.0, 5.0]
    assert data.ratings["movie_title"].iloc[1] == "Heat, The (1995)"
    assert data.ratings["movie_genres"].iloc[0] == ["Adventure", "Animation"]


def test_orphan_ratings_are_skipped_loudly(tmp_path):
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A (1990),Drama\n")
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,1\n9,999,5.0,2\n"
    )
    with pytest.warns(RuntimeWarning, match=r"1 rating\(s\) refer to a movie .* line 3"):
        data = load_movielens(str(tmp_path))
    assert len(data.ratings) == 1 and "1 orphan rating skipped" in data.description
    assert "999" in (tmp_path / "ratings.csv").read_text(), "the original file is untouched"


def test_tfds_source_builds_real_tfds_dataset_offline(tmp_path, monkeypatch, synthetic):
    """Run TFDS's own MovieLens builder on local files: our conversion of its output must
    give the same frame as parsing the folder directly."""
    import tensorflow_datasets as tfds

    small = type(synthetic)(
        synthetic.ratings.iloc[:3000].reset_index(drop=True), synthetic.movies, "x", "x"
    )
    write_ml100k(tmp_path / "download" / "ml-100k", small)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(
        tfds.download.DownloadManager, "download_and_extract",
        lambda self, url, *a, **k: str(tmp_path / "download"),
    )

    class FakeSocket:
        def close(self):
            pass

    monkeypatch.setattr(sources.socket, "create_connection", lambda *a, **k: FakeSocket())
    via_tfds = load_movielens("tfds")
    direct = load_movielens(str(tmp_path / "download" / "ml-100k"))
    assert via_tfds.source == "tfds"
    pd.testing.assert_frame_equal(canonical(via_tfds.ratings), canonical(direct.ratings), check_dtype=False)


def test_auto_falls_back_to_synthetic_loudly_when_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("network is off in tests")

    monkeypatch.setattr(sources.socket, "create_connection", refuse)
    with pytest.warns(RuntimeWarning, match="FALLING BACK TO SYNTHETIC DATA"):
        data = load_movielens("auto")
    assert data.source == "synthetic"
    assert "network is off in tests" in capsys.readouterr().err
    with pytest.raises(DataSourceError, match="COURSE_DATA=tfds.*network is off"):
        load_movielens("tfds")


def test_source_from_argument_then_environment(monkeypatch):
    monkeypatch.setenv("COURSE_DATA", "synthetic:100k")
    assert resolve_source() == "synthetic:100k"
    assert resolve_source("tfds") == "tfds"
    monkeypatch.delenv("COURSE_DATA")
    assert resolve_source() == "auto"


def write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "holds no MovieLens ratings: expected u.data"),
        (lambda p: write(p / "x.zip", b"PK\x03\x04garbage"), "corrupted or truncated"),
    ],
    ids=["missing-path", "empty-folder", "corrupt-zip"],
)
def test_bad_paths_give_clear_errors(tmp_path, make_path, message):
    path = make_path(tmp_path)
    with pytest.raises(DataSourceError, match=message) as error:
        load_movielens(str(path))
    assert "Fix:" in str(error.value)


def test_truncated_zip_and_incomplete_folder(tmp_path, synthetic):
    folder = write_ml100k(tmp_path / "ml-100k", synthetic)
    archive = tmp_path / "full.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"ml-100k/{f.name}")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataSourceError, match="truncated"):
        load_movielens(str(truncated))
    (folder / "u.user").unlink()
    with pytest.raises(DataSourceError, match="missing u.user"):
        load_movielens(str(folder))


def test_unknown_source_names_the_choices():
    with pytest.raises(DataSourceError, match="Unknown data source 'movielens'.*synthetic"):
        load_movielens("movielens")
    with pytest.raises(DataSourceError, match="Unknown synthetic size"):
        load_movielens("synthetic:huge")
