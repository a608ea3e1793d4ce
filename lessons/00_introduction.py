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
# # Lesson 00 · Recommenders, the funnel, and MovieLens
#
# **You will learn to**
#
# - say what a recommender system does and why real ones work in stages (retrieval, ranking,
#   re-ranking);
# - tell content-based from collaborative filtering, and explicit from implicit feedback;
# - explain what an embedding is and why every model in this course is built from them;
# - explore MovieLens: how sparse the rating matrix is, how skewed popularity is;
# - build and evaluate the baseline every later model must beat: "recommend what is popular".
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and on the site's home page, with the data it was measured on.
#
# **How to work through it:** run the cells top to bottom (`# %%` cells run in VS Code,
# PyCharm and Spyder, or run `python lessons/00_introduction.py`). Exercises are functions
# whose body raises `NotImplementedError`; implement them, then check with
# `course check 0.1` (or `course check 00` for the whole lesson).

# %% tags=["setup"]
# Importing recsys_course first sets TF_USE_LEGACY_KERAS=1: TensorFlow Recommenders needs
# Keras 2 (the tf-keras package), and the variable must be set before TensorFlow is imported.
import recsys_course

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

SEED = recsys_course.seed_everything(42)

# %% [markdown]
# ## 1. What a recommender does
#
# A catalogue of thousands or millions of items, and one person with a few seconds of
# attention: a recommender picks the handful of items this person is most likely to want
# *now*. It learns from what people did before: ratings, clicks, purchases, watch time.
#
# Two families of methods answer "what will this person like?":
#
# - **Content-based filtering** describes items by their features (genres, title words,
#   price) and recommends items similar to those the person liked. It works for a brand-new
#   item with no history, but it only finds more of the same.
# - **Collaborative filtering** ignores what items *are* and uses who interacted with what:
#   people who agreed in the past tend to agree again. It discovers non-obvious tastes, but a
#   new user or item with no interactions (the *cold start*) gives it nothing to go on.
#
# Modern systems blend both: the two-tower models of lesson 02 learn from interactions *and*
# from features.
#
# The data comes in two kinds:
#
# - **Explicit feedback**: the user tells you what they think (1-5 stars). Precise but rare,
#   and biased: people mostly rate what they chose to watch.
# - **Implicit feedback**: you observe behaviour (clicks, plays, purchases). Plentiful, but
#   a missing click is not a dislike: the user may never have seen the item.
#
# MovieLens gives explicit ratings; lesson 02 treats "rated at all" as implicit feedback.

# %% [markdown]
# ## 2. The funnel: why recommenders work in stages
#
# Scoring every item with an expensive model for every request does not scale: 10 million
# items times a 1 ms model is almost three hours per page view. Production systems (the
# YouTube paper by Covington et al., 2016, made this widely known) therefore use a funnel:
#
# ```mermaid
# flowchart LR
#     A["Catalogue<br/>millions of items"] --> B["Retrieval<br/>cheap model, ANN index<br/>→ hundreds"]
#     B --> C["Ranking<br/>rich features, heavy model<br/>→ tens, ordered"]
#     C --> D["Re-ranking<br/>business rules, diversity,<br/>freshness → the page"]
# ```
#
# - **Retrieval** (lessons 01, 02, 07) must be cheap per item: one dot product between a user
#   vector and an item vector, served from an approximate nearest-neighbour index.
# - **Ranking** (lesson 04) scores only the few hundred survivors, so it can afford rich
#   features and bigger networks.
# - **Re-ranking** applies what models do not learn: remove what the user already owns,
#   mix genres, respect business rules.
# - **Serving** (lesson 08) puts the trained stages behind an API with a latency budget.

# %% [markdown]
# ## 3. Embeddings in one paragraph
#
# An **embedding** is a learned vector for a discrete thing: a user id, a movie id, a word.
# The model starts with random vectors and nudges them during training so that a user's
# vector points in the same direction as the vectors of movies that user likes; the score of
# a (user, movie) pair is then the dot product of the two vectors. Similar movies end up with
# similar vectors, without anyone telling the model what a genre is. In Keras an embedding is
# a lookup table, `tf.keras.layers.Embedding(vocabulary_size, dimension)`, whose rows are
# trained like any other weights:

# %%
import tensorflow as tf

table = tf.keras.layers.Embedding(input_dim=5, output_dim=3)  # 5 ids, 3 numbers each
vectors = table(tf.constant([0, 3, 3]))  # look up ids 0, 3 and 3 again
print("embedding table shape:", table.get_weights()[0].shape)
print("vectors for ids [0, 3, 3]:\n", vectors.numpy().round(3))

