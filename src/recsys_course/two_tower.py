"""A compact id-only two-tower retrieval model, shared by the lessons that need trained
user and movie embeddings without re-teaching how to get them (lesson 04 indexes the movie
embeddings with Annoy; lesson 05 exports the towers for serving). Lesson 02 teaches the
model itself in depth, with side features and evaluation.

Each tower is a Keras functional model: a ``StringLookup`` that maps raw string ids to
integer indices (index 0 is the out-of-vocabulary bucket, so an unknown id gets one shared,
learned vector instead of an error) followed by an ``Embedding`` table. The two towers are
trained together with TFRS's retrieval task: in-batch softmax, where the other movies of a
batch act as negatives for each (user, movie) pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import recsys_course  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs


@dataclass
class TwoTower:
    """A trained id-only two-tower model and its precomputed candidate embeddings.

    Attributes:
        model: the trained ``tfrs.Model`` (its ``user_model`` and ``movie_model`` attributes
            are the two towers below).
        user_model: ``tf.string`` user ids of shape ``[batch]`` -> ``float32 [batch, dim]``.
        movie_model: ``tf.string`` movie ids of shape ``[batch]`` -> ``float32 [batch, dim]``.
        movie_ids: ``str`` array ``[n_movies]``, the candidate catalogue (every movie of the
            ``movies`` frame given to :func:`train_two_tower`, sorted).
        movie_embeddings: ``float32 [n_movies, dim]``; row ``i`` is ``movie_ids[i]``'s vector.
        history: Keras ``History.history`` (one value per epoch per key) plus
            ``"loss_per_example"``: the epoch's mean in-batch softmax loss per training pair.
            Use that key to follow training: TFRS reports as ``"loss"`` only the summed loss
            of each epoch's last batch.
    """

    model: tfrs.Model
    user_model: tf.keras.Model
    movie_model: tf.keras.Model
    movie_ids: np.ndarray
    movie_embeddings: np.ndarray
    history: dict

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.movie_embeddings.shape[1])

    def user_embeddings(self, user_ids) -> np.ndarray:
        """``float32 [len(user_ids), dim]`` query vectors for a list or array of user ids."""
        ids = tf.constant(np.asarray(user_ids, dtype=str).reshape(-1))
        return self.user_model(ids).numpy().astype(np.float32)


def id_tower(vocabulary: np.ndarray, embedding_dim: int, name: str) -> tf.keras.Model:
    """``tf.string [batch]`` -> ``float32 [batch, embedding_dim]``: lookup, then embedding.

    The table has ``len(vocabulary) + 1`` rows; row 0 serves ids outside ``vocabulary``.
    """
    ids = tf.keras.Input(shape=(), dtype=tf.string, name=name.replace("_model", "_id"))
    lookup = tf.keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=None)
    table = tf.keras.layers.Embedding(len(vocabulary) + 1, embedding_dim)
    return tf.keras.Model(ids, table(lookup(ids)), name=name)


class IdTwoTowerModel(tfrs.Model):
    """Scores a (user, movie) pair by the dot product of the two towers' outputs."""

    def __init__(self, user_model: tf.keras.Model, movie_model: tf.keras.Model) -> None:
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        # No factorized top-K metric: it scores the whole catalogue every batch and would
        # dominate training time. Lesson 02 shows how to evaluate with it.
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        users = self.user_model(features["user_id"])
        movies = self.movie_model(features["movie_id"])
        return self.task(users, movies, compute_metrics=False)


def build_id_two_tower(
    user_vocabulary: np.ndarray, movie_ids: np.ndarray, embedding_dim: int = 32,
    learning_rate: float = 0.1, model_class: type | None = None,
) -> tfrs.Model:
    """A compiled, untrained id-only two-tower model (Adagrad with ``learning_rate``).

    Build it inside ``strategy.scope()`` to get distributed variables (lesson 07 does).
    ``model_class`` may be a subclass of the course's model with another ``compute_loss``
    (its constructor takes ``(user_model, movie_model)``); the default is the in-batch
    softmax model. The result's ``user_model`` and ``movie_model`` are the two towers.
    """
    user_model = id_tower(np.asarray(user_vocabulary).astype(str), embedding_dim, "user_model")
    movie_model = id_tower(np.asarray(movie_ids).astype(str), embedding_dim, "movie_model")
    model = (model_class or IdTwoTowerModel)(user_model, movie_model)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=learning_rate))
    return model


