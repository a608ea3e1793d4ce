"""6.2: uses negative - positive, so the loss rewards ranking the unrated movie first."""

import tensorflow as tf


def bpr_loss(positive_scores, negative_scores):
    difference = tf.cast(positive_scores, tf.float32) - tf.cast(negative_scores, tf.float32)
    return tf.reduce_mean(tf.math.softplus(difference))