# %% [markdown]
# The same id always returns the same row; training changes the rows. Lesson 01 trains such
# tables from ratings.

# %% [markdown]
# ## 4. MovieLens
#
# [MovieLens](https://movielens.org) is a movie recommendation site run by the GroupLens
# research lab, which publishes anonymised snapshots of its ratings (Harper and Konstan,
# 2015). This course uses **MovieLens 100K**: 100,000 ratings (1-5 stars) by 943 users on
# 1,682 movies, collected September 1997 to April 1998, every user with at least 20
# ratings, plus user demographics (age, gender, occupation, zip code).
#
# TensorFlow Datasets (TFDS) publishes MovieLens 100K as two datasets:
# `movielens/100k-ratings`, one example per rating with the movie's and the user's features
# on every row, and `movielens/100k-movies`, one example per movie. `tfds.load` downloads
# and prepares a dataset once (into `~/tensorflow_datasets`) and then returns a
# `tf.data.Dataset`; `tfds.as_dataframe` turns a few examples into a table to look at. This
# is how the TFRS tutorials start, and it is what the cell below does when the data is
# already downloaded. Downloading needs the network, so the cell only looks at the files
# when they are there, and otherwise says why it skips.

# %%
import tensorflow_datasets as tfds
from IPython.display import display

from recsys_course.data import tfds_data_dir

TFDS_DIR = str(tfds_data_dir())
if tfds.builder("movielens/100k-ratings", data_dir=TFDS_DIR).is_prepared():
    raw_ratings, info = tfds.load(
        "movielens/100k-ratings", split="train", with_info=True, data_dir=TFDS_DIR
    )
    print(f"{info.splits['train'].num_examples:,} rating examples; features:",
          ", ".join(info.features.keys()))
    display(tfds.as_dataframe(raw_ratings.take(3), info))
else:
    print("MovieLens 100K is not downloaded here, so this page skips tfds.load.\n"
          "With the network, set COURSE_DATA=tfds and run the lesson once: the loader below\n"
          "downloads it through TFDS, and this cell then shows the raw examples.")

# %% [markdown]
# For the rest of the course we load the data through `recsys_course.load_movielens()`. It
# calls the same `tfds.load` and converts the examples to two pandas tables whose columns
# keep TFDS's feature names (`user_id`, `movie_id`, `movie_title`, `movie_genres`,
# `user_rating`, `timestamp`, `raw_user_age`, `user_occupation_text`, ...), so code written
# here runs unchanged on TFDS input. It also reads other sources, chosen with the
# `COURSE_DATA` environment variable: `tfds` downloads MovieLens 100K through TFDS; a path
# loads a GroupLens folder or zip (parsed with TFDS's own MovieLens parsers); `synthetic`
# generates a MovieLens-shaped sample offline. Left unset, it tries TFDS and, when that
# fails (no network, say), falls back to the synthetic data with a loud warning, so every
# lesson runs anywhere. The first line printed below says which source you got.

# %%
data = recsys_course.load_movielens()
ratings, movies = data.ratings, data.movies
print("Dataset:", data.summary())
ratings.head()

# %% [markdown]
# Each row is one rating event. The movie's title and genres and the user's demographics
# are repeated on every row, which is how TFDS delivers them: convenient for models, since
# each example carries all its features.

# %%
ratings["user_rating"].value_counts().sort_index().plot.bar(
    title="How many ratings of each value", xlabel="stars", ylabel="ratings", color="#3f51b5"
)
plt.show()

# %% [markdown]
# ## 5. How sparse is the rating matrix?
#
# Picture a matrix with a row per user and a column per movie, holding the rating where one
# exists. Almost all of it is empty: the typical user has seen a tiny fraction of the
# catalogue. Collaborative filtering is the art of filling in those blanks.
#
# ### Exercise 0.1 · How sparse is the rating matrix?
#
# Implement `sparsity(ratings)`: the fraction of empty cells in the user × movie matrix
# built from the users and movies that appear in `ratings`. A user who rated the same movie
# twice fills one cell.

