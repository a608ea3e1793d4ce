"""Tests of the shared id-only two-tower helper (recsys_course.two_tower), used by lessons 04
and 05. Tiny fixtures: a few hundred interactions with an obvious structure to learn."""

import numpy as np
import pandas as pd
import pytest

import recsys_course  # noqa: F401  (legacy Keras before TensorFlow)
from recsys_course.two_tower import TwoTower, train_two_tower


def clustered_interactions(n_users: int = 40, n_movies: int = 30, per_user: int = 8) -> pd.DataFrame:
    """Users in group g (user index % 3) only watch movies in group g (movie index % 3)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        group = [m for m in range(n_movies) if m % 3 == u % 3]
        for m in rng.choice(group, size=per_user, replace=False):
            rows.append((f"u{u}", f"m{m}"))
    return pd.DataFrame(rows, columns=["user_id", "movie_id"])


TRAIN = clustered_interactions()  # 320 pairs
# The catalogue holds two movies nobody watched: they must still get a vector.
MOVIES = pd.DataFrame({"movie_id": [f"m{m}" for m in range(32)]})


@pytest.fixture(scope="module")
def trained() -> TwoTower:
    # batch 60 leaves a partial last batch of 20 pairs, as real data usually does
    return train_two_tower(TRAIN, MOVIES, embedding_dim=8, epochs=30, batch_size=60, learning_rate=0.5)


def test_shapes_dtypes_and_catalogue(trained):
    assert trained.movie_embeddings.shape == (32, 8), (
        f"expected movie_embeddings of shape (32, 8), got {trained.movie_embeddings.shape}"
    )
    assert trained.movie_embeddings.dtype == np.float32
    assert sorted(trained.movie_ids.tolist()) == sorted(MOVIES["movie_id"]), (
        "movie_ids must hold every movie of the catalogue, including unwatched ones"
    )
    assert all(isinstance(m, str) for m in trained.movie_ids.tolist())
    users = trained.user_model(np.array(["u0", "u1", "never-seen"]))
    assert tuple(users.shape) == (3, 8) and users.dtype.name == "float32", (
        f"user_model must map 3 ids to float32 [3, 8], got {users.dtype.name} {tuple(users.shape)}"
    )


def test_embedding_rows_match_the_movie_tower(trained):
    direct = trained.movie_model(np.array(trained.movie_ids[[0, 5, 31]])).numpy()
    np.testing.assert_allclose(direct, trained.movie_embeddings[[0, 5, 31]], rtol=1e-5, atol=1e-6)


def test_training_lowers_the_loss_and_learns_the_groups(trained):
    losses = trained.history["loss_per_example"]
    assert len(losses) == 30 and losses[-1] < losses[0], f"loss should fall: first {losses[0]}, last {losses[-1]}"
    users = [f"u{u}" for u in range(12)]
    scores = trained.user_embeddings(users) @ trained.movie_embeddings.T
    same_group = 0
    for u, row in zip(range(12), scores):
        best = trained.movie_ids[int(np.argmax(row))]
        same_group += int(best[1:]) % 3 == u % 3
    assert same_group >= 10, f"expected most users' best movie in their own group, got {same_group}/12"


def test_same_seed_same_embeddings():
    small = TRAIN.iloc[:120]
    a = train_two_tower(small, MOVIES, embedding_dim=4, epochs=2, batch_size=32, seed=7)
    b = train_two_tower(small, MOVIES, embedding_dim=4, epochs=2, batch_size=32, seed=7)
    np.testing.assert_allclose(a.movie_embeddings, b.movie_embeddings, rtol=1e-5, atol=1e-6)
