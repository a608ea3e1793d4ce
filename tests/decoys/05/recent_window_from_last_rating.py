"""5.2: ends the window at the frame's latest rating instead of at `now`, so ratings from after `now` count."""

import numpy as np


def recent_popularity(ratings, movie_ids, now, window):
    latest = ratings["timestamp"].max()
    recent = ratings[ratings["timestamp"] >= latest - window]
    counts = recent["movie_id"].astype(str).value_counts()
    return counts.reindex([str(m) for m in movie_ids], fill_value=0).to_numpy(dtype=np.float64)
