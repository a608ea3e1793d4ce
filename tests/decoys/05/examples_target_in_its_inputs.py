"""5.3: forgets to shift: each position's target is the rating it reads, so the model learns to copy its input."""

import numpy as np


def next_item_examples(ratings, length):
    users = ratings["user_id"].astype(str).to_numpy()
    positions = np.arange(len(ratings))
    order = np.lexsort((positions, ratings["timestamp"].to_numpy(), users))
    inputs, targets = [], []
    for user in sorted(set(users)):
        rows = order[users[order] == user]
        if len(rows) < 2:
            continue
        rows = rows[-length:]
        pad = [-1] * (length - len(rows))
        inputs.append(pad + list(rows))
        targets.append(pad + list(rows))
    return np.array(inputs, dtype=np.int64), np.array(targets, dtype=np.int64)
