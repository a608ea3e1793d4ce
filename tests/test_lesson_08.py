"""Graded tests for lesson 08. Each test checks one behaviour of one exercise on a tiny,
hand-checkable fixture; the points add up to the exercise's points in solutions/08_serving.yml.

The fixtures are built here, never by another exercise, so one wrong answer costs points on
its own exercise only. Nothing is trained and no server is started: the serving package has
its own tests (tests/dev/test_serving_*.py)."""

import json
import os
from pathlib import Path

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from recsys_course.tooling.grading import exercise, sandboxed


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("08")


# ---- 8.1 --------------------------------------------------------------------------------
# Three known users (row 0 of the table is the out-of-vocabulary row) and six movies whose
# dot products with each user are all different, so every top-k is unambiguous.
USER_VECTORS = np.array([[0.1, 0.1], [1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], np.float32)
MOVIE_IDS = np.array(["m10", "m20", "m30", "m40", "m50", "m60"])
MOVIE_VECTORS = np.array(
    [[0.9, 0.1], [0.2, 0.8], [0.5, 0.45], [-0.3, 0.7], [0.7, -0.6], [0.05, 0.02]], np.float32
)


def tiny_user_model() -> tf.keras.Model:
    ids = tf.keras.Input(shape=(), dtype=tf.string, name="user_id")
    lookup = tf.keras.layers.StringLookup(vocabulary=["a", "b", "c"], mask_token=None)
    table = tf.keras.layers.Embedding(4, 2)
    model = tf.keras.Model(ids, table(lookup(ids)))
    table.set_weights([USER_VECTORS])
    return model


def expected_top(users, k):
    rows = {"a": 1, "b": 2, "c": 3}
    vectors = USER_VECTORS[[rows.get(u, 0) for u in users]]
    scores = vectors @ MOVIE_VECTORS.T
    order = np.argsort(-scores, axis=1)[:, :k]
    return MOVIE_IDS[order], np.take_along_axis(scores, order, axis=1)


def as_text(ids) -> np.ndarray:
    array = np.asarray(ids)
    return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v))(array)


@exercise("8.1", points=1)
def test_retrieval_servable_returns_the_exact_top_k(lesson):
    module = lesson.make_retrieval_servable(sandboxed(lesson, tiny_user_model)(), MOVIE_IDS, MOVIE_VECTORS, k=3)
    users = ["a", "c", "stranger"]
    out = module.serve(tf.constant(users))
    assert set(out) == {"movie_ids", "scores"}, (
        f"serve must return a dict with keys 'movie_ids' and 'scores', got {sorted(out)}"
    )
    ids, scores = expected_top(users, 3)
    got = as_text(out["movie_ids"].numpy())
    assert got.tolist() == ids.tolist(), (
        f"expected the top-3 movie ids {ids.tolist()} (by dot product), got {got.tolist()}"
    )
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5, atol=1e-6,
                               err_msg="scores must be the dot products of user and movie vectors")


@exercise("8.1", points=1)
def test_retrieval_servable_respects_k_and_batch_size(lesson):
    user_model = sandboxed(lesson, tiny_user_model)
    module = lesson.make_retrieval_servable(user_model(), MOVIE_IDS, MOVIE_VECTORS, k=2)
    for users in (["b"], ["a", "b", "c", "a", "zz"]):
        out = module.serve(tf.constant(users))
        shape = tuple(out["movie_ids"].shape)
        assert shape == (len(users), 2), f"k=2 and {len(users)} users: expected shape {(len(users), 2)}, got {shape}"
        scores = out["scores"].numpy()
        assert np.all(np.diff(scores, axis=1) <= 1e-6), f"scores must be sorted best first, got {scores.tolist()}"
    everything = lesson.make_retrieval_servable(user_model(), MOVIE_IDS, MOVIE_VECTORS, k=50)
    shape = tuple(everything.serve(tf.constant(["a"]))["movie_ids"].shape)
    assert shape == (1, 6), f"k=50 with only 6 movies must return all 6 (shape (1, 6)), got {shape}"


# The exports below are written and read back where the lesson runs (in batch grading, the
# sandbox, through ``sandboxed``): these helpers return plain facts, the tests judge them.


