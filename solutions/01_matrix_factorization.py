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
# # Lesson 01 · Matrix factorisation: from the rating matrix to learned embeddings
#
# **You will learn to**
#
# - explain why a *low-rank* model of the user × movie rating matrix can predict ratings
#   nobody has given yet, and where it stops working (cold start);
# - write down its objective: squared error on the observed ratings, plus L2 regularisation,
#   with a global mean, user biases and movie biases;
# - measure rating predictions honestly with RMSE and MAE on held-out ratings, and beat two
#   baselines (the global mean, then user and movie biases);
# - implement matrix factorisation twice: by hand in NumPy with stochastic gradient descent,
#   then as a Keras model trained with `fit`;
# - read learning curves, see overfitting happen, and control it with regularisation and the
#   embedding size;
# - use the learned movie embeddings to answer "which movies are most similar to this one?".
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and on the site's home page, with the data it was measured on.
#
# **How to work through it:** run the cells top to bottom (`# %%` cells run in VS Code,
# PyCharm and Spyder, or run `python lessons/01_matrix_factorization.py`). Exercises are
# functions whose body raises `NotImplementedError`; implement them, then check with
# `course check 1.1` (or `course check 01` for the whole lesson).

# %% tags=["setup"]
# Importing recsys_course first sets TF_USE_LEGACY_KERAS=1, so `tf.keras` will be Keras 2
# (tf-keras), the Keras that TensorFlow Recommenders needs in the next lessons. TensorFlow
# itself is imported in section 8, where the lesson first needs it.
import recsys_course

import time
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

SEED = recsys_course.seed_everything(42)
UNKNOWN = 0  # row 0 of every user or movie table stands for "an id never seen in training"

# %% [markdown]
# ## 1. The rating matrix
#
# Write the ratings as a matrix $R$ with one row per user and one column per movie. Cell
# $r_{ui}$ holds user $u$'s rating of movie $i$, if there is one. In MovieLens 100K that
# matrix has $943 \times 1682 \approx 1.6$ million cells and 100,000 ratings: about 94 % of it
# is empty. Predicting ratings means filling in the empty cells, and the filled cells are
# all we can learn from.
#
# An empty cell is **unknown, not zero**. The user has not told us anything about that movie;
# treating the blank as a rating of 0 would teach a model that people hate almost every film.
# Every quantity in this lesson (the loss, the metrics) is therefore computed over the
# *observed* cells only.
#
# Let us look at a small window of the real thing: eight users picked among the 200 most
# active ones, against six movies picked among the 200 most rated ones. This is one of the
# densest parts of the matrix, and it is still full of holes.

# %%
data = recsys_course.load_movielens()
print("Dataset:", data.summary())
print("Demographic columns:", data.has_demographics, "(this lesson does not use them)")
ratings, movies = data.ratings, data.movies

# %%
top_users = ratings["user_id"].value_counts().index[0:200:25]  # activity ranks 1, 26, ...
top_movies = ratings["movie_id"].value_counts().index[0:200:40]  # popularity ranks 1, 41, ...
in_window = ratings["user_id"].isin(top_users) & ratings["movie_id"].isin(top_movies)
corner = (
    ratings[in_window]
    .pivot_table(index="user_id", columns="movie_title", values="user_rating", aggfunc="mean")
    .reindex(index=top_users)
)
corner.columns = [t if len(t) <= 24 else t[:22] + "…" for t in corner.columns]
corner

# %% [markdown]
# Empty cells are missing values: `NaN` in pandas (this site draws them as a dash). Across the
# whole matrix almost all cells are empty.

# %% tags=["check"]
from recsys_course.claims import claim

window_density = corner.notna().to_numpy().mean()
overall_density = len(ratings[["user_id", "movie_id"]].drop_duplicates()) / (
    ratings["user_id"].nunique() * ratings["movie_id"].nunique())
claim(window_density > 2 * overall_density and window_density < 1,
      "This is one of the densest parts of the matrix, and it is still full of holes.")
claim(overall_density < 0.1, "Across the whole matrix almost all cells are empty.")

# %% [markdown]
# ## 2. Measuring rating predictions: RMSE and MAE
#
# Before building a model we need a way to score one. For a set $\mathcal T$ of held-out
# (user, movie, rating) triples and predictions $\hat r_{ui}$:
#
# $$\text{RMSE} = \sqrt{\frac{1}{|\mathcal T|} \sum_{(u,i) \in \mathcal T} (r_{ui} - \hat r_{ui})^2}
# \qquad
# \text{MAE} = \frac{1}{|\mathcal T|} \sum_{(u,i) \in \mathcal T} |r_{ui} - \hat r_{ui}|$$
#
# Both are in stars. RMSE squares the errors before averaging, so one prediction that is off
# by 3 stars costs as much as nine that are off by 1: it punishes confident blunders. It was
# the metric of the Netflix Prize (2006-2009), which made matrix factorisation famous. MAE
# treats all errors linearly and is easier to explain to a product manager ("off by 0.7
# stars on average"). Lower is better for both.
#
# ### Exercise 1.1 · RMSE over the observed cells only
#
# Implement `rmse(actual, predicted, observed)`. It must work on two shapes of input: lists
# of ratings (every entry observed, `observed=None`), and whole matrices where a boolean mask
# says which cells hold a real rating. The unobserved cells of `actual` may contain anything,
# including `NaN`, and must not influence the result.

# %% tags=["exercise"] exercise="1.1"
def rmse(
    actual: np.ndarray, predicted: np.ndarray, observed: np.ndarray | None = None
) -> float:
    """Root mean squared error over the observed entries.

    Args:
        actual: true ratings, any shape (a vector of ratings or a users x movies matrix).
            Unobserved entries may hold any value, NaN included.
        predicted: predictions, same shape as ``actual``.
        observed: boolean mask, same shape, True where ``actual`` holds a real rating;
            ``None`` means every entry is observed. At least one entry must be observed.

    Returns:
        ``sqrt(mean((actual - predicted) ** 2))`` over the observed entries, as a float.
    """
    # BEGIN SOLUTION
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if observed is None:
        observed = np.ones(actual.shape, dtype=bool)
    errors = actual[observed] - predicted[observed]
    return float(np.sqrt(np.mean(errors**2)))
    # END SOLUTION


# %% [markdown]
# Try it on the window above: predict the global mean rating for every cell and compare
# the honest RMSE with what you would get by pretending that empty cells are zeros.

# %%
window = corner.to_numpy(dtype=float)
known = ~np.isnan(window)
everywhere_mean = np.full(window.shape, ratings["user_rating"].mean())
print(f"RMSE on the observed cells:             {rmse(window, everywhere_mean, known):.3f}")
print(f"RMSE if empty cells counted as 0 stars: {rmse(np.nan_to_num(window), everywhere_mean):.3f}")


