"""6.5: compares each candidate only with the LAST item chosen, forgetting the earlier ones."""

import numpy as np


def mmr_rerank(relevance, similarity, k, lam):
    relevance, similarity = np.asarray(relevance, float), np.asarray(similarity, float)
    chosen = []
    for _ in range(min(k, len(relevance))):
        if chosen:
            value = lam * relevance - (1 - lam) * similarity[:, chosen[-1]]
        else:
            value = relevance.copy()
        value[chosen] = -np.inf
        chosen.append(int(np.argmax(value)))
    return np.array(chosen)
