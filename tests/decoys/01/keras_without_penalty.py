"""1.5: predicts correctly but never adds the L2 penalty, so training is unregularised."""

import tensorflow as tf


class MatrixFactorization(tf.keras.Model):
    def __init__(self, n_users, n_items, dim, reg, global_mean, seed=42):
        super().__init__()
        self.reg = float(reg)
        self.global_mean = float(global_mean)
        self.user_factors = tf.keras.layers.Embedding(n_users, dim, embeddings_initializer=zero_row_normal(seed))
        self.item_factors = tf.keras.layers.Embedding(n_items, dim, embeddings_initializer=zero_row_normal(seed + 1))
        self.user_bias = tf.keras.layers.Embedding(n_users, 1, embeddings_initializer="zeros")
        self.item_bias = tf.keras.layers.Embedding(n_items, 1, embeddings_initializer="zeros")

    def call(self, inputs, training=False):
        p = self.user_factors(inputs["user_index"])
        q = self.item_factors(inputs["item_index"])
        b_u = tf.squeeze(self.user_bias(inputs["user_index"]), axis=-1)
        b_i = tf.squeeze(self.item_bias(inputs["item_index"]), axis=-1)
        return self.global_mean + b_u + b_i + tf.reduce_sum(p * q, axis=1)
