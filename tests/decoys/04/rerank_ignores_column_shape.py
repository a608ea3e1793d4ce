"""4.5: sorts the scores without flattening them, so it breaks on the (m, 1) arrays that
model.predict returns."""

import numpy as np


def rerank(candidates, score_fn, k=10, exclude=()):
    kept = [m for m in candidates if m not in set(exclude)]
    scores = np.asarray(score_fn(kept))
    order = np.argsort(-scores, kind="stable")[:k]
    return [kept[i] for i in order]
