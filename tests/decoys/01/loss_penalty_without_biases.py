"""1.3: regularises the factor vectors but leaves the biases out of the penalty."""

import numpy as np


def regularized_loss(params, data, reg):
    p, q = params.user_factors[data.users], params.item_factors[data.items]
    b_u, b_i = params.user_bias[data.users], params.item_bias[data.items]
    errors = data.ratings - (params.global_mean + b_u + b_i + np.sum(p * q, axis=1))
    return float(np.sum(errors**2 + reg * (np.sum(p**2, axis=1) + np.sum(q**2, axis=1))))
