"""0.1: counts rating rows, so a repeated rating fills two cells."""


def sparsity(ratings):
    return float(1 - len(ratings) / (ratings["user_id"].nunique() * ratings["movie_id"].nunique()))
