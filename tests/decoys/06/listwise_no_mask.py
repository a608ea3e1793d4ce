"""6.4: takes the softmax over the padding entries too (the mask only hides their labels)."""

import tensorflow as tf


def listwise_loss(labels, scores, mask):
    mask = tf.cast(mask, tf.bool)
    log_p = tf.nn.log_softmax(tf.cast(scores, tf.float32), axis=-1)
    labels = tf.where(mask, tf.cast(labels, tf.float32), 0.0)
    totals = tf.reduce_sum(labels, axis=-1)
    per_row = -tf.reduce_sum(labels * log_p, axis=-1) / tf.maximum(totals, 1e-12)
    has_positive = tf.cast(totals > 0, tf.float32)
    return tf.reduce_sum(per_row * has_positive) / tf.maximum(tf.reduce_sum(has_positive), 1.0)
