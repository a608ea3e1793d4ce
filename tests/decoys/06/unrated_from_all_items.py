"""6.3: draws negatives from the whole catalogue, rated movies included."""

import numpy as np


def sample_unrated(rated, users, rng):
    rated = np.asarray(rated, bool)
    users = np.asarray(users)
    if rated[users].all(axis=1).any():
        raise ValueError("a user has rated every item")
    return rng.integers(0, rated.shape[1], size=len(users))