# %% tags=["exercise"] exercise="0.1"
def sparsity(ratings: pd.DataFrame) -> float:
    """Fraction of empty cells in the user x movie matrix of ``ratings``.

    Args:
        ratings: one row per rating, with at least ``user_id`` and ``movie_id`` columns.

    Returns:
        ``1 - filled / (n_users * n_movies)`` as a float in [0, 1), where ``n_users`` and
        ``n_movies`` count the distinct ids in ``ratings`` and ``filled`` counts the distinct
        (user_id, movie_id) pairs.
    """
    raise NotImplementedError(
        "Exercise 0.1 (How sparse is the rating matrix?): not solved yet. Stuck? Run: course hint 0.1"
    )


# %%
print(f"sparsity: {sparsity(ratings):.2%} of the user x movie matrix is empty")

# %% tags=["check"]
from recsys_course.claims import claim

claim(sparsity(ratings) > 0.9, "Almost all of it is empty")

# %% [markdown]
# For the real MovieLens 100K this is 1 - 100,000 / (943 × 1,682) ≈ 93.7 %; larger
# catalogues are far sparser (MovieLens 25M is above 99.7 %).
#
# ### Exercise 0.2 · Per-user activity
#
# Implement `user_activity(ratings)`: one row per user with how many ratings they gave and
# their mean rating, most active users first.

