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
# # Lesson 02 · Two-tower retrieval with TensorFlow Recommenders
#
# **You will learn to**
#
# - explain why the first stage of a recommender must score a whole catalogue with one dot
#   product per item, and how a two-tower model makes that possible;
# - turn raw features into vectors with Keras preprocessing layers: `StringLookup` and
#   `Embedding` for ids, `Normalization` and `Discretization` for timestamps,
#   `TextVectorization` and pooling for titles;
# - build query and candidate towers and train them with TFRS's `Retrieval` task, and say
#   what its in-batch softmax does to popular movies and how to correct it;
# - read factorized top-K accuracy correctly, choose the number of epochs on a validation
#   split, and recognise overfitting in the curves;
# - count the negatives a batch really holds, and serve recommendations from a brute-force
#   index with the movies a user has already rated excluded;
# - measure recall@k with seen movies masked, over the full catalogue, and compare the towers
#   with strong simple baselines (item-kNN and EASE, which you implement) on a random and a
#   temporal split;
# - make the query a function of the user's history, so that a new rating changes the
#   recommendations without retraining, and train it with a full softmax over the catalogue.
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and in the site's lesson table, with the data it was measured on
# (ml-latest-small takes longest: its 9,742 movies make every evaluation six times larger).
#
# **How to work through it:** run the cells top to bottom (`# %%` cells run in VS Code,
# PyCharm and Spyder, or run `python lessons/02_retrieval.py`). The six exercises are
# functions whose body raises `NotImplementedError`; implement them, then check with
# `course check 2.1` (or `course check 02` for the whole lesson), and ask
# `course hint 2.1` when stuck.

# %% tags=["setup"]
# Importing recsys_course first sets TF_USE_LEGACY_KERAS=1: TensorFlow Recommenders needs
# Keras 2 (the tf-keras package), and the variable must be set before TensorFlow is imported.
import recsys_course
from recsys_course import claims, evaluation as ev, models
from recsys_course.models import features as mf

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

SEED = recsys_course.seed_everything(42)
EMBEDDING_DIM = 32  # the size of every query and candidate vector in this lesson
TOP_KS = (10, 50, 100)  # the K of the factorized top-K metrics we report

# %% [markdown]
# ## 1. Why retrieval must be cheap
#
# Lesson 00 introduced the funnel: retrieval narrows a catalogue of millions of items down
# to a few hundred candidates, and ranking orders those. Retrieval runs for every request,
# over *every* item, so its cost per item decides whether the system can exist at all.
#
# Suppose the score of user $u$ and item $i$ is a dot product of two $d$-dimensional
# vectors, $s(u, i) = \mathbf{q}_u \cdot \mathbf{c}_i$. If the item vectors do not depend
# on the user, they can all be computed ahead of time and stored as one matrix
# $C \in \mathbb{R}^{N \times d}$. Serving a request then costs one vector $\mathbf{q}_u$
# and one matrix-vector product $C\,\mathbf{q}_u$: $N \cdot d$ multiply-adds. With
# $N = 10^6$ items and $d = 32$ that is 32 million multiply-adds, a few milliseconds on one
# CPU core, and an approximate nearest-neighbour index (lesson 07) cuts it further.
# Compare a model that needs the user and the item *together* (a neural network over the
# concatenated features, as rankers use): it must run $N$ times per request.
#
# That is the whole idea of the **two-tower model**: one network (the *query tower*) turns
# what we know about the request into $\mathbf{q}$, another (the *candidate tower*) turns
# what we know about an item into $\mathbf{c}$, and the only place they meet is the dot
# product.
#
# ```mermaid
# flowchart LR
#     subgraph Q["Query tower (runs per request)"]
#         U["user id, time,<br/>age, occupation"] --> QE["preprocessing +<br/>embeddings"] --> QV["query vector q"]
#     end
#     subgraph C["Candidate tower (runs offline, once per movie)"]
#         M["movie id, title,<br/>genres"] --> CE["preprocessing +<br/>embeddings"] --> CV["candidate vector c"]
#     end
#     QV --> S(("q · c"))
#     CV --> S
#     S --> T["top-K movies"]
# ```
#
# ### The link with matrix factorisation
#
# Lesson 01 predicted a rating as (biases plus) a dot product of a user factor vector and a
# movie factor vector. That *is* a two-tower model whose towers are single embedding
# lookups: the only feature of a user is their id. Two things change in this lesson:
#
# 1. **The towers can read features.** A movie's title and genres, a user's age or the time
#    of the request feed the towers, so a movie nobody has rated yet still gets a
#    meaningful vector (the *cold-start* problem of lesson 01).
# 2. **The objective changes from "predict the stars" to "pick the movie".** Retrieval
#    treats every rating as implicit feedback, "this user chose to watch this movie", and
#    trains the model to score the chosen movie above the others. The star value is
#    ignored: a 2-star rating still tells us the user picked the movie (ranking, lesson 04,
#    uses the stars).

# %% [markdown]
# ## 2. The data, as retrieval sees it
#
# Every rating row is one positive (query, candidate) pair. We keep the split of the TFRS
# tutorials, 80 % of the rows at random for training and 20 % for test with seed 42, and
# hold out 10 % of the training rows as a **validation** split for every decision we make
# (how many epochs, which features). The test split is looked at only to report.

# %%
data = recsys_course.load_movielens()
print("Dataset:", data.summary())
print("Demographic columns:", "yes" if data.has_demographics else "no (the towers skip them)")
ratings, movies = data.ratings, data.movies
train, test = recsys_course.split_ratings(ratings, test_fraction=0.2, seed=SEED)
fit, validation = recsys_course.split_ratings(train, test_fraction=0.1, seed=SEED)
print(f"ratings: fit {len(fit):,}, validation {len(validation):,}, test {len(test):,}")
fit.head(3)

# %% [markdown]
# ## 3. Features into vectors: Keras preprocessing layers
#
# A neural network reads numbers, and our features are strings (ids, titles, occupations),
# lists (genres) and large integers (Unix timestamps). Keras *preprocessing layers* do the
# conversion inside the model, so the saved model accepts raw features at serving time and
# training and serving can never disagree about the encoding. Most of them learn a
# vocabulary or statistics from data first, with `adapt()` or a given vocabulary; after
# that they are fixed (not trained by gradient descent).
#
# ### 3.1 Ids: `StringLookup` then `Embedding`
#
# `StringLookup` maps each id in its vocabulary to an integer. With `mask_token=None` and
# the default single out-of-vocabulary (OOV) index, known ids get `1..n` and anything else
# gets `0`. `Embedding` then looks the integer up in a trainable table of shape
# `(n + 1, dimension)`: row 0 is one shared vector for every unknown id.

# %%
user_ids = sorted(fit["user_id"].unique())
lookup = tf.keras.layers.StringLookup(vocabulary=user_ids, mask_token=None)
some_users = fit["user_id"].head(3).tolist() + ["a user born yesterday"]
print("vocabulary size (with the OOV index):", lookup.vocabulary_size())
print("ids:    ", some_users)
print("indices:", lookup(tf.constant(some_users)).numpy())

# %% [markdown]
# ### Exercise 2.1 · An id tower
#
# Implement `build_id_tower(vocabulary, embedding_dim)`: a `tf.keras.Sequential` of a
# `StringLookup` over the vocabulary and an `Embedding` with one row per vocabulary entry
# **plus one** for unknown ids. It is the whole query and candidate tower of the classic
# model, and a part of the richer towers below.

# %% tags=["exercise"] exercise="2.1"
def build_id_tower(vocabulary: list[str], embedding_dim: int) -> tf.keras.Model:
    """Map string ids to learned vectors.

    Args:
        vocabulary: the known ids, each once (e.g. every user id of the training data).
        embedding_dim: length of each vector.

    Returns:
        A ``tf.keras.Sequential`` taking a ``tf.string`` tensor of shape ``[batch]`` and
        returning ``float32 [batch, embedding_dim]``. Each known id has its own row; every
        id outside ``vocabulary`` maps to one shared out-of-vocabulary row. The embedding
        table holds exactly ``(len(vocabulary) + 1) * embedding_dim`` weights.
    """
    # BEGIN SOLUTION
    return tf.keras.Sequential(
        [
            tf.keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=None),
            tf.keras.layers.Embedding(len(vocabulary) + 1, embedding_dim),
        ]
    )
    # END SOLUTION


# %%
user_tower = build_id_tower(user_ids, EMBEDDING_DIM)
print("vectors:", user_tower(tf.constant(some_users)).shape)
print("trainable weights:", user_tower.count_params(), "=", len(user_ids) + 1, "x", EMBEDDING_DIM)

# %% [markdown]
# ### 3.2 Timestamps: `Normalization` and `Discretization`
#
# A Unix timestamp such as 880,000,000 is a terrible raw input: its scale would swamp every
# other feature. Two standard fixes, which the query tower below uses together:
#
# - `Normalization` learns the mean and variance with `adapt()` and outputs
#   $(x - \mu)/\sigma$: one number that says "early" or "late" and lets the model learn
#   smooth trends.
# - `Discretization` cuts the time line into buckets and outputs the bucket index, which
#   an `Embedding` turns into a vector: each period gets its own learned vector, so the
#   model can learn effects that are not linear in time (a season, a burst of popularity).
#   We give it explicit boundaries at quantiles of the training timestamps, so every bucket
#   holds about the same number of ratings.
#
# !!! note "Why not `Discretization(num_bins=20).adapt(...)`?"
#     `adapt()` estimates the quantiles approximately (tolerance `epsilon=0.01`), and the
#     estimate can be poor: on ml-latest-small (rows sorted by user) we measured it putting
#     49 % of the training ratings into one of 20 buckets, and with `num_bins=1000` it
#     used only 92 distinct buckets. `np.quantile` on the training timestamps is exact;
#     `mf.quantile_boundaries` wraps it.

