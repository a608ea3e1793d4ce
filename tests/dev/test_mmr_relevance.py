"""Lesson 06's MMR helpers (setup cells, not graded): the relevance scales, the base order MMR
starts from, the precision cost and its bound, and the choice of λ.

Every expected value is computed by hand in the comments, on fixtures without ties unless a
test is about ties."""

import math

import numpy as np
import pandas as pd
import pytest

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.grading.loader import load_lesson


@pytest.fixture(scope="module")
def lesson():
    """The setup and exercise cells of solutions/06 (the reference, whatever tree is graded)."""
    catalog = load_catalog()
    return load_lesson(catalog.root / "solutions" / catalog.lesson("06").filename, "reference_lesson_06")


# ---------------------------------------------------------------- mmr_relevance


CANDIDATES = np.array([[10, 11, 12], [20, -1, 21]])
SCORES = np.array([[0.1, 0.9, 0.5], [3.0, 9.0, 1.0]])  # the padding's score must not count
# Ranks: user 0 -> 11, 12, 10 = [2, 0, 1]; user 1 -> 20, 21 (padding last) = [0, -, 1].


def test_mmr_relevance_rank_scale(lesson):
    got = lesson.mmr_relevance("rank", CANDIDATES, SCORES)
    # 1 - rank / m, m = 3 candidates for user 0 and 2 for user 1 (the padding is not one)
    np.testing.assert_allclose(got, [[1 / 3, 1.0, 2 / 3], [1.0, 0.0, 1 / 2]])


def test_mmr_relevance_softmax_scale(lesson):
    got = lesson.mmr_relevance("ranker softmax", CANDIDATES, SCORES)
    # exp(score - the user's best score); the padding's 9 is not the best, it gets 0
    np.testing.assert_allclose(got, [[math.exp(-0.8), 1.0, math.exp(-0.4)], [1.0, 0.0, math.exp(-2.0)]])
    with pytest.raises(ValueError, match="scale"):
        lesson.mmr_relevance("stars", CANDIDATES, SCORES)


# ---------------------------------------------------------------- diversify


def test_diversify_starts_from_the_base_order(lesson):
    # Equal relevance everywhere: at λ = 1 the ties go to the better base rank, so the list is
    # the order of the scores (11, 12, 10), not the order of the candidate array.
    genres = np.eye(30)
    relevance = np.ones((2, 3))
    got = lesson.diversify(CANDIDATES, SCORES, relevance, genres, 1.0, "max", k=3)
    np.testing.assert_array_equal(got, [[11, 12, 10], [20, 21, -1]])


def test_diversify_mean_redundancy_prefers_a_new_genre(lesson):
    # One user, candidates 0, 1, 2 in base order; 0 and 1 share their genre, 2 has its own.
    genres = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    candidates, scores = np.array([[0, 1, 2]]), np.array([[3.0, 2.0, 1.0]])
    relevance = np.array([[1.0, 0.9, 0.8]])
    # λ = 0.5, second pick: 1 scores 0.45 - 0.5 * 1 = -0.05, 2 scores 0.4 - 0 = 0.4.
    got = lesson.diversify(candidates, scores, relevance, genres, 0.5, "mean", k=2)
    np.testing.assert_array_equal(got, [[0, 2]])


# ---------------------------------------------------------------- choosing λ
def test_precision_cost_and_its_bound(lesson):
    # drops 0.1, 0, 0.1 (the nan user is left out): cost = (0.2 / 3) / 0.2 = 1/3; their
    # standard deviation is 0.1 / sqrt(3), so the standard error 0.1 / 3, over 0.2: 1/6
    cost, bound = lesson.precision_cost(np.array([0.2, 0.1, 0.3, np.nan]), np.array([0.1, 0.1, 0.2, 0.5]), z=1.0)
    assert cost == pytest.approx(1 / 3)
    assert bound == pytest.approx(1 / 3 + 1 / 6)
    assert lesson.precision_cost(np.array([0.2, 0.1, 0.3]), np.array([0.1, 0.1, 0.2]), z=2.0)[1] == pytest.approx(
        1 / 3 + 2 / 6)
    with pytest.raises(ValueError, match="hits nothing"):
        lesson.precision_cost(np.zeros(3), np.zeros(3))


def test_affordable_lambda_stops_at_the_first_breach_of_the_bound(lesson):
    curve = pd.DataFrame({"diversity@10": [0.50, 0.60, 0.55, 0.70, 0.80],
                          "cost bound": [0.0, 0.04, 0.03, 0.06, 0.02]},
                         index=pd.Index([1.0, 0.9, 0.8, 0.7, 0.6], name="λ"))
    # 0.7 breaks the 5 % bound: 0.6 is never reached although its bound is low; the most
    # diverse of 1, 0.9 and 0.8 is 0.9
    assert lesson.affordable_lambda(curve, max_loss=0.05) == 0.9
    assert lesson.affordable_lambda(curve, max_loss=0.10) == 0.6
    assert lesson.affordable_lambda(curve, max_loss=0.0) == 1.0


def test_chosen_mmr_takes_the_most_diverse_row(lesson):
    table = pd.DataFrame({"λ": [0.9, 0.8, 1.0], "diversity@10": [0.6, 0.7, 0.5]},
                         index=pd.MultiIndex.from_tuples([("rank", "max"), ("rank", "mean"),
                                                          ("ranker softmax", "max")],
                                                         names=["relevance", "redundancy"]))
    assert lesson.chosen_mmr(table) == ("rank", "mean", 0.8)
