"""Lesson 08 serves lesson 06's funnel: the top 10 a user gets over HTTP equals the top 10
computed in process.

A small funnel is trained on synthetic data (two-tower model, EASE, item-kNN, popularity, a
rating model, the DCN ranker), its query tower, candidate lists and ranker are exported in
TF Serving's layout with the course's own export code, and the practice server serves them
on 127.0.0.1 with a port the OS picks. For sampled users (one of them unknown to the
models), the application's path (query tower over REST -> Annoy -> candidate lists over
REST -> merge -> ranker over REST -> sort) must give the same ten movies as the offline path
(the same Annoy index, the same :class:`~recsys_course.models.funnel.Funnel` in process)."""

import numpy as np
import pytest

import recsys_course
import tensorflow as tf

from recsys_course import evaluation, models
from recsys_course.models import funnel as fn
from recsys_course.serving.ann import AnnoyCandidates
from recsys_course.serving.client import RestClient, ServingError
from recsys_course.serving.export import save_version
from recsys_course.serving.server import PracticeServer
from recsys_course.serving.servables import (
    CANDIDATE_OUTPUTS,
    CandidatesServable,
    FunnelRankerServable,
    QueryTowerServable,
)

K, N = 10, 30
SEED = 7


@pytest.fixture(scope="module")
def trained():
    recsys_course.seed_everything(SEED)
    data = recsys_course.load_movielens("synthetic:tiny")
    fit, valid = recsys_course.split_ratings(data.ratings, test_fraction=0.2, seed=SEED)
    towers = models.train_two_tower(fit, data.movies, embedding_dim=8, epochs=2, batch_size=256, seed=SEED)
    rating, _ = models.train_ranker(fit, epochs=1, seed=SEED)
    sources = fn.build_sources(fit, data.movies, towers, ease_l2=50.0)
    funnel = fn.Funnel(fn.FunnelFeatures(sources, fn.PairRating(rating), N))
    users = np.array(sorted(set(valid["user_id"]) & set(fit["user_id"])))
    candidates = funnel.candidates(users)
    relevant = evaluation.interaction_matrix(valid, users, funnel.movie_ids) > 0
    features = funnel.feature_lists(users, candidates)
    funnel.ranker, _ = fn.train_ranker(features, fn.list_labels(candidates, relevant), candidates >= 0,
                                       epochs=2, seed=SEED)
    seen = fit.groupby("user_id")["movie_id"].agg(set)
    return towers, funnel, seen, users


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    towers, funnel, _, _ = trained
    root = tmp_path_factory.mktemp("models")
    for name, module in (("query_tower", QueryTowerServable(towers.user_model)),
                         ("candidates", CandidatesServable(funnel.features)),
                         ("ranker", FunnelRankerServable(funnel.features, funnel.ranker))):
        save_version(module, root / name, 1, signatures={"serving_default": module.serve})
    index = AnnoyCandidates(towers.movie_ids, towers.movie_embeddings, n_trees=10, seed=SEED)
    with PracticeServer(model_base_path=root, port=0, poll_seconds=0.2) as server:
        rest = RestClient(server.rest_url, timeout=60)
        for name in ("query_tower", "candidates", "ranker"):
            rest.wait_for_version(name, 1, timeout=120)
        yield rest, index
        rest.close()


def top_movies(user, embed, lists, score, index, seen, n=N, k=K):
    """The application's funnel: two-tower candidates from Annoy (minus seen movies), the
    item sources' lists, merged in SOURCES order, scored in one call, the k best kept."""
    rated = seen.get(user, set())
    two_tower = [m for m in index.query(embed(user), n + len(rated)) if m not in rated][:n]
    merged = fn.merge_candidates([two_tower, *lists(user)], exclude=rated)
    scores = np.asarray(score(user, merged), dtype=np.float64)
    return [merged[i] for i in np.argsort(-scores, kind="stable")[:k]]


def test_served_top_10_equals_offline_top_10(trained, served):
    towers, funnel, seen, users = trained
    rest, index = served
    sample = [str(u) for u in np.random.default_rng(SEED).choice(users, size=6, replace=False)] + ["no-such-user"]

    def offline_lists(user):
        lists = funnel.source_lists([user])
        return [[str(funnel.movie_ids[i]) for i in lists[name][0] if i >= 0] for name in fn.SOURCES[1:]]

    def served_lists(user):
        outputs = rest.predict("candidates", {"inputs": {"user_id": [user]}})["outputs"]
        return [[m for m in outputs[CANDIDATE_OUTPUTS[name]][0] if m] for name in fn.SOURCES[1:]]

    def offline_score(user, movies):
        return funnel.ranker(funnel.features(tf.constant([user] * len(movies)), tf.constant(movies))).numpy()

    def served_score(user, movies):
        return rest.predict("ranker", {"inputs": {"user_id": [user] * len(movies), "movie_id": movies}})["outputs"]

    def offline_embed(user):
        return towers.user_embeddings([user])[0]

    def served_embed(user):
        return np.asarray(rest.predict("query_tower", {"inputs": {"user_id": [user]}})["outputs"][0], np.float32)

    for user in sample:
        offline = top_movies(user, offline_embed, offline_lists, offline_score, index, seen)
        online = top_movies(user, served_embed, served_lists, served_score, index, seen)
        assert len(offline) == K, f"user {user}: the offline funnel returned {len(offline)} movies"
        assert online == offline, f"user {user}: served top 10 {online} differs from offline {offline}"


def test_served_lists_and_scores_match_in_process(trained, served):
    _, funnel, _, users = trained
    rest, _ = served
    user = str(users[0])
    outputs = rest.predict("candidates", {"inputs": {"user_id": [user]}})["outputs"]
    lists = funnel.source_lists([user])
    for name, output in CANDIDATE_OUTPUTS.items():
        expected = [str(funnel.movie_ids[i]) for i in lists[name][0]]
        assert outputs[output][0] == expected, f"{name}: served list differs from the in-process one"
    movies = expected[:5]
    served_scores = rest.predict("ranker", {"inputs": {"user_id": [user] * 5, "movie_id": movies}})["outputs"]
    offline = funnel.ranker(funnel.features(tf.constant([user] * 5), tf.constant(movies))).numpy()
    np.testing.assert_allclose(served_scores, offline, rtol=1e-5, atol=1e-6)


def test_ranker_refuses_an_unknown_movie(served):
    rest, _ = served
    with pytest.raises(ServingError) as error:
        rest.predict("ranker", {"inputs": {"user_id": ["1"], "movie_id": ["no-such-movie"]}})
    # 400, INVALID_ARGUMENT. (The practice server shows only the first line of TensorFlow's
    # error, "Graph execution error:"; the assertion's message naming the catalogue is in
    # the lines after it.)
    assert error.value.status == 400, f"expected HTTP 400, got {error.value.status} {error.value.message}"
