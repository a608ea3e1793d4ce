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
# # Lesson 06 · Multitask, implicit and diverse ranking
#
# **You will learn to**
#
# - tell pointwise, pairwise and listwise objectives apart, and explicit from implicit
#   feedback, and explain why a model of *how many stars* is a poor guide to *what to
#   watch next*;
# - train one TensorFlow Recommenders (TFRS) model on two tasks at once (retrieval and
#   rating) with shared embeddings, and read the loss weights as a knob;
# - train an implicit-feedback ranker with a pairwise BPR loss on rated vs sampled unrated
#   movies, with shallow and deeper towers;
# - re-rank for diversity with maximal marginal relevance (MMR), and measure what it costs
#   in precision and buys in intra-list diversity, coverage and novelty.
#
# **How to work through it:** run the cells top to bottom. The four exercises (6.1 to 6.4)
# are a method or function whose body raises `NotImplementedError`; implement it, then run
# `course check 6.1` (or `course check 06`). Lesson 04 (ranking) is the starting point:
# it ended with a puzzle, a rating model that predicts stars well can still *lower*
# precision@10 when it re-ranks the retrieval candidates. This lesson explains why and
# tries three remedies, measured side by side.

# %% tags=["setup"]
# recsys_course first: it sets TF_USE_LEGACY_KERAS=1, so that tf.keras is Keras 2 (tf-keras),
# which TensorFlow Recommenders needs. ("isort: split" keeps import sorters from moving it.)
import recsys_course

# isort: split
import time
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_course import evaluation, models
from recsys_course.claims import pick, say
from recsys_course.models import id_tower

SEED = recsys_course.seed_everything(42)
K = 10  # the cutoff of every top-k metric in this lesson
N_CANDIDATES = 100  # how many movies retrieval hands to the re-rankers per user
LIKED = 4.0  # a held-out rating of at least this many stars counts as "liked"
VALIDATION_FRACTION = 0.1  # of the training ratings, held out for every choice
EMBEDDING_DIM = 32
EPOCHS = 5  # of the multitask and implicit rankers
RETRIEVAL_MAX_EPOCHS = 10  # the retrieval stage's epochs are chosen on validation, up to this
RETRIEVAL_PATIENCE = 2  # stop after this many epochs without a better validation recall
# (rating weight, retrieval weight) pairs tried for the multitask model; (1, 0) is a pure
# rating model, (0, 1) a pure retrieval model.
TASK_WEIGHTS = ((1.0, 0.0), (1.0, 0.1), (1.0, 1.0), (0.1, 1.0), (0.0, 1.0))
MMR_LAMBDAS = (1.0, 0.98, 0.96, 0.94, 0.92) + tuple(round(0.9 - 0.05 * i, 2) for i in range(18))  # ..., 0.05
MAX_PRECISION_LOSS = 0.05  # MMR may cost at most this share of precision@10 on validation
COST_SE = 1.0  # ... counting the cost as this many standard errors above its validation estimate
BLEND_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9)  # weights of the retrieval rank tried in the blends

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
# What to optimise then? Learning to rank offers three families (Liu, 2009):
#
# | objective | one training example | loss, for a score $s$ | examples |
# |---|---|---|---|
# | **pointwise** | one (user, movie) | squared error on the rating, or log loss on "rated or not" | lesson 04's rating model |
# | **pairwise** | a user and two movies, one preferred | $-\log \sigma(s_i - s_j)$ when $i$ beats $j$ | RankNet (Burges et al., 2005), BPR (Rendle et al., 2009) |
# | **listwise** | a user's whole list | softmax cross-entropy over the list | ListNet (Cao et al., 2007), TFRS's retrieval task |
#
# The retrieval model of lesson 02 is in fact listwise on implicit data: its in-batch
# softmax asks "which of these movies did the user pick?". That is why its order is a hard
# baseline for a rating model. This lesson tries three ways to do better:
#
# 1. **multitask**: train the rating model *and* the retrieval model at once, sharing the
#    embeddings, so the rating head sees what users pick;
# 2. **implicit**: drop the stars and train a ranker on "rated beats not rated", pairwise;
# 3. **diverse**: once the order is good, trade a little accuracy for lists that are not ten
#    variations of one movie.

# %% [markdown]
# ## 2. Data, split and the retrieval stage
#
# The split is lesson 04's: a seeded random 80/20 split into train and test, and a tenth of
# train held out again for validation. Every model below is trained on the *fit* part;
# every choice (loss weights and scoring head, tower depth, MMR's λ) is made on validation;
# then every model is trained again on the whole training split, and the test split is used
# once, at the end. A random split lets models peek at the future (lesson 00), so
# compare models with each other rather than reading the absolute numbers as production
# numbers.

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
        gains=np.where(stars > 0, 2.0**stars - 1.0, 0.0),
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


def genre_matrix(movies: pd.DataFrame, movie_ids: np.ndarray) -> np.ndarray:
    """float [n_items, n_genres] multi-hot genres, rows in the order of ``movie_ids``."""
    names = sorted({g for gs in movies["movie_genres"] for g in gs})
    column = {g: j for j, g in enumerate(names)}
    by_id = movies.assign(movie_id=movies["movie_id"].astype(str)).set_index("movie_id")["movie_genres"]
    out = np.zeros((len(movie_ids), len(names)))
    for i, movie in enumerate(movie_ids):
        out[i, [column[g] for g in by_id.get(movie, [])]] = 1.0
    return out


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
genres = genre_matrix(data.movies, movie_ids)
probability = evaluation.item_probability(  # popularity among the fit users, for novelty
    evaluation.interaction_matrix(fit, np.unique(fit["user_id"].astype(str)), movie_ids))
val_candidates, val_retrieval_scores = candidates_for(retrieval, val_stage)
print(f"retrieval trained and queried in {time.perf_counter() - started:.1f} s; "
      f"{len(val_stage.users)} validation users")
retrieval_curve.to_frame().T.round(4)

