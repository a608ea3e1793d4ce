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
#   what its in-batch softmax computes;
# - read factorized top-K accuracy correctly, choose the number of epochs on a validation
#   split, and recognise overfitting in the curves;
# - measure what side features (time, demographics, titles, genres) add, above all for
#   movies with few ratings;
# - serve recommendations from a brute-force index with the movies a user has already rated
#   excluded, and measure recall@k with those movies masked, over the full catalogue.
#
# Lesson 03 takes the towers of this lesson and asks how good they are: against strong
# simple baselines, with corrected negatives, with a query that reads the user's history,
# and on other evaluation protocols.
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and on its card on the site's home page, with the data it was measured on.
#
# **How to work through it:** run the cells top to bottom (`# %%` cells run in VS Code,
# PyCharm and Spyder, or run `python lessons/02_retrieval.py`). The five exercises are
# functions whose body raises `NotImplementedError`; implement them, then check with
# `course check 2.1` (or `course check 02` for the whole lesson), and ask
# `course hint 2.1` when stuck.

# %% tags=["setup"]
# Importing recsys_course first sets TF_USE_LEGACY_KERAS=1: TensorFlow Recommenders needs
# Keras 2 (the tf-keras package), and the variable must be set before TensorFlow is imported.
import recsys_course
from recsys_course import claims, evaluation as ev, models
from recsys_course.models import features as mf

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

SEED = recsys_course.seed_everything(42)
# The course's one retrieval recipe (batch size, learning rate, epochs, vector size), chosen
# on validation data and reused by every later lesson through models.train_retrieval.
RECIPE = models.RETRIEVAL_RECIPE
EMBEDDING_DIM = RECIPE["embedding_dim"]  # the size of every query and candidate vector here
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
# tutorials, 20 % of the rows at random for test and the rest for training, with seed 42, and
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
    raise NotImplementedError(
        "Exercise 2.1 (An id tower): not solved yet. Stuck? Run: course hint 2.1"
    )


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
#     estimate can be poor when the rows arrive in an order that is not random (MovieLens
#     files are sorted by user or by time). `np.quantile` on the training timestamps is exact;
#     `mf.quantile_boundaries` wraps it. The cell after the table measures both on this data.

# %%
fit_times = fit["timestamp"].to_numpy(dtype="float64")
time_normalization = tf.keras.layers.Normalization(axis=None)
time_normalization.adapt(fit_times)
time_buckets = tf.keras.layers.Discretization(bin_boundaries=mf.quantile_boundaries(fit_times, 20))
shown = fit.head(4)
shown_times = shown["timestamp"].to_numpy(dtype="float64")
pd.DataFrame(
    {
        "timestamp": shown["timestamp"].astype(str),
        "date": pd.to_datetime(shown["timestamp"], unit="s").dt.strftime("%Y-%m-%d %H:%M"),
        "normalized": time_normalization(shown_times).numpy().round(3),
        "bucket of 20": time_buckets(shown_times).numpy(),
    }
)

# %%
adapted = tf.keras.layers.Discretization(num_bins=20)
adapted.adapt(np.sort(fit_times))  # rows in time order, as a log file holds them
fullest = {name: float(np.bincount(layer(fit_times).numpy()).max() / len(fit_times))
           for name, layer in (("adapt()", adapted), ("exact quantiles", time_buckets))}
claims.say(
    f"On this data the fullest of the 20 buckets holds {claims.fmt(fullest['exact quantiles'], 'percent')} "
    f"of the training ratings with exact quantiles (an even split would be 5 %) and "
    f"{claims.fmt(fullest['adapt()'], 'percent')} with `adapt()` on the same timestamps in time order."
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
    f"On this page's data, 1,000 buckets put {claims.fmt(own_share, 'percent')} of the test ratings in a "
    "bucket that their own user dominates: "
    + claims.pick(own_share >= 0.3, "a large leak.", "a small leak here, but do not count on that on other data.")
)

