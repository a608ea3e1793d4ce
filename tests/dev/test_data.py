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
    split_folds,
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


def test_split_folds_are_seeded_disjoint_complete_and_even(synthetic):
    r = synthetic.ratings
    folds = split_folds(r, 3, seed=5)
    again = split_folds(r, 3, seed=5)
    for fold, same in zip(folds, again):
        pd.testing.assert_frame_equal(fold, same)
    sizes = [len(f) for f in folds]
    assert sum(sizes) == len(r) and max(sizes) - min(sizes) <= 2
    keys = [set(zip(f["user_id"], f["movie_id"], f["timestamp"])) for f in folds]
    assert set().union(*keys) == set(zip(r["user_id"], r["movie_id"], r["timestamp"]))
    assert sum(map(len, keys)) == len(set().union(*keys))  # no row in two folds
    with pytest.raises(ValueError, match="n_folds"):
        split_folds(r, 1)
    with pytest.raises(ValueError, match="cannot split 2 ratings"):
        split_folds(r.head(2), 3)


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


# ------------------------------------------------------------ every GroupLens layout

def write_ml1m(folder, data, *, users=True):
    """GroupLens's ml-1m layout (``::``-separated .dat files); without users, ml-10m's."""
    folder.mkdir(parents=True, exist_ok=True)
    r = data.ratings
    with open(folder / "ratings.dat", "w", encoding="latin-1") as f:
        for row in r.itertuples():
            f.write(f"{row.user_id}::{row.movie_id}::{int(row.user_rating)}::{row.timestamp}\n")
    with open(folder / "movies.dat", "w", encoding="latin-1") as f:
        for m in data.movies.itertuples():
            genres = ["Children's" if g == "Children" else g for g in m.movie_genres]
            f.write(f"{m.movie_id}::{m.movie_title}: Part II::{'|'.join(genres)}\n")  # a ':' in a title
    if users:
        codes = {"student": 4, "writer": 20, "artist": 2}
        with open(folder / "users.dat", "w", encoding="latin-1") as f:
            for u in r.drop_duplicates("user_id").itertuples():
                code = codes.get(u.user_occupation_text, 0)
                f.write(f"{u.user_id}::{'M' if u.user_gender else 'F'}::{int(u.bucketized_user_age)}::{code}::{u.user_zip_code}\n")
    return folder


