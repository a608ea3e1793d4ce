"""6.4: takes the log of a softmax, which underflows to log(0) = -inf for a far-behind positive."""

import tensorflow as tf


def listwise_loss(labels, scores, mask):
    mask = tf.cast(mask, tf.bool)
    p = tf.nn.softmax(tf.where(mask, tf.cast(scores, tf.float32), -1e9), axis=-1)
    labels = tf.where(mask, tf.cast(labels, tf.float32), 0.0)
    totals = tf.reduce_sum(labels, axis=-1)
    per_row = -tf.reduce_sum(tf.where(labels > 0, labels * tf.math.log(p), 0.0), axis=-1) / tf.maximum(totals, 1e-12)
    has_positive = tf.cast(totals > 0, tf.float32)
    return tf.reduce_sum(per_row * has_positive) / tf.maximum(tf.reduce_sum(has_positive), 1.0)
