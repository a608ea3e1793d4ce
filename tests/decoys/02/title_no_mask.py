"""2.2: averages the padding too (no mask_zero), so a title's vector depends on its batch."""

import numpy as np
import tensorflow as tf


def build_title_tower(titles, embedding_dim, max_tokens=10_000):
    vectorizer = tf.keras.layers.TextVectorization(max_tokens=max_tokens)
    vectorizer.adapt(np.asarray(titles, dtype=object))
    return tf.keras.Sequential(
        [
            vectorizer,
            tf.keras.layers.Embedding(vectorizer.vocabulary_size(), embedding_dim),
            tf.keras.layers.GlobalAveragePooling1D(),
        ]
    )
