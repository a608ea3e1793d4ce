"""3.1: plain ridge regression of X on itself, without the zero-diagonal constraint."""

import numpy as np


def ease_weights(interactions, l2):
    if not l2 > 0:
        raise ValueError("l2 must be positive")
    x = np.asarray(interactions, dtype=np.float64)
    gram = x.T @ x
    return np.linalg.inv(gram + l2 * np.eye(gram.shape[0])) @ gram
