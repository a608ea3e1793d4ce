"""7.5: appends a one to the query instead of a zero, which rewards items with short vectors."""

import numpy as np


def mips_search(index, query, k, search_k=-1):
    augmented = np.append(np.asarray(query, dtype=np.float32), np.float32(1.0))
    return np.asarray(index.get_nns_by_vector(augmented, k, search_k=search_k), dtype=np.int64)
