"""3.2: averages the rows' cross-entropies instead of summing them as TFRS does."""

import tensorflow as tf


def in_batch_softmax_loss(queries, candidates, candidate_probability=None):
    logits = tf.matmul(queries, candidates, transpose_b=True)
    if candidate_probability is not None:
        logits -= tf.math.log(candidate_probability)[None, :]
    labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
