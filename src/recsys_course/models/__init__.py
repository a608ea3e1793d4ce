"""The course's models, one home for each: lessons, benchmarks, serving and the distributed
jobs build their towers, retrieval models and rankers from here.

=============  ==========================================================================
module         what it holds
=============  ==========================================================================
``features``   pandas rating frames -> feature dictionaries and ``tf.data`` batches; the
               popularity feature ``PROBABILITY`` of the logQ correction
``towers``     the one id tower (``id_tower``), the title tower, lesson 02's feature
               towers ``QueryTower`` / ``CandidateTower`` (tower builders injectable)
``retrieval``  ``TwoTowerModel`` (optional logQ correction, accidental-hit removal,
               temperature), ``build_two_tower``, ``train_two_tower`` -> ``TwoTower``;
               ``train_retrieval``: lesson 02's recipe (``RETRIEVAL_RECIPE``), epochs on
               validation, the retrieval model of every later lesson
``training``   the training loop that reports loss per example (``LossPerExample``,
               ``fit_with_loss_per_example``), ``loss_per_example``, ``train_with_curves``
``ranking``    the id-based ranker: ``Ranker``, ``build_ranker``, ``train_ranker``
``recorded``   searches run offline on validation, which lessons state: ``recorded_search``
``history``    the two-tower model whose query is a bag of the user's movies, trained per
               user with a full softmax: ``HistoryRetrievalModel``, ``train_history_model``
``funnel``     lesson 06's funnel: candidates from several sources (``Sources``,
               ``union_lists``), the ranker's features as a TensorFlow module
               (``FunnelFeatures``), the DCN ranker and its listwise loss, ``Funnel``; its candidate
               sources popularity, item-kNN and EASE live in ``recsys_course.baselines``
               (no TensorFlow)
=============  ==========================================================================

The names below are re-exported here (``funnel`` is imported as a module:
``from recsys_course.models import funnel``); importing this package imports TensorFlow.
"""

from recsys_course.models.features import PROBABILITY, candidate_probability
from recsys_course.models.history import (
    HISTORY_GRID,
    ConcatenatedTowers,
    HistoryQueryTower,
    HistoryRetrievalModel,
    HistoryRun,
    build_history_model,
    concatenate_towers,
    history_candidate_tower,
    history_config_label,
    train_history_model,
)
from recsys_course.models.recorded import recorded_search
from recsys_course.models.ranking import Ranker, build_ranker, train_ranker
from recsys_course.models.retrieval import (
    RETRIEVAL_RECIPE,
    TwoTower,
    TwoTowerModel,
    accidental_hits_mask,
    build_two_tower,
    train_retrieval,
    train_two_tower,
)
from recsys_course.models.towers import CandidateTower, QueryTower, id_tower, title_tower
from recsys_course.models.training import (
    LossPerExample,
    TrainingRun,
    fit_with_loss_per_example,
    loss_per_example,
    train_with_curves,
)

__all__ = [
    "PROBABILITY", "RETRIEVAL_RECIPE", "CandidateTower", "HISTORY_GRID",
    "ConcatenatedTowers",
    "concatenate_towers", "HistoryQueryTower",
    "HistoryRetrievalModel", "HistoryRun", "build_history_model", "history_candidate_tower", "history_config_label",
    "train_history_model", "LossPerExample", "QueryTower",
    "Ranker", "TrainingRun", "TwoTower", "TwoTowerModel", "accidental_hits_mask", "build_ranker",
    "build_two_tower", "candidate_probability", "fit_with_loss_per_example", "id_tower",
    "loss_per_example", "recorded_search", "title_tower", "train_ranker", "train_retrieval", "train_two_tower",
    "train_with_curves",
]
