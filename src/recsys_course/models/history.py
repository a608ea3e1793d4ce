"""A two-tower model whose query is the user's history: a bag of the movies they rated.

The id towers of :mod:`recsys_course.models.retrieval` give every user a free vector,
learned from that user's training pairs only. The history tower computes the query vector
*from* the user's movies instead (as in YouTube's candidate generator, Covington et al.
2016, and Mult-DAE, Liang et al. 2018):

    q(x) = (x @ E) / sqrt(|x|)   (x: the user's 0/1 history row, E: one vector per movie)

so a user who rated a few movies yesterday gets a vector today without retraining, and
every user's vector is built from parameters shared by everyone. The candidate tower is the
movie's id embedding plus a one-number id embedding (the movie's bias), met by a constant 1
in the query: the score stays one dot product, so the model serves from any
nearest-neighbour index.

Training (:class:`HistoryRetrievalModel`) is per *user*, with a full softmax over the
catalogue (cheap for a few thousand movies): each step hides a random share ``dropout`` of
every user's history from the query and asks for the hidden movies as a multinomial target,
so the model learns to predict movies it was not shown and never learns to copy its input.
:func:`train_history_model` picks the epoch on a validation split (masked recall@10 from
:mod:`recsys_course.evaluation`) and keeps the best weights.

Inputs are dense ``float32 [users, n_movies]`` 0/1 rows in catalogue order (build them with
:func:`recsys_course.evaluation.interaction_matrix`).

How the fixed settings were chosen: validation masked recall@10 on ml-latest-small's random
split (lesson 02's protocol; EASE reaches 0.162 there), most runs with Mult-DAE's target (the
whole history). Learning rate 0.01 overfits within 10 epochs (0.136), 0.001 is still rising
at 100 epochs (0.140-0.143), 0.003 peaks after 30-60 (0.144-0.146 without L2). At 128
dimensions, L2 1e-5 / 1e-4 / 3e-4 / 1e-3 give 0.146 / 0.153 / 0.152 / 0.129; with L2 1e-4,
128 / 256 / 512 dimensions give 0.153 / 0.154 / 0.158. No gain from: mean pooling instead
of 1/sqrt(length) (0.138), tying query and candidate movie vectors (0.146), adding a user
id embedding to the query (0.153), hiding 75 % instead of 50 % (0.158). Predicting only the
hidden half is within noise of predicting the whole history (L2 1e-5: 0.152 vs 0.146; L2
3e-4: 0.143 vs 0.152) and never asks the model to copy its input, so it is the target here.
On synthetic:100k the whole-history runs reach 0.104-0.105 (EASE 0.095).

Later, the shown movies were taken out of the softmax (they had been negatives of their own
user, pushed down although the user rated them). At 512 dimensions and L2 1e-4, validation
recall@10 went from 0.151 to 0.157 on ml-latest-small and from 0.205 to 0.211 on real
MovieLens 100K (test: 0.159 to 0.162 and 0.223 to 0.227; EASE 0.177 and 0.235); on
synthetic data test recall rose at 128 and 512 dimensions (0.173 to 0.176, 0.171 to 0.173).
Seeds alone move MovieLens 100K's test recall by about 0.01 (0.222-0.233 over four seeds),
so smaller differences between settings are noise.

Then the cosine score (``temperature``; Yi et al. 2019 normalise both towers the same way).
Validation masked recall@10 at 512 dimensions, seed 42, 60-epoch cap: on real MovieLens 100K
the dot product reaches 0.211; the cosine at Adam 0.003 reaches 0.210 (temperature 0.2) and
0.208 (0.3, still rising at the cap: 0.216 at epoch 90), and at Adam 0.01 0.212 and 0.215.
On ml-latest-small: dot 0.157; cosine at 0.003 0.155 and 0.145, at 0.01 0.158 and 0.147.
On synthetic data: dot 0.166 (128 dimensions: 0.170); cosine at 0.003 0.167 and 0.172, at
0.01 0.158 and 0.167. Hence the grid: the dot product, and the cosine at both temperatures
with Adam 0.01. Tried on MovieLens 100K without gain (validation): tanh on the pooled
vector (0.201), a residual two-layer MLP on it (0.178), 1,024 and 1,682 dimensions at L2
1e-4 (0.203, 0.196), an exponential moving average of the weights (0.209).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1
import tensorflow_recommenders as tfrs

from recsys_course import evaluation as ev
from recsys_course.env import seed_everything
from recsys_course.models.towers import id_tower
from recsys_course.models.training import keep_best_epochs

HISTORY = "history"  #: the feature holding a user's 0/1 history row
MASKED_LOGIT = 1e9  #: subtracted from the logits of the movies the query was shown
#: The configurations that lesson 02 and its benchmark choose from on validation: 512
#: numbers a movie, scored by a dot product (L2 1e-4, Adam 0.003) or by a cosine divided by
#: a temperature (no L2: a cosine does not depend on the vectors' length; Adam 0.01, as at
#: 0.003 the cosine runs were still improving on validation at the 60-epoch cap). The other
#: settings (hide half, 128 users a batch) were chosen on validation splits of
#: ml-latest-small and synthetic:100k (the search is summarised in the module docstring).
HISTORY_GRID = (
    {"embedding_dim": 512, "l2": 1e-4, "temperature": None, "learning_rate": 3e-3},
    {"embedding_dim": 512, "l2": 0.0, "temperature": 0.2, "learning_rate": 1e-2},
    {"embedding_dim": 512, "l2": 0.0, "temperature": 0.3, "learning_rate": 1e-2},
)


def history_config_label(config: dict) -> str:
    """A short name for a ``HISTORY_GRID`` entry, e.g. ``"512 dims, dot, L2 0.0001"`` or
    ``"512 dims, cosine / 0.2"``."""
    if config.get("temperature") is None:
        return f"{config['embedding_dim']} dims, dot, L2 {config['l2']:g}"
    return f"{config['embedding_dim']} dims, cosine / {config['temperature']:g}"


class HistoryQueryTower(tf.keras.Model):
    """``float32 [batch, n_movies]`` 0/1 history -> ``float32 [batch, dim + 1]``.

    The first ``dim`` numbers are the sum of the history's movie vectors divided by the
    square root of its length (a user with no movie gets zeros); with a ``temperature``
    they are instead that sum scaled to length ``1 / temperature``. The last number is a
    constant 1, which multiplies each movie's bias in the candidate vector.
    """

    def __init__(self, n_movies: int, embedding_dim: int, temperature: float | None = None):
        super().__init__()
        if n_movies < 1 or embedding_dim < 1:
            raise ValueError(f"HistoryQueryTower needs n_movies >= 1 and embedding_dim >= 1, "
                             f"got {n_movies} and {embedding_dim}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0 (or None for a plain dot product), got {temperature!r}")
        self.n_movies = n_movies
        self.temperature = temperature
        # A bias-free Dense on a multi-hot row is an embedding bag: x @ kernel sums the rows
        # of the movies present.
        self.bag = tf.keras.layers.Dense(embedding_dim, use_bias=False, name="movie_bag")

    def call(self, history: tf.Tensor) -> tf.Tensor:
        history = tf.cast(history, tf.float32)
        length = tf.reduce_sum(history, axis=1, keepdims=True)
        pooled = self.bag(history) / tf.sqrt(tf.maximum(length, 1.0))
        if self.temperature is not None:  # l2_normalize leaves a zero vector at zero
            pooled = tf.math.l2_normalize(pooled, axis=1) / self.temperature
        return tf.concat([pooled, tf.ones_like(length)], axis=1)


def history_candidate_tower(movie_ids: Sequence[str], embedding_dim: int, *,
                            normalize: bool = False) -> tf.keras.Model:
    """``tf.string [batch]`` movie ids -> ``float32 [batch, dim + 1]``: the movie's id
    embedding (scaled to length 1 if ``normalize``) followed by its bias (a one-number id
    embedding); unknown ids share row 0."""
    ids = tf.keras.Input(shape=(), dtype=tf.string, name="movie_id")
    vector = id_tower(movie_ids, embedding_dim, name="movie_model")(ids)
    if normalize:
        vector = tf.math.l2_normalize(vector, axis=1)
    bias = id_tower(movie_ids, 1, name="movie_bias_model")(ids)
    return tf.keras.Model(ids, tf.concat([vector, bias], axis=1), name="history_candidate_tower")


class HistoryRetrievalModel(tfrs.Model):
    """Query = :class:`HistoryQueryTower` of the history, candidate = movie id tower; trained
    with a full softmax over ``movie_ids``.

    Args:
        query_model: ``float32 [batch, n_movies]`` -> ``[batch, d]``.
        candidate_model: ``tf.string [batch]`` -> ``[batch, d]``.
        movie_ids: the catalogue, in the column order of the history rows.
        dropout: share of each history hidden from the query at each training step; the
            hidden movies are the targets. Must be in (0, 1).
        l2: weight of ``tf.nn.l2_loss`` (half the sum of squares) of the query bag and the
            candidate embedding tables, biases excepted.
    """

    def __init__(self, query_model: tf.keras.Model, candidate_model: tf.keras.Model,
                 movie_ids: Sequence[str], *, dropout: float = 0.5, l2: float = 0.0):
        super().__init__()
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1): it is the share of the history hidden "
                             f"from the query and used as the target; got {dropout!r}")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}")
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.movie_ids = tf.constant([str(m) for m in movie_ids])
        self.dropout = float(dropout)
        self.l2 = float(l2)

    def catalogue_vectors(self) -> tf.Tensor:
        """``float32 [n_movies, d]``: every movie's candidate vector, in catalogue order."""
        return self.candidate_model(self.movie_ids)

    def scores(self, history) -> np.ndarray:
        """``float32 [users, n_movies]``: the score of every movie for each history row."""
        queries = self.query_model(tf.convert_to_tensor(np.asarray(history, dtype=np.float32)))
        return tf.matmul(queries, self.catalogue_vectors(), transpose_b=True).numpy()

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        """Mean over the batch's users (those with a hidden movie) of the softmax
        cross-entropy of their hidden movies given the shown ones, plus the L2 penalty. The
        softmax runs over the movies the query was *not* shown: the hidden ones and every
        movie the user did not rate."""
        history = tf.cast(features[HISTORY], tf.float32)
        shown = tf.cast(tf.random.uniform(tf.shape(history)) >= self.dropout, tf.float32)
        target = history * (1.0 - shown)  # the movies the query did not see
        logits = tf.matmul(self.query_model(history * shown), self.catalogue_vectors(), transpose_b=True)
        # The shown movies are the user's own: they are neither targets nor negatives, as a
        # masked list never shows them (the counterpart of EASE's zero diagonal). A large
        # finite offset, not -inf, keeps target * log_softmax at 0 where the target is 0.
        logits -= MASKED_LOGIT * history * shown
        per_movie = tf.reduce_sum(target, axis=1)
        per_user = -tf.reduce_sum(target * tf.nn.log_softmax(logits), axis=1) / tf.maximum(per_movie, 1.0)
        has_target = tf.cast(per_movie > 0, tf.float32)
        loss = tf.reduce_sum(per_user * has_target) / tf.maximum(tf.reduce_sum(has_target), 1.0)
        if self.l2:
            penalised = [w for w in self.trainable_weights
                         if "bias" not in w.name and w.shape.rank == 2 and w.shape[-1] > 1]
            loss += self.l2 * tf.add_n([tf.nn.l2_loss(w) for w in penalised])
        return loss


