"""7.6: asks Annoy for the k nearest items of an item and returns them, the item itself first."""

import numpy as np


def similar_items(index, item, k, search_k=-1):
    return np.asarray(index.get_nns_by_item(int(item), k, search_k=search_k), dtype=np.int64)
