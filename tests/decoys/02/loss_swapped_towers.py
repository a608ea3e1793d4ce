"""2.3: hands the candidates to the task first, so each softmax runs over queries."""

import tensorflow_recommenders as tfrs


class RetrievalModel(tfrs.Model):
    def __init__(self, query_model, candidate_model, task, popularity_correction=False):
        super().__init__()
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.task = task
        self.popularity_correction = popularity_correction

    def compute_loss(self, features, training=False):
        queries = self.query_model(features)
        candidates = self.candidate_model(features)
        probability = features["candidate_probability"] if self.popularity_correction else None
        return self.task(candidates, queries, candidate_sampling_probability=probability,
                         compute_metrics=not training)
