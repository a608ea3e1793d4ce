"""4.4: builds the cross layers but feeds the MLP the input x0, so their output is never used."""

import tensorflow as tf
import tensorflow_recommenders as tfrs


def build_deep_cross(input_dim, n_cross=1, deep_units=(256, 64)):
    x0 = tf.keras.Input(shape=(input_dim,))
    x = x0
    for _ in range(n_cross):
        x = tfrs.layers.dcn.Cross()(x0, x)
    crossed = x
    x = x0
    for units in deep_units:
        x = tf.keras.layers.Dense(units, activation="relu")(x)
    output = tf.keras.layers.Dense(1)(x) + 0.0 * tf.reduce_sum(crossed, axis=1, keepdims=True)
    return tf.keras.Model(x0, output)