# %% tags=["exercise"] exercise="0.2"
def user_activity(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per-user statistics.

    Args:
        ratings: one row per rating with ``user_id`` and ``user_rating``.

    Returns:
        A DataFrame with columns ``user_id``, ``n_ratings`` (int) and ``mean_rating``
        (float), one row per distinct user, sorted by ``n_ratings`` descending and then by
        ``user_id`` ascending, with a fresh 0..n-1 index.
    """
    raise NotImplementedError(
        "Exercise 0.2 (Per-user activity): not solved yet. Stuck? Run: course hint 0.2"
    )


# %%
activity = user_activity(ratings)
activity.head()

# %% [markdown]
# Activity and popularity are both *long-tailed*: a few users rate far more movies than the
# typical user, and a small share of the movies collects a large share of the ratings while
# most movies get few. Plotting counts against rank on log axes shows it; the line under
# the plots puts a number on it.

# %%
movie_counts = ratings["movie_id"].value_counts().to_numpy()
fig, axes = plt.subplots(2, 1, figsize=(7, 6))  # stacked: each panel stays readable on a phone
axes[0].loglog(np.arange(1, len(movie_counts) + 1), movie_counts, color="#3f51b5")
axes[0].set(title="Movie popularity (long tail)", xlabel="movie rank", ylabel="ratings")
axes[1].hist(activity["n_ratings"], bins=40, color="#009688")
axes[1].set(title="User activity", xlabel="ratings per user", ylabel="users")
fig.tight_layout()
plt.show()
top_share = movie_counts[: len(movie_counts) // 10].sum() / movie_counts.sum()
print(f"the 10% most popular movies receive {top_share:.0%} of all ratings")

# %% tags=["check"]
claim(top_share > 0.2 and np.median(movie_counts) < movie_counts.mean(),
      "a small share of the movies collects a large share of the ratings while most movies get few")
claim(activity["n_ratings"].max() > 3 * activity["n_ratings"].median(),
      "a few users rate far more movies than the typical user")

# %% [markdown]
# ## 6. Evaluating without cheating
#
# A recommender is used to predict the *future* from the *past*. If we split ratings at
# random, the training set contains ratings made after some test ratings: the model learns
# what became popular later, something no live system can know. This is **leakage**, and
# it makes the offline score measure a different task from the one production faces: the
# number is not the one a live system would see, and section 8 shows it can land above or
# below it. The honest split puts a time cutoff between train and test.
#
# ### Exercise 0.3 · A split without leakage
#
# Implement `temporal_split(ratings, test_fraction)`: the latest `test_fraction` of the
# ratings (by `timestamp`) become the test set.

# %% tags=["exercise"] exercise="0.3"
def temporal_split(
    ratings: pd.DataFrame, test_fraction: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ratings by time: everything in test happens no earlier than anything in train.

    Args:
        ratings: one row per rating with a ``timestamp`` column.
        test_fraction: share of rows that go to test, in [0, 1).

    Returns:
        ``(train, test)``, both with all of ``ratings``' columns. ``test`` holds the
        ``round(len(ratings) * test_fraction)`` latest rows; rows with equal timestamps keep
        their original order (use a stable sort), so the split is deterministic.
    """
    raise NotImplementedError(
        "Exercise 0.3 (A split without leakage): not solved yet. Stuck? Run: course hint 0.3"
    )


# %%
train, test = temporal_split(ratings, test_fraction=0.2)
print(f"train: {len(train):,} ratings up to {pd.to_datetime(train['timestamp'].max(), unit='s')}")
print(f"test:  {len(test):,} ratings from {pd.to_datetime(test['timestamp'].min(), unit='s')}")

# %% [markdown]
# ## 7. The baseline every model must beat
#
# "Recommend the most popular movies the user has not rated yet" is embarrassingly simple
# and surprisingly strong, because popularity is real signal. Every model in this course is
# compared with it; a model that cannot beat popularity is not learning anything personal.
#
# ### Exercise 0.4 · A popularity recommender
#
# Implement `recommend_popular(train, user_ids, k)`: for each user, the `k` movies with the
# most ratings in `train` that this user has not rated in `train`.

# %% tags=["exercise"] exercise="0.4"
def recommend_popular(
    train: pd.DataFrame, user_ids: list[str], k: int = 10
) -> dict[str, list[str]]:
    """Popularity recommendations that skip what each user has already rated.

    Args:
        train: training ratings with ``user_id`` and ``movie_id``.
        user_ids: the users to recommend for (users absent from ``train`` get the global
            top ``k``).
        k: recommendations per user.

    Returns:
        ``{user_id: [movie_id, ...]}`` with ``k`` movie ids per user (fewer only if the
        catalogue runs out), ordered by number of ratings in ``train`` descending, ties broken
        by ``movie_id`` ascending, excluding movies that user rated in ``train``.
    """
    raise NotImplementedError(
        "Exercise 0.4 (A popularity recommender): not solved yet. Stuck? Run: course hint 0.4"
    )


# %% [markdown]
# ### Exercise 0.5 · Hit rate at k
#
# The simplest top-k metric: for what share of users does at least one of the `k`
# recommended movies appear among the movies they rated in the test period?

# %% tags=["exercise"] exercise="0.5"
def hit_rate_at_k(
    recommendations: dict[str, list[str]], test: pd.DataFrame, k: int = 10
) -> float:
    """Share of test users with at least one test movie among their first ``k`` recommendations.

    Args:
        recommendations: ``{user_id: [movie_id, ...]}``, best first; may hold more than ``k``
            ids (only the first ``k`` count) and may miss users (they count as misses).
        test: held-out ratings with ``user_id`` and ``movie_id``.
        k: cutoff.

    Returns:
        The hit rate as a float in [0, 1], averaged over the distinct users in ``test``.
    """
    raise NotImplementedError(
        "Exercise 0.5 (Hit rate at k): not solved yet. Stuck? Run: course hint 0.5"
    )


# %% [markdown]
# ## 8. Putting it together: popularity, honestly measured
#
# We compare three recommenders on the temporal split: random movies, popularity, and
# popularity measured on a *random* split, to see what leakage does to the number.

# %%
rng = np.random.default_rng(SEED)
test_users = sorted(test["user_id"].unique())
all_movies = ratings["movie_id"].unique()
random_recs = {u: list(rng.choice(all_movies, size=10, replace=False)) for u in test_users}
popular_recs = recommend_popular(train, test_users, k=10)

leaky_train, leaky_test = recsys_course.split_ratings(ratings, test_fraction=0.2, seed=SEED)
leaky_users = sorted(leaky_test["user_id"].unique())
leaky_recs = recommend_popular(leaky_train, leaky_users, k=10)


def ratings_per_user(frame: pd.DataFrame) -> float:
    return float(frame.groupby("user_id").size().mean())


results = pd.DataFrame(
    {
        "recommender": ["random", "popularity", "popularity"],
        "split": ["temporal", "temporal", "random (leaky)"],
        "test users": [len(test_users), len(test_users), len(leaky_users)],
        "test ratings per user": [ratings_per_user(test)] * 2 + [ratings_per_user(leaky_test)],
        "hit_rate@10": [
            hit_rate_at_k(random_recs, test),
            hit_rate_at_k(popular_recs, test),
            hit_rate_at_k(leaky_recs, leaky_test),
        ],
    }
).round(3)
results

# %% [markdown]
# Read the table with two questions in mind.
#
# **How far is popularity above random?** That gap, measured on the same split and the same
# users, is the value of the simplest signal. Every later model must widen it.
#
# **Can the two popularity rows be compared?** No, and the table shows why. The temporal
# test set holds only the users active after the cutoff, and they tend to be heavy users
# with many test ratings; the random split tests every user on a fifth of their ratings.
# A hit needs just one of the user's test movies in the top 10, so the more test movies a
# user has, the easier a hit is. Depending on the data, the leaky random split can come out
# higher or lower than the temporal one; what it never gives is the number a live system
# would see, because its training data already contains the future. Compare models within
# one split, on the same users, and let the split mirror how the system will be used.

# %% tags=["check"]
from recsys_course import evaluation
from recsys_course.claims import compare


def hits_by_user(recommendations: dict[str, list[str]], held_out: pd.DataFrame) -> np.ndarray:
    """1 for each test user with a hit in the top 10, else 0 (the shared evaluation module)."""
    users, items = sorted(held_out["user_id"].unique()), sorted(ratings["movie_id"].unique())
    ranked = evaluation.ranked_matrix(recommendations, users, items, 10)
    return (evaluation.precision_by_user(ranked, evaluation.interaction_matrix(held_out, users, items), 10) > 0) * 1.0


popular_hits, random_hits = hits_by_user(popular_recs, test), hits_by_user(random_recs, test)
claim(compare(popular_hits.mean(), random_hits.mean(), se=evaluation.paired_standard_error(popular_hits, random_hits)).better,
      "How far is popularity above random?")
temporal_counts, leaky_counts = test.groupby("user_id").size(), leaky_test.groupby("user_id").size()
unpaired_se = float(np.hypot(evaluation.standard_error(temporal_counts), evaluation.standard_error(leaky_counts)))
claim(compare(temporal_counts.mean(), leaky_counts.mean(), se=unpaired_se, kind="count").better,
      "they tend to be heavy users with many test ratings")

# %% [markdown]
# From lesson 01 on, every top-k number comes from one shared module,
# `recsys_course.evaluation`, which works on matrices of item indices (one row per user)
# instead of dictionaries. Converted with `evaluation.ranked_matrix`, the three lists above
# get the same hit rates from it as from your function, so the numbers of later lessons mean
# what you just implemented.

# %%
from recsys_course import evaluation


def module_hit_rate(recommendations: dict[str, list[str]], held_out: pd.DataFrame, k: int = 10) -> float:
    """The hit rate of ``recommendations`` computed by the shared evaluation module."""
    users = sorted(held_out["user_id"].unique())
    items = sorted(ratings["movie_id"].unique())
    ranked = evaluation.ranked_matrix(recommendations, users, items, k)
    relevant = evaluation.interaction_matrix(held_out, users, items)
    return evaluation.hit_rate_at_k(ranked, relevant, k)


same_numbers = [
    module_hit_rate(random_recs, test), module_hit_rate(popular_recs, test),
    module_hit_rate(leaky_recs, leaky_test),
]

# %% tags=["check"]
claim(np.allclose(np.round(same_numbers, 3), results["hit_rate@10"]),
      "get the same hit rates from it as from your function")

# %% [markdown]
# The top of the popularity list, as titles:

# %%
titles = movies.set_index("movie_id")["movie_title"]
popular_titles = [titles[m] for m in recommend_popular(train, ["<new user>"], k=5)["<new user>"]]
print("Most popular before the cutoff:", *popular_titles, sep="\n  ")

# %% [markdown]
# ## Summary
#
# - A recommender ranks a huge catalogue for one person; real systems use a funnel:
#   cheap **retrieval** to hundreds of candidates, rich **ranking** of those, **re-ranking**
#   with business rules.
# - **Content-based** methods use item features, **collaborative filtering** uses who
#   interacted with what; **explicit** feedback is rare and precise, **implicit** is
#   plentiful and ambiguous.
# - **Embeddings** are learned vectors for ids; their dot products score user-item pairs.
# - The rating matrix is extremely **sparse** and popularity is **long-tailed**.
# - Evaluate with a split that respects time, and always compare with the **popularity
#   baseline**.
#
# ## Further reading
#
# - F. Maxwell Harper and Joseph A. Konstan. *The MovieLens Datasets: History and Context.*
#   ACM TiiS 5(4), 2015. <https://doi.org/10.1145/2827872>
# - Paul Covington, Jay Adams, Emre Sargin. *Deep Neural Networks for YouTube
#   Recommendations.* RecSys 2016. <https://doi.org/10.1145/2959100.2959190>
# - TensorFlow Recommenders guide: <https://www.tensorflow.org/recommenders>
# - Charu C. Aggarwal. *Recommender Systems: The Textbook.* Springer, 2016, chapters 1-2.
#
# Next: lesson 01 learns embeddings from the rating matrix with matrix factorisation.
