# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 04 · Ranking: from predicted ratings to a re-ranked top 10
#
# **You will learn to**
#
# - explain why the second stage of the funnel can afford rich features, and what
#   pointwise, pairwise and listwise training objectives optimise;
# - build a ranking model with TensorFlow Recommenders (TFRS): a Keras scorer wrapped in a
#   `tfrs.models.Model` whose `compute_loss` uses the `tfrs.tasks.Ranking` task;
# - improve it with side features (genres, time, demographics), per-user and per-movie
#   biases and a cross layer from the Deep & Cross Network (`tfrs.layers.dcn.Cross`), and
#   measure what the cross layer itself adds by training the same model without it;
# - measure a ranker twice: as regression (RMSE) and as ranking (NDCG@10 per user), and
#   explain why the two can disagree;
# - re-rank a user's top 100 retrieval candidates and show the final top 10 as titles.
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and on its card on the site's home page, with the data it was measured on.
#
# **How to work through it:** run the cells top to bottom. The five exercises are a
# method, class or function whose body raises `NotImplementedError`; implement it, then run
# `course check 4.1` (or `course check 04` for the whole lesson). Section 10 retrieves
# candidates with lesson 02's retrieval recipe (`recsys_course.models.train_retrieval`).

# %% tags=["setup"]
# recsys_course first: it sets TF_USE_LEGACY_KERAS=1, so that tf.keras is Keras 2 (tf-keras),
# which TensorFlow Recommenders needs.
import recsys_course
from recsys_course import claims, evaluation as ev, models

import time
from typing import NamedTuple
from collections.abc import Callable, Collection, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

SEED = recsys_course.seed_everything(42)
K = 10  # the cutoff of every top-k metric in this lesson
N_CANDIDATES = 100  # how many movies retrieval hands to the ranker per user

# Two training recipes, used by the lesson and by its benchmark (`course bench 04`).
# The first is the one of TFRS's basic ranking tutorial: large batches, Adagrad, 3 epochs.
# The second trains with Adam for at most 20 epochs and keeps the epoch with the lowest
# validation RMSE (early stopping after `patience` epochs without improvement).
BASELINE_RECIPE = {"optimizer": "adagrad", "learning_rate": 0.1, "batch_size": 8192, "epochs": 3}
IMPROVED_RECIPE = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 1024, "epochs": 20,
                   "patience": 2}
L2_GRID = (1e-3, 1e-2, 1e-1)  # L2 strengths of the improved models, chosen on validation (offline)
VALIDATION_FRACTION = 0.1  # of the training ratings, held out to choose epochs and L2

# %% [markdown]
# ## 1. The second stage of the funnel
#
# Lesson 00 described the funnel: retrieval narrows millions of items to a few hundred,
# ranking orders those, re-ranking applies rules. The two model stages face very different
# budgets, and that shapes what each may compute.
#
# **Retrieval** must score the whole catalogue for every request. It only manages because
# its score is a dot product between a user vector and a movie vector computed
# *separately*: movie vectors are computed once, ahead of time, and stored in a
# nearest-neighbour index (lesson 07). The price is that user features and movie features
# never meet inside the network; they only meet in the final dot product.
#
# **Ranking** scores only the few hundred survivors. At 100 candidates per request, a model
# that costs 100 times more per item than the retrieval score is affordable. So the ranker
# can look at the *pair*: who the user is, what the movie is, and the context (time of day,
# device, what was just watched), combined by a deep network. Features that only make sense
# for a pair, such as "does this movie's genre match the genres this user rated highly", are
# exactly what retrieval cannot use and ranking can.
#
# ```mermaid
# flowchart LR
#     R["Retrieval<br/>top 100 for this user"] --> J["Join features<br/>user × movie × context"]
#     J --> M["Ranking model<br/>one score per pair"]
#     M --> S["Sort by score"]
#     S --> P["Rules<br/>drop already seen → top 10"]
# ```

# %% [markdown]
# ## 2. What to optimise: pointwise, pairwise, listwise
#
# MovieLens holds **explicit feedback**: users say how much they liked a movie, from 0.5 or
# 1 star to 5. The ranker's job is an *order* over candidates, but there are three ways to
# turn "order" into a loss to minimise (the names come from the learning-to-rank literature,
# for example Liu, 2009):
#
# | objective | trains on | typical loss | good at | blind to |
# |---|---|---|---|---|
# | **pointwise** | one (user, movie) example at a time | squared error on the rating, or log loss on a click | calibrated scores you can read as "predicted stars" | order: it spends effort on getting values right even where order is already right |
# | **pairwise** | two movies of the same user, one preferred | $\log(1 + e^{-(s_i - s_j)})$ when $i$ is preferred to $j$ (RankNet, Burges et al., 2005; BPR, Rendle et al., 2009) | the order of pairs | which positions matter: a swap at ranks 90/91 costs as much as at 1/2 |
# | **listwise** | a user's whole list | softmax cross-entropy over the list (ListNet, Cao et al., 2007), ListMLE, or pairs weighted by how much NDCG would change (LambdaRank, Burges, 2010) | the metric you report | nothing in principle, but it needs lists per user and is costlier |
#
# With explicit ratings, the pointwise choice is natural and cheap: predict the rating and
# sort by the prediction. That is what this lesson does. TFRS's `tfrs.tasks.Ranking` takes
# any Keras loss, so moving to a pairwise or listwise loss (TensorFlow Ranking ships them as
# Keras losses) changes one argument, plus a data pipeline that groups each user's movies
# into lists; the TFRS listwise-ranking tutorial shows how.

# %% [markdown]
# ## 3. The data and the split
#
# Every rating is one training example: the label is `user_rating`, the inputs are the
# user, the movie, the movie's genres, the time of the rating and, when the dataset has
# them, the user's demographics. The first printed line says which dataset you are running
# on.

# %%
data = recsys_course.load_movielens()
print("Dataset:", data.summary())
print("Demographic columns available:", data.has_demographics)
train, test = recsys_course.split_ratings(data.ratings, test_fraction=0.2, seed=SEED)
fit, valid = recsys_course.split_ratings(train, test_fraction=VALIDATION_FRACTION, seed=SEED)
print(f"train: {len(train):,} ratings ({len(fit):,} to fit, {len(valid):,} to validate), "
      f"test: {len(test):,} ratings")

# %% [markdown]
# This is a seeded random 80/20 split, the kind the TFRS tutorials use, kept so that our
# numbers can be compared with theirs. A tenth of the training ratings is held out again as
# a *validation* set: every choice below (how many epochs, how much regularisation) is made
# on it, and the test set is used once, at the end, to report. Lesson 00 showed that a random split lets the model peek at the
# future; keep that in mind when reading any absolute number below. Comparisons between
# models on the same split remain fair.
#
# ## 4. From rows to tensors
#
# A Keras model eats a dictionary of arrays, one entry per feature. Two rules shape the
# conversion:
#
# - everything the model must know *before* training (the list of users, movies, genres,
#   time buckets, occupations; the mean rating) comes from the **training** split only, so
#   nothing about the test ratings leaks in. The movie list is the whole catalogue: knowing
#   that a movie exists is not a rating;
# - the model receives raw ids (strings) and turns them into embedding rows itself, with
#   `StringLookup` layers. A model that accepts raw features can be served as it is
#   (lesson 08) and cannot be fed ids encoded with a different table by mistake.

# %% tags=["setup"]
class Vocabulary(NamedTuple):
    """What the models must know about the training data before seeing a batch.

    ``time_edges`` are the 9 inner deciles of the training timestamps (10 time buckets).
    ``occupations`` and ``age_buckets`` are None when the data has no demographic columns.
    """

    users: list[str]
    movies: list[str]
    genres: list[str]
    time_edges: list[float]
    mean_rating: float
    occupations: list[str] | None = None
    age_buckets: list[int] | None = None


