"""6.4: averages over every list, so lists without a positive pull the loss towards 0."""

import tensorflow as tf


def listwise_loss(labels, scores, mask):
    mask = tf.cast(mask, tf.bool)
    log_p = tf.nn.log_softmax(tf.where(mask, tf.cast(scores, tf.float32), -1e9), axis=-1)
    labels = tf.where(mask, tf.cast(labels, tf.float32), 0.0)
    totals = tf.reduce_sum(labels, axis=-1)
    per_row = -tf.reduce_sum(labels * tf.where(mask, log_p, 0.0), axis=-1) / tf.maximum(totals, 1e-12)
    return tf.reduce_mean(per_row)