def export_and_reload(module) -> dict:
    """Export a servable with its signature, load it back, and query it."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "retrieval", "1")
        try:
            tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
        except (ValueError, TypeError) as error:
            return {"error": f"{type(error).__name__}: {str(error)[:200]}"}
        signature = tf.saved_model.load(path).signatures["serving_default"]
        out = signature(user_id=tf.constant(["b", "a"]))
        return {"inputs": sorted(signature.structured_input_signature[1]), "movie_ids": out["movie_ids"].numpy()}


@exercise("8.1", points=1)
def test_retrieval_servable_exports_with_a_named_signature(lesson):
    module = lesson.make_retrieval_servable(sandboxed(lesson, tiny_user_model)(), MOVIE_IDS, MOVIE_VECTORS, k=3)
    facts = sandboxed(lesson, export_and_reload)(module)
    if "error" in facts:
        pytest.fail(
            "tf.saved_model.save(module, path, signatures={'serving_default': module.serve}) "
            f"failed; does serve have an input_signature? ({facts['error']})"
        )
    inputs = facts["inputs"]
    assert inputs == ["user_id"], f"the signature's input must be named 'user_id', got {inputs}"
    ids, _ = expected_top(["b", "a"], 3)
    got = as_text(facts["movie_ids"])
    assert got.tolist() == ids.tolist(), (
        f"the exported model must answer like the in-memory one: expected {ids.tolist()}, got {got.tolist()}"
    )


# ---- 8.2 --------------------------------------------------------------------------------
def make_doubler(factor: float = 2.0):
    """A tiny servable: y = factor * x, the factor stored in a variable."""

    class Doubler(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.factor = tf.Variable(factor)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * self.factor}

    return Doubler()


def export_layout(lesson) -> dict:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "models", "doubler")
        result = str(lesson.export_version(make_doubler(), Path(model_dir), 3))
        facts = {"result": os.path.relpath(result, tmp), "pb": os.path.exists(os.path.join(model_dir, "3", "saved_model.pb"))}
        if facts["pb"]:
            loaded = tf.saved_model.load(os.path.join(model_dir, "3"))
            facts["signatures"] = sorted(loaded.signatures)
            if "serving_default" in loaded.signatures:
                facts["y"] = loaded.signatures["serving_default"](x=tf.constant([1.0, 2.5]))["y"].numpy().tolist()
        return facts


@exercise("8.2", points=1)
def test_export_writes_tf_serving_layout_with_signature(lesson):
    facts = sandboxed(lesson, export_layout, uses=(make_doubler,))(lesson)
    assert facts["result"] == os.path.join("models", "doubler", "3"), (
        f"expected the version folder models/doubler/3, got {facts['result']}"
    )
    assert facts["pb"], "models/doubler/3/saved_model.pb is missing"
    assert "serving_default" in facts["signatures"], (
        f"the export needs a 'serving_default' signature, found {facts['signatures']}"
    )
    assert facts["y"] == [2.0, 5.0], f"the exported model must compute 2x: expected [2.0, 5.0], got {facts['y']}"


def export_twice(lesson) -> dict:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "doubler"
        lesson.export_version(make_doubler(2.0), model_dir, 1)
        before = (model_dir / "1" / "saved_model.pb").read_bytes()
        try:
            lesson.export_version(make_doubler(3.0), model_dir, 1)
            raised = None
        except Exception as error:  # reported to the test
            raised = type(error).__name__
        after = tf.saved_model.load(str(model_dir / "1")).signatures["serving_default"](x=tf.constant([1.0]))
        facts = {"raised": raised, "after": after["y"].numpy().tolist(),
                 "same_bytes": (model_dir / "1" / "saved_model.pb").read_bytes() == before}
        lesson.export_version(make_doubler(3.0), model_dir, 2)
        facts["second"] = os.path.exists(model_dir / "2" / "saved_model.pb")
        return facts


@exercise("8.2", points=1)
def test_export_refuses_to_overwrite_a_version(lesson):
    facts = sandboxed(lesson, export_twice, uses=(make_doubler,))(lesson)
    assert facts["raised"] == "FileExistsError", (
        f"exporting an existing version must raise FileExistsError, got {facts['raised'] or 'no error'}"
    )
    assert facts["after"] == [2.0], "version 1 was changed: a published version must stay as it was"
    assert facts["same_bytes"], "version 1's files were rewritten"
    assert facts["second"], "a new version number must still export"


def export_watched(lesson) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "doubler"
        final = model_dir / "1"
        real_save = tf.saved_model.save
        writes = []

        def watching_save(obj, export_dir, *args, **kwargs):
            real_save(obj, export_dir, *args, **kwargs)
            writes.append((str(Path(export_dir).relative_to(tmp)), final.exists()))

        tf.saved_model.save = watching_save
        try:
            lesson.export_version(make_doubler(), model_dir, 1)
        finally:
            tf.saved_model.save = real_save
        return {"writes": writes, "left": sorted(p.name for p in model_dir.iterdir())}


@exercise("8.2", points=1)
def test_export_is_atomic_and_leaves_no_staging_folder(lesson):
    facts = sandboxed(lesson, export_watched, uses=(make_doubler,))(lesson)
    assert facts["writes"], "export_version must write with tf.saved_model.save"
    staged, visible_too_early = facts["writes"][0]
    staged = Path(staged)
    assert not visible_too_early, (
        "doubler/1 existed as soon as tf.saved_model.save returned: a polling server could load it "
        "half-written. Write to a hidden folder and rename it."
    )
    assert staged.parent == Path("doubler") and staged.name.startswith("."), (
        f"write into a hidden folder inside doubler/ (a name starting with '.'), not {staged}"
    )
    assert facts["left"] == ["1"], f"after the export doubler/ must hold only '1', found {facts['left']}"


# ---- 8.3 --------------------------------------------------------------------------------
@exercise("8.3", points=1)
def test_rows_body_has_one_object_per_example(lesson):
    features = {
        "user_id": np.array(["u1", "u2"]),
        "age": np.array([31, 47], dtype=np.int64),
        "weight": [np.float32(0.5), np.float32(2.0)],
    }
    body = lesson.predict_body(features, "rows")
    expected = {"instances": [{"user_id": "u1", "age": 31, "weight": 0.5},
                              {"user_id": "u2", "age": 47, "weight": 2.0}]}
    try:
        text = json.dumps(body)
    except TypeError as error:
        pytest.fail(f"the body must be JSON-serialisable (convert NumPy values): {error}")
    assert json.loads(text) == expected, f"expected {expected}, got {json.loads(text)}"
    single = lesson.predict_body({"user_id": ["u9"]}, "rows")
    assert single == {"instances": [{"user_id": "u9"}]}, (
        f"with one input each instance is still an object: expected {{'instances': [{{'user_id': 'u9'}}]}}, got {single}"
    )
    with pytest.raises(ValueError):
        lesson.predict_body({"user_id": ["u1", "u2"], "movie_id": ["m1"]}, "rows")


@exercise("8.3", points=1)
def test_columns_body_and_signature_name(lesson):
    features = {"user_id": np.array([b"u1", b"u2"], dtype=object), "movie_id": ["m1"]}
    body = lesson.predict_body(features, "columns", signature_name="rank")
    expected = {"inputs": {"user_id": ["u1", "u2"], "movie_id": ["m1"]}, "signature_name": "rank"}
    try:
        parsed = json.loads(json.dumps(body))
    except TypeError as error:
        pytest.fail(f"the body must be JSON-serialisable (bytes -> str): {error}")
    assert parsed == expected, f"expected {expected}, got {parsed}"
    plain = lesson.predict_body({"user_id": ["u1"]}, "columns")
    assert "signature_name" not in plain, "add 'signature_name' only when it is given"


# ---- 8.4 --------------------------------------------------------------------------------
TITLES = {"m1": "Heat (1995)", "m2": "Fargo (1996)", "m3": "Babe (1995)"}


@exercise("8.4", points=1)
def test_parse_row_format(lesson):
    response = {"predictions": [
        {"movie_ids": ["m2", "m9"], "scores": [2.5, 1]},
        {"movie_ids": ["m3", "m1"], "scores": [0.75, 0.5]},
    ]}
    result = lesson.parse_recommendations(response, TITLES)
    expected = [[("Fargo (1996)", 2.5), ("m9", 1.0)], [("Babe (1995)", 0.75), ("Heat (1995)", 0.5)]]
    assert result == expected, f"expected {expected}, got {result}"
    assert all(isinstance(score, float) for user in result for _, score in user), "scores must be floats"


@exercise("8.4", points=1)
def test_parse_columnar_format(lesson):
    response = {"outputs": {"movie_ids": [["m1", "m3"], ["m2", "m1"], ["m3", "m2"]],
                            "scores": [[3.0, 2.0], [1.5, 1.0], [0.5, 0.25]]}}
    result = lesson.parse_recommendations(response, TITLES)
    expected = [[("Heat (1995)", 3.0), ("Babe (1995)", 2.0)],
                [("Fargo (1996)", 1.5), ("Heat (1995)", 1.0)],
                [("Babe (1995)", 0.5), ("Fargo (1996)", 0.25)]]
    assert result == expected, f"columnar answers hold one list per user: expected {expected}, got {result}"


@exercise("8.4", points=1)
def test_parse_error_raises_with_the_server_message(lesson):
    message = "Servable not found for request: Latest(retrievl)"
    try:
        lesson.parse_recommendations({"error": message}, TITLES)
    except NotImplementedError:
        raise  # the stub's own message says what to do
    except RuntimeError as error:
        assert message in str(error), (
            f"the exception must carry the server's message {message!r}, got {str(error)!r}"
        )
    else:
        pytest.fail("an {'error': ...} answer must raise RuntimeError, but nothing was raised")


# ---- 8.5 --------------------------------------------------------------------------------
MOVIES = [f"m{i}" for i in range(30)]
# The ranking model's opinion: a permutation, so that the sources' order and the ranker's
# order disagree. Best overall: m16 (29), m9 (28), m2 (27), m25 (26), m18 (25), m11 (24).
RANKER = {m: float((i * 13 + 1) % 30) for i, m in enumerate(MOVIES)}
FILM_TITLES = {m: f"Film {m[1:]}" for m in MOVIES if m != "m9"}
# Two sources that overlap: "ann" proposes m0, m1, ..., "ease" proposes m3, m16, m0, m25, ...
ANN = MOVIES
EASE = ["m3", "m16", "m0", "m25", "m4", "m11", "m1", "m29"]


class FakeServices:
    """In-memory stand-ins for the candidate sources and the ranker, recording their calls."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int]] = []
        self.scored: list[list[str]] = []

    def source(self, name, movies):
        def propose(user_id, n):
            self.asked.append((name, user_id, n))
            return list(movies[:n])
        return propose

    def sources(self):
        return {"ann": self.source("ann", ANN), "ease": self.source("ease", EASE)}

    def score(self, user_ids, movie_ids):
        assert len(user_ids) == len(movie_ids), "score takes one user id per movie id"
        self.scored.append(list(movie_ids))
        return np.array([RANKER[m] for m in movie_ids], np.float32)