# %%
say(f"Validation recall@{N_CANDIDATES} peaks after **{retrieval_epochs} epochs** "
    f"({retrieval_curve.max():.3f}): that many epochs train the retrieval stage from now on.")

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
        # BEGIN SOLUTION
        users = self.user_model(features["user_id"])
        movies = self.movie_model(features["movie_id"])
        ratings = self.rating_model(tf.concat([users, movies], axis=1))
        rating_loss = self.rating_task(labels=features["user_rating"], predictions=ratings)
        retrieval_loss = self.retrieval_task(users, movies, compute_metrics=False)
        return self.rating_weight * rating_loss + self.retrieval_weight * retrieval_loss
        # END SOLUTION


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
pure = sweep.loc["1 / 0"]
chosen = sweep.loc[f"{best_weights[0]:g} / {best_weights[1]:g}"]
say(
    f"The pure rating model (weights 1 / 0) reaches a validation RMSE of {pure['validation RMSE']:.3f} "
    f"and re-ranked precision@10 of {pure['re-ranked by rating head']:.3f}. Validation picks weights "
    f"**{best_weights[0]:g} / {best_weights[1]:g}** scored by the **{best_head}**: re-ranked "
    f"precision@10 {chosen[f're-ranked by {best_head}']:.3f}"
    + pick(best_head == "rating head",
           pick(best_weights == (1.0, 0.0), ", so on this data the retrieval task does not help the rating head.",
                ": the retrieval task, used only in training, makes the rating head a better ranker."),
           ". The stars alone are not the best guide to the order: the head trained on *which* movies "
           "users rate " + pick(best_head == "retrieval head", "ranks better on its own.",
                                 "adds what the rating head misses."))
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
# learns an order, not a calibrated value.
#
# ### Exercise 6.4 · Sample unrated movies
#
# Negatives are drawn afresh every epoch. Implement `sample_unrated`: one random unrated
# movie per (user, positive) row, uniform among that user's unrated movies.

# %% tags=["exercise"] exercise="6.4"
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
    # BEGIN SOLUTION
    rated = np.asarray(rated, dtype=bool)
    users = np.asarray(users, dtype=np.int64)
    full = rated[users].all(axis=1)
    if full.any():
        raise ValueError(f"user index {users[full][0]} has rated every item: no negative to sample")
    # Rejection sampling: draw uniformly, redraw the rows that hit a rated item. Uniform
    # over the whole catalogue conditioned on "unrated" is uniform over the unrated items.
    negatives = rng.integers(0, rated.shape[1], size=len(users))
    redo = rated[users, negatives]
    while redo.any():
        negatives[redo] = rng.integers(0, rated.shape[1], size=int(redo.sum()))
        redo = rated[users, negatives]
    return negatives
    # END SOLUTION


# %% [markdown]
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
    # BEGIN SOLUTION
    difference = tf.cast(positive_scores, tf.float32) - tf.cast(negative_scores, tf.float32)
    return tf.reduce_mean(tf.math.softplus(-difference))
    # END SOLUTION


# %% [markdown]
# The ranker scores a (user, movie) pair by the dot product of two towers plus a per-movie
# bias (a movie's general appeal). The *shallow* towers are id embeddings, as in
# retrieval; the *deeper* ones add a hidden layer on top of each embedding, the "deeper
# model" the TFRS tutorials suggest as a next step. Deeper is not free: more parameters to
# fit from the same few ratings per user. We measure both on validation and keep the better.

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
depths = {"shallow (embeddings)": (), "deeper (embedding + 64 relu + linear)": (64,)}
implicit_models, depth_rows = {}, {}
for name, hidden in depths.items():
    t0 = time.perf_counter()
    implicit_models[name] = train_implicit(fit, movie_ids, hidden)
    seconds = time.perf_counter() - t0
    ranked = order_by(val_candidates, implicit_scores(implicit_models[name], val_stage, val_candidates))
    depth_rows[name] = {**measure(ranked, val_stage, genres, probability), "training seconds": seconds}
depth_table = pd.DataFrame(depth_rows).T
best_depth = depth_table["precision@10 rated"].idxmax()
implicit = implicit_models[best_depth]
print(f"two implicit rankers trained in {time.perf_counter() - started:.1f} s")
depth_table[["precision@10 rated", "precision@10 liked", "ndcg@10", "training seconds"]].round(4)

# %%
shallow, deeper = depth_table.iloc[0], depth_table.iloc[1]
say(
    f"On validation the **{best_depth}** towers re-rank "
    + pick(depth_table["precision@10 rated"].max() - depth_table["precision@10 rated"].min() >= 0.001,
           "better", "about as well, and are kept")
    + f" (precision@10 {depth_table.loc[best_depth, 'precision@10 rated']:.4f} against "
    f"{depth_table['precision@10 rated'].min():.4f}); the deeper towers took "
    f"{deeper['training seconds'] / shallow['training seconds']:.1f} times as long to train. "
    + pick(best_depth.startswith("shallow"),
           "With only each user's own ratings to learn from, extra layers mostly add parameters to fit; "
           "Rendle et al. (2020) found a well-tuned dot product hard to beat.",
           "Here the extra layer pays for itself.")
)

# %% [markdown]
# ## 5. Diversity: maximal marginal relevance
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
# ### Exercise 6.3 · The MMR re-ranker

# %% tags=["exercise"] exercise="6.3"
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
    # BEGIN SOLUTION
    relevance = np.asarray(relevance, dtype=float)
    similarity = np.asarray(similarity, dtype=float)
    m = len(relevance)
    chosen: list[int] = []
    available = np.ones(m, dtype=bool)
    redundancy = np.zeros(m)  # max similarity of each candidate to the chosen ones so far
    for _ in range(min(k, m)):
        value = lam * relevance - (1.0 - lam) * redundancy if chosen else relevance.copy()
        value[~available] = -np.inf
        best = int(np.argmax(value))  # argmax returns the first maximum: lowest position
        chosen.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, similarity[best])
    return np.array(chosen, dtype=np.int64)
    # END SOLUTION