class _MeanLossPerExample(tf.keras.callbacks.Callback):
    """Records each epoch's mean loss per training example.

    ``tfrs.Model.train_step`` reports the *current batch's* summed loss as ``loss``, so
    Keras's ``history["loss"]`` holds the last batch of each epoch, which is noisy and, when
    the last batch is partial, much smaller than the others. Summing every batch's loss and
    dividing by the number of examples gives a number comparable across epochs.
    """

    def __init__(self, n_examples: int) -> None:
        super().__init__()
        self.n_examples = n_examples
        self.values: list[float] = []
        self._total = 0.0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._total = 0.0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._total += float(logs["loss"])

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.values.append(self._total / self.n_examples)


def train_two_tower(
    train: pd.DataFrame,
    movies: pd.DataFrame,
    *,
    embedding_dim: int = 32,
    epochs: int = 3,
    batch_size: int = 4096,
    learning_rate: float = 0.1,
    seed: int = 42,
) -> TwoTower:
    """Train an id-only two-tower retrieval model on (user, movie) interactions.

    Every row of ``train`` is one positive pair (the rating value is ignored: rating a movie
    at all counts as interest). Training uses Adagrad with ``learning_rate``, shuffles with
    ``seed`` and seeds Python, NumPy and TensorFlow with it too, so a rerun on the same data
    gives the same numbers when op determinism is on (``recsys_course.seed_everything``
    turns it on).

    Args:
        train: ratings with ``user_id`` and ``movie_id`` columns (any dtype; cast to str).
        movies: the catalogue, with a ``movie_id`` column; may hold movies absent from
            ``train`` (their vectors stay near their small random initial values).
        embedding_dim: size of both towers' output vectors.
        epochs: passes over ``train``.
        batch_size: pairs per step; also the number of in-batch candidates per step.
        learning_rate: Adagrad learning rate.
        seed: seed for initialisation and shuffling.

    Returns:
        A :class:`TwoTower` with the trained towers, the sorted catalogue ``movie_ids``,
        their ``movie_embeddings`` (``float32 [n_movies, embedding_dim]``) and the history.
    """
    if train.empty:
        raise ValueError("train_two_tower needs at least one (user_id, movie_id) pair")
    tf.keras.utils.set_random_seed(seed)
    user_vocabulary = np.unique(train["user_id"].astype(str).to_numpy()).astype(str)
    movie_ids = np.unique(movies["movie_id"].astype(str).to_numpy()).astype(str)

    model = build_id_two_tower(user_vocabulary, movie_ids, embedding_dim, learning_rate)
    user_model, movie_model = model.user_model, model.movie_model

    pairs = tf.data.Dataset.from_tensor_slices(
        {
            "user_id": train["user_id"].astype(str).to_numpy(),
            "movie_id": train["movie_id"].astype(str).to_numpy(),
        }
    )
    batches = pairs.shuffle(len(train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    mean_loss = _MeanLossPerExample(len(train))
    history = model.fit(batches, epochs=epochs, verbose=0, callbacks=[mean_loss])

    embeddings = movie_model.predict(tf.constant(movie_ids), batch_size=8192, verbose=0)
    return TwoTower(
        model=model,
        user_model=user_model,
        movie_model=movie_model,
        movie_ids=movie_ids,
        movie_embeddings=np.asarray(embeddings, dtype=np.float32),
        history={
            **{key: [float(v) for v in values] for key, values in history.history.items()},
            "loss_per_example": mean_loss.values,
        },
    )