def build_vocabulary(train: pd.DataFrame, movies: pd.DataFrame) -> Vocabulary:
    """Vocabularies from the training ratings (users, time, demographics, mean rating)
    and the movie catalogue (movies, genres)."""
    has_demographics = "user_occupation_text" in train.columns
    return Vocabulary(
        users=sorted(train["user_id"].unique()),
        movies=sorted(movies["movie_id"].unique()),
        genres=sorted({genre for genres in movies["movie_genres"] for genre in genres}),
        time_edges=[float(t) for t in np.quantile(train["timestamp"], np.linspace(0.1, 0.9, 9))],
        mean_rating=float(train["user_rating"].mean()),
        occupations=sorted(train["user_occupation_text"].unique()) if has_demographics else None,
        age_buckets=sorted(int(a) for a in train["bucketized_user_age"].unique())
        if has_demographics
        else None,
    )


def to_features(frame: pd.DataFrame, vocab: Vocabulary) -> dict[str, np.ndarray]:
    """One row of ``frame`` per example -> a dict of arrays, all with n = len(frame) rows.

    Keys: ``user_id`` and ``movie_id`` (n,) strings; ``movie_genres`` (n, n_genres) float32
    multi-hot (genres missing from ``vocab`` are ignored); ``timestamp`` (n,) float32
    seconds; ``user_rating`` (n,) float32 when ``frame`` has ratings; and, when ``vocab``
    has demographics, ``user_occupation_text`` (n,) strings, ``bucketized_user_age`` (n,)
    int64 and ``user_gender`` (n,) float32 (1.0 for True).
    """
    column = {genre: j for j, genre in enumerate(vocab.genres)}
    genres = np.zeros((len(frame), len(vocab.genres)), np.float32)
    for i, names in enumerate(frame["movie_genres"]):
        genres[i, [column[g] for g in names if g in column]] = 1.0
    features = {
        "user_id": frame["user_id"].to_numpy(str),
        "movie_id": frame["movie_id"].to_numpy(str),
        "movie_genres": genres,
        "timestamp": frame["timestamp"].to_numpy(np.float32),
    }
    if "user_rating" in frame.columns:
        features["user_rating"] = frame["user_rating"].to_numpy(np.float32)
    if vocab.occupations is not None:
        features["user_occupation_text"] = frame["user_occupation_text"].to_numpy(str)
        features["bucketized_user_age"] = frame["bucketized_user_age"].to_numpy(np.int64)
        features["user_gender"] = frame["user_gender"].to_numpy(np.float32)
    return features


