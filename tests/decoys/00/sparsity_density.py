"""0.1: returns the density (share of filled cells) instead of the sparsity."""


def sparsity(ratings):
    n = ratings["user_id"].nunique() * ratings["movie_id"].nunique()
    return float(len(ratings[["user_id", "movie_id"]].drop_duplicates()) / n)
