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
# # Lesson 06 · Multitask, implicit ranking, the funnel and diversity
#
# **You will learn to**
#
# - tell explicit from implicit feedback, and explain why a model of *how many stars* is a
#   poor guide to *what to watch next*;
# - train one TensorFlow Recommenders (TFRS) model on two tasks at once (retrieval and
#   rating) with shared embeddings, and read the loss weights as a knob;
# - train an implicit-feedback ranker with a pairwise BPR loss on rated vs sampled unrated
#   movies;
# - build a **funnel**: candidates from several sources (the two-tower model, EASE, item-kNN,
#   popularity) merged into one list, and a deep & cross ranker trained with a **listwise**
#   loss on which candidates users went on to rate, with labels from **cross-fitting**,
#   compared like for like with the strongest single model;
# - re-rank the funnel's list for diversity with maximal marginal relevance (MMR), and
#   measure what it costs in precision and buys in intra-list diversity, coverage and
#   novelty.
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and on its card on the site's home page, with the data it was measured on.
#
# **How to work through it:** run the cells top to bottom. The five exercises (6.1 to 6.5)
# are a method or function whose body raises `NotImplementedError`; implement it, then run
# `course check 6.1` (or `course check 06`). Lesson 04 (ranking) is the starting point: it
# ended with a puzzle, a rating model that predicts stars well can still *lower*
# precision@10 when it re-ranks the retrieval candidates. This lesson explains why, tries
# two remedies, then builds the funnel that production systems use.

# %% tags=["setup"]
# recsys_course first: it sets TF_USE_LEGACY_KERAS=1, so that tf.keras is Keras 2 (tf-keras),
# which TensorFlow Recommenders needs. ("isort: split" keeps import sorters from moving it.)
import recsys_course

# isort: split
import time
from collections.abc import Callable
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_course import evaluation, models
from recsys_course.claims import compare, fmt, pick, say, signed
from recsys_course.data import split_folds
from recsys_course import baselines
from recsys_course.models import id_tower
from recsys_course.models import funnel as fn