def write_current(folder, data):
    folder.mkdir(parents=True, exist_ok=True)
    r = data.ratings.rename(columns={"user_id": "userId", "movie_id": "movieId", "user_rating": "rating"})
    r[["userId", "movieId", "rating", "timestamp"]].to_csv(folder / "ratings.csv", index=False)
    movies = data.movies.rename(columns={"movie_id": "movieId", "movie_title": "title"})
    movies["genres"] = data.movies["movie_genres"].map("|".join)
    movies["title"] = movies["title"].str.replace(")", "), The", regex=False)  # a comma in a title
    movies[["movieId", "title", "genres"]].to_csv(folder / "movies.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def small(synthetic):
    """A slice of the synthetic data, enough to compare parsers row by row quickly."""
    return type(synthetic)(synthetic.ratings.iloc[:2500].reset_index(drop=True), synthetic.movies, "x", "x")


def tfds_frame(parse, folder):
    return pd.DataFrame([ex for _, ex in parse(str(folder))])


@pytest.mark.parametrize("layout", ["ml-100k", "ml-1m", "current"])
def test_every_layout_reads_what_tfds_parsers_read(tmp_path, small, layout):
    """The vectorised readers give TFDS's own parsers' rows (values; dtypes are the course's)."""
    from tensorflow_datasets.structured import movielens_parsing as parsing

    writer, parse = {
        "ml-100k": (write_ml100k, parsing.parse_100k_ratings_data),
        "ml-1m": (write_ml1m, parsing.parse_1m_ratings_data),
        "current": (write_current, parsing.parse_current_ratings_data),
    }[layout]
    folder = writer(tmp_path / layout, small)
    ours = load_movielens(str(folder)).ratings
    theirs = tfds_frame(parse, folder)
    assert set(ours.columns) == set(theirs.columns)
    for column in ("user_rating", "timestamp", "raw_user_age", "bucketized_user_age"):
        if column in theirs:
            theirs[column] = theirs[column].astype(ours[column].dtype)
    pd.testing.assert_frame_equal(canonical(ours), canonical(theirs[list(ours.columns)]), check_dtype=False)


def test_ml10m_layout_has_no_users_and_ml1m_has_no_raw_age(tmp_path, small):
    ten = load_movielens(str(write_ml1m(tmp_path / "ml-10M100K", small, users=False)))
    one = load_movielens(str(write_ml1m(tmp_path / "ml-1m", small)))
    assert list(ten.ratings.columns) == RATING_COLUMNS and not ten.has_demographics
    assert "MovieLens 10M" in ten.description and "MovieLens 1M" in one.description
    assert "raw_user_age" not in one.ratings and not one.has_demographics, "ML-1M publishes age groups only"
    assert one.ratings["movie_title"].str.endswith(": Part II").all(), "a ':' inside a title survives"
    assert one.ratings["user_occupation_label"].isin(["student", "writer", "artist", "other/not specified"]).all()
    pd.testing.assert_frame_equal(ten.ratings, one.ratings[RATING_COLUMNS])


def test_movie_lists_are_shared_across_rating_rows(tmp_path, small):
    data = load_movielens(str(write_current(tmp_path / "ml-latest", small)))
    first = data.ratings.groupby("movie_id")["movie_genres"].agg(lambda g: len({id(x) for x in g}))
    assert (first == 1).all(), "each movie's genre list is one object, not a copy per rating"


@pytest.mark.parametrize("files, message", [
    (["ratings.dat"], "missing movies.dat .*ml-10m"),
    (["ratings.dat", "users.dat"], "missing movies.dat .*ml-1m"),
    (["ratings.csv"], "missing movies.csv"),
    (["u.data", "u.item"], "missing u.user"),
])
def test_incomplete_layouts_name_what_they_expected(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_text("1::1::5::1\n" if name.endswith(".dat") else "x\n")
    with pytest.raises(DataSourceError, match=message) as error:
        load_movielens(str(tmp_path))
    assert "Fix:" in str(error.value)


def test_tfds_names_select_a_tfds_size():
    assert [sources.tfds_size(s) for s in ("tfds", "tfds:1m", "movielens/25m-ratings", "tfds:latest-small")] == [
        "100k", "1m", "25m", "latest-small"]
    assert sources.tfds_size("tfds:2m") is None and sources.tfds_size("1m") is None
    with pytest.raises(DataSourceError, match="Unknown data source 'tfds:2m'.*tfds:1m"):
        load_movielens("tfds:2m")


def test_tfds_1m_builds_offline_and_matches_the_folder(tmp_path, monkeypatch, small):
    """TFDS's own 1M builder on local files: the batched TFDS reader gives the folder's rows."""
    import tensorflow_datasets as tfds

    write_ml1m(tmp_path / "download" / "ml-1m", small)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                        lambda self, url, *a, **k: str(tmp_path / "download"))

    class FakeSocket:
        def close(self):
            pass

    monkeypatch.setattr(sources.socket, "create_connection", lambda *a, **k: FakeSocket())
    via_tfds = load_movielens("tfds:1m")
    direct = load_movielens(str(tmp_path / "download" / "ml-1m"))
    assert via_tfds.source == "tfds:1m" and "MovieLens 1M via TFDS" in via_tfds.description
    pd.testing.assert_frame_equal(canonical(via_tfds.ratings), canonical(direct.ratings), check_dtype=False)


def test_pooled_generation_keeps_the_shape_and_is_seeded():
    """The large presets' pooled selection, on a small shape: distinct pairs, about the
    asked activity, popularity skew, planted taste, same seed same data."""
    from recsys_course.data import synthetic

    shape = synthetic.SyntheticSize(n_users=400, n_movies=700, mean_ratings_per_user=50.0, pooled=True)
    ratings, movies = synthetic.generate(shape, seed=3)
    again, _ = synthetic.generate(shape, seed=3)
    pd.testing.assert_frame_equal(ratings, again)
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    per_user = ratings.groupby("user_id").size()
    assert per_user.min() >= 20 and 40 < per_user.mean() < 60
    counts = ratings["movie_id"].value_counts()
    assert counts.iloc[: len(counts) // 10].sum() > 0.25 * len(ratings), "popularity should be skewed"
    assert ratings["timestamp"].is_monotonic_increasing and len(movies) == 700
    assert {"1m", "10m"} <= set(synthetic.SIZES) and synthetic.SIZES["10m"].n_movies == 20_000
