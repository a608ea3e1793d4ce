"""5.1: counts every rating after the cutoff as relevant, ignoring the horizon of the split."""

import pandas as pd

from recsys_course import evaluation as ev


def evaluate_cutoffs(ratings, quantiles, recommend, movie_ids, *, k=10, min_history=5, horizon=10):
    rows = []
    for split in ev.rolling_time_splits(ratings, tuple(quantiles), min_history=min_history, horizon=horizon):
        users = sorted(split.test_users)
        scores = recommend(split.train, users, split.cutoff)
        seen = ev.interaction_matrix(split.train, users, movie_ids)
        later = ratings[ratings["timestamp"] >= split.cutoff]
        relevant = ev.interaction_matrix(later, users, movie_ids)
        ranked = ev.top_k(scores, k, exclude=seen)
        rows.append(pd.DataFrame({"cutoff": split.cutoff, "user_id": users,
                                  f"recall@{k}": ev.recall_by_user(ranked, relevant, k),
                                  f"ndcg@{k}": ev.ndcg_by_user(ranked, relevant, k)}))
    return pd.concat(rows, ignore_index=True)
