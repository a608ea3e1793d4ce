"""4.4: calls each cross layer on the current x alone, so every layer takes its own input as x0."""

import tensorflow as tf
import tensorflow_recommenders as tfrs


def build_deep_cross(input_dim, n_cross=1, deep_units=(256, 64)):
    x0 = tf.keras.Input(shape=(input_dim,))
    x = x0
    for _ in range(n_cross):
        x = tfrs.layers.dcn.Cross()(x)
    for units in deep_units:
        x = tf.keras.layers.Dense(units, activation="relu")(x)
    return tf.keras.Model(x0, tf.keras.layers.Dense(1)(x))
