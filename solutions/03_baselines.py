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
# # Lesson 03 · Beating the strong baselines
#
# **You will learn to**
#
# - measure a retrieval model against strong simple baselines on the same split, over the
#   full catalogue: the most popular movies, item-kNN and EASE, which you implement;
# - say when a difference between two models is real, with the standard error of a paired
#   difference over users;
# - write the in-batch softmax with the logQ correction by hand, and say what the correction
#   corrects: the in-batch *sampling* of negatives by popularity;
# - change how negatives count (accidental hits, temperature), one change at a time;
# - make the query a function of the user's history, so that a new rating changes the
#   recommendations without retraining, and see that EASE itself is such a two-tower model;
# - evaluate on three protocols, each named for what it is: a seeded random split, a
#   per-user holdout of each user's latest ratings, and a global time split.
#
# It starts where lesson 02 ends: the towers trained with the course's retrieval recipe
# (`recsys_course.models.train_retrieval`, lesson 02's recipe as a library function).
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and on its card on the site's home page, with the data it was measured on.
#
# **How to work through it:** run the cells top to bottom (or `python lessons/03_baselines.py`).
# The two exercises are functions whose body raises `NotImplementedError`; implement them,
# then check with `course check 3.1` (or `course check 03`), and ask `course hint 3.1` when
# stuck.

# %% tags=["setup"]
# Importing recsys_course first sets TF_USE_LEGACY_KERAS=1: TensorFlow Recommenders needs
# Keras 2 (the tf-keras package), and the variable must be set before TensorFlow is imported.
import recsys_course
from recsys_course import claims, evaluation as ev, models
from recsys_course.models import features as mf

import inspect
import time
from typing import NamedTuple

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

SEED = recsys_course.seed_everything(42)
K = 10  # every list in this lesson is a top 10
EASE_GRID = (10.0, 50.0, 200.0, 500.0, 2000.0)  # EASE's lambda, chosen on validation

# %% [markdown]
# ## 1. How good is good?
#
# Lesson 02 compared its towers with each other and with a list of the most popular movies.
# A fair verdict needs the strongest *simple* models too: research on recommenders has
# repeatedly found that tuned classic baselines match or beat newer neural models (Dacrema
# et al. 2019; Rendle et al. 2022). Every model in this lesson is measured the same way, on
# the same users, with `recsys_course.evaluation`: each user's list ranks **the whole
# catalogue** with the movies they rated in training removed (masked recall@10, lesson
# 02's section 10). Many papers rank the held-out movie among only 100 sampled negatives
# instead; Krichene and Rendle (2020) showed that such sampled metrics can put two models in
# the wrong order and drift towards measuring popularity, so the course never samples.
#
# The split is lesson 02's: 80 % of the ratings at random for training, 20 % for test, and
# 10 % of the training rows held out again for **validation**, on which every choice is
# made. Every model learns from the remaining *fit* rows; at test time each user's fit
# history is the query of the models that read a history, and all their training rows are
# masked.

# %%
data = recsys_course.load_movielens()
print("Dataset:", data.summary())
ratings, movies = data.ratings, data.movies
movie_ids = list(np.unique(movies["movie_id"].astype(str)))  # the column order of every matrix


