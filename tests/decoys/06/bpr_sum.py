"""6.2: sums over the pairs instead of averaging, so the loss grows with the batch size."""

import tensorflow as tf


def bpr_loss(positive_scores, negative_scores):
    difference = tf.cast(positive_scores, tf.float32) - tf.cast(negative_scores, tf.float32)
    return tf.reduce_sum(tf.math.softplus(-difference))
