"""2.1: sizes the embedding table to the vocabulary, forgetting the out-of-vocabulary row."""

import tensorflow as tf


def build_id_tower(vocabulary, embedding_dim):
    return tf.keras.Sequential(
        [
            tf.keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=None),
            tf.keras.layers.Embedding(len(vocabulary), embedding_dim),
        ]
    )
