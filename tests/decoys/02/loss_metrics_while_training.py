"""2.3: lets the task compute its top-K metrics on every training step as well."""

import tensorflow_recommenders as tfrs


class RetrievalModel(tfrs.Model):
    def __init__(self, query_model, candidate_model, task):
        super().__init__()
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.task = task

    def compute_loss(self, features, training=False):
        return self.task(self.query_model(features), self.candidate_model(features))