# %% [markdown]
# Five details decide how much diversity MMR buys for a given loss of precision.
#
# 1. **Relevance on the scale of the trade.** MMR adds relevance and similarity, so both
#    must live on fixed, comparable scales. The ranker's raw BPR scores have none: only their
#    differences were trained, their spread changes from one training run to the next (and we
#    retrain before the test), and min-max scaling hangs on each user's single best and worst
#    candidate. The candidate's **rank** is a fixed scale, and the simplest relevance is
#    $1 - \text{rank}/m$ among $m$ candidates. But that scale says one step down the list always
#    costs the same, and precision does not work that way: in a ranking worth using, hits crowd
#    at the top, so swapping the 2nd candidate for the 12th loses more hits than swapping the
#    52nd for the 62nd.
#    What precision@10 counts is **expected hits**, so we measure them: on validation, the
#    share of users whose candidate at rank $r$ was a hit. A few hundred users stand behind
#    each rank, so the raw shares are noisy; we fit them with a curve of two numbers,
#    $h(r) = a + b / \log_2(r + 2)$ (the shape of NDCG's position discount), by least squares
#    weighted by the users at each rank, with $b \ge 0$ so that it never rises. Why not a free
#    value per rank, say an isotonic (non-increasing) fit? λ is chosen on these same
#    validation users, and a curve with a value per rank follows their noise: MMR would keep
#    exactly the ranks that happened to hold hits, and validation would promise a cheaper
#    trade than new users get. Two numbers fitted on all ranks at once cannot follow single
#    ranks. MMR's relevance is then $h(\text{rank}) / h(0)$, so λ weighs expected hits against
#    diversity, the very two numbers the budget compares; the curve is a function of the rank,
#    so it applies unchanged to the retrained model.
# 2. **Expected hits differ between users.** Someone who rated 500 movies has more held-out
#    movies to hit than someone who rated 20, at every rank. A list of a light user costs
#    fewer expected hits to diversify, so precision averaged over users falls less when the
#    budget is spent on them. The third relevance scale multiplies $h(\text{rank})$ by the mean
#    hits in the top 10 of the user's **activity group** (a fifth of the users, by number of
#    ratings), made non-decreasing in activity by isotonic regression (pool adjacent
#    violators, the tool Zadrozny and Elkan, 2002, use to turn scores into probabilities):
#    five numbers, one per group. The fourth scale goes one step further and **calibrates**
#    each candidate's score: a logistic regression, fitted on the validation candidates, of
#    "this candidate was a hit" on its rank discount $1/\log_2(r + 2)$, its score as a
#    z-score among the user's candidates (a candidate far above the user's others is a safer
#    bet than its rank alone says) and the log of the user's number of ratings (Platt
#    scaling, 1999, with two more inputs). Four numbers, fitted on tens of thousands of
#    candidates, so it cannot follow single users either.
# 3. **Relevance that knows both stages and the user's taste.** MMR's swaps bring in
#    candidates from below the top 10, and there the implicit ranker's own order is a poor
#    guide: of two candidates it puts at ranks 15 and 16, the one the *retrieval* stage also
#    placed high is likely the better bet (the blends of section 6 measure whether the two
#    ranks together predict hits better than either), and so is the one in genres the user
#    rates often. The fifth scale, **two-stage calibrated**, gives the calibrated model two
#    more inputs: the candidate's retrieval rank discount and the user's **genre taste**, the
#    cosine between the sum of the genre vectors of the movies the user rated and the
#    candidate's genre vector. Six numbers. Its λ = 1 order is no longer the implicit
#    ranker's: the table's "start cost" shows how its precision compares (negative: more
#    precise), and taste pulls it towards the user's usual genres.
# 4. **A similarity that matches the metric.** Intra-list diversity averages the distance over
#    *all* pairs of the list. Classic MMR penalises a candidate only for its *nearest* chosen
#    movie (the max). With the *mean* similarity to the chosen movies instead, each greedy step
#    adds the candidate that most raises relevance plus intra-list diversity: this is the
#    greedy algorithm for *max-sum diversification* (Gollapudi and Sharma, 2009).
# 5. **λ chosen with a budget that allows for noise.** For each variant (five relevance
#    scales × two redundancies), λ goes down from 1 (in steps of 0.02 to 0.9, then of 0.05)
#    and stops before the first setting that *could* cost more than 5 % of the implicit
#    ranker's validation precision@10: its measured cost plus one standard error. The most
#    diverse setting before that point is kept, and the variant with the most diverse kept setting wins. Why the
#    margin? A few hundred validation users measure a cost only roughly (the standard error of
#    the chosen setting is printed below), and the most diverse setting whose measured cost is just under 5 % tends to be
#    one whose cost validation happened to underestimate: new users then pay more (the
#    *winner's curse*). The standard error comes from the users themselves: each user's
#    precision@10 under the implicit ranker minus under MMR at λ, their standard deviation
#    over $\sqrt{n}$ users. We chose one standard error without looking at any test split,
#    with the first four scales: on three datasets (synthetic,
#    MovieLens 100K, MovieLens latest-small) we split the validation users into random halves
#    six times, chose on one half and measured on the other. Without a margin the cost on the
#    other half came out above 5 % on average (5.4 to 6.9 %); with 1.645 standard errors (a
#    one-sided 95 % bound) it came out between 2 and 3 % and bought much less diversity; one
#    standard error kept it between 3.6 and 4.5 % on average. Cost and gain are measured
#    against one list for every variant, the **implicit ranker's** order: MMR is the step
#    after it, and a variant may spend on diversity the precision its better start gains.

# %% tags=["setup"]
REDUNDANCY = ("max", "mean")  # classic MMR; MMR with the mean similarity (max-sum diversification)
# MMR's relevance scales: the rank; the validation hit rate at that rank; the same times the
# hit rate of users as active as this one; a hit probability calibrated from rank, score and
# activity; the same with the retrieval rank and the user's genre taste as two more inputs.
RELEVANCE = ("rank", "hit rate", "hit rate x activity", "calibrated score", "two-stage calibrated")
N_ACTIVITY_GROUPS = 5  # users are split into this many groups by their number of ratings


