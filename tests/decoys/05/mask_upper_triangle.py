"""5.4: takes the upper triangle (j >= i): each position reads its future instead of its past."""

import tensorflow as tf


def causal_attention_mask(valid):
    valid = tf.cast(valid, tf.bool)
    length = tf.shape(valid)[1]
    future = tf.linalg.band_part(tf.ones((length, length), dtype=tf.bool), 0, -1)
    return tf.logical_and(future[tf.newaxis], valid[:, tf.newaxis, :])
