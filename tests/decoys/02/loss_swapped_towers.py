"""2.3: hands the candidates to the task first, so each softmax runs over queries."""

import tensorflow_recommenders as tfrs


class RetrievalModel(tfrs.Model):
    def __init__(self, query_model, candidate_model, task):
        super().__init__()
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.task = task

    def compute_loss(self, features, training=False):
        queries = self.query_model(features)
        candidates = self.candidate_model(features)
        return self.task(candidates, queries, compute_metrics=not training)