SEED = recsys_course.seed_everything(42)
K = 10  # the cutoff of every top-k metric in this lesson
N_CANDIDATES = 100  # how many movies each candidate source proposes per user
LIKED = 4.0  # a held-out rating of at least this many stars counts as "liked"
VALIDATION_FRACTION = 0.1  # of the training ratings, held out for every choice
EMBEDDING_DIM = 32
EPOCHS = 5  # of the multitask and implicit rankers
RETRIEVAL_MAX_EPOCHS = 10  # the retrieval stage's epochs are chosen on validation, up to this
RETRIEVAL_PATIENCE = 2  # stop after this many epochs without a better validation recall
# (rating weight, retrieval weight) pairs tried for the multitask model; (1, 0) is a pure
# rating model, (0, 1) a pure retrieval model.
TASK_WEIGHTS = ((1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
EASE_L2 = (100.0, 500.0, 2000.0)  # EASE's ridge penalty, chosen on validation
N_FOLDS = 5  # the funnel ranker's labelled lists come from this many folds of the training split
RANKER_MAX_EPOCHS = 12  # the funnel ranker's epochs are chosen on validation, up to this
RANKER_MEMBERS = 3  # the funnel's ranker averages this many rankers trained from different seeds
MMR_LAMBDAS = (1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3)
MAX_PRECISION_LOSS = 0.05  # MMR may cost at most this share of precision@10 on validation
COST_SE = 1.0  # ... counting the cost as this many standard errors above its validation estimate

# %% [markdown]
# ## 1. Why a rating model is a poor ranker for "what to watch next"
#
# A recommender can learn from two kinds of feedback:
#
# | | **explicit** | **implicit** |
# |---|---|---|
# | what it is | the user *says* how much they liked it: stars, thumbs | the user *does* something: clicks, watches, buys, rates at all |
# | how much of it | little: most people never rate | plenty: every visit leaves traces |
# | what it tells | how much a user liked what they *chose* | what a user *chooses*; not liking is only implied by absence |
# | missing data | not at random: people rate what they picked | absence mixes "did not like" with "never saw" |
#
# MovieLens holds explicit ratings, but the *fact* that a user rated a movie is implicit
# feedback too: they watched it. A page of recommendations is judged by whether the user
# picks something, so the target is implicit, and a rating model answers a different
# question. Trained on the ratings users gave to movies they *chose*, it never learns what
# they would not choose: a well-loved classic outside a user's taste gets a high predicted
# rating although that user would never watch it. Marlin and Zemel (2009) showed that
# ratings are missing not at random, and Cremonesi, Koren and Turrin (2010) that models
# tuned for rating error are weak at top-N recommendation.
#
# Lesson 04 (section 2) sorted training objectives into **pointwise** (one example at a
# time), **pairwise** (two movies of one user) and **listwise** (a user's whole list). This
# lesson uses all three: the rating task is pointwise, BPR (section 4) is pairwise, and the
# funnel's ranker (section 5) is trained with a softmax over each user's candidate list,
# listwise. The retrieval model of lesson 02 is listwise on implicit data too: its in-batch
# softmax asks "which of these movies did the user pick?". That is why its order is a hard
# baseline for a rating model. The lesson goes in four steps:
#
# 1. **multitask**: train the rating model *and* the retrieval model at once, sharing the
#    embeddings, so the rating head sees what users pick;
# 2. **implicit**: drop the stars and train a ranker on "rated beats not rated", pairwise;
# 3. **the funnel**: let several models propose candidates and train a ranker that weighs
#    all their opinions, on what users rated next;
# 4. **diverse**: once the order is good, trade a little precision for lists that are not
#    ten variations of one movie.

# %% [markdown]
# ## 2. Data, split and the retrieval stage
#
# The split is lesson 04's: a seeded random 80/20 split into train and test, and a tenth of
# train held out again for validation. Every model below is trained on the *fit* part;
# every choice (loss weights and scoring head, EASE's penalty, the funnel ranker's
# architecture and epochs, MMR's settings) is made on validation; then every model is
# trained again on the whole training split, and the test split is used once, at the end.
# A random split lets models peek at the future (lesson 00), so compare models with each
# other rather than reading the absolute numbers as production numbers.

# %%
data = recsys_course.load_movielens()
print("Dataset:", data.summary())
train, test = recsys_course.split_ratings(data.ratings, test_fraction=0.2, seed=SEED)
fit, valid = recsys_course.split_ratings(train, test_fraction=VALIDATION_FRACTION, seed=SEED)
print(f"{len(fit):,} ratings to fit, {len(valid):,} to validate, {len(test):,} to test")


# %% [markdown]
# Everything is evaluated as matrices over users × the whole catalogue, with the course's
# one evaluation module (`recsys_course.evaluation`): a relevance matrix per target (rated
# at all; liked, 4+ stars; graded gains $2^r - 1$ for NDCG) and a boolean matrix of the
# movies to exclude, the ones the user already rated.

# %% tags=["setup"]
class Stage(NamedTuple):
    """One evaluation stage: who is evaluated, what they already rated, what they rate next.

    ``users`` str [n_users]; ``movies`` str [n_items], the sorted catalogue. ``seen`` bool
    [n_users, n_items]: ratings the models were trained on or that came before this stage
    (never recommended). ``rated``, ``liked`` bool and ``gains`` float (2**rating - 1)
    [n_users, n_items]: the held-out ratings of this stage.
    """

    users: np.ndarray
    movies: np.ndarray
    seen: np.ndarray
    rated: np.ndarray
    liked: np.ndarray
    gains: np.ndarray


def make_stage(before: pd.DataFrame, held_out: pd.DataFrame, movies: np.ndarray) -> Stage:
    """A Stage for the users of ``held_out`` who also appear in ``before``."""
    users = np.array(sorted(set(held_out["user_id"]) & set(before["user_id"])), dtype=str)
    stars = evaluation.interaction_matrix(held_out, users, movies, value_col="user_rating")
    return Stage(
        users=users,
        movies=movies,
        seen=evaluation.interaction_matrix(before, users, movies),
        rated=stars > 0,
        liked=stars >= LIKED,
        gains=evaluation.rating_gains(stars),
    )


def candidates_for(retrieval: models.TwoTower, stage: Stage,
                   n: int = N_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``n`` best unseen movies by the retrieval model: (candidates int [n_users,
    n] item indices, best first; their retrieval scores float [n_users, n])."""
    users = retrieval.user_model(tf.constant(stage.users)).numpy()
    scores = users @ retrieval.movie_model(tf.constant(stage.movies)).numpy().T
    candidates = evaluation.top_k(scores, n, exclude=stage.seen)
    return candidates, np.take_along_axis(scores, np.maximum(candidates, 0), axis=1)


def train_retrieval(frame: pd.DataFrame, movies: pd.DataFrame, epochs: int) -> models.TwoTower:
    """The course's two-tower retrieval model (``recsys_course.models``) with the popularity
    (logQ) correction, trained on ``frame`` (Adagrad 0.1, batches of 1024, seeded)."""
    return models.train_two_tower(frame, movies, embedding_dim=EMBEDDING_DIM, epochs=epochs,
                                  batch_size=1024, seed=SEED, correction=True)


def retrieval_on_validation(fit: pd.DataFrame, movies: pd.DataFrame, stage: Stage,
                            max_epochs: int = RETRIEVAL_MAX_EPOCHS,
                            patience: int = RETRIEVAL_PATIENCE) -> tuple[models.TwoTower, pd.Series]:
    """Train ``train_retrieval``'s model on ``fit`` one epoch at a time and measure the
    validation recall@N_CANDIDATES of its candidates after each; stop after ``patience``
    epochs without improvement. Returns the model with the best epoch's weights and the
    recall per epoch (index: epoch, from 1)."""
    retrieval = train_retrieval(fit, movies, epochs=1)
    pairs = models.features.pair_features(fit, probability=models.candidate_probability(fit))
    batches = tf.data.Dataset.from_tensor_slices(pairs).shuffle(
        len(fit), seed=SEED, reshuffle_each_iteration=True).batch(1024)
    recall, best_weights = {}, None
    for epoch in range(1, max_epochs + 1):
        if epoch > 1:
            retrieval.model.fit(batches, epochs=1, verbose=0)
        recall[epoch] = evaluation.recall_at_k(candidates_for(retrieval, stage)[0], stage.rated, N_CANDIDATES)
        best = max(recall, key=recall.get)
        if best == epoch:
            best_weights = retrieval.model.get_weights()
        elif epoch - best >= patience:
            break
    retrieval.model.set_weights(best_weights)
    return retrieval, pd.Series(recall, name=f"validation recall@{N_CANDIDATES}").rename_axis("epoch")


def order_by(candidates: np.ndarray, scores: np.ndarray, k: int = K) -> np.ndarray:
    """The top ``k`` of each user's candidates by ``scores`` [n_users, n] (higher first; ties
    keep the retrieval order) as item indices [n_users, k]."""
    scores = np.where(candidates >= 0, scores, -np.inf)
    best = evaluation.top_k(scores, k)
    return np.take_along_axis(candidates, best, axis=1)


def measure(ranked: np.ndarray, stage: Stage, genres: np.ndarray, probability: np.ndarray) -> dict:
    """Top-k accuracy and beyond-accuracy metrics of ranked lists, all from the evaluation module."""
    return {
        "precision@10 rated": evaluation.precision_at_k(ranked, stage.rated, K),
        "precision@10 liked": evaluation.precision_at_k(ranked, stage.liked, K),
        "ndcg@10": evaluation.ndcg_at_k(ranked, stage.gains, K),
        "diversity@10": evaluation.intra_list_diversity_at_k(ranked, genres, K),
        "coverage@10": evaluation.coverage_at_k(ranked, len(stage.movies), K),
        "novelty@10": evaluation.novelty_at_k(ranked, probability, K),
    }


def candidate_ranks(scores: np.ndarray) -> np.ndarray:
    """int [n_users, n]: each candidate's rank under ``scores`` [n_users, n] (0 = best; ties
    keep the candidate order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.argsort(order, axis=1, kind="stable")


def rank_blend(first: np.ndarray, second: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Minus the weighted sum ``weight * rank under first + (1 - weight) * rank under second``
    of each candidate [n_users, n]. Higher is better; ranks put two models with unrelated
    score scales on one footing."""
    return -(weight * candidate_ranks(first) + (1.0 - weight) * candidate_ranks(second)).astype(float)


# %% [markdown]
# The retrieval stage is the course's two-tower model (`recsys_course.models`, the model of
# lesson 02) with the **popularity correction** of Yi et al. (2019): with in-batch negatives a
# popular movie shows up as a negative far more often than a rare one, so each logit is
# lowered by $\log q$, $q$ the movie's share of the training rows, which stops the model
# from learning mostly "popular movies are negatives". It hands each user their 100 best
# unseen movies; every re-ranker below orders those same 100, so the number of epochs is
# chosen for what this stage must do: the validation **recall@100** of its candidates.

# %%
started = time.perf_counter()
movie_ids = np.unique(data.movies["movie_id"].astype(str))
val_stage = make_stage(fit, valid, movie_ids)
retrieval, retrieval_curve = retrieval_on_validation(fit, data.movies, val_stage)
retrieval_epochs = int(retrieval_curve.idxmax())
assert (retrieval.movie_ids == movie_ids).all(), "the catalogue must be the sorted movie ids"
genres = fn.genre_matrix(data.movies, movie_ids)
probability = evaluation.item_probability(  # popularity among the fit users, for novelty
    evaluation.interaction_matrix(fit, np.unique(fit["user_id"].astype(str)), movie_ids))
val_candidates, val_retrieval_scores = candidates_for(retrieval, val_stage)
print(f"retrieval trained and queried in {time.perf_counter() - started:.1f} s; "
      f"{len(val_stage.users)} validation users")
retrieval_curve.to_frame().T.round(4)

# %%
say(f"Validation recall@{N_CANDIDATES} peaks after **{retrieval_epochs} epochs** "
    f"({fmt(retrieval_curve.max())}): that many epochs train the retrieval stage from now on.")

# %% [markdown]
# ## 3. One model, two tasks
#
# TFRS's multitask tutorial trains one model on two tasks that share the user and movie
# embeddings:
#
# - a **retrieval task** (`tfrs.tasks.Retrieval`): the dot product of the user and movie
#   vectors, with the in-batch softmax of lesson 02 (listwise, implicit: *which movie did
#   the user pick?*);
# - a **rating task** (`tfrs.tasks.Ranking`): a small network on the two concatenated
#   vectors predicts the stars (pointwise, explicit: *how much did they like it?*).
#
# The model minimises a weighted sum of the two losses,
# $L = w_\text{rating} L_\text{rating} + w_\text{retrieval} L_\text{retrieval}$. The weights
# are a knob: (1, 0) is a pure rating model, (0, 1) a pure retrieval model, and in between
# each task acts as a regulariser for the other. Caruana (1997) called this an *inductive
# bias*: a related task tells the shared layers which structure is worth learning. The
# rating task alone learns from a few ratings per user; the retrieval task adds the
# information of *which* movies were rated.
#
# Two losses can only be weighed against each other when they are on comparable scales.
# TFRS's retrieval loss *sums* over the batch by default, which would make it hundreds of
# times larger than the mean squared error of the rating task; here both are means per
# example, so a weight of 1 means "as important as the other task". Mean losses have small
# gradients, so we train with Adam, whose step size does not depend on the gradient's
# scale; Adagrad, the optimizer of the TFRS tutorials, starts every accumulator at 0.1 and
# would turn those small gradients into tiny steps.
#
# ### Exercise 6.1 · The multitask `compute_loss`
#
# Complete `MultitaskModel.compute_loss`: embed the batch's users and movies, predict the
# ratings from the concatenated embeddings, compute both task losses, and return their
# weighted sum.

# %% tags=["exercise"] exercise="6.1"
class MultitaskModel(tfrs.models.Model):
    """Retrieval and rating trained jointly on shared user and movie embeddings.

    ``user_model`` and ``movie_model`` map a batch of n ids to float32 vectors (n, d);
    ``rating_model`` maps their concatenation (n, 2d) to predicted ratings (n, 1). The
    loss is ``rating_weight * rating loss + retrieval_weight * retrieval loss``, both means
    over the batch.
    """

    def __init__(self, user_model: tf.keras.Model, movie_model: tf.keras.Model,
                 rating_model: tf.keras.Model, rating_weight: float = 1.0,
                 retrieval_weight: float = 1.0) -> None:
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        self.rating_model = rating_model
        self.rating_weight = float(rating_weight)
        self.retrieval_weight = float(retrieval_weight)
        self.rating_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(),
            metrics=[tf.keras.metrics.RootMeanSquaredError()],
        )
        # A mean over the batch instead of TFRS's default sum, so both losses share a scale.
        self.retrieval_task = tfrs.tasks.Retrieval(loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE))

    def predict_rating(self, user_ids, movie_ids) -> tf.Tensor:
        """Predicted ratings (n, 1) for n (user, movie) pairs."""
        both = tf.concat([self.user_model(user_ids), self.movie_model(movie_ids)], axis=1)
        return self.rating_model(both)

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The weighted sum of the two task losses for one batch.

        Args:
            features: ``user_id`` and ``movie_id`` (n,) (whatever the towers accept) and the
                label ``user_rating`` (n,) float32.
            training: True inside ``fit``.

        Returns:
            A scalar: ``rating_weight`` times the mean squared rating error (computed by
            ``self.rating_task``, so its RMSE metric is updated) plus ``retrieval_weight``
            times the in-batch softmax loss of ``self.retrieval_task`` on the user and movie
            embeddings (row i of the users matches row i of the movies).
        """
        raise NotImplementedError(
            "Exercise 6.1 (The multitask model's compute_loss): not solved yet. Stuck? Run: course hint 6.1"
        )


# %% [markdown]
# The towers are the id towers of `recsys_course.models` (a `StringLookup` and an
# `Embedding`); the rating head is a small multilayer perceptron, as in TFRS's tutorial.

# %% tags=["setup"]
def build_multitask(movie_ids: np.ndarray, user_ids: np.ndarray, rating_weight: float,
                    retrieval_weight: float, dim: int = EMBEDDING_DIM) -> MultitaskModel:
    """A MultitaskModel with id towers and a (64, 1) rating head, seeded."""
    tf.keras.utils.set_random_seed(SEED)
    head = tf.keras.Sequential([tf.keras.layers.Dense(64, activation="relu"), tf.keras.layers.Dense(1)])
    return MultitaskModel(id_tower(user_ids, dim, "user_model"), id_tower(movie_ids, dim, "movie_model"),
                          head, rating_weight, retrieval_weight)


def train_multitask(fit: pd.DataFrame, movie_ids: np.ndarray, rating_weight: float,
                    retrieval_weight: float, epochs: int = EPOCHS) -> MultitaskModel:
    """Fit a MultitaskModel on the rating rows of ``fit`` (Adam 0.01, batches of 1024)."""
    users = np.unique(fit["user_id"].astype(str))
    model = build_multitask(movie_ids, users, rating_weight, retrieval_weight)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.01))
    features = {"user_id": fit["user_id"].astype(str).to_numpy(),
                "movie_id": fit["movie_id"].astype(str).to_numpy(),
                "user_rating": fit["user_rating"].to_numpy(np.float32)}
    batches = tf.data.Dataset.from_tensor_slices(features).shuffle(
        len(fit), seed=SEED, reshuffle_each_iteration=True).batch(1024)
    model.fit(batches, epochs=epochs, verbose=0)
    return model


def rating_scores(model: MultitaskModel, stage: Stage, candidates: np.ndarray) -> np.ndarray:
    """The rating head's predictions for every (user, candidate) pair, [n_users, n]."""
    users = np.repeat(stage.users, candidates.shape[1])
    movies = stage.movies[np.maximum(candidates, 0).reshape(-1)]
    predicted = model.predict_rating(tf.constant(users), tf.constant(movies)).numpy()
    return predicted.reshape(candidates.shape)


def rmse_on(model: MultitaskModel, frame: pd.DataFrame) -> float:
    """Root mean squared error of the rating head on the ratings of ``frame``."""
    predicted = model.predict_rating(tf.constant(frame["user_id"].astype(str).to_numpy()),
                                     tf.constant(frame["movie_id"].astype(str).to_numpy())).numpy()
    return float(np.sqrt(np.mean((predicted.reshape(-1) - frame["user_rating"].to_numpy()) ** 2)))


def own_retrieval_ranked(model: MultitaskModel, stage: Stage) -> np.ndarray:
    """The multitask model used as a retriever: top K of the whole catalogue by dot product."""
    users = model.user_model(tf.constant(stage.users)).numpy()
    movies = model.movie_model(tf.constant(stage.movies)).numpy()
    return evaluation.top_k(users @ movies.T, K, exclude=stage.seen)


HEADS = ("rating head", "retrieval head", "blend of both heads")


def usable_heads(rating_weight: float, retrieval_weight: float) -> tuple[str, ...]:
    """The heads a model trained with these weights can score with: a head whose task has
    weight 0 was never trained."""
    return tuple(head for head, used in zip(HEADS, (rating_weight > 0, retrieval_weight > 0,
                                                     rating_weight > 0 and retrieval_weight > 0)) if used)


def multitask_scores(model: MultitaskModel, stage: Stage, candidates: np.ndarray, head: str) -> np.ndarray:
    """Scores [n_users, n] of the candidates by one of ``HEADS``: the predicted rating, the
    retrieval dot product of the shared towers, or the rank blend of the two."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    users = model.user_model(tf.constant(stage.users)).numpy()
    movies = model.movie_model(tf.constant(stage.movies)).numpy()[np.maximum(candidates, 0)]
    by_retrieval = np.einsum("ud,und->un", users, movies)
    if head == "retrieval head":
        return by_retrieval
    by_rating = rating_scores(model, stage, candidates)
    return by_rating if head == "rating head" else rank_blend(by_retrieval, by_rating)


# %% [markdown]
# The sweep trains one model per pair of weights and measures it on **both tasks** on the
# validation split: the rating task by RMSE, the retrieval task by precision@10 of the model's
# own dot-product retrieval over the whole catalogue. What we care about here is the
# precision@10 of the retrieval candidates *re-ranked* by the model, and a multitask model
# can re-rank in three ways: by its rating head, by its retrieval head (the dot product of the
# shared towers), or by the rank blend of the two. All three are measured (a head whose task
# had weight 0 was never trained and is left out).

# %%
started = time.perf_counter()
sweep, multitask_models = {}, {}
for weights in TASK_WEIGHTS:
    model = multitask_models[weights] = train_multitask(fit, movie_ids, *weights)
    row = {"validation RMSE": rmse_on(model, valid) if weights[0] > 0 else np.nan,
           "own retrieval precision@10": evaluation.precision_at_k(
               own_retrieval_ranked(model, val_stage), val_stage.rated, K)}
    for head in HEADS:
        reranked = order_by(val_candidates, multitask_scores(model, val_stage, val_candidates, head))
        row[f"re-ranked by {head}"] = (evaluation.precision_at_k(reranked, val_stage.rated, K)
                                       if head in usable_heads(*weights) else np.nan)
    sweep[f"{weights[0]:g} / {weights[1]:g}"] = row
sweep = pd.DataFrame(sweep).T.rename_axis("rating / retrieval weight")
print(f"{len(TASK_WEIGHTS)} multitask models trained in {time.perf_counter() - started:.1f} s")
sweep.round(4)

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for head in HEADS:
    ax.plot(range(len(sweep)), sweep[f"re-ranked by {head}"], "o-", label=head)
ax.set_xticks(range(len(sweep)), sweep.index)
ax.set_xlabel("rating / retrieval loss weight")
ax.set_ylabel("re-ranked precision@10 (validation)")
ax.set_title("Loss weights and scoring head")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# We keep the pair (weights, head) with the best re-ranked precision@10 on validation. The
# pure rating model (weights 1 / 0, rating head) stays in the comparison as the **rating
# ranker**: it is lesson 04's approach.

# %%
options = [(w, head) for w in TASK_WEIGHTS for head in usable_heads(*w)]
best_weights, best_head = max(
    options, key=lambda o: sweep.loc[f"{o[0][0]:g} / {o[0][1]:g}", f"re-ranked by {o[1]}"])
pure_lists = order_by(val_candidates, multitask_scores(multitask_models[(1.0, 0.0)], val_stage, val_candidates,
                                                       "rating head"))
chosen_lists = order_by(val_candidates, multitask_scores(multitask_models[best_weights], val_stage, val_candidates,
                                                         best_head))
chosen_vs_pure = compare(
    evaluation.precision_at_k(chosen_lists, val_stage.rated, K), evaluation.precision_at_k(pure_lists, val_stage.rated, K),
    se=evaluation.paired_standard_error(evaluation.precision_by_user(chosen_lists, val_stage.rated, K),
                                        evaluation.precision_by_user(pure_lists, val_stage.rated, K)))
say(
    f"The pure rating model (weights 1 / 0) reaches a validation RMSE of "
    f"{fmt(sweep.loc['1 / 0', 'validation RMSE'], 'error')} and re-ranked precision@10 of "
    f"{fmt(chosen_vs_pure.reference)}. Validation picks weights "
    f"**{fmt(best_weights[0], 'setting')} / {fmt(best_weights[1], 'setting')}** "
    f"scored by the **{best_head}**"
    + pick(best_weights == (1.0, 0.0) and best_head == "rating head",
           ": on this data the retrieval task does not help the rating head.",
           f": re-ranked precision@10 {fmt(chosen_vs_pure.value)}, {chosen_vs_pure.word()} the pure rating model "
           f"(difference {chosen_vs_pure.change()}, {pick(chosen_vs_pure.distinct, 'more', 'less')} than twice its "
           "paired standard error over users)."
           + pick(chosen_vs_pure.better and best_head != "rating head",
                  " The stars alone are not the best guide to the order: the head trained on *which* movies users "
                  "rate adds what the rating head misses.", ""))
)

# %% [markdown]
# ## 4. An implicit-feedback ranker, trained on pairs
#
# Now drop the stars altogether. Every rated movie is a *positive*; the movies a user did
# not rate are a mix of "not interested" and "never came across it", so none of them is a
# sure negative, but a random unrated movie is *probably* less wanted than a rated one.
# Bayesian personalised ranking (BPR, Rendle et al., 2009) turns that into a pairwise loss:
# for a user $u$, a rated movie $i$ and a sampled unrated movie $j$,
#
# $$L = -\log \sigma\big(s(u, i) - s(u, j)\big) = \log\big(1 + e^{-(s(u,i) - s(u,j))}\big),$$
#
# which is small when the rated movie scores clearly above the unrated one and grows
# linearly when the order is wrong. Only the *difference* of scores matters: the model
# learns an order, not a probability or a number of stars.
#
# ### Exercise 6.2 · The BPR pairwise loss
#
# Implement `bpr_loss`: the mean over the batch of $-\log\sigma(s_\text{pos} - s_\text{neg})$.
# Write it so that it stays finite for large score differences: `tf.math.softplus(x)`
# computes $\log(1 + e^{x})$ without overflow, and $-\log\sigma(d) = \operatorname{softplus}(-d)$.

# %% tags=["exercise"] exercise="6.2"
def bpr_loss(positive_scores: tf.Tensor, negative_scores: tf.Tensor) -> tf.Tensor:
    """Bayesian personalised ranking loss of n (positive, negative) pairs.

    Args:
        positive_scores: float (n,), the score of each pair's rated movie.
        negative_scores: float (n,), the score of each pair's sampled unrated movie.

    Returns:
        A scalar tensor: the mean over the n pairs of -log(sigmoid(positive - negative)).
    """
    raise NotImplementedError(
        "Exercise 6.2 (The BPR pairwise loss): not solved yet. Stuck? Run: course hint 6.2"
    )


# %% [markdown]
# ### Exercise 6.3 · Sample unrated movies
#
# Each pair needs an unrated movie, drawn afresh every epoch. Implement `sample_unrated`:
# one random unrated movie per (user, positive) row, uniform among that user's unrated
# movies.

# %% tags=["exercise"] exercise="6.3"
def sample_unrated(rated: np.ndarray, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One negative item per row: an item the row's user has not rated.

    Args:
        rated: bool [n_users, n_items], True where the user rated the item.
        users: int [n] user indices (rows of ``rated``), repeats allowed.
        rng: the random generator to draw from.

    Returns:
        int [n]: entry r is an item with ``rated[users[r], item] == False``, drawn uniformly
        among that user's unrated items, independently for every row.

    Raises:
        ValueError: when a listed user has rated every item (no negative exists).
    """
    raise NotImplementedError(
        "Exercise 6.3 (Sample unrated movies): not solved yet. Stuck? Run: course hint 6.3"
    )


# %% [markdown]
# The ranker scores a (user, movie) pair by the dot product of two towers plus a per-movie
# bias (a movie's general appeal); the towers are id embeddings, as in retrieval. (Deeper
# towers, a hidden layer on top of each embedding, are the next step the TFRS tutorials
# suggest; with only each user's own ratings to learn from they mostly add parameters to
# fit, and Rendle et al., 2020, found a well-tuned dot product hard to beat.)

# %% tags=["setup"]
class ImplicitRanker(tfrs.models.Model):
    """score(u, m) = user_model(u) . movie_model(m) + movie_bias(m), trained with ``bpr_loss``
    on features ``user_id``, ``positive`` and ``negative`` (movie ids), all (n,) strings."""

    def __init__(self, user_ids: np.ndarray, movie_ids: np.ndarray, hidden: tuple[int, ...] = (),
                 dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        tf.keras.utils.set_random_seed(SEED)

        def tower(ids, name):
            layers = [id_tower(ids, dim, name)]
            layers += [tf.keras.layers.Dense(units, activation="relu") for units in hidden]
            layers += [tf.keras.layers.Dense(dim)] if hidden else []
            return tf.keras.Sequential(layers)

        self.user_model = tower(user_ids, "user_model")
        self.movie_model = tower(movie_ids, "movie_model")
        self.movie_bias = id_tower(movie_ids, 1, "movie_bias")

    def score(self, user_ids, movie_ids) -> tf.Tensor:
        """Scores (n,) of n (user, movie) pairs."""
        dot = tf.reduce_sum(self.user_model(user_ids) * self.movie_model(movie_ids), axis=1)
        return dot + tf.reshape(self.movie_bias(movie_ids), (-1,))

    def compute_loss(self, features, training=False) -> tf.Tensor:
        return bpr_loss(self.score(features["user_id"], features["positive"]),
                        self.score(features["user_id"], features["negative"]))


def train_implicit(fit: pd.DataFrame, movie_ids: np.ndarray, hidden: tuple[int, ...] = (),
                   epochs: int = EPOCHS) -> ImplicitRanker:
    """Fit an ImplicitRanker on the (user, rated movie) pairs of ``fit``, with one fresh
    sampled unrated movie per pair and epoch (Adam 0.005, batches of 1024)."""
    users = np.unique(fit["user_id"].astype(str))
    rated = evaluation.interaction_matrix(fit, users, movie_ids)
    user_rows = pd.Index(users).get_indexer(fit["user_id"].astype(str))
    positives = fit["movie_id"].astype(str).to_numpy()
    model = ImplicitRanker(users, movie_ids, hidden)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.005))
    rng = np.random.default_rng(SEED)
    for _ in range(epochs):
        negatives = movie_ids[sample_unrated(rated, user_rows, rng)]
        pairs = tf.data.Dataset.from_tensor_slices(
            {"user_id": users[user_rows], "positive": positives, "negative": negatives})
        model.fit(pairs.shuffle(len(fit), seed=SEED).batch(1024), epochs=1, verbose=0)
    return model


