"""Graded tests for lesson 07 (Annoy). Each test checks one behaviour of one exercise on a
tiny fixture; the points add up to the exercise's points in solutions/07_annoy_indexing.yml.
No TensorFlow here: the exercises only need NumPy and Annoy, so grading stays fast."""

import numpy as np
import pytest
from annoy import AnnoyIndex

from recsys_course.tooling.grading import exercise, sandboxed, type_names


@pytest.fixture(scope="module")
def lesson(lesson_loader):
    return lesson_loader("07")


def as_list(ids) -> list[int]:
    return [int(i) for i in np.asarray(ids).ravel()]


def varied_norm_items(n: int, d: int, seed: int) -> np.ndarray:
    """Random directions with lengths from 0.2 to 3: cosine and dot product rank them differently."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return (directions * rng.uniform(0.2, 3.0, size=(n, 1))).astype(np.float32)


# ---------------------------------------------------------------- 7.1 exact top-k

def assert_fixture_has_distinct_top(scores: np.ndarray, k: int) -> None:
    """Guard the fixture itself: the best ``k + 1`` scores are far apart, so the right
    answer does not depend on float rounding or on how a library breaks near-ties."""
    top = np.sort(np.asarray(scores, dtype=np.float64))[::-1][: k + 1]
    gap = float(np.min(-np.diff(top))) if len(top) > 1 else np.inf
    assert gap > 1e-3 * max(1.0, float(np.abs(top).max())), f"fixture has near-ties (gap {gap:.2e})"


def ranked_fixture(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items whose inner products with the query are a shuffled ladder of well-separated
    values (spacing 0.01, other coordinates perturb them by < 0.001), so the exact order is
    unique and unrelated to the item ids.

    Returns ``(items, query, scores)`` with ``scores`` the exact float64 inner products."""
    rng = np.random.default_rng(seed)
    ladder = rng.permutation(np.linspace(-5.0, 5.0, n))
    items = np.hstack([ladder[:, None], rng.uniform(-1, 1, size=(n, d - 1))]).astype(np.float32)
    query = np.concatenate([[1.0], rng.uniform(-1, 1, size=d - 1) * 1e-4 / d]).astype(np.float32)
    scores = items.astype(np.float64) @ query.astype(np.float64)
    return items, query, scores


@exercise("7.1", points=1)
def test_exact_top_k_orders_by_score(lesson):
    items = np.array([[0.5, 0.5], [1, 0], [0, 1], [-1, 0], [0.9, 0.1], [0.2, 0.9]], dtype=np.float32)
    query = np.array([1.0, 0.2], dtype=np.float32)  # scores 0.6, 1.0, 0.2, -1.0, 0.92, 0.38
    # The right answer [1, 4, 0] is neither in id order ([0, 1, 4], [4, 1, 0]) nor worst first.
    result = as_list(lesson.exact_top_k(items, query, 3))
    assert result == [1, 4, 0], (
        f"scores are [0.6, 1.0, 0.2, -1.0, 0.92, 0.38]: expected the top 3 as [1, 4, 0] "
        f"(best first), got {result}"
    )


@exercise("7.1", points=1)
def test_exact_top_k_uses_the_inner_product(lesson):
    items = np.array([[0.1, 0.0], [3.0, 3.0], [0.0, 1.0]], dtype=np.float32)
    query = np.array([1.0, 0.0], dtype=np.float32)
    result = as_list(lesson.exact_top_k(items, query, 1))
    assert result == [1], (
        "item 1 has the largest inner product (3.0) although item 0 points exactly along the "
        f"query (cosine 1.0, inner product 0.1): expected [1], got {result}"
    )


@exercise("7.1", points=1)
def test_exact_top_k_matches_a_full_sort_and_caps_k(lesson):
    for seed in (4, 5, 6):
        items, query, scores = ranked_fixture(1000, 8, seed)
        expected = as_list(np.argsort(-scores)[:200])
        assert expected != sorted(expected) and expected != sorted(expected, reverse=True)
        result = lesson.exact_top_k(items, query, 200)
        assert np.issubdtype(np.asarray(result).dtype, np.integer), (
            f"expected integer indices, got dtype {np.asarray(result).dtype}"
        )
        wrong = next((i for i, (a, b) in enumerate(zip(as_list(result), expected)) if a != b), None)
        assert len(result) == 200 and wrong is None, (
            f"the 200 best of 1,000 items must come best first: at position {wrong} "
            f"expected item {expected[wrong] if wrong is not None else '-'}, got "
            f"{as_list(result)[wrong] if wrong is not None and wrong < len(result) else 'nothing'}"
        )
    few = np.array([2, 0, 3, 1])  # four items whose scores do not rise or fall with their row
    small = lesson.exact_top_k(items[few], query, 10)
    assert as_list(small) == as_list(np.argsort(-scores[few])), (
        f"k=10 on 4 items must return all 4, best first; expected "
        f"{as_list(np.argsort(-scores[few]))}, got {as_list(small)}"
    )


