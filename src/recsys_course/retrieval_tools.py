"""Deprecated: lesson 02's old helper module, kept importable until lessons 02 and 06 move to
:mod:`recsys_course.models`. Every name here is re-exported from there; import it from
``recsys_course.models.features`` (feature dictionaries), ``recsys_course.models.training``
(``train_with_curves``, ``loss_per_example``, ``TrainingRun``) or
``recsys_course.models.retrieval`` (``AccidentalHitsRetrieval``) instead.
"""

from recsys_course.models.features import (  # noqa: F401
    GENRE_PAD, PROBABILITY, candidate_probability, demographic_features, genre_width,
    interaction_matrix, movie_features, pad_genres, pair_features, probability_of, quantile_boundaries, rating_features, take,
    to_dataset, user_features,
)
from recsys_course.models.retrieval import AccidentalHitsRetrieval  # noqa: F401
from recsys_course.models.training import (  # noqa: F401
    TOP_K_KEY, TrainingRun, loss_per_example, train_with_curves,
)
