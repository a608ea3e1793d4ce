"""7.6: ignores search_k, so the caller cannot trade speed for recall."""

import numpy as np


def similar_items(index, item, k, search_k=-1):
    found = index.get_nns_by_item(int(item), k + 1)
    return np.asarray([i for i in found if i != item][:k], dtype=np.int64)
