"""Deprecated: the old home of the id-only two-tower model, kept importable until lesson 06
moves to :mod:`recsys_course.models`. Import ``id_tower`` from
``recsys_course.models.towers`` and ``train_two_tower``, ``build_two_tower``,
``TwoTowerModel``, ``TwoTower`` from ``recsys_course.models.retrieval`` instead.
"""

from recsys_course.models.retrieval import TwoTower, TwoTowerModel, build_two_tower, train_two_tower  # noqa: F401
from recsys_course.models.towers import id_tower  # noqa: F401
