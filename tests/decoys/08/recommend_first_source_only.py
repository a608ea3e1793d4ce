"""8.5: asks only the first source, so the other sources' candidates are never ranked."""

import numpy as np


def recommend(user_id, sources, score, titles, *, k=10, n_candidates=100, exclude=()):
    first = next(iter(sources.values()))
    pool = [m for m in first(user_id, n_candidates) if m not in set(exclude)]
    if not pool:
        return []
    scores = np.asarray(score([user_id] * len(pool), pool), dtype=float)
    return [titles.get(pool[i], pool[i]) for i in np.argsort(-scores, kind="stable")[:k]]