def make_dataset(
    features: dict[str, np.ndarray], batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """Batches of feature dicts; reshuffled every epoch with a fixed seed when given one."""
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle_seed is not None:
        n = len(next(iter(features.values())))
        dataset = dataset.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


# %%
vocab = build_vocabulary(train, data.movies)
train_features, test_features = to_features(train, vocab), to_features(test, vocab)
fit_features, valid_features = to_features(fit, vocab), to_features(valid, vocab)
print(
    f"{len(vocab.users)} users, {len(vocab.movies)} movies, {len(vocab.genres)} genres, "
    f"mean training rating {vocab.mean_rating:.3f}"
)
{name: (values.dtype, values.shape) for name, values in train_features.items()}

# %% [markdown]
# ## 5. A ranking model in TFRS
#
# A TFRS model is a Keras model with one extra duty: you write `compute_loss(features,
# training)`, and the inherited `train_step` does the rest (gradient tape, regularisation
# losses, optimizer step, metrics). We split the model into two parts that change
# independently:
#
# - a **scorer**: any Keras model mapping a batch of features to predicted ratings of shape
#   (n, 1). We will write two, a baseline and an improved one;
# - the **task**: `tfrs.tasks.Ranking`, which owns the loss (here mean squared error) and
#   the metrics (here root mean squared error, RMSE) and updates those metrics every time it
#   computes a loss. That is how `fit` and `evaluate` get to report RMSE.
#
# ### Exercise 4.1 · The ranking model's `compute_loss`
#
# Complete `RatingModel.compute_loss`: predict the batch's ratings with the scorer and let
# the task compare them with the true ratings in `features["user_rating"]`.

# %% tags=["exercise"] exercise="4.1"
class RatingModel(tfrs.models.Model):
    """A rating predictor trained with TFRS's Ranking task (pointwise, squared error).

    ``scorer`` is any Keras model that maps a features dict (a batch of n examples) to
    predicted ratings of shape (n, 1) and ignores the keys it does not use, such as the
    label ``user_rating``. The task holds the loss and the RMSE metric that ``fit`` and
    ``evaluate`` report as ``root_mean_squared_error``.
    """

    def __init__(self, scorer: tf.keras.Model) -> None:
        super().__init__()
        self.scorer = scorer
        self.task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(),
            metrics=[tf.keras.metrics.RootMeanSquaredError()],
        )

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.scorer(features, training=training)

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The batch's loss, computed by ``self.task`` so that its RMSE metric is updated.

        Args:
            features: one batch as a dict of tensors: the label ``user_rating`` of shape (n,)
                and whatever inputs the scorer reads.
            training: True inside ``fit``; pass it on to the scorer.

        Returns:
            A scalar tensor: the mean over the batch of (predicted - true rating) squared.
        """
        # BEGIN SOLUTION
        predictions = self.scorer(features, training=training)
        return self.task(labels=features["user_rating"], predictions=predictions)
        # END SOLUTION


# %% [markdown]
# The baseline scorer is the architecture of TFRS's basic ranking tutorial, which is also
# the course's ranker (`recsys_course.models.build_ranker`, served in lesson 08): one
# embedding for the user, one for the movie, concatenated and passed through a small
# multilayer perceptron (MLP) that outputs the rating. A `StringLookup` turns each id into
# a row number; ids it has never seen (a brand-new user) share row 0.

# %% tags=["setup"]
def baseline_scorer(vocab: Vocabulary, dim: int = 32) -> models.Ranker:
    """User and movie embeddings (``dim`` each) -> MLP (256, 64) -> predicted rating.

    Input: a features dict with ``user_id`` and ``movie_id`` string tensors of shape (n,)
    (other keys are ignored). Output: predicted ratings of shape (n, 1). The output starts
    near 0 stars, as in the tutorial. Its weights are drawn at the first call, so
    ``train_rating_model``'s seeding decides them.
    """
    return models.build_ranker(vocab.users, vocab.movies, embedding_dim=dim, hidden_units=(256, 64))


def train_rating_model(
    scorer: tf.keras.Model,
    fit_features: dict[str, np.ndarray],
    valid_features: dict[str, np.ndarray],
    recipe: dict,
) -> tuple[RatingModel, pd.DataFrame]:
    """Wrap ``scorer`` in a RatingModel and fit it on ``fit_features`` with ``recipe``
    (optimizer name, learning_rate, batch_size, epochs, optional patience).

    ``valid_features`` is measured after every epoch. With ``patience``, training stops after
    that many epochs without a lower validation RMSE and the weights of the best epoch are
    restored; without it, all ``epochs`` run. The test set never enters here.
    Seeds everything first, so the same call prints the same numbers on every run.
    Returns the trained model and one row per epoch run with ``train_rmse`` (averaged over
    the epoch while the weights move) and ``valid_rmse`` (measured after the epoch).
    """
    recsys_course.seed_everything(SEED)
    optimizers = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam}
    model = RatingModel(scorer)
    model.compile(optimizer=optimizers[recipe["optimizer"]](learning_rate=recipe["learning_rate"]))
    callbacks = []
    if recipe.get("patience"):
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor="val_root_mean_squared_error", patience=recipe["patience"],
            restore_best_weights=True,
        ))
    history = model.fit(
        make_dataset(fit_features, recipe["batch_size"], shuffle_seed=SEED),
        validation_data=make_dataset(valid_features, 4096),
        epochs=recipe["epochs"],
        callbacks=callbacks,
        verbose=0,
    )
    curves = pd.DataFrame({
        "epoch": np.arange(1, len(history.history["loss"]) + 1),
        "train_rmse": history.history["root_mean_squared_error"],
        "valid_rmse": history.history["val_root_mean_squared_error"],
    })
    return model, curves


def choose_l2(
    vocab: "Vocabulary", fit_features: dict[str, np.ndarray], valid_features: dict[str, np.ndarray],
    grid: Sequence[float] = L2_GRID, n_cross: int = 1,
) -> tuple[float, RatingModel, pd.DataFrame, dict[float, float]]:
    """Train the improved model (with ``n_cross`` cross layers) once per L2 strength in
    ``grid`` and keep the one with the lowest validation RMSE. Returns (best L2, its model,
    its curves, validation RMSE per L2). The lesson states the result of this search, run
    offline (``models.recorded_search("ranking_recipe")``); the benchmark runs it."""
    best = None
    scores = {}
    for l2 in grid:
        model, curves = train_rating_model(CrossScorer(vocab, l2=l2, n_cross=n_cross), fit_features,
                                           valid_features, IMPROVED_RECIPE)
        scores[l2] = float(curves["valid_rmse"].min())
        if best is None or scores[l2] < scores[best[0]]:
            best = (l2, model, curves)
    return best[0], best[1], best[2], scores


def predict_ratings(model: tf.keras.Model, features: dict[str, np.ndarray]) -> np.ndarray:
    """Predicted ratings as a flat array of shape (n,)."""
    return model.predict(features, batch_size=4096, verbose=0).reshape(-1)


# %% [markdown]
# Training with the TFRS tutorial's recipe: Adagrad with learning rate 0.1, batches of
# 8,192 ratings, 3 epochs. For scale, the tutorial reports a test RMSE of about 1.1 on
# MovieLens 100K. The simplest possible predictor, the training mean for everybody, sets
# the bar.

# %%
started = time.perf_counter()
baseline, baseline_curves = train_rating_model(
    baseline_scorer(vocab), fit_features, valid_features, BASELINE_RECIPE
)
baseline_seconds = time.perf_counter() - started
baseline_pred = predict_ratings(baseline, test_features)


def rmse(predicted: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(true)) ** 2)))


test_ratings = test["user_rating"].to_numpy()
print(f"baseline test RMSE after {BASELINE_RECIPE['epochs']} epochs: "
      f"{rmse(baseline_pred, test_ratings):.4f} ({baseline_seconds:.1f} s)")
print(f"predicting the training mean {vocab.mean_rating:.2f} for everyone: "
      f"{rmse(np.full(len(test), vocab.mean_rating), test_ratings):.4f}")

# %% [markdown]
# Three epochs with this recipe bring the baseline close to the trivial predictor and not
# much further: the network starts from outputs near 0 stars and spends most of its first
# updates just climbing to the average rating. Section 8 fixes that and more.

# %% tags=["check"]
from recsys_course.claims import claim

mean_rmse = rmse(np.full(len(test), vocab.mean_rating), test_ratings)
claim(rmse(baseline_pred, test_ratings) > 0.9 * mean_rmse,
      "Three epochs with this recipe bring the baseline close to the trivial predictor")

# %% [markdown]
# ## 6. Measuring a ranker: RMSE and NDCG@k
#
# **RMSE** answers "how many stars off is a typical prediction?":
# $\mathrm{RMSE} = \sqrt{\frac{1}{N}\sum (\hat r_{ui} - r_{ui})^2}$ over all test ratings.
# It treats every rating alike: a one-star error on a movie the user hated counts as much as
# one on the movie that should top their list, and heavy raters dominate the average.
#
# A ranker is used to **order** a user's movies, so we also measure the order. For one
# user, sort the held-out movies by predicted score and compute the *discounted cumulative
# gain* of the first $k$ (Järvelin and Kekäläinen, 2002, with the exponential gain used
# since Burges et al., 2005):
#
# $$\mathrm{DCG@}k = \sum_{p=1}^{k} \frac{2^{r_p} - 1}{\log_2(p + 1)}, \qquad
# \mathrm{NDCG@}k = \frac{\mathrm{DCG@}k}{\mathrm{IDCG@}k}$$
#
# where $r_p$ is the true rating of the movie shown at position $p$ and IDCG@k is the best
# possible DCG@k, obtained by sorting the same movies by their true ratings. What it
# rewards:
#
# - **the top of the list**: position 1 has weight 1, position 10 only
#   $1/\log_2 11 \approx 0.29$, position 11 nothing;
# - **the best movies**: with gain $2^r - 1$, a 5-star movie is worth 31 and a 4-star one
#   15, so putting the favourite first matters more than ordering the middle;
# - **order only**: NDCG divides by the user's own ideal, so every user counts equally, and
#   adding a constant to all of one user's scores changes nothing.
#
# ### Exercise 4.2 · NDCG@k for one user's list
#
# Implement `ndcg_at_k(scores, ratings, k)`.


# %% tags=["exercise"] exercise="4.2"
def ndcg_at_k(scores: np.ndarray, ratings: np.ndarray, k: int = 10) -> float:
    """NDCG@k of one user's list of items.

    Args:
        scores: predicted scores of the user's n items, shape (n,); higher is shown first,
            and items with equal scores keep their input order (stable sort).
        ratings: the true ratings of the same n items, shape (n,), all >= 0.
        k: cutoff; only the first min(k, n) positions count.

    Returns:
        DCG@k / IDCG@k as a float in [0, 1], with gain 2**rating - 1 and discount
        1 / log2(position + 1) for positions 1, 2, ...; IDCG@k is the DCG@k of the same
        items sorted by true rating. 0.0 when IDCG@k is 0 (no item has a positive gain).
    """
    # BEGIN SOLUTION
    scores = np.asarray(scores, dtype=float).reshape(-1)
    gains = 2.0 ** np.asarray(ratings, dtype=float).reshape(-1) - 1.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    shown = gains[np.argsort(-scores, kind="stable")][:k]
    ideal = np.sort(gains)[::-1][:k]
    idcg = float(ideal @ discounts[: len(ideal)])
    if idcg <= 0.0:
        return 0.0
    return float(shown @ discounts[: len(shown)]) / idcg
    # END SOLUTION


# %% [markdown]
# Averaged over users, NDCG tells how well a scorer orders each user's held-out movies.
# Users with a single held-out rating are skipped: a list of one is always perfectly
# ordered.

# %% tags=["setup"]
def ndcg_by_user(frame: pd.DataFrame, scores: np.ndarray, k: int = K) -> np.ndarray:
    """``ndcg_at_k`` of each user's rows in ``frame`` ordered by ``scores``, users in sorted
    id order (two scorings of the same frame give paired values).

    ``frame`` has ``user_id`` and ``user_rating`` columns; ``scores`` has one value per row
    of ``frame``, in the same order. Users with fewer than two rows are skipped.
    """
    table = pd.DataFrame({
        "user_id": frame["user_id"].to_numpy(),
        "rating": frame["user_rating"].to_numpy(float),
        "score": np.asarray(scores, dtype=float).reshape(-1),
    })
    values = [
        ndcg_at_k(group["score"].to_numpy(), group["rating"].to_numpy(), k)
        for _, group in table.groupby("user_id", sort=True)
        if len(group) >= 2
    ]
    return np.asarray(values, dtype=float)


def mean_ndcg(frame: pd.DataFrame, scores: np.ndarray, k: int = K) -> float:
    """Mean over users of ``ndcg_by_user``: how well ``scores`` order each user's rows."""
    return float(np.mean(ndcg_by_user(frame, scores, k)))


