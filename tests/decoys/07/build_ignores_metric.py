"""7.2: always builds an angular index, whatever metric is asked for."""

import numpy as np
from annoy import AnnoyIndex


def build_annoy_index(vectors, metric="angular", n_trees=10, seed=42):
    vectors = np.asarray(vectors, dtype=np.float32)
    index = AnnoyIndex(vectors.shape[1], "angular")
    index.set_seed(seed)
    for item, vector in enumerate(vectors):
        index.add_item(item, vector)
    index.build(n_trees, n_jobs=1)
    return index