def top_by_ranker(pool, k):
    return [FILM_TITLES.get(m, m) for m in sorted(set(pool), key=lambda m: -RANKER[m])[:k]]


@exercise("8.5", points=1)
def test_recommend_merges_the_sources_and_ranks_once(lesson):
    fake = FakeServices()
    result = lesson.recommend("u7", fake.sources(), fake.score, FILM_TITLES, k=4, n_candidates=5)
    pool = ["m0", "m1", "m2", "m3", "m4", "m16", "m25"]  # m0..m4, then EASE's new m16 and m25
    expected = top_by_ranker(pool, 4)
    assert result == expected, (
        f"the merged candidates of both sources must be ordered by the ranking model: expected {expected}, "
        f"got {result}"
    )
    assert sorted(fake.asked) == [("ann", "u7", 5), ("ease", "u7", 5)], (
        f"every source is asked once for n_candidates=5 movies of the user; calls: {fake.asked}"
    )
    assert len(fake.scored) == 1 and sorted(fake.scored[0]) == sorted(pool), (
        "the ranking model is called once, with every merged candidate exactly once "
        f"(expected {sorted(pool)}); calls: {fake.scored}"
    )


@exercise("8.5", points=1)
def test_recommend_keeps_the_merged_order_for_scoring(lesson):
    fake = FakeServices()
    lesson.recommend("u7", fake.sources(), fake.score, FILM_TITLES, k=2, n_candidates=8)
    expected = ANN[:8] + ["m16", "m25", "m11", "m29"]
    assert fake.scored == [expected], (
        "candidates are merged in the sources' order, each movie where it first appears "
        f"(the first source's, then the second's new ones): expected {expected}, got {fake.scored}"
    )


@exercise("8.5", points=1)
def test_recommend_excludes_seen_movies_and_falls_back_to_ids(lesson):
    fake = FakeServices()
    seen = ["m16", "m2", "m0"]
    result = lesson.recommend("u7", fake.sources(), fake.score, FILM_TITLES, k=3, n_candidates=30, exclude=seen)
    expected = top_by_ranker([m for m in ANN + EASE if m not in seen], 3)
    assert result == expected, (
        f"excluded movies must never appear, and m9 has no title (show its id): expected {expected}, got {result}"
    )
    few = lesson.recommend("u7", {"ann": fake.source("ann", ANN)}, fake.score, FILM_TITLES,
                           k=5, n_candidates=3, exclude=["m1"])
    assert len(few) == 2, f"3 candidates minus 1 excluded leaves 2 titles, got {few}"