# %%
fit_times = fit["timestamp"].to_numpy(dtype="float64")
time_normalization = tf.keras.layers.Normalization(axis=None)
time_normalization.adapt(fit_times)
time_buckets = tf.keras.layers.Discretization(bin_boundaries=mf.quantile_boundaries(fit_times, 20))
shown = fit.head(4)
shown_times = shown["timestamp"].to_numpy(dtype="float64")
pd.DataFrame(
    {
        "timestamp": shown["timestamp"],
        "date": pd.to_datetime(shown["timestamp"], unit="s").dt.strftime("%Y-%m-%d %H:%M"),
        "normalized": time_normalization(shown_times).numpy().round(3),
        "bucket of 20": time_buckets(shown_times).numpy(),
    }
)

# %% [markdown]
# !!! warning "How fine should time buckets be? Ask what the split leaks"
#     With a random split, a test rating is usually surrounded in time by training ratings
#     of the *same user in the same sitting*: MovieLens users often rate dozens of movies
#     in one session. Make the buckets fine enough and a bucket is, in effect, a session
#     id: the model learns "what was rated in this session" and recalls the test ratings
#     of that session from their training neighbours. The metric climbs, but a live system
#     only ever queries with "now", a bucket it has never trained on. The table below
#     counts how many distinct users share a bucket and how often a test rating falls in a
#     bucket that its own user dominates.

# %%
def bucket_sharing(train_frame: pd.DataFrame, test_frame: pd.DataFrame, n_buckets: int) -> dict:
    """Users per quantile time bucket, and the share of test rows whose bucket's training
    rows come mostly from the same user."""
    cuts = mf.quantile_boundaries(train_frame["timestamp"].to_numpy(), n_buckets)
    train_bucket = np.searchsorted(cuts, train_frame["timestamp"], side="right")
    test_bucket = np.searchsorted(cuts, test_frame["timestamp"], side="right")
    by_bucket = train_frame.assign(bucket=train_bucket).groupby("bucket")["user_id"]
    top_user = by_bucket.agg(lambda users: users.value_counts().index[0])
    same = test_frame["user_id"].to_numpy() == top_user.reindex(test_bucket).to_numpy()
    return {"buckets": n_buckets, "users per bucket": round(by_bucket.nunique().mean(), 1),
            "test rows in their own user's bucket": f"{same.mean():.0%}"}


sharing = pd.DataFrame([bucket_sharing(fit, test, n) for n in (20, 100, 1000)])
sharing

# %%
own_share = float(sharing.iloc[-1]["test rows in their own user's bucket"].rstrip("%")) / 100
claims.say(
    f"On this page's data, 1,000 buckets put {own_share:.0%} of the test ratings in a bucket "
    "that their own user dominates: "
    + claims.pick(own_share >= 0.3, "a large leak.", "a small leak, but do not count on that.")
    + " For comparison, on ml-latest-small (users who rate dozens of movies in one sitting) "
    "it is 72 %."
)

# %% [markdown]
# What does a model make of the leak? The lesson's benchmark (`course bench 02`) measured it
# on ml-latest-small: with 1,000 buckets instead of 20, factorized top-100 accuracy on test
# rose from 0.217 to 0.257, while recall@10 for users queried at the time of their latest
# training rating, as a live system would, *fell* from 0.121 to 0.114. We use **20
# buckets**, coarse enough to describe *periods* rather than sessions.
#
# ### 3.3 Titles: `TextVectorization`, `Embedding`, pooling
#
# A title is a sequence of words. `TextVectorization` lower-cases it, strips punctuation,
# splits on whitespace and maps each word to an integer (0 is reserved for padding, 1 for
# unknown words); a batch of titles becomes a matrix padded with zeros to its longest
# title. An `Embedding` gives each word a vector, and pooling averages the vectors into one
# per title. Two titles that share words ("Star Wars", "Star Trek") then start close.

# %%
titles = movies["movie_title"].to_numpy(dtype=object)
vectorizer = tf.keras.layers.TextVectorization(max_tokens=10_000)
vectorizer.adapt(titles)
print("title vocabulary:", vectorizer.vocabulary_size(), "entries; the first ones:",
      [str(word) for word in vectorizer.get_vocabulary()[:8]])
for title, tokens in zip(titles[:3], vectorizer(titles[:3]).numpy()):
    print(f"{title!r:45} -> {tokens}")

# %% [markdown]
# Look at the zeros at the end of the shorter titles: padding. If the pooling averaged
# them in, a title's vector would depend on how long the *other* titles in its batch are.
# `Embedding(..., mask_zero=True)` marks index 0 as padding, and `GlobalAveragePooling1D`
# then averages over the real words only.
#
# ### Exercise 2.2 · A title tower
#
# Implement `build_title_tower(titles, embedding_dim, max_tokens)`: a `TextVectorization`
# adapted on the given titles, an `Embedding` with `mask_zero=True` sized to the
# vectorizer's vocabulary, and a `GlobalAveragePooling1D`.

# %% tags=["exercise"] exercise="2.2"
def build_title_tower(
    titles: np.ndarray, embedding_dim: int, max_tokens: int = 10_000
) -> tf.keras.Model:
    """Turn titles into the mean of their word vectors.

    Args:
        titles: the titles to learn the vocabulary from, a 1-D array of strings.
        embedding_dim: length of each word vector and of the output.
        max_tokens: the largest vocabulary (padding and unknown-word tokens included).

    Returns:
        A ``tf.keras.Sequential`` taking a ``tf.string`` tensor ``[batch]`` of titles and
        returning ``float32 [batch, embedding_dim]``: the average of the vectors of the
        title's words (as standardised by ``TextVectorization``'s defaults: lower case, no
        punctuation). Padding never enters the average, so a title's vector does not depend
        on the other titles in the batch; words not in the vocabulary share one vector.
    """
    # BEGIN SOLUTION
    vectorizer = tf.keras.layers.TextVectorization(max_tokens=max_tokens)
    vectorizer.adapt(np.asarray(titles, dtype=object))
    return tf.keras.Sequential(
        [
            vectorizer,
            tf.keras.layers.Embedding(vectorizer.vocabulary_size(), embedding_dim, mask_zero=True),
            tf.keras.layers.GlobalAveragePooling1D(),
        ]
    )
    # END SOLUTION


# %%
title_tower = build_title_tower(titles, EMBEDDING_DIM)
print("title vectors:", title_tower(tf.constant(titles[:3])).shape)

# %% [markdown]
# ### 3.4 Genres: a multi-hot vector and a `Dense` layer
#
# A movie has one to several genres. We store them as a fixed-width row padded with empty
# strings; `StringLookup(output_mode="multi_hot", mask_token="")` turns the row into a
# 0/1 vector with one slot per genre plus one for unknown genres (the padding token gets no
# slot: `get_vocabulary()` names the columns). A `Dense` layer without bias then *sums* one
# learned vector per genre present: an embedding bag.

# %%
genre_width = mf.genre_width(movies)
genre_names = sorted({g for genres in movies["movie_genres"] for g in genres})
genre_rows = mf.pad_genres(movies["movie_genres"].head(3), genre_width)
multi_hot = tf.keras.layers.StringLookup(
    vocabulary=genre_names, mask_token="", output_mode="multi_hot"
)
# multi_hot gives the mask token "" no column: column j is get_vocabulary()[j]
columns = multi_hot.get_vocabulary()
print(f"{len(columns)} columns:", [str(c) for c in columns[:5]], "...")
for genres, row in zip(genre_rows, multi_hot(genre_rows).numpy()):
    print([g for g in genres if g], "->", row.astype(int))

# %% [markdown]
# ### 3.5 Who is asking: demographics
#
# MovieLens 100K (and the synthetic data) describe each user by age, gender, occupation and
# zip code; `ml-latest-small` does not, and the towers then simply skip these features.
# Occupation is a string like any id (`StringLookup` + `Embedding`); age goes through
# `Normalization`; gender is already a 0/1 number.
#
# ## 4. The towers
#
# The course package `recsys_course.models` holds the two tower classes that assemble these
# pieces (read them in `src/recsys_course/models/towers.py`). Each tower reads the features
# it needs from a dictionary of tensors (the same dictionary feeds both), concatenates the
# vectors and projects them to `EMBEDDING_DIM` numbers with a `Dense` layer. With every side
# feature switched off, a tower is just its id tower, which gives us the classic model of the
# TFRS tutorials for free. The cell below builds them from *your* id and title towers
# (exercises 2.1 and 2.2); it defines functions only (it is part of what grading loads).

# %% tags=["setup"]
def QueryTower(users: list[str], embedding_dim: int, **side_features) -> models.QueryTower:
    """The package's ``QueryTower`` (user id; optional ``timestamps``, ``time_buckets``,
    ``occupations``, ``ages``) with its id towers built by ``build_id_tower``."""
    return models.QueryTower(users, embedding_dim, id_tower_builder=build_id_tower, **side_features)


def CandidateTower(movie_ids: list[str], embedding_dim: int, **side_features) -> models.CandidateTower:
    """The package's ``CandidateTower`` (movie id; optional ``titles``, ``genres``) with
    ``build_id_tower`` and ``build_title_tower`` inside."""
    return models.CandidateTower(movie_ids, embedding_dim, id_tower_builder=build_id_tower,
                                 title_tower_builder=build_title_tower, **side_features)