class Protocol(NamedTuple):
    """One evaluation protocol: the models learn from ``fit``, choose on ``validation``, and
    are measured on ``test`` (with every ``train`` rating of the test users masked)."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    fit: pd.DataFrame
    validation: pd.DataFrame


train, test = ev.random_split(ratings, 0.2, seed=SEED)
fit, validation = ev.random_split(train, 0.1, seed=SEED)
random_protocol = Protocol("random split", train, test, fit, validation)
print(f"ratings: fit {len(fit):,}, validation {len(validation):,}, test {len(test):,}")

# %% [markdown]
# Everything a model needs, as matrices over the catalogue: each user's fit history (a 0/1
# row), the movies to find (relevant) and the movies to mask (seen). `evaluate` turns a
# score matrix into the lesson's report, and keeps each user's recall@10 so that two models
# can be compared user by user.

# %%
class Matrices(NamedTuple):
    fit_matrix: np.ndarray  # bool [fit users, movies]
    val_users: list  # the validation users (with fit rows), in row order
    val_history: np.ndarray  # bool [validation users, movies]: their fit rows
    val_relevant: np.ndarray
    users: list  # the test users (with fit rows), in row order
    history: np.ndarray  # bool [test users, movies]: their fit rows
    seen: np.ndarray  # bool [test users, movies]: every training row, masked from the lists
    relevant: np.ndarray


def matrices(protocol: Protocol) -> Matrices:
    fit_users = sorted(protocol.fit["user_id"].unique())
    fit_matrix = ev.interaction_matrix(protocol.fit, fit_users, movie_ids)
    row_of = pd.Index(fit_users)

    def history_of(users: list) -> np.ndarray:
        return fit_matrix[row_of.get_indexer(users)]

    val_users = sorted(set(protocol.validation["user_id"]) & set(fit_users))
    users = sorted(set(protocol.test["user_id"]) & set(fit_users))
    return Matrices(fit_matrix, val_users, history_of(val_users),
                    ev.interaction_matrix(protocol.validation, val_users, movie_ids),
                    users, history_of(users), ev.interaction_matrix(protocol.train, users, movie_ids),
                    ev.interaction_matrix(protocol.test, users, movie_ids))


def evaluate(scores: np.ndarray, m: Matrices) -> dict:
    """The report of a ``[test users, movies]`` score matrix: masked recall@10 (and each
    user's, under ``"per user"``), NDCG@10 and coverage@10."""
    ranked = ev.top_k(scores, K, exclude=m.seen)
    return {"recall@10": ev.recall_at_k(ranked, m.relevant, K), "ndcg@10": ev.ndcg_at_k(ranked, m.relevant, K),
            "coverage@10": ev.coverage_at_k(ranked, len(movie_ids), K),
            "per user": ev.recall_by_user(ranked, m.relevant, K)}


def validation_recall(scores: np.ndarray, m: Matrices) -> np.ndarray:
    """Each validation user's masked recall@10 (fit rows masked)."""
    return ev.recall_by_user(ev.top_k(scores, K, exclude=m.val_history), m.val_relevant, K)


def versus(new: dict, old: dict) -> claims.Comparison:
    """``new``'s recall@10 against ``old``'s, on the same users: a difference within two
    standard errors of the paired per-user differences is 'about the same'."""
    return claims.compare(new["recall@10"], old["recall@10"],
                          se=ev.paired_standard_error(new["per user"], old["per user"]))


random_m = matrices(random_protocol)
print(f"{len(random_m.users):,} test users, {len(movie_ids):,} movies")

# %% [markdown]
# ## 2. Three baselines: popularity, item-kNN and EASE
#
# The first baseline gives everybody the same list: the movies with the most fit ratings.
# The other two are item-to-item models: they read the user's history $\mathbf{x}_u$ (a 0/1
# row of the user × movie matrix $X$ of the fit split) and score every movie as
# $\mathbf{x}_u W$ for an item × item matrix $W$:
#
# - **item-kNN**: $W_{ij}$ is the cosine similarity of the columns $i$ and $j$ of $X$ (how
#   much the audiences of two movies overlap), with $W_{jj} = 0$.
# - **EASE** (Steck 2019, "Embarrassingly Shallow Autoencoders"): *learn* $W = B$ by ridge
#   regression of $X$ on itself, forbidding an item to predict itself:
#   $$\min_B \lVert X - XB \rVert_F^2 + \lambda \lVert B \rVert_F^2
#   \quad \text{subject to } \operatorname{diag}(B) = 0.$$
#   Without the constraint the answer would drift towards $B = I$ (copy the input). With
#   it, the solution has a closed form: with $P = (X^\top X + \lambda I)^{-1}$,
#   $$B = I - P \,\operatorname{diag}(1 / \operatorname{diag}(P)),
#   \qquad\text{that is}\quad B_{ij} = -P_{ij} / P_{jj}\ (i \ne j),\quad B_{jj} = 0.$$
#   One matrix inverse of size (movies × movies) and one hyperparameter $\lambda$, which we
#   choose on the validation split.

# %% tags=["setup"]
def popularity_scores(interactions: np.ndarray, n_users: int) -> np.ndarray:
    """``float [n_users, n_movies]``: every user gets each movie's number of fit users."""
    return np.tile(np.asarray(interactions, dtype=np.float64).sum(axis=0), (n_users, 1))


def item_knn_weights(interactions: np.ndarray) -> np.ndarray:
    """Cosine similarity between the movie columns of the ``bool [users, movies]`` matrix,
    with a zero diagonal (a movie does not vote for itself); unrated movies get zeros."""
    x = np.asarray(interactions, dtype=np.float64)
    gram = x.T @ x
    norms = np.sqrt(np.diag(gram))
    similarity = gram / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(similarity, 0.0)
    return similarity


# %% [markdown]
# ### Exercise 3.1 · EASE in closed form
#
# Implement `ease_weights(interactions, l2)` with NumPy: the Gram matrix $G = X^\top X$,
# $P = (G + \lambda I)^{-1}$, then $B = I - P\,\operatorname{diag}(1/\operatorname{diag}(P))$.
# Check on paper with two movies: if $G = \begin{pmatrix}2 & 1\\ 1 & 2\end{pmatrix}$ and
# $\lambda = 1$, each off-diagonal weight is $1/3$ (the one-variable ridge regression
# $x_0 \cdot x_1 / (x_0 \cdot x_0 + \lambda)$).

# %% tags=["exercise"] exercise="3.1"
def ease_weights(interactions: np.ndarray, l2: float) -> np.ndarray:
    """EASE item-to-item weights (Steck 2019).

    Args:
        interactions: ``[n_users, n_items]`` 0/1 matrix (bool, int or float) of who
            interacted with what in training.
        l2: the ridge penalty lambda, a number > 0 (raise ``ValueError`` otherwise).

    Returns:
        ``float64 [n_items, n_items]`` matrix B minimising ||X - X B||^2 + l2 ||B||^2 with
        diag(B) = 0: with P = inverse(X^T X + l2 I), B[i, j] = -P[i, j] / P[j, j] for
        i != j and B[j, j] = 0. A user's scores are their interaction row times B.
    """
    # BEGIN SOLUTION
    if not l2 > 0:
        raise ValueError(f"l2 must be a positive number, got {l2!r}")
    x = np.asarray(interactions, dtype=np.float64)
    gram = x.T @ x
    precision = np.linalg.inv(gram + l2 * np.eye(gram.shape[0]))
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights
    # END SOLUTION


# %% [markdown]
# EASE's $\lambda$ is chosen on the validation split, by masked recall@10 of the validation
# users (their fit rows are the query and are masked). The function below does it for any
# protocol; section 5 reuses it.

# %%
def choose_ease(m: Matrices) -> tuple[float, np.ndarray, dict]:
    """(lambda with the best validation recall@10, its weights, validation recall by lambda)."""
    grid = {l2: float(np.nanmean(validation_recall(m.val_history @ ease_weights(m.fit_matrix, l2), m)))
            for l2 in EASE_GRID}
    best = max(grid, key=grid.get)
    return best, ease_weights(m.fit_matrix, best), grid


started = time.perf_counter()
best_l2, ease, ease_grid = choose_ease(random_m)
grid_seconds = time.perf_counter() - started
started = time.perf_counter()
ease_weights(random_m.fit_matrix, best_l2)
one_fit_seconds = time.perf_counter() - started
pd.DataFrame({"lambda": list(ease_grid), "validation recall@10": list(ease_grid.values())})

# %%
claims.say(
    f"Validation chooses lambda = {claims.fmt(best_l2, 'setting')}. One EASE fit, a single inverse of a "
    f"{claims.fmt(len(movie_ids))} × {claims.fmt(len(movie_ids))} matrix, took "
    f"{claims.fmt(one_fit_seconds, 'seconds')} here; the grid of {len(EASE_GRID)} values with its validation "
    f"rankings took {claims.fmt(grid_seconds, 'seconds')}."
)

# %% [markdown]
# Now the towers of lesson 02 beside them. `models.train_retrieval` trains the id-only
# two-tower model with lesson 02's recipe on the same fit rows (it carves the same seeded
# validation split out of `train`) and keeps the epoch with the best validation score; with
# `correction=False` it is lesson 02's classic model. Each trained model is kept in the
# course's cache, so a later lesson that asks for the same model on the same data (04, 07
# and 08 use the corrected one) loads it instead of training it again.

# %%
def tower_scores(towers: models.TwoTower, users: list) -> np.ndarray:
    """Scores of every movie for each user, columns in ``movie_ids`` order."""
    assert list(towers.movie_ids) == movie_ids
    return towers.scores(users)


recsys_course.seed_everything(SEED)
classic = models.train_retrieval(train, movies, seed=SEED, correction=False)
print(f"classic towers: epoch {classic.best_epoch} kept")
results = {
    "popularity": evaluate(popularity_scores(random_m.fit_matrix, len(random_m.users)), random_m),
    "item-kNN (cosine)": evaluate(random_m.history @ item_knn_weights(random_m.fit_matrix), random_m),
    "EASE": evaluate(random_m.history @ ease, random_m),
    "two towers, lesson 02 (classic)": evaluate(tower_scores(classic, random_m.users), random_m),
}


def table(rows: dict) -> pd.DataFrame:
    return pd.DataFrame({name: {k: v for k, v in row.items() if k != "per user"} for name, row in rows.items()}).T


table(results).round(3)

# %%
ease_vs_knn = versus(results["EASE"], results["item-kNN (cosine)"])
tower_vs_popularity = versus(results["two towers, lesson 02 (classic)"], results["popularity"])
tower_vs_ease = versus(results["two towers, lesson 02 (classic)"], results["EASE"])
claims.say(
    f"EASE's recall@10, {claims.fmt(ease_vs_knn.value)}, is {ease_vs_knn.word()} item-kNN's "
    f"{claims.fmt(ease_vs_knn.reference)}, and lesson 02's towers reach {claims.fmt(tower_vs_ease.value)}: "
    f"{tower_vs_popularity.word()} the popularity list ({tower_vs_popularity.change()}) and "
    f"{tower_vs_ease.word()} EASE ({tower_vs_ease.change()}; two standard errors of each difference: "
    f"{claims.fmt(tower_vs_popularity.noise)} and {claims.fmt(tower_vs_ease.noise)}). "
    + claims.pick(tower_vs_ease.worse,
                  "A closed-form linear model with one hyperparameter is the model to beat.",
                  "On this data the towers hold their own against EASE.")
)

# %% [markdown]
# Why is a linear item-to-item model so strong on MovieLens? The data is small and dense: a
# few thousand movies, and every user has rated at least 20 of them, so the co-occurrence
# counts in $X^\top X$ are well estimated, and a user's whole history is a rich query. EASE
# reads that history directly and combines it with a full (movies × movies) weight matrix
# found at the global optimum of its objective. The towers must squeeze each user into 32
# numbers, learned by stochastic gradient descent from a sampled softmax. Their strengths
# lie elsewhere: they read features (cold start, lesson 02), their cost per request does not
# grow with the catalogue squared (EASE stores $n^2$ weights: 10¹² for a million items), and
# they take context such as the time of the request. The rest of this lesson closes the
# gap in two steps: the negatives (section 3), then the query (section 4).

# %% [markdown]
# ## 3. The negatives
#
# ### How many negatives does a query really get?
#
# Lesson 02's towers learn from an in-batch softmax: in a batch of $B$ (user, movie) pairs,
# each user's movie is the positive and the $B - 1$ other movies of the batch are its
# negatives. A batch of $B$ pairs has $B$ candidate columns, but not $B$ *different*
# movies: popular movies are rated by many users, so they turn up several times in one
# batch. Each query then has fewer distinct negatives than $B - 1$, and worse, when its own
# movie appears again in another row, the softmax treats that copy as a *negative* of its
# own positive (an **accidental hit**). Count it on the batches the recipe trains on:

# %%
def batch_duplicates(frame: pd.DataFrame, batch_size: int, seed: int) -> pd.DataFrame:
    """Per training batch (shuffled as in training, full batches only): how many distinct
    movies it holds, how often its most repeated movie appears, and the share of rows whose
    movie appears in another row of the same batch (an accidental hit for that query)."""
    rows = []
    batches = mf.to_dataset({"movie_id": frame["movie_id"].astype(str).to_numpy(dtype=object)}, batch_size,
                            shuffle_seed=seed, drop_remainder=True)
    for batch in batches:
        _, counts = np.unique(batch["movie_id"].numpy(), return_counts=True)
        rows.append({"distinct movies": len(counts), "most repeated movie": int(counts.max()),
                     "rows with an accidental hit": counts[counts > 1].sum() / batch_size})
    return pd.DataFrame(rows)


batch_size = models.RETRIEVAL_RECIPE["batch_size"]
duplicates = batch_duplicates(fit, batch_size, SEED)
duplicates.describe().loc[["mean", "min", "max"]].round(3)

# %%
distinct = duplicates["distinct movies"].mean()
claims.say(
    f"A batch of {claims.fmt(batch_size)} pairs holds on average {claims.fmt(distinct, 'count')} distinct movies, "
    f"so a query meets at most about {claims.fmt(distinct - 1, 'count')} distinct negatives, not "
    f"{claims.fmt(batch_size - 1)}; in {claims.fmt(duplicates['rows with an accidental hit'].mean(), 'percent')} of "
    "the rows the query's own movie sits in another row too and is pushed down as a negative."
)

# %% [markdown]
# ### What sampling by popularity does, and the logQ correction
#
# The negatives are not drawn uniformly: a movie is a negative as often as it is rated. Write
# $q_j$ for the probability that movie $j$ fills a column of the batch (its share of the fit
# rows). With negatives sampled this way, the softmax over the batch does not estimate the
# full softmax over the catalogue: the learned score tends towards
# $\log p(j \mid u) - \log q_j$ (plus a per-query constant), so popular movies are
# pushed down for everybody, by $\log q_j$, because the *sampling* over-represents them as
# negatives. The fix comes from sampled softmax (Bengio and Senécal, 2008) and was adapted
# to in-batch negatives by Yi et al. (2019): subtract $\log q_j$ from every logit of column
# $j$ during training,
#
# $$\ell_b = -\log \frac{\exp(s_{bb} - \log q_b)}{\sum_{j=1}^{B} \exp(s_{bj} - \log q_j)},
# \qquad s_{bj} = \mathbf{q}_{u_b} \cdot \mathbf{c}_{j},$$
#
# so that the dot product itself learns $\log p(j \mid u)$ up to a constant. This is the
# **logQ correction**. It corrects the in-batch sampling bias; it does not remove
# popularity from the model: a movie many people watch keeps its high score, it just stops
# being punished for appearing in many batches. At serving time the plain dot product is
# used. TFRS applies it when `Retrieval` receives `candidate_sampling_probability`.
#
# ### Exercise 3.2 · The in-batch softmax with the logQ correction, by hand
#
# Implement `in_batch_softmax_loss(queries, candidates, candidate_probability)` with
# TensorFlow operations (so that gradients flow): the logits $Q C^\top$, minus
# $\log q_j$ along each column when a probability is given, and the softmax
# cross-entropy of each row with its diagonal entry as the label, **summed** over the rows,
# as TFRS's `Retrieval` task does.

# %% tags=["exercise"] exercise="3.2"
def in_batch_softmax_loss(queries: tf.Tensor, candidates: tf.Tensor,
                          candidate_probability: tf.Tensor | None = None) -> tf.Tensor:
    """The in-batch softmax loss of one batch, optionally with the logQ correction.

    Args:
        queries: ``float32 [B, d]``, row ``b`` the query vector of pair ``b``.
        candidates: ``float32 [B, d]``, row ``b`` the candidate vector of pair ``b``.
        candidate_probability: ``None`` or ``float32 [B]``, entry ``b`` the sampling
            probability (share of the training pairs) of pair ``b``'s candidate, in (0, 1].

    Returns:
        A scalar ``tf.Tensor``: the sum over rows ``b`` of ``-log softmax(logits[b])[b]``,
        where ``logits = queries @ candidates.T`` and, with a probability,
        ``logits[:, j] -= log(candidate_probability[j])`` for every row. Differentiable
        with respect to both inputs.
    """
    # BEGIN SOLUTION
    logits = tf.matmul(queries, candidates, transpose_b=True)
    if candidate_probability is not None:
        logits -= tf.math.log(tf.cast(candidate_probability, logits.dtype))[None, :]
    labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    # END SOLUTION


# %% [markdown]
# Your loss against TFRS's, on a real batch of the fit pairs scored by lesson 02's trained
# towers, with and without the correction:

# %%
probability = mf.candidate_probability(fit)
one_batch = next(iter(mf.to_dataset(mf.pair_features(fit, probability=probability), batch_size, shuffle_seed=SEED)))
batch_queries = classic.user_model(one_batch["user_id"])
batch_candidates = classic.movie_model(one_batch["movie_id"])
check = pd.DataFrame({
    "yours": [float(in_batch_softmax_loss(batch_queries, batch_candidates)),
              float(in_batch_softmax_loss(batch_queries, batch_candidates, one_batch[mf.PROBABILITY]))],
    "TFRS Retrieval": [float(tfrs.tasks.Retrieval()(batch_queries, batch_candidates)),
                       float(tfrs.tasks.Retrieval()(batch_queries, batch_candidates,
                                                    candidate_sampling_probability=one_batch[mf.PROBABILITY]))],
}, index=["plain in-batch softmax", "with the logQ correction"])
check.round(3)

# %% tags=["check"]
claims.claim(np.allclose(check["yours"], check["TFRS Retrieval"], rtol=1e-4),
             "Your loss against TFRS's, on a real batch")

# %% [markdown]
# ### One change: the correction
#
# Now lesson 02's recipe again, with the correction as the only change: same batches, same
# learning rate, same rule for the epoch.

# %%
recsys_course.seed_everything(SEED)
corrected = models.train_retrieval(train, movies, seed=SEED, correction=True)
print(f"with the correction: epoch {corrected.best_epoch} kept (without: {classic.best_epoch})")
results["two towers + logQ correction"] = evaluate(tower_scores(corrected, random_m.users), random_m)
validation_scores = {  # each validation user's recall@10: what choices are made on
    "two towers, lesson 02 (classic)": validation_recall(tower_scores(classic, random_m.val_users), random_m),
    "two towers + logQ correction": validation_recall(tower_scores(corrected, random_m.val_users), random_m),
}
correction_gain = versus(results["two towers + logQ correction"], results["two towers, lesson 02 (classic)"])
claims.say(
    f"The correction moves test recall@10 from {claims.fmt(correction_gain.reference)} to "
    f"{claims.fmt(correction_gain.value)} ({correction_gain.change()}, two standard errors "
    f"{claims.fmt(correction_gain.noise)}): "
    + {"higher": "a large gain for one line of code, because the plain model was pushing down exactly the "
                 "movies many users go on to rate.",
       "lower": "on this data the correction costs accuracy.",
       "about the same": "no difference this test set can resolve."}[correction_gain.direction]
)

# %% [markdown]
# ### Other ways to count negatives
#
# TFRS's `Retrieval` task has more options that change how the in-batch negatives enter the
# loss, and `models.train_retrieval` passes them on:
#
# - `remove_accidental_hits=True` drops the logits of negatives that are the query's own
#   movie (a duplicate in the batch; TFRS needs the batch's candidate ids for it).
# - `temperature` $\tau$ divides every logit by $\tau$ before the softmax: $\tau < 1$
#   sharpens it, so the loss concentrates on the negatives that score close to the positive.
# - `num_hard_negatives=n` keeps, for each query, only the $n$ highest-scoring negatives.
#
# The variant below changes one option of the corrected model, the one section 3 counted:
# accidental hits. It starts from the same seed and the same batches, and its epoch is chosen
# on validation. The other two options (temperature 0.5, the 100 hardest negatives) are
# measured the same way by the lesson's benchmark (`course bench 03`) rather than on this
# page, to keep it quick. We choose on validation recall@10 and report test.

# %%
started = time.perf_counter()
variants = {"+ logQ, remove accidental hits": dict(remove_accidental_hits=True)}
variant_towers = {}
for name, options in variants.items():
    recsys_course.seed_everything(SEED)
    variant_towers[name] = models.train_retrieval(train, movies, seed=SEED, correction=True, **options)
    results[f"two towers {name}"] = evaluate(tower_scores(variant_towers[name], random_m.users), random_m)
    validation_scores[f"two towers {name}"] = validation_recall(
        tower_scores(variant_towers[name], random_m.val_users), random_m)
print(f"trained in {claims.fmt(time.perf_counter() - started, 'seconds')}")
ablation = pd.DataFrame({
    "validation recall@10": {name: np.nanmean(values) for name, values in validation_scores.items()},
    "test recall@10": {name: results[name]["recall@10"] for name in validation_scores},
})
ablation.round(3)

# %%
base = "two towers + logQ correction"
sentences = []
for name in validation_scores:
    if name.startswith("two towers +") and name != base:
        change = claims.compare(np.nanmean(validation_scores[name]), np.nanmean(validation_scores[base]),
                                se=ev.paired_standard_error(validation_scores[name], validation_scores[base]))
        option = name.split(", ", 1)[1]
        sentences.append(f"{option} gives {claims.fmt(change.value)} against {claims.fmt(change.reference)} "
                         f"({change.word('higher', 'lower', 'about the same')})")
best_tower = max(validation_scores, key=lambda name: np.nanmean(validation_scores[name]))
best_vs_ease = versus(results[best_tower], results["EASE"])
claims.say(
    "On validation recall@10, " + "; ".join(sentences) + ". The id tower with the best validation recall@10 is "
    f"**{best_tower}**; on test it reaches {claims.fmt(best_vs_ease.value)}, {best_vs_ease.word()} EASE's "
    f"{claims.fmt(best_vs_ease.reference)} ({best_vs_ease.change()}, two standard errors "
    f"{claims.fmt(best_vs_ease.noise)}). Tuning the negatives changes how the towers learn, not what the query "
    "knows: the next section changes the query."
)

# %% [markdown]
# ## 4. A query tower that reads the history
#
# Compare what each model knows about a user when it scores, and EASE's strength is plain.
# The towers so far know a **user id** (plus, with side features, the time and
# demographics): the user's vector is a free row of 32 numbers, learned from that user's own
# pairs only. A rating made after training cannot change it, and a new user gets the shared
# OOV row. EASE reads the **history** itself: its score $\mathbf{x}_u B$ is a function of the
# movies the user rated, through weights shared by every user, so a new rating changes the
# list at once.
#
# A query tower can do the same. Make the query vector a function of the history, as
# YouTube's candidate generator (Covington et al. 2016) and Mult-DAE (Liang et al. 2018) do:
#
# $$\mathbf{q}_u = \frac{1}{\sqrt{|\mathbf{x}_u|}} \sum_{j \,\in\, \mathbf{x}_u} \mathbf{e}_j .$$
#
# It is a bag of learned movie vectors, a `Dense` layer without bias on the 0/1 history row
# (the genre bag of lesson 02's section 3.4, over movies), divided by the square root of the history's
# length so that heavy and light users get vectors of similar size. The candidate tower is
# still the movie id embedding, plus one number, the movie's bias, which meets a constant 1
# in the query: the score stays one dot product, served by `BruteForce` or Annoy. A user who
# rated five movies this morning gets a query vector now, **without retraining**.
#
# Training changes too, because its unit is now a user, not a pair:
#
# - **Hide, then predict.** At each step a random half of every user's history is hidden
#   from the query and becomes the target. A movie the query can see is never a target, or
#   the model would learn to copy its input.
# - **A full softmax over the catalogue.** With a few thousand movies, scoring every movie
#   is one matrix product per batch: no sampled negatives, no duplicates, no correction.
#   The movies the query was shown are left out of the softmax: the user rated them, so
#   they are not negatives, and a masked list never shows them anyway. This is the
#   two-tower counterpart of EASE's zero diagonal.
#   (With millions of items one samples again, and section 3's questions return.)
# - **Regularisation.** The movie vectors are shared by every user: an L2 penalty keeps
#   them small, and the epoch is chosen on validation as before.
# - **Dot product or cosine.** A dot product rewards long vectors, so a movie can rise in
#   everyone's list by growing its vector. The alternative scales both vectors to length 1
#   and divides their cosine by a temperature $\tau$, as YouTube's two-tower model does
#   (Yi et al. 2019): the score is $\cos(\mathbf{q}_u, \mathbf{v}_j)/\tau + b_j$, so
#   popularity lives in the bias $b_j$ alone and $\tau$ sets how sharp the softmax is
#   (section 3's knob, here on a bounded score). The towers do the scaling, so the score
#   is still one dot product for `BruteForce` or Annoy. An L2 penalty has nothing to hold
#   on a cosine, so these runs have none.
#
# The model is `recsys_course.models.HistoryRetrievalModel`, a `tfrs.Model` whose
# `compute_loss` hides, scores and takes the softmax (`src/recsys_course/models/history.py`).

# %% tags=["prose"]
dot_config, cosine_config = models.HISTORY_GRID[0], models.HISTORY_GRID[-1]
history_batch = inspect.signature(models.train_history_model).parameters["batch_size"].default
claims.say(
    f"Three configurations of {claims.fmt(dot_config['embedding_dim'])} numbers a movie (`models.HISTORY_GRID`): "
    "the dot product, and the cosine at two temperatures. Their other settings (hide half, Adam with learning rate "
    f"{claims.fmt(dot_config['learning_rate'], 'setting')} for the dot product and "
    f"{claims.fmt(cosine_config['learning_rate'], 'setting')} for the cosine, which learns more slowly, batches of "
    f"{claims.fmt(history_batch)} users) were chosen offline on validation splits (the module's docstring lists "
    "the search)."
)

# %% [markdown]
# Their numbers of epochs come from a recorded search on MovieLens 100K's
# validation split (`python -m recsys_course.tooling.benchmarks.searches history_epochs`):
# validation recall@10 every 5 epochs, and the *fewest* epochs whose recall is within one
# standard error (over users) of the best epoch's, a classic rule for early stopping that
# keeps the page fast without choosing a model the noise cannot tell apart. This page trains
# each configuration for that many epochs and measures it on validation once.

# %%
history_search = models.recorded_search("history_epochs")
epochs_of = {row["configuration"]: row["epochs"] for row in history_search["rows"]}
pd.DataFrame(history_search["rows"]).set_index("configuration")[
    ["epochs", "best_epoch", "validation_recall@10", "standard_error"]]

# %%
started = time.perf_counter()


def train_history(m: Matrices, config: dict) -> models.HistoryRun:
    """One configuration of ``models.HISTORY_GRID`` trained on ``m``'s fit rows for its recorded
    number of epochs, measured once on validation."""
    epochs = epochs_of[models.history_config_label(config)]
    return models.train_history_model(m.fit_matrix, movie_ids, m.val_history, m.val_relevant, seed=SEED,
                                      max_epochs=epochs, every=epochs, **config)


history_runs = {models.history_config_label(config): train_history(random_m, config) for config in models.HISTORY_GRID}
best_history = max(history_runs, key=lambda label: history_runs[label].validation_recall)
print(f"{len(history_runs)} configurations trained in {claims.fmt(time.perf_counter() - started, 'seconds')}")
pd.DataFrame({label: {"epochs": run.best_epoch, "validation recall@10": run.validation_recall}
              for label, run in history_runs.items()}).T

# %% [markdown]
# ### Three towers make one tower
#
# Keeping only the best configuration throws two trained models away. Their scores can be
# added instead, and the sum is still a two-tower model: lay the three query vectors end to
# end, each multiplied by a weight $w_i$, and the three movie vectors end to end; the dot
# product of the long vectors is $\sum_i w_i\, \mathbf{q}^{(i)}_u \cdot \mathbf{v}^{(i)}_j$,
# the weighted sum of the three scores. One index still serves it, with vectors three
# times as long. Models that make different mistakes partly cancel them in a sum, which is
# why blends of many models won the Netflix Prize. `models.concatenate_towers` weighs each
# tower by one over the standard deviation of its validation scores, so that none dominates
# by the scale of its scores alone, and validation decides between the best single
# configuration and the three joined.

# %%
def join_or_keep(runs: dict, m: Matrices) -> tuple[object, str, np.ndarray]:
    """The joined towers or the best single configuration, whichever has the better validation
    recall@10: (model, its name, each validation user's recall@10)."""
    joined = models.concatenate_towers([run.model for run in runs.values()], m.val_history)
    best = max(runs, key=lambda label: runs[label].validation_recall)
    candidates = {f"history tower ({len(runs)} joined)": joined, f"history tower ({best})": runs[best].model}
    per_user = {name: validation_recall(model.scores(m.val_history), m) for name, model in candidates.items()}
    name = max(per_user, key=lambda n: np.nanmean(per_user[n]))
    return candidates[name], name, per_user[name]


joined = models.concatenate_towers([run.model for run in history_runs.values()], random_m.val_history)
weighted_sum = sum(weight * run.model.scores(random_m.val_history)
                   for weight, run in zip(joined.weights, history_runs.values()))
joined_gap = float(np.abs(joined.scores(random_m.val_history) - weighted_sum).max() / np.abs(weighted_sum).max())
history_model, history_name, history_validation = join_or_keep(history_runs, random_m)
print(f"the long dot product against the weighted sum of the three scores: largest difference "
      f"{joined_gap:.1e} of the largest score; query vectors of "
      f"{joined.query_vectors(random_m.val_history[:1]).shape[1]} numbers")
claims.say(f"On validation, between the three joined and the best single configuration, the better is "
           f"**{history_name}** (recall@10 {claims.fmt(np.nanmean(history_validation))}).")

# %% tags=["check"]
claims.claim(joined_gap < 1e-5, "the dot product of the long vectors is the weighted sum of the three scores")

# %% [markdown]
# The history tower joins the comparison, measured on the same test users with the same fit
# histories as EASE and item-kNN:

# %%
results[history_name] = evaluate(history_model.scores(random_m.history), random_m)
validation_scores[history_name] = history_validation
table(results).round(3)

# %%
final_name = max(validation_scores, key=lambda name: np.nanmean(validation_scores[name]))
final_vs_ease = versus(results[final_name], results["EASE"])
history_vs_id = versus(results[history_name], results[best_tower])
claims.say(
    f"The lesson's final tower is the one with the best validation recall@10: **{final_name}**. On test it reaches "
    f"{claims.fmt(final_vs_ease.value)}, {final_vs_ease.word()} EASE's {claims.fmt(final_vs_ease.reference)} "
    f"({final_vs_ease.change()}; two standard errors {claims.fmt(final_vs_ease.noise)}). Against the best id tower, "
    f"the history tower is {history_vs_id.word()} it ({history_vs_id.change()}): "
    + {"higher": "reading the history instead of an id is worth more than any change to the negatives.",
       "lower": "on this data the id tower stays ahead.",
       "about the same": "on this data the two queries are within noise of each other."}[history_vs_id.direction]
)

# %% [markdown]
# What a query computed from the history buys: give the model only **five** of a user's
# movies, as if they had just signed up, and ask again, with no retraining. Every test user
# is queried with five of their fit movies drawn at random (seeded).

# %%
draw = np.random.default_rng(SEED)
five_movies = np.zeros_like(random_m.history)
for row, user_history in enumerate(random_m.history):
    rated = np.flatnonzero(user_history)
    five_movies[row, draw.choice(rated, size=min(5, len(rated)), replace=False)] = True
five = evaluate(history_model.scores(five_movies), random_m)
titles = movies.assign(movie_id=movies["movie_id"].astype(str)).set_index("movie_id")["movie_title"]
newcomer = int(np.argmax(random_m.history.sum(axis=1) >= 5))
print("a newcomer's five movies:", [titles[movie_ids[i]] for i in np.flatnonzero(five_movies[newcomer])])
print("their top 5:", [titles[movie_ids[i]] for i in ev.top_k(history_model.scores(five_movies[newcomer:newcomer + 1]),
                                                               5, exclude=five_movies[newcomer:newcomer + 1])[0]])
five_vs_popularity = versus(five, results["popularity"])
claims.say(
    f"With five movies per user, the history tower's recall@10 is {claims.fmt(five['recall@10'])}, against "
    f"{claims.fmt(results[history_name]['recall@10'])} with the whole fit history and "
    f"{claims.fmt(results['popularity']['recall@10'])} for the popularity list: "
    + claims.pick(five_vs_popularity.better,
                  "five ratings already personalise the list, and no weight was retrained.",
                  "five ratings are not enough to do better than the popularity list here.")
)

# %% [markdown]
# ### EASE is a two-tower model too
#
# Could the two-tower *form* do what EASE does? Yes: EASE's ranking is itself a dot
# product of a linear history tower and a movie tower. Write the fit matrix's thin singular
# value decomposition $X = U\,\mathrm{diag}(s)\,V^\top$ and $P = (X^\top X + \lambda I)^{-1}
# = V\,\mathrm{diag}\big(1/(s^2+\lambda)\big)V^\top + (I - VV^\top)/\lambda$. EASE's
# weights are $B = I - P\,\mathrm{diag}(1/P_{jj})$, so for a movie $j$ that is not in the
# history $\mathbf{x}$ (the only movies a masked list can show)
#
# $$(\mathbf{x}B)_j = \underbrace{\mathbf{x}\,V\,\mathrm{diag}\!\Big(\frac{s^2}{s^2+\lambda}\Big)}_{\text{query: a bag of movie rows}}
# \cdot \underbrace{\frac{V_{j}}{\lambda P_{jj}}}_{\text{candidate } j}.$$
#
# The query is a bag of movie vectors, like the history tower's, and the candidate is one
# vector per movie; their size is the rank of $X$, at most the number of users or movies.
# The cell below builds both towers from the SVD and checks that they give EASE's scores on
# every movie outside each test user's history.

# %%
_, singular, right = np.linalg.svd(random_m.fit_matrix.astype(np.float64), full_matrices=False)
v = right.T  # movies x rank
p_diagonal = (v**2 / (singular**2 + best_l2)).sum(axis=1) + (1.0 - (v**2).sum(axis=1)) / best_l2
ease_query_bag = v * (singular**2 / (singular**2 + best_l2))  # history row @ this = query
ease_candidates = v / (best_l2 * p_diagonal)[:, None]          # one row per movie
two_tower_ease = (random_m.history @ ease_query_bag) @ ease_candidates.T
direct_ease = random_m.history @ ease
outside_history = ~random_m.history.astype(bool)
gap = np.abs(two_tower_ease - direct_ease)[outside_history].max() / np.abs(direct_ease).max()
tower_ease_recall = evaluate(two_tower_ease, random_m)["recall@10"]
print(f"tower size: {v.shape[1]} numbers; largest score difference outside the histories: "
      f"{gap:.1e} of the largest score; masked recall@10 {claims.fmt(tower_ease_recall)} "
      f"(EASE directly: {claims.fmt(results['EASE']['recall@10'])})")

# %% tags=["check"]
claims.claim(gap < 1e-6 and abs(tower_ease_recall - results["EASE"]["recall@10"]) < 1e-3,
             "checks that they give EASE's scores on every movie outside each test user's history")

# %% [markdown]
# So a two-tower model with towers this wide holds EASE exactly. What separates the two is
# how the weights are found: EASE solves its least-squares objective exactly, with one
# hyperparameter, while our towers are narrower than the catalogue and trained by stochastic
# gradient descent on a softmax objective. On dense data with a few thousand movies the
# exact solution is hard to beat; the towers earn their place where EASE cannot go: features
# of new movies (cold start), catalogues whose $n^2$ weights do not fit in memory, and context at
# request time.

# %% [markdown]
# ## 5. Three protocols, each named for what it is
#
# Every number so far comes from a **random split**: 20 % of all ratings drawn at random.
# It is the protocol of the TFRS tutorials, so our numbers compare with theirs, but it asks
# an odd question, "given a random 80 % of everything, find the other 20 %": a test rating
# is usually surrounded in time by training ratings of the same user, and by ratings of
# other users made later. Two other protocols ask questions closer to use:
#
# - **Per-user holdout** (`ev.leave_last_k`): each user's 5 latest ratings are test (and
#   the 5 before them validation). Every user is judged on what they did *last*, but
#   training still holds other users' later ratings, so the models have seen the future of
#   the catalogue (which movies were about to become popular): the leak lesson 00 warns
#   about, smaller than the random split's.
# - **Global time split** (`ev.global_time_split`): one moment in time, the cutoff; every
#   rating before it trains, and each user with at least 5 ratings before it is tested on
#   their next 10 ratings after it. Nothing from after the cutoff is seen, as in a
#   deployed system retrained every night. Validation is the same rule applied once more
#   inside the training period. The cutoff is the timestamp below which 80 % of the ratings
#   lie.
#
# On each protocol the same models learn from its fit rows and EASE's $\lambda$ is chosen
# again on its own validation split. To keep the page quick, the history tower here is the
# best single configuration of section 4 with its recorded epochs; the lesson's benchmark
# (`course bench 03`) runs every tower of this lesson on every protocol. Lesson 05 goes
# further into time: sequences, sessions and rolling cutoffs.

# %%
HOLDOUT = 5
holdout_train, holdout_test = ev.leave_last_k(ratings, HOLDOUT)
holdout_fit, holdout_validation = ev.leave_last_k(holdout_train, HOLDOUT)
cut = ev.global_time_split(ratings, quantile=0.8)
inner = ev.global_time_split(cut.train, quantile=0.8)
protocols = [
    Protocol(f"per-user holdout (latest {HOLDOUT})", holdout_train, holdout_test, holdout_fit, holdout_validation),
    Protocol("global time split", cut.train, cut.test, inner.train, inner.test),
]
pd.DataFrame([{"protocol": p.name, "fit ratings": len(p.fit), "validation ratings": len(p.validation),
               "test ratings": len(p.test), "test users": len(matrices(p).users)}
              for p in (random_protocol, *protocols)]).set_index("protocol")

# %%
best_config = next(c for c in models.HISTORY_GRID if models.history_config_label(c) == best_history)
single_name = f"history tower ({best_history})"


def run_protocol(protocol: Protocol) -> dict:
    """The lesson's models on one protocol: {model: evaluate(...) row}."""
    m = matrices(protocol)
    _, weights, _ = choose_ease(m)
    return {
        "popularity": evaluate(popularity_scores(m.fit_matrix, len(m.users)), m),
        "item-kNN (cosine)": evaluate(m.history @ item_knn_weights(m.fit_matrix), m),
        "EASE": evaluate(m.history @ weights, m),
        single_name: evaluate(train_history(m, best_config).model.scores(m.history), m),
    }


started = time.perf_counter()
by_protocol = {random_protocol.name: {
    "popularity": results["popularity"], "item-kNN (cosine)": results["item-kNN (cosine)"], "EASE": results["EASE"],
    single_name: evaluate(history_runs[best_history].model.scores(random_m.history), random_m)}}
for protocol in protocols:
    by_protocol[protocol.name] = run_protocol(protocol)
print(f"two protocols run in {claims.fmt(time.perf_counter() - started, 'seconds')}")
recall_by_protocol = pd.DataFrame({protocol: {name: row["recall@10"] for name, row in rows.items()}
                                   for protocol, rows in by_protocol.items()})
recall_by_protocol.round(3)

# %%
def describe(protocol: str) -> str:
    rows = by_protocol[protocol]
    order = " > ".join(sorted(rows, key=lambda name: -rows[name]["recall@10"]))
    best = max((name for name in rows if name != "EASE"), key=lambda name: rows[name]["recall@10"])
    against_ease = versus(rows[best], rows["EASE"])
    users = int(np.sum(~np.isnan(rows["EASE"]["per user"])))
    return (f"- **{protocol}** ({claims.fmt(users)} test users): {order}. The best of the others, {best}, is "
            f"{against_ease.word()} EASE ({against_ease.change()}, two standard errors "
            f"{claims.fmt(against_ease.noise)}).")


orders = {p: tuple(sorted(rows, key=lambda n: -rows[n]["recall@10"])) for p, rows in by_protocol.items()}
time_users = int(np.sum(~np.isnan(by_protocol["global time split"]["EASE"]["per user"])))
claims.say(
    "Models by recall@10 on each protocol:\n\n" + "\n".join(describe(p) for p in by_protocol) + "\n\n"
    + claims.pick(len(set(orders.values())) == 1,
                  "The order of the models is the same on the three protocols; the numbers are not. ",
                  "The order of the point estimates changes between the protocols; read it with the standard "
                  "errors. ")
    + f"The global time split tests {claims.fmt(time_users)} users here: MovieLens users rate in bursts, so few "
    "are active on both sides of one cutoff, and its standard errors are wide. `ev.rolling_time_splits` repeats "
    "the split at several cutoffs and pools the user-cutoff pairs."
)

# %% [markdown]
# Report the protocol that matches how the model will be used, say which one it is, and
# compare models on the same protocol, with a standard error: a random split is comparable
# with the literature, a per-user holdout judges each user on their latest ratings, and only
# the global time split keeps the future out of training entirely.
#
# ## Summary
#
# - Compare every model with **strong simple baselines**, measured in the same run, on the
#   same users, over the full catalogue: the popularity list, item-kNN and above all EASE,
#   one matrix inverse with one hyperparameter, are hard to beat on MovieLens-sized data.
# - Say "higher" only beyond the noise: two models measured on the same users give a
#   **paired standard error** of their difference.
# - A batch of $B$ pairs does not hold $B - 1$ distinct negatives: popular movies repeat, and
#   their copies are accidental hits. In-batch negatives are sampled in proportion to
#   popularity; the **logQ correction** subtracts $\log q_j$ from every logit of column $j$
#   and corrects that *sampling* bias. Measured at the same batch and learning rate, it is
#   the largest single change to the towers.
# - `remove_accidental_hits`, `temperature` and `num_hard_negatives` change how negatives
#   count; measure each on validation, one change at a time.
# - A **history query tower** (a bag of the user's movies instead of a user id), trained per
#   user to predict hidden movies with a full softmax over the catalogue, reads what EASE
#   reads, serves new users without retraining, and is still one dot product at serving time.
#   A **cosine with a temperature** keeps popularity in the movie's bias; towers **laid end
#   to end** add their scores and stay one dot product; EASE itself is such a two-tower model.
# - Name the protocol: a **random split** (comparable with the TFRS tutorials), a **per-user
#   holdout** (each user's latest ratings; other users' later ratings still train) and a
#   **global time split** (nothing after the cutoff trains) can order models differently.
#
# ## Further reading
#
# - Harald Steck. *Embarrassingly Shallow Autoencoders for Sparse Data.* WWW 2019.
#   <https://arxiv.org/abs/1905.03375>
# - Maurizio Ferrari Dacrema, Paolo Cremonesi, Dietmar Jannach. *Are We Really Making Much
#   Progress? A Worrying Analysis of Recent Neural Recommendation Approaches.* RecSys 2019.
#   <https://arxiv.org/abs/1907.06902>
# - Steffen Rendle, Walid Krichene, Li Zhang, Yehuda Koren. *Revisiting the Performance of
#   iALS on Item Recommendation Benchmarks.* RecSys 2022. <https://arxiv.org/abs/2110.14037>
# - Walid Krichene, Steffen Rendle. *On Sampled Metrics for Item Recommendation.* KDD 2020.
#   <https://doi.org/10.1145/3394486.3403226>
# - Xinyang Yi, Ji Yang, Lichan Hong, Derek Zhiyuan Cheng, Lukasz Heldt, Aditee Kumthekar,
#   Zhe Zhao, Li Wei, Ed Chi. *Sampling-Bias-Corrected Neural Modeling for Large Corpus
#   Item Recommendations.* RecSys 2019. <https://doi.org/10.1145/3298689.3346996>
# - Yoshua Bengio, Jean-Sébastien Senécal. *Adaptive Importance Sampling to Accelerate
#   Training of a Neural Probabilistic Language Model.* IEEE Transactions on Neural
#   Networks 19(4), 2008. <https://doi.org/10.1109/TNN.2007.912312>
# - Dawen Liang, Rahul G. Krishnan, Matthew D. Hoffman, Tony Jebara. *Variational
#   Autoencoders for Collaborative Filtering.* WWW 2018 (Mult-DAE and Mult-VAE: a user's
#   history in, a multinomial over the catalogue out). <https://arxiv.org/abs/1802.05814>
# - Paul Covington, Jay Adams, Emre Sargin. *Deep Neural Networks for YouTube
#   Recommendations.* RecSys 2016. <https://doi.org/10.1145/2959100.2959190>
# - Yitong Ji, Aixin Sun, Jie Zhang, Chenliang Li. *A Critical Study on Data Leakage in
#   Recommender System Offline Evaluation.* ACM TOIS 41(3), 2023 (the leak of a per-user
#   holdout). <https://doi.org/10.1145/3569930>
# - Aixin Sun. *Take a Fresh Look at Recommender Systems from an Evaluation Standpoint.*
#   SIGIR 2023 (why a global timeline matters). <https://doi.org/10.1145/3539618.3591931>
#
# Next: lesson 04 re-ranks the candidates a retrieval model returns; lesson 05 takes time
# and order seriously.