def decreasing_fit(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-increasing sequence closest to ``values`` in weighted least squares (isotonic
    regression by pool adjacent violators): float [n] for ``values`` and ``weights`` float
    [n], weights >= 0. An entry of weight 0 carries no information: it gets the fitted value
    of the entry before it (of the first weighted entry when it comes first).

    Raises ValueError when the lengths differ, a weight is negative or every weight is 0."""
    values, weights = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    if values.shape != weights.shape or values.ndim != 1:
        raise ValueError(f"values and weights must be 1-d of one length, got {values.shape} and {weights.shape}")
    if (weights < 0).any() or not (weights > 0).any():
        raise ValueError("weights must be >= 0 with at least one > 0 (e.g. how many users each value averages)")
    used = np.flatnonzero(weights > 0)
    blocks: list[list[float]] = []  # [weighted mean, total weight, number of entries], non-increasing
    for v, w in zip(values[used], weights[used]):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:  # a rise: pool the two blocks
            (v2, w2, n2), (v1, w1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    fitted = np.repeat([b[0] for b in blocks], [b[2] for b in blocks])
    # Entries without weight take the value of the last weighted entry at or before them.
    last_used = np.maximum(np.searchsorted(used, np.arange(len(values)), side="right") - 1, 0)
    return fitted[last_used]


def activity_groups(seen: np.ndarray, n_groups: int = N_ACTIVITY_GROUPS) -> np.ndarray:
    """int [n_users] in 0 .. n_groups - 1: each user's group by the number of items they have
    seen (``seen`` bool [n_users, n_items]), cut at the quantiles of that number among these
    users; 0 holds the least active. Users with equal counts share a group."""
    counts = np.asarray(seen).sum(axis=1)
    edges = np.quantile(counts, np.arange(1, n_groups) / n_groups)
    return np.searchsorted(edges, counts, side="right")


class HitRate(NamedTuple):
    """How likely a candidate is a hit, estimated on validation.

    At base rank r (0 = best) the hit rate is ``max(intercept + slope / log2(r + 2), 0)``
    (``slope`` >= 0, so it never rises with r); ``by_group`` float [N_ACTIVITY_GROUPS]: the
    mean hits in the top K of the users of each activity group, made non-decreasing in activity.
    ``calibration`` float [4]: the weights of a logistic model of "this candidate is a hit" on
    ``calibration_features`` (None when not fitted); ``calibrated_top``: the largest probability
    it gave a validation candidate. ``two_stage`` float [6] and ``two_stage_top``: the same for
    the model that also sees the retrieval rank and the genre taste (None when not fitted).
    """

    intercept: float
    slope: float
    by_group: np.ndarray
    calibration: np.ndarray | None = None
    calibrated_top: float = 1.0
    two_stage: np.ndarray | None = None
    two_stage_top: float = 1.0

    def at(self, ranks: np.ndarray) -> np.ndarray:
        """The hit rate at each of ``ranks`` (int, any shape, >= 0)."""
        return np.maximum(self.intercept + self.slope / np.log2(np.asarray(ranks) + 2.0), 0.0)


def hits_by_rank(candidates: np.ndarray, scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """bool [n_users, n]: whether each user's candidate at base rank r (by ``scores``, best
    first; padding -1 ranks last and is never a hit) is ``relevant`` (bool [n_users, n_items])."""
    ordered = order_by(candidates, scores, k=candidates.shape[1])
    return (ordered >= 0) & np.take_along_axis(relevant, np.maximum(ordered, 0), axis=1)


def fit_rank_curve(rate: np.ndarray, users: np.ndarray) -> tuple[float, float]:
    """``(intercept, slope)`` of the curve ``intercept + slope / log2(r + 2)`` closest to the
    observed hit rate ``rate`` float [n] at ranks r = 0 .. n-1, in least squares weighted by
    ``users`` [n] (how many users each rate averages; ranks without users drop out). When the
    best fit rises with the rank, the slope is 0 and the intercept the weighted mean rate.

    Raises ValueError when the lengths differ, a weight is negative or fewer than two ranks
    have users."""
    rate, users = np.asarray(rate, dtype=float), np.asarray(users, dtype=float)
    if rate.shape != users.shape or rate.ndim != 1:
        raise ValueError(f"rate and users must be 1-d of one length, got {rate.shape} and {users.shape}")
    if (users < 0).any() or (users > 0).sum() < 2:
        raise ValueError("users must be >= 0, with users at two ranks at least, to fit a curve")
    x = 1.0 / np.log2(np.arange(len(rate)) + 2.0)
    w = users / users.sum()
    x_mean, y_mean = w @ x, w @ rate
    slope = (w @ ((x - x_mean) * (rate - y_mean))) / (w @ (x - x_mean) ** 2)
    slope = max(float(slope), 0.0)
    return float(y_mean - slope * x_mean), slope


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """``rows`` float [n, d] scaled to length 1 each; an all-zero row stays zero (so its
    cosine with anything is 0)."""
    rows = np.asarray(rows, dtype=float)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def genre_taste(candidates: np.ndarray, seen: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """float [n_users, n]: the cosine between each user's genre profile (the sum of the genre
    rows of the movies they have seen, ``seen`` bool [n_users, n_items]; ``genres`` float
    [n_items, n_genres]) and the genres of each of their candidates [n_users, n]. 0 for
    padding (-1), for a user who has seen nothing and for a movie without genres."""
    profile = unit_rows(np.asarray(seen, dtype=float) @ np.asarray(genres, dtype=float))
    taste = np.einsum("ug,ung->un", profile, unit_rows(genres)[np.maximum(candidates, 0)])
    return np.where(candidates >= 0, taste, 0.0)


def calibration_features(candidates: np.ndarray, scores: np.ndarray, seen: np.ndarray,
                         retrieval_scores: np.ndarray | None = None,
                         genres: np.ndarray | None = None) -> np.ndarray:
    """float [n_users, n, 4] for each candidate [n_users, n] (padding -1 gets zeros): 1; the
    rank discount 1 / log2(rank + 2) of its base rank under ``scores``; its score as a z-score
    among the user's candidates (how far the ranker puts it above or below the user's other
    candidates, a scale that survives retraining); log(1 + the number of movies the user has
    seen, ``seen`` bool [n_users, n_items]). With ``retrieval_scores`` [n_users, n] and
    ``genres`` [n_items, n_genres] (both or neither), two more columns, [n_users, n, 6]: the
    rank discount of its rank under the retrieval scores, and its ``genre_taste``."""
    if (retrieval_scores is None) != (genres is None):
        raise ValueError("pass both retrieval_scores and genres (the two-stage features) or neither")
    valid = candidates >= 0
    ranks = candidate_ranks(np.where(valid, scores, -np.inf))
    masked = np.where(valid, scores, np.nan)
    with np.errstate(invalid="ignore"):  # a user without candidates has an all-nan row
        spread = np.nanstd(masked, axis=1, keepdims=True)
        z = (masked - np.nanmean(masked, axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
    activity = np.broadcast_to(np.log1p(np.asarray(seen).sum(axis=1))[:, None], z.shape)
    columns = [np.ones_like(z), 1.0 / np.log2(ranks + 2.0), z, activity]
    if retrieval_scores is not None:
        retrieval_ranks = candidate_ranks(np.where(valid, retrieval_scores, -np.inf))
        columns += [1.0 / np.log2(retrieval_ranks + 2.0), genre_taste(candidates, seen, genres)]
    out = np.stack(columns, axis=-1)
    return np.where(valid[..., None], np.nan_to_num(out), 0.0)


def logistic_fit(features: np.ndarray, labels: np.ndarray, l2: float = 1e-6, steps: int = 50) -> np.ndarray:
    """Weights float [d] of a logistic regression of ``labels`` (0/1, [n]) on ``features``
    [n, d] (include a column of ones for an intercept), minimising the mean log loss plus
    ``l2`` / 2 |w|² by Newton's method (a handful of steps for a few features)."""
    x, y = np.asarray(features, dtype=float), np.asarray(labels, dtype=float)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"features must be [n, d] and labels [n], got {x.shape} and {y.shape}")
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) / len(y) + l2 * w
        hessian = (x * (p * (1.0 - p))[:, None]).T @ x / len(y) + l2 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w = w - step
        if np.abs(step).max() < 1e-9:
            break
    return w


def _calibrate(features: np.ndarray, valid: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, float]:
    """``logistic_fit`` of ``hits`` on ``features`` over the ``valid`` candidates, and the
    largest probability it gives one of them."""
    weights = logistic_fit(features[valid], hits[valid])
    return weights, float((1.0 / (1.0 + np.exp(-(features[valid] @ weights)))).max())


def fit_hit_rate(candidates: np.ndarray, scores: np.ndarray, stage: Stage,
                 retrieval_scores: np.ndarray | None = None, genres: np.ndarray | None = None) -> HitRate:
    """Estimate ``HitRate`` from the candidates [n_users, n] of ``stage``'s users (padding -1
    skipped) ordered by ``scores``; hits are ``stage.rated``. The two-stage model is fitted
    only when ``retrieval_scores`` and ``genres`` are given (see ``calibration_features``)."""
    hit = hits_by_rank(candidates, scores, stage.rated)
    listed = (candidates >= 0).sum(axis=1)
    users = (listed[:, None] > np.arange(candidates.shape[1])).sum(axis=0)  # users with a candidate at rank r
    intercept, slope = fit_rank_curve(hit.sum(axis=0) / np.maximum(users, 1), users)
    if intercept + slope <= 0:
        raise ValueError("no candidate of any validation user was a hit: the hit rate by rank cannot be "
                         "estimated; use more validation data")
    groups = activity_groups(stage.seen)
    top_hits = hit[:, :K].sum(axis=1)
    size = np.bincount(groups, minlength=N_ACTIVITY_GROUPS)
    mean_hits = np.bincount(groups, weights=top_hits, minlength=N_ACTIVITY_GROUPS) / np.maximum(size, 1)
    by_group = decreasing_fit(mean_hits[::-1], size[::-1].astype(float))[::-1]  # non-decreasing
    valid = candidates >= 0
    hits = np.take_along_axis(stage.rated, np.maximum(candidates, 0), axis=1)
    # The two-stage features extend the four of the plain calibration (same first columns).
    features = calibration_features(candidates, scores, stage.seen, retrieval_scores, genres)
    weights, top = _calibrate(features[..., :4], valid, hits)
    two_stage, two_stage_top = _calibrate(features, valid, hits) if retrieval_scores is not None else (None, 1.0)
    return HitRate(intercept=intercept, slope=slope, by_group=by_group, calibration=weights, calibrated_top=top,
                   two_stage=two_stage, two_stage_top=two_stage_top)


