"""The course's two-tower retrieval model, and a seeded way to train it on rating frames.

:class:`TwoTowerModel` is one ``tfrs.Model`` for every lesson: ``score(query, candidate) =
query_model(.) . candidate_model(.)``, trained with TFRS's ``Retrieval`` task (in-batch
softmax: the other candidates of a batch are each query's negatives). Options:

* ``correction``: the popularity (logQ) correction of Yi et al. (2019): each logit is
  reduced by ``log q`` of its column's candidate, ``q`` read from the feature
  :data:`~recsys_course.models.features.PROBABILITY` (TFRS's ``candidate_sampling_probability``);
* ``remove_accidental_hits``: a row's own candidate appearing in another row of the batch
  is not used as its negative (masked with TFRS's ``score_mask``, ids from the feature
  ``candidate_id_feature``), also when top-K metrics are computed;
* ``temperature``: logits divided by it before the softmax.

:func:`build_two_tower` builds the id-only version (one :func:`~recsys_course.models.towers.id_tower`
per side) and :func:`train_two_tower` trains it on a ratings frame for a fixed number of
epochs and returns a :class:`TwoTower` with the towers and every movie's vector.
:func:`train_retrieval` trains it with lesson 02's recipe (:data:`RETRIEVAL_RECIPE`, the
epoch chosen on validation): the retrieval model of every later lesson.
``tests/dev/test_models_match_lessons.py`` proves that the lessons' exercises (lesson 02's
``RetrievalModel``, lesson 03's hand-written logQ-corrected softmax) and this model give
the same loss.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1
import tensorflow_recommenders as tfrs

from recsys_course.models.features import PROBABILITY, candidate_probability, pair_features
from recsys_course.models.towers import id_tower
from recsys_course.models.training import fit_with_loss_per_example


def accidental_hits_mask(candidate_ids: tf.Tensor) -> tf.Tensor:
    """``bool [batch, batch]`` from ``candidate_ids [batch]``: False where column ``j`` holds
    row ``i``'s own candidate again (``ids[j] == ids[i]``, ``j != i``), True elsewhere; the
    diagonal (each row's positive) is always True. TFRS's ``score_mask`` format."""
    same = tf.equal(candidate_ids[:, None], candidate_ids[None, :])
    n = tf.shape(candidate_ids)[0]
    return tf.logical_or(tf.logical_not(same), tf.eye(n, dtype=tf.bool))


class TwoTowerModel(tfrs.Model):
    """A two-tower retrieval model: ``score = query_model(f) . candidate_model(f)``.

    Args:
        query_model, candidate_model: Keras models returning ``float32 [batch, dim]``.
        query_feature, candidate_feature: the feature each tower reads (an id tower reads
            ``features["user_id"]``); ``None`` hands the tower the whole feature dictionary
            (lesson 02's :class:`~recsys_course.models.towers.QueryTower` and
            :class:`~recsys_course.models.towers.CandidateTower`).
        correction: subtract ``log(features[PROBABILITY])`` of each column from the logits.
        remove_accidental_hits: mask in-batch negatives that are the row's own candidate,
            matched on ``features[candidate_id_feature]``.
        temperature: divide the logits by it (``None``: 1).
        num_hard_negatives: keep only this many highest-scoring negatives per row
            (``None``: every negative of the batch).
        metrics: TFRS factorized metrics (e.g. ``tfrs.metrics.FactorizedTopK``), computed
            by ``evaluate`` and never while training.

    ``compute_loss`` returns the task's loss: the *sum* over the batch's rows of each row's
    softmax cross-entropy (divide by the batch size for a per-example loss; the training
    loop of :mod:`recsys_course.models.training` does).
    """

    def __init__(
        self,
        query_model: tf.keras.Model,
        candidate_model: tf.keras.Model,
        *,
        query_feature: str | None = "user_id",
        candidate_feature: str | None = "movie_id",
        correction: bool = False,
        remove_accidental_hits: bool = False,
        candidate_id_feature: str = "movie_id",
        temperature: float | None = None,
        num_hard_negatives: int | None = None,
        metrics=None,
    ) -> None:
        super().__init__()
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.query_feature = query_feature
        self.candidate_feature = candidate_feature
        self.correction = bool(correction)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.candidate_id_feature = candidate_id_feature
        self.task = tfrs.tasks.Retrieval(metrics=metrics, temperature=temperature,
                                         num_hard_negatives=num_hard_negatives)

    def query_embeddings(self, features: dict) -> tf.Tensor:
        """``float32 [batch, dim]``: the query tower on its feature (or on all of them)."""
        return self.query_model(features if self.query_feature is None else features[self.query_feature])

    def candidate_embeddings(self, features: dict) -> tf.Tensor:
        """``float32 [batch, dim]``: the candidate tower on its feature (or on all of them)."""
        return self.candidate_model(
            features if self.candidate_feature is None else features[self.candidate_feature]
        )

    def retrieval_loss(self, queries: tf.Tensor, candidates: tf.Tensor, features: dict, *,
                       compute_metrics: bool) -> tf.Tensor:
        """The task's loss for these vectors, with this model's options applied.

        ``candidates`` may hold more rows than ``queries`` (extra negatives, e.g. gathered
        from other replicas) only when ``correction`` and ``remove_accidental_hits`` are off.
        """
        probability = None
        if self.correction:
            if PROBABILITY not in features:
                raise ValueError(f"correction=True needs the feature {PROBABILITY!r} (each row's candidate's "
                                 "share of training rows); build it with features.candidate_probability")
            probability = features[PROBABILITY]
        mask = None
        if self.remove_accidental_hits:
            mask = accidental_hits_mask(features[self.candidate_id_feature])
        return self.task(queries, candidates, candidate_sampling_probability=probability,
                         score_mask=mask, compute_metrics=compute_metrics)

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        """The in-batch softmax loss of one batch (top-K metrics only when not training)."""
        return self.retrieval_loss(self.query_embeddings(features), self.candidate_embeddings(features),
                                   features, compute_metrics=not training)


def build_two_tower(
    user_vocabulary, movie_ids, embedding_dim: int = 32, learning_rate: float = 0.1, *,
    correction: bool = False, remove_accidental_hits: bool = False, temperature: float | None = None,
    num_hard_negatives: int | None = None, metrics=None, model_class: type[TwoTowerModel] | None = None,
) -> TwoTowerModel:
    """A compiled, untrained id-only :class:`TwoTowerModel` (Adagrad with ``learning_rate``).

    Its ``query_model`` is ``id_tower(user_vocabulary)`` reading ``user_id``, its
    ``candidate_model`` ``id_tower(movie_ids)`` reading ``movie_id``. Build it inside
    ``strategy.scope()`` to get distributed variables (lesson 09 does). ``model_class`` may
    be a subclass of :class:`TwoTowerModel` (same constructor) with another ``compute_loss``.
    ``metrics`` is passed to the task, or called with the movie tower first when it is a
    function (a ``FactorizedTopK`` over the catalogue needs the tower it ranks with).
    """
    user_model = id_tower(np.asarray(user_vocabulary).astype(str), embedding_dim, "user_model")
    movie_model = id_tower(np.asarray(movie_ids).astype(str), embedding_dim, "movie_model")
    options = dict(correction=correction, remove_accidental_hits=remove_accidental_hits,
                   temperature=temperature)
    if num_hard_negatives is not None:
        options["num_hard_negatives"] = num_hard_negatives
    if metrics is not None:
        options["metrics"] = metrics(movie_model) if callable(metrics) else metrics
    model = (model_class or TwoTowerModel)(user_model, movie_model, **options)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=learning_rate))
    return model


@dataclass
class TwoTower:
    """A trained id-only two-tower model and its precomputed candidate embeddings.

    Attributes:
        model: the trained :class:`TwoTowerModel`.
        user_model: ``tf.string`` user ids ``[batch]`` -> ``float32 [batch, dim]``
            (``model.query_model``).
        movie_model: ``tf.string`` movie ids ``[batch]`` -> ``float32 [batch, dim]``
            (``model.candidate_model``).
        movie_ids: ``str [n_movies]``, the candidate catalogue (every movie of the
            ``movies`` frame given to :func:`train_two_tower`, sorted).
        movie_embeddings: ``float32 [n_movies, dim]``; row ``i`` is ``movie_ids[i]``'s vector.
        history: Keras ``History.history`` (one value per epoch per key) plus
            ``"loss_per_example"``: the epoch's mean in-batch softmax loss per training pair.
            Follow that key: TFRS reports as ``"loss"`` only the summed loss of each epoch's
            last batch. From :func:`train_retrieval`: ``"epoch"``, ``"validation_loss"`` (per
            pair) and ``"validation_top_100"`` (factorized top-100 accuracy), one per epoch.
        best_epoch: the epoch whose weights the model holds (:func:`train_retrieval`).
    """

    model: TwoTowerModel
    user_model: tf.keras.Model
    movie_model: tf.keras.Model
    movie_ids: np.ndarray
    movie_embeddings: np.ndarray
    history: dict
    best_epoch: int | None = None  #: the epoch kept (``train_retrieval``: chosen on validation)
    from_cache: bool = False  #: ``train_retrieval`` loaded these weights instead of training

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.movie_embeddings.shape[1])

    def user_embeddings(self, user_ids) -> np.ndarray:
        """``float32 [len(user_ids), dim]`` query vectors for a list or array of user ids."""
        ids = tf.constant(np.asarray(user_ids, dtype=str).reshape(-1))
        return self.user_model(ids).numpy().astype(np.float32)

    def scores(self, user_ids) -> np.ndarray:
        """``float32 [len(user_ids), n_movies]``: every movie's score for each user,
        columns in ``movie_ids`` order."""
        return self.user_embeddings(user_ids) @ self.movie_embeddings.T


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {missing}; it has {list(frame.columns)}")


def train_two_tower(
    train: pd.DataFrame,
    movies: pd.DataFrame,
    *,
    embedding_dim: int = 32,
    epochs: int = 3,
    batch_size: int = 4096,
    learning_rate: float = 0.1,
    seed: int = 42,
    correction: bool = False,
    remove_accidental_hits: bool = False,
    temperature: float | None = None,
) -> TwoTower:
    """Train an id-only two-tower retrieval model on (user, movie) interactions.

    Every row of ``train`` is one positive pair (the rating value is ignored: rating a movie
    at all counts as interest). Training uses Adagrad with ``learning_rate``, reshuffles
    every epoch with ``seed`` and seeds Python, NumPy and TensorFlow with it too, so a rerun
    on the same data gives the same numbers when op determinism is on
    (``recsys_course.seed_everything`` turns it on).

    Args:
        train: ratings with ``user_id`` and ``movie_id`` columns (any dtype; cast to str).
        movies: the catalogue, with a ``movie_id`` column; may hold movies absent from
            ``train`` (their vectors stay near their small random initial values).
        embedding_dim: size of both towers' output vectors.
        epochs: passes over ``train``.
        batch_size: pairs per step; also the number of in-batch candidates per step.
        learning_rate: Adagrad learning rate.
        seed: seed for initialisation and shuffling.
        correction: popularity (logQ) correction with each movie's share of ``train``.
        remove_accidental_hits, temperature: see :class:`TwoTowerModel`.

    Returns:
        A :class:`TwoTower` with the trained towers, the sorted catalogue ``movie_ids``,
        their ``movie_embeddings`` (``float32 [n_movies, embedding_dim]``) and the history.
    """
    _require(train, ("user_id", "movie_id"), "train")
    _require(movies, ("movie_id",), "movies")
    if train.empty:
        raise ValueError("train_two_tower needs at least one (user_id, movie_id) pair")
    tf.keras.utils.set_random_seed(seed)
    user_vocabulary = np.unique(train["user_id"].astype(str).to_numpy()).astype(str)
    movie_ids = np.unique(movies["movie_id"].astype(str).to_numpy()).astype(str)

    model = build_two_tower(
        user_vocabulary, movie_ids, embedding_dim, learning_rate, correction=correction,
        remove_accidental_hits=remove_accidental_hits, temperature=temperature,
    )
    probability = candidate_probability(train) if correction else None
    pairs = tf.data.Dataset.from_tensor_slices(pair_features(train, probability=probability))
    batches = pairs.shuffle(len(train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    history = fit_with_loss_per_example(model, batches, len(train), epochs=epochs)

    embeddings = model.candidate_model.predict(tf.constant(movie_ids), batch_size=8192, verbose=0)
    return TwoTower(
        model=model,
        user_model=model.query_model,
        movie_model=model.candidate_model,
        movie_ids=movie_ids,
        movie_embeddings=np.asarray(embeddings, dtype=np.float32),
        history=history,
    )


#: Lesson 02's retrieval recipe, the one every later lesson trains its retrieval model with
#: (:func:`train_retrieval`): id-only towers of 32 numbers, Adagrad, in-batch softmax, the
#: epoch chosen on a validation split (factorized top-100, as lesson 02's curves show it) and
#: training stopped after ``patience`` epochs without improvement. Batch size and learning
#: rate were chosen offline on validation (``RECIPE_SEARCH`` below).
RETRIEVAL_RECIPE = {"embedding_dim": 32, "batch_size": 1024, "learning_rate": 0.1,
                    "max_epochs": 10, "patience": 2}
#: The recorded search behind the batch size and learning rate: validation masked recall@10 of
#: the id-only towers, per (batch size, Adagrad learning rate), each at its best epoch.
RECIPE_SEARCH = "retrieval_recipe"  # recsys_course.models.recorded.recorded_search(RECIPE_SEARCH)


def train_retrieval(
    train: pd.DataFrame,
    movies: pd.DataFrame,
    *,
    validation: pd.DataFrame | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    correction: bool = True,
    remove_accidental_hits: bool = False,
    temperature: float | None = None,
    num_hard_negatives: int | None = None,
    cache: bool = True,
    **recipe,
) -> TwoTower:
    """Train an id-only two-tower model with lesson 02's recipe (:data:`RETRIEVAL_RECIPE`).

    The model learns from ``train`` minus a seeded ``validation_fraction`` of its rows (the
    *fit* rows), or from all of ``train`` when a ``validation`` frame is given; after every
    epoch it is measured on the validation rows, and it ends with the weights of the epoch
    with the best validation factorized top-100 accuracy. ``correction`` is lesson 03's logQ
    correction (on by default: lesson 03 shows it is the better tower at the same recipe);
    the other options change how in-batch negatives count (:class:`TwoTowerModel`);
    ``recipe`` overrides entries of :data:`RETRIEVAL_RECIPE`. Seeded: the same call gives the
    same towers (op determinism is on after ``recsys_course.seed_everything``).

    Trained once, reused: with ``cache`` the towers' weights, curves and chosen epoch are kept
    in the course's cache folder (``$COURSE_CACHE_DIR`` or ``~/.cache/recsys-course``, under
    ``retrieval/``), keyed by the training and validation pairs, the catalogue, every option,
    the seed, the TensorFlow and TFRS versions and the source of the modules that train it, so
    the next call with the same inputs (another lesson on the same data) loads them instead
    of training again (``from_cache`` is then True). Delete the folder to retrain.

    Returns:
        A :class:`TwoTower` over every movie of ``movies`` (sorted ids) whose ``history``
        holds the validation curves and ``best_epoch`` the epoch kept.
    """
    from recsys_course import evaluation as ev
    from recsys_course.models.training import train_with_curves

    unknown = set(recipe) - set(RETRIEVAL_RECIPE)
    if unknown:
        raise ValueError(f"unknown recipe entries {sorted(unknown)}; the recipe has {sorted(RETRIEVAL_RECIPE)}")
    settings = {**RETRIEVAL_RECIPE, **recipe}
    _require(train, ("user_id", "movie_id"), "train")
    _require(movies, ("movie_id",), "movies")
    if validation is None:
        fit, validation = ev.random_split(train, validation_fraction, seed=seed)
    else:
        fit = train
        _require(validation, ("user_id", "movie_id"), "validation")
    if fit.empty or validation.empty:
        raise ValueError(f"train_retrieval needs fit and validation rows; got {len(fit)} and {len(validation)}")
    tf.keras.utils.set_random_seed(seed)
    user_vocabulary = np.unique(fit["user_id"].astype(str).to_numpy()).astype(str)
    movie_ids = np.unique(movies["movie_id"].astype(str).to_numpy()).astype(str)
    catalogue = tf.data.Dataset.from_tensor_slices(movie_ids).batch(4096)
    options = dict(correction=correction, remove_accidental_hits=remove_accidental_hits, temperature=temperature,
                   num_hard_negatives=num_hard_negatives)
    key = _cache_key(fit, validation, movie_ids, {**settings, **options, "seed": seed})
    if cache and (cached := _load_cached(key, user_vocabulary, movie_ids, settings, options)) is not None:
        return cached

    def factorized_top_k(movie_model: tf.keras.Model):
        return tfrs.metrics.FactorizedTopK(candidates=catalogue.map(movie_model), ks=(100,))

    model = build_two_tower(
        user_vocabulary, movie_ids, settings["embedding_dim"], settings["learning_rate"],
        correction=correction, remove_accidental_hits=remove_accidental_hits, temperature=temperature,
        num_hard_negatives=num_hard_negatives, metrics=factorized_top_k,
    )
    probability = candidate_probability(fit) if correction else None
    batches = (tf.data.Dataset.from_tensor_slices(pair_features(fit, probability=probability))
               .shuffle(len(fit), seed=seed, reshuffle_each_iteration=True).batch(settings["batch_size"]))
    run = train_with_curves(
        model, batches, {"validation": pair_features(validation, probability=probability)},
        epochs=settings["max_epochs"], ks=(100,), patience=settings["patience"],
    )
    embeddings = model.candidate_model.predict(tf.constant(movie_ids), batch_size=8192, verbose=0)
    curve = run.curves[run.curves["split"] == "validation"]
    trained = TwoTower(
        model=model, user_model=model.query_model, movie_model=model.candidate_model,
        movie_ids=movie_ids, movie_embeddings=np.asarray(embeddings, dtype=np.float32),
        history={"epoch": curve["epoch"].tolist(), "validation_loss": curve["loss"].tolist(),
                 "validation_top_100": curve["top_100"].tolist()},
        best_epoch=run.best_epoch,
    )
    if cache:
        _store(key, trained)
    return trained


def _cache_folder() -> Path:
    from recsys_course.data.sources import cache_dir

    return cache_dir() / "retrieval"


def _cache_key(fit: pd.DataFrame, validation: pd.DataFrame, movie_ids: np.ndarray, settings: dict) -> str:
    """A digest of everything :func:`train_retrieval`'s result depends on."""
    from recsys_course.models import features, towers, training

    digest = hashlib.sha256()
    for frame in (fit, validation):
        pairs = frame[["user_id", "movie_id"]].astype(str)
        digest.update(pd.util.hash_pandas_object(pairs, index=False).to_numpy().tobytes())
    digest.update("\n".join(movie_ids).encode())
    digest.update(json.dumps({**settings, "tensorflow": tf.__version__, "tfrs": tfrs.__version__},
                             sort_keys=True, default=str).encode())
    for module in (__file__, towers.__file__, training.__file__, features.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:32]