# %% [markdown]
# ## 3. An honest split, and ids turned into row numbers
#
# We hold out a random 20 % of the ratings as the **test set**, with the course's seeded split
# so every lesson and benchmark scores on the same ratings. From the remaining 80 % we carve a
# **validation set** (10 % of it) and fit on the rest. Every choice we make (learning rate,
# number of epochs, regularisation strength, embedding size) is made by looking at the
# validation set; the test set is looked at once per model, to report its number. A model
# tuned on the test set would report a score it will not reach on new ratings.
#
# !!! note "Random split or temporal split?"
#     Lesson 00 showed that a random split lets the model train on ratings made after
#     some test ratings. Most published rating-prediction numbers on MovieLens (for
#     example the cross-validated ones quoted at the end of this lesson) use random splits,
#     so we use one here to compare with them; lesson 00's temporal split is the right
#     choice when you simulate a live system.

# %% tags=["setup"]
VALID_FRACTION = 0.1  # share of the training ratings held out for choosing hyperparameters

# %%
train_frame, test_frame = recsys_course.split_ratings(ratings, test_fraction=0.2, seed=SEED)
fit_frame, valid_frame = recsys_course.split_ratings(train_frame, VALID_FRACTION, seed=SEED)
print(f"ratings: fit {len(fit_frame):,}, validation {len(valid_frame):,}, test {len(test_frame):,}")

# %% [markdown]
# A model stores one row of parameters per user and per movie, so we number them: the ids
# seen in the fitting data get rows 1..n, in sorted order, and row 0 is kept for any id the
# model has never seen (a validation or test rating of a movie with no training ratings).
# Row 0 never receives a training rating, so its parameters stay at zero and an unknown
# movie is predicted from what *is* known: the global mean and the user's bias. The
# `Interactions` triple below is the form every model in this lesson consumes.

# %% tags=["setup"]
class Interactions(NamedTuple):
    """Ratings as three aligned arrays of length n: ``users[j]`` rated ``items[j]`` with
    ``ratings[j]`` stars. Indices are int64 rows of the parameter tables (0 = unknown)."""

    users: np.ndarray  # (n,) int64
    items: np.ndarray  # (n,) int64
    ratings: np.ndarray  # (n,) float64


def build_vocabulary(ids: pd.Series) -> dict[str, int]:
    """Map each distinct id in ``ids`` to a row 1..n (sorted by id); row 0 is for unknowns."""
    return {key: row for row, key in enumerate(sorted(pd.unique(ids)), start=1)}


def encode(
    frame: pd.DataFrame, user_vocab: dict[str, int], item_vocab: dict[str, int]
) -> Interactions:
    """Turn a ratings frame (``user_id``, ``movie_id``, ``user_rating``) into row indices."""
    return Interactions(
        frame["user_id"].map(user_vocab).fillna(UNKNOWN).to_numpy(np.int64),
        frame["movie_id"].map(item_vocab).fillna(UNKNOWN).to_numpy(np.int64),
        frame["user_rating"].to_numpy(np.float64),
    )


# %%
user_vocab = build_vocabulary(fit_frame["user_id"])
item_vocab = build_vocabulary(fit_frame["movie_id"])
n_users, n_items = len(user_vocab) + 1, len(item_vocab) + 1  # + 1 for the unknown row
fit, valid, test = (encode(f, user_vocab, item_vocab) for f in (fit_frame, valid_frame, test_frame))
print(f"{n_users - 1:,} users and {n_items - 1:,} movies in the fitting data")
print(f"test ratings of a movie never seen in fitting: {np.mean(test.items == UNKNOWN):.2%}")

# %% [markdown]
# ## 4. Baselines: the global mean, then user and movie biases
#
# A model is only as good as the simplest thing it beats. The simplest prediction is the
# mean training rating $\mu$ for everything. The next one explains that some users are
# generous and some movies are better than others:
#
# $$\hat r_{ui} = \mu + b_u + b_i$$
#
# where $b_u$ is how much user $u$ rates above the mean and $b_i$ how much movie $i$ is rated
# above it. These *biases* account for a surprising share of the signal, and every model
# below keeps them.
#
# We fit the biases by minimising
# $\sum_{(u,i)} (r_{ui} - \mu - b_u - b_i)^2 + \lambda \left(\sum_u b_u^2 + \sum_i b_i^2\right)$.
# With the user biases held fixed, each movie bias has a closed form: the movie's average
# residual, *damped* towards zero, $b_i = \sum_{u} (r_{ui} - \mu - b_u) / (\lambda + n_i)$,
# with $n_i$ the movie's number of ratings. A movie with 300 ratings keeps almost all of its
# average; one with 2 ratings and $\lambda = 5$ keeps 2/7 of it, because two ratings are weak
# evidence. Then we fix the movie biases and solve for the user biases the same way, and
# alternate. This *alternating* exact minimisation is the idea behind ALS, which section 6
# applies to the full model.
#
# The model's parameters live in an `MFParams` record: a global mean, two bias vectors and two
# factor matrices (with zero columns for the bias-only model, which is simply matrix
# factorisation with $k = 0$).

# %% tags=["setup"]
class MFParams(NamedTuple):
    """Parameters of biased matrix factorisation, as NumPy arrays.

    Row 0 of every table is the unknown id and stays zero. Shapes, with k factors:
    ``global_mean`` a float (mu, never trained), ``user_bias`` (n_users,), ``item_bias``
    (n_items,), ``user_factors`` (n_users, k) and ``item_factors`` (n_items, k). The record
    itself is immutable; training changes the arrays in place.
    """

    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray


def init_params(
    n_users: int, n_items: int, dim: int, global_mean: float, seed: int
) -> MFParams:
    """Zero biases and small random factors (normal, standard deviation 0.1); row 0 all zero.

    Random factors break the symmetry: if every vector started equal, every gradient would
    be equal too and all users would stay identical.
    """
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(0.0, 0.1, (n_users, dim))
    item_factors = rng.normal(0.0, 0.1, (n_items, dim))
    user_factors[UNKNOWN] = 0.0
    item_factors[UNKNOWN] = 0.0
    user_bias, item_bias = np.zeros(n_users), np.zeros(n_items)
    return MFParams(float(global_mean), user_bias, item_bias, user_factors, item_factors)


def fit_baseline(
    data: Interactions, n_users: int, n_items: int, reg: float, sweeps: int = 5
) -> MFParams:
    """Global mean plus damped user and movie biases, fitted by alternating closed-form steps.

    ``reg`` is lambda in ``b_i = sum(residuals of movie i) / (reg + n_i)``. Returns an
    ``MFParams`` with zero factor columns (k = 0); rows without ratings keep a zero bias.
    """
    mu = float(data.ratings.mean())
    user_bias, item_bias = np.zeros(n_users), np.zeros(n_items)
    user_count = np.bincount(data.users, minlength=n_users) + reg
    item_count = np.bincount(data.items, minlength=n_items) + reg
    for _ in range(sweeps):
        residual = data.ratings - mu - user_bias[data.users]
        item_sum = np.bincount(data.items, weights=residual, minlength=n_items)
        item_bias = np.divide(item_sum, item_count, out=np.zeros(n_items), where=item_count > 0)
        residual = data.ratings - mu - item_bias[data.items]
        user_sum = np.bincount(data.users, weights=residual, minlength=n_users)
        user_bias = np.divide(user_sum, user_count, out=np.zeros(n_users), where=user_count > 0)
    return MFParams(mu, user_bias, item_bias, np.zeros((n_users, 0)), np.zeros((n_items, 0)))