# %% [markdown]
# ## 5. Training signal: in-batch softmax
#
# We want $\mathbf{q}_u \cdot \mathbf{c}_i$ to be high for the movie $i$ the user picked and
# low for the others. The exact objective is a softmax over the whole catalogue:
#
# $$p(i \mid u) = \frac{\exp(\mathbf{q}_u \cdot \mathbf{c}_i)}
# {\sum_{j=1}^{N} \exp(\mathbf{q}_u \cdot \mathbf{c}_j)},
# \qquad \text{loss} = -\log p(i \mid u).$$
#
# The denominator needs every candidate vector for every training pair, too expensive for a
# large catalogue. TFRS's `tfrs.tasks.Retrieval` uses the standard shortcut: take a batch of
# $B$ pairs $(u_b, i_b)$, compute the $B \times B$ score matrix $S = Q\,C^\top$, and apply the
# softmax to each *row* with the diagonal as the label. The other movies of the batch act
# as the negatives of each query: **in-batch negatives**, free because their vectors are
# already computed. The task sums the $B$ cross-entropies.
#
# ### What in-batch negatives do to popular movies
#
# The negatives are not drawn uniformly: a movie appears in a batch as often as it is
# rated, so a popular movie is a negative far more often than a rare one. The model learns
# to push popular movies down: with sampled negatives drawn with probability $q_j$, the
# learned score tends towards $\log p(j \mid u) - \log q_j$ (plus a per-query constant), a
# measure of how much *more* the user likes $j$ than an average user would. That is a fine
# notion of "interesting", but retrieval is judged on whether the movie the user actually
# rated is in the top K, and a large share of ratings go to popular movies.
#
# The classic remedy comes from sampled softmax (Bengio and Senécal, 2008) and was adapted
# to in-batch negatives by Yi et al. (2019): subtract $\log q_j$ from each logit during
# training, $s_{bj} \leftarrow s_{bj} - \log q_j$, so that the dot product itself learns
# $\log p(j \mid u)$. TFRS does it when `Retrieval` receives
# `candidate_sampling_probability`; we estimate $q_j$ as movie $j$'s share of the training
# rows (`mf.candidate_probability`). At serving time the plain dot product is used.
#
# ### How retrieval is measured: factorized top-K categorical accuracy
#
# `tfrs.metrics.FactorizedTopK` takes each test pair (user $u$, movie $i$), scores **every**
# movie of the catalogue against $\mathbf{q}_u$, and counts a hit when $i$ is among the $K$
# best. The reported number is the share of test *pairs* that are hits. Keep in mind what
# it does not do:
#
# - it does **not** remove the movies the user already rated in training: they compete for
#   the $K$ slots although nobody would recommend them again (section 10 measures the
#   difference);
# - it averages over ratings, not users, so heavy raters weigh more;
# - it depends on the catalogue size: top-100 of 900 movies is much easier than top-100 of
#   9,742.
#
# ### Exercise 2.3 · The retrieval model's `compute_loss`
#
# A `tfrs.Model` only needs `compute_loss(features, training)`; TFRS supplies `fit` and
# `evaluate` around it. Implement it for the class below: run both towers on the same
# feature dictionary, and hand the two batches of vectors to the task. When the model was
# built with `popularity_correction=True`, pass the batch's `candidate_probability`
# feature as the task's `candidate_sampling_probability`. Skip the (expensive) top-K
# metrics while training: `compute_metrics=not training`.

# %% tags=["exercise"] exercise="2.3"
class RetrievalModel(tfrs.Model):
    """A two-tower retrieval model: ``score = query_model(f) . candidate_model(f)``.

    ``query_model`` and ``candidate_model`` map the same feature dictionary to
    ``float32 [batch, dim]``; ``task`` is a ``tfrs.tasks.Retrieval``.
    """

    def __init__(self, query_model: tf.keras.Model, candidate_model: tf.keras.Model,
                 task: tfrs.tasks.Retrieval, popularity_correction: bool = False):
        super().__init__()
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.task = task
        self.popularity_correction = popularity_correction

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        """The in-batch softmax loss of one batch.

        Args:
            features: a batch of feature tensors; row ``b`` is one (query, candidate)
                pair. With ``popularity_correction`` it must hold ``candidate_probability``
                (``float32 [batch]``): each row's candidate's share of the training pairs.
            training: True inside ``fit``; top-K metrics are only computed when False.

        Returns:
            The scalar loss the task returns for the queries ``query_model(features)`` and
            candidates ``candidate_model(features)``: the sum over rows of the softmax
            cross-entropy of each row of the score matrix, the logits reduced by
            ``log(candidate_probability)`` of their column when ``popularity_correction``.
        """
        # BEGIN SOLUTION
        queries = self.query_model(features)
        candidates = self.candidate_model(features)
        probability = features[mf.PROBABILITY] if self.popularity_correction else None
        return self.task(
            queries,
            candidates,
            candidate_sampling_probability=probability,
            compute_metrics=not training,
        )
        # END SOLUTION


# %% [markdown]
# ## 6. The classic model, and overfitting
#
# First the baseline of the TFRS basic retrieval tutorial: id-only towers of 32 numbers,
# Adagrad with learning rate 0.1, batches of 8,192 pairs, no popularity correction, and the
# factorized metric over the whole catalogue. (The tutorial trains on all 80 % for exactly
# 3 epochs; here the model trains on the fit split so that validation can pick the epoch.
# The benchmark runs the exact tutorial setting too.) The candidates for the metric are a
# `tf.data.Dataset` of movie features mapped through the candidate tower, so the metric
# always uses the current weights.
#
# `models.train_with_curves` trains one epoch at a time and after each epoch measures, on a
# sample of the training pairs, on the validation split and on the test split, the loss
# per pair and the factorized top-K accuracy. It keeps the weights of the epoch with the
# best validation top-100. (We plot the test curve only to *see* overfitting; decisions are
# made on validation.)

# %%
movie_ids = movies["movie_id"].astype(str).tolist()
has_demographics = data.has_demographics
popularity = mf.candidate_probability(fit)


def features_of(frame: pd.DataFrame) -> dict:
    """Feature dictionary of a rating frame, with each row's candidate probability."""
    return mf.rating_features(
        frame, genre_width, demographics=has_demographics, probability=popularity
    )


fit_features = features_of(fit)
train_sample = mf.take(fit_features, np.random.default_rng(SEED).permutation(len(fit))[:3000])
splits = {"train": train_sample, "validation": features_of(validation), "test": features_of(test)}
candidate_features = tf.data.Dataset.from_tensor_slices(mf.movie_features(movies, genre_width))


def make_model(
    query_model, candidate_model, *, correction: bool, learning_rate: float
) -> RetrievalModel:
    """A compiled RetrievalModel whose metric ranks the test movie among all movies."""
    all_candidates = candidate_features.batch(4096).map(candidate_model)
    metric = tfrs.metrics.FactorizedTopK(candidates=all_candidates, ks=TOP_KS)
    task = tfrs.tasks.Retrieval(metrics=metric)
    model = RetrievalModel(query_model, candidate_model, task, correction)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
    return model


started = time.perf_counter()
classic = make_model(
    QueryTower(user_ids, EMBEDDING_DIM), CandidateTower(movie_ids, EMBEDDING_DIM),
    correction=False, learning_rate=0.1,
)
classic_run = models.train_with_curves(
    classic, mf.to_dataset(fit_features, 8192, shuffle_seed=SEED), splits, epochs=6, ks=TOP_KS
)
print(f"trained {classic_run.curves['epoch'].max()} epochs, {time.perf_counter() - started:.0f} s")
classic_run.curves.pivot(index="epoch", columns="split", values="top_100").round(3)

