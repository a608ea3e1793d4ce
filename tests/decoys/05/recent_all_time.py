"""5.2: counts every rating before now: plain popularity, the window ignored."""

import numpy as np


def recent_popularity(ratings, movie_ids, now, window):
    past = ratings[ratings["timestamp"] < now]
    counts = past["movie_id"].astype(str).value_counts()
    return counts.reindex([str(m) for m in movie_ids], fill_value=0).to_numpy(dtype=np.float64)