@dataclass
class HistoryRun:
    """A trained history model: ``model`` holds the weights of ``best_epoch``, the epoch
    with the best validation masked recall@10 (``validation_recall``), or after a refit the
    weights of that many epochs on the refit data; ``curve`` has one row per measured epoch
    (``epoch``, ``validation recall@10``)."""

    model: HistoryRetrievalModel
    best_epoch: int
    validation_recall: float
    curve: pd.DataFrame


def build_history_model(movie_ids: Sequence[str], embedding_dim: int, *, dropout: float = 0.5,
                        l2: float = 0.0, learning_rate: float = 3e-3,
                        temperature: float | None = None) -> HistoryRetrievalModel:
    """A compiled (Adam) :class:`HistoryRetrievalModel` over ``movie_ids``. With a
    ``temperature`` the score is the cosine of the query and movie vectors divided by it,
    plus the movie's bias (still one dot product: the towers normalise); without, the plain
    dot product."""
    model = HistoryRetrievalModel(HistoryQueryTower(len(movie_ids), embedding_dim, temperature),
                                  history_candidate_tower(movie_ids, embedding_dim,
                                                          normalize=temperature is not None),
                                  movie_ids, dropout=dropout, l2=l2)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    return model


def train_history_model(
    fit_matrix: np.ndarray,
    movie_ids: Sequence[str],
    validation_history: np.ndarray,
    validation_relevant: np.ndarray,
    *,
    embedding_dim: int = 128,
    l2: float = 1e-4,
    dropout: float = 0.5,
    learning_rate: float = 3e-3,
    temperature: float | None = None,
    batch_size: int = 128,
    max_epochs: int = 60,
    every: int = 5,
    patience: int = 3,
    seed: int = 42,
    refit_matrix: np.ndarray | None = None,
) -> HistoryRun:
    """Train on the fit histories, choosing the epoch on validation.

    Args:
        fit_matrix: ``[fit users, n_movies]`` 0/1, the training histories (one row a user).
        movie_ids: the catalogue, in column order.
        validation_history, validation_relevant: ``[validation users, n_movies]`` 0/1: the
            fit history of each validation user (the query, and masked from the ranking) and
            their validation movies.
        temperature: None for a dot-product score, else the cosine's temperature (see
            :func:`build_history_model`).
        every: measure validation masked recall@10 every ``every`` epochs; stop after
            ``patience`` measures without improvement or at ``max_epochs``.
        refit_matrix: ``[users, n_movies]`` 0/1, more training histories (e.g. everything
            before the test cutoff, when ``fit_matrix`` stops at the validation cutoff):
            the epoch count is chosen on validation as above, then the model is trained
            again from its initial weights and the same seed on ``refit_matrix`` for that
            many epochs (:func:`recsys_course.models.training.keep_best_epochs`).

    Returns:
        A :class:`HistoryRun` whose model holds the best validation epoch's weights, or
        with ``refit_matrix`` the refitted ones (``validation_recall`` stays the
        validation run's).
    """
    fit_matrix = np.asarray(fit_matrix, dtype=np.float32)
    if fit_matrix.ndim != 2 or fit_matrix.shape[1] != len(movie_ids):
        raise ValueError(f"fit_matrix must be [users, {len(movie_ids)} movies], got {fit_matrix.shape}")
    seed_everything(seed)
    model = build_history_model(movie_ids, embedding_dim, dropout=dropout, l2=l2,
                                learning_rate=learning_rate, temperature=temperature)

    def batches(matrix: np.ndarray) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices({HISTORY: matrix}).shuffle(len(matrix), seed=seed).batch(batch_size)

    exclude = np.asarray(validation_history) > 0

    def measure() -> float:
        ranked = ev.top_k(model.scores(validation_history), 10, exclude=exclude)
        return ev.recall_at_k(ranked, validation_relevant, 10)

    refit = None if refit_matrix is None else batches(np.asarray(refit_matrix, dtype=np.float32))
    best_epoch, best, curve = keep_best_epochs(model, batches(fit_matrix), measure, max_epochs=max_epochs,
                                               patience=patience, every=every, refit_batches=refit, seed=seed)
    return HistoryRun(model, best_epoch, best, curve)


