"""9.2: keeps the softmax on this replica's own candidates, so each query sees only its replica's negatives."""

import tensorflow as tf


def gathered_softmax_loss(queries, candidates):
    logits = tf.matmul(queries, candidates, transpose_b=True)
    labels = tf.range(tf.shape(queries)[0])
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