def _store(key: str, trained: TwoTower) -> None:
    """Write the towers' weights and the curves, each file renamed into place when complete."""
    folder = _cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        weights = {f"query_{i}": w for i, w in enumerate(trained.user_model.get_weights())}
        weights.update({f"candidate_{i}": w for i, w in enumerate(trained.movie_model.get_weights())})
        partial = folder / f"{key}.{os.getpid()}.partial.npz"
        np.savez(partial, **weights)
        os.replace(partial, folder / f"{key}.npz")
        meta = folder / f"{key}.{os.getpid()}.partial.json"
        meta.write_text(json.dumps({"history": trained.history, "best_epoch": trained.best_epoch}))
        os.replace(meta, folder / f"{key}.json")
    except OSError:  # a read-only or full disk: the model is still returned, only not kept
        pass


def _load_cached(key: str, user_vocabulary, movie_ids, settings: dict, options: dict) -> TwoTower | None:
    folder = _cache_folder()
    weights_file, meta_file = folder / f"{key}.npz", folder / f"{key}.json"
    if not (weights_file.is_file() and meta_file.is_file()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
        with np.load(weights_file) as stored:
            query = [stored[f"query_{i}"] for i in range(sum(k.startswith("query_") for k in stored.files))]
            candidate = [stored[f"candidate_{i}"] for i in range(sum(k.startswith("candidate_") for k in stored.files))]
    except (OSError, ValueError, KeyError):
        return None  # a damaged entry: train again
    model = build_two_tower(user_vocabulary, movie_ids, settings["embedding_dim"], settings["learning_rate"],
                            **options)
    model.query_model(tf.constant(user_vocabulary[:1]))  # create the weights
    model.candidate_model(tf.constant(movie_ids[:1]))
    model.query_model.set_weights(query)
    model.candidate_model.set_weights(candidate)
    embeddings = model.candidate_model.predict(tf.constant(movie_ids), batch_size=8192, verbose=0)
    return TwoTower(model=model, user_model=model.query_model, movie_model=model.candidate_model,
                    movie_ids=movie_ids, movie_embeddings=np.asarray(embeddings, dtype=np.float32),
                    history=meta["history"], best_epoch=meta["best_epoch"], from_cache=True)
