"""4.2: takes the ideal DCG from the k items the scores put on top, re-sorted, instead of the
best k items of the whole list."""

import numpy as np


def ndcg_at_k(scores, ratings, k=10):
    gains = 2.0 ** np.asarray(ratings, dtype=float) - 1.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    shown = gains[np.argsort(-np.asarray(scores, dtype=float), kind="stable")][:k]
    ideal = np.sort(shown)[::-1]
    idcg = float(ideal @ discounts[: len(ideal)])
    return float(shown @ discounts[: len(shown)]) / idcg if idcg > 0 else 0.0