# %% [markdown]
# What does a model make of the leak? The lesson's benchmark (`course bench 02`) trains the
# side-feature model of section 7 with 1,000 buckets as well as with 20
# (`side_1000_time_buckets` against `side`) and measures both ways of asking: the factorized
# metric, which queries each test rating with its own timestamp and so hands the model the
# session, and recall for users queried at the time of their latest training rating, as a
# live system would. We use **20 buckets**, coarse enough to describe *periods* rather than
# sessions.
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
    raise NotImplementedError(
        "Exercise 2.2 (A title tower): not solved yet. Stuck? Run: course hint 2.2"
    )


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
# ### The negatives come from the batch
#
# The negatives of a query are the other candidates of its batch, and a movie appears in a
# batch as often as it is rated: a popular movie is a negative far more often than a rare
# one. The softmax then pushes popular movies down for everybody, which the metric (did the
# user's movie make the top K?) does not reward, since many ratings go to popular movies.
# Lesson 03 measures how strong the push is and corrects it (the logQ correction); here we
# train the plain in-batch softmax, as TFRS's basic retrieval tutorial does.
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
# feature dictionary, and hand the two batches of vectors to the task, queries first. Skip
# the (expensive) top-K metrics while training: `compute_metrics=not training`.

# %% tags=["exercise"] exercise="2.3"
class RetrievalModel(tfrs.Model):
    """A two-tower retrieval model: ``score = query_model(f) . candidate_model(f)``.

    ``query_model`` and ``candidate_model`` map the same feature dictionary to
    ``float32 [batch, dim]``; ``task`` is a ``tfrs.tasks.Retrieval``.
    """

    def __init__(self, query_model: tf.keras.Model, candidate_model: tf.keras.Model,
                 task: tfrs.tasks.Retrieval):
        super().__init__()
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.task = task

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        """The in-batch softmax loss of one batch.

        Args:
            features: a batch of feature tensors; row ``b`` is one (query, candidate) pair.
            training: True inside ``fit``; top-K metrics are only computed when False.

        Returns:
            The scalar loss the task returns for the queries ``query_model(features)`` and
            candidates ``candidate_model(features)``: the sum over rows of the softmax
            cross-entropy of each row of the score matrix, with the diagonal as labels.
        """
        raise NotImplementedError(
            "Exercise 2.3 (The retrieval model's compute_loss): not solved yet. Stuck? Run: course hint 2.3"
        )


# %% [markdown]
# ## 6. The classic model, and overfitting
#
# First the model of the TFRS basic retrieval tutorial: id-only towers of 32 numbers, the
# in-batch softmax and Adagrad. The tutorial trains on batches of 8,192 pairs for exactly 3
# epochs; the course uses one recipe for every retrieval model instead, `RECIPE`
# (`recsys_course.models.RETRIEVAL_RECIPE`): smaller batches, more updates, and the number
# of epochs chosen on the validation split. (The benchmark, `course bench 02`, runs the
# tutorial's exact setting too.) The candidates for the metric are a `tf.data.Dataset` of
# movie features mapped through the candidate tower, so the metric always uses the current
# weights.
#
# `models.train_with_curves` trains one epoch at a time and after each epoch measures, on a
# sample of the training pairs, on the validation split and on the test split, the loss
# per pair and the factorized top-K accuracy. It keeps the weights of the epoch with the
# best validation top-100 and stops after `patience` epochs without improvement. (We plot
# the test curve only to *see* overfitting; decisions are made on validation.)

# %%
print("the recipe:", RECIPE)
movie_ids = movies["movie_id"].astype(str).tolist()
has_demographics = data.has_demographics
fit_features = mf.rating_features(fit, genre_width, demographics=has_demographics)
train_sample = mf.take(fit_features, np.random.default_rng(SEED).permutation(len(fit))[:3000])
test_features = mf.rating_features(test, genre_width, demographics=has_demographics)
splits = {"train": train_sample,
          "validation": mf.rating_features(validation, genre_width, demographics=has_demographics),
          "test": test_features}
candidate_features = tf.data.Dataset.from_tensor_slices(mf.movie_features(movies, genre_width))


def train_towers(query_model, candidate_model) -> tuple[RetrievalModel, models.TrainingRun]:
    """A RetrievalModel around the two towers, trained with the recipe; its metric ranks
    each pair's movie among all movies."""
    metric = tfrs.metrics.FactorizedTopK(candidates=candidate_features.batch(4096).map(candidate_model),
                                         ks=TOP_KS)
    model = RetrievalModel(query_model, candidate_model, tfrs.tasks.Retrieval(metrics=metric))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(RECIPE["learning_rate"]))
    run = models.train_with_curves(
        model, mf.to_dataset(fit_features, RECIPE["batch_size"], shuffle_seed=SEED), splits,
        epochs=RECIPE["max_epochs"], ks=TOP_KS, patience=RECIPE["patience"],
    )
    return model, run