# %% [markdown]
# ## 5. Latent factors
#
# Biases say nothing about *taste*: they predict the same ordering of movies for everyone.
# Matrix factorisation adds, for every user, a vector $\mathbf p_u \in \mathbb R^k$ and for every
# movie a vector $\mathbf q_i \in \mathbb R^k$, and predicts
#
# $$\hat r_{ui} = \mu + b_u + b_i + \mathbf p_u^\top \mathbf q_i .$$
#
# Think of the $k$ coordinates as hidden dimensions of taste (how much action, how much
# romance, how arty) that the model invents for itself: $\mathbf q_i$ says how much movie $i$
# has of each, $\mathbf p_u$ how much user $u$ cares about each, and the dot product adds up
# the matches. Stacking the vectors as rows of $P$ (users × $k$) and $Q$ (movies × $k$), the
# interaction part of the whole matrix is $PQ^\top$: a matrix of rank at most $k$.
#
# ```mermaid
# flowchart LR
#     R["<b>R</b>: users × movies<br/>a few % of cells known"]
#     P["<b>P</b>: users × k<br/>one taste vector per user"]
#     Q["<b>Q</b>: movies × k<br/>one profile vector per movie"]
#     F["every cell predicted:<br/>μ + b<sub>u</sub> + b<sub>i</sub> + p<sub>u</sub> · q<sub>i</sub>"]
#     R -- "fit on the known cells" --> P
#     R -- "fit on the known cells" --> Q
#     P --> F
#     Q --> F
# ```
#
# **Why can a low-rank model generalise?** Count parameters, with the $k = 32$ factors this
# lesson trains (section 7) on this page's data:

# %%
from recsys_course.claims import fmt, pick, say

factor_count = (n_users - 1 + n_items - 1) * 32
per_rating = factor_count / len(fit.ratings)
say(
    f"The matrix of the fitting data has {fmt((n_users - 1) * (n_items - 1))} cells; with $k = 32$ the factors have "
    f"$({fmt(n_users - 1)} + {fmt(n_items - 1)}) \\times 32 = {fmt(factor_count)}$ numbers, fitted on "
    f"{fmt(len(fit.ratings))} ratings: "
    + pick(per_rating >= 0.5, f"{fmt(per_rating, 'number')} parameters per rating, so a low rank alone does "
           "not stop the model from memorising its training ratings.",
           f"{fmt(1 / per_rating, 'number')} ratings per parameter; still, a low rank alone does not stop the "
           "model from memorising the ratings of its rarely rated movies and users.")
)

# %% [markdown]
# Three things together make it generalise: every user's ratings must be explained by a few
# taste coordinates that are *shared* with everyone else; the L2 penalty of section 6 keeps
# vectors small unless many ratings pull them; and early stopping on validation data
# (section 8) ends training before the vectors fit the noise. An empty cell $(u, i)$ is then
# predicted from $\mathbf p_u$, learned from $u$'s other ratings, and $\mathbf q_i$, learned
# from other users' ratings of $i$. That sharing is collaborative filtering. The SVD of a
# full matrix would find the best rank-$k$ approximation directly, but our matrix is mostly
# unknown, which is why we fit the factors by optimisation over the known cells only (Funk,
# 2006; Koren, Bell and Volinsky, 2009).
#
# ### Exercise 1.2 · Predict ratings from biases and factors
#
# Implement `predict(params, users, items)` for a batch of (user, movie) pairs. Compute one
# dot product per pair; do not build the whole users × movies matrix.

