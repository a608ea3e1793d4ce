"""7.1: sorts the k best items by ascending score, so the best item comes last."""

import numpy as np


def exact_top_k(items, query, k):
    scores = items @ query
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(scores[top])].astype(np.int64)
