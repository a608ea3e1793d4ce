"""9.4: writes any allowed_batch_sizes without checking order or the last entry, which the server rejects."""


def batching_parameters_text(max_batch_size, timeout_ms, num_batch_threads, max_enqueued_batches, allowed_batch_sizes=()):
    lines = [f"max_batch_size {{ value: {max_batch_size} }}", f"batch_timeout_micros {{ value: {round(timeout_ms * 1000)} }}",
             f"num_batch_threads {{ value: {num_batch_threads} }}", f"max_enqueued_batches {{ value: {max_enqueued_batches} }}"]
    return "\n".join(lines + [f"allowed_batch_sizes: {s}" for s in allowed_batch_sizes]) + "\n"
