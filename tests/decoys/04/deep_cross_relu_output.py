"""4.4: puts a ReLU on the output layer too, so no prediction can be negative."""

import tensorflow as tf
import tensorflow_recommenders as tfrs


def build_deep_cross(input_dim, n_cross=1, deep_units=(256, 64)):
    x0 = tf.keras.Input(shape=(input_dim,))
    x = x0
    for _ in range(n_cross):
        x = tfrs.layers.dcn.Cross()(x0, x)
    for units in (*deep_units, 1):
        x = tf.keras.layers.Dense(units, activation="relu")(x)
    return tf.keras.Model(x0, x)