recsys_course.seed_everything(SEED)
classic, classic_run = train_towers(QueryTower(user_ids, EMBEDDING_DIM), CandidateTower(movie_ids, EMBEDDING_DIM))
print(f"trained {classic_run.curves['epoch'].max()} epochs in {claims.fmt(classic_run.seconds, 'seconds')}")
classic_run.curves.pivot(index="epoch", columns="split", values="top_100").round(3)

# %%
def plot_curves(run: models.TrainingRun, title: str) -> None:
    """Loss per pair and top-100 accuracy per epoch on every split, stacked; the kept epoch dashed."""
    fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    colors = {"train": "#3f51b5", "validation": "#ff9800", "test": "#009688"}
    for split, rows in run.curves.groupby("split", sort=False):
        style = dict(marker="o", color=colors.get(split), label=split)
        axes[0].plot(rows["epoch"], rows["loss"], **style)
        axes[1].plot(rows["epoch"], rows["top_100"], **style)
    for ax, label in zip(axes, ["loss per pair (batches of 1,024)", "factorized top-100 accuracy"]):
        ax.axvline(run.best_epoch, color="grey", linestyle="--", linewidth=1)
        ax.set(ylabel=label)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[1].set(xlabel="epoch")
    axes[0].legend()
    axes[0].set_title(title)
    fig.tight_layout()
    plt.show()


plot_curves(classic_run, "Classic id-only model")

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
    f = claims.fmt
    text = claims.pick(
        train_curve.is_monotonic_increasing,
        f"On the training pairs top-100 rises at every epoch ({f(train_curve.iloc[0])} to {f(train_curve.iloc[-1])}). ",
        f"On the training pairs top-100 goes from {f(train_curve.iloc[0])} to {f(train_curve.iloc[-1])}. ",
    )
    if peak == last:
        text += (f"On validation it is still rising at the last epoch ({f(val.iloc[-1])}): "
                 "this run stopped before the model overfitted.")
    elif peak == 1:
        text += (f"On validation it is best after the very first epoch ({f(val.loc[1])}) and falls "
                 f"to {f(val.iloc[-1])} by epoch {last}: overfitting starts at once.")
    else:
        text += (f"On validation it rises until epoch {peak} ({f(val.loc[peak])}) and then falls "
                 f"to {f(val.iloc[-1])} by epoch {last}.")
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
#
# ### Where the recipe comes from
#
# Batch size and learning rate are hyperparameters too. Searching them on the page would
# train a model per grid point, so the search ran once, offline, on MovieLens 100K's
# validation split (`python -m recsys_course.tooling.benchmarks.searches retrieval_recipe`),
# and its result is stored with the course. Every setting of the grid, with and without the
# popularity correction that lesson 03 introduces:

# %%
search = models.recorded_search("retrieval_recipe")
grid = pd.DataFrame(search["rows"]).pivot_table(
    index=["batch_size", "learning_rate"], columns="correction",
    values=["validation_recall@10", "best_epoch"]).sort_index()
grid.columns = [f"{'with' if corrected else 'without'} correction: {name.replace('_', ' ')}"
                for name, corrected in grid.columns]
grid

# %%
rows = pd.DataFrame(search["rows"])
plain, corrected_rows = rows[~rows["correction"]], rows[rows["correction"]]
at = corrected_rows.set_index(["batch_size", "learning_rate"])
at_recipe = at.loc[(RECIPE["batch_size"], RECIPE["learning_rate"])]
lower_rates = corrected_rows[(corrected_rows["batch_size"] == RECIPE["batch_size"])
                             & (corrected_rows["learning_rate"] < RECIPE["learning_rate"])]
