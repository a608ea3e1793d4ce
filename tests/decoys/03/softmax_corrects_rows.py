"""3.2: subtracts log q along the rows (per query), where the softmax ignores it."""

import tensorflow as tf


def in_batch_softmax_loss(queries, candidates, candidate_probability=None):
    logits = tf.matmul(queries, candidates, transpose_b=True)
    if candidate_probability is not None:
        logits -= tf.math.log(candidate_probability)[:, None]
    labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