def non_personal_orders(train: pd.DataFrame, test: pd.DataFrame, seed: int = SEED) -> dict[str, np.ndarray]:
    """Scores for ``test`` rows that ignore who the user is: random, popularity (number of
    training ratings of the movie) and the movie's mean training rating."""
    counts = train.groupby("movie_id").size()
    means = train.groupby("movie_id")["user_rating"].mean()
    return {
        "random order": np.random.default_rng(seed).random(len(test)),
        "popularity": test["movie_id"].map(counts).fillna(0).to_numpy(float),
        "movie's mean rating": test["movie_id"].map(means).fillna(train["user_rating"].mean()).to_numpy(float),
    }


# %%
orders = non_personal_orders(train, test)
orders["baseline model"] = baseline_pred
pd.DataFrame(
    {"NDCG@10": {name: round(mean_ndcg(test, scores), 4) for name, scores in orders.items()}}
)

# %% [markdown]
# Random order is the floor: even a shuffled list has a decent NDCG, because many
# held-out movies are rated well. Popularity ordering is a real signal (popular movies are
# rated higher on average), and "sort by the movie's average rating" is stronger still.
# None of the three knows anything about the user. The baseline model, barely past the
# trivial predictor in RMSE, does not beat the movie-average ordering.
#
# ## 7. Feature crosses and the Deep & Cross Network
#
# Many useful signals are *products* of features: "this user likes science fiction" times
# "this movie is science fiction"; "this user rates at weekends" times "this is a long
# movie". Matrix factorisation (lesson 01) is nothing but such products: the score is
# $\sum_i u_i m_i$. An MLP with ReLU units can only approximate a product piece by piece,
# and needs many units and much data to do it (Beutel et al., 2018; Rendle et al., 2020
# showed that a carefully tuned dot product beats an MLP on this job).
#
# The **cross layer** of the Deep & Cross Network (DCN; Wang et al., 2017, and DCN-V2,
# Wang et al., 2021) builds products explicitly. With $x_0$ the concatenated input
# features and $x_l$ the output of layer $l$ (as row vectors, the Keras convention):
#
# $$x_{l+1} = x_0 \odot (x_l W_l + b_l) + x_l$$
#
# where $\odot$ is the elementwise product. Coordinate $i$ of the output contains
# $x_{0,i} \cdot \sum_j x_{l,j} W_{l,ji}$: every pair of input features, weighted by a
# learned matrix. One layer gives all degree-2 products, a stack of $L$ layers all products
# up to degree $L+1$, and the residual term $+x_l$ keeps the lower degrees. A full-rank
# layer on $d$ inputs costs $d^2 + d$ weights; `tfrs.layers.dcn.Cross(projection_dim=r)`
# factorises $W$ into two $d \times r$ matrices when $d$ is large. In DCN-V2 a *deep*
# network (an MLP) follows or runs beside the cross network to catch everything else.
#
# ### Exercise 4.3 · A feature-cross tower, by hand
#
# Implement `cross_tower(x0, kernels, biases)`: a stack of cross layers in NumPy. It is the
# best way to be sure you know what the TFRS layer computes; the cell after it checks your
# code against `tfrs.layers.dcn.Cross`.

# %% tags=["exercise"] exercise="4.3"
def cross_tower(
    x0: np.ndarray, kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray]
) -> np.ndarray:
    """Apply a stack of DCN cross layers to a batch.

    Layer l maps x_l to x_{l+1} = x0 * (x_l @ W_l + b_l) + x_l, where * is the elementwise
    product, x_0 = x0, and W_l, b_l are ``kernels[l]``, ``biases[l]``.

    Args:
        x0: the input batch, shape (n, d).
        kernels: L matrices of shape (d, d), in Keras layout (the input multiplies on the left).
        biases: L vectors of shape (d,).

    Returns:
        x_L, shape (n, d); ``x0`` itself when there are no layers.
    """
    # BEGIN SOLUTION
    x = np.asarray(x0, dtype=float)
    base = x
    for kernel, bias in zip(kernels, biases):
        x = base * (x @ np.asarray(kernel) + np.asarray(bias)) + x
    return x
    # END SOLUTION


# %%
rng = np.random.default_rng(SEED)
x0_demo = rng.normal(size=(4, 6)).astype(np.float32)
first, second = tfrs.layers.dcn.Cross(), tfrs.layers.dcn.Cross()
tfrs_output = second(x0_demo, first(x0_demo)).numpy()
(w1, b1), (w2, b2) = first.get_weights(), second.get_weights()
by_hand = cross_tower(x0_demo, [w1, w2], [b1, b2])
print("largest difference from tfrs.layers.dcn.Cross:", float(np.abs(by_hand - tfrs_output).max()))

# %% [markdown]
# ### Exercise 4.4 · A deep & cross network with TFRS
#
# In a model, the cross layers are TFRS's `tfrs.layers.dcn.Cross`. Called as
# `cross(x0, x)` a layer computes $x_0 \odot (x W + b) + x$; called with one argument,
# `cross(x0)`, it uses $x = x_0$, which is right for the first layer of a stack only. In
# DCN-V2's *stacked* form a deep network (an MLP) reads the output of the last cross layer.
#
# Implement `build_deep_cross(input_dim, n_cross, deep_units)` with the Keras functional
# API: an input of `input_dim` numbers, `n_cross` cross layers (possibly none), then one
# `Dense` layer with ReLU per entry of `deep_units`, and a final `Dense(1)` without
# activation (a rating can be any number). The next section puts it inside the improved
# ranker, and trains that ranker with and without its cross layer.

# %% tags=["exercise"] exercise="4.4"
def build_deep_cross(input_dim: int, n_cross: int = 1, deep_units: Sequence[int] = (256, 64)) -> tf.keras.Model:
    """DCN-V2's stacked structure as a Keras model: ``x0 -> cross layers -> MLP -> one number``.

    Args:
        input_dim: the width ``d`` of the input ``x0``.
        n_cross: how many ``tfrs.layers.dcn.Cross`` layers to stack (0: the MLP reads ``x0``).
        deep_units: the widths of the MLP's hidden ``Dense`` layers (ReLU), in order.

    Returns:
        A ``tf.keras.Model`` from ``float32 [n, d]`` to ``float32 [n, 1]``: ``x_1 =
        Cross()(x0, x0)``, ``x_{l+1} = Cross()(x0, x_l)`` for each further cross layer, then
        ``Dense(units, activation="relu")`` for each entry of ``deep_units`` and
        ``Dense(1)`` (no activation) on top.
    """
    # BEGIN SOLUTION
    x0 = tf.keras.Input(shape=(input_dim,))
    x = x0
    for _ in range(n_cross):
        x = tfrs.layers.dcn.Cross()(x0, x)
    for units in deep_units:
        x = tf.keras.layers.Dense(units, activation="relu")(x)
    return tf.keras.Model(x0, tf.keras.layers.Dense(1)(x))
    # END SOLUTION

