"""6.5: swaps the roles of lam and 1 - lam (lam weighs the redundancy penalty)."""

import numpy as np


def mmr_rerank(relevance, similarity, k, lam):
    relevance, similarity = np.asarray(relevance, float), np.asarray(similarity, float)
    chosen = []
    for _ in range(min(k, len(relevance))):
        if chosen:
            value = (1 - lam) * relevance - lam * similarity[:, chosen].max(axis=1)
        else:
            value = relevance.copy()
        value[chosen] = -np.inf
        chosen.append(int(np.argmax(value)))
    return np.array(chosen)
