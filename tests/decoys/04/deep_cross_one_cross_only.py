"""4.4: always builds one cross layer, whatever n_cross asks for."""

import tensorflow as tf
import tensorflow_recommenders as tfrs


def build_deep_cross(input_dim, n_cross=1, deep_units=(256, 64)):
    x0 = tf.keras.Input(shape=(input_dim,))
    x = tfrs.layers.dcn.Cross()(x0, x0)
    for units in deep_units:
        x = tf.keras.layers.Dense(units, activation="relu")(x)
    return tf.keras.Model(x0, tf.keras.layers.Dense(1)(x))