# %% [markdown]
# ## 8. An improved ranker: side features, biases and a cross layer
#
# Three changes, each with a reason:
#
# 1. **Side features.** Genres describe a movie that has few ratings; the time bucket of
#    the rating captures drifts in how people rate; occupation, age bucket and gender (when
#    the data has them) describe a user who has rated little. They enter as small
#    embeddings next to the id embeddings. `ml-latest-small` has no demographics, and the
#    model simply leaves them out.
# 2. **Biases and a sensible start.** The prediction is
#    $\hat r = \mu + b_u + b_m + f(x_0)$: the training mean $\mu$, a learned bias per user
#    ("rates everything high") and per movie ("everybody loves it"), plus the network.
#    The model starts at the mean instead of at 0 stars, and L2 regularisation on ids and
#    biases keeps rarely seen users and movies close to zero (shrinkage).
# 3. **A cross layer** before the MLP (exercise 4.4), so that products of features are one
#    layer away.
#
# ```mermaid
# flowchart LR
#     U["user id"] --> EU["embedding 32"]
#     M["movie id"] --> EM["embedding 32"]
#     G["genres (multi-hot)"] --> EG["embedding 16"]
#     T["time bucket"] --> ET["embedding 8"]
#     D["occupation, age, gender<br/>(if available)"] --> ED["embeddings 8 + 8, 1"]
#     EU & EM & EG & ET & ED --> X0["x0 (concatenation)"]
#     X0 --> C["Cross layer"] --> MLP["MLP 256 → 64 → 1"]
#     MLP --> S(("+"))
#     B["mean + user bias + movie bias"] --> S
#     S --> R["predicted rating"]
# ```
#
# It trains with Adam (learning rate 0.001) and batches of 1,024: smaller batches mean more
# updates per epoch. Two settings are chosen on the validation set, never on the test set:
# the number of epochs (early stopping keeps the best epoch) and the L2 strength. Each
# comparison below changes one thing:
#
# - the **recipe**: the baseline architecture trained with the tutorial's recipe and with
#   this one;
# - the **features and biases**: the baseline against the improved model *without* its
#   cross layer, both with the Adam recipe;
# - the **cross layer**: the improved model with and without it, everything else equal
#   (each with its own L2 and epochs chosen on validation: the same tuning budget).

# %% tags=["setup"]
class CrossScorer(tf.keras.Model):
    """mean + user bias + movie bias + MLP(Cross(x0)), x0 = all feature embeddings.

    Input: a features dict as made by ``to_features`` (demographic keys are read only when
    ``vocab`` has demographics). Output: predicted ratings of shape (n, 1).
    ``l2`` is the L2 penalty on the id embeddings and biases; ``n_cross`` the number of
    cross layers of its ``build_deep_cross`` network (0: the MLP reads ``x0`` directly).
    """

    def __init__(self, vocab: Vocabulary, dim: int = 32, l2: float = 1e-3, n_cross: int = 1) -> None:
        super().__init__()
        layers = tf.keras.layers
        shrink = tf.keras.regularizers.l2(l2)
        self.mean_rating = vocab.mean_rating
        self.user_lookup = layers.StringLookup(vocabulary=vocab.users)
        self.movie_lookup = layers.StringLookup(vocabulary=vocab.movies)
        self.user_embedding = layers.Embedding(len(vocab.users) + 1, dim, embeddings_regularizer=shrink)
        self.movie_embedding = layers.Embedding(len(vocab.movies) + 1, dim, embeddings_regularizer=shrink)
        self.user_bias = layers.Embedding(
            len(vocab.users) + 1, 1, embeddings_initializer="zeros", embeddings_regularizer=shrink
        )
        self.movie_bias = layers.Embedding(
            len(vocab.movies) + 1, 1, embeddings_initializer="zeros", embeddings_regularizer=shrink
        )
        self.genre_embedding = layers.Dense(16, use_bias=False)  # multi-hot -> sum of genre vectors
        self.time_embedding = tf.keras.Sequential([
            layers.Discretization(bin_boundaries=vocab.time_edges),
            layers.Embedding(len(vocab.time_edges) + 1, 8),
        ])
        self.uses_demographics = vocab.occupations is not None
        if self.uses_demographics:
            self.occupation_embedding = tf.keras.Sequential([
                layers.StringLookup(vocabulary=vocab.occupations),
                layers.Embedding(len(vocab.occupations) + 1, 8),
            ])
            self.age_embedding = tf.keras.Sequential([
                layers.IntegerLookup(vocabulary=vocab.age_buckets),
                layers.Embedding(len(vocab.age_buckets) + 1, 8),
            ])
        width = 2 * dim + 16 + 8 + (8 + 8 + 1 if self.uses_demographics else 0)  # the width of x0
        self.interactions = build_deep_cross(width, n_cross, deep_units=(256, 64))

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users = self.user_lookup(features["user_id"])
        movies = self.movie_lookup(features["movie_id"])
        parts = [
            self.user_embedding(users),
            self.movie_embedding(movies),
            self.genre_embedding(features["movie_genres"]),
            self.time_embedding(features["timestamp"]),
        ]
        if self.uses_demographics:
            parts += [
                self.occupation_embedding(features["user_occupation_text"]),
                self.age_embedding(features["bucketized_user_age"]),
                tf.reshape(tf.cast(features["user_gender"], tf.float32), (-1, 1)),
            ]
        x0 = tf.concat(parts, axis=1)
        return self.mean_rating + self.user_bias(users) + self.movie_bias(movies) + self.interactions(x0)


# %% [markdown]
# Searching the L2 strength and the number of epochs of three models on the page would train
# a dozen models, so the search ran once, offline, on MovieLens 100K's validation split
# (`python -m recsys_course.tooling.benchmarks.searches ranking_recipe`, every value of
# `L2_GRID` with and without the cross layer, early stopping on validation RMSE). For each
# model it keeps the L2 with the lowest validation RMSE, and as the number of epochs the
# fewest whose validation RMSE is within one standard error of the best epoch's (a classic
# early-stopping rule that spends no time on differences the noise cannot resolve). This
# page trains the chosen settings only, with those epochs as the cap. The search:

# %%
ranking_search = models.recorded_search("ranking_recipe")
search_rows = pd.DataFrame(ranking_search["rows"])
search_rows.set_index(["model", "L2"])[["validation_rmse", "standard_error", "best_epoch", "epochs"]]

# %%
def chosen(model_name: str) -> pd.Series:
    """The recorded row with the lowest validation RMSE for ``model_name``."""
    rows = search_rows[search_rows["model"] == model_name]
    return rows.loc[rows["validation_rmse"].idxmin()]


def capped(row: pd.Series) -> dict:
    """The Adam recipe with its epochs capped at the recorded number (one-standard-error rule)."""
    return {**IMPROVED_RECIPE, "epochs": int(row["epochs"])}


started = time.perf_counter()
setting = {name: chosen(name) for name in ("baseline, Adam recipe", "improved, with cross layer",
                                            "improved, no cross layer")}
baseline_adam, baseline_adam_curves = train_rating_model(
    baseline_scorer(vocab), fit_features, valid_features, capped(setting["baseline, Adam recipe"]))
improved, improved_curves = train_rating_model(
    CrossScorer(vocab, l2=setting["improved, with cross layer"]["L2"], n_cross=1), fit_features, valid_features,
    capped(setting["improved, with cross layer"]))
no_cross, no_cross_curves = train_rating_model(
    CrossScorer(vocab, l2=setting["improved, no cross layer"]["L2"], n_cross=0), fit_features, valid_features,
    capped(setting["improved, no cross layer"]))
print(f"3 models trained in {claims.fmt(time.perf_counter() - started, 'seconds')}")

# %%
claims.say(
    f"On {ranking_search['dataset']}, validation chose "
    f"L2 = {claims.fmt(setting['improved, with cross layer']['L2'], 'setting')} with the cross layer "
    f"({claims.fmt(int(setting['improved, with cross layer']['epochs']))} epochs) and "
    f"L2 = {claims.fmt(setting['improved, no cross layer']['L2'], 'setting')} without it "
    f"({claims.fmt(int(setting['improved, no cross layer']['epochs']))} epochs). On this page's data, early stopping "
    f"kept epoch {claims.fmt(int(improved_curves['valid_rmse'].idxmin()) + 1)} of "
    f"{claims.fmt(len(improved_curves))} for the model with the cross layer."
)