def implicit_scores(model: ImplicitRanker, stage: Stage, candidates: np.ndarray) -> np.ndarray:
    """The ranker's scores for every (user, candidate) pair, [n_users, n]."""
    users = np.repeat(stage.users, candidates.shape[1])
    movies = stage.movies[np.maximum(candidates, 0).reshape(-1)]
    return model.score(tf.constant(users), tf.constant(movies)).numpy().reshape(candidates.shape)


# %%
started = time.perf_counter()
implicit = train_implicit(fit, movie_ids)
val_implicit_lists = order_by(val_candidates, implicit_scores(implicit, val_stage, val_candidates))
val_retrieval_lists = order_by(val_candidates, val_retrieval_scores)
print(f"implicit ranker trained in {time.perf_counter() - started:.1f} s")
pd.DataFrame({name: measure(lists, val_stage, genres, probability) for name, lists in
              {"retrieval order": val_retrieval_lists, "implicit ranker": val_implicit_lists}.items()}).T.round(4)

# %%
implicit_vs_retrieval = compare(
    evaluation.precision_at_k(val_implicit_lists, val_stage.rated, K),
    evaluation.precision_at_k(val_retrieval_lists, val_stage.rated, K),
    se=evaluation.paired_standard_error(evaluation.precision_by_user(val_implicit_lists, val_stage.rated, K),
                                        evaluation.precision_by_user(val_retrieval_lists, val_stage.rated, K)))
