"""4.1: keeps argpartition's k best but returns them in no particular order."""

import numpy as np


def exact_top_k(items, query, k):
    scores = items @ query
    k = min(k, len(scores))
    return np.argpartition(-scores, k - 1)[:k].astype(np.int64)