def mmr_relevance(scale: str, candidates: np.ndarray, scores: np.ndarray, hit_rate: HitRate,
                  groups: np.ndarray, seen: np.ndarray | None = None,
                  retrieval_scores: np.ndarray | None = None, genres: np.ndarray | None = None) -> np.ndarray:
    """MMR's relevance of each candidate [n_users, n] (padding -1 ranks last), float
    [n_users, n], from its base rank under ``scores`` [n_users, n]:

    - "rank": 1 - rank / n;
    - "hit rate": ``hit_rate.at(rank)`` over its value at rank 0;
    - "hit rate x activity": the same times ``hit_rate.by_group`` of the user's group
      (``groups`` int [n_users]), over its largest value;
    - "calibrated score": the probability of a hit from ``hit_rate.calibration`` and
      ``calibration_features`` (needs ``seen`` bool [n_users, n_items]), over
      ``hit_rate.calibrated_top`` (so about 1 at most on new users too);
    - "two-stage calibrated": the same with ``hit_rate.two_stage`` and the six features that
      add the rank under ``retrieval_scores`` [n_users, n] and the genre taste (``genres``).
    """
    if scale not in RELEVANCE:
        raise ValueError(f"scale must be one of {RELEVANCE}, got {scale!r}")
    if scale in ("calibrated score", "two-stage calibrated"):
        two_stage = scale == "two-stage calibrated"
        weights, top = ((hit_rate.two_stage, hit_rate.two_stage_top) if two_stage
                        else (hit_rate.calibration, hit_rate.calibrated_top))
        inputs = (retrieval_scores, genres) if two_stage else (None, None)
        if weights is None or seen is None or (two_stage and (retrieval_scores is None or genres is None)):
            needs = " with retrieval_scores and genres" if two_stage else ""
            raise ValueError(f"the {scale!r} scale needs its calibration weights in hit_rate (fit_hit_rate"
                             f"{needs}), seen" + (", retrieval_scores and genres" if two_stage else ""))
        features = calibration_features(candidates, scores, seen, *inputs)
        return np.where(candidates >= 0, 1.0 / (1.0 + np.exp(-(features @ weights))), 0.0) / top
    ranks = candidate_ranks(np.where(candidates >= 0, scores, -np.inf))
    if scale == "rank":
        return 1.0 - ranks / scores.shape[1]
    by_rank = hit_rate.at(ranks) / hit_rate.at(0)
    if scale == "hit rate":
        return by_rank
    top = hit_rate.by_group.max()
    if top <= 0:
        raise ValueError("hit_rate.by_group is 0 everywhere: no activity group had a hit")
    return by_rank * (hit_rate.by_group[groups] / top)[:, None]


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


def diversify(candidates: np.ndarray, scores: np.ndarray, relevance: np.ndarray, genres: np.ndarray,
              lam: float, redundancy: str = "max", k: int = K) -> np.ndarray:
    """MMR over each user's candidates [n_users, n] (padding -1 skipped) with MMR relevance
    ``relevance`` [n_users, n] (see ``mmr_relevance``), similarity = cosine of the genre
    vectors, redundancy = "max" (``mmr_rerank``) or "mean" (``mean_mmr_rerank``). Candidates are
    handed to MMR in the base order of ``scores``, so ties of relevance go to the better base
    rank and λ = 1 returns the base order. Returns item indices [n_users, k]."""
    rerank = {"max": mmr_rerank, "mean": mean_mmr_rerank}[redundancy]
    unit = unit_rows(genres)
    out = np.full((len(candidates), k), evaluation.PAD, dtype=np.int64)
    for row, (items, s, r) in enumerate(zip(candidates, scores, relevance)):
        keep = items >= 0
        base = np.argsort(-s[keep], kind="stable")
        items, r = items[keep][base], r[keep][base]
        picked = items[rerank(r, unit[items] @ unit[items].T, k, lam)]
        out[row, : len(picked)] = picked
    return out


def precision_cost(base: np.ndarray, other: np.ndarray, z: float = COST_SE) -> tuple[float, float]:
    """``(cost, bound)`` of a list against a base list, from each user's precision@10 under
    both (``base``, ``other`` float [n_users]; users with ``nan`` in ``base``, who had nothing
    to hit, are left out): cost = 1 - mean(other) / mean(base), the share of precision lost;
    bound = cost + ``z`` standard errors, the standard error of the users' paired drops
    (base - other) over mean(base). The bound is infinite with fewer than two users.

    Raises ValueError when the lengths differ or no user's base precision is positive."""
    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    if base.shape != other.shape or base.ndim != 1:
        raise ValueError(f"base and other must be 1-d of one length, got {base.shape} and {other.shape}")
    users = ~np.isnan(base)
    mean = base[users].mean() if users.any() else 0.0
    if mean <= 0:
        raise ValueError("the base list hits nothing: a share of its precision is undefined")
    drop = base[users] - other[users]
    cost = drop.mean() / mean
    error = drop.std(ddof=1) / np.sqrt(users.sum()) / mean if users.sum() > 1 else np.inf
    return float(cost), float(cost + z * error)


def mmr_curve(candidates: np.ndarray, scores: np.ndarray, relevance: np.ndarray, stage: Stage,
              genres: np.ndarray, probability: np.ndarray, redundancy: str, reference: np.ndarray) -> pd.DataFrame:
    """``measure`` of ``diversify`` for every λ of ``MMR_LAMBDAS`` (rows, in that order; the
    first is 1, the order by relevance alone), with each λ's "precision cost" and "cost bound"
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
    already exceeds it (the variant's own order is too imprecise)."""
    within = curve["cost bound"].to_numpy() <= max_loss
    allowed = curve.iloc[: int(np.argmin(within)) if not within.all() else len(curve)]
    return float(allowed["diversity@10"].idxmax()) if len(allowed) else float("nan")


def mmr_on_validation(candidates: np.ndarray, scores: np.ndarray, stage: Stage, genres: np.ndarray,
                      probability: np.ndarray, retrieval_scores: np.ndarray) -> tuple[HitRate, pd.DataFrame, dict]:
    """Every MMR variant (relevance scale x redundancy) on validation: the hit rates fitted on
    ``stage``, a table and each variant's ``mmr_curve`` by (scale, redundancy). Costs and gains
    are against one reference for all variants, the top K by ``scores`` (the implicit ranker's
    list). A table row per variant: "start cost", the cost of its λ = 1 order (negative when
    that order is more precise than the reference); the affordable λ (``nan`` when there is
    none); and precision@10, diversity@10, diversity gain, precision cost and cost bound there."""
    hit_rate = fit_hit_rate(candidates, scores, stage, retrieval_scores, genres)
    groups = activity_groups(stage.seen)
    reference = order_by(candidates, scores)
    reference_diversity = evaluation.intra_list_diversity_at_k(reference, genres, K)
    curves, rows = {}, {}
    for scale in RELEVANCE:
        relevance = mmr_relevance(scale, candidates, scores, hit_rate, groups, stage.seen, retrieval_scores, genres)
        for how in REDUNDANCY:
            curve = curves[scale, how] = mmr_curve(candidates, scores, relevance, stage, genres, probability, how,
                                                   reference)
            lam = affordable_lambda(curve)
            kept = curve.loc[lam] if not np.isnan(lam) else pd.Series(np.nan, index=curve.columns)
            rows[scale, how] = {"start cost": curve.iloc[0]["precision cost"], "λ": lam,
                                "precision@10 rated": kept["precision@10 rated"],
                                "diversity@10": kept["diversity@10"],
                                "diversity gain": kept["diversity@10"] / reference_diversity - 1,
                                "precision cost": kept["precision cost"], "cost bound": kept["cost bound"]}
    table = pd.DataFrame(rows).T.rename_axis(["relevance", "redundancy"])
    return hit_rate, table, curves


