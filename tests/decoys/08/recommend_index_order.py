"""8.5: never asks the ranking model, so the candidates stay in the sources' merged order."""


def recommend(user_id, sources, score, titles, *, k=10, n_candidates=100, exclude=()):
    pool = []
    for propose in sources.values():
        pool += [m for m in propose(user_id, n_candidates) if m not in set(exclude) and m not in pool]
    return [titles.get(m, m) for m in pool[:k]]