# %%
def plot_curves(run: models.TrainingRun, title: str) -> None:
    """Loss per pair and top-100 accuracy per epoch on every split; the selected epoch dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    colors = {"train": "#3f51b5", "validation": "#ff9800", "test": "#009688"}
    for split, rows in run.curves.groupby("split", sort=False):
        style = dict(marker="o", color=colors.get(split), label=split)
        axes[0].plot(rows["epoch"], rows["loss"], **style)
        axes[1].plot(rows["epoch"], rows["top_100"], **style)
    for ax, label in zip(axes, ["loss per pair (batches of 1,024)", "factorized top-100 accuracy"]):
        ax.axvline(run.best_epoch, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


plot_curves(classic_run, "Classic id-only model (TFRS tutorial recipe)")

# %% [markdown]
# Read the two panels together: the training curves say how well the model fits the pairs
# it learns from, the validation and test curves how well that carries over to pairs it
# has never seen. What this run shows:

# %%
def describe_curves(run: models.TrainingRun) -> str:
    """Sentences describing the top-100 curves of ``run``, generated from its numbers."""
    by_split = {split: rows.set_index("epoch")["top_100"] for split, rows in run.curves.groupby("split")}
    train_curve, val = by_split["train"], by_split["validation"]
    last, peak = int(val.index.max()), int(val.idxmax())
    text = claims.pick(
        train_curve.is_monotonic_increasing,
        f"On the training pairs top-100 rises at every epoch ({train_curve.iloc[0]:.3f} to "
        f"{train_curve.iloc[-1]:.3f}). ",
        f"On the training pairs top-100 goes from {train_curve.iloc[0]:.3f} to {train_curve.iloc[-1]:.3f}. ",
    )
    if peak == last:
        text += (f"On validation it is still rising at the last epoch ({val.iloc[-1]:.3f}): "
                 "this run stopped before the model overfitted.")
    elif peak == 1:
        text += (f"On validation it is best after the very first epoch ({val.loc[1]:.3f}) and falls "
                 f"to {val.iloc[-1]:.3f} by epoch {last}: overfitting starts at once.")
    else:
        text += (f"On validation it rises until epoch {peak} ({val.loc[peak]:.3f}) and then falls "
                 f"to {val.iloc[-1]:.3f} by epoch {last}.")
    if "test" in by_split:
        test_peak = int(by_split["test"].idxmax())
        text += claims.pick(
            test_peak == peak,
            f" The test curve peaks at the same epoch ({peak}), which is what a validation split is for.",
            f" The test curve peaks at epoch {test_peak}, the validation curve at {peak}: "
            "validation is an estimate, not an oracle, and we still never choose on test.",
        )
    return text


claims.say(describe_curves(classic_run))

# %% [markdown]
# When the validation curve turns while the training curve keeps improving, the model is
# **overfitting**: each user and each movie has its own free vector, a few dozen training
# pairs per user are easy to memorise, and nothing but the number of updates holds the
# vectors back. In retrieval it can come within a few epochs.
#
# Three consequences for practice:
#
# - **The number of epochs is a hyperparameter** like any other. The TFRS tutorial trains
#   for 3; the right number depends on the data, the batch size and the learning rate.
# - **Choose it on validation, never on test.** Picking the epoch from the test curve would
#   make the test number an optimistic, selected score. `train_with_curves` keeps the
#   weights of the best *validation* epoch (the dashed line), and stops after a few epochs
#   without improvement (`patience`).
# - **The remedies are the usual ones:** fewer epochs (early stopping), a smaller learning
#   rate, L2 regularisation of the embeddings, or features that generalise better than ids.

# %%
tutorial_epoch = min(3, int(classic_run.curves["epoch"].max()))
print(
    f"test top-100 after {tutorial_epoch} epochs (the tutorial's recipe): "
    f"{classic_run.at('test', tutorial_epoch)['top_100']:.3f}; "
    f"at the epoch chosen on validation ({classic_run.best_epoch}): "
    f"{classic_run.at('test')['top_100']:.3f}"
)

# %% [markdown]
# ## 7. A better model: popularity correction and side features
#
# We change two things, one at a time so that we can tell which one helps:
#
# 1. **popularity correction** (the $\log q$ of section 5), with the id-only towers;
# 2. **side features** on top: time and (when the data has them) demographics in the query
#    tower, title words and genres in the candidate tower.
#
# Both use smaller batches (1,024 pairs: more updates per epoch) and a learning rate of
# 0.05, and both stop on validation.
#
# ### How many negatives does a query really get?
#
# A batch of 1,024 pairs has 1,024 candidate columns, but not 1,024 *different* movies:
# popular movies are rated by many users, so they turn up several times in one batch. Each
# query then has fewer distinct negatives than 1,023, and worse, when its own movie appears
# again in another row, the softmax treats that copy as a *negative* of its own positive
# (an **accidental hit**). Count it on the batches we train on:

# %%
def batch_duplicates(features: dict, batch_size: int, seed: int) -> pd.DataFrame:
    """Per training batch (shuffled as in training, full batches only): how many distinct
    movies it holds, how often its most repeated movie appears, and the share of rows whose
    movie appears in another row of the same batch (an accidental hit for that query)."""
    rows = []
    movie_batches = mf.to_dataset({"movie_id": features["movie_id"]}, batch_size,
                                  shuffle_seed=seed, drop_remainder=True)
    for batch in movie_batches:
        _, counts = np.unique(batch["movie_id"].numpy(), return_counts=True)
        rows.append({"distinct movies": len(counts), "most repeated movie": int(counts.max()),
                     "rows with an accidental hit": counts[counts > 1].sum() / batch_size})
    return pd.DataFrame(rows)


duplicates = batch_duplicates(fit_features, 1024, SEED)
duplicates.describe().loc[["mean", "min", "max"]].round(3)

# %%
distinct = duplicates["distinct movies"].mean()
claims.say(
    f"A batch of 1,024 pairs holds on average {distinct:,.0f} distinct movies, so a query meets "
    f"at most about {distinct - 1:,.0f} distinct negatives, not 1,023; in "
    f"{duplicates['rows with an accidental hit'].mean():.0%} of the rows the query's own movie "
    "sits in another row too and is pushed down as a negative. TFRS can drop those logits "
    "(`Retrieval(remove_accidental_hits=True)`, given the candidate ids); section 12 measures "
    "whether it helps."
)

# %%
def train_improved(query_model, candidate_model) -> tuple[RetrievalModel, models.TrainingRun]:
    """Train with popularity correction, batches of 1,024 and early stopping on validation."""
    model = make_model(query_model, candidate_model, correction=True, learning_rate=0.05)
    run = models.train_with_curves(
        model, mf.to_dataset(fit_features, 1024, shuffle_seed=SEED), splits,
        epochs=10, ks=TOP_KS, patience=2,
    )
    return model, run


started = time.perf_counter()
recsys_course.seed_everything(SEED)  # section 12 retrains variants of this model from the same start
corrected, corrected_run = train_improved(
    QueryTower(user_ids, EMBEDDING_DIM), CandidateTower(movie_ids, EMBEDDING_DIM)
)
print(f"id-only + correction: best epoch {corrected_run.best_epoch}, "
      f"{time.perf_counter() - started:.0f} s")

started = time.perf_counter()
side_query = QueryTower(
    user_ids, EMBEDDING_DIM, timestamps=fit_times, time_buckets=20,
    occupations=sorted(fit["user_occupation_text"].unique()) if has_demographics else None,
    ages=fit["raw_user_age"].to_numpy() if has_demographics else None,
)
side_candidate = CandidateTower(movie_ids, EMBEDDING_DIM, titles=titles, genres=genre_names)
improved, improved_run = train_improved(side_query, side_candidate)
print(f"side features + correction: best epoch {improved_run.best_epoch}, "
      f"{time.perf_counter() - started:.0f} s")
plot_curves(improved_run, "Side features + popularity correction")

# %% [markdown]
# How does each model compare with the simplest possible retriever, the same top-K list of
# the most-rated movies for everybody? On the factorized metric that baseline is easy to
# compute: a test pair is a hit when its movie is among the K most-rated training movies.

# %%
def popularity_top_k(fit_frame: pd.DataFrame, test_frame: pd.DataFrame, k: int) -> float:
    """Factorized top-K accuracy of recommending the K most-rated movies to everybody: the
    share of test pairs whose movie is in that list (``ev.pair_recall_at_k``)."""
    fit_counts = ev.interaction_matrix(fit_frame, sorted(fit_frame["user_id"].unique()), movie_ids).sum(axis=0)
    test_users = sorted(test_frame["user_id"].unique())
    ranked = ev.top_k(np.tile(fit_counts, (len(test_users), 1)), k)
    return ev.pair_recall_at_k(ranked, ev.interaction_matrix(test_frame, test_users, movie_ids), k)


def test_row(name: str, run: models.TrainingRun, epoch: int | None = None) -> dict:
    """One comparison row: the test metrics of ``run`` at ``epoch`` (default: the chosen one)."""
    row = run.at("test", epoch)
    scores = {f"top_{k}": row[f"top_{k}"] for k in TOP_KS}
    return {"model": name, "epochs": int(row["epoch"]), **scores}


comparison = pd.DataFrame(
    [
        {"model": "most popular (same list for all)", "epochs": 0,
         **{f"top_{k}": popularity_top_k(fit, test, k) for k in TOP_KS}},
        test_row(f"classic id-only, {tutorial_epoch} epochs (tutorial recipe)",
                 classic_run, tutorial_epoch),
        test_row("classic id-only, epochs chosen on validation", classic_run),
        test_row("id-only + popularity correction", corrected_run),
        test_row("side features + popularity correction", improved_run),
    ]
)
comparison.round(3)

# %% [markdown]
# What to look for in this table (the numbers are from the dataset printed at the top;
# the lesson's benchmark, `course bench 02`, runs the same comparison on MovieLens). A
# classic model *can* lose to the popularity list: its in-batch softmax learns to push
# popular movies down, while the metric rewards finding the movies people actually rate,
# many of them popular. The popularity correction removes that push. On this run:

# %%
top_100 = comparison.set_index("model")["top_100"]
popular_100, classic_100, corrected_100, side_100 = top_100.iloc[[0, 2, 3, 4]]
claims.say(
    "- The classic model (epochs on validation) "
    + claims.pick(classic_100 < popular_100, "**loses to the popularity list**", "beats the popularity list")
    + f" on top-100 ({classic_100:.3f} against {popular_100:.3f}).\n"
    + f"- The popularity correction moves it from {classic_100:.3f} to {corrected_100:.3f}"
    + claims.pick(corrected_100 - classic_100 > abs(side_100 - corrected_100),
                  ", the largest single change in the table, for three lines of code.\n", ".\n")
    + "- Side features "
    + claims.pick(side_100 > corrected_100, f"add on top ({side_100:.3f})", f"do not add on top here ({side_100:.3f})")
    + "; where they should matter most is movies with few ratings (next section)."
)

# %% [markdown]
# ## 8. Side features and cold start
#
# An id embedding is only as good as the number of ratings that trained it; a movie
# nobody rated in training has only the shared OOV vector. Titles and genres are known for
# every movie on day one. To see whether the side features help where ids know little, we
# take the test pairs whose movie had at most 5 ratings in training and ask a question
# that does not depend on a top-K cut-off: **what share of the movies does the model
# score above the true movie?** (0 % means ranked first, 50 % is a coin toss.) We ask it
# twice: against the whole catalogue, and against the other rare movies only, which
# separates "knows the movie is rare" from "knows which rare movie this user picks".

# %%
def catalogue_vectors(model: RetrievalModel) -> np.ndarray:
    """``float32 [n_movies, dim]``: the candidate vector of every movie, in ``movie_ids`` order."""
    batches = candidate_features.batch(1024)
    return np.concatenate([model.candidate_model(batch).numpy() for batch in batches])


def share_ranked_above(model: RetrievalModel, features: dict, among: np.ndarray) -> np.ndarray:
    """For each pair of ``features``: the share of the movies selected by the boolean mask
    ``among`` (over ``movie_ids``) that the model scores strictly above the pair's movie."""
    queries = model.query_model(features).numpy()  # [pairs, dim]
    scores = queries @ catalogue_vectors(model)[among].T  # [pairs, movies in among]
    true_score = np.sum(queries * model.candidate_model(features).numpy(), axis=1, keepdims=True)
    return (scores > true_score).mean(axis=1)