# %% tags=["exercise"] exercise="1.2"
def predict(params: MFParams, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Predicted ratings for aligned pairs ``(users[j], items[j])``.

    Args:
        params: model parameters (k may be 0: then the dot product is 0).
        users: int array of shape (n,), rows of the user tables.
        items: int array of shape (n,), rows of the movie tables.

    Returns:
        Float array of shape (n,): ``mu + b_u + b_i + p_u . q_i`` for each pair.
    """
    # BEGIN SOLUTION
    interaction = np.sum(params.user_factors[users] * params.item_factors[items], axis=1)
    return params.global_mean + params.user_bias[users] + params.item_bias[items] + interaction
    # END SOLUTION


# %% [markdown]
# The baselines are now two calls away. We choose the damping $\lambda$ of the bias baseline
# on the validation set, then report both baselines once on the test set.

# %%
from IPython.display import display

global_mean_model = init_params(n_users, n_items, 0, fit.ratings.mean(), SEED)
bias_search = pd.DataFrame({"lambda": [0.0, 1.0, 3.0, 10.0, 30.0]})
bias_search["validation RMSE"] = [
    rmse(valid.ratings, predict(fit_baseline(fit, n_users, n_items, reg), valid.users, valid.items))
    for reg in bias_search["lambda"]
]
BASELINE_REG = float(bias_search.loc[bias_search["validation RMSE"].idxmin(), "lambda"])
bias_model = fit_baseline(fit, n_users, n_items, BASELINE_REG)
display(bias_search.round(4))
print(f"chosen lambda = {BASELINE_REG:g}")

# %%
results = {}  # model name -> test metrics, filled as we go
squared_errors = {}  # model name -> squared error of each test rating, to compare models


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute error between two vectors of ratings (all entries observed)."""
    return float(np.mean(np.abs(np.asarray(actual, float) - np.asarray(predicted, float))))


def report(name: str, params_or_predictions, seconds: float = 0.0) -> None:
    """Score a model (MFParams, or precomputed test predictions) on the test set, once."""
    if isinstance(params_or_predictions, MFParams):
        predictions = predict(params_or_predictions, test.users, test.items)
    else:
        predictions = np.asarray(params_or_predictions)
    squared_errors[name] = (test.ratings - predictions) ** 2
    results[name] = {
        "test RMSE": rmse(test.ratings, predictions),
        "test MAE": mae(test.ratings, predictions),
        "fit seconds": seconds,
    }


report("global mean", global_mean_model)
report("user + movie biases", bias_model)
pd.DataFrame(results).T.round(4)

# %% [markdown]
# Is a difference between two test RMSEs real, or the luck of which ratings landed in the
# test set? Both models are scored on the same test ratings, so we compare their squared
# errors rating by rating: `claims.compare` calls a difference real only beyond twice its
# standard error (`evaluation.paired_standard_error`), and "about the same" otherwise.

# %%
from recsys_course.claims import compare, signed
from recsys_course.evaluation import paired_standard_error


def compare_models(name: str, reference: str):
    """``compare()`` of two models' test errors: mean squared errors, paired by test rating."""
    errors, reference_errors = squared_errors[name], squared_errors[reference]
    return compare(errors.mean(), reference_errors.mean(), se=paired_standard_error(errors, reference_errors),
                   higher_is_better=False, kind="error")


def rmse_change(name: str, reference: str) -> str:
    """"from 0.9131 to 0.9052 stars (−0.0079)": two test RMSEs and their change, new minus old."""
    new, old = results[name]["test RMSE"], results[reference]["test RMSE"]
    return f"from {fmt(old, 'error')} to {fmt(new, 'error')} stars ({signed(new - old, 'error', like=old)})"


biases_vs_mean = compare_models("user + movie biases", "global mean")
say(
    "On this page's data the biases "
    + pick(biases_vs_mean.better, "cut the test RMSE", "do not cut the test RMSE beyond its noise")
    + f", {rmse_change('user + movie biases', 'global mean')}."
)

# %% [markdown]
# The bias model is the bar the factor models must clear: everything they add beyond it is
# *personal* taste.
#
# ## 6. The objective, and two ways to minimise it
#
# Matrix factorisation fits all parameters together by minimising, over the set
# $\mathcal K$ of known training ratings,
#
# $$\mathcal L = \sum_{(u,i) \in \mathcal K} \Big[ (r_{ui} - \hat r_{ui})^2
#   + \lambda \big( \lVert \mathbf p_u \rVert^2 + \lVert \mathbf q_i \rVert^2 + b_u^2 + b_i^2 \big) \Big].$$
#
# The first term rewards fitting the known ratings. The second, **L2 regularisation**, charges
# for large parameters: without it, a user with three ratings could get a huge vector that
# fits those three exactly and predicts nonsense for everything else. Written this way (the
# form of Koren, Bell and Volinsky, 2009), the penalty is paid once per rating, so it weighs
# each parameter in proportion to how often it is used, and it is exactly what a gradient
# step on one rating sees.
#
# ### Exercise 1.3 · The regularised loss
#
# Implement `regularized_loss(params, data, reg)`: the formula above, summed (not averaged)
# over the ratings in `data`.

# %% tags=["exercise"] exercise="1.3"
def regularized_loss(params: MFParams, data: Interactions, reg: float) -> float:
    """The matrix factorisation objective on ``data``.

    Args:
        params: model parameters.
        data: the observed ratings to sum over.
        reg: lambda, the L2 strength (>= 0).

    Returns:
        The float ``sum over ratings j of (r_j - prediction_j) ** 2 + reg * (|p_u|^2 + |q_i|^2
        + b_u^2 + b_i^2)``, where u = data.users[j], i = data.items[j]: a user with three
        ratings pays the penalty for its parameters three times.
    """
    # BEGIN SOLUTION
    users, items = data.users, data.items
    p, q = params.user_factors[users], params.item_factors[items]
    b_u, b_i = params.user_bias[users], params.item_bias[items]
    errors = data.ratings - (params.global_mean + b_u + b_i + np.sum(p * q, axis=1))
    penalty = np.sum(p**2, axis=1) + np.sum(q**2, axis=1) + b_u**2 + b_i**2
    return float(np.sum(errors**2 + reg * penalty))
    # END SOLUTION


# %% [markdown]
# **Two ways to minimise $\mathcal L$.**
#
# - **Stochastic gradient descent (SGD)**, popularised by Simon Funk during the Netflix
#   Prize: visit the ratings in random order and nudge the parameters of each rating's user
#   and movie against the gradient of that rating's term. With the error
#   $e_{ui} = r_{ui} - \hat r_{ui}$ and a learning rate $\gamma$ (the factor 2 of the
#   derivative folded into $\gamma$):
#
#     $$\begin{aligned}
#     b_u &\mathrel{+}= \gamma (e_{ui} - \lambda b_u) &
#     b_i &\mathrel{+}= \gamma (e_{ui} - \lambda b_i) \\
#     \mathbf p_u &\mathrel{+}= \gamma (e_{ui} \mathbf q_i - \lambda \mathbf p_u) &
#     \mathbf q_i &\mathrel{+}= \gamma (e_{ui} \mathbf p_u - \lambda \mathbf q_i)
#     \end{aligned}$$
#
#     Each step is cheap, it works for any differentiable model (Keras does exactly this,
#     with a smarter step size), but it needs a learning rate and a number of epochs.
#
# - **Alternating least squares (ALS)**: with $Q$ fixed, $\mathcal L$ is an ordinary ridge
#   regression for each user separately, with the closed-form solution
#   $\mathbf p_u = (Q_u^\top Q_u + \lambda n_u I)^{-1} Q_u^\top \mathbf r_u$ (rows of $Q$ for the
#   $n_u$ movies $u$ rated, and their ratings; biases left out for brevity). Solve all users, then all movies with $P$ fixed, and
#   repeat. Each half-step is an exact minimum, users are independent (easy to parallelise),
#   and there is no learning rate. ALS shines for *implicit* feedback, where every cell of the
#   matrix enters the loss and SGD over all cells would be far too slow (Hu, Koren and
#   Volinsky, 2008). Our bias baseline used the same alternation with $k = 0$, with one
#   difference: its penalty $\lambda$ is the same for every bias, whereas the formula above
#   scales it with each user's number of ratings $n_u$ (the "weighted-$\lambda$"
#   regularisation of Zhou et al., 2008).
#
# !!! note "Explicit or implicit feedback?"
#     This lesson uses *explicit* feedback: stars that users gave on purpose, so the model is
#     a regression over the observed cells and RMSE is a natural score. Most real systems
#     mostly see *implicit* feedback: plays, clicks, purchases. There a present cell means
#     "interacted", not "liked", and an empty cell is weak evidence of disinterest (the user
#     may never have seen the item). Implicit-feedback factorisation therefore puts every
#     cell in the loss (interactions as 1 with a confidence weight, everything else as 0
#     with a small weight, as in Hu, Koren and Volinsky, 2008) or samples negatives, and it
#     is scored with ranking metrics such as recall at $k$ instead of RMSE. Lesson 02 takes
#     that route.
#
# We implement SGD, with one practical twist: instead of one rating at a time, a small
# *mini-batch* of ratings is processed with vectorised NumPy, which is dozens of times faster
# in Python and, with small batches, behaves like the one-at-a-time version.
#
# ### Exercise 1.4 · One epoch of SGD
#
# Implement `sgd_epoch(params, data, lr, reg, batch_size, rng)`. Shuffle the ratings with
# `rng.permutation`, cut them into consecutive mini-batches and, for each batch, compute the
# errors and all four updates from the parameter values *at the start of the batch*, then
# apply them. A user who appears twice in one batch must receive both updates: NumPy's
# `a[idx] += v` silently keeps only one of them when `idx` has repeats, while
# `np.add.at(a, idx, v)` adds them all.

# %% tags=["exercise"] exercise="1.4"
def sgd_epoch(
    params: MFParams,
    data: Interactions,
    lr: float,
    reg: float,
    batch_size: int,
    rng: np.random.Generator,
) -> MFParams:
    """One pass of mini-batch SGD over ``data``, updating ``params`` in place.

    Ratings are visited in the order ``rng.permutation(len(data.ratings))``, in consecutive
    batches of ``batch_size``. For each batch, with ``e = r - prediction`` and every right-hand
    side taken from the values at the start of the batch:
    ``b_u += lr * (e - reg * b_u)``, ``b_i += lr * (e - reg * b_i)``,
    ``p_u += lr * (e * q_i - reg * p_u)``, ``q_i += lr * (e * p_u - reg * q_i)``.
    A user or movie that appears several times in a batch receives the sum of its updates.
    ``global_mean`` never changes.

    Returns:
        ``params`` itself, updated.
    """
    # BEGIN SOLUTION
    order = rng.permutation(len(data.ratings))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        u, i, r = data.users[batch], data.items[batch], data.ratings[batch]
        b_u, b_i = params.user_bias[u], params.item_bias[i]
        p, q = params.user_factors[u], params.item_factors[i]
        e = r - (params.global_mean + b_u + b_i + np.sum(p * q, axis=1))
        np.add.at(params.user_bias, u, lr * (e - reg * b_u))
        np.add.at(params.item_bias, i, lr * (e - reg * b_i))
        np.add.at(params.user_factors, u, lr * (e[:, None] * q - reg * p))
        np.add.at(params.item_factors, i, lr * (e[:, None] * p - reg * q))
    return params
    # END SOLUTION


# %% [markdown]
# ## 7. Matrix factorisation in NumPy
#
# Training is a loop of epochs. After each one we record the RMSE on the fitting, validation
# and test ratings, so we can draw learning curves later. Only the validation curve was used
# to pick the constants below; the test curve is drawn for teaching, never for choosing.

# %% tags=["setup"]
def train_numpy_mf(
    fit: Interactions, n_users: int, n_items: int, *, dim: int, lr: float, reg: float,
    epochs: int, batch_size: int, seed: int, watch: dict[str, Interactions],
) -> tuple[MFParams, pd.DataFrame]:
    """Fit MF with ``sgd_epoch``; return the parameters and one row of RMSEs per epoch.

    The history has an ``epoch`` column and one column per entry of ``watch`` (name -> data).
    """
    rng = np.random.default_rng(seed)
    params = init_params(n_users, n_items, dim, fit.ratings.mean(), seed)
    rows = []
    for epoch in range(1, epochs + 1):
        sgd_epoch(params, fit, lr, reg, batch_size, rng)
        row = {"epoch": epoch}
        for name, part in watch.items():
            row[name] = rmse(part.ratings, predict(params, part.users, part.items))
        rows.append(row)
    return params, pd.DataFrame(rows)


# Chosen on the validation set of MovieLens latest-small, then kept for every dataset.
NUMPY_MF = dict(dim=32, lr=0.02, reg=0.1, epochs=25, batch_size=64)

# %%
watch = {"fit": fit, "validation": valid, "test": test}
started = time.perf_counter()
numpy_model, numpy_curves = train_numpy_mf(
    fit, n_users, n_items, **NUMPY_MF, seed=SEED, watch=watch
)
numpy_seconds = time.perf_counter() - started
print(f"NumPy MF: {NUMPY_MF['epochs']} epochs in {numpy_seconds:.1f} s")
display(numpy_curves.iloc[[0, 4, 9, -1]].set_index("epoch").round(4))
report("NumPy MF (SGD)", numpy_model, numpy_seconds)

# %% [markdown]
# ## 8. The same model in Keras
#
# In Keras the four tables become `Embedding` layers: a lookup table whose row for an index
# is a trainable vector. The biases are embeddings of size 1. Training is `fit` with the mean
# squared error, and the Adam optimiser adapts each parameter's step size, so we do not
# hand-tune a learning-rate schedule.
#
# ```mermaid
# flowchart LR
#     U["user index u"] --> PU["Embedding<br/>p<sub>u</sub> (k numbers)"]
#     U --> BU["Embedding<br/>b<sub>u</sub> (1 number)"]
#     I["movie index i"] --> QI["Embedding<br/>q<sub>i</sub> (k numbers)"]
#     I --> BI["Embedding<br/>b<sub>i</sub> (1 number)"]
#     PU --> D["p<sub>u</sub> · q<sub>i</sub>"]
#     QI --> D
#     D --> S["μ + b<sub>u</sub> + b<sub>i</sub> + p<sub>u</sub> · q<sub>i</sub>"]
#     BU --> S
#     BI --> S
# ```
#
# Keras computes gradients of whatever loss the model reports, so the regularisation enters
# through `self.add_loss(...)` inside `call`: a penalty on the embedding rows *used by the
# batch*, averaged over the batch. Added to the mean squared error, that is the objective of
# exercise 1.3 divided by the number of ratings, so $\lambda$ means the same thing in both
# implementations. (Keras's `embeddings_regularizer` would instead charge the whole table at
# every step, another objective.)
#
# ### Exercise 1.5 · A matrix factorisation model in Keras
#
# The layers are created for you in `__init__`. Implement `call`: look up the four
# embeddings, return the predicted ratings as a vector of shape `(batch,)`, and, when
# `training` is true, add the regularisation penalty with `self.add_loss`.

# %% tags=["setup"]
# TensorFlow is imported where the lesson first needs it: the NumPy sections above (and the
# checks of their exercises) then start without its ten-second import.
import tensorflow as tf

tf.random.set_seed(SEED)
tf.config.experimental.enable_op_determinism()  # reruns give the same numbers on CPU

# %% tags=["exercise"] exercise="1.5"
def zero_row_normal(seed: int, stddev: float = 0.1):
    """A Keras initializer: normal values, except row 0 (the unknown id), which is zero."""

    def initialize(shape, dtype=None):
        dtype = dtype or tf.float32
        values = tf.random.stateless_normal(shape, seed=[seed, 0], stddev=stddev, dtype=dtype)
        return tf.concat([tf.zeros_like(values[:1]), values[1:]], axis=0)

    return initialize


class MatrixFactorization(tf.keras.Model):
    """Biased matrix factorisation: ``mu + b_u + b_i + p_u . q_i``.

    Inputs: a dict with ``"user_index"`` and ``"item_index"``, int tensors of shape (batch,)
    holding table rows (0 = unknown id).
    Output: float32 tensor of shape (batch,), the predicted ratings.
    Training (``training=True``): adds, with ``self.add_loss``, the penalty
    ``reg * mean over the batch of (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)``.
    """

    def __init__(
        self, n_users: int, n_items: int, dim: int, reg: float, global_mean: float, seed: int = 42
    ):
        super().__init__()
        self.reg = float(reg)
        self.global_mean = float(global_mean)
        Embedding = tf.keras.layers.Embedding
        self.user_factors = Embedding(n_users, dim, embeddings_initializer=zero_row_normal(seed))
        self.item_factors = Embedding(n_items, dim, embeddings_initializer=zero_row_normal(seed + 1))
        self.user_bias = Embedding(n_users, 1, embeddings_initializer="zeros")
        self.item_bias = Embedding(n_items, 1, embeddings_initializer="zeros")

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        # BEGIN SOLUTION
        p = self.user_factors(inputs["user_index"])  # (batch, k)
        q = self.item_factors(inputs["item_index"])  # (batch, k)
        b_u = tf.squeeze(self.user_bias(inputs["user_index"]), axis=-1)  # (batch,)
        b_i = tf.squeeze(self.item_bias(inputs["item_index"]), axis=-1)  # (batch,)
        if training:
            squared_norms = tf.reduce_sum(p * p, axis=1) + tf.reduce_sum(q * q, axis=1)
            penalty = squared_norms + b_u**2 + b_i**2
            self.add_loss(self.reg * tf.reduce_mean(penalty))
        return self.global_mean + b_u + b_i + tf.reduce_sum(p * q, axis=1)
        # END SOLUTION


# %% [markdown]
# Training it: `fit` prints one line per epoch (the loss includes the penalty; `rmse` is the
# running training RMSE during the epoch, `val_rmse` the validation RMSE at its end). A
# small callback records end-of-epoch RMSEs on our three sets for the learning curves, and
# `EarlyStopping` ends training when the validation RMSE has not improved for a few epochs,
# then restores the weights of the best epoch: the number of epochs is chosen on validation
# data, never on the test set.

# %% tags=["setup"]
def as_inputs(data: Interactions) -> dict[str, np.ndarray]:
    """The dict of index arrays that ``MatrixFactorization`` takes."""
    return {"user_index": data.users, "item_index": data.items}


def keras_predict(model: tf.keras.Model, data: Interactions) -> np.ndarray:
    """Predicted ratings for ``data`` as a float64 vector (one call: the sets here are small)."""
    return model(as_inputs(data), training=False).numpy().astype(np.float64)


class RmseHistory(tf.keras.callbacks.Callback):
    """Records, after every epoch, the model's RMSE on each named set of ratings."""

    def __init__(self, sets: dict[str, Interactions]):
        super().__init__()
        self.sets, self.rows = sets, []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch + 1}
        for name, part in self.sets.items():
            row[name] = rmse(part.ratings, keras_predict(self.model, part))
        self.rows.append(row)


