"""Seeded train/test splits."""

from __future__ import annotations

import numpy as np
import pandas as pd


def split_ratings(
    ratings: pd.DataFrame, test_fraction: float = 0.2, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rating rows uniformly at random into train and test (80/20 by default).

    Deterministic for a given ``seed`` and input order, so every lesson and benchmark sees
    the same split. This is the split of the TFRS tutorials: it ignores time, so the test
    set can hold ratings older than some training ones (lesson 00 shows why that matters).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(ratings))
    n_test = int(round(len(ratings) * test_fraction))
    test_rows, train_rows = np.sort(order[:n_test]), np.sort(order[n_test:])
    return (
        ratings.iloc[train_rows].reset_index(drop=True),
        ratings.iloc[test_rows].reset_index(drop=True),
    )


def leave_last_k(
    ratings: pd.DataFrame,
    k: int = 1,
    *,
    min_train: int = 1,
    user_col: str = "user_id",
    time_col: str = "timestamp",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user temporal split: each user's ``k`` latest rows go to test, the rest to train.

    This is what a deployed recommender faces: it learns from the past and is judged on
    what each user does next. Rows are ordered by ``time_col``; equal timestamps (common:
    MovieLens records seconds and users rate in bursts) keep their order in ``ratings``, so
    the split is deterministic. A user with fewer than ``k + min_train`` rows keeps them all
    in train (no test rows), so every test user has at least ``min_train`` training rows.
    Both frames keep the input's row order and get a fresh index.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if min_train < 1:
        raise ValueError(f"min_train must be at least 1, got {min_train}")
    missing = {user_col, time_col} - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings has no column(s) {sorted(missing)}; pass user_col=/time_col=")
    position = np.arange(len(ratings))
    order = np.lexsort((position, ratings[time_col].to_numpy()))  # by time, then by row
    users = ratings[user_col].to_numpy()[order]
    # rank from the end within each user: 0 for the latest row
    frame = pd.DataFrame({"user": users, "row": order})
    from_end = frame.groupby("user", sort=False).cumcount(ascending=False).to_numpy()
    size = frame.groupby("user", sort=False)["row"].transform("size").to_numpy()
    is_test = np.zeros(len(ratings), dtype=bool)
    is_test[order] = (from_end < k) & (size >= k + min_train)
    return (
        ratings.iloc[np.flatnonzero(~is_test)].reset_index(drop=True),
        ratings.iloc[np.flatnonzero(is_test)].reset_index(drop=True),
    )
