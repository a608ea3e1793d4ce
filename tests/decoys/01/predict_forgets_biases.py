"""1.2: forgets the user and movie biases: global mean plus the dot product only."""

import numpy as np


def predict(params, users, items):
    return params.global_mean + np.sum(params.user_factors[users] * params.item_factors[items], axis=1)
