"""4.3: multiplies each layer's output by that layer's own input instead of by x0."""

import numpy as np


def cross_tower(x0, kernels, biases):
    x = np.asarray(x0, dtype=float)
    for kernel, bias in zip(kernels, biases):
        x = x * (x @ kernel + bias) + x
    return x
