"""5.2: returns the counts in the order value_counts gives them (most rated first), not in catalogue order."""

import numpy as np


def recent_popularity(ratings, movie_ids, now, window):
    times = ratings["timestamp"]
    recent = ratings[(times >= now - window) & (times < now)]
    counts = recent["movie_id"].astype(str).value_counts()
    counts = counts[counts.index.isin([str(m) for m in movie_ids])]
    values = np.zeros(len(movie_ids))
    values[: len(counts)] = counts.to_numpy(dtype=np.float64)
    return values
