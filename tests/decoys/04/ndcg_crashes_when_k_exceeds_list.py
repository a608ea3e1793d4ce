"""4.2: multiplies the ideal gains by all k discounts, so a list shorter than k raises a
shape error, and an empty list divides by zero."""

import numpy as np


def ndcg_at_k(scores, ratings, k=10):
    gains = 2.0 ** np.asarray(ratings, dtype=float) - 1.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    shown = gains[np.argsort(-np.asarray(scores, dtype=float), kind="stable")][:k]
    ideal = np.sort(gains)[::-1][:k]
    return float(shown @ discounts) / float(ideal @ discounts)
