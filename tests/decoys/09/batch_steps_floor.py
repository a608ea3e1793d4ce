"""9.3: rounds the steps per epoch down, forgetting the partial last step."""


def batch_plan(n_examples, global_batch_size, num_replicas):
    if global_batch_size % num_replicas:
        raise ValueError("uneven split")
    per = global_batch_size // num_replicas
    return {"per_replica_batch_size": per, "steps_per_epoch": n_examples // global_batch_size,
            "negatives_per_example": per - 1}