def train_keras_mf(
    fit: Interactions, valid: Interactions, n_users: int, n_items: int, *, dim: int, reg: float,
    lr: float, epochs: int, batch_size: int, patience: int, seed: int,
    watch: dict[str, Interactions], verbose: int = 2,
) -> tuple[MatrixFactorization, pd.DataFrame]:
    """Fit ``MatrixFactorization`` with Adam and early stopping on the validation RMSE.

    Returns the model (weights of the best validation epoch) and one row of RMSEs per epoch
    (an ``epoch`` column and one column per entry of ``watch``).
    """
    tf.keras.utils.set_random_seed(seed)
    model = MatrixFactorization(n_users, n_items, dim, reg, fit.ratings.mean(), seed)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=lr),
        loss="mse",
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    history = RmseHistory(watch)
    stop = tf.keras.callbacks.EarlyStopping(
        monitor="val_rmse", patience=patience, restore_best_weights=True
    )
    model.fit(
        as_inputs(fit), fit.ratings, validation_data=(as_inputs(valid), valid.ratings),
        epochs=epochs, batch_size=batch_size, callbacks=[history, stop], verbose=verbose,
    )
    return model, pd.DataFrame(history.rows)


# Chosen on the validation set of MovieLens latest-small, then kept for every dataset.
KERAS_MF = dict(dim=32, reg=0.15, lr=0.005, epochs=40, batch_size=1024, patience=3)

