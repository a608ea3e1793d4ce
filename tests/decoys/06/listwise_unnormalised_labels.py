"""6.4: sums -log p over the positives without dividing by their number, so a list with two positives weighs double."""

import tensorflow as tf


def listwise_loss(labels, scores, mask):
    mask = tf.cast(mask, tf.bool)
    log_p = tf.nn.log_softmax(tf.where(mask, tf.cast(scores, tf.float32), -1e9), axis=-1)
    labels = tf.where(mask, tf.cast(labels, tf.float32), 0.0)
    totals = tf.reduce_sum(labels, axis=-1)
    per_row = -tf.reduce_sum(labels * tf.where(mask, log_p, 0.0), axis=-1)
    has_positive = tf.cast(totals > 0, tf.float32)
    return tf.reduce_sum(per_row * has_positive) / tf.maximum(tf.reduce_sum(has_positive), 1.0)
