"""6.2: computes -log(sigmoid(d)) literally, which overflows to inf once sigmoid(d) rounds to 0."""

import tensorflow as tf


def bpr_loss(positive_scores, negative_scores):
    difference = tf.cast(positive_scores, tf.float32) - tf.cast(negative_scores, tf.float32)
    return tf.reduce_mean(-tf.math.log(tf.math.sigmoid(difference)))
