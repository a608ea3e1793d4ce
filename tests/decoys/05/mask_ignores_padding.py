"""5.4: a causal triangle that forgets the padding, so positions attend to padded slots."""

import tensorflow as tf


def causal_attention_mask(valid):
    valid = tf.cast(valid, tf.bool)
    length = tf.shape(valid)[1]
    past = tf.linalg.band_part(tf.ones((length, length), dtype=tf.bool), -1, 0)
    return tf.tile(past[tf.newaxis], [tf.shape(valid)[0], 1, 1])