say(f"On validation the implicit ranker's order of the retrieval candidates reaches precision@10 "
    f"{fmt(implicit_vs_retrieval.value)}, {implicit_vs_retrieval.word()} the retrieval order's "
    f"{fmt(implicit_vs_retrieval.reference)} (difference {implicit_vs_retrieval.change()}; "
    f"{pick(implicit_vs_retrieval.distinct, 'more', 'less')} than twice its standard error over users). "
    + pick(implicit_vs_retrieval.better, "Trained on what users chose, it improves on the order it re-ranks.",
           "Both models learned from the same signal, which movies users rated, and the retrieval model "
           "already optimises a listwise softmax over it: a second model trained on the same signal has "
           "little to add. The funnel below gives the ranker what the first stage cannot see."))

# %% [markdown]
# ## 5. The funnel: several sources, one ranker
#
# So far every re-ranker ordered the *retrieval model's* 100 candidates, so it could only
# find what that one model proposed, and it knew little the retrieval model did not. Lesson
# 03 met simple item models that are hard to beat: EASE, a closed-form linear model over each
# user's history, rivals much larger neural models on such data (Steck, 2019). Production
# systems do not choose one: several **candidate sources** each propose a few hundred items,
# their lists are merged, and a ranker with richer features orders the union (Covington et
# al., 2016, describe YouTube's; Eksombatchai et al., 2018, Pinterest's). Our sources, each
# proposing its 100 best unseen movies:
#
# | source | score of a movie for a user | knows |
# |---|---|---|
# | two-tower (the retrieval stage above) | dot product of the two vectors | patterns learned from everyone's choices |
# | EASE (Steck, 2019) | the user's history row times a ridge regression of every movie on all others | which movies go together, in closed form |
# | item-kNN | the user's history row times the cosine similarity of movie columns | the same, without the regression |
# | popularity | how many users rated the movie | what everyone watches |
#
# EASE, item-kNN and popularity are lesson 03's baselines; their one home is
# `recsys_course.baselines`. EASE's ridge penalty λ is chosen on validation by the
# precision@10 of its own top 10.

# %% tags=["setup"]
def choose_ease_l2(frame: pd.DataFrame, stage: Stage, grid: tuple[float, ...] = EASE_L2) -> pd.Series:
    """Validation precision@K of EASE's own top K (over the whole catalogue) for each λ of
    ``grid``, EASE fitted on the ratings of ``frame`` (index: λ)."""
    history = evaluation.interaction_matrix(frame, np.unique(frame["user_id"].astype(str)), stage.movies)
    precision = {}
    for l2 in grid:
        scores = stage.seen @ baselines.ease_weights(history, l2)
        precision[l2] = evaluation.precision_at_k(evaluation.top_k(scores, K, exclude=stage.seen), stage.rated, K)
    return pd.Series(precision, name="validation precision@10").rename_axis("λ")


def source_table(lists: dict[str, np.ndarray], union: np.ndarray, stage: Stage) -> pd.DataFrame:
    """Recall of each source's list and of the ``union`` (all [n_users, n] item indices), and
    the precision@K of each source's own top K, on ``stage``."""
    rows = {name: {"candidates per user": float((items >= 0).sum(axis=1).mean()),
                   "recall of the list": evaluation.recall_at_k(items, stage.rated, items.shape[1]),
                   "precision@10 of its top 10": evaluation.precision_at_k(items, stage.rated, K)}
            for name, items in lists.items()}
    rows["union of the four"] = {"candidates per user": float((union >= 0).sum(axis=1).mean()),
                                 "recall of the list": evaluation.recall_at_k(union, stage.rated, union.shape[1]),
                                 "precision@10 of its top 10": np.nan}
    return pd.DataFrame(rows).T


# %%
started = time.perf_counter()
ease_grid = choose_ease_l2(fit, val_stage)
ease_l2 = float(ease_grid.idxmax())
val_sources = fn.build_sources(fit, data.movies, retrieval, ease_l2=ease_l2)
# The funnel's rating feature is the pure rating model of section 3 (weights 1 / 0).
val_funnel = fn.Funnel(fn.FunnelFeatures(val_sources, multitask_models[(1.0, 0.0)], N_CANDIDATES))
val_lists = val_funnel.source_lists(val_stage.users)
val_union = fn.union_lists([val_lists[name] for name in fn.SOURCES])
print(f"EASE's λ by validation precision@10: {ease_grid.round(4).to_dict()}; sources built and queried in "
      f"{time.perf_counter() - started:.1f} s")
sources_validation = source_table(val_lists, val_union, val_stage)
sources_validation.round(4)

# %%
best_source = str(sources_validation["precision@10 of its top 10"].idxmax())
widest = str(sources_validation.drop(index="union of the four")["recall of the list"].idxmax())
say(f"On validation each source finds part of what users rate next: the {widest} list has the highest recall "
    f"({fmt(sources_validation.loc[widest, 'recall of the list'])}), and the union of the four lists, "
    f"{fmt(sources_validation.loc['union of the four', 'candidates per user'], 'count')} movies per user on "
    f"average, reaches {fmt(sources_validation.loc['union of the four', 'recall of the list'])}. The best "
    f"single source by its own top 10 is **{best_source}** (precision@10 "
    f"{fmt(sources_validation.loc[best_source, 'precision@10 of its top 10'])}): the bar the funnel must clear.")

# %% [markdown]
# ### Features no single source has
#
# The ranker sees every (user, candidate) pair through sixteen numbers
# (`recsys_course.models.funnel.FEATURES`), computed by one TensorFlow module,
# `FunnelFeatures`, so that the same code builds the training data here and runs inside the
# served model of lesson 08:
#
# - for each of the two-tower model, EASE and item-kNN: the score as a z-score over the
#   user's unseen movies (so it survives retraining), the rank discount
#   $1/\log_2(\text{rank} + 2)$ and whether the source proposed the movie; for popularity
#   its rank discount and whether it proposed it;
# - the movie's popularity and its age in the training data (days since its first rating),
#   both as logs; the user's number of ratings (log); the user's **genre affinity** to the
#   movie, the cosine between the sum of the genre vectors of the movies they rated and the
#   movie's genres;
# - the **rating model's** predicted stars (section 3's pure rating model): the one signal
#   that uses the rating values, which every source ignores.
#
# The labels are implicit: a candidate is a positive when the user rated it in ratings the
# sources did not see. How much a positive weighs is a choice, made on validation below
# among three schemes: every rating counts 1 (the ranker learns what users pick), a liked
# one (4 stars or more) counts 2 (what they pick *and* like), or each weighs its gain
# $2^r - 1$ for $r$ stars (the gain of this course's NDCG, which favours 5-star movies
# strongly). The last two use the rating values a second time, where every source ignores
# them. (We settled on the three-seed average below offline, on a development split carved
# from the training data, before running this page; the test split played no part.)
#
# ### More labels: cross-fitting
#
# The validation split holds only a tenth of the training ratings, a handful per user: few
# labels for a ranker. **Cross-fitting**, the out-of-fold trick of stacking (Wolpert, 1992),
# uses every training rating instead. The training split is cut into five random folds
# (`recsys_course.data.split_folds`); for each fold, every source and the rating model are
# fitted on the *other* four, and they propose and describe the candidates of the fold's
# users, labelled with the fold's ratings (`recsys_course.models.funnel.cross_fitted_lists`).
# Every training rating labels one list, no list's features come from sources that saw its
# labels, and each user gets five lists. The price is training every source five times (the
# two-tower model with the epochs validation chose above). For the test, the sources are
# refitted on the whole training split and the ranker reads their features: z-scores and
# ranks keep their meaning when a source is retrained.

# %% tags=["setup"]
def fit_funnel(ratings: pd.DataFrame, movies: pd.DataFrame, *, retrieval_epochs: int, ease_l2: float) -> fn.Funnel:
    """Every source of the funnel and its rating model (weights 1 / 0) fitted on ``ratings``
    (``movies``: the movies frame, for the catalogue and genres); no ranker yet."""
    movie_ids = np.unique(movies["movie_id"].astype(str))
    two_tower = train_retrieval(ratings, movies, epochs=retrieval_epochs)
    sources = fn.build_sources(ratings, movies, two_tower, ease_l2=ease_l2)
    return fn.Funnel(fn.FunnelFeatures(sources, train_multitask(ratings, movie_ids, 1.0, 0.0), N_CANDIDATES))


def lists_stage(lists: fn.RankerLists, movies: np.ndarray) -> Stage:
    """The evaluation Stage of labelled lists (``movies``: the sorted catalogue): one row per
    list, so a user appears once per fold."""
    return Stage(users=lists.users, movies=movies, seen=lists.seen, rated=lists.rated,
                 liked=lists.stars >= LIKED, gains=evaluation.rating_gains(lists.stars))


