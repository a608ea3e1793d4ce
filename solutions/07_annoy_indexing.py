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
# # Lesson 07 · Approximate nearest-neighbour retrieval with Annoy
#
# **You will learn to**
#
# - explain why exact top-k search over a large catalogue does not fit an online latency
#   budget, and what an approximate index trades for speed;
# - describe how Annoy's forest of random-projection trees is built and searched, and what
#   its two knobs, `n_trees` and `search_k`, cost at build time and at query time;
# - index the movie embeddings of a trained two-tower model, query it with user embeddings,
#   and check the answers against TensorFlow Recommenders' exact `BruteForce` layer;
# - measure an index by its **recall against exact search** (how much of the exact top-k it
#   returns), which is not the recall@k of lessons 02 and 03 (how many of a user's test
#   movies a list finds);
# - turn maximum inner product search into angular search by appending one coordinate;
# - find similar movies with `get_nns_by_item`, and say why that search uses angles while
#   user-to-movie search uses inner products;
# - save an index, memory-map it from another process, and place it in a serving stack;
# - measure Annoy against its peers (an HNSW graph, ScaNN when it can be installed) and
#   against exact search, one query at a time and batched, on one corpus: recall against exact
#   search, queries per second, build time and size, and choose an index with a rule of thumb.
#
# The page shows how long this lesson took on the data it was built with. The sweep over
# 1,000,000 items lives in the benchmark (`course bench 07`); section 10 runs a smaller
# corpus and shows the benchmark's recorded table.
#
# **Optional packages.** Section 10 also measures HNSW through Faiss. Without it, those rows
# are skipped and the lesson tells you how to install it (`pip install -e ".[ann]"`).
#
# **How to work through it:** run the cells top to bottom. Exercises are functions whose
# body raises `NotImplementedError`; implement them, then check with `course check 7.1`
# (or `course check 07` for the whole lesson).

# %% tags=["setup"]
# Importing recsys_course first sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported
# (TensorFlow Recommenders needs Keras 2). The exercises only need NumPy and Annoy.
import recsys_course

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from annoy import AnnoyIndex

from recsys_course import claims, evaluation as ev

SEED = recsys_course.seed_everything(42)
K = 10  # every list in this lesson is a top-10

# %% [markdown]
# ## 1. Why exact search stops scaling
#
# A two-tower model (lesson 02) scores a (user, movie) pair with one dot product between a
# user vector and a movie vector. To recommend, we need the $k$ movies whose vectors have the
# largest dot product with the user's vector: **top-k search**. The exact way computes every
# score and keeps the best:
#
# $$\text{top}_k(q) = \text{the } k \text{ indices } i \in \{1, \dots, n\} \text{ with the largest } q \cdot x_i$$
#
# That is $n \cdot d$ multiply-adds per request, and worse, it reads the whole $n \times d$
# matrix from memory each time. With $n$ = 1,000,000 movies and $d$ = 32 float32 numbers,
# that is 128 MB per request. A CPU core streams memory at roughly 10-20 GB/s, so one exact
# query takes several milliseconds before sorting even starts, and a service answering 1,000
# requests per second would need ten or more cores doing nothing else. The cost grows
# linearly with the catalogue, while the latency budget of retrieval (a few milliseconds of
# a page's total) does not grow at all.
#
# **Approximate nearest-neighbour (ANN)** search gives up the guarantee of finding the exact
# top-k in exchange for looking at a small fraction of the items. The question is never "is
# it exact?" but "how much of the exact answer does it find, and how fast?". We measure the
# first with **recall against exact search** (recall@k vs exact): the share of the exact
# top-k that the index returns. It says nothing about whether the exact top-k itself is any
# good for the user; that is the recall@k of lessons 02 and 03, measured against the movies
# users went on to rate.
#
# We start from the data and a trained model, then build the tools: exact search, an Annoy
# index, recall, and the reduction that lets an angular index answer dot-product queries.

# %%
data = recsys_course.load_movielens()
print("Dataset:", data.summary())
ratings, movies = data.ratings, data.movies
train, test = recsys_course.split_ratings(ratings, 0.2, seed=SEED)
print(f"train: {len(train):,} ratings, test: {len(test):,} ratings")

# %% [markdown]
# ## 2. Embeddings to search
#
# We need movie vectors and user vectors from a trained two-tower model. Lessons 02 and 03
# build and evaluate such models; here one call to `recsys_course.models.train_retrieval`
# trains the id-only version with the course's one retrieval recipe (lesson 02's recipe
# with lesson 03's logQ correction, the epoch chosen on a validation split). In brief:
#
# - the **user tower** maps a user id to a 32-number vector (a `StringLookup` followed by
#   an `Embedding` table), the **movie tower** does the same for movie ids;
# - every training rating is a positive (user, movie) pair, and the other movies of the same
#   batch serve as negatives: the loss is a softmax over the batch (TFRS's `Retrieval`
#   task), which pushes a user's vector towards the movies they rated and away from others;
# - after training, the helper runs the movie tower once over the whole catalogue and keeps
#   the result as a matrix, `movie_embeddings`, whose row `i` belongs to `movie_ids[i]`.
#
# Those rows are what we index; user vectors are the queries. This lesson measures how well
# an index reproduces exact search on these vectors, whatever their quality; lessons 02 and
# 03 measure the quality.

# %%
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_course import models

recsys_course.seed_everything(SEED)  # TensorFlow is imported now: seed it too
started = time.perf_counter()
towers = models.train_retrieval(train, movies, seed=SEED)
claims.say(
    claims.pick(towers.from_cache,
                "These towers were trained by an earlier lesson on the same data and loaded from the course's cache "
                "(`train_retrieval` trains once per dataset and reuses the result; delete "
                "`~/.cache/recsys-course/retrieval` to retrain)",
                "These towers were trained now, and kept in the course's cache for the next lesson that asks for "
                "the same model on the same data")
    + f", in {claims.fmt(time.perf_counter() - started, 'seconds')}; validation chose epoch {towers.best_epoch}."
)
print("movie_embeddings:", towers.movie_embeddings.shape, towers.movie_embeddings.dtype)

# %% [markdown]
# TFRS ships an exact index as a Keras layer: `tfrs.layers.factorized_top_k.BruteForce`
# wraps the user tower, stores the candidate matrix, and answers a batch of user ids with
# the top-k scores and identifiers. It is our reference answer throughout the lesson.

# %%
brute_force = tfrs.layers.factorized_top_k.BruteForce(towers.user_model, k=K)
brute_force.index(tf.constant(towers.movie_embeddings), tf.constant(towers.movie_ids))

titles = movies.set_index("movie_id")["movie_title"]
user = sorted(set(test["user_id"]) & set(train["user_id"]))[0]  # a user the model has seen
favourites = train[train["user_id"] == user].nlargest(3, ["user_rating", "timestamp"])
print(f"user {user} rated highly:", *favourites["movie_title"], sep="\n  ")
bf_scores, bf_ids = brute_force(tf.constant([user]))
bf_ids = [m.decode() for m in bf_ids.numpy()[0]]
print("BruteForce top-3:", [titles[m] for m in bf_ids[:3]])

# %% [markdown]
# ## 3. Exact search in NumPy
#
# BruteForce runs inside TensorFlow. For measuring, we also want exact search as plain
# NumPy, one query at a time, the way an online service receives requests: a matrix-vector
# product, then the $k$ best scores. Sorting all $n$ scores costs $O(n \log n)$;
# `np.argpartition` finds the $k$ largest in $O(n)$, and only those $k$ need sorting.
#
# ### Exercise 7.1 · Exact top-k by inner product
#
# Implement `exact_top_k(items, query, k)`.

