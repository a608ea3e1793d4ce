"""7.3: divides by the number of ids the index returned instead of k, so short answers look perfect."""

import numpy as np


def recall_against_exact(approx_ids, exact_ids, k):
    shares = []
    for approx, exact in zip(approx_ids, exact_ids):
        found = list(approx)[:k]
        shares.append(len(set(found) & set(list(exact)[:k])) / max(len(found), 1))
    return float(np.mean(shares))
