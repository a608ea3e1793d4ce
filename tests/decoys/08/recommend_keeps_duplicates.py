"""8.5: concatenates the sources' lists without merging, so a movie two sources propose is scored twice."""

import numpy as np


def recommend(user_id, sources, score, titles, *, k=10, n_candidates=100, exclude=()):
    pool = [m for propose in sources.values() for m in propose(user_id, n_candidates) if m not in set(exclude)]
    if not pool:
        return []
    scores = np.asarray(score([user_id] * len(pool), pool), dtype=float)
    return [titles.get(pool[i], pool[i]) for i in np.argsort(-scores, kind="stable")[:k]]
