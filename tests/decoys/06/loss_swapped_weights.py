"""6.1: swaps the two weights (the rating loss gets the retrieval weight)."""

import tensorflow as tf
import tensorflow_recommenders as tfrs


class MultitaskModel(tfrs.models.Model):
    def __init__(self, user_model, movie_model, rating_model, rating_weight=1.0, retrieval_weight=1.0):
        super().__init__()
        self.user_model, self.movie_model, self.rating_model = user_model, movie_model, rating_model
        self.rating_weight, self.retrieval_weight = float(rating_weight), float(retrieval_weight)
        self.rating_task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(),
                                              metrics=[tf.keras.metrics.RootMeanSquaredError()])
        self.retrieval_task = tfrs.tasks.Retrieval(loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE))

    def predict_rating(self, user_ids, movie_ids):
        return self.rating_model(tf.concat([self.user_model(user_ids), self.movie_model(movie_ids)], axis=1))

    def compute_loss(self, features, training=False):
        users = self.user_model(features["user_id"])
        movies = self.movie_model(features["movie_id"])
        ratings = self.rating_model(tf.concat([users, movies], axis=1))
        return (self.retrieval_weight * self.rating_task(labels=features["user_rating"], predictions=ratings)
                + self.rating_weight * self.retrieval_task(users, movies, compute_metrics=False))
