"""5.4: masks only the padding: every position attends to the whole sequence, its future included."""

import tensorflow as tf


def causal_attention_mask(valid):
    valid = tf.cast(valid, tf.bool)
    length = tf.shape(valid)[1]
    return tf.logical_and(tf.ones((length, length), dtype=tf.bool)[tf.newaxis], valid[:, tf.newaxis, :])