# ---------------------------------------------------------------- 7.2 build an Annoy index

@exercise("7.2", points=1)
def test_index_holds_every_row_as_its_item(lesson):
    vectors = np.arange(15, dtype=np.float32).reshape(5, 3) + 1.0
    index = lesson.build_annoy_index(vectors, metric="euclidean", n_trees=7, seed=1)
    kinds = type_names(index)  # (works for an index in the batch grader's sandbox too)
    assert "annoy.Annoy" in kinds, f"expected an AnnoyIndex, got {kinds[0] if kinds else '?'}"
    assert index.f == 3, f"the index needs 3 dimensions, got {index.f}"
    assert index.get_n_items() == 5, f"expected 5 items (ids 0..4), got {index.get_n_items()}"
    assert index.get_n_trees() == 7, f"expected 7 trees, got {index.get_n_trees()}"
    for i in range(5):
        stored = np.array(index.get_item_vector(i))
        assert np.allclose(stored, vectors[i]), f"item {i} should be row {i} {vectors[i]}, got {stored}"


@exercise("7.2", points=1)
def test_index_uses_the_requested_metric(lesson):
    vectors = np.array([[1.0, 0.0], [10.0, 1.0]], dtype=np.float32)
    query = [9.0, 0.0]
    euclidean = lesson.build_annoy_index(vectors, metric="euclidean", n_trees=2, seed=1)
    angular = lesson.build_annoy_index(vectors, metric="angular", n_trees=2, seed=1)
    nearest_euclidean = euclidean.get_nns_by_vector(query, 1)
    nearest_angular = angular.get_nns_by_vector(query, 1)
    assert nearest_euclidean == [1], (
        f"by Euclidean distance [10, 1] is nearest to [9, 0]: expected [1], got {nearest_euclidean}"
    )
    assert nearest_angular == [0], (
        f"by angle [1, 0] is nearest to [9, 0]: expected [0], got {nearest_angular}"
    )


def saved_bytes(index) -> bytes:
    """The index as saved to disk (run where the index lives: the sandbox, in batch grading)."""
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "index.ann")
    index.save(path)
    index.unload()
    with open(path, "rb") as handle:
        return handle.read()


@exercise("7.2", points=1)
def test_the_seed_decides_the_trees(lesson):
    vectors = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    as_bytes = sandboxed(lesson, saved_bytes)

    def build(seed: int) -> bytes:
        return as_bytes(lesson.build_annoy_index(vectors, metric="angular", n_trees=3, seed=seed))

    first, again, other = build(1), build(1), build(2)
    assert first == again, "two builds with the same seed must give identical indexes"
    assert first != other, (
        "seeds 1 and 2 gave identical trees: set the seed on the index before building "
        "(index.set_seed(seed))"
    )


# ---------------------------------------------------------------- 7.3 recall against exact search

@exercise("7.3", points=1)
def test_recall_on_a_hand_checked_example(lesson):
    result = lesson.recall_against_exact([[1, 2, 3], [4, 5, 6]], [[1, 2, 9], [7, 8, 9]], 3)
    assert result == pytest.approx(1 / 3), (
        f"query 1 finds 2 of 3, query 2 finds 0 of 3: expected (2/3 + 0) / 2 = 0.3333, got {result}"
    )


@exercise("7.3", points=1)
def test_recall_ignores_order_and_counts_only_the_first_k(lesson):
    reordered = lesson.recall_against_exact([[3, 2, 1, 7]], [[1, 2, 3, 4]], 3)
    assert reordered == pytest.approx(1.0), (
        f"[3, 2, 1] holds all of the exact top 3 [1, 2, 3] in another order: expected 1.0, got {reordered}"
    )
    cut = lesson.recall_against_exact(np.array([[9, 1, 2, 3]]), np.array([[1, 2, 3, 4]]), 3)
    assert cut == pytest.approx(2 / 3), (
        f"only the first 3 approximate ids [9, 1, 2] count against [1, 2, 3]: expected 0.6667, got {cut}"
    )


@exercise("7.3", points=1)
def test_recall_charges_missing_answers(lesson):
    result = lesson.recall_against_exact([[1], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]], 3)
    assert result == pytest.approx((1 / 3 + 1) / 2), (
        "an index that returns 1 id when 3 were asked found 1 of 3, not 1 of 1: expected "
        f"(1/3 + 1) / 2 = 0.6667, got {result}"
    )


# ---------------------------------------------------------------- 7.4 augmentation

