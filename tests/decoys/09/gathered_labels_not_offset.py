"""9.2: gathers every replica's candidates but keeps the labels 0..b-1, so replicas after the first point at another replica's movies."""

import tensorflow as tf


def gathered_softmax_loss(queries, candidates):
    context = tf.distribute.get_replica_context()
    logits = tf.matmul(queries, context.all_gather(candidates, axis=0), transpose_b=True)
    labels = tf.range(tf.shape(queries)[0])
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
