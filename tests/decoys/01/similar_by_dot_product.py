"""1.6: ranks by the raw dot product, so long (unnormalised) vectors win over similar directions."""

import numpy as np


def most_similar(item_factors, query, k=10):
    scores = item_factors @ item_factors[query]
    scores[query] = -np.inf
    rows = np.argsort(-scores, kind="stable")[: min(k, len(item_factors) - 1)]
    return rows, scores[rows]