def chosen_mmr(table: pd.DataFrame) -> tuple[str, str, float]:
    """``(relevance, redundancy, λ)`` of the row of ``mmr_on_validation``'s table with the most
    diverse affordable setting (the first such row when several tie; rows without an
    affordable λ are skipped)."""
    relevance, redundancy = table["diversity@10"].idxmax()
    return relevance, redundancy, float(table.loc[(relevance, redundancy), "λ"])


# %% [markdown]
# ## 6. All re-rankers
#
# Five ways to order the same 100 candidates, a blend, and MMR on top of the implicit
# ranker. The **blends** are lesson 04's rank fusion: minus the weighted sum of a
# candidate's retrieval rank and its rank under a learned re-ranker (the rating model, or
# the implicit ranker), the weight of the retrieval rank chosen on validation among
# `BLEND_WEIGHTS`. A re-ranker that ignores the retrieval score throws away what the first
# stage knows; a blend keeps it. The **multitask** re-ranker scores with the weights and head
# chosen above.

# %% tags=["setup"]
class Choices(NamedTuple):
    """Everything chosen on validation that the re-rankers need at test time."""

    multitask_head: str  # one of HEADS
    rating_blend: float  # weight of the retrieval rank in "blend: retrieval + rating ranks"
    implicit_blend: float  # weight of the retrieval rank in "blend: retrieval + implicit ranks"
    lam: float  # MMR's λ
    redundancy: str  # MMR's redundancy, one of REDUNDANCY
    relevance: str  # MMR's relevance scale, one of RELEVANCE
    hit_rate: HitRate  # the hit rates by rank and activity group, fitted on validation


def best_blend_weight(candidates: np.ndarray, retrieval_scores: np.ndarray, other: np.ndarray,
                      stage: Stage) -> float:
    """The weight of ``BLEND_WEIGHTS`` whose rank blend of retrieval and ``other`` scores has
    the best precision@10 on ``stage`` (the first of equals)."""
    precision = [evaluation.precision_at_k(order_by(candidates, rank_blend(retrieval_scores, other, w)),
                                           stage.rated, K) for w in BLEND_WEIGHTS]
    return BLEND_WEIGHTS[int(np.argmax(precision))]


def mmr_lists(stage: Stage, candidates: np.ndarray, scores: np.ndarray, genres: np.ndarray,
              choices: Choices, retrieval_scores: np.ndarray) -> np.ndarray:
    """MMR with the choices made on validation over candidates ordered by ``scores`` (both
    [n_users, n]; ``retrieval_scores`` too); the activity groups are those of ``stage``'s
    users. Item indices [n_users, K]."""
    relevance = mmr_relevance(choices.relevance, candidates, scores, choices.hit_rate,
                              activity_groups(stage.seen), stage.seen, retrieval_scores, genres)
    return diversify(candidates, scores, relevance, genres, choices.lam, choices.redundancy)


def rerankers(stage: Stage, candidates: np.ndarray, retrieval_scores: np.ndarray,
              rating_model: MultitaskModel, multitask_model: MultitaskModel,
              implicit_model: ImplicitRanker, genres: np.ndarray, choices: Choices,
              only: str | None = None) -> dict[str, np.ndarray]:
    """The top-K lists [n_users, K] of each re-ranker of the lesson, by name (only the one
    named ``only`` when given, so that each can be timed on its own)."""
    by_rating = lambda: rating_scores(rating_model, stage, candidates)  # noqa: E731
    by_implicit = lambda: implicit_scores(implicit_model, stage, candidates)  # noqa: E731
    recipes = {
        "retrieval order": lambda: order_by(candidates, retrieval_scores),
        "rating ranker": lambda: order_by(candidates, by_rating()),
        "blend: retrieval + rating ranks": lambda: order_by(
            candidates, rank_blend(retrieval_scores, by_rating(), choices.rating_blend)),
        "multitask": lambda: order_by(candidates, multitask_scores(multitask_model, stage, candidates,
                                                                   choices.multitask_head)),
        "implicit ranker": lambda: order_by(candidates, by_implicit()),
        "blend: retrieval + implicit ranks": lambda: order_by(
            candidates, rank_blend(retrieval_scores, by_implicit(), choices.implicit_blend)),
        "implicit + MMR": lambda: mmr_lists(stage, candidates, by_implicit(), genres, choices, retrieval_scores),
    }
    if only is not None and only not in recipes:
        raise KeyError(f"no re-ranker named {only!r}; known: {', '.join(recipes)}")
    return {name: make() for name, make in recipes.items() if only in (None, name)}


# %% [markdown]
# First MMR, on validation: the hit rates by rank and activity, then every variant's λ (the
# table shows, per variant, the λ kept and what it changes from λ = 1).

# %%
started = time.perf_counter()
val_implicit = implicit_scores(implicit, val_stage, val_candidates)
hit_rate, mmr_table, curves = mmr_on_validation(val_candidates, val_implicit, val_stage, genres, probability,
                                                val_retrieval_scores)
best_relevance, best_redundancy, best_lambda = chosen_mmr(mmr_table)
print(f"{len(RELEVANCE) * len(REDUNDANCY) * len(MMR_LAMBDAS)} MMR settings measured in "
      f"{time.perf_counter() - started:.1f} s")
mmr_table.round(4)

# %%
raw_hits = hits_by_rank(val_candidates, val_implicit, val_stage.rated).mean(axis=0)
ranks = np.arange(len(raw_hits))
fig, axes = plt.subplots(2, 1, figsize=(5.5, 7))
axes[0].plot(ranks + 1, raw_hits, ".", color="lightgrey", label="share of users with a hit")
axes[0].plot(ranks + 1, hit_rate.at(ranks), "-", label="fitted h(rank)")
axes[0].plot(ranks + 1, hit_rate.at(0) * (1 - ranks / len(ranks)), "--", label="1 - rank / m, on the same scale")
axes[0].set_xscale("log")
axes[0].set_xlabel("rank of the candidate under the implicit ranker")
axes[0].set_ylabel("hit rate (validation)")
axes[0].set_title("Hits crowd at the top of the list")
axes[0].legend(fontsize=8)
for scale in RELEVANCE:
    curve = curves[scale, best_redundancy]
    axes[1].plot(curve["diversity@10"], curve["precision@10 rated"], "o-", markersize=3,
                 label=f"relevance: {scale}")
reference = curves["rank", best_redundancy].iloc[0]  # λ = 1 on the rank scale: the implicit ranker's list
axes[1].plot(reference["diversity@10"], reference["precision@10 rated"], "k*", markersize=10,
             label="implicit ranker (the reference)")
axes[1].axhline((1 - MAX_PRECISION_LOSS) * reference["precision@10 rated"], color="grey", linestyle=":",
                label=f"{MAX_PRECISION_LOSS:.0%} below the implicit ranker")