# %% [markdown]
# The curves show both RMSEs per epoch. Training RMSE is averaged over the epoch while the
# weights change, validation RMSE is measured at the end of it, so in the first epoch the
# training curve can sit above the validation curve. Each panel has its own scale, so the
# differences stay visible.

# %%
curves = {
    "baseline, TFRS recipe": baseline_curves,
    "baseline, Adam recipe": baseline_adam_curves,
    "improved, no cross layer": no_cross_curves,
    "improved (features + cross)": improved_curves,
}
# Each panel its own y-axis: a shared one would flatten the test curves' small differences.
fig, axes = plt.subplots(2, 1, figsize=(7, 7))
for (name, frame), color in zip(curves.items(), ["#9e9e9e", "#3f51b5", "#ff9800", "#e91e63"]):
    axes[0].plot(frame["epoch"], frame["train_rmse"], "o-", color=color, label=name)
    axes[1].plot(frame["epoch"], frame["valid_rmse"], "o-", color=color, label=name)
axes[0].set(title="Training RMSE (running average)", xlabel="epoch", ylabel="RMSE")
axes[1].set(title="Validation RMSE (end of epoch)", xlabel="epoch", ylabel="RMSE")
axes[1].axhline(rmse(np.full(len(valid), vocab.mean_rating), valid["user_rating"]), color="black",
                linestyle=":", label="predict the mean")
axes[1].legend()
axes[0].set_ylim(top=min(2.0, axes[0].get_ylim()[1]))
fig.tight_layout()
plt.show()

# %% [markdown]
# !!! note "Validation, then test once"
#     Early stopping watched the validation curves above, and the L2 strengths were the
#     ones with the lowest validation RMSE. Had we picked them by looking at test curves, the
#     test numbers below would be optimistic: the choice itself would have been fitted to
#     the test ratings. Now each model meets the test set once, in the next cell.
#
# The same models, measured both ways, next to the non-personal orderings of section 6:

# %%
predictions = {
    "baseline, TFRS recipe": baseline_pred,
    "baseline, Adam recipe": predict_ratings(baseline_adam, test_features),
    "improved, no cross layer": predict_ratings(no_cross, test_features),
    "improved (features + cross)": predict_ratings(improved, test_features),
}
ndcg_users = {name: ndcg_by_user(test, p) for name, p in predictions.items()}
ndcg_users.update({name: ndcg_by_user(test, orders[name])
                   for name in ["popularity", "movie's mean rating", "random order"]})
comparison = pd.DataFrame({
    "test RMSE": {name: rmse(p, test_ratings) for name, p in predictions.items()},
    "NDCG@10": {name: float(np.mean(values)) for name, values in ndcg_users.items()},
})
comparison.round(4)

# %%
def rmse_change(new: str, old: str) -> claims.Comparison:
    """``new``'s test RMSE against ``old``'s (lower is better). Its noise comes from the paired
    squared errors of the same ratings: RMSE_a - RMSE_b = (MSE_a - MSE_b) / (RMSE_a + RMSE_b)."""
    a, b = (np.asarray(predictions[name]) - test_ratings for name in (new, old))
    total = rmse(predictions[new], test_ratings) + rmse(predictions[old], test_ratings)
    return claims.compare(rmse(predictions[new], test_ratings), rmse(predictions[old], test_ratings),
                          se=ev.paired_standard_error(a**2, b**2) / total, higher_is_better=False, kind="error")


def ndcg_change(new: str, old: str) -> claims.Comparison:
    """``new``'s NDCG@10 against ``old``'s, paired over the same users."""
    return claims.compare(np.mean(ndcg_users[new]), np.mean(ndcg_users[old]),
                          se=ev.paired_standard_error(ndcg_users[new], ndcg_users[old]))


def step(new: str, old: str, what: str) -> str:
    r, n = rmse_change(new, old), ndcg_change(new, old)
    return (f"- **{what}** ({old} → {new}): test RMSE {claims.fmt(r.reference, 'error')} → "
            f"{claims.fmt(r.value, 'error')}, {r.word('higher', 'lower', 'about the same')}; NDCG@10 "
            f"{claims.fmt(n.reference)} → {claims.fmt(n.value)}, {n.word('higher', 'lower', 'about the same')}.")


movie_mean_ndcg = comparison.loc["movie's mean rating", "NDCG@10"]
claims.say(
    "One change at a time (a difference counts only beyond two standard errors of the paired differences, over "
    "the test ratings for RMSE and over users for NDCG):\n\n"
    + step("baseline, Adam recipe", "baseline, TFRS recipe", "the recipe") + "\n"
    + step("improved, no cross layer", "baseline, Adam recipe", "side features and biases") + "\n"
    + step("improved (features + cross)", "improved, no cross layer", "the cross layer") + "\n\n"
    + f"Ordering each user's movies by the movie's average training rating gives NDCG@10 "
    f"{claims.fmt(movie_mean_ndcg)}, without knowing anything about the user."
)

# %% [markdown]
# !!! note "On real ratings"
#     The numbers on this page come from the dataset printed at the top; `course bench 04
#     --data PATH` measures the same models on any GroupLens folder. For scale on MovieLens
#     100K, TFRS's DCN tutorial reports a test RMSE of about 0.93. The differences between
#     good rating models are small: before crediting features or a cross layer, compare with
#     lesson 01's matrix factorisation on the same split and with a standard error. Side
#     features and crosses earn their keep where ids say little (new users and movies,
#     richer features than MovieLens has), and in the next sections, where the question
#     changes from "how many stars" to "which movies".
#
# ## 9. Why a better RMSE does not always give a better top 10
#
# RMSE and NDCG measure different things, and a model can win one and lose the other.
# The quickest way to see it: shift every prediction of each user by a constant of their
# own. The order inside each user's list does not change, so NDCG cannot change; RMSE does.

# %%
improved_pred = predictions["improved (features + cross)"]
offsets = test["user_id"].map(
    dict(zip(vocab.users, np.random.default_rng(SEED).normal(0.0, 0.5, len(vocab.users))))
).fillna(0.0).to_numpy()
pd.DataFrame({
    "test RMSE": {"improved model": rmse(improved_pred, test_ratings),
                  "same, each user shifted by a random offset (sd 0.5)": rmse(improved_pred + offsets, test_ratings)},
    "NDCG@10": {"improved model": mean_ndcg(test, improved_pred),
                "same, each user shifted by a random offset (sd 0.5)": mean_ndcg(test, improved_pred + offsets)},
}).round(4)

# %% [markdown]
# The reasons go further than this trick:
#
# - **Much of RMSE is bias.** User and movie biases explain a large share of rating
#   variance (Koren, Bell and Volinsky, 2009). The user bias is worth a lot of RMSE and
#   nothing for the order of one user's list.
# - **RMSE weighs every rating equally**, NDCG only the top. Getting the 2-star movies
#   exactly right lowers RMSE and is invisible in a top 10.
# - **We rank only what users chose to rate.** The held-out ratings are of movies each user
#   picked. A ranker in production orders movies the user has *not* picked, and whether
#   they would pick a movie at all is a question a rating model never learned. Cremonesi,
#   Koren and Turrin (2010) found that models with better RMSE could be worse at top-N
#   recommendation; the next section shows the same effect.
#
# ## 10. Re-ranking retrieval candidates
#
# Now the full funnel for one user: retrieval proposes 100 movies, the ranker orders them,
# and a rule removes movies the user has already rated. Retrieval is the course's id-only
# two-tower model trained with lesson 02's recipe and lesson 03's logQ correction
# (`recsys_course.models.train_retrieval`, the one retrieval recipe every later lesson uses):
# a user tower and a movie tower (one embedding each), trained so that a user's vector
# scores their rated movies above the other movies in the batch, its epoch chosen on a
# validation split of the training ratings. It is trained once per dataset and kept in the
# course's cache, so when lesson 03 has run on the same data it is loaded, not retrained.

