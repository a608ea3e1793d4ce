"""8.5: never asks the ranking model, so the candidates stay in the index's order."""


def recommend(user_id, embed_user, candidates, score, titles, *, k=10, n_candidates=100, exclude=()):
    vector = np.asarray(embed_user([user_id]))[0]
    pool = [m for m in candidates(vector, n_candidates) if m not in set(exclude)]
    return [titles.get(m, m) for m in pool[:k]]