# %% tags=["exercise"] exercise="7.1"
def exact_top_k(items: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` items with the largest inner product with ``query``, best first.

    Args:
        items: float array ``[n_items, d]``, one item vector per row.
        query: float array ``[d]``.
        k: how many to return, ``k >= 1``; when ``k > n_items`` all items are returned.

    Returns:
        int64 array ``[min(k, n_items)]`` of row indices into ``items``, ordered by
        decreasing ``items[i] @ query`` (ties in any order).
    """
    # BEGIN SOLUTION
    scores = items @ query
    k = min(k, len(scores))
    top = np.argpartition(scores, len(scores) - k)[-k:]  # the k largest, in no known order
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)
    # END SOLUTION


# %%
query = towers.user_embeddings([user])[0]
numpy_ids = towers.movie_ids[exact_top_k(towers.movie_embeddings, query, K)]
print(f"NumPy exact search finds {len(set(numpy_ids) & set(bf_ids))} of BruteForce's top {K}; "
      f"same order: {list(numpy_ids) == bf_ids}")

# %% [markdown]
# ## 4. How Annoy works: a forest of random-projection trees
#
# [Annoy](https://github.com/spotify/annoy) (Approximate Nearest Neighbors Oh Yeah) was
# written by Erik Bernhardsson at Spotify to find similar tracks among millions of
# matrix-factorisation vectors. It is a C++ library with Python bindings.
#
# **Building one tree.** Take all items. Pick two of them at random (Annoy refines the pair
# with a few steps of 2-means) and cut the space with the hyperplane equidistant from the
# two: every item goes to the side it falls on. Repeat inside each half, and again, until a
# node holds only a handful of items (about as many ids as fit in the space of one vector,
# roughly $d + 2$). Items that are close together tend to end in the same leaf, because a
# random cut rarely separates two nearby points.
#
# **Searching one tree** means walking from the root to the query's leaf: about
# $\log_2(n / d)$ comparisons, after which the leaf's items are the candidates.
#
# **Why a forest.** A single tree sometimes cuts right between the query and one of its
# true neighbours. Different random cuts make different mistakes, so Annoy builds
# `n_trees` independent trees and searches them together. The search keeps one priority
# queue over all trees, ordered by how far the query lies from each hyperplane it would have
# to cross: nodes just across a cut are visited first. It stops once it has gathered
# `search_k` candidate items, removes duplicates, computes their exact distances to the
# query, and returns the best `k`.
#
# The figure builds two such trees on 300 points in the plane, with the rule above (without
# the 2-means refinement). Colours are leaves; the star is a query, the circled points are
# its 5 true nearest neighbours, and the dark points are the query's leaf in each tree.

# %%
def random_projection_leaves(points: np.ndarray, rng: np.random.Generator, leaf_size: int = 12) -> np.ndarray:
    """Leaf number of each 2-D point in one tree split by hyperplanes between random pairs."""
    leaves = np.zeros(len(points), dtype=int)
    pending, n_leaves = [np.arange(len(points))], 0
    while pending:
        members = pending.pop()
        if len(members) <= leaf_size:
            leaves[members], n_leaves = n_leaves, n_leaves + 1
            continue
        a, b = points[rng.choice(members, size=2, replace=False)]
        side = points[members] @ (a - b) > (a - b) @ (a + b) / 2  # nearer to a than to b
        pending += [members[side], members[~side]]
    return leaves


rng = np.random.default_rng(SEED)
centres = rng.normal(scale=3.0, size=(6, 2))
points = centres[rng.integers(0, 6, 300)] + rng.normal(size=(300, 2))
query_2d = points[0] + 0.3
true_nn = np.argsort(((points - query_2d) ** 2).sum(axis=1))[:5]


def neighbours_in_query_leaf(tree_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(leaf of every point, mask of the points sharing the query's leaf) for one tree."""
    leaves = random_projection_leaves(points, np.random.default_rng(tree_seed))
    return leaves, leaves == leaves[np.argmin(((points - query_2d) ** 2).sum(axis=1))]


fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
for tree, ax in enumerate(axes):
    leaves, in_leaf = neighbours_in_query_leaf(tree)
    ax.scatter(*points.T, c=leaves % 20, cmap="tab20", s=14, alpha=0.35,
               label="points (colour = leaf)")
    ax.scatter(*points[in_leaf].T, c="black", s=16, label="in the query's leaf")
    ax.scatter(*points[true_nn].T, facecolors="none", edgecolors="red", s=120, linewidths=1.5,
               label="true 5 nearest")
    ax.scatter(*query_2d, marker="*", c="red", s=250, label="query")
    ax.set(title=f"tree {tree + 1}: {leaves.max() + 1} leaves", xticks=[], yticks=[])
axes[0].legend(loc="lower left", fontsize=8, framealpha=0.9)
fig.tight_layout()
plt.show()
found = [set(np.flatnonzero(neighbours_in_query_leaf(t)[1])) & set(true_nn) for t in range(10)]
print("true neighbours in the query's leaf, tree by tree:", [len(f) for f in found], "of 5")
for n_trees in (1, 2, 5, 10):
    print(f"  union over {n_trees:2d} trees: {len(set().union(*found[:n_trees]))} of 5")

# %% [markdown]
# One leaf often misses some true neighbours; the union over trees, plus the neighbouring
# leaves the priority queue visits, misses fewer. That is all of Annoy's accuracy story.
#
# **The two knobs.**
#
# | knob | set at | more of it buys | and costs |
# |---|---|---|---|
# | `n_trees` | build time | better candidates for the same `search_k` | build time (linear in `n_trees`), index size (each tree adds its split nodes) |
# | `search_k` | query time | more candidates inspected, higher recall | query time (roughly linear in `search_k`) |
#
# When `search_k` is not given, Annoy uses `n_trees * k`. The Annoy README advises making
# `n_trees` as large as your memory allows and `search_k` as large as your latency budget
# allows; section 10 measures both.
#
# Three practical facts shape the code below. Items are identified by integers `0..n-1`
# (Annoy allocates space for the largest id, so keep your own array that maps positions to
# real ids, as `towers.movie_ids` does). No item can be added after `build`: a changed
# catalogue means a new index. And `build(n_trees, n_jobs=...)` can use several threads,
# but then the forest depends on the number of threads: each thread draws its trees from
# its own random stream (seeded with the seed plus the thread's number), and the default
# `n_jobs=-1` starts one thread per core, so the same code and seed build a different
# forest on a machine with a different number of cores. With `n_jobs=1` and `set_seed`, the
# same input always gives the same index, which is what we want in a course.
#
# ### Exercise 7.2 · Build an Annoy index from an embedding matrix
#
# Implement `build_annoy_index(vectors, metric, n_trees, seed)`.

# %% tags=["exercise"] exercise="7.2"
def build_annoy_index(
    vectors: np.ndarray, metric: str = "angular", n_trees: int = 10, seed: int = 42
) -> AnnoyIndex:
    """A built Annoy index over the rows of ``vectors``.

    Args:
        vectors: float array ``[n_items, d]``; row ``i`` becomes Annoy item ``i``.
        metric: Annoy metric: ``"angular"``, ``"euclidean"``, ``"manhattan"``,
            ``"hamming"`` or ``"dot"``.
        n_trees: number of trees in the forest.
        seed: Annoy's random seed, set before building so that the same arguments always
            give the same trees.

    Returns:
        An ``AnnoyIndex`` with ``d`` dimensions, ``n_items`` items and ``n_trees`` trees,
        built with a single thread (``n_jobs=1``, which keeps builds reproducible).
    """
    # BEGIN SOLUTION
    vectors = np.asarray(vectors, dtype=np.float32)
    index = AnnoyIndex(vectors.shape[1], metric)
    index.set_seed(seed)
    for item, vector in enumerate(vectors):
        index.add_item(item, vector)
    index.build(n_trees, n_jobs=1)
    return index
    # END SOLUTION


# %% [markdown]
# ## 5. Measuring the approximation: recall against exact search
#
# For one query, the recall against exact search is the share of the exact top-k that the
# approximate top-k contains: $|A_k \cap E_k| / k$. Order inside the list does not matter (the ranking stage
# reorders candidates anyway), and an index that returns fewer than $k$ ids (Annoy can,
# when `search_k` is tiny) is charged for the missing ones. Averaged over many queries, it
# is the number to put next to the speed.
#
# ### Exercise 7.3 · Recall against exact search
#
# Implement `recall_against_exact(approx_ids, exact_ids, k)`.

# %% tags=["exercise"] exercise="7.3"
def recall_against_exact(approx_ids, exact_ids, k: int) -> float:
    """Mean share of each query's exact top-``k`` that the approximate answer found.

    Args:
        approx_ids: one sequence of ids per query, best first (a list of lists, or an
            ``[n_queries, m]`` array); only the first ``k`` of each count, and a sequence
            shorter than ``k`` simply finds less.
        exact_ids: one sequence of at least ``k`` ids per query, best first, same order of
            queries as ``approx_ids``.
        k: cutoff, ``k >= 1``.

    Returns:
        ``mean over queries of |set(approx[:k]) & set(exact[:k])| / k``, a float in [0, 1].
    """
    # BEGIN SOLUTION
    shares = [
        len(set(np.asarray(approx)[:k].tolist()) & set(np.asarray(exact)[:k].tolist())) / k
        for approx, exact in zip(approx_ids, exact_ids)
    ]
    return float(np.mean(shares)) if shares else 0.0
    # END SOLUTION


# %% [markdown]
# ## 6. Metrics, and turning inner products into angles
#
# Annoy measures closeness with one of five metrics, fixed when the index is created:
#
# - `angular`: $\sqrt{2(1 - \cos(u, v))}$, the Euclidean distance between the normalised
#   vectors; it ignores vector lengths.
# - `euclidean` ($\lVert u - v \rVert$) and `manhattan` ($\sum_j |u_j - v_j|$).
# - `hamming`: for binary vectors.
# - `dot`: the inner product itself, where larger means closer.
#
# Our model scores with the **inner product**, so the exact answer we want is **maximum
# inner product search (MIPS)**. The inner product is not a distance: an item is not its
# own best match (a longer vector in the same direction beats it), and the triangle
# inequality that space-partitioning methods lean on does not hold. Using `angular` on the
# raw embeddings would answer a different question, because a two-tower model stores
# information in vector lengths: popular movies get longer vectors. Our trained movie
# vectors show it:

# %%
norms = np.linalg.norm(towers.movie_embeddings, axis=1)
popularity = train["movie_id"].value_counts().reindex(towers.movie_ids).fillna(0).to_numpy()
print(f"movie vector lengths: 5th percentile {np.percentile(norms, 5):.2f}, "
      f"median {np.median(norms):.2f}, 95th percentile {np.percentile(norms, 95):.2f}")
print(f"correlation of length with log(1 + number of training ratings): "
      f"{np.corrcoef(norms, np.log1p(popularity))[0, 1]:.2f}")

users = np.array(sorted(train["user_id"].unique()))
user_vectors = towers.user_embeddings(users)
unit_movies = towers.movie_embeddings / np.linalg.norm(towers.movie_embeddings, axis=1, keepdims=True)
by_dot = [exact_top_k(towers.movie_embeddings, q, K) for q in user_vectors]
by_cosine = [exact_top_k(unit_movies, q, K) for q in user_vectors]
print(f"top-{K} by cosine contains {recall_against_exact(by_cosine, by_dot, K):.0%} of the top-{K} by dot product")

# %% [markdown]
# ### The reduction: one extra coordinate
#
# Bachrach et al. (2014) showed how to answer MIPS with any nearest-neighbour index for
# angles or Euclidean distance. Let $M = \max_i \lVert x_i \rVert$ be the largest item
# length. Give every item one extra coordinate, and every query a zero:
#
# $$x_i' = \Big[\,x_i,\; \sqrt{M^2 - \lVert x_i \rVert^2}\,\Big], \qquad q' = [\,q,\; 0\,].$$
#
# Now every item has the same length, $\lVert x_i' \rVert = M$, and the zero hides the extra
# coordinate from the product: $q' \cdot x_i' = q \cdot x_i$. So
#
# $$\cos(q', x_i') = \frac{q \cdot x_i}{\lVert q \rVert \, M},$$
#
# which, for a fixed query, orders items exactly as the inner product does. The angular
# top-k of $q'$ is the MIPS top-k of $q$. (Euclidean distance works too:
# $\lVert q' - x_i' \rVert^2 = \lVert q \rVert^2 + M^2 - 2\, q \cdot x_i$.) Annoy's own `dot`
# metric applies the same idea internally; section 11 compares the two.
#
# ### Exercise 7.4 · Augment the items
#
# Implement `augment_for_mips(items)`.

# %% tags=["exercise"] exercise="7.4"
def augment_for_mips(items: np.ndarray) -> tuple[np.ndarray, float]:
    """Append ``sqrt(M**2 - |x|**2)`` to every item so all items share the length ``M``.

    Args:
        items: float array ``[n_items, d]``.

    Returns:
        ``(augmented, max_norm)``: float32 array ``[n_items, d + 1]`` whose first ``d``
        columns are ``items`` and whose last column makes every row's length equal to
        ``max_norm``, the largest row length of ``items`` (as a Python float). The last
        column is never negative or NaN (round-off below zero is clipped to zero).
    """
    # BEGIN SOLUTION
    items = np.asarray(items, dtype=np.float32)
    squared = np.einsum("ij,ij->i", items, items)
    max_squared = float(squared.max())
    extra = np.sqrt(np.clip(max_squared - squared, 0.0, None)).astype(np.float32)
    return np.hstack([items, extra[:, None]]), float(np.sqrt(max_squared))
    # END SOLUTION


# %% [markdown]
# ### Exercise 7.5 · Query the augmented index
#
# The query side of the reduction: append a zero to the user vector, then ask the angular
# index. Implement `mips_search(index, query, k, search_k)`.

# %% tags=["exercise"] exercise="7.5"
def mips_search(index: AnnoyIndex, query: np.ndarray, k: int, search_k: int = -1) -> np.ndarray:
    """Top-``k`` items by inner product from an angular index over augmented items.

    Args:
        index: an ``"angular"`` AnnoyIndex of ``d + 1`` dimensions built from the output of
            ``augment_for_mips``.
        query: float array ``[d]``, a raw (not augmented) query vector.
        k: number of ids wanted.
        search_k: Annoy's ``search_k`` (``-1`` lets Annoy use ``n_trees * k``).

    Returns:
        int64 array of at most ``k`` item ids, by decreasing (approximate) inner product.
    """
    # BEGIN SOLUTION
    augmented = np.append(np.asarray(query, dtype=np.float32), np.float32(0.0))
    return np.asarray(index.get_nns_by_vector(augmented, k, search_k=search_k), dtype=np.int64)
    # END SOLUTION


# %% [markdown]
# ## 7. An Annoy index over the movies
#
# Now the pieces fit together: augment the movie vectors, build an angular index, and ask
# it for a user's top-10 next to BruteForce's.

# %%
augmented_movies, max_norm = augment_for_mips(towers.movie_embeddings)
movie_index = build_annoy_index(augmented_movies, metric="angular", n_trees=10, seed=SEED)
print(f"indexed {movie_index.get_n_items():,} movies, {movie_index.get_n_trees()} trees, "
      f"{movie_index.f} dimensions; largest vector length M = {max_norm:.3f}")

# BruteForce answers every user in one batch: the exact top-10 of each.
_, bf_all = brute_force(tf.constant(users))
exact_all = [[m.decode() for m in row] for row in bf_all.numpy()]

# %% [markdown]
# Which user to show? One chosen at random could be a lucky or an unlucky case, so we pick
# a typical one: the user whose overlap with the exact answer at Annoy's default `search_k`
# is the median over all users (the first such user by id).

# %%
def overlap(search_k: int) -> np.ndarray:
    """For every user, how many of BruteForce's top-K Annoy returns at this search_k."""
    return np.array([len(set(towers.movie_ids[mips_search(movie_index, q, K, search_k)]) & set(exact))
                     for q, exact in zip(user_vectors, exact_all)])


default_overlap, wider_overlap = overlap(-1), overlap(500)
position = int(np.flatnonzero(default_overlap == np.sort(default_overlap)[len(users) // 2])[0])
user, query = users[position], user_vectors[position]
bf_ids = exact_all[position]
annoy_default = list(towers.movie_ids[mips_search(movie_index, query, K)])
annoy_wider = list(towers.movie_ids[mips_search(movie_index, query, K, 500)])
pd.DataFrame(
    {
        "BruteForce (exact)": [titles[m] for m in bf_ids],
        "Annoy, default search_k": [titles[m] + ("" if m in bf_ids else "  ✗") for m in annoy_default],
        "Annoy, search_k=500": [titles[m] + ("" if m in bf_ids else "  ✗") for m in annoy_wider],
    },
    index=pd.RangeIndex(1, K + 1, name="rank"),
)

# %%
found_default, found_wider = default_overlap[position], wider_overlap[position]
candidates = movie_index.get_n_trees() * K
claims.say(
    f"User {user}: with Annoy's default `search_k` (n_trees x k = {candidates} candidates, "
    f"some of them repeats across trees) Annoy finds {found_default} of BruteForce's {K} movies; "
    f"with `search_k=500` it finds {found_wider}. "
    + claims.pick(
        found_default < K,
        "The movies marked ✗ are Annoy's guesses from outside the exact top 10: the default search "
        "stopped after too few candidates, and every true top-10 movie it never reached was replaced "
        "by the best of the ones it did. ",
        "Here even the default search found them all. ",
    )
    + f"Over all {claims.fmt(len(users))} users, the default finds {claims.fmt(default_overlap.mean())} of {K} on "
    f"average and `search_k=500` finds {claims.fmt(wider_overlap.mean())}."
)

# %% [markdown]
# The angular distances Annoy returns can be turned back into model scores, which checks
# the reduction end to end: $\cos = 1 - \text{dist}^2 / 2$ and
# $q \cdot x = \cos \cdot \lVert q' \rVert \cdot M$.

# %%
ids, distances = movie_index.get_nns_by_vector(np.append(query, 0.0), 5, search_k=500, include_distances=True)
recovered = (1 - np.square(distances) / 2) * np.linalg.norm(query) * max_norm
print("scores recovered from Annoy's distances:", np.round(recovered, 4))
print("the model's scores q . x for those ids: ", np.round(towers.movie_embeddings[ids] @ query, 4))

# %% [markdown]
# One user is an anecdote. Over every user, how much of BruteForce's top-10 does Annoy find,
# and how does `search_k` change it? BruteForce answers all users in one batch.

# %%
agreement = []
for search_k in (-1, 200, 500, 1000, 2000):
    answers = [towers.movie_ids[mips_search(movie_index, q, K, search_k)] for q in user_vectors]
    agreement.append({
        "search_k": search_k,
        "candidates": search_k if search_k > 0 else movie_index.get_n_trees() * K,  # -1: Annoy's default
        f"recall@{K} vs exact (BruteForce)": round(recall_against_exact(answers, exact_all, K), 4),
    })
agreement = pd.DataFrame(agreement)
agreement

# %% [markdown]
# The default inspects only `n_trees * k` candidates, and the recall against exact search
# rises with `search_k`.
# Always read `search_k` against the catalogue size: once it approaches the number of items,
# Annoy is doing exact search the slow way, and on a catalogue of a few thousand movies
# exact search is the better choice anyway. Section 10 moves to a catalogue where the index
# earns its keep.

# %% tags=["check"]
column = agreement[f"recall@{K} vs exact (BruteForce)"]
claims.claim(column.iloc[-1] > column.iloc[0] and column.is_monotonic_increasing,
             "the recall against exact search rises with search_k")

# %%
reached = agreement[agreement[f"recall@{K} vs exact (BruteForce)"] >= 0.95]
if reached.empty:
    print("no search_k in this list reaches a recall of 0.95 against exact search")
else:
    first = int(reached.iloc[0]["candidates"])
    note = " (search_k counts candidates with repeats across trees)" if first > len(towers.movie_ids) else ""
    print(f"recall against exact search >= 0.95 first at search_k = {first:,}, for a catalogue of "
          f"{len(towers.movie_ids):,} movies{note}")

# %% [markdown]
# Note what neither side does: remove movies the user has already rated. In production you
# ask the index for $k$ plus the number of seen items and filter afterwards, or filter in
# the ranking stage.

# %% [markdown]
# ## 8. Similar movies: item-to-item search
#
# The other use of an index, and the one Annoy was written for at Spotify, needs no user at
# all: "more like this movie". The query is a movie's own vector, and the question is a
# different one from section 7's:
#
# | | user to movie (section 7) | movie to movie (this section) |
# |---|---|---|
# | query | a user vector from the other tower | a movie vector from the same tower |
# | score | inner product, which the model was trained on | cosine: direction only |
# | index | `angular` over augmented vectors + `mips_search` | `angular` over the raw movie vectors |
# | call | `get_nns_by_vector(user_vector + [0])` | `get_nns_by_item(movie)`: the index already stores the vector |
#
# Why cosine here? Two movies are similar when the model places them in the same
# direction, i.e. when the same users like them. Vector length mostly records popularity
# (section 6), and with the inner product every movie's most similar movie would be one of
# the few longest vectors. An angular index ignores length, which is exactly what we want.
#
# One detail: a movie is always its own nearest neighbour (distance 0), so ask for one more
# and drop it. Do not just drop the first answer: with an approximate search the movie
# itself is not guaranteed to come back, and then the first answer is a real neighbour.
#
# The function below does exactly that, with Annoy's `get_nns_by_item`.

# %%
def similar_items(index: AnnoyIndex, item: int, k: int, search_k: int = -1) -> np.ndarray:
    """The ``k`` items of ``index`` closest to its item ``item``, closest first, never
    ``item`` itself (asked for ``k + 1`` and filtered, since an approximate search may leave
    the item out)."""
    found = index.get_nns_by_item(int(item), k + 1, search_k=search_k)
    return np.asarray([i for i in found if i != item][:k], dtype=np.int64)


# %% [markdown]
# An angular index over the raw movie vectors (no augmentation: we want angles), and the
# movies most similar to the most-rated movie of the training data. For contrast, the last
# column ranks by the inner product with that movie's vector instead, as section 7 ranks
# movies for a user.

# %%
similar_index = build_annoy_index(towers.movie_embeddings, metric="angular", n_trees=10, seed=SEED)
position_of = {movie: i for i, movie in enumerate(towers.movie_ids)}
seed_movie = position_of[train["movie_id"].value_counts().index[0]]
genres = movies.set_index("movie_id")["movie_genres"]


def by_inner_product(item: int, k: int) -> list[int]:
    """The k movies with the largest inner product with movie ``item`` (itself excluded)."""
    return [i for i in exact_top_k(towers.movie_embeddings, towers.movie_embeddings[item], k + 1) if i != item][:k]


def describe(i: int) -> str:
    movie = towers.movie_ids[i]
    return f"{titles[movie]} ({', '.join(genres[movie])})"


print("seed movie:", describe(seed_movie), f"- {int(popularity[seed_movie])} training ratings")
pd.DataFrame(
    {
        "similar (cosine, Annoy)": [describe(i) for i in similar_items(similar_index, seed_movie, 5, 1000)],
        "ratings": [int(popularity[i]) for i in similar_items(similar_index, seed_movie, 5, 1000)],
        "largest inner product": [describe(i) for i in by_inner_product(seed_movie, 5)],
        "ratings ": [int(popularity[i]) for i in by_inner_product(seed_movie, 5)],
    },
    index=pd.RangeIndex(1, 6, name="rank"),
)

# %% [markdown]
# Over every movie: how much of the exact cosine top-10 does `get_nns_by_item` find, how
# popular are the neighbours each score picks, and do neighbours share a genre more often
# than random pairs of movies do (a rough check that the vectors mean something)?

# %%
n_movies = len(towers.movie_ids)
exact_similar = [[i for i in exact_top_k(unit_movies, unit_movies[m], K + 1) if i != m][:K] for m in range(n_movies)]
similar_recall = {sk: recall_against_exact([similar_items(similar_index, m, K, sk) for m in range(n_movies)], exact_similar, K)
                  for sk in (-1, 200, 1000)}
print("recall of similar_items against exact cosine search (top 10), by search_k:",
      {sk: round(r, 3) for sk, r in similar_recall.items()})

genre_sets = [set(genres[m]) for m in towers.movie_ids]


def shares_genre(pairs) -> float:
    """Share of (movie, neighbour) pairs that have at least one genre in common."""
    return float(np.mean([bool(genre_sets[a] & genre_sets[b]) for a, b in pairs]))


cosine_pairs = [(m, n) for m in range(n_movies) for n in exact_similar[m]]
dot_neighbours = [by_inner_product(m, K) for m in range(n_movies)]
random_pairs = np.random.default_rng(SEED).integers(0, n_movies, size=(len(cosine_pairs), 2))
random_pairs = [(a, b) for a, b in random_pairs if a != b]
median_cosine = float(np.median([popularity[n] for m in range(n_movies) for n in exact_similar[m]]))
median_dot = float(np.median([popularity[n] for m in range(n_movies) for n in dot_neighbours[m]]))
genre_cosine, genre_random = shares_genre(cosine_pairs), shares_genre(random_pairs)
distinct_dot = len({n for row in dot_neighbours for n in row})
# A share of pairs over many pairs: its standard error is that of a mean of 0/1 values.
genre_flags = {name: np.array([bool(genre_sets[a] & genre_sets[b]) for a, b in pairs])
               for name, pairs in (("cosine", cosine_pairs), ("random", random_pairs))}
genre_gap = claims.compare(genre_flags["cosine"].mean(), genre_flags["random"].mean(),
                           se=float(np.hypot(ev.standard_error(genre_flags["cosine"]),
                                             ev.standard_error(genre_flags["random"]))))
popular_neighbours = claims.compare(median_dot, median_cosine, noise=0.1 * median_cosine, kind="count")
claims.say(
    f"A movie's 10 nearest by cosine have a median of {claims.fmt(median_cosine, 'count')} training ratings; its 10 "
    f"largest inner products, {claims.fmt(median_dot, 'count')}, and only {claims.fmt(distinct_dot)} distinct movies "
    f"appear among all {claims.fmt(n_movies)} movies' inner-product lists. "
    + {"higher": "The inner product pulls every movie towards the same popular, long vectors: right for "
                 "recommending to a user, wrong for \"more like this\". ",
       "about the same": "On this data the inner product does not favour more popular neighbours (medians within "
                         "10 % of each other). ",
       "lower": "On this data the inner product picks less popular neighbours than the cosine. "}[
        popular_neighbours.direction]
    + f"Cosine neighbours share a genre in {claims.fmt(genre_gap.value, 'percent')} of pairs, random pairs in "
    f"{claims.fmt(genre_gap.reference, 'percent')}: "
    + claims.pick(genre_gap.better, "the vectors group movies of similar genres.",
                  "the vectors do not group movies by genre more than chance does here.")
)


# %% [markdown]
# ## 9. Save, memory-map, share
#
# Annoy's distinctive feature is its file format: `save` writes the forest as one flat file,
# and `load` does not read it, it **memory-maps** it (`mmap`). Loading is instant whatever
# the size, pages come from disk only when a query touches them, and every process that maps
# the same file shares one copy in the operating system's page cache. A web service with 16
# worker processes pays for the index's memory once, not 16 times. (`load(path,
# prefault=True)` reads the whole file up front instead, trading start-up time for no
# first-query disk reads; `on_disk_build(path)` builds straight into a file for indexes
# larger than RAM.)

# %%
workdir = Path(tempfile.mkdtemp(prefix="lesson04-"))
index_path = workdir / "movies.ann"
before = [mips_search(movie_index, q, K, 500).tolist() for q in user_vectors]
movie_index.save(str(index_path))  # Annoy re-opens the index from the file after saving
print(f"{index_path.name}: {index_path.stat().st_size / 1e6:.2f} MB "
      f"({movie_index.get_n_items():,} movies, {movie_index.get_n_trees()} trees)")

loaded = AnnoyIndex(movie_index.f, "angular")  # the dimension and metric are not stored in the file
loaded.load(str(index_path), prefault=False)
after = [mips_search(loaded, q, K, 500).tolist() for q in user_vectors]
print("the memory-mapped index answers every user identically:", before == after)

# %% [markdown]
# A second process can map the same file. Here a fresh Python interpreter, with nothing but
# Annoy and the file, answers our user's query; in a serving stack each worker process does
# exactly this at start-up.

# %%
child_code = """
import json, sys
from annoy import AnnoyIndex
path, dim, query = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
index = AnnoyIndex(dim, "angular")
index.load(path)
print(json.dumps(index.get_nns_by_vector(query + [0.0], 10, search_k=500)))
"""
child = subprocess.run(
    [sys.executable, "-c", child_code, str(index_path), str(loaded.f), json.dumps(query.tolist())],
    capture_output=True, text=True, check=True,
)
print("another process gives the same top-10:", json.loads(child.stdout) == before[list(users).index(user)])

# %% [markdown]
# ## 10. At scale: Annoy, its peers, and exact search done fast
#
# With fewer than 10,000 movies, exact search is already fast; ANN pays off on large
# catalogues. We make one with the structure of learned embeddings, generated by
# `recsys_course.ann.sweep.clustered_corpus` (1,000 clusters, each vector a random
# cluster centre plus noise, lengths spread by a log-normal factor as popularity spreads
# them in a trained model; queries come from the same mixture). This page uses 50,000
# items of 32 dimensions to stay quick; the benchmark (`course bench 07`) repeats
# everything on a larger corpus (1,000,000 items by default), and its recorded table
# closes this section.
#
# Timing rules: one query at a time on one thread, as one request of an online service is
# answered (batched exact search is the exception, on purpose); each query set runs twice
# and the faster pass counts, because other programs can only slow a pass down.
# Queries-per-second (QPS) numbers differ from machine to machine and run to run; recall,
# index sizes and the shape of the curves do not.
#
# First, exact search on growing prefixes of the catalogue. Section 1 predicted a cost
# linear in the number of items; the last column, the cost per item, tells whether it is.

# %%
from recsys_course.ann import compare as ann_compare
from recsys_course.ann.sweep import annoy_sweep, best_setting, clustered_corpus, timed_queries

N_ITEMS, N_QUERIES, REPEATS = 50_000, 200, 2
items, queries = clustered_corpus(N_ITEMS, N_QUERIES, dim=32, seed=SEED)
scaling = []
with ann_compare.one_thread():
    for n in (6_250, 12_500, 25_000, 50_000):
        qps, _ = timed_queries(lambda q, n=n: exact_top_k(items[:n], q, K), queries[:100], REPEATS)
        scaling.append({"items": n, "matrix MB": round(items[:n].nbytes / 1e6, 1),
                        "ms per query": round(1000 / qps, 3), "ns per item": round(1e9 / qps / n, 2)})
scaling = pd.DataFrame(scaling)
scaling

# %%
growth = scaling["ms per query"].iloc[-1] / scaling["ms per query"].iloc[0]
per_item = scaling["ns per item"]
claims.say(
    f"8 times more items cost {claims.fmt(growth, 'ratio')} the time per query; the cost per item ranges "
    f"from {claims.fmt(per_item.min())} to {claims.fmt(per_item.max())} ns. "
    + claims.pick(per_item.max() < 1.5 * per_item.min(),
                  "Nearly constant per item: exact search is linear in the catalogue, as predicted.",
                  "Not constant per item here: small catalogues pay a fixed cost per query (the call, "
                  "the sort of the k best), and large ones may outgrow the processor's caches. It still "
                  "grows with the catalogue, which is what hurts.")
)

# %% [markdown]
# ### The contenders, and why each behaves as it does
#
# - **Exact, one query at a time** (`exact_top_k`): reads all $n \times d$ numbers and
#   selects the $k$ best of $n$ scores for every query. Cost linear in $n$, recall 1.
# - **Exact, batched** (`ann_compare.exact_top_k_batched`): stack $B$ queries into a matrix
#   and compute all scores with one matrix product, then `argpartition` each row and sort
#   its $k$ survivors. A matrix-vector product is limited by memory bandwidth (each item
#   vector is used once per read); a matrix product reuses every item vector for $B$
#   queries while it sits in cache, and BLAS runs it on every core. The selection of the $k$
#   best of $n$ scores per query is not shared, so the gain levels off. Offline scoring
#   (recommendations for every user overnight) is this case.
# - **Annoy**: random hyperplanes split the space without looking at where the data is
#   dense, so high recall needs many candidates (`search_k`), each scored exactly with a
#   random memory access. Its forests are larger than the vectors, but one file is
#   memory-mapped and shared by every process.
# - **HNSW** (hierarchical navigable small world graphs, Malkov and Yashunin 2018): every
#   item is linked to about `M` near neighbours, with sparser upper layers for long jumps. A
#   query walks greedily from an entry point towards better neighbours, keeping the best
#   `efSearch` candidates seen. A few hundred distance computations usually suffice, so it is
#   fast at high recall; inserting each item means searching the graph, so building is slow,
#   and the links cost memory. Faiss's `IndexHNSWFlat` searches with the inner product
#   directly.
# - **ScaNN** (Guo et al., 2020): partitions items with k-means, scores the items of the
#   nearest partitions with compressed vectors (anisotropic quantisation, which keeps the
#   error small exactly for the large inner products that decide the top-k, and is scored
#   with SIMD instructions many items at a time), then re-scores a short list exactly.

# %%
faiss_ready = ann_compare.load_faiss() is not None
scann_ready, scann_reason = ann_compare.load_scann()
claims.say(
    claims.pick(faiss_ready, "Faiss is installed: the HNSW rows are measured below. ",
                "Faiss is not installed, so the HNSW rows are skipped. To include them: "
                f"`{ann_compare.HNSW_INSTALL}`, then rerun this section. ")
    + claims.pick(scann_ready is not None, "ScaNN is usable: its rows are measured below. ",
                  f"ScaNN is skipped: {scann_reason} ")
    + claims.pick(ann_compare.single_thread_available(), "",
                  "threadpoolctl is not installed, so NumPy's matrix products may use several threads "
                  "while the indexes use one: install it with `pip install threadpoolctl` for a per-core "
                  "comparison.")
)

# %% [markdown]
# Now every contender on the same items, queries and exact answers (the ground truth comes
# from the single-query exact search). Annoy uses the reduction of section 6 with 10
# trees; HNSW uses `M=16` links per item.

# %%
from types import SimpleNamespace

lesson_functions = SimpleNamespace(  # the exercises of this lesson, as the comparison needs them
    exact_top_k=exact_top_k, augment_for_mips=augment_for_mips, build_annoy_index=build_annoy_index,
    mips_search=mips_search, recall_against_exact=recall_against_exact,
)
table, truth, skipped = ann_compare.compare_libraries(
    items, queries, lesson_functions, k=K, repeats=REPEATS, seed=SEED,
    annoy_trees=(10,), annoy_search_k=(1000, 2000, 5000, 10000),
    hnsw_m=(16,), hnsw_ef=(16, 32, 64, 128), batch_sizes=(1, 16, 200),
)
table.drop(columns=["n_trees", "search_k", "batch_size"], errors="ignore").rename(columns={f"recall@{K}": f"recall@{K} vs exact"})

# %%
fig, ax = plt.subplots(figsize=(8, 5))
ann_compare.plot_pareto(table, ax, k=K, title=f"{N_ITEMS:,} items x 32: recall against speed")
plt.show()

# %% [markdown]
# Up and to the right is better. Build time and memory are the other half of the bill:

# %%
builds = (table.groupby(["library", "build_seconds", "index_mb"], sort=False).size()
          .reset_index(name="settings measured"))
builds["raw vectors, MB"] = round(items.nbytes / 1e6, 1)
builds

# %%
best = pd.DataFrame(ann_compare.best_at_recall(table, 0.95, K)).T.rename(columns={f"recall@{K}": f"recall@{K} vs exact"})
best

# %%
indexes = {name: row for name, row in ann_compare.best_at_recall(table, 0.95, K).items()
           if name in ("annoy", "hnsw", "scann")}
batched = table[table["library"] == "exact_batched"].sort_values("batch_size")
batched_best = batched.sort_values("qps").iloc[-1]
if indexes:
    fastest = max(indexes, key=lambda name: indexes[name]["qps"])
    text = (f"At recall {claims.fmt(0.95)} or more against exact search, the fastest index here is {fastest} "
            f"({indexes[fastest]['setting']}): {claims.fmt(indexes[fastest]['qps'], 'count')} queries/s, "
            f"{claims.fmt(indexes[fastest]['speedup_vs_exact_single'], 'ratio')} exact search one query at a time. ")
else:
    text = f"No index reaches recall {claims.fmt(0.95)} against exact search in this grid. "
text += (f"Batched exact search peaks at {claims.fmt(batched_best['qps'], 'count')} queries/s "
         f"({batched_best['setting']}), {claims.fmt(batched_best['speedup'], 'ratio')} the single-query baseline, "
         "with recall 1. ")
if "annoy" in indexes:
    annoy_qps = indexes["annoy"]["qps"]
    # Timings carry no standard error here: a difference within 10 % counts as "about the same".
    verdicts = {int(row["batch_size"]): claims.compare(row["qps"], annoy_qps, noise=0.1 * annoy_qps)
                for _, row in batched.iterrows()}
    groups = {word: [str(b) for b, c in verdicts.items() if c.direction == word]
              for word in ("higher", "about the same", "lower")}
    parts = [f"{label} at batch sizes {', '.join(groups[word])}" for word, label in
             (("higher", "more"), ("about the same", "about as many"), ("lower", "fewer")) if groups[word]]
    text += (f"Against Annoy's fastest setting at recall {claims.fmt(0.95)} ({claims.fmt(annoy_qps, 'count')} "
             "queries/s), batched exact search answers " + "; ".join(parts) + " (within 10 % counts as about "
             "the same: these are single timings on a shared machine).")
claims.say(text)

# %% [markdown]
# ### The benchmark on a larger corpus
#
# The same comparison at a larger size, recorded from one run of `course bench 07` (its size
# is in the caption): for each library, the fastest setting that reaches a recall of 0.95
# against exact search (top 10), with its build time and size.

# %%
recorded = ann_compare.recorded_benchmark()
if recorded is None:
    print("No recorded benchmark in this copy of the course: run `course bench 07` to make one.")
    recorded_table = pd.DataFrame()
else:
    claims.say(recorded["caption"])
    recorded_table = recorded["best"].rename(columns={"recall@10": "recall@10 vs exact"})
recorded_table

# %% [markdown]
# ## 11. Annoy's `dot` metric against the explicit reduction
#
# Annoy also offers `metric="dot"`, which builds MIPS support into the index (its source
# cites the same Bachrach et al. reduction). In 2022, spotify/annoy issue 619 reported very
# low recall for `dot` on the last.fm embeddings of ann-benchmarks, where an `angular`
# index with the extra coordinate added by hand did much better; a change to how `dot`
# computes its splits was merged in 2023 (pull request 628). Rather than trusting either
# report, we measure the installed version on the same items, queries, trees and
# `search_k`.

# %%
dot_sweep = annoy_sweep(
    items, queries, truth,
    build_index=build_annoy_index,
    search=lambda index, q, k, search_k: index.get_nns_by_vector(q, k, search_k=search_k),
    recall_at_k=recall_against_exact, n_trees_grid=(10,), search_k_grid=(1000, 2000, 5000, 10000),
    metric="dot", k=K, repeats=REPEATS, seed=SEED,
)
reduction = table[(table["library"] == "annoy") & (table["n_trees"] == 10)].astype({"search_k": int})
compare = pd.DataFrame(
    {
        "reduction: recall vs exact": reduction.set_index("search_k")[f"recall@{K}"],
        "dot: recall vs exact": dot_sweep.set_index("search_k")[f"recall@{K}"],
        "reduction: QPS": reduction.set_index("search_k")["qps"],
        "dot: QPS": dot_sweep.set_index("search_k")["qps"],
    }
)
from importlib.metadata import version

print(f"annoy {version('annoy')}, n_trees=10, same items, queries and exact answers")
compare

# %% [markdown]
# The two indexes need not do the same work for the same `search_k`, so the fair comparison
# is the whole recall / speed curve: a setting is better when it is at least as accurate
# *and* at least as fast. These are single timed runs without a standard error, so "at
# least as" allows a stated tolerance: 10 % for speed, 0.01 for recall.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, rows in (("angular + extra coordinate", reduction), ("Annoy's dot metric", dot_sweep)):
    ax.plot(rows[f"recall@{K}"], rows["qps"], marker="o", label=name)
ax.set(yscale="log", xlabel=f"recall@{K} against exact search", ylabel="queries per second (log)",
       title="Inner-product search, n_trees=10: two ways")
ax.legend()
plt.show()


SPEED_NOISE, RECALL_NOISE = 0.1, 0.01  # stated tolerances of single runs: relative for speed, absolute for recall


def dominated(point: pd.Series, others: pd.DataFrame) -> bool:
    """True when some row of ``others`` is at least as accurate and at least as fast as ``point``,
    within ``RECALL_NOISE`` and ``SPEED_NOISE``."""
    return bool(((others[f"recall@{K}"] >= point[f"recall@{K}"] - RECALL_NOISE)
                 & (others["qps"] >= (1 - SPEED_NOISE) * point["qps"])).any())


dot_beaten = sum(dominated(row, reduction) for _, row in dot_sweep.iterrows())
reduction_beaten = sum(dominated(row, dot_sweep) for _, row in reduction.iterrows())
print(f"within the tolerances, {dot_beaten} of {len(dot_sweep)} dot settings are matched or beaten by a "
      f"reduction setting; {reduction_beaten} of {len(reduction)} reduction settings by a dot setting")
for target in (0.9, 0.95):
    for name, rows in (("reduction", reduction), ("dot", dot_sweep)):
        best = best_setting(rows, target, K)
        print(f"  recall >= {target} with {name}: " + (
            "not reached" if best is None else f"{best['qps']:,.0f} queries/s at search_k={best['search_k']}"))

# %%
both = compare.dropna()
# The stated tolerances, as these single runs have no standard error.
dot_faster = sum(claims.compare(d, r, noise=SPEED_NOISE * r).direction == "higher"
                 for d, r in zip(both["dot: QPS"], both["reduction: QPS"]))
dot_more_recall = sum(claims.compare(d, r, noise=RECALL_NOISE).direction == "higher"
                      for d, r in zip(both["dot: recall vs exact"], both["reduction: recall vs exact"]))
claims.say(
    f"What to take from it. With annoy {version('annoy')} on these embeddings, `dot` answers more than "
    f"{claims.fmt(SPEED_NOISE, 'percent')} faster than the reduction at {dot_faster} of {len(both)} `search_k` values "
    f"and finds more of the exact top-{K} (by more than {claims.fmt(RECALL_NOISE, 'setting')}) at {dot_more_recall} "
    f"of {len(both)}; {dot_beaten} of its {len(dot_sweep)} settings are matched or beaten on both counts (within "
    f"those tolerances) by a reduction setting, and {reduction_beaten} of the reduction's by a `dot` setting. "
    + claims.pick(dot_beaten > reduction_beaten,
                  "Along the recall / speed curve the explicit reduction is the better choice here, which "
                  "is why this lesson builds its movie index with it.",
                  "Here the `dot` metric holds its own against the reduction; this lesson keeps the "
                  "reduction because it works with any angular or Euclidean index, not only Annoy's.")
)

# %% [markdown]
# The general lesson is the method: an index's recall depends on the data, the metric and
# the library version, so **measure recall against exact search on your own embeddings**
# before choosing, and measure again when you upgrade.
#
# There is a third option, wrong rather than slow: an `angular` index on the raw vectors.
# It answers "most similar direction", and section 6 showed how little of the dot-product
# top-10 that contains when vector lengths carry popularity.

# %% [markdown]
# ## 12. Where Annoy lives in a serving stack
#
# Annoy is not a TensorFlow op, so it cannot travel inside a SavedModel. The query tower is
# served as a model (TensorFlow Serving, lesson 08); the index sits beside it, in the
# application that handles the request:
#
# ```mermaid
# flowchart LR
#     R["request<br/>user id"] --> Q["query tower<br/>(TF Serving)"]
#     Q -->|"user vector, 32 floats"| A["application<br/>appends 0, queries Annoy<br/>(index file mmapped)"]
#     A -->|"~100-500 candidate ids"| K["ranking model<br/>(TF Serving)"]
#     K --> P["top 10 for the page"]
#     T["training job"] -->|"movie tower over the catalogue,<br/>augment, build, save"| F[("movies.ann<br/>+ id map, M")]
#     F -.->|"load (mmap) at start-up<br/>or on a new version"| A
# ```
#
# Consequences worth designing for:
#
# - **Versioning.** User vectors from model version 7 mean nothing in an index built from
#   version 6's movie vectors. Ship the index file, the position-to-id map and $M$ with the
#   model version, and switch them together.
# - **Rebuild, don't update.** Annoy indexes are immutable; a new catalogue or model means a
#   new file, built offline, then swapped in (load the new file, switch a reference, unload
#   the old one).
# - **Filtering** (already seen, out of stock, not licensed in this country) happens after
#   the index returns candidates, so ask for more than you need.
# - The alternative that keeps everything in the graph is TFRS's `BruteForce` (or `ScaNN`)
#   layer inside the exported model: simpler to deploy, and exact (or ScaNN-approximate).

# %% [markdown]
# ## 13. When another index serves better
#
# Annoy is simple, dependable and memory-mapped, but it cannot grow an index
# incrementally, and section 10 measured where it stands against a graph index and against
# exact search. The ANN-Benchmarks project (Aumüller, Bernhardsson and Faithfull, 2020)
# compares dozens of libraries on the same data sets; graph-based and quantisation-based
# methods usually lead at high recall there.
#
# | need | consider | why |
# |---|---|---|
# | read-only index shared by many processes, small dependency, up to a few million items of modest dimension | **Annoy** | one mmapped file, instant load, predictable |
# | best recall per query-second on CPU, items added over time | **HNSW** (`hnswlib`, also inside Faiss) | navigable small-world graph (Malkov and Yashunin, 2018); supports inserts; more memory per item |
# | inner-product search as the native problem, inside TensorFlow | **ScaNN** (`tfrs.layers.factorized_top_k.ScaNN`) | anisotropic quantisation tuned for MIPS (Guo et al., 2020); exported inside the SavedModel, but stock TF Serving lacks its custom ops (Google publishes TF Serving images built with them) |
# | hundreds of millions to billions of vectors, GPUs, compression | **Faiss** | IVF partitions with product quantisation, GPU kernels (Johnson, Douze and Jégou, 2019) |
# | filtering by attributes, replication, updates as a service | a vector database (built on the ideas above) | operations, not algorithms, are the hard part at that point |
#
# **A rule of thumb**, to be confirmed by measuring on your own vectors:
#
# 1. Scoring many queries at once (offline recommendations, evaluation)? Use exact search
#    with a matrix product, batched: recall 1, no index to build or ship.
# 2. Up to about a hundred thousand items online? Measure exact search one query at a time
#    first: if it fits the latency budget, an index is not worth its build, memory and
#    recall loss.
# 3. Online, larger, read-only, many worker processes? Annoy: one memory-mapped file shared
#    by all, simple to build and ship, at a moderate recall / speed.
# 4. Online, larger, and you need high recall at high speed, or inserts? HNSW, if the
#    memory for its links and its slow build are acceptable.
# 5. Inner-product search on very large catalogues, or memory is tight? Quantisation:
#    ScaNN (when its build matches your TensorFlow) or Faiss IVF-PQ.
#
# Whatever you choose, the method of this lesson carries over: exact search as ground truth,
# recall against exact search next to queries per second, build time and memory, measured in
# the same run.

# %%
loaded.unload()
movie_index.unload()
similar_index.unload()
shutil.rmtree(workdir, ignore_errors=True)  # remove this lesson's index files

# %% [markdown]
# ## Summary
#
# - Exact top-k reads every item vector for every request: linear in the catalogue, and too
#   slow online for millions of items. ANN indexes trade a little **recall** for speed.
# - **Annoy** builds a forest of random-projection trees (split by the hyperplane between
#   two sampled points, recursively). `n_trees` (build time) buys better candidates at the
#   cost of build time and index size; `search_k` (query time) buys recall at the cost of
#   latency.
# - Two-tower models score with the **inner product**; an angular index answers it exactly
#   after appending $\sqrt{M^2 - \lVert x \rVert^2}$ to every item and $0$ to the query.
#   Annoy's own `dot` metric is the alternative; measure the two on your embeddings.
# - For "more like this", search by angle (`get_nns_by_item` on an `angular` index over the
#   raw vectors) and leave the item itself out: lengths carry popularity, not similarity.
# - Indexes are **files**: save once, memory-map in every process, ship them with the model
#   version whose towers produced them. Annoy lives beside TensorFlow Serving, not inside it.
# - Judge any index by its recall against exact search (not the recall@k of lessons 02 and
#   03, which asks whether users' test movies are found), queries per second, build time and
#   size, measured together, against exact search both one query at a time and batched:
#   batched exact search is hard to beat offline, graph indexes (HNSW) usually lead online
#   at high recall, and Annoy trades some speed for a simple, shared, memory-mapped file.
#
# ## Further reading
#
# - Annoy: <https://github.com/spotify/annoy> (README: "Tradeoffs" and "How does it work").
#   Erik Bernhardsson, *Nearest neighbors and vector models, part 2: algorithms and data
#   structures*, blog post at <https://erikbern.com>, 1 October 2015 (the trees, the
#   priority queue and the forest, with figures).
# - Yoram Bachrach et al. *Speeding up the Xbox recommender system using a Euclidean
#   transformation for inner-product spaces.* RecSys 2014.
#   <https://doi.org/10.1145/2645710.2645741>
# - Anshumali Shrivastava and Ping Li. *Asymmetric LSH (ALSH) for sublinear time maximum
#   inner product search.* NeurIPS 2014.
# - spotify/annoy issue 619, *Dot index recall issue on last.fm dataset*:
#   <https://github.com/spotify/annoy/issues/619>
# - Martin Aumüller, Erik Bernhardsson, Alexander Faithfull. *ANN-Benchmarks: A
#   benchmarking tool for approximate nearest neighbor algorithms.* Information Systems 87,
#   2020. <https://ann-benchmarks.com>
# - Ruiqi Guo et al. *Accelerating large-scale inference with anisotropic vector
#   quantization* (ScaNN). ICML 2020.
# - Yu. A. Malkov and D. A. Yashunin. *Efficient and robust approximate nearest neighbor
#   search using Hierarchical Navigable Small World graphs.* IEEE TPAMI, 2018.
# - Jeff Johnson, Matthijs Douze, Hervé Jégou. *Billion-scale similarity search with GPUs*
#   (Faiss). IEEE Transactions on Big Data, 2019.
# - TFRS efficient serving guide (ScaNN in TFRS):
#   <https://www.tensorflow.org/recommenders/examples/efficient_serving>
#
# Next: lesson 08 serves the query tower with TensorFlow Serving and places this index
# beside it.