catalogue_counts = pd.Series(movie_ids).map(fit["movie_id"].value_counts()).fillna(0).to_numpy()
rare_movie = catalogue_counts <= 5
rare_pair = test["movie_id"].map(fit["movie_id"].value_counts()).fillna(0).to_numpy() <= 5
rare_features = mf.take(splits["test"], rare_pair)
everything = np.ones(len(movie_ids), dtype=bool)
print(f"{rare_movie.sum():,} of {len(movie_ids):,} movies have at most 5 training ratings; "
      f"they appear in {rare_pair.sum():,} test pairs ({rare_pair.mean():.1%})")
cold_models = {
    "classic id-only": classic,
    "id-only + correction": corrected,
    "side features + correction": improved,
}
cold_rows = [
    {"model": name,
     "vs all movies": np.median(share_ranked_above(model, rare_features, everything)),
     "vs rare movies only": np.median(share_ranked_above(model, rare_features, rare_movie))}
    for name, model in cold_models.items()
]
print("median share of movies ranked above the true (rare) movie, lower is better:")
pd.DataFrame(cold_rows).round(3)

# %% [markdown]
# Read the two columns separately.
#
# - **Against the whole catalogue**, the popularity correction pulls rare movies down: it
#   restores the prior that a rarely rated movie is rarely the answer, which the classic
#   model never learned. Whether the corrected models rank a rare test movie above or below
#   the classic model depends on how strong that prior is in the data.
# - **Against the other rare movies**, the prior is the same for all candidates and only
#   knowledge of the movie itself helps. Ids with at most five ratings have hardly been
#   trained (an unrated movie has only the shared OOV vector), so the id-only models know
#   little about them; the title words and genres are what let the side-feature model
#   find the rare movie this user picked. That is the cold-start value of content
#   features. On ml-latest-small, where 73 % of the movies have at most five training
#   ratings, we measured a median of 10 % of the rare movies ranked above the true one
#   with side features, against 22 % for id-only + correction.

# %% [markdown]
# ## 9. Serving: a brute-force index
#
# At serving time we do not want `model.evaluate`, we want "the top 10 movies for this
# user now". `tfrs.layers.factorized_top_k.BruteForce` stores every candidate vector with
# its id and, given query features, runs the query tower, multiplies by the stored matrix
# and returns the K best scores and ids: the matrix-vector product of section 1. It is
# exact; lesson 07 replaces it with an approximate index for large catalogues.

# %%
index = tfrs.layers.factorized_top_k.BruteForce(improved.query_model, k=10)
index.index_from_dataset(
    candidate_features.batch(512).map(lambda f: (f["movie_id"], improved.candidate_model(f)))
)
users_in_test = sorted(set(test["user_id"]) & set(train["user_id"]))
queries = mf.user_features(train, users_in_test, demographics=has_demographics)
_, everyone_top = index(queries)  # the top 10 of every user, [users, 10] ids
rated_by = train.groupby("user_id")["movie_id"].agg(lambda ids: set(ids.astype(str)))
# feature the first user whose top 10 holds movies they already rated: the case exclusions fix
repeats = [len({i.decode() for i in row} & rated_by[user])
           for user, row in zip(users_in_test, everyone_top.numpy())]
featured = next((n for n, r in enumerate(repeats) if r > 0), 0)
first_user = {name: values[featured:featured + 1] for name, values in queries.items()}
scores, top_ids = index(first_user)
print("user", first_user["user_id"][0], "-> top-10 movie ids:",
      [i.decode() for i in top_ids.numpy()[0]])

# %% [markdown]
# The index answers with ids, as raw bytes (`tf.string`). Users want titles.
#
# ### Exercise 2.4 · From top-K ids to titles
#
# Implement `ids_to_titles(ids, movies)`: the titles of the given movie ids, **in the same
# order** (the order is the ranking).

# %% tags=["exercise"] exercise="2.4"
def ids_to_titles(ids, movies: pd.DataFrame) -> list[str]:
    """Titles of ranked movie ids.

    Args:
        ids: a 1-D sequence of movie ids, best first: a ``tf.string`` tensor or NumPy array
            of ``bytes`` (what ``BruteForce`` returns), or of ``str``.
        movies: the catalogue, with ``movie_id`` (``str``) and ``movie_title`` columns.

    Returns:
        ``[title of ids[0], title of ids[1], ...]``, one per id, in the order given. Ids
        are looked up by value in ``movie_id``, never by row position.
    """
    # BEGIN SOLUTION
    if isinstance(ids, tf.Tensor):
        ids = ids.numpy()
    keys = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in np.asarray(ids).ravel()]
    title_of = movies.set_index(movies["movie_id"].astype(str))["movie_title"]
    return [str(title_of[key]) for key in keys]
    # END SOLUTION


# %%
already_rated = train.loc[train["user_id"] == first_user["user_id"][0], "movie_id"]
print(f"User {first_user['user_id'][0]} rated {len(already_rated)} movies in training, e.g.:")
print("  " + "\n  ".join(ids_to_titles(already_rated.head(5).to_numpy(), movies)))
print("Top 10 from the index:")
print("  " + "\n  ".join(ids_to_titles(top_ids[0], movies)))

# %%
claims.say(
    f"{repeats[featured]} of this user's top 10 "
    + claims.pick(repeats[featured] == 1, "is a movie", "are movies")
    + " they have already rated; over all test users, "
    f"{np.mean(np.array(repeats) > 0):.0%} have at least one in their top 10 "
    f"(on average {np.mean(repeats):.1f} of 10). The index does not know a user's history."
)

# %% [markdown]
# `query_with_exclusions` asks for $K$ plus the number of excluded ids and drops the
# excluded ones, which is how a serving system removes what the user has already seen.

# %%
exclusions = tf.constant([already_rated.astype(str).tolist()])
_, fresh_ids = index.query_with_exclusions(first_user, exclusions)
print("Top 10 without movies rated in training:")
print("  " + "\n  ".join(ids_to_titles(fresh_ids[0], movies)))
changed = set(fresh_ids[0].numpy()) != set(top_ids[0].numpy())
claims.say(claims.pick(
    changed,
    "The excluded movies are gone and the next-best unseen ones have moved up.",
    "Here the two lists are the same: no movie in this user's top 10 had been rated before "
    "(on this data no test user's top 10 held one).",
))

# %% [markdown]
# ## 10. Recall@k with the user's history masked
#
# The factorized metric counts rating pairs and lets already-rated movies occupy the top
# K. The question a product team asks is different: *for each user, how many of the movies
# they went on to rate appear in the top K of what we would actually show them*, with the
# movies they have already rated removed. That is **recall@k** with masking:
#
# $$\text{recall@}k(u) = \frac{|\text{top}_k(u) \cap \text{Test}(u)|}{|\text{Test}(u)|},$$
#
# where $\text{top}_k(u)$ ranks all movies except those $u$ rated in training, averaged over
# the users who have test ratings.
#
# ### Exercise 2.5 · Recall@k with seen movies masked
#
# Implement `masked_recall_at_k(scores, seen, relevant, k)` on dense matrices: one row per
# user, one column per movie.

