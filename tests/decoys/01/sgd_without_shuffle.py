"""1.4: visits the ratings in their stored order instead of rng.permutation's."""

import numpy as np


def sgd_epoch(params, data, lr, reg, batch_size, rng):
    order = np.arange(len(data.ratings))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        u, i, r = data.users[batch], data.items[batch], data.ratings[batch]
        b_u, b_i = params.user_bias[u], params.item_bias[i]
        p, q = params.user_factors[u], params.item_factors[i]
        e = r - (params.global_mean + b_u + b_i + np.sum(p * q, axis=1))
        np.add.at(params.user_bias, u, lr * (e - reg * b_u))
        np.add.at(params.item_bias, i, lr * (e - reg * b_i))
        np.add.at(params.user_factors, u, lr * (e[:, None] * q - reg * p))
        np.add.at(params.item_factors, i, lr * (e[:, None] * p - reg * q))
    return params
