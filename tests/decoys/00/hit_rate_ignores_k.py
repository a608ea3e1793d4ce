"""0.5: counts every recommendation, not just the first k."""

import numpy as np


def hit_rate_at_k(recommendations, test, k=10):
    items = test.groupby("user_id")["movie_id"].agg(set)
    return float(np.mean([bool(set(recommendations.get(u, [])) & s) for u, s in items.items()]))
