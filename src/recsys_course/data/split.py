"""Train/test splits: seeded random, per-user latest, and global time cutoffs.

Three protocols, each named for what it is:

* :func:`split_ratings` (random): rows drawn at random, time ignored; the TFRS tutorials'
  protocol. Training data holds ratings from after many test ratings. :func:`split_folds`
  cuts rows into several random parts the same way, for cross-fitting.
* :func:`leave_last_k` (per-user holdout): each user's latest ratings go to test. It judges a
  model on what each user did last, but training still holds *other users'* later ratings,
  so the model has seen the future of the catalogue (which movies became popular).
* :func:`global_time_split` and :func:`rolling_time_splits` (global time split): everything
  before a cutoff trains, each user's first ratings after it test. Nothing from after the
  cutoff is seen, as in production; one cutoff leaves few test users on MovieLens (users
  rate in bursts), so several cutoffs are rolled and the user-cutoff pairs pooled.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def split_folds(ratings: pd.DataFrame, n_folds: int, seed: int = 42) -> list[pd.DataFrame]:
    """``n_folds`` disjoint random parts of ``ratings``' rows, together all of them, for
    cross-fitting (fit on all folds but one, label with the one left out).

    Built from :func:`split_ratings`: fold ``f`` takes a ``1 / (n_folds - f)`` share of the
    rows the earlier folds left (seed ``seed + f``), the last fold the rest, so the folds
    differ in size by at most a row or two. Deterministic for a seed and input order; each
    fold has a fresh index.
    """
    if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer of at least 2, got {n_folds!r}")
    if len(ratings) < n_folds:
        raise ValueError(f"cannot split {len(ratings)} ratings into {n_folds} folds")
    rest, folds = ratings, []
    for f in range(int(n_folds) - 1):
        rest, fold = split_ratings(rest, 1.0 / (n_folds - f), seed=seed + f)
        folds.append(fold)
    return folds + [rest]


def leave_last_k(
    ratings: pd.DataFrame,
    k: int = 1,
    *,
    min_train: int = 1,
    user_col: str = "user_id",
    time_col: str = "timestamp",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user holdout: each user's ``k`` latest rows go to test, the rest to train.

    Each user is judged on what they did last, but the training rows of *other* users
    include ratings made after that test row, so this is not a production-like split (see
    :func:`global_time_split`). Rows are ordered by ``time_col``; equal timestamps (common:
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


@dataclass(frozen=True)
class TimeSplit:
    """One global time cutoff.

    ``train`` holds every rating with ``timestamp < cutoff``. ``test`` holds, for each test
    user (at least ``min_history`` ratings before the cutoff and one at or after it), their
    first ``horizon`` ratings from the cutoff on. Ratings after a test user's window, and
    every later rating of the other users, are in neither frame: nothing from after the
    cutoff reaches training.
    """

    cutoff: int  # a timestamp: train is strictly before it
    quantile: float | None  # the timestamp quantile the cutoff was taken at, if any
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def test_users(self) -> np.ndarray:
        return self.test["user_id"].unique() if "user_id" in self.test else np.array([])


def global_time_split(
    ratings: pd.DataFrame,
    cutoff: int | None = None,
    *,
    quantile: float | None = None,
    min_history: int = 5,
    horizon: int = 10,
    user_col: str = "user_id",
    time_col: str = "timestamp",
) -> TimeSplit:
    """Split at one moment: train on everything before it, test each user on what came next.

    Give either ``cutoff`` (a timestamp) or ``quantile`` (the cutoff is that quantile of the
    timestamps, e.g. 0.8: train on the oldest 80 % of the time-ordered ratings). Test users
    have at least ``min_history`` ratings before the cutoff; their test rows are their
    first ``horizon`` ratings at or after it (by time; equal timestamps keep their order in
    ``ratings``, so the split is deterministic). Both frames keep the input's column set and
    row order and get a fresh index.
    """
    if (cutoff is None) == (quantile is None):
        raise ValueError("give exactly one of cutoff= (a timestamp) or quantile= (between 0 and 1)")
    if quantile is not None and not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    for name, value in (("min_history", min_history), ("horizon", horizon)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    missing = {user_col, time_col} - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings has no column(s) {sorted(missing)}; pass user_col=/time_col=")
    times = ratings[time_col].to_numpy()
    if quantile is not None:
        # The timestamp of the rating at that position of the time order: "oldest 80 %"
        # is a count of ratings, not a fraction of the calendar.
        cutoff = int(np.sort(times, kind="stable")[min(len(times) - 1, int(quantile * len(times)))])
    before = times < cutoff
    users = ratings[user_col].to_numpy()
    history = pd.Series(users[before]).value_counts()
    eligible = history.index[history >= min_history]
    position = np.arange(len(ratings))
    # pandas' hash-based isin: np.isin on object (string) ids compares element by element,
    # about a second and a half per split on MovieLens 100K.
    after = np.flatnonzero(~before & pd.Series(users).isin(eligible).to_numpy())
    order = after[np.lexsort((position[after], times[after]))]  # by time, then by row
    rank = pd.Series(users[order]).groupby(users[order], sort=False).cumcount().to_numpy()
    test_rows = np.sort(order[rank < horizon])
    return TimeSplit(
        int(cutoff), quantile,
        ratings.iloc[np.flatnonzero(before)].reset_index(drop=True),
        ratings.iloc[test_rows].reset_index(drop=True),
    )


def rolling_time_splits(
    ratings: pd.DataFrame,
    quantiles: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9),
    **options,
) -> list[TimeSplit]:
    """One :func:`global_time_split` per quantile (same options); evaluate each and pool
    the user-cutoff pairs, whose count is the sample size of any standard error."""
    return [global_time_split(ratings, quantile=q, **options) for q in quantiles]
