"""Several replicas in one process: logical CPU devices and a ``MirroredStrategy`` over them.

Lesson 09 shows what data parallelism does to the in-batch softmax without starting a
cluster: TensorFlow can split the one physical CPU into several *logical* devices, and a
``tf.distribute.MirroredStrategy`` over them runs one replica per device, with the same
collectives (all-reduce, all-gather) as a real multi-device job. The split must be asked for
before TensorFlow initialises its runtime (the first operation or device listing), so call
:func:`logical_cpus` first thing after importing TensorFlow.
"""

from __future__ import annotations

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1


def logical_cpus(n: int) -> int:
    """Split the first physical CPU into ``n`` logical devices if TensorFlow has not started
    yet; return how many logical CPU devices the process has (``n`` on success, usually 1
    when TensorFlow was already initialised, in which case nothing changes)."""
    if n < 1:
        raise ValueError(f"logical_cpus needs n >= 1, got {n}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # "Virtual devices cannot be modified after being initialized"
        pass
    return len(tf.config.list_logical_devices("CPU"))


def mirrored_strategy(n: int) -> tf.distribute.MirroredStrategy:
    """A ``MirroredStrategy`` with one replica on each of the first ``n`` logical CPUs.

    Its collectives go through one device (``ReductionToOneDevice``): with the default
    collective ops, an all-gather of another shape later in the same process fails
    ("Shape mismatch in the collective instance"), and a lesson or a test gathers batches of
    several sizes. Raises ``RuntimeError`` with what to do when the process has fewer than
    ``n`` logical CPUs."""
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    if len(devices) < n:
        raise RuntimeError(
            f"{n} replicas need {n} logical CPU devices, but TensorFlow has {len(devices)}: call "
            f"recsys_course.cluster.replicas.logical_cpus({n}) right after importing TensorFlow, before "
            "any TensorFlow operation (restart the kernel or process if one already ran)")
    return tf.distribute.MirroredStrategy(devices[:n], cross_device_ops=tf.distribute.ReductionToOneDevice())


def per_replica(strategy: tf.distribute.Strategy, values) -> object:
    """Distribute the rows of ``values`` (an array, split into equal consecutive slices, one
    per replica in replica order) as a per-replica value for ``strategy.run``."""
    replicas = strategy.num_replicas_in_sync
    values = tf.convert_to_tensor(values)
    if values.shape[0] % replicas:
        raise ValueError(f"{values.shape[0]} rows do not split evenly over {replicas} replicas")
    size = values.shape[0] // replicas
    return strategy.experimental_distribute_values_from_function(
        lambda context: values[context.replica_id_in_sync_group * size:(context.replica_id_in_sync_group + 1) * size])