@exercise("7.4", points=1)
def test_augmentation_keeps_the_items_and_finds_the_max_norm(lesson):
    items = np.array([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    augmented, max_norm = lesson.augment_for_mips(items)
    augmented = np.asarray(augmented)
    assert augmented.shape == (4, 4), f"expected shape (4, 4), got {augmented.shape}"
    assert augmented.dtype == np.float32, f"expected float32, got {augmented.dtype}"
    assert np.allclose(augmented[:, :3], items), "the first 3 columns must be the items unchanged"
    assert float(max_norm) == pytest.approx(5.0), f"the longest row is [3, 4, 0], length 5: got {max_norm}"


@exercise("7.4", points=1)
def test_every_augmented_row_has_the_max_norm(lesson):
    items = varied_norm_items(50, 6, seed=1)
    augmented, max_norm = lesson.augment_for_mips(items)
    lengths = np.linalg.norm(np.asarray(augmented, dtype=np.float64), axis=1)
    longest = int(np.argmax(np.linalg.norm(items, axis=1)))
    assert np.allclose(lengths, max_norm, rtol=1e-4), (
        f"every augmented row must have length {float(max_norm):.4f}; got lengths from "
        f"{lengths.min():.4f} to {lengths.max():.4f}"
    )
    extra = np.asarray(augmented)[:, -1]
    assert np.all(extra >= 0) and not np.any(np.isnan(extra)), "the extra coordinate must be >= 0 and never NaN"
    assert extra[longest] == pytest.approx(0.0, abs=1e-3), (
        f"the longest item needs no extra length: expected 0 in its last column, got {extra[longest]}"
    )


@exercise("7.4", points=1)
def test_angles_after_augmentation_rank_like_inner_products(lesson):
    items = varied_norm_items(40, 5, seed=2)
    augmented, _ = lesson.augment_for_mips(items)
    augmented = np.asarray(augmented, dtype=np.float64)
    unit = augmented / np.linalg.norm(augmented, axis=1, keepdims=True)
    for query in np.random.default_rng(3).normal(size=(5, 5)):
        assert_fixture_has_distinct_top(items @ query, 10)
        by_angle = as_list(np.argsort(-(unit @ np.append(query, 0.0)))[:10])
        by_dot = as_list(np.argsort(-(items @ query))[:10])
        assert by_angle == by_dot, (
            f"after augmentation the cosine order must equal the inner-product order: expected "
            f"{by_dot}, got {by_angle}"
        )


# ---------------------------------------------------------------- 7.5 querying the augmented index

def reference_mips_index(items: np.ndarray) -> AnnoyIndex:
    """An angular index over items augmented independently of the learner's 4.4."""
    squared = (items.astype(np.float64) ** 2).sum(axis=1)
    extra = np.sqrt(np.clip(squared.max() - squared, 0.0, None))
    augmented = np.hstack([items, extra[:, None]]).astype(np.float32)
    index = AnnoyIndex(augmented.shape[1], "angular")
    index.set_seed(0)
    for i, vector in enumerate(augmented):
        index.add_item(i, vector)
    index.build(5, n_jobs=1)
    return index


MIPS_ITEMS = varied_norm_items(60, 6, seed=5)
MIPS_QUERIES = np.random.default_rng(6).normal(size=(6, 6)).astype(np.float32)


@exercise("7.5", points=2)
def test_mips_search_returns_the_inner_product_top_k(lesson):
    index = sandboxed(lesson, reference_mips_index)(MIPS_ITEMS)
    for query in MIPS_QUERIES:
        assert_fixture_has_distinct_top(MIPS_ITEMS @ query, 5)
        expected = as_list(np.argsort(-(MIPS_ITEMS @ query))[:5])
        result = as_list(lesson.mips_search(index, query, 5, search_k=10_000))
        assert result == expected, (
            "with search_k large enough to see all 60 items the answer is exact: expected the "
            f"inner-product top 5 {expected}, got {result}"
        )


@exercise("7.5", points=1)
def test_mips_search_returns_k_integer_ids_and_leaves_the_query_alone(lesson):
    index = sandboxed(lesson, reference_mips_index)(MIPS_ITEMS)
    query = MIPS_QUERIES[0].copy()
    result = lesson.mips_search(index, query, 3, search_k=10_000)
    assert np.issubdtype(np.asarray(result).dtype, np.integer), (
        f"expected integer ids, got dtype {np.asarray(result).dtype}"
    )
    assert len(result) == 3, f"asked for 3 ids, got {len(result)}"
    assert np.array_equal(query, MIPS_QUERIES[0]), "mips_search must not modify the query it is given"
    from_list = as_list(lesson.mips_search(index, [float(v) for v in query], 3, search_k=10_000))
    assert from_list == as_list(result), (
        f"a query given as a Python list must give the same answer: {from_list} vs {as_list(result)}"
    )
