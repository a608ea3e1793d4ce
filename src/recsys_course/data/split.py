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