claims.say(
    f"On {search['dataset']} ({search['metric']}), the model without the correction is best after "
    f"{claims.fmt(int(plain['best_epoch'].min()))} to {claims.fmt(int(plain['best_epoch'].max()))} epochs, at most "
    f"{claims.fmt(plain['validation_recall@10'].max())}, where recommending the most popular movies reaches "
    f"{claims.fmt(search['popularity_validation_recall@10'])}. With the correction the best setting reaches "
    f"{claims.fmt(corrected_rows['validation_recall@10'].max())}; the recipe's batch of "
    f"{claims.fmt(RECIPE['batch_size'])} and rate {claims.fmt(RECIPE['learning_rate'], 'setting')} reach "
    f"{claims.fmt(at_recipe['validation_recall@10'])} in {claims.fmt(int(at_recipe['best_epoch']))} epochs"
    + claims.pick(len(lower_rates) > 0 and (lower_rates["best_epoch"] > at_recipe["best_epoch"]).all(),
                  ", fewer than the lower rates need", "")
    + ". That is the recipe, for both models, so that a comparison between them changes one thing."
)

# %% [markdown]
# ## 7. Side features: one change
#
# Now one change to the classic model, and only one: **side features**. The query tower
# adds the time of the request (normalised, and as one of 20 period buckets) and, when the
# data has them, the user's age and occupation; the candidate tower adds the title's words
# and the genres. Same recipe, same seed, same batches, epochs chosen on validation.

# %%
recsys_course.seed_everything(SEED)
side_query = QueryTower(
    user_ids, EMBEDDING_DIM, timestamps=fit_times, time_buckets=20,
    occupations=sorted(fit["user_occupation_text"].unique()) if has_demographics else None,
    ages=fit["raw_user_age"].to_numpy() if has_demographics else None,
)
side_candidate = CandidateTower(movie_ids, EMBEDDING_DIM, titles=titles, genres=genre_names)
side, side_run = train_towers(side_query, side_candidate)
print(f"side features: best epoch {side_run.best_epoch}, {claims.fmt(side_run.seconds, 'seconds')}")
plot_curves(side_run, "Side features")

# %% [markdown]
# How do the two models compare with the simplest possible retriever, the same top-K list of
# the most-rated movies for everybody? Each test pair is a hit or a miss for each model, so
# the comparison is paired: the standard error of a difference comes from the pair-by-pair
# differences (`ev.paired_standard_error`), and a difference within two standard errors is
# reported as "about the same".

# %%
def catalogue_vectors(model: RetrievalModel) -> np.ndarray:
    """``float32 [n_movies, dim]``: the candidate vector of every movie, in ``movie_ids`` order."""
    return np.concatenate([model.candidate_model(batch).numpy() for batch in candidate_features.batch(1024)])