# %%
started = time.perf_counter()
folds = split_folds(train, N_FOLDS, seed=SEED)
ranker_lists = fn.cross_fitted_lists(
    folds, lambda ratings: fit_funnel(ratings, data.movies, retrieval_epochs=retrieval_epochs, ease_l2=ease_l2))
print(f"{len(folds)} folds: sources fitted and {int(ranker_lists.mask.sum()):,} candidate features computed in "
      f"{time.perf_counter() - started:.1f} s")

# %%
ratings_per_list = ranker_lists.rated.sum(axis=1).mean()
say(f"Cross-fitting gives the ranker {fmt(len(ranker_lists.users), 'count')} labelled lists with "
    f"{fmt(ratings_per_list, 'number')} held-out ratings each on average, where the validation split alone gives "
    f"{fmt(len(val_stage.users), 'count')} lists with {fmt(val_stage.rated.sum(axis=1).mean(), 'number')}. "
    "Here are a few candidates of one list:")

# %%
held_out = fn.list_labels(ranker_lists.candidates, ranker_lists.stars)  # each candidate's held-out stars
example = int(np.argmax((held_out > 0).sum(axis=1) >= 2))  # the first list with two positives
pd.DataFrame(ranker_lists.features[example, :6], columns=fn.FEATURES,
             index=pd.Index(movie_ids[ranker_lists.candidates[example, :6]], name="movie")).assign(
                 **{"held-out stars": held_out[example, :6]}).T.round(3)

# %% [markdown]
# ### Exercise 6.4 · A listwise softmax loss
#
# The ranker is trained on each user's whole list at once. Its loss is the **softmax
# cross-entropy over the list** (ListNet's top-one loss, Cao et al., 2007): turn the list's
# scores into probabilities with a softmax and ask them to put their mass on the movies the
# user went on to rate. With labels $y_i$ (1 for a rated candidate, 0 otherwise) over a
# list's candidates,
#
# $$L = -\sum_i \frac{y_i}{\sum_j y_j} \log \frac{e^{s_i}}{\sum_j e^{s_j}},$$
#
# averaged over the lists that have at least one positive. The lists have different lengths
# and are padded to one width, so a `mask` says which entries are real candidates: padding
# must take no part in the softmax. TF-Ranking ships such losses, but it does not install
# with this course's TensorFlow, and the loss is a few lines of TensorFlow.