# %%
started = time.perf_counter()
keras_model, keras_curves = train_keras_mf(
    fit, valid, n_users, n_items, **KERAS_MF, seed=SEED, watch=watch
)
keras_seconds = time.perf_counter() - started
best_epoch = int(keras_curves["validation"].idxmin()) + 1
print(f"Keras MF: {len(keras_curves)} epochs in {keras_seconds:.1f} s, best epoch {best_epoch}")
report("Keras MF", keras_predict(keras_model, test), keras_seconds)
pd.DataFrame(results).T.round(4)

# %% [markdown]
# ## 9. Learning curves: overfitting, and what controls it
#
# To see what regularisation buys, we train the same Keras model once more with
# $\lambda = 0$ for a few epochs.

# %%
unregularised = {**KERAS_MF, "reg": 0.0, "epochs": 12, "patience": 12}
_, free_curves = train_keras_mf(
    fit, valid, n_users, n_items, **unregularised, seed=SEED, watch=watch, verbose=0
)

# %%
bias_test_rmse = results["user + movie biases"]["test RMSE"]
# One panel per row, so that each stays readable on a phone screen.
fig, axes = plt.subplots(3, 1, figsize=(7, 9), sharey=True)
panels = [
    (f"NumPy MF (SGD), λ = {NUMPY_MF['reg']}", numpy_curves),
    (f"Keras MF, λ = {KERAS_MF['reg']}", keras_curves),
    ("Keras MF, λ = 0", free_curves),
]
for ax, (title, curves) in zip(axes, panels):
    for column, colour in (("fit", "#3f51b5"), ("validation", "#ff9800"), ("test", "#009688")):
        ax.plot(curves["epoch"], curves[column], label=column, color=colour)
    ax.axhline(bias_test_rmse, color="grey", linestyle="--", label="biases only (test)")
    ax.set(title=title, xlabel="epoch", ylabel="RMSE (stars)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Three things to read in these curves:
#
# - The **fitting RMSE** keeps falling in every panel: with enough epochs, the model can fit
#   the ratings it sees better and better.
# - Without regularisation (bottom panel), the **validation and test RMSE** stop improving
#   after a few epochs and then climb while the fitting RMSE dives: the model is memorising
#   individual ratings, not learning tastes. This is **overfitting**, and it can end worse
#   than the bias baseline.
# - With regularisation the gap between fitting and held-out error grows far more slowly,
#   and the held-out error settles below the dashed bias baseline. The validation and test
#   curves move together, which is what lets us choose on one and report the other.

# %% tags=["check"]
CURVE_NOISE = 0.005  # stars: a change of the validation RMSE smaller than this is not a climb


def final_gap(curves: pd.DataFrame) -> float:
    return float(curves["validation"].iloc[-1] - curves["fit"].iloc[-1])


claim(all(c["fit"].iloc[-1] < c["fit"].iloc[0] for _, c in panels),
      "The fitting RMSE keeps falling in every panel")
claim(free_curves["validation"].idxmin() < len(free_curves) // 2
      and compare(free_curves["validation"].iloc[-1], free_curves["validation"].min(), noise=CURVE_NOISE,
                  higher_is_better=False, kind="error").worse,
      "Without regularisation the validation and test RMSE stop improving after a few epochs and then climb")
claim(final_gap(keras_curves) < 0.5 * final_gap(free_curves),
      "With regularisation the gap between fitting and held-out error grows far more slowly")
claim(compare_models("Keras MF", "user + movie biases").better,
      "the held-out error settles below the dashed bias baseline")
claim(all(np.corrcoef(c["validation"], c["test"])[0, 1] > 0.9 for _, c in panels),
      "The validation and test curves move together")
claim(KERAS_MF["dim"] == NUMPY_MF["dim"] == 32, "with the k = 32 factors this lesson trains")

# %% [markdown]
# Regularisation and the embedding size $k$ trade off against each other: a larger $k$ gives
# the model more room to memorise, a larger $\lambda$ takes that room away. A small grid of
# short NumPy runs, scored on the validation set, shows the interplay.

# %%
grid_rows = []
for dim in (4, 16, 64):
    for reg in (0.0, 0.05, 0.15):
        settings = {**NUMPY_MF, "dim": dim, "reg": reg, "epochs": 10}
        _, curves = train_numpy_mf(
            fit, n_users, n_items, **settings, seed=SEED, watch={"validation": valid}
        )
        grid_rows.append({"k": dim, "lambda": reg, "validation RMSE": curves["validation"].iloc[-1]})
grid = pd.DataFrame(grid_rows).pivot(index="k", columns="lambda", values="validation RMSE")
grid.round(4)

# %% [markdown]
# Without regularisation ($\lambda = 0$) more factors mean more overfitting, so the error
# grows with $k$. With regularisation, a larger $k$ costs far less or nothing: the penalty
# keeps unneeded coordinates near zero. In practice you pick a generous $k$ and tune
# $\lambda$ on validation data, which is what the constants of this lesson came from.

# %% tags=["check"]
free = grid[0.0]
claim(free.is_monotonic_increasing, "Without regularisation the error grows with k")
claim(grid[0.15].loc[64] - grid[0.15].loc[4] < 0.5 * (free.loc[64] - free.loc[4]),
      "With regularisation, a larger k costs far less or nothing")

# %% [markdown]
# ## 10. Where the errors are: cold start
#
# How does each model do on test ratings of movies with many training ratings, few, or none
# at all?

# %%
movie_support = np.bincount(fit.items, minlength=n_items)[test.items]
labels = ["0 (unknown)", "1-5", "6-20", "over 20"]
buckets = pd.cut(movie_support, [-1, 0, 5, 20, np.inf], labels=labels)
per_model = {
    "biases only": predict(bias_model, test.users, test.items),
    "NumPy MF": predict(numpy_model, test.users, test.items),
    "Keras MF": keras_predict(keras_model, test),
}
cold = pd.DataFrame({"ratings in test": pd.Series(buckets).value_counts().sort_index()})
for name, predictions in per_model.items():
    cold[name] = [
        rmse(test.ratings[in_bucket], predictions[in_bucket]) if in_bucket.any() else np.nan
        for in_bucket in (np.asarray(buckets == label) for label in cold.index)
    ]
cold.index.name = "movie's training ratings"
cold.round(4)

# %% tags=["check"]
def bucket_comparison(label: str, name: str = "Keras MF"):
    """``name`` against the biases on the test ratings of one bucket, paired by rating."""
    inside = np.asarray(buckets == label)
    model_errors = (test.ratings[inside] - per_model[name][inside]) ** 2
    bias_errors = (test.ratings[inside] - per_model["biases only"][inside]) ** 2
    if inside.sum() < 2:
        return None
    return compare(model_errors.mean(), bias_errors.mean(), se=paired_standard_error(model_errors, bias_errors),
                   higher_is_better=False, kind="error")


often, rare = bucket_comparison("over 20"), bucket_comparison("1-5")
claim(often.better and (rare is None or not rare.better),
      "The gains of the factor models come from movies the model has seen often")
claim(rare is None or not rare.better,
      "with a handful of ratings the factor models do no better than the biases")

# %% [markdown]
# The gains of the factor models come from movies the model has seen often. A movie with a
# handful of ratings cannot pin down a $k$-dimensional vector, so there the factor models do
# no better than the biases, and can do worse. For a movie with no training ratings, the
# movie's row is the untouched unknown row, so every model predicts $\mu + b_u$ (each with
# its own estimate of the user's bias): factorisation has nothing to factorise. The same
# holds for a brand-new user. This **cold-start problem** is matrix factorisation's built-in
# limit. The usual remedies are content that exists before the first rating (genres, titles,
# descriptions), asking new users for a few ratings, and falling back to popularity.
# Lesson 02 builds the first remedy into the model: its towers compute embeddings from
# features, not only from ids.
#
# ## 11. Reading the embeddings: similar movies
#
# Nobody told the model what a genre is, yet movies that the same people rate alike end up
# with similar vectors $\mathbf q_i$. *Cosine similarity* compares directions and ignores
# lengths, $\cos(\mathbf a, \mathbf b) = \mathbf a^\top \mathbf b / (\lVert \mathbf a \rVert
# \lVert \mathbf b \rVert)$. We want "liked by the same people", which is the direction;
# a vector's length mixes in other things (how strongly the movie's ratings depart from what
# the biases predict, how much evidence there is), and a raw dot product would push the
# longest vectors to the top of every list.
#
# ### Exercise 1.6 · Most similar movies
#
# Implement `most_similar(item_factors, query, k)`: the `k` rows most similar to row `query`
# by cosine similarity, best first, without the query itself.

# %% tags=["exercise"] exercise="1.6"
def most_similar(
    item_factors: np.ndarray, query: int, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest rows to row ``query`` by cosine similarity.

    Args:
        item_factors: float array of shape (n, d), one vector per row.
        query: the row to compare against, in [0, n).
        k: how many neighbours to return.

    Returns:
        ``(rows, similarities)``: an int array of the ``min(k, n - 1)`` most similar rows
        other than ``query``, by cosine similarity descending (ties broken by lower row
        first), and a float array of their cosine similarities. A zero vector has similarity 0
        with everything.
    """
    # BEGIN SOLUTION
    norms = np.linalg.norm(item_factors, axis=1)
    unit = item_factors / np.where(norms > 0, norms, 1.0)[:, None]
    similarities = unit @ unit[query]
    similarities[query] = -np.inf
    rows = np.argsort(-similarities, kind="stable")[: min(k, len(item_factors) - 1)]
    return rows, similarities[rows]
    # END SOLUTION


# %% [markdown]
# Movies with a handful of ratings have vectors that are mostly initial noise shrunk by the
# regulariser, so we compare only movies with at least 20 training ratings. For the queries
# we use two well-known titles when the dataset has them; the synthetic dataset invents its
# own titles, so there we take the two most-rated movies.

# %%
MIN_SUPPORT = 20
item_support = np.bincount(fit.items, minlength=n_items)
candidates = np.flatnonzero(item_support >= MIN_SUPPORT)  # table rows worth comparing
row_to_movie = {row: movie for movie, row in item_vocab.items()}
movie_info = movies.set_index("movie_id")
item_vectors = keras_model.item_factors.get_weights()[0]


def well_known_queries(patterns: tuple[str, ...] = (r"^Toy Story \(1995\)", r"^Star Wars")):
    """Table rows of the most-rated movie matching each title pattern, else the most rated."""
    titles = pd.Series({r: movie_info.loc[row_to_movie[r], "movie_title"] for r in candidates})
    chosen = []
    for pattern in patterns:
        matches = titles[titles.str.contains(pattern, regex=True)]
        if len(matches):
            chosen.append(int(max(matches.index, key=lambda row: item_support[row])))
    for row in candidates[np.argsort(-item_support[candidates], kind="stable")]:
        if len(chosen) >= len(patterns):
            break
        if row not in chosen:
            chosen.append(int(row))
    return chosen[: len(patterns)]


def neighbours_table(query_row: int, k: int = 8) -> pd.DataFrame:
    """The ``k`` nearest candidate movies to ``query_row``, with titles and genres."""
    position = int(np.flatnonzero(candidates == query_row)[0])
    rows, similarities = most_similar(item_vectors[candidates], position, k)
    ids = [row_to_movie[candidates[r]] for r in rows]
    return pd.DataFrame(
        {
            "movie": [movie_info.loc[m, "movie_title"] for m in ids],
            "genres": [", ".join(movie_info.loc[m, "movie_genres"]) for m in ids],
            "cosine": np.round(similarities, 3),
        }
    )


queries = well_known_queries()
for query_row in queries:
    query_id = row_to_movie[query_row]
    print(f"\nMost similar to {movie_info.loc[query_id, 'movie_title']} "
          f"({', '.join(movie_info.loc[query_id, 'movie_genres'])}):")
    display(neighbours_table(query_row))

# %% tags=["check"]
from recsys_course.evaluation import standard_error


def shares_genre(row_a: int, row_b: int) -> bool:
    genres = (set(movie_info.loc[row_to_movie[row], "movie_genres"]) for row in (row_a, row_b))
    return bool(next(genres) & next(genres))


neighbour_shares, base_shares = [], []
for query_row in queries:
    position = int(np.flatnonzero(candidates == query_row)[0])
    rows, _ = most_similar(item_vectors[candidates], position, 8)
    neighbour_shares += [shares_genre(query_row, candidates[r]) for r in rows]
    base_shares.append(np.mean([shares_genre(query_row, c) for c in candidates if c != query_row]))
claim(compare(np.mean(neighbour_shares), np.mean(base_shares), se=standard_error(neighbour_shares)).better,
      "neighbours tend to share genres with the query")

# %% [markdown]
# Look at the genres of the neighbours: the model never saw them, yet neighbours tend to
# share genres with the query (more often than movies picked at random do), because the same
# people rated them alike.
# The match is imperfect and sometimes surprising: the vectors encode *who watches and likes
# what*, which is related to genre but not the same thing. These vectors are the bridge to
# the rest of the course: lesson 02 learns user and movie embeddings for retrieval, and
# lesson 07 searches them with an approximate nearest-neighbour index instead of the
# brute-force comparison of `most_similar`.
#
# ## 12. All models side by side

# %%
summary = pd.DataFrame(results).T
summary["vs biases"] = summary["test RMSE"] - summary.loc["user + movie biases", "test RMSE"]
summary.round(4)

# %% [markdown]
# How much do the factor models add to the biases? The answer depends on the data, so the
# sentence below is computed from this page's table rather than written by hand.

# %%
from recsys_course.claims import pick, say

best_name = min((name for name in results if "MF" in name), key=lambda name: results[name]["test RMSE"])
best_vs_biases = compare_models(best_name, "user + movie biases")
say(
    f"On this page's data, the best factor model ({best_name}) "
    + pick(best_vs_biases.better, "lowers the biases' test RMSE",
           pick(best_vs_biases.worse, "raises the biases' test RMSE", "leaves the biases' test RMSE about where it was"))
    + f", {rmse_change(best_name, 'user + movie biases')}: "
    + pick(best_vs_biases.distinct, "a difference beyond twice its standard error over the test ratings.",
           "a difference within twice its standard error over the test ratings, so the data cannot tell them apart.")
)

# %% [markdown]
# For scale on real ratings, gains of a few hundredths of a star are the typical size: with
# 5-fold cross-validation on MovieLens 100K, the Surprise library reports 0.944 for its bias
# baseline, 0.934 for its SVD (biased matrix factorisation with default settings) and 0.919
# for SVD++, which adds implicit feedback (Surprise README, benchmark table). The course
# benchmark, `course bench 01 --data PATH`, runs this lesson's models on any dataset and
# prints their test RMSE and wall times. Small gains add up: the Netflix Prize paid a
# million dollars for an RMSE 10 % below Netflix's own system, and the winners got there by
# blending many such improvements.
#
# Two easy improvements we left out to keep the lesson short: once the hyperparameters and
# the number of epochs are chosen, retrain on all the training ratings (fitting *and*
# validation) before the final test; and clip predictions to the rating scale.
#
# ## Summary
#
# - A recommender that predicts ratings fills in the empty cells of a sparse users × movies
#   matrix; empty means *unknown*, so losses and metrics use observed cells only.
# - **RMSE** punishes large errors more than **MAE**; report them on a held-out test set and
#   choose everything else on a validation set.
# - The **global mean** and **user and movie biases** are strong baselines; damping the
#   biases of rarely rated movies matters.
# - **Matrix factorisation** adds a dot product of learned user and movie vectors. It
#   generalises because a low-rank model must share a few taste dimensions across everyone.
# - The objective is squared error on known ratings plus **L2 regularisation**; **SGD**
#   minimises it one (mini-batch of) rating(s) at a time, **ALS** by alternating exact
#   ridge regressions and suits implicit feedback.
# - In **Keras**, the tables are `Embedding` layers, the penalty enters with `add_loss`, and
#   `fit` with early stopping on validation data does the rest.
# - Without regularisation the model **overfits** within a few epochs; the embedding size
#   and $\lambda$ trade off.
# - Item vectors give **similar movies** by cosine similarity; ids without training ratings
#   only get the all-zero unknown row, which is the **cold-start** limit lesson 02 starts to
#   lift.
#
# ## Further reading
#
# - Yehuda Koren, Robert Bell, Chris Volinsky. *Matrix Factorization Techniques for
#   Recommender Systems.* IEEE Computer 42(8), 2009. <https://doi.org/10.1109/MC.2009.263>
# - Simon Funk. *Netflix Update: Try This at Home.* Blog post, December 2006.
#   <https://sifter.org/~simon/journal/20061211.html>
# - Yehuda Koren. *Factor in the Neighbors: Scalable and Accurate Collaborative Filtering.*
#   ACM TKDD 4(1), 2010 (damped bias baselines). <https://doi.org/10.1145/1644873.1644874>
# - Yifan Hu, Yehuda Koren, Chris Volinsky. *Collaborative Filtering for Implicit Feedback
#   Datasets.* ICDM 2008 (ALS with confidence weights). <https://doi.org/10.1109/ICDM.2008.22>
# - Yunhong Zhou, Dennis Wilkinson, Robert Schreiber, Rong Pan. *Large-Scale Parallel
#   Collaborative Filtering for the Netflix Prize.* AAIM 2008 (ALS with weighted-λ
#   regularisation). <https://doi.org/10.1007/978-3-540-68880-8_32>
# - Ruslan Salakhutdinov, Andriy Mnih. *Probabilistic Matrix Factorization.* NeurIPS 2007
#   (L2 regularisation as a Gaussian prior).
# - Steffen Rendle, Walid Krichene, Li Zhang, John Anderson. *Neural Collaborative Filtering
#   vs. Matrix Factorization Revisited.* RecSys 2020 (a well-tuned dot product is hard to
#   beat). <https://doi.org/10.1145/3383313.3412488>
# - Surprise, a Python library for rating prediction, and its benchmark table:
#   <https://github.com/NicolasHug/Surprise>
#
# Next: lesson 02 turns these embeddings into a two-tower retrieval model with TensorFlow
# Recommenders, trained on implicit feedback and able to use features as well as ids.