@dataclass
class ConcatenatedTowers:
    """Trained history models as *one* two-tower model: the query vector is the
    concatenation of their query vectors, model ``i``'s times ``weights[i]``, and the movie
    vector the concatenation of their movie vectors, so the score is the weighted sum of
    their scores and still one dot product (one nearest-neighbour index serves it)."""

    models: list[HistoryRetrievalModel]
    weights: np.ndarray  #: float [len(models)], > 0

    def query_vectors(self, history) -> np.ndarray:
        """``float32 [users, sum of the models' widths]`` for 0/1 history rows."""
        history = tf.convert_to_tensor(np.asarray(history, dtype=np.float32))
        return np.concatenate([w * m.query_model(history).numpy() for m, w in zip(self.models, self.weights)],
                              axis=1)

    def catalogue_vectors(self) -> np.ndarray:
        """``float32 [n_movies, sum of the models' widths]``, in catalogue order."""
        return np.concatenate([m.catalogue_vectors().numpy() for m in self.models], axis=1)

    def scores(self, history) -> np.ndarray:
        """``float32 [users, n_movies]``: ``query_vectors(history) @ catalogue_vectors().T``."""
        return self.query_vectors(history) @ self.catalogue_vectors().T


def concatenate_towers(trained: Sequence[HistoryRetrievalModel], history) -> ConcatenatedTowers:
    """The :class:`ConcatenatedTowers` of ``trained`` (at least one model) that weighs each
    model by one over the standard deviation of its scores on ``history`` (0/1 rows, e.g. the
    validation users' fit histories) over the movies outside each row, so that no model
    dominates the sum by the scale of its scores alone.

    Raises ValueError when ``trained`` is empty or a model's scores do not vary."""
    if not trained:
        raise ValueError("concatenate_towers needs at least one trained model")
    outside = np.asarray(history) == 0
    spread = np.array([float(m.scores(history)[outside].std()) for m in trained])
    if not np.all(spread > 0):
        raise ValueError(f"every model's scores must vary over the movies outside the histories; "
                         f"standard deviations {spread.tolist()}")
    return ConcatenatedTowers(list(trained), 1.0 / spread)