axes[1].set_xlabel("intra-list diversity@10 (genres)")
axes[1].set_ylabel("precision@10 (rated)")
axes[1].set_title(f"MMR on validation ({best_redundancy} similarity): accuracy against diversity")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
kept_mmr = mmr_table.loc[(best_relevance, best_redundancy)]
by_rank_scale = mmr_table.xs("rank", level="relevance")["diversity gain"]
by_hit_scale = mmr_table.drop(index=["rank", "two-stage calibrated"], level="relevance")["diversity gain"]
two_stage = mmr_table.xs("two-stage calibrated", level="relevance")
deep = min(50, N_CANDIDATES - 11)  # a rank deep in the list, 10 steps above the last
say(
    f"On validation the fitted hit rate falls by {hit_rate.at(0) - hit_rate.at(10):.3f} from rank 1 to rank 11 "
    f"but by {hit_rate.at(deep) - hit_rate.at(deep + 10):.3f} from rank {deep + 1} to rank {deep + 11}; the "
    f"rank scale charges both steps alike. Within the budget, the rank scale affords at most "
    f"{by_rank_scale.max():+.0%} intra-list diversity and the scales in expected hits {by_hit_scale.max():+.0%}"
    + pick(by_hit_scale.max() > by_rank_scale.max(),
           ": counted in expected hits, a swap deep in the list is cheap, and MMR makes its swaps there.",
           ": on this data the finer scales do not pay.")
    + f" The two-stage calibrated scale starts from a list whose precision@10 is "
    f"{-two_stage['start cost'].iloc[0]:+.1%} against the implicit ranker's and affords "
    f"{two_stage['diversity gain'].max():+.0%}"
    + pick(two_stage["diversity gain"].max() > mmr_table.drop(index="two-stage calibrated", level="relevance")[
        "diversity gain"].max(), ", more than any scale that knows the implicit ranker alone.",
        ", no more than the scales that know the implicit ranker alone.")
    + f" We keep MMR with the **{best_relevance}** relevance, the **{best_redundancy} similarity** and "
    f"**λ = {best_lambda:g}**: on validation, intra-list diversity "
    f"{pick(kept_mmr['diversity gain'] >= 0, 'rises', 'changes')} by {kept_mmr['diversity gain']:+.0%} "
    f"for a precision@10 change of {-kept_mmr['precision cost']:+.1%}, give or take "
    f"{100 * (kept_mmr['cost bound'] - kept_mmr['precision cost']) / COST_SE:.1f} points (one standard error), so the "
    f"cost counted against the {MAX_PRECISION_LOSS:.0%} budget is {kept_mmr['cost bound']:.1%}."
)

# %% [markdown]
# Then the two blend weights, also on validation:

# %%
val_rating = rating_scores(multitask_models[(1.0, 0.0)], val_stage, val_candidates)
choices = Choices(
    multitask_head=best_head,
    rating_blend=best_blend_weight(val_candidates, val_retrieval_scores, val_rating, val_stage),
    implicit_blend=best_blend_weight(val_candidates, val_retrieval_scores, val_implicit, val_stage),
    lam=best_lambda, redundancy=best_redundancy, relevance=best_relevance, hit_rate=hit_rate)
say(f"Validation gives the retrieval rank a weight of **{choices.rating_blend:g}** in the blend with the "
    f"rating model and **{choices.implicit_blend:g}** in the blend with the implicit ranker.")

# %% [markdown]
# ## 7. Retrain on all training data, then the test split once
#
# Every choice is made on validation: the retrieval epochs, the multitask weights and head,
# the tower depth, MMR's hit rates, variant and λ, the blend weights. The validation ratings
# are too useful to waste, so every model is trained again on the whole training split (fit +
# validation) with those choices, the retrieval stage included, and the test split is used
# once, for all the re-rankers.

# %%
started = time.perf_counter()
retrieval = train_retrieval(train, data.movies, epochs=retrieval_epochs)
test_stage = make_stage(train, test, movie_ids)  # everything in train counts as seen
test_candidates, test_retrieval_scores = candidates_for(retrieval, test_stage)
rating_only = train_multitask(train, movie_ids, 1.0, 0.0)
multitask = rating_only if best_weights == (1.0, 0.0) else train_multitask(train, movie_ids, *best_weights)
implicit = train_implicit(train, movie_ids, depths[best_depth])
test_probability = evaluation.item_probability(
    evaluation.interaction_matrix(train, np.unique(train["user_id"].astype(str)), movie_ids))
print(f"models retrained on {len(train):,} ratings in {time.perf_counter() - started:.1f} s")

# %%
started = time.perf_counter()
lists = rerankers(test_stage, test_candidates, test_retrieval_scores, rating_only, multitask, implicit,
                  genres, choices)
results = pd.DataFrame({name: measure(ranked, test_stage, genres, test_probability)
                        for name, ranked in lists.items()}).T
print(f"{len(lists)} orders of the candidates scored on {len(test_stage.users)} test users "
      f"in {time.perf_counter() - started:.1f} s")
results.round(4)

