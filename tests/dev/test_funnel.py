"""The funnel's library code (``recsys_course.models.funnel`` and ``recsys_course.baselines``): merging
candidate lists, the features the ranker reads, the listwise loss, the ranker's training and
the choice of its variant, and that the library agrees with the lessons' exercises.

Expected values are computed by hand or with NumPy on small fixtures without ties (unless a
test is about ties)."""

import math

import numpy as np
import pandas as pd
import pytest

import recsys_course  # noqa: F401  (legacy Keras before TensorFlow)
import tensorflow as tf

from recsys_course import evaluation, models
from recsys_course.data import split_folds
from recsys_course import baselines
from recsys_course.models import funnel as fn
from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.loader import load_lesson


def reference_exercise(function: str):
    """The reference solution of the exercise whose function is ``function`` (whichever lesson
    holds it), loaded up to that exercise as grading loads it."""
    catalog = load_catalog()
    for lesson in catalog.lessons:
        for exercise in lesson.exercises:
            if exercise.function == function:
                module = load_lesson(catalog.root / "solutions" / lesson.filename, f"reference_{function}",
                                     exercises={exercise.id})
                return getattr(module, function)
    raise LookupError(f"no lesson has an exercise named {function}")


# ---------------------------------------------------------------- merging


def test_merge_candidates_keeps_first_appearance_and_drops_exclusions():
    got = fn.merge_candidates([["b", "a", "c"], ["c", "d", "a"], ["e"]], exclude=["d"])
    assert got == ["b", "a", "c", "e"]


def test_union_lists_pads_rows():
    first = np.array([[3, 1, -1], [2, 0, 5]])
    second = np.array([[1, 4, 0], [5, 2, 0]])
    got = fn.union_lists([first, second])
    np.testing.assert_array_equal(got, [[3, 1, 4, 0], [2, 0, 5, -1]])


def test_order_by_keeps_candidate_order_on_ties_and_pads():
    candidates = np.array([[7, 3, 9, -1], [4, -1, -1, -1]])
    scores = np.array([[1.0, 2.0, 1.0, 99.0], [0.5, 7.0, 7.0, 7.0]])
    np.testing.assert_array_equal(fn.order_by(candidates, scores, 3), [[3, 7, 9], [4, -1, -1]])