# %% tags=["exercise"] exercise="6.4"
def listwise_loss(labels: tf.Tensor, scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy over each row's list, averaged over the rows with a positive.

    Args:
        labels: float [B, L], >= 0 (1 where the user rated the candidate).
        scores: float [B, L], the ranker's scores.
        mask: bool [B, L], False for padding entries (their labels and scores are ignored).

    Returns:
        A scalar tensor: the mean, over the rows whose unmasked labels sum to more than 0, of
        -sum_i (labels_i / sum_j labels_j) * log softmax(scores)_i, the softmax taken over
        the row's unmasked entries. It stays finite for scores as large as +-1000; 0 when no
        row has a positive.
    """
    raise NotImplementedError(
        "Exercise 6.4 (A listwise softmax loss): not solved yet. Stuck? Run: course hint 6.4"
    )


# %% [markdown]
# ### The ranker and its choices
#
# The ranker is a **deep & cross network** (DCN, Wang et al., 2017), the architecture of
# lesson 04: the standardised features go through TFRS's `Cross` layer, which multiplies
# them with a learned linear map of themselves ($x_0 \odot (W x + b) + x$, explicit pairwise
# crosses such as "EASE likes it *and* the two-tower model likes it"), then through ReLU
# layers of 64 and 32 units to one score (`recsys_course.models.funnel.FunnelRanker`). Its
# own choices need users it does not train on: the users are split into two random halves
# (all five lists of a user on one side), the ranker trains on the first half's lists for up
# to 12 epochs, for each labelling scheme, with and without the cross layer, and the
# second half's lists measure it after each epoch. The funnel is judged on precision@10 over
# the movies users rated *and* over those they liked, so the measure is the mean of the two;
# the best value picks the labels, the variant and the number of epochs. The chosen ranker
# is then trained on every list, three times from different seeds, and the funnel's ranker
# averages the three scores: one training run's luck shows in its order, and the average
# evens it out. Your `listwise_loss` is the loss.

# %% tags=["setup"]
LABELS = {  # the ranker's label for a held-out rating of r stars, by scheme
    "1 per rating": lambda stars: (stars > 0).astype(np.float32),
    "1, or 2 if liked": lambda stars: (stars > 0).astype(np.float32) + (stars >= LIKED),
    "gain 2^r - 1": evaluation.rating_gains,
}
LABEL_CHECK = "check value (mean precision@10, rated and liked)"  # choose_labels' table column


def rated_and_liked(lists: fn.RankerLists) -> Callable[[np.ndarray], float]:
    """The check measure of ``lists``' rows: ranked top K [R, K] -> the mean of precision@K
    over the movies rated and over those liked in the held-out ratings."""
    rated, liked = lists.rated, lists.stars >= LIKED
    return lambda ranked: (evaluation.precision_at_k(ranked, rated, K) + evaluation.precision_at_k(ranked, liked, K)) / 2


def choose_labels(lists: fn.RankerLists, train_rows: np.ndarray, check_rows: np.ndarray, loss: Callable,
                  max_epochs: int = RANKER_MAX_EPOCHS) -> tuple[str, fn.RankerChoice, pd.DataFrame]:
    """``choose_ranker`` for every scheme of ``LABELS``, trained on ``train_rows`` for up to
    ``max_epochs`` and measured by ``rated_and_liked`` on ``check_rows``: the best scheme, its
    choice, and a table with a row per scheme (its variant, epochs and best check value)."""
    choices = {scheme: fn.choose_ranker(lists.features, lists.labels(LABELS[scheme]), lists.candidates, lists.rated,
                                        train_rows=train_rows, check_rows=check_rows, k=K,
                                        max_epochs=max_epochs, seed=SEED, loss=loss,
                                        criterion=rated_and_liked(lists.rows(check_rows)))
               for scheme in LABELS}
    table = pd.DataFrame({"variant": [c.variant for c in choices.values()],
                          "epochs": [c.epochs for c in choices.values()],
                          LABEL_CHECK: [float(c.curves.max().max()) for c in choices.values()]},
                         index=pd.Index(list(choices), name="labels"))
    best = str(table[LABEL_CHECK].idxmax())
    return best, choices[best], table


# %%
started = time.perf_counter()
train_rows, check_rows = fn.split_users(ranker_lists.users, SEED)
label_scheme, choice, label_table = choose_labels(ranker_lists, train_rows, check_rows, listwise_loss)
ranker = fn.train_ensemble(ranker_lists.features, ranker_lists.labels(LABELS[label_scheme]), ranker_lists.mask,
                           members=RANKER_MEMBERS, cross=choice.cross, epochs=choice.epochs, seed=SEED,
                           loss=listwise_loss)
print(f"labels and ranker variants compared, the chosen ranker trained in {time.perf_counter() - started:.1f} s")
label_table.round(4)

# %%
check_lists = ranker_lists.rows(check_rows)
check_stage = lists_stage(check_lists, movie_ids)
check_sources = check_lists.sources
check_funnel = fn.order_by(check_lists.candidates, choice.check_model(check_lists.features).numpy(), K)
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for name in choice.curves:
    ax.plot(choice.curves.index, choice.curves[name], "o-", markersize=3, label=f"ranker: {name}")
check_measure = rated_and_liked(check_lists)
for name in ("EASE", "two-tower"):
    ax.axhline(check_measure(check_sources[name]), linestyle=":",
               color="grey" if name == "EASE" else "tab:green", label=f"{name} alone")
ax.set_xlabel("epoch")
ax.set_ylabel("mean precision@10, rated and liked")
ax.set_title(f"Funnel ranker ({label_scheme}) on the checking half")
ax.legend(fontsize=8)
plt.show()

# %%
# A user has one list per fold: average them per user, so the standard error counts users.
check_by_user = {name: pd.Series(evaluation.precision_by_user(ranked, check_stage.rated, K))
                 .groupby(check_lists.users).mean().to_numpy()
                 for name, ranked in (("funnel", check_funnel), (best_source, check_sources[best_source]))}
check_se = evaluation.paired_standard_error(check_by_user["funnel"], check_by_user[best_source])
funnel_vs_best = compare(np.nanmean(check_by_user["funnel"]), np.nanmean(check_by_user[best_source]), se=check_se)
say(f"Validation keeps the labels **{label_scheme}** and the **{choice.variant}** after **{choice.epochs} "
    f"epochs**. On the lists of the half of the "
    f"users it did not train on, its top 10 reaches precision@10 (rated) {fmt(funnel_vs_best.value)}, "
    f"{funnel_vs_best.word()} {best_source} alone ({fmt(funnel_vs_best.reference)}; difference "
    f"{funnel_vs_best.change()}, paired standard error over users {fmt(check_se)}; each user's lists "
    "averaged). Read the wiggles of the curves as noise.")

# %% [markdown]
# ## 6. Diversity: maximal marginal relevance on the funnel's list
#
# A list ordered by relevance alone tends to repeat itself: if a user likes crime dramas,
# the ten best-scored candidates may all be crime dramas. Each additional one adds little
# the previous ones did not. Three beyond-accuracy measures describe a list (Kaminskas and
# Bridge, 2016), all in `recsys_course.evaluation`:
#
# - **intra-list diversity** (Ziegler et al., 2005): the mean pairwise distance between the
#   movies of one list, averaged over users; the distance is 1 − the cosine similarity of
#   the two movies' multi-hot genre vectors $g$, so for a list $L$ of $n$ movies
#   $\text{ILD}(L) = \frac{2}{n(n-1)} \sum_{i < j} \big(1 - \cos(g_i, g_j)\big)$;
# - **coverage@10**: the share of the catalogue that appears in at least one user's top 10;
# - **novelty**: the mean self-information $-\log_2 p(m)$ of the recommended movies, where
#   $p(m)$ is the share of users who rated $m$: higher means less obvious picks.
#
# Maximal marginal relevance (Carbonell and Goldstein, 1998) builds the list greedily.
# With relevance $r_i$ scaled to [0, 1] and a similarity $\text{sim}(i, j)$, each step adds
# the candidate that maximises
#
# $$\lambda\, r_i - (1 - \lambda) \max_{j \in S} \text{sim}(i, j),$$
#
# where $S$ holds the movies already chosen. With $\lambda = 1$ it is the relevance order;
# lower $\lambda$ penalises candidates that resemble something already in the list.
#
# ### Exercise 6.5 · The MMR re-ranker

# %% tags=["exercise"] exercise="6.5"
def mmr_rerank(relevance: np.ndarray, similarity: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Greedy maximal marginal relevance over m candidates.

    Args:
        relevance: float (m,), higher is more relevant (scaled to [0, 1] by the caller).
        similarity: float (m, m), symmetric; similarity[i, j] between candidates i and j.
        k: list length; the result holds min(k, m) positions.
        lam: weight of relevance in [0, 1]; 1 - lam weighs the redundancy penalty.

    Returns:
        int array of candidate positions, in the order chosen. The first is the most
        relevant; each next one maximises lam * relevance[i] - (1 - lam) * (max similarity
        of i to the positions already chosen) over the candidates not chosen yet. Ties go
        to the lowest position.
    """
    raise NotImplementedError(
        "Exercise 6.5 (Maximal marginal relevance): not solved yet. Stuck? Run: course hint 6.5"
    )


# %% [markdown]
# MMR diversifies the funnel's order, and its cost and gain are counted against that list:
# the order MMR starts from, and the one the lesson built to be precise (section 7 checks on
# test whether another list is more precise). Three choices are made on the checking half
# of the users, one list each (the first fold's, which keeps this step fast), with the ranker
# trained on the other half (so the order is as good as on new users, no better):
#
# 1. **Relevance on a fixed scale.** MMR adds relevance and similarity, so both must live on
#    comparable scales. The ranker's raw scores have none (only their differences were
#    trained). Two scales are tried: the candidate's **rank**, $1 - \text{rank}/m$ among its
#    $m$ candidates, and the ranker's own **softmax** over the list divided by its largest
#    value, $e^{s_i - \max_j s_j}$: the listwise loss trained that softmax to put its mass
#    on the movies the user picks, so it says how much more likely the top candidate is than
#    the tenth, where the rank says only that it comes first.
# 2. **The redundancy.** Classic MMR penalises a candidate for its *nearest* chosen movie
#    (the max). Intra-list diversity averages over *all* pairs of the list, so a variant
#    penalises the *mean* similarity to the chosen movies: each step then adds the candidate
#    that most raises relevance plus the list's average distance.
# 3. **λ, with a budget that allows for noise.** For each variant, λ goes down from 1 and
#    stops before the first setting whose precision cost *could* exceed 5 % of the funnel's
#    precision@10: its measured cost plus one standard error (the users' paired precision
#    drops). The most diverse setting before that point is kept, and the variant with the
#    most diverse kept setting wins. The margin guards against the *winner's curse*: among
#    many settings measured on a few hundred users, the most diverse one whose measured
#    cost is just under 5 % is likely one whose cost happened to be underestimated.

# %% tags=["setup"]
REDUNDANCY = ("max", "mean")  # classic MMR; MMR with the mean similarity to the chosen movies
RELEVANCE = ("rank", "ranker softmax")


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """``rows`` float [n, d] scaled to length 1 each; an all-zero row stays zero (so its
    cosine with anything is 0)."""
    rows = np.asarray(rows, dtype=float)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def mean_mmr_rerank(relevance: np.ndarray, similarity: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Like ``mmr_rerank``, but a candidate's redundancy is its *mean* similarity to the
    positions already chosen (each step maximises relevance plus intra-list diversity)."""
    relevance, similarity = np.asarray(relevance, dtype=float), np.asarray(similarity, dtype=float)
    chosen: list[int] = []
    available = np.ones(len(relevance), dtype=bool)
    total = np.zeros(len(relevance))  # summed similarity of each candidate to the chosen ones
    for _ in range(min(k, len(relevance))):
        value = lam * relevance - (1.0 - lam) * total / len(chosen) if chosen else relevance.copy()
        value[~available] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        available[best] = False
        total += similarity[best]
    return np.array(chosen, dtype=np.int64)


def mmr_relevance(scale: str, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """MMR's relevance float [n_users, n] of each candidate [n_users, n] (padding -1 gets 0)
    from the ranker's ``scores`` [n_users, n]: "rank", 1 - rank / m among the user's m
    candidates (ties keep the candidate order); "ranker softmax", exp(score - the user's
    best score), the softmax over the list divided by its largest value."""
    if scale not in RELEVANCE:
        raise ValueError(f"scale must be one of {RELEVANCE}, got {scale!r}")
    valid = candidates >= 0
    scores = np.where(valid, scores, -np.inf)
    if scale == "rank":
        relevance = 1.0 - candidate_ranks(scores) / np.maximum(valid.sum(axis=1, keepdims=True), 1)
    else:
        best = np.max(scores, axis=1, keepdims=True)
        relevance = np.exp(scores - np.where(np.isfinite(best), best, 0.0))
    return np.where(valid, relevance, 0.0)


def diversify(candidates: np.ndarray, scores: np.ndarray, relevance: np.ndarray, genres: np.ndarray,
              lam: float, redundancy: str = "max", k: int = K) -> np.ndarray:
    """MMR over each user's candidates [n_users, n] (padding -1 skipped) with MMR relevance
    ``relevance`` [n_users, n] (see ``mmr_relevance``), similarity = cosine of the genre
    vectors, redundancy = "max" (``mmr_rerank``) or "mean" (``mean_mmr_rerank``). Candidates are
    handed to MMR in the order of ``scores``, so ties of relevance go to the better score and
    λ = 1 returns the order by score. Returns item indices [n_users, k]."""
    rerank = {"max": mmr_rerank, "mean": mean_mmr_rerank}[redundancy]
    # The similarities of every movie that is anyone's candidate, in one matrix product
    # (a small product per user would be slower: each pays for starting BLAS).
    listed = np.unique(candidates[candidates >= 0])
    position = np.full(len(genres), -1)
    position[listed] = np.arange(len(listed))
    unit = unit_rows(genres[listed])
    similarity = unit @ unit.T
    out = np.full((len(candidates), k), evaluation.PAD, dtype=np.int64)
    for row, (items, s, r) in enumerate(zip(candidates, scores, relevance)):
        keep = items >= 0
        base = np.argsort(-s[keep], kind="stable")
        items, r = items[keep][base], r[keep][base]
        at = position[items]
        picked = items[rerank(r, similarity[np.ix_(at, at)], k, lam)]
        out[row, : len(picked)] = picked
    return out


def precision_cost(base: np.ndarray, other: np.ndarray, z: float = COST_SE) -> tuple[float, float]:
    """``(cost, bound)`` of a list against a base list, from each user's precision@10 under
    both (``base``, ``other`` float [n_users]; users with ``nan`` in ``base``, who had nothing
    to hit, are left out): cost = 1 - mean(other) / mean(base), the share of precision lost;
    bound = cost + ``z`` standard errors of the users' paired drops (base - other) over
    mean(base). The bound is infinite with fewer than two users.

    Raises ValueError when the lengths differ or no user's base precision is positive."""
    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    if base.shape != other.shape or base.ndim != 1:
        raise ValueError(f"base and other must be 1-d of one length, got {base.shape} and {other.shape}")
    users = ~np.isnan(base)
    mean = base[users].mean() if users.any() else 0.0
    if mean <= 0:
        raise ValueError("the base list hits nothing: a share of its precision is undefined")
    cost = 1.0 - other[users].mean() / mean
    error = evaluation.paired_standard_error(base[users], other[users]) / mean if users.sum() > 1 else np.inf
    return float(cost), float(cost + z * error)


def mmr_curve(candidates: np.ndarray, scores: np.ndarray, relevance: np.ndarray, stage: Stage,
              genres: np.ndarray, probability: np.ndarray, redundancy: str, reference: np.ndarray) -> pd.DataFrame:
    """``measure`` of ``diversify`` for every λ of ``MMR_LAMBDAS`` (rows, in that order; the
    first is 1, the order by score alone), with each λ's "precision cost" and "cost bound"
    against the ``reference`` lists int [n_users, K] (``precision_cost`` of the users'
    precision@10)."""
    rows = {}
    base = evaluation.precision_by_user(reference, stage.rated, K)
    for lam in MMR_LAMBDAS:
        lists = diversify(candidates, scores, relevance, genres, lam, redundancy)
        cost, bound = precision_cost(base, evaluation.precision_by_user(lists, stage.rated, K))
        rows[lam] = {**measure(lists, stage, genres, probability), "precision cost": cost, "cost bound": bound}
    return pd.DataFrame(rows).T.rename_axis("λ")


def affordable_lambda(curve: pd.DataFrame, max_loss: float = MAX_PRECISION_LOSS) -> float:
    """The most diverse λ among those before the first whose "cost bound" exceeds ``max_loss``
    (``curve`` from ``mmr_curve``: rows in decreasing λ, starting at 1); ``nan`` when λ = 1
    already exceeds it."""
    within = curve["cost bound"].to_numpy() <= max_loss
    allowed = curve.iloc[: int(np.argmin(within)) if not within.all() else len(curve)]
    return float(allowed["diversity@10"].idxmax()) if len(allowed) else float("nan")


def mmr_on_validation(candidates: np.ndarray, scores: np.ndarray, stage: Stage, genres: np.ndarray,
                      probability: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """Every MMR variant (relevance scale x redundancy) over the candidates [n_users, n] of
    ``stage``'s users ordered by ``scores``: a table with a row per variant (the affordable
    λ, ``nan`` when there is none, and precision@10, diversity@10, diversity gain, precision
    cost and cost bound there, gain and cost against the top K by ``scores``) and each
    variant's ``mmr_curve`` by (scale, redundancy)."""
    reference = fn.order_by(candidates, scores, K)
    reference_diversity = evaluation.intra_list_diversity_at_k(reference, genres, K)
    curves, rows = {}, {}
    for scale in RELEVANCE:
        relevance = mmr_relevance(scale, candidates, scores)
        for how in REDUNDANCY:
            curve = curves[scale, how] = mmr_curve(candidates, scores, relevance, stage, genres, probability, how,
                                                   reference)
            lam = affordable_lambda(curve)
            kept = curve.loc[lam] if not np.isnan(lam) else pd.Series(np.nan, index=curve.columns)
            rows[scale, how] = {"λ": lam, "precision@10 rated": kept["precision@10 rated"],
                                "diversity@10": kept["diversity@10"],
                                "diversity gain": kept["diversity@10"] / reference_diversity - 1,
                                "precision cost": kept["precision cost"], "cost bound": kept["cost bound"]}
    return pd.DataFrame(rows).T.rename_axis(["relevance", "redundancy"]), curves


def chosen_mmr(table: pd.DataFrame) -> tuple[str, str, float]:
    """``(relevance, redundancy, λ)`` of the row of ``mmr_on_validation``'s table with the most
    diverse affordable setting (the first such row when several tie; rows without an
    affordable λ are skipped)."""
    relevance, redundancy = table["diversity@10"].idxmax()
    return relevance, redundancy, float(table.loc[(relevance, redundancy), "λ"])


# %%
started = time.perf_counter()
mmr_lists = check_lists.rows(check_lists.parts == 0)  # the first fold's: one list per checking user
mmr_scores = np.where(mmr_lists.mask, choice.check_model(mmr_lists.features).numpy(), -np.inf)
mmr_table, curves = mmr_on_validation(mmr_lists.candidates, mmr_scores, lists_stage(mmr_lists, movie_ids), genres,
                                      probability)
best_relevance, best_redundancy, best_lambda = chosen_mmr(mmr_table)
print(f"{len(RELEVANCE) * len(REDUNDANCY) * len(MMR_LAMBDAS)} MMR settings measured in "
      f"{time.perf_counter() - started:.1f} s")
mmr_table.round(4)

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
for (scale, how), curve in curves.items():
    ax.plot(curve["diversity@10"], curve["precision@10 rated"], "o-", markersize=3,
            label=f"{scale} relevance, {how} similarity")
reference = curves[RELEVANCE[0], REDUNDANCY[0]].iloc[0]  # λ = 1: the funnel's own list
ax.plot(reference["diversity@10"], reference["precision@10 rated"], "k*", markersize=10,
        label="the funnel's list (the reference)")
ax.axhline((1 - MAX_PRECISION_LOSS) * reference["precision@10 rated"], color="grey", linestyle=":",
           label=f"{MAX_PRECISION_LOSS:.0%} below the funnel")
ax.set_xlabel("intra-list diversity@10 (genres)")
ax.set_ylabel("precision@10 (rated)")
ax.set_title("MMR on validation: precision against diversity")
ax.legend(fontsize=7)
plt.show()

# %%
kept_mmr = mmr_table.loc[(best_relevance, best_redundancy)]
say(
    f"We keep MMR with the **{best_relevance}** relevance, the **{best_redundancy} similarity** and "
    f"**λ = {fmt(best_lambda, 'setting')}**: on the lists of the users the ranker did not train on, "
    "intra-list diversity "
    f"changes by {signed(kept_mmr['diversity gain'], 'percent')} against the funnel's own list, and "
    f"precision@10 by {signed(-kept_mmr['precision cost'], 'percent')}, give or take "
    f"{fmt((kept_mmr['cost bound'] - kept_mmr['precision cost']) / COST_SE, 'percent')} (one standard error), "
    f"so the cost counted against the {fmt(MAX_PRECISION_LOSS, 'percent')} budget is "
    f"{fmt(kept_mmr['cost bound'], 'percent')}."
)

# %% [markdown]
# ## 7. Retrain on all training data, then the test split once
#
# Every choice is made: the retrieval epochs, the multitask weights and head, EASE's λ, the
# ranker's labels, variant and epochs, MMR's relevance, redundancy and λ. The validation ratings are
# too useful to waste, so every model is trained again on the whole training split (fit +
# validation) with those choices: the retrieval stage, the rating and multitask models, the
# implicit ranker and every candidate source. The funnel's ranker is the one exception: it
# already learned from every training rating (through the cross-fitted lists), so it keeps
# its weights and now reads the features of the retrained sources (z-scores and ranks keep
# their meaning when a source is retrained). Then the test split is used once.
#
# Every list below is scored on the same test users. Beside each comparison stands the
# **paired standard error** over users: the standard error of the per-user differences,
# which is what decides whether a difference is more than noise
# (`recsys_course.evaluation.paired_standard_error`).

# %% tags=["setup"]
ACCURACY = ("precision@10 rated", "precision@10 liked", "ndcg@10")


def by_user(ranked: np.ndarray, stage: Stage) -> dict[str, np.ndarray]:
    """Each user's precision@K on rated and on liked movies and NDCG@K, float [n_users] per
    metric (nan for a user without any relevant held-out movie)."""
    return {"precision@10 rated": evaluation.precision_by_user(ranked, stage.rated, K),
            "precision@10 liked": evaluation.precision_by_user(ranked, stage.liked, K),
            "ndcg@10": evaluation.ndcg_by_user(ranked, stage.gains, K)}


def comparison_table(lists: dict[str, np.ndarray], stage: Stage, name: str, against: list[str]) -> pd.DataFrame:
    """For each list of ``against``: the difference ``name`` minus it on each metric of
    ``ACCURACY`` and the paired standard error of that difference over ``stage``'s users."""
    mine = by_user(lists[name], stage)
    rows = {}
    for other in against:
        theirs = by_user(lists[other], stage)
        rows[other] = {**{f"{m}: difference": np.nanmean(mine[m]) - np.nanmean(theirs[m]) for m in ACCURACY},
                       **{f"{m}: standard error": evaluation.paired_standard_error(mine[m], theirs[m])
                          for m in ACCURACY}}
    return pd.DataFrame(rows).T.rename_axis(f"{name} against")


# %%
started = time.perf_counter()
retrieval = train_retrieval(train, data.movies, epochs=retrieval_epochs)
test_stage = make_stage(train, test, movie_ids)  # everything in train counts as seen
rating_only = train_multitask(train, movie_ids, 1.0, 0.0)
multitask = rating_only if best_weights == (1.0, 0.0) else train_multitask(train, movie_ids, *best_weights)
implicit = train_implicit(train, movie_ids)
test_funnel = fn.Funnel(fn.FunnelFeatures(fn.build_sources(train, data.movies, retrieval, ease_l2=ease_l2),
                                          rating_only, N_CANDIDATES), ranker)
test_probability = evaluation.item_probability(
    evaluation.interaction_matrix(train, np.unique(train["user_id"].astype(str)), movie_ids))
print(f"models retrained on {len(train):,} ratings in {time.perf_counter() - started:.1f} s")

# %%
started = time.perf_counter()
test_lists = test_funnel.source_lists(test_stage.users)
test_union = fn.union_lists([test_lists[name] for name in fn.SOURCES])
test_scores = test_funnel.scores(test_stage.users, test_union)
two_tower_100 = test_lists["two-tower"]  # the candidates the single-model re-rankers order
lists = {
    "two-tower (retrieval order)": two_tower_100[:, :K],
    "EASE": test_lists["EASE"][:, :K],
    "item-kNN": test_lists["item-kNN"][:, :K],
    "popularity": test_lists["popularity"][:, :K],
    "rating ranker": order_by(two_tower_100, rating_scores(rating_only, test_stage, two_tower_100)),
    "multitask": order_by(two_tower_100, multitask_scores(multitask, test_stage, two_tower_100, best_head)),
    "implicit ranker": order_by(two_tower_100, implicit_scores(implicit, test_stage, two_tower_100)),
    "funnel": fn.order_by(test_union, test_scores, K),
    "funnel + MMR": diversify(test_union, test_scores, mmr_relevance(best_relevance, test_union, test_scores),
                              genres, best_lambda, best_redundancy),
}
results = pd.DataFrame({name: measure(ranked, test_stage, genres, test_probability)
                        for name, ranked in lists.items()}).T
print(f"{len(lists)} lists scored on {len(test_stage.users)} test users in {time.perf_counter() - started:.1f} s")
results.round(4)

# %%
fig, axes = plt.subplots(2, 1, figsize=(6, 7.5))
results[list(ACCURACY)].plot.barh(ax=axes[0], title="accuracy (test)")
results[["diversity@10", "coverage@10"]].plot.barh(ax=axes[1], title="beyond accuracy (test)")
for ax in axes:
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# The comparisons that matter, each with its paired standard error over the test users: the
# funnel against the strongest single model, EASE over the whole catalogue; against the
# source validation found best on its own; and against the two-tower model's order, which
# every single-model re-ranker started from.

# %%
funnel_against = comparison_table(lists, test_stage, "funnel",
                                  list(dict.fromkeys(["EASE", best_source, "two-tower (retrieval order)"])))
funnel_against.round(4)

# %%
vs_ease = {m: compare(results.loc["funnel", m], results.loc["EASE", m],
                      se=funnel_against.loc["EASE", f"{m}: standard error"]) for m in ACCURACY}
rating_vs_retrieval = compare(
    results.loc["rating ranker", "precision@10 rated"], results.loc["two-tower (retrieval order)", "precision@10 rated"],
    se=evaluation.paired_standard_error(by_user(lists["rating ranker"], test_stage)["precision@10 rated"],
                                        by_user(lists["two-tower (retrieval order)"], test_stage)["precision@10 rated"]))
say(
    f"On the test split the rating ranker's precision@10 is {fmt(rating_vs_retrieval.value)}, "
    f"{rating_vs_retrieval.word()} the retrieval order it re-ranks ({fmt(rating_vs_retrieval.reference)})"
    + pick(rating_vs_retrieval.worse, ": lesson 04's puzzle again, stars are a poor guide to what users pick. ",
           ". ")
    + "The funnel's top 10 against EASE's: precision@10 on rated movies "
    f"{fmt(vs_ease['precision@10 rated'].value)} against {fmt(vs_ease['precision@10 rated'].reference)} "
    f"({vs_ease['precision@10 rated'].change()} ± {fmt(funnel_against.loc['EASE', 'precision@10 rated: standard error'])}), "
    f"on liked movies {fmt(vs_ease['precision@10 liked'].value)} against {fmt(vs_ease['precision@10 liked'].reference)} "
    f"({vs_ease['precision@10 liked'].change()} ± {fmt(funnel_against.loc['EASE', 'precision@10 liked: standard error'])}), "
    f"NDCG@10 {fmt(vs_ease['ndcg@10'].value)} against {fmt(vs_ease['ndcg@10'].reference)} "
    f"({vs_ease['ndcg@10'].change()} ± {fmt(funnel_against.loc['EASE', 'ndcg@10: standard error'])}; ± one paired "
    "standard error over users). "
    + pick(all(c.better for c in vs_ease.values()),
           "On all three the funnel is ahead by more than twice the standard error: the ranker found in the "
           "sources' disagreements and in the features what no single source knows.",
           pick(any(c.worse for c in vs_ease.values()),
                "On at least one measure the funnel is behind by more than twice the standard error.",
                "Not every difference exceeds twice its standard error: on this data the funnel's gain over "
                "EASE is "
                + pick(any(c.better for c in vs_ease.values()), "real on part of the measures only", "within the noise")
                + ". EASE is a strong model, and a ranker over its candidates has little room above it.")))

# %% [markdown]
# Finally, MMR on the funnel's list, with the relevance, redundancy and λ chosen on
# validation, counted against the funnel's own list and, if another list is more precise on
# test, against that one too.

# %%
plain, diverse = results.loc["funnel"], results.loc["funnel + MMR"]
mmr_users = by_user(lists["funnel + MMR"], test_stage)["precision@10 rated"]
funnel_users = by_user(lists["funnel"], test_stage)["precision@10 rated"]
mmr_cost, mmr_bound = precision_cost(funnel_users, mmr_users)
undiversified = results.drop(index="funnel + MMR")["precision@10 rated"].idxmax()
say(
    f"MMR ({best_relevance} relevance, {best_redundancy} similarity, λ = {fmt(best_lambda, 'setting')}) changes "
    "the funnel's "
    f"intra-list diversity from {fmt(plain['diversity@10'])} to {fmt(diverse['diversity@10'])} "
    f"({signed(diverse['diversity@10'] / plain['diversity@10'] - 1, 'percent')}), coverage@10 from "
    f"{fmt(plain['coverage@10'])} to {fmt(diverse['coverage@10'])}, novelty from {fmt(plain['novelty@10'])} to "
    f"{fmt(diverse['novelty@10'])} bits, and precision@10 from {fmt(plain['precision@10 rated'])} to "
    f"{fmt(diverse['precision@10 rated'])} ({signed(-mmr_cost, 'percent')}, give or take "
    f"{fmt((mmr_bound - mmr_cost) / COST_SE, 'percent')}), "
    + pick(mmr_cost <= MAX_PRECISION_LOSS, f"within the {fmt(MAX_PRECISION_LOSS, 'percent')} budget set on validation.",
           f"more than the {fmt(MAX_PRECISION_LOSS, 'percent')} budget set on validation: a few hundred validation "
           "users estimate the cost of λ only roughly.")
    + pick(undiversified == "funnel", " The funnel is also the most precise undiversified list on test, so this "
           "is the cost against the best list the lesson has.",
           f" On test the most precise undiversified list is {undiversified} "
           f"({fmt(results.loc[undiversified, 'precision@10 rated'])}), not the funnel; counted against it, MMR "
           f"changes precision@10 by "
           f"{signed(diverse['precision@10 rated'] / results.loc[undiversified, 'precision@10 rated'] - 1, 'percent')}.")
)

# %% [markdown]
# How much diversity a given loss of precision buys depends on the ranker, not only on MMR.
# Swapping a movie of the top 10 for a more diverse one from further down costs the
# difference between their chances of being picked, and a sharp ranker, whose hits crowd at
# the very top, makes every swap expensive; a weak ranker makes diversity cheap because its
# top 10 was not much better than the rest. That is why the cost is counted against the best
# undiversified list: against a weaker one, MMR would look cheaper than it is.

# %% [markdown]
# ## Summary
#
# - Stars say how much users liked what they *chose*; a page of recommendations is judged
#   by what they *choose*. A pointwise rating model can therefore make a weak ranker for
#   "what to watch next", however low its RMSE: measure the order, not only the stars.
# - A **multitask** TFRS model adds the task losses with weights; put the losses on a common
#   scale first (means per example), then treat the weights as a hyperparameter chosen on
#   validation, measuring every task in the same run.
# - **BPR** trains on (rated, sampled unrated) pairs with $-\log\sigma(s_i - s_j)$; only
#   score differences matter. Negatives are resampled every epoch.
# - A **funnel** lets several candidate sources (here the two-tower model, EASE, item-kNN
#   and popularity) propose movies, merges their lists, and orders the union with a ranker
#   that sees every source's score and rank next to features none of them uses. Train it
#   on implicit labels the sources did not see (which candidates the user rated in a
#   held-out fold), cross-fitted so that every training rating labels a list, with a
#   **listwise** softmax loss over each list; choose its architecture and epochs on users it
#   does not train on, and compare it with the strongest single model on the same users,
#   with the paired standard error beside the difference.
# - Compute the ranker's features with one implementation for training and serving (here a
#   TensorFlow module), so the served model sees exactly what the trained one saw.
# - **MMR** trades relevance for diversity with one knob, λ; coverage and novelty show what
#   the catalogue and the long tail get out of it. Choose λ with an explicit budget counted
#   against the most precise undiversified list you have, with a margin for the noise of
#   validation, and say which list that is.
# - Make every choice on validation, then retrain on training + validation and use the test
#   split once.
#
# ## Going further (optional)
#
# - **Relevance on the scale of the trade.** Precision@10 counts expected hits, and hits
#   crowd at the top of a good ranking: swapping the 2nd candidate for the 12th loses more
#   than swapping the 52nd for the 62nd. A relevance that estimates each candidate's chance
#   of being picked (from its rank, its score, the user's activity) prices diversity in the
#   currency of the budget. Estimating such probabilities from scores is *probability
#   calibration*: a logistic regression on the scores (Platt, 1999, for one score) or a
#   non-decreasing step function (isotonic regression, Zadrozny and Elkan, 2002). Fit it on
#   users other than those λ is chosen on, with few parameters, or λ will follow their noise.
#   (Not to be confused with *calibrated recommendations*, Steck, 2018: lists whose genre
#   mix matches the mix of the user's history.)
# - **Diversity of the whole list.** MMR scores each candidate against the movies already
#   chosen. Determinantal point processes score the volume the whole list spans in feature
#   space; Chen et al. (2018) give a fast greedy algorithm. Max-sum diversification
#   (Gollapudi and Sharma, 2009) maximises relevance plus the sum of pairwise distances with
#   a greedy algorithm that adds the best *pair* at each step.
# - **Cheaper cross-fitting.** Every fold here retrains every source. Fewer folds cost less
#   but fit the sources on less data than the test's; sources that update cheaply (EASE and
#   item-kNN are closed-form) could be refitted per fold while the two-tower model is
#   fine-tuned instead of trained from scratch.
#
# ## Further reading
#
# - TensorFlow Recommenders tutorials: multitask recommenders, deep & cross networks,
#   listwise ranking. <https://www.tensorflow.org/recommenders/examples/multitask>
# - Rich Caruana. *Multitask Learning.* Machine Learning 28, 1997.
#   <https://doi.org/10.1023/A:1007379606734>
# - Steffen Rendle, Christoph Freudenthaler, Zeno Gantner, Lars Schmidt-Thieme. *BPR:
#   Bayesian Personalized Ranking from Implicit Feedback.* UAI 2009.
#   <https://arxiv.org/abs/1205.2618>
# - Yifan Hu, Yehuda Koren, Chris Volinsky. *Collaborative Filtering for Implicit Feedback
#   Datasets.* ICDM 2008. <https://doi.org/10.1109/ICDM.2008.22>
# - Benjamin Marlin, Richard Zemel. *Collaborative Prediction and Ranking with Non-Random
#   Missing Data.* RecSys 2009. <https://doi.org/10.1145/1639714.1639717>
# - Paolo Cremonesi, Yehuda Koren, Roberto Turrin. *Performance of Recommender Algorithms
#   on Top-N Recommendation Tasks.* RecSys 2010. <https://doi.org/10.1145/1864708.1864721>
# - Zhe Cao, Tao Qin, Tie-Yan Liu, Ming-Feng Tsai, Hang Li. *Learning to Rank: From Pairwise
#   Approach to Listwise Approach.* ICML 2007. <https://doi.org/10.1145/1273496.1273513>
# - Ruoxi Wang, Bin Fu, Gang Fu, Mingliang Wang. *Deep & Cross Network for Ad Click
#   Predictions.* ADKDD 2017. <https://arxiv.org/abs/1708.05123>
# - David H. Wolpert. *Stacked Generalization.* Neural Networks 5(2), 1992.
#   <https://doi.org/10.1016/S0893-6080(05)80023-1>
# - Harald Steck. *Embarrassingly Shallow Autoencoders for Sparse Data.* WWW 2019.
#   <https://arxiv.org/abs/1905.03375>
# - Paul Covington, Jay Adams, Emre Sargin. *Deep Neural Networks for YouTube
#   Recommendations.* RecSys 2016. <https://doi.org/10.1145/2959100.2959190>
# - Chantat Eksombatchai et al. *Pixie: A System for Recommending 3+ Billion Items to 200+
#   Million Users in Real-Time.* WWW 2018. <https://arxiv.org/abs/1711.07601>
# - Jaime Carbonell, Jade Goldstein. *The Use of MMR, Diversity-Based Reranking for
#   Reordering Documents and Producing Summaries.* SIGIR 1998.
#   <https://doi.org/10.1145/290941.291025>
# - Marius Kaminskas, Derek Bridge. *Diversity, Serendipity, Novelty, and Coverage: A
#   Survey and Empirical Analysis of Beyond-Accuracy Objectives in Recommender Systems.*
#   ACM TiiS 7(1), 2016. <https://doi.org/10.1145/2926720>
# - Cai-Nicolas Ziegler, Sean McNee, Joseph Konstan, Georg Lausen. *Improving
#   Recommendation Lists Through Topic Diversification.* WWW 2005.
#   <https://doi.org/10.1145/1060745.1060754>
# - Sreenivas Gollapudi, Aneesh Sharma. *An Axiomatic Approach for Result Diversification.*
#   WWW 2009. <https://doi.org/10.1145/1526709.1526761>
# - Laming Chen, Guoxin Zhang, Hanning Zhou. *Fast Greedy MAP Inference for Determinantal
#   Point Process to Improve Recommendation Diversity.* NeurIPS 2018.
#   <https://arxiv.org/abs/1709.05135>
# - Harald Steck. *Calibrated Recommendations.* RecSys 2018.
#   <https://doi.org/10.1145/3240323.3240372>
# - John Platt. *Probabilistic Outputs for Support Vector Machines and Comparisons to
#   Regularized Likelihood Methods.* In Advances in Large Margin Classifiers, MIT Press, 1999.
# - Bianca Zadrozny, Charles Elkan. *Transforming Classifier Scores into Accurate Multiclass
#   Probability Estimates.* KDD 2002. <https://doi.org/10.1145/775047.775151>
# - Xinyang Yi et al. *Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
#   Recommendations.* RecSys 2019. <https://doi.org/10.1145/3298689.3346996>
# - Tao Zhou et al. *Solving the apparent diversity-accuracy dilemma of recommender
#   systems.* PNAS 107(10), 2010. <https://doi.org/10.1073/pnas.1000488107>
# - Steffen Rendle, Walid Krichene, Li Zhang, John Anderson. *Neural Collaborative
#   Filtering vs. Matrix Factorization Revisited.* RecSys 2020.
#   <https://arxiv.org/abs/2005.09683>