def pair_hits(model: RetrievalModel, features: dict, k: int) -> np.ndarray:
    """``bool [pairs]``: whether each pair's movie is among the ``k`` best-scored movies of
    the catalogue for the pair's query (factorized top-k accuracy, pair by pair)."""
    vectors = catalogue_vectors(model)
    hits = []
    for rows in np.array_split(np.arange(len(features["user_id"])), max(1, len(features["user_id"]) // 4096)):
        part = mf.take(features, rows)
        queries = model.query_model(part).numpy()
        true_score = np.sum(queries * model.candidate_model(part).numpy(), axis=1, keepdims=True)
        hits.append((queries @ vectors.T > true_score).sum(axis=1) < k)
    return np.concatenate(hits)


fit_counts = fit["movie_id"].value_counts()
most_rated = set(fit_counts.index[:100])
hits_100 = {
    "most popular (same list for all)": test["movie_id"].isin(most_rated).to_numpy(),
    "classic id-only": pair_hits(classic, test_features, 100),
    "side features": pair_hits(side, test_features, 100),
}
comparison = pd.DataFrame({
    "test top-100 (factorized)": {name: h.mean() for name, h in hits_100.items()},
    "epochs": {"most popular (same list for all)": 0, "classic id-only": classic_run.best_epoch,
               "side features": side_run.best_epoch},
})
comparison.round(3)

# %%
def versus(new: str, old: str) -> claims.Comparison:
    """``new`` against ``old`` on the test pairs' top-100 hits, with the paired standard error."""
    return claims.compare(hits_100[new].mean(), hits_100[old].mean(),
                          se=ev.paired_standard_error(hits_100[new], hits_100[old]))


popular_name = "most popular (same list for all)"
classic_vs_popular, side_vs_classic = versus("classic id-only", popular_name), versus("side features", "classic id-only")
claims.say(
    f"- The classic model's top-100, {claims.fmt(classic_vs_popular.value)}, is {classic_vs_popular.word()} the "
    f"popularity list's {claims.fmt(classic_vs_popular.reference)} ({classic_vs_popular.change()}; two standard "
    f"errors of the difference: {claims.fmt(classic_vs_popular.noise)}).\n"
    f"- Side features move it from {claims.fmt(side_vs_classic.reference)} to {claims.fmt(side_vs_classic.value)} "
    f"({side_vs_classic.change()}): "
    + {"higher": "they add on top.", "lower": "they cost accuracy here.",
       "about the same": "within the noise of this test set."}[side_vs_classic.direction]
    + " Where they should matter most is movies with few ratings (next section). "
    + claims.pick(classic_vs_popular.worse or not classic_vs_popular.distinct,
                  "And a trained model that does no better than a list of popular movies needs explaining: "
                  "lesson 03 finds the reason in the in-batch negatives.",
                  "Lesson 03 asks how far above the popularity list a model can get.")
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
def share_ranked_above(model: RetrievalModel, features: dict, among: np.ndarray) -> np.ndarray:
    """For each pair of ``features``: the share of the movies selected by the boolean mask
    ``among`` (over ``movie_ids``) that the model scores strictly above the pair's movie."""
    queries = model.query_model(features).numpy()  # [pairs, dim]
    scores = queries @ catalogue_vectors(model)[among].T  # [pairs, movies in among]
    true_score = np.sum(queries * model.candidate_model(features).numpy(), axis=1, keepdims=True)
    return (scores > true_score).mean(axis=1)


catalogue_counts = pd.Series(movie_ids).map(fit_counts).fillna(0).to_numpy()
rare_movie = catalogue_counts <= 5
rare_pair = test["movie_id"].map(fit_counts).fillna(0).to_numpy() <= 5
rare_features = mf.take(test_features, rare_pair)
everything = np.ones(len(movie_ids), dtype=bool)
print(f"{rare_movie.sum():,} of {len(movie_ids):,} movies have at most 5 training ratings; "
      f"they appear in {rare_pair.sum():,} test pairs ({claims.fmt(rare_pair.mean(), 'percent')})")
ranked_above = {
    name: {"vs all movies": share_ranked_above(model, rare_features, everything),
           "vs rare movies only": share_ranked_above(model, rare_features, rare_movie)}
    for name, model in (("classic id-only", classic), ("side features", side))
}
print("median share of movies ranked above the true (rare) movie, lower is better:")
pd.DataFrame({name: {column: np.median(values) for column, values in shares.items()}
              for name, shares in ranked_above.items()}).T.round(3)

# %%
if rare_pair.sum() < 2:
    claims.say("This dataset has too few test pairs of rare movies to compare the two models on them.")
else:
    rare_gain = claims.compare(
        ranked_above["side features"]["vs rare movies only"].mean(),
        ranked_above["classic id-only"]["vs rare movies only"].mean(),
        se=ev.paired_standard_error(ranked_above["side features"]["vs rare movies only"],
                                    ranked_above["classic id-only"]["vs rare movies only"]),
        higher_is_better=False,
    )
    claims.say(
        f"Against the other rare movies, side features rank on average {claims.fmt(rare_gain.value, 'percent')} "
        f"of them above the true one, the id-only model {claims.fmt(rare_gain.reference, 'percent')} "
        f"({rare_gain.word('more than', 'fewer than', 'about as many as')} the id-only model, over "
        f"{claims.fmt(int(rare_pair.sum()))} test pairs). "
        + claims.pick(rare_gain.better,
                      "Ids with at most five ratings have hardly been trained, and an unrated movie has only the "
                      "shared OOV vector; the title words and genres are what let the side-feature model find the "
                      "rare movie this user picked. That is the cold-start value of content features.",
                      "On this data the content features do not find rare movies better than the ids do: titles "
                      "and genres only help when they say something about who watches a movie.")
    )

# %% [markdown]
# The first column mixes two things: a model that has learned that rarely rated movies are
# rarely the answer ranks every rare movie low, whatever the user. The second column holds
# that prior fixed, since every candidate in it is rare, and leaves only knowledge of the
# movie itself.

# %% [markdown]
# ## 9. Serving: a brute-force index
#
# At serving time we do not want `model.evaluate`, we want "the top 10 movies for this
# user now". `tfrs.layers.factorized_top_k.BruteForce` stores every candidate vector with
# its id and, given query features, runs the query tower, multiplies by the stored matrix
# and returns the K best scores and ids: the matrix-vector product of section 1. It is
# exact; lesson 07 replaces it with an approximate index for large catalogues.

# %%
index = tfrs.layers.factorized_top_k.BruteForce(side.query_model, k=10)
index.index_from_dataset(
    candidate_features.batch(512).map(lambda f: (f["movie_id"], side.candidate_model(f)))
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
    raise NotImplementedError(
        "Exercise 2.4 (From top-K ids to titles): not solved yet. Stuck? Run: course hint 2.4"
    )


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
    f"{claims.fmt(np.mean(np.array(repeats) > 0), 'percent')} have at least one in their top 10 "
    f"(on average {claims.fmt(np.mean(repeats))} of 10). The index does not know a user's history."
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
    raise NotImplementedError(
        "Exercise 2.5 (Recall@k with seen movies masked): not solved yet. Stuck? Run: course hint 2.5"
    )


# %%
seen = ev.interaction_matrix(train, users_in_test, movie_ids)
relevant = ev.interaction_matrix(test, users_in_test, movie_ids)
nobody_seen = np.zeros_like(seen)
recall_rows = []
for name, model, run in [("classic id-only", classic, classic_run), ("side features", side, side_run)]:
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
# ## Summary
#
# - Retrieval scores the whole catalogue per request, so its score must factorise: a
#   **query tower** and a **candidate tower** meet only in a dot product, and candidate
#   vectors are computed ahead of time. Matrix factorisation is the id-only special case.
# - **Keras preprocessing layers** put feature encoding inside the model: `StringLookup` +
#   `Embedding` for ids (with an OOV row), `Normalization` and `Discretization` for
#   numbers, `TextVectorization` + masked average pooling for text, multi-hot for sets.
# - TFRS trains towers with an **in-batch softmax**: the other candidates of a batch are
#   each query's negatives, so negatives are drawn in proportion to popularity (lesson 03
#   corrects for it).
# - **Factorized top-K accuracy** counts test ratings whose movie is in the top K of the
#   whole catalogue; it does not mask seen movies. Compare it with the popularity list,
#   pair by pair, with a standard error, and with **masked recall@k** per user.
# - Free id embeddings can **overfit within a few epochs**: pick the epoch on a validation
#   split, never on test. Batch size and learning rate are chosen on validation too; the
#   course keeps one recipe (`models.RETRIEVAL_RECIPE`) so that comparisons change one
#   thing at a time.
# - **Side features** matter most where ids know little: movies with few ratings. On a
#   random split, very fine **time buckets leak** the session of the test rating.
# - `BruteForce` serves exact top-K lists; `query_with_exclusions` removes seen items.
#
# ## Further reading
#
# - TensorFlow Recommenders: retrieval, features and deep retrieval tutorials,
#   <https://www.tensorflow.org/recommenders/examples/basic_retrieval>
# - Keras preprocessing layers guide:
#   <https://www.tensorflow.org/guide/keras/preprocessing_layers>
# - Paul Covington, Jay Adams, Emre Sargin. *Deep Neural Networks for YouTube
#   Recommendations.* RecSys 2016. <https://doi.org/10.1145/2959100.2959190>
# - Xinyang Yi, Ji Yang, Lichan Hong, Derek Zhiyuan Cheng, Lukasz Heldt, Aditee Kumthekar,
#   Zhe Zhao, Li Wei, Ed Chi. *Sampling-Bias-Corrected Neural Modeling for Large Corpus
#   Item Recommendations.* RecSys 2019. <https://doi.org/10.1145/3298689.3346996>
# - Walid Krichene, Steffen Rendle. *On Sampled Metrics for Item Recommendation.* KDD 2020
#   (why every metric here ranks the full catalogue). <https://doi.org/10.1145/3394486.3403226>
#
# Next: lesson 03 measures these towers against strong simple baselines and improves them;
# lesson 04 re-ranks the candidates a retrieval model returns; lesson 07 replaces the
# brute-force index with Annoy.