# %%
accuracy = ["precision@10 rated", "precision@10 liked", "ndcg@10"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
results[accuracy].plot.barh(ax=axes[0], title="accuracy (test)")
results[["diversity@10", "coverage@10"]].plot.barh(ax=axes[1], title="beyond accuracy (test)")
axes[1].set_yticklabels([])
plt.tight_layout()
plt.show()

# %%
base = results.loc["retrieval order"]
best = results.drop(index="retrieval order")["precision@10 rated"].idxmax()  # the best re-ranker
beats = all(results.loc[best, m] > base[m] for m in accuracy)
rating_lowers = results.loc["rating ranker", "precision@10 rated"] < base["precision@10 rated"]
plain, diverse = results.loc["implicit ranker"], results.loc["implicit + MMR"]
say(
    f"On this page's data the rating ranker {pick(rating_lowers, '*lowers*', 'raises')} "
    f"precision@10 on rated movies compared with the retrieval order "
    f"({results.loc['rating ranker', 'precision@10 rated']:.3f} against {base['precision@10 rated']:.3f})"
    + pick(results.loc['rating ranker', 'precision@10 rated'] < base['precision@10 rated'],
           ", as in lesson 04.", "; that is not what lesson 04 found, so measure on your own data.")
    + f" The best re-ranker on rated movies is **{best}**, which "
    + pick(beats, "beats the retrieval order on rated and liked movies and on NDCG@10",
           "does not beat the retrieval order on every accuracy measure")
    + f" (rated {results.loc[best, 'precision@10 rated']:.3f} against {base['precision@10 rated']:.3f}, "
    f"liked {results.loc[best, 'precision@10 liked']:.3f} against {base['precision@10 liked']:.3f}, "
    f"NDCG@10 {results.loc[best, 'ndcg@10']:.3f} against {base['ndcg@10']:.3f})."
    + f" The multitask re-ranker (weights {best_weights[0]:g} / {best_weights[1]:g}, {best_head}) reaches "
    f"{results.loc['multitask', 'precision@10 rated']:.3f}."
    + f" MMR ({best_relevance} relevance, {best_redundancy} similarity, λ = {best_lambda:g}) on top of the "
    f"implicit ranker changes "
    f"intra-list diversity from {plain['diversity@10']:.3f} to {diverse['diversity@10']:.3f} "
    f"({diverse['diversity@10'] / plain['diversity@10'] - 1:+.0%}), coverage@10 from "
    f"{plain['coverage@10']:.3f} to {diverse['coverage@10']:.3f}, novelty from "
    f"{plain['novelty@10']:.2f} to {diverse['novelty@10']:.2f} bits, and precision@10 from "
    f"{plain['precision@10 rated']:.3f} to {diverse['precision@10 rated']:.3f} "
    f"({diverse['precision@10 rated'] / plain['precision@10 rated'] - 1:+.1%}), "
    + pick(diverse["precision@10 rated"] >= (1 - MAX_PRECISION_LOSS) * plain["precision@10 rated"],
           f"within the {MAX_PRECISION_LOSS:.0%} budget set on validation.",
           f"more than the {MAX_PRECISION_LOSS:.0%} budget set on validation: a validation split this small "
           "estimates the cost of λ only roughly.")
)

# %% [markdown]
# Against which list should MMR's cost be counted? Above, against the implicit ranker, the
# re-ranker MMR follows. With the two-stage relevance, MMR's own order at λ = 1 is a
# different list; when it is more precise, MMR may spend the surplus on diversity. The next
# cell measures that starting list on test too, so that the trade is on the page in full.

# %%
start = measure(mmr_lists(test_stage, test_candidates, implicit_scores(implicit, test_stage, test_candidates),
                          genres, choices._replace(lam=1.0), test_retrieval_scores),
                test_stage, genres, test_probability)
undiversified = results.drop(index=["retrieval order", "implicit + MMR"])["precision@10 rated"].idxmax()
say(
    f"MMR's starting list (λ = 1, {best_relevance} relevance) reaches precision@10 "
    f"{start['precision@10 rated']:.3f} with intra-list diversity {start['diversity@10']:.3f} on test"
    + pick(start["precision@10 rated"] > results.loc[undiversified, "precision@10 rated"],
           f", more precise than the best undiversified re-ranker above ({undiversified}, "
           f"{results.loc[undiversified, 'precision@10 rated']:.3f})", "")
    + f". Counted against it, MMR changes diversity by {diverse['diversity@10'] / start['diversity@10'] - 1:+.0%} "
    f"and precision@10 by {diverse['precision@10 rated'] / start['precision@10 rated'] - 1:+.1%}. "
    + pick(bool(np.isclose(start["precision@10 rated"], plain["precision@10 rated"])
                and np.isclose(start["diversity@10"], plain["diversity@10"])),
           "Here the starting list measures as the implicit ranker's own, so the two comparisons agree.",
           pick(start["precision@10 rated"] > plain["precision@10 rated"],
                "The relevance MMR uses buys precision over the implicit ranker; MMR can keep it or spend it "
                "on diversity, and λ decides which.",
                "That starting list is less precise than the implicit ranker's."))
)

# %% [markdown]
# How much diversity a given loss of precision buys depends on the ranker, not only on MMR.
# Swapping a movie of the top 10 for a more diverse one from further down costs the
# difference between their chances of being a hit, and a sharp ranker, whose hits crowd at the
# very top, makes every swap expensive; a weak ranker makes diversity cheap because its top 10
# was not much better than the rest. Compare MMR settings against the same reference list,
# as here, and say which list that is.

# %% [markdown]
# ## Summary
#
# - Stars say how much users liked what they *chose*; a page of recommendations is judged
#   by what they *choose*. A pointwise rating model can therefore make a weak ranker for
#   "what to watch next", however low its RMSE: measure the order, not only the stars.
# - **Pointwise** losses fit one example, **pairwise** losses the order of two, **listwise**
#   losses a whole list; the retrieval task's in-batch softmax is listwise and implicit.
# - A **multitask** TFRS model adds the task losses with weights; put the losses on a common
#   scale first (means per example), then treat the weights as a hyperparameter chosen on
#   validation, measuring every task in the same run.
# - **BPR** trains on (rated, sampled unrated) pairs with $-\log\sigma(s_i - s_j)$; only
#   score differences matter. Negatives are resampled every epoch.
# - Deeper towers cost more time and parameters; measure before keeping them.
# - A re-ranker that ignores the retrieval score throws away what the first stage learned;
#   a rank blend keeps both, with its weight chosen on validation.
# - **MMR** trades relevance for diversity with one knob, λ; coverage and novelty show
#   what the catalogue and the long tail get out of it. Put relevance on the scale of the
#   trade you measure: the validation **hit rate at each rank** (a two-number curve, so that
#   it cannot follow the noise of the users λ is chosen on), optionally scaled by the user's
#   activity, or a hit probability calibrated from rank, score and activity, turns λ into a
#   price of diversity in expected hits. A relevance that also knows the retrieval rank and
#   the user's genre taste tells MMR which of the candidates below the top are safe swaps.
#   Match the redundancy to the diversity you measure (mean similarity for intra-list
#   diversity), and choose λ with an explicit budget (here: at most 5 % of the implicit
#   ranker's precision@10 on validation), counting the cost one standard error high so that
#   the noise of validation does not pick the settings it happens to flatter; and say which
#   list the cost is counted against.
# - Make every choice on validation, then retrain on training + validation and use the test
#   split once.
#
# ## Further reading
#
# - TensorFlow Recommenders tutorials: multitask recommenders, deep recommenders, listwise
#   ranking. <https://www.tensorflow.org/recommenders/examples/multitask>
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
# - Tie-Yan Liu. *Learning to Rank for Information Retrieval.* Foundations and Trends in
#   Information Retrieval 3(3), 2009.
# - Jaime Carbonell, Jade Goldstein. *The Use of MMR, Diversity-Based Reranking for
#   Reordering Documents and Producing Summaries.* SIGIR 1998.
#   <https://doi.org/10.1145/290941.291025>
# - Marius Kaminskas, Derek Bridge. *Diversity, Serendipity, Novelty, and Coverage: A
#   Survey and Empirical Analysis of Beyond-Accuracy Objectives in Recommender Systems.*
#   ACM TiiS 7(1), 2016. <https://doi.org/10.1145/2926720>
# - John Platt. *Probabilistic Outputs for Support Vector Machines and Comparisons to
#   Regularized Likelihood Methods.* In Advances in Large Margin Classifiers, MIT Press, 1999.
# - Bianca Zadrozny, Charles Elkan. *Transforming Classifier Scores into Accurate Multiclass
#   Probability Estimates.* KDD 2002. <https://doi.org/10.1145/775047.775151>
# - Laming Chen, Guoxin Zhang, Hanning Zhou. *Fast Greedy MAP Inference for Determinantal
#   Point Process to Improve Recommendation Diversity.* NeurIPS 2018: a diversifier that
#   scores the volume the whole list spans in feature space rather than each movie's nearest
#   neighbour, built greedily with an incremental Cholesky factorisation.
#   <https://arxiv.org/abs/1709.05135>
# - Sreenivas Gollapudi, Aneesh Sharma. *An Axiomatic Approach for Result Diversification.*
#   WWW 2009. <https://doi.org/10.1145/1526709.1526761>
# - Cai-Nicolas Ziegler, Sean McNee, Joseph Konstan, Georg Lausen. *Improving
#   Recommendation Lists Through Topic Diversification.* WWW 2005.
#   <https://doi.org/10.1145/1060745.1060754>
# - Xinyang Yi et al. *Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
#   Recommendations.* RecSys 2019. <https://doi.org/10.1145/3298689.3346996>
# - Tao Zhou et al. *Solving the apparent diversity-accuracy dilemma of recommender
#   systems.* PNAS 107(10), 2010. <https://doi.org/10.1073/pnas.1000488107>
# - Steffen Rendle, Walid Krichene, Li Zhang, John Anderson. *Neural Collaborative
#   Filtering vs. Matrix Factorization Revisited.* RecSys 2020.
#   <https://arxiv.org/abs/2005.09683>
