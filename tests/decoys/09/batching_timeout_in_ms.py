"""9.4: writes the timeout in milliseconds into batch_timeout_micros (1000x too short)."""


def batching_parameters_text(max_batch_size, timeout_ms, num_batch_threads, max_enqueued_batches, allowed_batch_sizes=()):
    sizes = [int(s) for s in allowed_batch_sizes]
    if sizes and (sizes[-1] != max_batch_size or any(a >= b for a, b in zip(sizes, sizes[1:]))):
        raise ValueError("bad allowed sizes")
    lines = [f"max_batch_size {{ value: {max_batch_size} }}", f"batch_timeout_micros {{ value: {int(timeout_ms)} }}",
             f"num_batch_threads {{ value: {num_batch_threads} }}", f"max_enqueued_batches {{ value: {max_enqueued_batches} }}"]
    return "\n".join(lines + [f"allowed_batch_sizes: {s}" for s in sizes]) + "\n"
