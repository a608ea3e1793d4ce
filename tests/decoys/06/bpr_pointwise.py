"""6.2: log loss on each movie separately (rated = 1, unrated = 0) instead of on their difference."""

import tensorflow as tf


def bpr_loss(positive_scores, negative_scores):
    positive = tf.cast(positive_scores, tf.float32)
    negative = tf.cast(negative_scores, tf.float32)
    return tf.reduce_mean(tf.math.softplus(-positive) + tf.math.softplus(negative))
