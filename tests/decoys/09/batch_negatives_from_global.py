"""9.3: counts the negatives from the global batch, as if every replica saw all of it."""

import math


def batch_plan(n_examples, global_batch_size, num_replicas):
    if global_batch_size % num_replicas:
        raise ValueError("uneven split")
    return {
        "per_replica_batch_size": global_batch_size // num_replicas,
        "steps_per_epoch": math.ceil(n_examples / global_batch_size),
        "negatives_per_example": global_batch_size - 1,
    }