# %% tags=["setup"]
def retrieve(
    towers: models.TwoTower, user_ids: Sequence[str], n: int = N_CANDIDATES
) -> dict[str, list[str]]:
    """The ``n`` best-scoring movies of the whole catalogue for each user, best first
    (equal scores in catalogue order).

    Exact (brute-force) search: one matrix product. Lesson 07 replaces it with an index.
    """
    best = np.argsort(-towers.scores(user_ids), axis=1, kind="stable")[:, :n]
    return {user: [str(m) for m in towers.movie_ids[row]] for user, row in zip(user_ids, best)}


def candidate_frame(
    pairs: Sequence[tuple[str, str]], ratings: pd.DataFrame, movies: pd.DataFrame, timestamp: int
) -> pd.DataFrame:
    """Rows shaped like rating rows (without ``user_rating``) for (user_id, movie_id) pairs,
    so that ``to_features`` can turn them into ranker inputs. User columns (demographics) are
    taken from each user's first row in ``ratings``; ``timestamp`` is "now" for every row."""
    user_columns = [c for c in recsys_course.data.USER_COLUMNS if c in ratings.columns]
    users = ratings.drop_duplicates("user_id").set_index("user_id")[user_columns]
    frame = pd.DataFrame(pairs, columns=["user_id", "movie_id"])
    frame = frame.join(users, on="user_id").join(
        movies.set_index("movie_id")[["movie_title", "movie_genres"]], on="movie_id"
    )
    frame["timestamp"] = int(timestamp)
    return frame


# %%
started = time.perf_counter()
recsys_course.seed_everything(SEED)
retrieval = models.train_retrieval(train, data.movies, seed=SEED)
test_users = sorted(set(test["user_id"]) & set(vocab.users))
candidates = retrieve(retrieval, test_users)
print(f"retrieval {'loaded from the cache' if retrieval.from_cache else 'trained'} (epoch {retrieval.best_epoch} "
      f"kept on validation) and queried for {len(test_users)} users in {claims.fmt(time.perf_counter() - started, 'seconds')}")

# %% [markdown]
# ### Exercise 4.5 · Re-rank the candidates
#
# Implement `rerank(candidates, score_fn, k, exclude)`. `score_fn` is how the ranker is
# plugged in: it receives a list of movie ids and returns one score per id. A Keras model's
# `predict` returns shape (n, 1), not (n,), so be ready for both.

# %% tags=["exercise"] exercise="4.5"
def rerank(
    candidates: Sequence[str],
    score_fn: Callable[[list[str]], np.ndarray],
    k: int = 10,
    exclude: Collection[str] = (),
) -> list[str]:
    """Order retrieval candidates by the ranking model's scores.

    Args:
        candidates: movie ids from retrieval, best first, without duplicates.
        score_fn: maps a list of m movie ids to their scores for this user, an array of
            shape (m,) or (m, 1) (what ``model.predict`` returns); higher is better.
        k: how many ids to return.
        exclude: ids that must never be returned (for example movies already rated).

    Returns:
        A list of at most ``k`` ids from ``candidates`` that are not in ``exclude``, by
        score, highest first; equal scores keep their retrieval order.
    """
    # BEGIN SOLUTION
    banned = set(exclude)
    kept = [movie for movie in candidates if movie not in banned]
    if not kept:
        return []
    scores = np.asarray(score_fn(kept), dtype=float).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:k]
    return [kept[i] for i in order]
    # END SOLUTION


# %% [markdown]
# One user, end to end. The score function builds the ranker's input for (user, movie)
# pairs at "now" (the last training timestamp) and calls the improved model.

