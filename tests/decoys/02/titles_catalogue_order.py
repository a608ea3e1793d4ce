"""2.4: filters the catalogue with isin, which returns titles in catalogue order, not ranking order."""

import numpy as np


def ids_to_titles(ids, movies):
    ids = ids.numpy() if hasattr(ids, "numpy") else ids
    keys = [i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(ids).ravel()]
    return movies.loc[movies["movie_id"].isin(keys), "movie_title"].tolist()
