"""Deprecated: the ranker now lives in :mod:`recsys_course.models.ranking`; this module only
re-exports it for code not yet moved (``serving/toy.py``)."""

from recsys_course.models.ranking import Ranker, build_ranker, train_ranker  # noqa: F401
