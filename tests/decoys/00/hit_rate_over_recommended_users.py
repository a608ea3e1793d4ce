"""0.5: averages over the users that have recommendations instead of the users in test."""

import numpy as np


def hit_rate_at_k(recommendations, test, k=10):
    items = test.groupby("user_id")["movie_id"].agg(set).to_dict()
    return float(np.mean([bool(set(r[:k]) & items.get(u, set())) for u, r in recommendations.items()]))