def test_list_labels():
    relevant = np.array([[False, True, False, True], [True, False, False, False]])
    got = fn.list_labels(np.array([[3, 0, -1], [0, 2, 1]]), relevant)
    np.testing.assert_array_equal(got, [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    gains = np.array([[0.0, 3.0, 0.0, 31.0], [7.0, 0.0, 0.0, 0.0]])  # graded labels pass through
    got = fn.list_labels(np.array([[3, 1, -1], [0, 2, -1]]), gains)
    np.testing.assert_array_equal(got, [[31.0, 3.0, 0.0], [7.0, 0.0, 0.0]])


# ---------------------------------------------------------------- baselines


def test_ease_matches_the_exercise_and_the_two_item_case():
    # Two items with Gram [[2, 1], [1, 2]] and λ = 1: each weight is the one-variable ridge
    # regression 1 / (2 + 1) = 1/3.
    x = np.array([[1, 1], [1, 0], [0, 1]], dtype=float)
    np.testing.assert_allclose(baselines.ease_weights(x, 1.0), [[0.0, 1 / 3], [1 / 3, 0.0]])
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(float)
    x[:, 5] = 0.0  # an item nobody rated: zero weights, as the full inverse gives
    exercise = reference_exercise("ease_weights")
    np.testing.assert_allclose(baselines.ease_weights(x, 20.0), exercise(x, 20.0), atol=1e-10)
    with pytest.raises(ValueError, match="positive"):
        baselines.ease_weights(x, 0.0)


def test_item_knn_and_popularity():
    x = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=float)
    # Columns 0 and 1 share one user of two each: cosine 1/2; columns 1 and 2: 1 / sqrt(2).
    np.testing.assert_allclose(baselines.item_knn_weights(x), [[0, 0.5, 0], [0.5, 0, 1 / math.sqrt(2)],
                                                               [0, 1 / math.sqrt(2), 0]])
    np.testing.assert_array_equal(baselines.popularity_counts(x), [2.0, 2.0, 1.0])


# ---------------------------------------------------------------- the listwise loss


def test_listwise_loss_matches_the_exercise():
    rng = np.random.default_rng(1)
    labels = (rng.random((6, 9)) < 0.3).astype(np.float32)
    labels[2] = 0.0  # a list without positives
    scores = rng.normal(size=(6, 9)).astype(np.float32) * 3
    mask = rng.random((6, 9)) < 0.8
    mask[:, 0] = True
    exercise = reference_exercise("listwise_loss")
    mine = float(fn.listwise_softmax_loss(tf.constant(labels), tf.constant(scores), tf.constant(mask)))
    theirs = float(exercise(tf.constant(labels), tf.constant(scores), tf.constant(mask)))
    assert mine == pytest.approx(theirs, rel=1e-6)
    # and by hand, list by list
    values = []
    for y, s, m in zip(labels, scores, mask):
        y = np.where(m, y, 0.0)
        if y.sum() > 0:
            log_p = s[m] - np.log(np.exp(s[m]).sum())
            values.append(-(y[m] * log_p).sum() / y.sum())
    assert mine == pytest.approx(float(np.mean(values)), rel=1e-5)


# ---------------------------------------------------------------- features

USERS = ["u1", "u2", "u3"]
MOVIES = pd.DataFrame({"movie_id": ["m0", "m1", "m2", "m3", "m4"],
                       "movie_genres": [["Drama"], ["Drama", "Comedy"], ["Comedy"], [], ["Action"]]})
RATINGS = pd.DataFrame({
    "user_id": ["u1", "u1", "u2", "u2", "u2", "u3", "u3"],
    "movie_id": ["m0", "m1", "m1", "m2", "m3", "m0", "m2"],
    "user_rating": [5.0, 4.0, 3.0, 2.0, 4.0, 1.0, 5.0],
    "timestamp": [86_400 * d for d in (0, 1, 2, 3, 4, 5, 10)],
})


class ConstantRating(tf.Module):
    """A rating model that predicts the movie's number (m3 -> 3.0), for checking the column."""

    def predict_rating(self, user_ids, movie_ids):
        return tf.strings.to_number(tf.strings.substr(movie_ids, 1, 1))


@pytest.fixture(scope="module")
def toy_funnel():
    towers = models.train_two_tower(RATINGS, MOVIES, embedding_dim=4, epochs=1, batch_size=4, seed=0)
    sources = fn.build_sources(RATINGS, MOVIES, towers, ease_l2=1.0)
    return sources, fn.Funnel(fn.FunnelFeatures(sources, ConstantRating(), n_candidates=2))


def test_build_sources_facts(toy_funnel):
    sources, _ = toy_funnel
    np.testing.assert_array_equal(sources.user_ids, USERS)
    np.testing.assert_array_equal(sources.popularity, [2, 2, 2, 1, 0])
    # last timestamp is day 10; m0 first rated on day 0, m3 on day 4, m4 never
    np.testing.assert_allclose(sources.age_days, [10, 9, 7, 6, 0])
    np.testing.assert_array_equal(sources.history[1], [0, 1, 1, 1, 0])


def test_source_lists_skip_seen_movies(toy_funnel):
    sources, funnel = toy_funnel
    lists = funnel.source_lists(["u1", "u2", "nobody"], n=5)
    for name in fn.SOURCES:
        for row, user in enumerate(["u1", "u2"]):
            seen = set(np.flatnonzero(sources.history[USERS.index(user)]))
            listed = [i for i in lists[name][row] if i >= 0]
            assert not seen & set(listed), f"{name} proposes a seen movie to {user}"
            assert len(listed) == 5 - len(seen)
    # popularity: u1 has seen m0 and m1; m2 (2 users) then m3 (1) then m4 (0)
    np.testing.assert_array_equal(lists["popularity"][0], [2, 3, 4, -1, -1])
    # EASE: u2's history row times B, computed in NumPy
    ease = sources.history[1] @ sources.ease
    expected = [i for i in np.argsort(-ease, kind="stable") if sources.history[1, i] == 0]
    np.testing.assert_array_equal(lists["EASE"][1][:2], expected)


def test_features_match_numpy(toy_funnel):
    sources, funnel = toy_funnel
    users, movies = ["u3", "u3", "u1", "nobody"], ["m1", "m4", "m2", "m0"]
    got = funnel.features(tf.constant(users), tf.constant(movies)).numpy()
    assert got.shape == (4, len(fn.FEATURES))
    column = {name: i for i, name in enumerate(fn.FEATURES)}
    # u3 has seen m0 and m2; unseen: m1, m3, m4. EASE scores of those, z-scored among them.
    h = sources.history[2]
    ease = h @ sources.ease
    unseen = np.flatnonzero(h == 0)
    z = (ease[unseen] - ease[unseen].mean()) / ease[unseen].std()
    order = unseen[np.argsort(-ease[unseen], kind="stable")]
    for row, movie in ((0, 1), (1, 4)):
        rank = int(np.flatnonzero(order == movie)[0])
        assert got[row, column["EASE z-score"]] == pytest.approx(z[list(unseen).index(movie)], abs=1e-5)
        assert got[row, column["EASE rank discount"]] == pytest.approx(1 / math.log2(rank + 2), abs=1e-6)
        assert got[row, column["EASE proposed"]] == float(rank < 2)
    assert got[0, column["log item popularity"]] == pytest.approx(math.log1p(2))
    assert got[1, column["log item age (days)"]] == pytest.approx(0.0)
    assert got[0, column["log user activity"]] == pytest.approx(math.log1p(2))
    # u3's genres: Drama (m0) + Comedy (m2) = (Action 0, Comedy 1, Drama 1); m1 is Drama and
    # Comedy -> cosine 1; m4 is Action -> 0; u1 (Drama 2, Comedy 1) with m2 (Comedy): 1 / sqrt(5)
    assert got[0, column["genre affinity"]] == pytest.approx(1.0, abs=1e-6)
    assert got[1, column["genre affinity"]] == pytest.approx(0.0, abs=1e-6)
    assert got[2, column["genre affinity"]] == pytest.approx(1 / math.sqrt(5), abs=1e-6)
    np.testing.assert_allclose(got[:, column["predicted rating"]], [1.0, 4.0, 2.0, 0.0])
    # an unknown user has no history: activity 0, item-based scores all 0
    assert got[3, column["log user activity"]] == 0.0
    assert got[3, column["EASE z-score"]] == 0.0


def test_features_refuse_an_unknown_movie(toy_funnel):
    _, funnel = toy_funnel
    with pytest.raises(tf.errors.InvalidArgumentError, match="catalogue"):
        funnel.features(tf.constant(["u1"]), tf.constant(["no-such-movie"]))


def test_feature_lists_fill_padding_with_zeros(toy_funnel):
    _, funnel = toy_funnel
    candidates = np.array([[2, 3, -1], [0, -1, -1]])
    got = funnel.feature_lists(["u1", "u2"], candidates)
    direct = funnel.features(tf.constant(["u1", "u1", "u2"]), tf.constant(["m2", "m3", "m0"])).numpy()
    np.testing.assert_allclose(got[0, :2], direct[:2], rtol=1e-6)
    np.testing.assert_allclose(got[1, 0], direct[2], rtol=1e-6)
    assert not got[0, 2].any() and not got[1, 1:].any()


# ---------------------------------------------------------------- cross-fitted lists
GRID_USERS = [f"u{u}" for u in range(6)]
GRID = pd.DataFrame([  # each user rates four of the five movies, stars 1 to 5
    {"user_id": user, "movie_id": f"m{(u + j) % 5}", "user_rating": float(1 + (u + 2 * j) % 5),
     "timestamp": 86_400 * (u + j)} for u, user in enumerate(GRID_USERS) for j in range(4)])


def test_cross_fitted_lists_label_each_fold_with_sources_that_never_saw_it():
    towers = models.train_two_tower(GRID, MOVIES, embedding_dim=4, epochs=1, batch_size=8, seed=0)
    fitted_on = []

    def fit_funnel(ratings):
        fitted_on.append(ratings)
        return fn.Funnel(fn.FunnelFeatures(fn.build_sources(ratings, MOVIES, towers, ease_l2=1.0), ConstantRating(),
                                           n_candidates=2))

    folds = split_folds(GRID, 3, seed=1)
    lists = fn.cross_fitted_lists(folds, fit_funnel)
    assert len(fitted_on) == 3
    pair = lambda f: set(zip(f["user_id"], f["movie_id"]))  # noqa: E731
    for f, fold in enumerate(folds):
        assert not pair(fitted_on[f]) & pair(fold) and len(fitted_on[f]) + len(fold) == len(GRID)
        rows = np.flatnonzero(lists.parts == f)
        assert list(lists.users[rows]) == sorted(set(fold["user_id"]) & set(fitted_on[f]["user_id"]))
        for row in rows:
            user = lists.users[row]
            mine = fold[fold["user_id"] == user]
            stars = dict(zip(mine["movie_id"], mine["user_rating"]))
            got = {f"m{i}": float(v) for i, v in enumerate(lists.stars[row]) if v > 0}
            assert got == stars
            before = set(fitted_on[f].loc[fitted_on[f]["user_id"] == user, "movie_id"])
            assert {f"m{i}" for i in np.flatnonzero(lists.seen[row])} == before
            proposed = [c for c in lists.candidates[row] if c >= 0]
            assert proposed and not {f"m{i}" for i in proposed} & before  # never a seen movie
            np.testing.assert_allclose(lists.labels()[row, :len(proposed)],
                                       [2.0 ** stars.get(f"m{c}", 0.0) - 1.0 for c in proposed])
        # the features are those of the funnel fitted on the other folds
        funnel = fit_funnel(fitted_on[f])
        np.testing.assert_allclose(lists.features[rows][:, :lists.candidates.shape[1]],
                                   funnel.feature_lists(lists.users[rows], lists.candidates[rows]), rtol=1e-5)
    # every rating of a user who also rated elsewhere labels exactly one list
    assert int(lists.rated.sum()) == sum(
        len(fold[fold["user_id"].isin(set(fitted_on[f]["user_id"]))]) for f, fold in enumerate(folds))
    assert lists.mask.shape == lists.candidates.shape == lists.features.shape[:2]


def test_concat_lists_pads_to_the_widest_and_rows_select():
    def part(users, width, p):
        n = len(users)
        return fn.RankerLists(users=np.array(users), parts=np.full(n, p), candidates=np.arange(n * width).reshape(n, width),
                              features=np.ones((n, width, 2), np.float32), stars=np.zeros((n, 3), np.float32),
                              seen=np.zeros((n, 3), bool), sources={"EASE": np.zeros((n, 1), np.int64)})

    both = fn.concat_lists([part(["a"], 1, 0), part(["a", "b"], 2, 1)])
    np.testing.assert_array_equal(both.candidates, [[0, -1], [0, 1], [2, 3]])
    np.testing.assert_array_equal(both.features[:, :, 0], [[1, 0], [1, 1], [1, 1]])
    np.testing.assert_array_equal(both.parts, [0, 1, 1])
    np.testing.assert_array_equal(both.rows(both.users == "a").parts, [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        fn.concat_lists([])


def test_split_users_keeps_every_row_of_a_user_on_one_side():
    users = np.array(["a", "b", "c", "d", "a", "b", "c", "d", "e"])
    first, second = fn.split_users(users, seed=0)
    assert sorted(np.concatenate([first, second])) == list(range(len(users)))
    assert not set(users[first]) & set(users[second])
    assert {len(set(users[first])), len(set(users[second]))} == {2, 3}


# ---------------------------------------------------------------- the ranker


def planted_lists(n_users=120, length=12, seed=0):
    """Lists whose positive is the candidate with the largest product of features 0 and 1
    (a cross no single feature shows)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_users, length, 3)).astype(np.float32)
    labels = np.zeros((n_users, length), np.float32)
    labels[np.arange(n_users), np.argmax(features[..., 0] * features[..., 1], axis=1)] = 1.0
    return features, labels


def test_train_ranker_learns_a_planted_cross():
    features, labels = planted_lists()
    mask = np.ones(labels.shape, bool)
    losses = []
    model, _ = fn.train_ranker(features, labels, mask, cross=True, epochs=30, batch_size=16, learning_rate=0.01,
                               seed=0, after_epoch=lambda m: losses.append(float(fn.listwise_softmax_loss(
                                   tf.constant(labels), m(tf.constant(features)), tf.constant(mask)))))
    assert losses[-1] < losses[0] - 0.5, f"the loss should fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
    test_features, test_labels = planted_lists(seed=1)
    top = np.argmax(model(tf.constant(test_features)).numpy(), axis=1)
    hit = test_labels[np.arange(len(top)), top].mean()
    assert hit > 0.3, f"the top candidate should often be the planted positive (chance 1/12), got {hit:.2f}"


def test_ensemble_averages_its_members():
    features, labels = planted_lists(n_users=40)
    mask = np.ones(labels.shape, bool)
    ensemble = fn.train_ensemble(features, labels, mask, members=2, epochs=1, seed=3)
    x = tf.constant(features[:4])
    members = [m(x).numpy() for m in ensemble.members]
    np.testing.assert_allclose(ensemble(x).numpy(), (members[0] + members[1]) / 2, rtol=1e-6)
    assert not np.allclose(members[0], members[1]), "members trained from different seeds should differ"


def test_train_ranker_rejects_bad_shapes():
    with pytest.raises(ValueError, match="U, L"):
        fn.train_ranker(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3), bool))


def test_choose_ranker_returns_the_best_cell():
    features, labels = planted_lists(n_users=80)
    candidates = np.tile(np.arange(12), (80, 1))
    relevant = np.zeros((80, 12), bool)
    relevant[np.arange(80), np.argmax(labels, axis=1)] = True
    first, second = fn.split_rows(80, seed=0)
    assert len(first) == 40 and not set(first) & set(second)
    choice = fn.choose_ranker(features, labels, candidates, relevant, train_rows=first, check_rows=second, k=1,
                              max_epochs=3, batch_size=16, learning_rate=0.01)
    assert list(choice.curves.columns) == list(fn.RANKER_VARIANTS)
    best = choice.curves.stack().max()
    assert choice.curves.loc[choice.epochs, choice.variant] == best
    # the check model carries the weights of the chosen epoch
    ranked = fn.order_by(candidates[second], choice.check_model(tf.constant(features[second])).numpy(), 1)
    assert evaluation.precision_at_k(ranked, relevant[second], 1) == pytest.approx(best)


def test_choose_ranker_measures_with_the_criterion_it_is_given():
    """A criterion replaces precision@k: the curves are its values, computed on the check
    rows' top k, and the choice follows them."""
    features, labels = planted_lists(n_users=40)
    candidates = np.tile(np.arange(12), (40, 1))
    relevant = np.zeros((40, 12), bool)
    relevant[np.arange(40), np.argmax(labels, axis=1)] = True
    first, second = fn.split_rows(40, seed=0)
    seen = []

    def share_of_item_zero(ranked: np.ndarray) -> float:  # rewards a top 1 the labels never favour
        seen.append(ranked.shape)
        return float((ranked[:, 0] == 0).mean())

    choice = fn.choose_ranker(features, labels, candidates, relevant, train_rows=first, check_rows=second, k=1,
                              max_epochs=2, batch_size=16, learning_rate=0.01, criterion=share_of_item_zero)
    assert set(seen) == {(len(second), 1)} and len(seen) == 2 * len(fn.RANKER_VARIANTS)
    ranked = fn.order_by(candidates[second], choice.check_model(tf.constant(features[second])).numpy(), 1)
    assert choice.curves.loc[choice.epochs, choice.variant] == pytest.approx(share_of_item_zero(ranked))
    assert choice.curves.loc[choice.epochs, choice.variant] == choice.curves.stack().max()
