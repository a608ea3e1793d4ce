"""6.3: draws one negative per user and reuses it for every row of that user."""

import numpy as np


def sample_unrated(rated, users, rng):
    rated = np.asarray(rated, bool)
    users = np.asarray(users)
    if rated[users].all(axis=1).any():
        raise ValueError("a user has rated every item")
    per_user = {u: int(rng.choice(np.flatnonzero(~rated[u]))) for u in sorted(set(users.tolist()))}
    return np.array([per_user[u] for u in users.tolist()])