# %% tags=["exercise"] exercise="2.5"
def masked_recall_at_k(scores: np.ndarray, seen: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean recall@k over users, ranking only the movies each user has not seen.

    Args:
        scores: ``float [n_users, n_movies]``, higher is better.
        seen: ``bool [n_users, n_movies]``, True for movies the user rated in training;
            they can never be in the user's top ``k``.
        relevant: ``bool [n_users, n_movies]``, True for the user's held-out (test) movies.
        k: how many movies are recommended to each user.

    Returns:
        The mean, over users with at least one relevant movie, of (relevant movies in the
        user's top ``k`` unseen movies) / (relevant movies of the user), as a float in
        [0, 1]. Users without relevant movies are left out of the mean (0.0 if none has).
    """
    # BEGIN SOLUTION
    masked = np.where(seen, -np.inf, scores)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant, top, axis=1).sum(axis=1)
    counts = relevant.sum(axis=1)
    users = counts > 0
    if not users.any():
        return 0.0
    return float(np.mean(hits[users] / counts[users]))
    # END SOLUTION


# %%
seen = ev.interaction_matrix(train, users_in_test, movie_ids)
relevant = ev.interaction_matrix(test, users_in_test, movie_ids)
nobody_seen = np.zeros_like(seen)
recall_rows = []
for name, model, run in [("classic id-only", classic, classic_run),
                         ("side features + correction", improved, improved_run)]:
    user_scores = model.query_model(queries).numpy() @ catalogue_vectors(model).T  # [users, movies]
    for k in (10, 50):
        recall_rows.append({
            "model": name, "k": k,
            "TFRS factorized top-k (per rating)": run.at("test")[f"top_{k}"],
            "recall@k, unmasked": masked_recall_at_k(user_scores, nobody_seen, relevant, k),
            "recall@k, seen masked": masked_recall_at_k(user_scores, seen, relevant, k),
        })
recall_table = pd.DataFrame(recall_rows)
recall_table.round(3)

# %% [markdown]
# Why the three columns differ:
#
# - **Masking never lowers recall, and usually raises it.** Without the mask, the movies a
#   user rated in training take some of the top slots (the model has learned exactly those
#   pairs), so fewer slots are left for the test movies. Masking frees the slots, as a real
#   product would.
# - **Per user versus per rating.** Recall averages over users, each counting once; the
#   factorized metric averages over test ratings, so users with many test ratings weigh
#   more. Heavy users have more test movies to find, but also a larger denominator.
# - **The query differs.** The factorized metric queries with each test rating's own
#   timestamp; our recall queries each user once, at the time of their latest training
#   rating, as a live system would. For the id-only model the two queries are identical;
#   for the model with time features they are not.
#
# Neither number is "the" quality of the model: report the one that matches how the
# model will be used, and say which one it is.

# %% tags=["check"]
claims.claim(
    (recall_table["recall@k, seen masked"] >= recall_table["recall@k, unmasked"]).all(),
    "Masking never lowers recall",
)

# %% [markdown]
# ## 11. How good is good? Strong simple baselines
#
# So far the towers have only been compared with each other and with a popularity list. A
# fair verdict needs the strongest *simple* models too: research on recommenders has
# repeatedly found that tuned classic baselines match or beat newer neural models
# (Dacrema et al. 2019; Rendle et al. 2022). Two item-to-item models, both reading the
# user's history $\mathbf{x}_u$ (a 0/1 row of the user × movie matrix $X$ of the fit split)
# and scoring every movie as $\mathbf{x}_u W$ for an item × item matrix $W$:
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
#   One matrix inverse of size (movies × movies) and one hyper-parameter $\lambda$, which we
#   choose on the validation split.
#
# Both score the whole catalogue, so they are measured exactly like the towers: masked
# recall with the `recsys_course.evaluation` module, always over the **full catalogue**.
# Many papers rank the held-out movie among only 100 sampled negatives instead; Krichene
# and Rendle (2020) showed that such sampled metrics can put two models in the wrong order
# and drift towards measuring popularity, so the course never samples.

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
# ### Exercise 2.6 · EASE in closed form
#
# Implement `ease_weights(interactions, l2)` with NumPy: the Gram matrix $G = X^\top X$,
# $P = (G + \lambda I)^{-1}$, then $B = I - P\,\operatorname{diag}(1/\operatorname{diag}(P))$.
# Check on paper with two movies: if $G = \begin{pmatrix}2 & 1\\ 1 & 2\end{pmatrix}$ and
# $\lambda = 1$, each off-diagonal weight is $1/3$ (the one-variable ridge regression
# $x_0 \cdot x_1 / (x_0 \cdot x_0 + \lambda)$).

# %% tags=["exercise"] exercise="2.6"
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
# Now all the models on the same split, with the same metrics: masked recall@10 and @50,
# NDCG@10, the share of the catalogue that appears in someone's top 10 (coverage) and the
# factorized top-100 of section 7 (the test pair's movie among the user's 100 best,
# unmasked; here every model queries each user once, at their latest training rating).
# EASE's $\lambda$ is chosen on the validation split first. Read the unmasked column with
# care: it lets the movies a user already rated take slots, so a model that scores a
# user's own history highly (EASE and item-kNN reconstruct it) can look worse there than
# it is.

# %%
fit_users = sorted(fit["user_id"].unique())
fit_matrix = ev.interaction_matrix(fit, fit_users, movie_ids)
row_of = pd.Index(fit_users)


def history_rows(users: list[str]) -> np.ndarray:
    """The fit-split interaction rows of ``users`` (all zeros for a user absent from fit)."""
    rows = row_of.get_indexer(users)
    return np.where(rows[:, None] >= 0, fit_matrix[np.maximum(rows, 0)], False)


validation_users = sorted(set(validation["user_id"]) & set(fit["user_id"]))
validation_history = history_rows(validation_users)
validation_relevant = ev.interaction_matrix(validation, validation_users, movie_ids)
started = time.perf_counter()
ease_grid = {}
for l2 in (10.0, 50.0, 200.0, 500.0, 2000.0):
    ranked = ev.top_k(validation_history @ ease_weights(fit_matrix, l2), 10, exclude=validation_history)
    ease_grid[l2] = ev.recall_at_k(ranked, validation_relevant, 10)
best_l2 = max(ease_grid, key=ease_grid.get)
ease = ease_weights(fit_matrix, best_l2)
print(f"EASE validation recall@10 by lambda: { {k: round(v, 4) for k, v in ease_grid.items()} }; "
      f"chosen lambda = {best_l2:g} ({time.perf_counter() - started:.1f} s for the whole grid)")

# %%
test_history = history_rows(users_in_test)


def report(name: str, user_scores: np.ndarray) -> dict:
    """The comparison row of a ``[users_in_test, movies]`` score matrix."""
    metrics = ev.evaluate(user_scores, relevant, seen=seen, ks=(10, 50))
    unmasked = ev.top_k(user_scores, 100)
    return {"model": name, **{key: metrics[key] for key in
                              ("recall@10_masked", "recall@50_masked", "ndcg@10", "coverage@10")},
            "test_top_100": ev.pair_recall_at_k(unmasked, relevant, 100)}


def tower_scores(model: RetrievalModel) -> np.ndarray:
    """Scores of every test user (queried at their latest training rating) for every movie."""
    return model.query_model(queries).numpy() @ catalogue_vectors(model).T


full_comparison = pd.DataFrame([
    report("popularity", popularity_scores(fit_matrix, len(users_in_test))),
    report("item-kNN (cosine)", test_history @ item_knn_weights(fit_matrix)),
    report(f"EASE (lambda {best_l2:g})", test_history @ ease),
    report("two-tower: classic id-only", tower_scores(classic)),
    report("two-tower: id-only + correction", tower_scores(corrected)),
    report("two-tower: side features + correction", tower_scores(improved)),
]).set_index("model")
full_comparison.round(3)

# %%
recall_10 = full_comparison["recall@10_masked"]
best_tower = recall_10.filter(like="two-tower").idxmax()
ease_name = recall_10.filter(like="EASE").index[0]
ranking = " > ".join(f"{name} ({value:.3f})" for name, value in recall_10.sort_values(ascending=False).items())
claims.say(
    f"Ranked by masked recall@10: {ranking}. "
    + claims.pick(
        recall_10[best_tower] >= recall_10[ease_name],
        f"The best tower, {best_tower}, is at or above EASE on this data.",
        f"The best tower, {best_tower}, stays {1 - recall_10[best_tower] / recall_10[ease_name]:.0%} "
        "below EASE: a closed-form linear model, fitted in a fraction of a second, is the "
        "model to beat.",
    )
)

# %% [markdown]
# Why is a linear item-to-item model so strong on MovieLens? The data is small and dense: a few
# thousand movies, and every user has rated at least 20 of them, so the co-occurrence
# counts in $X^\top X$ are well estimated, and a user's whole history is a rich query.
# EASE reads that history directly and combines it with a full (movies × movies) weight
# matrix found at the global optimum of its objective, with one hyper-parameter. The towers
# must squeeze each user into 32 numbers, learned by stochastic gradient descent for a few
# epochs from a sampled softmax that sees each (user, movie) pair once per epoch. The
# towers' strengths lie elsewhere: they read features (cold start, section 8), their cost
# per request does not grow with the catalogue squared (EASE stores $n^2$ weights: 10¹² for
# a million items), and they take context such as the time of the request.
#
# ## 12. Negatives: accidental hits, temperature, hard negatives
#
# Section 7 counted the duplicates in a batch. TFRS's `Retrieval` task has three options
# that change how the in-batch negatives enter the loss:
#
# - `remove_accidental_hits=True` drops the logits of negatives that are the query's own
#   movie (a duplicate in the batch). TFRS needs the batch's candidate ids for that; our
#   `RetrievalModel` does not pass them, so `models.AccidentalHitsRetrieval` records them in the
#   candidate tower and hands them to the task.
# - `temperature` $\tau$ divides every logit by $\tau$ before the softmax: $\tau < 1$
#   sharpens it, so the loss concentrates on the negatives that score close to the positive.
# - `num_hard_negatives=n` keeps, for each query, only the $n$ negatives with the highest
#   scores (the hardest ones) and ignores the rest of the batch.
#
# Each variant below changes one option of the id-only + correction model of section 7 and
# starts from the same seed and the same batches; the epoch is chosen on validation. We
# report masked recall@10 on validation (what we may choose on) and on test.

# %%
def train_variant(**options) -> tuple[RetrievalModel, models.TrainingRun]:
    """The id-only + correction model of section 7, with ``options`` for the Retrieval task
    (``remove_accidental_hits``, ``temperature``, ``num_hard_negatives``)."""
    recsys_course.seed_everything(SEED)
    query, candidate = QueryTower(user_ids, EMBEDDING_DIM), CandidateTower(movie_ids, EMBEDDING_DIM)
    metric = tfrs.metrics.FactorizedTopK(candidates=candidate_features.batch(4096).map(candidate), ks=TOP_KS)
    if options.pop("remove_accidental_hits", False):
        task = models.AccidentalHitsRetrieval(metrics=metric, **options)
        candidate = task.recording(candidate)
    else:
        task = tfrs.tasks.Retrieval(metrics=metric, **options)
    model = RetrievalModel(query, candidate, task, popularity_correction=True)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.05))
    run = models.train_with_curves(model, mf.to_dataset(fit_features, 1024, shuffle_seed=SEED),
                               {"validation": splits["validation"]}, epochs=10, ks=TOP_KS, patience=2)
    return model, run


validation_queries = mf.user_features(fit, validation_users, demographics=has_demographics)


def validation_recall(model: RetrievalModel) -> float:
    """Masked recall@10 on the validation split (users queried at their latest fit rating)."""
    user_scores = model.query_model(validation_queries).numpy() @ catalogue_vectors(model).T
    ranked = ev.top_k(user_scores, 10, exclude=validation_history)
    return ev.recall_at_k(ranked, validation_relevant, 10)


started = time.perf_counter()
towers = {
    "two-tower: classic id-only": classic,
    "two-tower: id-only + correction": corrected,
    "two-tower: side features + correction": improved,
}
variants = {
    "id-only + correction, remove_accidental_hits": dict(remove_accidental_hits=True),
    "id-only + correction, temperature 0.5": dict(temperature=0.5),
    "id-only + correction, 100 hardest negatives": dict(num_hard_negatives=100),
}
for name, options in variants.items():
    towers[f"two-tower: {name}"], _ = train_variant(**options)
ablation = pd.DataFrame([
    {"model": name, "validation recall@10": validation_recall(model),
     "test recall@10": report(name, tower_scores(model))["recall@10_masked"]}
    for name, model in towers.items()
]).set_index("model")
print(f"{len(variants)} variants trained and every tower measured in {time.perf_counter() - started:.0f} s")
ablation.round(3)

# %%
base = ablation.loc["two-tower: id-only + correction", "validation recall@10"]
changes = [
    f"{name.split(', ', 1)[1]} {claims.pick(row['validation recall@10'] > base, 'raises', 'does not raise')} it "
    f"({base:.3f} to {row['validation recall@10']:.3f})"
    for name, row in ablation.iloc[3:].iterrows()
]
id_final_name = ablation["validation recall@10"].idxmax()
id_final_test = ablation.loc[id_final_name, "test recall@10"]
ease_test = full_comparison.loc[ease_name, "recall@10_masked"]
claims.say(
    "On validation recall@10, " + "; ".join(changes) + ". "
    f"The id tower with the best validation recall@10 is **{id_final_name}**; on test it "
    f"reaches {id_final_test:.3f} against EASE's {ease_test:.3f}: "
    + claims.pick(id_final_test >= ease_test,
                  f"{id_final_test / ease_test - 1:.1%} above it.",
                  f"{1 - id_final_test / ease_test:.1%} below it. Tuning the negatives does not "
                  "close the gap: the next section changes what the query tower reads.")
)

# %% [markdown]
# ## 13. A query tower that reads the history
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
# (the genre bag of section 3.4, over movies), divided by the square root of the history's
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
#   (With millions of items one samples again, and section 12's questions return.)
# - **Regularisation.** The movie vectors are shared by every user: an L2 penalty keeps
#   them small, and the epoch is chosen on validation as before.
# - **Dot product or cosine.** A dot product rewards long vectors, so a movie can rise in
#   everyone's list by growing its vector. The alternative scales both vectors to length 1
#   and divides their cosine by a temperature $\tau$, as YouTube's two-tower model does
#   (Yi et al. 2019): the score is $\cos(\mathbf{q}_u, \mathbf{v}_j)/\tau + b_j$, so
#   popularity lives in the bias $b_j$ alone and $\tau$ sets how sharp the softmax is
#   (section 12's knob, here on a bounded score). The towers do the scaling, so the score
#   is still one dot product for `BruteForce` or Annoy. An L2 penalty has nothing to hold
#   on a cosine, so these runs have none.
#
# The model is `recsys_course.models.HistoryRetrievalModel`, a `tfrs.Model` whose
# `compute_loss` hides, scores and takes the softmax (`src/recsys_course/models/history.py`).
# We choose between the dot product and the cosine at two temperatures on the validation
# split, 512 numbers a movie (`models.HISTORY_GRID`). The other settings (hide half, Adam
# with learning rate 0.003 for the dot product and 0.01 for the cosine, which learns more
# slowly, batches of 128 users) were chosen on validation splits of ml-latest-small, MovieLens
# 100K and synthetic data when this lesson was written.

# %%
print("the grid:", models.HISTORY_GRID)
started = time.perf_counter()
history_configs = {models.history_config_label(config): config for config in models.HISTORY_GRID}
history_runs = {
    label: models.train_history_model(
        fit_matrix, movie_ids, validation_history, validation_relevant, seed=SEED, **config)
    for label, config in history_configs.items()
}
best_history = max(history_runs, key=lambda label: history_runs[label].validation_recall)
history_run = history_runs[best_history]
best_history_config = history_configs[best_history]
print(f"{len(models.HISTORY_GRID)} configurations trained in {time.perf_counter() - started:.0f} s; "
      f"chosen on validation: {best_history}")
pd.DataFrame([
    {"configuration": label, "epoch chosen": run.best_epoch, "validation recall@10": run.validation_recall}
    for label, run in history_runs.items()
])

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
joined = models.concatenate_towers([run.model for run in history_runs.values()], validation_history)
weighted_sum = sum(weight * run.model.scores(validation_history)
                   for weight, run in zip(joined.weights, history_runs.values()))
joined_scores = joined.scores(validation_history)
joined_gap = float(np.abs(joined_scores - weighted_sum).max() / np.abs(weighted_sum).max())
joined_validation = ev.recall_at_k(ev.top_k(joined_scores, 10, exclude=validation_history), validation_relevant, 10)
use_joined = joined_validation > history_run.validation_recall
history_model = joined if use_joined else history_run.model
history_validation = max(joined_validation, history_run.validation_recall)
print(f"the long dot product against the weighted sum of the three scores: largest difference "
      f"{joined_gap:.1e} of the largest score; query vectors of {joined.query_vectors(validation_history[:1]).shape[1]} numbers")
claims.say(
    f"On validation the three joined reach a masked recall@10 of {joined_validation:.3f}, the best single "
    f"configuration ({best_history}) {history_run.validation_recall:.3f}: we keep "
    + claims.pick(use_joined, "**the three joined**.", f"**{best_history}** alone.")
)

# %% tags=["check"]
claims.claim(joined_gap < 1e-5, "the long dot product is the weighted sum of the three scores")

# %% [markdown]
# The history tower joins the comparison table of section 11, measured on the same test
# users with the same fit histories as EASE and item-kNN:

# %%
history_name = "two-tower: history bag" + (" (3 joined)" if use_joined else "")
history_row = report(history_name, history_model.scores(test_history))
full_comparison.loc[history_name] = {key: value for key, value in history_row.items() if key != "model"}
full_comparison.round(3)

# %%
validation_by_tower = pd.concat([ablation["validation recall@10"],
                                 pd.Series({history_name: history_validation})])
test_by_tower = pd.concat([ablation["test recall@10"],
                           pd.Series({history_name: history_row["recall@10_masked"]})])
final_name = validation_by_tower.idxmax()
final_test = test_by_tower[final_name]
claims.say(
    f"The lesson's final model is the tower with the best validation recall@10: **{final_name}** "
    f"({validation_by_tower[final_name]:.3f} on validation). On test it reaches {final_test:.3f}, "
    f"EASE {ease_test:.3f}: "
    + claims.pick(final_test >= ease_test, f"{final_test / ease_test - 1:.1%} above it",
                  f"{1 - final_test / ease_test:.1%} below it")
    + f"; the best id tower reaches {id_final_test:.3f}. "
    + claims.pick(history_row["recall@10_masked"] > id_final_test,
                  "Reading the history instead of an id is worth more than any change to the negatives.",
                  "On this data, reading the history does not beat the best id tower.")
)

# %% [markdown]
# What a query computed from the history buys: give the model only **five** of a user's
# movies, as if they had just signed up, and ask again, with no retraining. Below, every test
# user is queried with five of their fit movies drawn at random (seeded), and one of them is
# shown with titles.

# %%
draw = np.random.default_rng(SEED)
five_movies = np.zeros_like(test_history)
for row, user_history in enumerate(test_history):
    rated = np.flatnonzero(user_history)
    five_movies[row, draw.choice(rated, size=min(5, len(rated)), replace=False)] = True
five_scores = history_model.scores(five_movies)
five_recall = ev.recall_at_k(ev.top_k(five_scores, 10, exclude=seen), relevant, 10)
newcomer = int(np.argmax(test_history.sum(axis=1) >= 5))
print("a newcomer's five movies:", ids_to_titles(np.asarray(movie_ids)[five_movies[newcomer]], movies))
print("their top 5:", ids_to_titles(np.asarray(movie_ids)[ev.top_k(five_scores, 5, exclude=five_movies)[newcomer]], movies))
popularity_recall = full_comparison.loc["popularity", "recall@10_masked"]
claims.say(
    f"With five movies per user, the history tower's masked recall@10 is {five_recall:.3f}, against "
    f"{history_row['recall@10_masked']:.3f} with the whole fit history and {popularity_recall:.3f} for "
    "the popularity list: "
    + claims.pick(five_recall > popularity_recall,
                  "five ratings already personalise the list, and no weight was retrained.",
                  "five ratings are not yet enough to beat the popularity list here.")
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
_, singular, right = np.linalg.svd(fit_matrix.astype(np.float64), full_matrices=False)
v = right.T  # movies x rank
p_diagonal = (v**2 / (singular**2 + best_l2)).sum(axis=1) + (1.0 - (v**2).sum(axis=1)) / best_l2
ease_query_bag = v * (singular**2 / (singular**2 + best_l2))  # history row @ this = query
ease_candidates = v / (best_l2 * p_diagonal)[:, None]          # one row per movie
two_tower_ease = (test_history @ ease_query_bag) @ ease_candidates.T
direct_ease = test_history @ ease
outside_history = ~test_history.astype(bool)
gap = np.abs(two_tower_ease - direct_ease)[outside_history].max() / np.abs(direct_ease).max()
tower_ease_recall = report("EASE as two towers", two_tower_ease)["recall@10_masked"]
print(f"tower size: {v.shape[1]} numbers; largest score difference outside the histories: "
      f"{gap:.1e} of the largest score; masked recall@10 {tower_ease_recall:.3f} "
      f"(EASE directly: {ease_test:.3f})")

# %% tags=["check"]
claims.claim(gap < 1e-6 and abs(tower_ease_recall - ease_test) < 1e-3,
             "checks that they give EASE's scores on every movie outside each test user's history")

# %% [markdown]
# So a two-tower model with towers this wide holds EASE exactly. What separates the two is
# how the weights are found: EASE solves its least-squares objective exactly, with one
# hyper-parameter, while our towers are narrower than the catalogue and trained by stochastic
# gradient descent on a softmax objective. On dense data with a few thousand movies the
# exact solution is hard to beat; the towers earn their place where EASE cannot go: features
# of new movies (cold start), catalogues whose $n^2$ weights do not fit in memory, and context at
# request time.

# %% [markdown]
# ## 14. A second protocol: the latest ratings of each user
#
# The random split asks "given a random 80 % of everything, find the other 20 %". A
# deployed recommender faces another question: given everything *up to now*, what will
# each user watch *next*? The per-user temporal split (`ev.leave_last_k`) holds out each
# user's latest ratings (here 5) as test, and the 5 before them as validation. It removes
# the random split's gift to history-based models: test movies no longer sit in the middle
# of a training session. We rerun the baselines, the best id tower's recipe and the history
# tower on it: EASE's lambda and every tower's epoch are chosen again on this protocol's own
# validation split (the history tower keeps the configuration, or the joining, chosen in section 13).

# %%
HOLDOUT = 5
t_train, t_test = ev.leave_last_k(ratings, HOLDOUT)
t_fit, t_validation = ev.leave_last_k(t_train, HOLDOUT)
t_fit_users = sorted(t_fit["user_id"].unique())
t_fit_matrix = ev.interaction_matrix(t_fit, t_fit_users, movie_ids)


def t_history(users: list[str]) -> np.ndarray:
    """Temporal fit-split interaction rows of ``users`` (zeros for users absent from it)."""
    rows = pd.Index(t_fit_users).get_indexer(users)
    return np.where(rows[:, None] >= 0, t_fit_matrix[np.maximum(rows, 0)], False)


t_val_users = sorted(set(t_validation["user_id"]) & set(t_fit["user_id"]))
t_val_history = t_history(t_val_users)
t_val_relevant = ev.interaction_matrix(t_validation, t_val_users, movie_ids)
t_grid = {}
for l2 in (10.0, 50.0, 200.0, 500.0, 2000.0):
    ranked = ev.top_k(t_val_history @ ease_weights(t_fit_matrix, l2), 10, exclude=t_val_history)
    t_grid[l2] = ev.recall_at_k(ranked, t_val_relevant, 10)
t_l2 = max(t_grid, key=t_grid.get)

t_users = sorted(set(t_test["user_id"]) & set(t_train["user_id"]))
t_seen = ev.interaction_matrix(t_train, t_users, movie_ids)
t_relevant = ev.interaction_matrix(t_test, t_users, movie_ids)
t_test_history = t_history(t_users)

# the final tower's recipe, retrained on the temporal fit split with its own validation
recsys_course.seed_everything(SEED)
t_probability = mf.candidate_probability(t_fit)


def t_features(frame: pd.DataFrame) -> dict:
    return mf.rating_features(frame, genre_width, demographics=has_demographics, probability=t_probability)


side = "side features" in id_final_name
t_query = QueryTower(
    sorted(t_fit["user_id"].unique()), EMBEDDING_DIM,
    timestamps=t_fit["timestamp"].to_numpy(dtype="float64") if side else None,
    occupations=sorted(t_fit["user_occupation_text"].unique()) if side and has_demographics else None,
    ages=t_fit["raw_user_age"].to_numpy() if side and has_demographics else None,
)
t_candidate = CandidateTower(movie_ids, EMBEDDING_DIM, titles=titles if side else None,
                             genres=genre_names if side else None)
final_options = next((o for n, o in variants.items() if n in id_final_name), {})
metric = tfrs.metrics.FactorizedTopK(candidates=candidate_features.batch(4096).map(t_candidate), ks=TOP_KS)
if final_options.get("remove_accidental_hits"):
    t_task = models.AccidentalHitsRetrieval(metrics=metric)
    t_candidate = t_task.recording(t_candidate)
else:
    t_task = tfrs.tasks.Retrieval(metrics=metric, **final_options)
t_model = RetrievalModel(t_query, t_candidate, t_task,
                         popularity_correction="correction" in id_final_name)
t_model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1 if "classic" in id_final_name else 0.05))
t_run = models.train_with_curves(
    t_model, mf.to_dataset(t_features(t_fit), 8192 if "classic" in id_final_name else 1024, shuffle_seed=SEED),
    {"validation": t_features(t_validation)}, epochs=10, ks=TOP_KS, patience=2,
)
# the history tower in the form chosen in section 13 (one configuration, or the grid joined),
# its epochs and weights chosen on this validation split
t_history_runs = [
    models.train_history_model(t_fit_matrix, movie_ids, t_val_history, t_val_relevant, seed=SEED, **config)
    for config in (models.HISTORY_GRID if use_joined else (best_history_config,))
]
t_history_model = (models.concatenate_towers([run.model for run in t_history_runs], t_val_history)
                   if use_joined else t_history_runs[0].model)
t_queries = mf.user_features(t_train, t_users, demographics=has_demographics)
t_scores = {
    "popularity": popularity_scores(t_fit_matrix, len(t_users)),
    "item-kNN (cosine)": t_test_history @ item_knn_weights(t_fit_matrix),
    f"EASE (lambda {t_l2:g})": t_test_history @ ease_weights(t_fit_matrix, t_l2),
    id_final_name: t_model.query_model(t_queries).numpy() @ catalogue_vectors(t_model).T,
    history_name: t_history_model.scores(t_test_history),
}
temporal = pd.DataFrame([
    {"model": name, **ev.evaluate(user_scores, t_relevant, seen=t_seen, ks=(10,))}
    for name, user_scores in t_scores.items()
]).set_index("model")[["recall@10_masked", "ndcg@10", "coverage@10"]]
both = pd.DataFrame({
    "random split": full_comparison["recall@10_masked"].rename(lambda n: "EASE" if n.startswith("EASE") else n),
    "temporal split": temporal["recall@10_masked"].rename(lambda n: "EASE" if n.startswith("EASE") else n),
})
both.loc[id_final_name, "random split"] = id_final_test
both = both.dropna()
both.round(3)

# %%
def order(column: pd.Series) -> str:
    return " > ".join(column.sort_values(ascending=False).index)


same_order = order(both["random split"]) == order(both["temporal split"])
claims.say(
    f"Masked recall@10, random split: {order(both['random split'])}. Temporal split: "
    f"{order(both['temporal split'])}. "
    + claims.pick(same_order, "The order of the models is the same on both protocols. ",
                  "The order of the models changes between the protocols. ")
    + claims.pick((both["temporal split"] < both["random split"]).all(),
                  "Every model scores lower on the temporal split: the next movies of a user are "
                  "harder to guess than random holes in their history.",
                  "Not every model scores lower on the temporal split: which protocol is harder "
                  "depends on the model and the data.")
    + " Report the protocol that matches how the model will be used."
)

# %% [markdown]
# ## Summary
#
# - Retrieval scores the whole catalogue per request, so its score must factorise: a
#   **query tower** and a **candidate tower** meet only in a dot product, and candidate
#   vectors are computed ahead of time. Matrix factorisation is the id-only special case.
# - **Keras preprocessing layers** put feature encoding inside the model: `StringLookup` +
#   `Embedding` for ids (with an OOV row), `Normalization` and `Discretization` for
#   numbers, `TextVectorization` + masked average pooling for text, multi-hot for sets.
# - TFRS trains towers with an **in-batch softmax**; its implicit negatives are drawn by
#   popularity, which pushes popular items down, and popular movies repeat within a batch
#   (accidental hits). The **logQ correction** removes the popularity bias.
# - **Factorized top-K accuracy** counts test ratings whose movie is in the top K of the
#   whole catalogue; it does not mask seen movies. Compare it with the popularity list,
#   and with **masked recall@k** per user.
# - Free id embeddings can **overfit within a few epochs**: pick the epoch on a validation
#   split, never on test.
# - On a random split, very fine **time buckets leak** the session of the test rating.
# - `BruteForce` serves exact top-K lists; `query_with_exclusions` removes seen items.
# - Always compare with **strong simple baselines** measured in the same run, over the full
#   catalogue (`recsys_course.evaluation`): item-kNN and above all EASE, one matrix inverse,
#   are hard to beat on MovieLens-sized data.
# - A batch of $B$ pairs does not hold $B - 1$ distinct negatives: popular movies repeat,
#   and their copies are accidental hits. `remove_accidental_hits`, `temperature` and
#   `num_hard_negatives` change how negatives count; measure each on validation.
# - A **history query tower** (a bag of the user's movies instead of a user id), trained per
#   user to predict hidden movies with a full softmax over the catalogue, reads what EASE
#   reads, serves new users without retraining, and is still one dot product at serving time.
#   A **cosine with a temperature** keeps popularity in the movie's bias instead of its
#   vector's length; towers **laid end to end** add their scores and stay one dot product.
# - Evaluate on the protocol that matches use: a random split (comparable with the TFRS
#   tutorials) and a per-user temporal split (`leave_last_k`, what production looks like)
#   can rank models differently.
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
# - Walid Krichene, Steffen Rendle. *On Sampled Metrics for Item Recommendation.* KDD 2020
#   (why every metric here ranks the full catalogue). <https://doi.org/10.1145/3394486.3403226>
#
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
# - TensorFlow Recommenders: retrieval, features and deep retrieval tutorials,
#   <https://www.tensorflow.org/recommenders/examples/basic_retrieval>
# - Keras preprocessing layers guide:
#   <https://www.tensorflow.org/guide/keras/preprocessing_layers>
#
# Next: lesson 04 re-ranks the candidates this model retrieves; lesson 07 replaces the
# brute-force index with Annoy.