# %%
now = int(train["timestamp"].max())
seen = train.groupby("user_id")["movie_id"].agg(set).to_dict()
titles = data.movies.set_index("movie_id")["movie_title"]
activity = train.groupby("user_id").size()[test_users].sort_values(kind="stable")
user = activity.index[len(activity) // 2]  # a user with a median number of ratings


def score_for(user_id: str) -> Callable[[list[str]], np.ndarray]:
    def score_fn(movie_ids: list[str]) -> np.ndarray:
        frame = candidate_frame([(user_id, m) for m in movie_ids], train, data.movies, now)
        return improved.predict(to_features(frame, vocab), batch_size=4096, verbose=0)

    return score_fn


final = rerank(candidates[user], score_for(user), k=K, exclude=seen.get(user, set()))
already = sum(m in seen.get(user, set()) for m in candidates[user])
retrieval_top = [m for m in candidates[user] if m not in seen.get(user, set())][:K]
held_out = test[test["user_id"] == user].set_index("movie_id")["user_rating"]
predicted = score_for(user)(final).reshape(-1)
print(f"user {user}: {len(seen.get(user, ()))} training ratings; {already} of the "
      f"{len(candidates[user])} candidates were already rated and are dropped")
pd.DataFrame({
    "retrieval order": [titles[m] for m in retrieval_top],
    "re-ranked by the improved model": [titles[m] for m in final],
    "predicted stars": predicted.round(2),
    "held-out rating": [held_out.get(m, float("nan")) for m in final],
}, index=pd.RangeIndex(1, len(final) + 1, name="rank"))

# %% [markdown]
# Does re-ranking help? We can check on all test users: for each, re-rank their candidates
# several ways and count how many of the final 10 they rated in the test period
# (precision@10), and how many they rated 4 stars or more ("liked"). Scoring every
# (user, candidate) pair once, in one batch, is much faster than one `predict` per user;
# `rerank` does not care where the scores come from.

# %% tags=["setup"]
def precision_by_user(
    lists: dict[str, list[str]], relevant: dict[str, set[str]], k: int = K
) -> np.ndarray:
    """Each user's |first k of their list ∩ their relevant set| / k, users in the order of
    ``lists``, measured by ``recsys_course.evaluation`` (``nan`` for a user with no relevant
    movie, whom the mean leaves out)."""
    users = list(lists)
    items = sorted({m for items in lists.values() for m in items} | {m for u in users for m in relevant.get(u, ())})
    column = {item: j for j, item in enumerate(items)}
    hits = np.zeros((len(users), len(items)), dtype=bool)
    for row, user in enumerate(users):
        hits[row, [column[m] for m in relevant.get(user, ())]] = True
    return ev.precision_by_user(ev.ranked_matrix(lists, users, items, k), hits, k)


def precision_at_k(
    lists: dict[str, list[str]], relevant: dict[str, set[str]], k: int = K
) -> float:
    """Mean of ``precision_by_user`` over the users with at least one relevant movie."""
    return float(np.nanmean(precision_by_user(lists, relevant, k)))


def rerank_all(
    candidates: dict[str, list[str]],
    pair_scores: pd.Series,
    seen: dict[str, set[str]],
    k: int = K,
) -> dict[str, list[str]]:
    """``rerank`` every user's candidates with scores looked up in ``pair_scores``, a Series
    indexed by (user_id, movie_id), excluding each user's ``seen`` movies."""
    lists = {}
    for user_id, items in candidates.items():
        user_scores = pair_scores.loc[user_id]
        lists[user_id] = rerank(
            items, lambda ids, user_scores=user_scores: user_scores.loc[ids].to_numpy(), k=k, exclude=seen.get(user_id, set())
        )
    return lists


def pair_scores_for(
    model: tf.keras.Model,
    candidates: dict[str, list[str]],
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    vocab: Vocabulary,
    timestamp: int,
) -> pd.Series:
    """Predicted ratings of every (user, candidate) pair, indexed by (user_id, movie_id)."""
    pairs = [(u, m) for u, items in candidates.items() for m in items]
    frame = candidate_frame(pairs, ratings, movies, timestamp)
    scores = predict_ratings(model, to_features(frame, vocab))
    return pd.Series(scores, index=pd.MultiIndex.from_tuples(pairs, names=["user_id", "movie_id"]))


def rank_blend(candidates: dict[str, list[str]], pair_scores: pd.Series) -> pd.Series:
    """Minus the sum of each candidate's retrieval rank and its rank by ``pair_scores``
    (higher is better): a simple rank fusion of the two stages."""
    blended = {}
    for user_id, items in candidates.items():
        rating_rank = pd.Series(pair_scores.loc[user_id].loc[items].to_numpy()).rank(
            ascending=False, method="first"
        )
        for position, (movie, by_rating) in enumerate(zip(items, rating_rank)):
            blended[(user_id, movie)] = -(position + 1 + by_rating)
    return pd.Series(blended)


# %%
started = time.perf_counter()
in_test = test.groupby("user_id")["movie_id"].agg(set).to_dict()
liked = test[test["user_rating"] >= 4].groupby("user_id")["movie_id"].agg(set).to_dict()
rating_scores = pair_scores_for(improved, candidates, train, data.movies, vocab, now)
popularity = train["movie_id"].value_counts()
strategies = {
    "retrieval order": pd.Series(
        {(u, m): -float(i) for u, items in candidates.items() for i, m in enumerate(items)}
    ),
    "popularity": pd.Series(
        {(u, m): float(popularity.get(m, 0)) for u, items in candidates.items() for m in items}
    ),
    "improved ranker": rating_scores,
    "blend: retrieval rank + ranker rank": rank_blend(candidates, rating_scores),
}
per_user = {}
for name, scores in strategies.items():
    lists = rerank_all(candidates, scores, seen)
    per_user[name] = {"precision@10 (rated)": precision_by_user(lists, in_test),
                      "precision@10 (liked, 4+ stars)": precision_by_user(lists, liked)}
print(f"re-ranked {len(candidates)} users four ways in {claims.fmt(time.perf_counter() - started, 'seconds')}")
table = pd.DataFrame({name: {column: np.nanmean(values) for column, values in columns.items()}
                      for name, columns in per_user.items()}).T
table.round(4)

# %%
rated_col, liked_col = "precision@10 (rated)", "precision@10 (liked, 4+ stars)"


def precision_change(new: str, old: str, column: str) -> claims.Comparison:
    """``new``'s precision against ``old``'s in ``column``, paired over the same users."""
    a, b = per_user[new][column], per_user[old][column]
    return claims.compare(np.nanmean(a), np.nanmean(b), se=ev.paired_standard_error(a, b))


rated_change = precision_change("improved ranker", "retrieval order", rated_col)
liked_change = precision_change("improved ranker", "retrieval order", liked_col)
blend_change = precision_change("blend: retrieval rank + ranker rank", "retrieval order", liked_col)
claims.say(
    f"Re-ranked by the rating model alone, precision@10 on rated movies is {claims.fmt(rated_change.value)}, "
    f"{rated_change.word()} the retrieval order's {claims.fmt(rated_change.reference)} ({rated_change.change()}); "
    f"on liked movies {claims.fmt(liked_change.value)}, {liked_change.word()} "
    f"{claims.fmt(liked_change.reference)} ({liked_change.change()}). The blend of the two ranks gives "
    f"{claims.fmt(blend_change.value)} on liked movies, {blend_change.word()} the retrieval order. (A difference "
    "counts only beyond two standard errors of the paired per-user differences.)"
)

# %% [markdown]
# Popularity tends to be a strong competitor on "rated", because people rate popular
# movies. When the rating model does worse than the retrieval order, that is section 9 at
# full scale. Retrieval was trained on *what users chose to rate*, so it predicts what they
# will pick; the ranker was trained on *how much they liked* what they picked, so it
# prefers well-loved movies whether or not this user would ever choose them. A page should
# show movies the user will pick **and** enjoy, which is why production rankers are
# trained on engagement signals (clicks, watch time) and often on several objectives at
# once; TFRS's multitask tutorial trains retrieval and rating jointly for this reason. A
# blend of the two stages' ranks is the cheapest form of that idea.
#
# ## Summary
#
# - Ranking scores only a few hundred candidates, so it can look at the (user, movie,
#   context) pair jointly with rich features; retrieval cannot.
# - **Pointwise** losses fit each rating, **pairwise** losses the order of pairs,
#   **listwise** losses the whole list; TFRS's `Ranking` task takes any Keras loss.
# - A TFRS model is a Keras model whose `compute_loss` calls a task; the task also keeps
#   the metrics that `fit` reports.
# - **RMSE** measures star errors over all ratings; **NDCG@k** measures the order of each
#   user's top k, rewarding the best movies at the top positions, and ignores per-user
#   shifts.
# - **Cross layers** ($x_{l+1} = x_0 \odot (x_l W + b) + x_l$, `tfrs.layers.dcn.Cross`) build
#   feature products that MLPs learn poorly. Credit each part of a better model with its own
#   ablation: the recipe, the features and biases, and the cross layer were measured one at
#   a time here, with a standard error.
# - A better rating model is not automatically a better top 10: what users pick and how
#   much they like it are different targets. Measure the whole funnel.
#
# ## Further reading
#
# - TensorFlow Recommenders tutorials: basic ranking, Deep & Cross Network, listwise
#   ranking and multitask recommenders. <https://www.tensorflow.org/recommenders/examples/basic_ranking>
# - Ruoxi Wang, Bin Fu, Gang Fu, Mingliang Wang. *Deep & Cross Network for Ad Click
#   Predictions.* ADKDD 2017. <https://arxiv.org/abs/1708.05123>
# - Ruoxi Wang et al. *DCN V2: Improved Deep & Cross Network and Practical Lessons for
#   Web-scale Learning to Rank Systems.* WWW 2021. <https://arxiv.org/abs/2008.13535>
# - Alex Beutel et al. *Latent Cross: Making Use of Context in Recurrent Recommender
#   Systems.* WSDM 2018. <https://doi.org/10.1145/3159652.3159727>
# - Steffen Rendle, Walid Krichene, Li Zhang, John Anderson. *Neural Collaborative
#   Filtering vs. Matrix Factorization Revisited.* RecSys 2020.
#   <https://arxiv.org/abs/2005.09683>
# - Kalervo Järvelin, Jaana Kekäläinen. *Cumulated Gain-Based Evaluation of IR
#   Techniques.* ACM TOIS 20(4), 2002. <https://doi.org/10.1145/582415.582418>
# - Chris Burges et al. *Learning to Rank using Gradient Descent.* ICML 2005; Chris
#   Burges. *From RankNet to LambdaRank to LambdaMART: An Overview.* Microsoft Research
#   technical report MSR-TR-2010-82, 2010.
# - Tie-Yan Liu. *Learning to Rank for Information Retrieval.* Foundations and Trends in
#   Information Retrieval 3(3), 2009.
# - Paolo Cremonesi, Yehuda Koren, Roberto Turrin. *Performance of Recommender Algorithms
#   on Top-N Recommendation Tasks.* RecSys 2010. <https://doi.org/10.1145/1864708.1864721>
# - Yehuda Koren, Robert Bell, Chris Volinsky. *Matrix Factorization Techniques for
#   Recommender Systems.* IEEE Computer 42(8), 2009.
# - Xinyang Yi et al. *Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
#   Recommendations.* RecSys 2019. <https://doi.org/10.1145/3298689.3346996>
#
# Next: lesson 07 replaces the brute-force retrieval of section 10 with an approximate
# nearest-neighbour index.
