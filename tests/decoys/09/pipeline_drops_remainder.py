"""9.1: batches with drop_remainder=True, so the last partial batch of records is lost."""

import tensorflow as tf

from recsys_course.cluster.tfrecords import FEATURES


def ratings_dataset(files, batch_size):
    names = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    records = names.interleave(tf.data.TFRecordDataset, cycle_length=2)
    batches = records.batch(batch_size, drop_remainder=True)
    return batches.map(lambda r: tf.io.parse_example(r, FEATURES)).prefetch(tf.data.AUTOTUNE)
