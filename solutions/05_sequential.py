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
# # Lesson 05 · Sequential recommendation: order, time and the recency baselines
#
# **You will learn to**
#
# - explain why the *order* of a user's ratings and the *moment* of a request carry
#   information that a bag of movies loses, and why a random split lets a model see the
#   future;
# - evaluate on a **global time split** with rolling cutoffs: train on everything before a
#   moment, test each user on what they watched next, and pool the user-cutoff pairs into
#   means with standard errors;
# - build the baselines that know about time (popularity over a recent window, a Markov
#   chain on the last movie) and measure them against the static ones of lesson 03
#   (EASE, the bag-of-history tower);
# - turn ordered histories into next-item training examples without leaking the future,
#   and train two query towers over them with Keras layers: the GRU of the TensorFlow
#   Recommenders sequential-retrieval tutorial and a causal self-attention tower
#   (SASRec), each a `tfrs.Model` with a full softmax over the catalogue;
# - add two time features, how recently a movie was popular and how long ago the user last
#   rated, and read a comparison that says which differences are inside the noise.
#
# **Runtime:** measured each time the course site is built, and shown at the top of this
# lesson's page and in the site's lesson table, with the data it was measured on. Every
# cutoff retrains every model, so the models are small and their settings were chosen when
# the lesson was written (the text says how); only the number of epochs and one setting
# per baseline are chosen here, on validation.
#
# **How to work through it:** run the cells top to bottom (`python lessons/05_sequential.py`
# runs them all). The four exercises are functions whose body raises
# `NotImplementedError`; implement them, check with `course check 5.1` (or `course check 05`),
# and ask `course hint 5.1` when stuck.

# %% tags=["setup"]
# recsys_course first: it sets TF_USE_LEGACY_KERAS=1 before anything imports TensorFlow.
import recsys_course

# isort: split
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recsys_course import claims, evaluation as ev

SEED = recsys_course.seed_everything(42)
K = 10  # the length of every recommended list
QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.9)  # the test cutoffs, as quantiles of the rating times
MIN_HISTORY, HORIZON = 5, 10  # a test user has 5 ratings before a cutoff; we test their next 10
VALIDATION_QUANTILE = 0.9  # each cutoff's validation split cuts its training data here
DAY = 86_400  # seconds

# %% [markdown]
# ## 1. A history is a sequence, and the catalogue moves
#
# Lesson 03 reads a user's history as a *set* of movies: EASE multiplies a 0/1 row by
# a matrix, the history tower sums one vector per movie. Two things are lost.
#
# - **Order.** People rate in sessions, and what they rate next depends on what they just
#   rated: the next film of a series, another film of the director they are exploring.
#   A set cannot say which of a user's movies was the last.
# - **Time.** The catalogue moves: films come out, are watched by many for a few weeks and
#   fade. What was popular over the last weeks says more about tomorrow than what was
#   popular over five years.
#
# Let us look at both in the data.

# %%
data = recsys_course.load_movielens()
ratings, movies = data.ratings, data.movies
movie_ids = sorted(movies["movie_id"].astype(str))
title_of = movies.set_index("movie_id")["movie_title"]
print("Dataset:", data.summary())

by_user = ratings.sort_values(["user_id", "timestamp"], kind="stable")
same_user = by_user["user_id"].to_numpy()[1:] == by_user["user_id"].to_numpy()[:-1]
gaps = np.diff(by_user["timestamp"].to_numpy())[same_user]
span_days = by_user.groupby("user_id")["timestamp"].agg(lambda t: (t.max() - t.min()) / DAY)
pd.DataFrame({
    "what": ["ratings per user (median)", "next rating of the same user within a minute",
             "within an hour", "more than a week later", "users active on a single day"],
    "value": [claims.fmt(int(by_user.groupby("user_id").size().median())),
              claims.fmt((gaps < 60).mean(), "percent"), claims.fmt((gaps < 3600).mean(), "percent"),
              claims.fmt((gaps > 7 * DAY).mean(), "percent"), claims.fmt((span_days < 1).mean(), "percent")],
})

# %% [markdown]
# Most ratings come in bursts: a user sits down and rates dozens of movies, comes back weeks
# later, rates a few more. The next plot shows the other half of the story. For every week,
# it asks how many of that week's ratings went to the 20 movies most rated *over the 30 days
# before the week*, and how many to the 20 movies most rated *over all the time before it*.

# %%
def top_share(frame: pd.DataFrame, week_starts: np.ndarray, lookback: int | None, n: int = 20) -> np.ndarray:
    """Share of each week's ratings that go to the ``n`` movies most rated in the
    ``lookback`` seconds before the week (all earlier ratings when ``lookback`` is None)."""
    times, movie = frame["timestamp"].to_numpy(), frame["movie_id"].astype(str).to_numpy()
    shares = []
    for start in week_starts:
        before = (times < start) & (times >= (start - lookback if lookback else times.min()))
        week = (times >= start) & (times < start + 7 * DAY)
        top = pd.Series(movie[before]).value_counts().index[:n]
        shares.append(np.isin(movie[week], top).mean() if week.any() and before.any() else np.nan)
    return np.array(shares)


first, last = ratings["timestamp"].min(), ratings["timestamp"].max()
week_starts = np.arange(first + 30 * DAY, last - 7 * DAY, 7 * DAY)
recent_top = top_share(ratings, week_starts, 30 * DAY)
all_time_top = top_share(ratings, week_starts, None)
weeks = pd.to_datetime(week_starts, unit="s")
cutoff_times = [ev.global_time_split(ratings, quantile=q).cutoff for q in QUANTILES]

fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
counts = pd.Series(1, index=pd.to_datetime(ratings["timestamp"], unit="s")).resample("W").sum()
top.bar(counts.index, counts.to_numpy(), width=6, color="tab:gray")
top.set(title="Ratings per week, and the five test cutoffs of section 2", ylabel="ratings")
bottom.plot(weeks, recent_top, label="20 most rated over the previous 30 days")
bottom.plot(weeks, all_time_top, label="20 most rated over all earlier time")
bottom.set(title="Share of a week's ratings that go to yesterday's top 20", ylabel="share of the week's ratings")
for axes in (top, bottom):
    for cutoff in cutoff_times:
        axes.axvline(pd.to_datetime(cutoff, unit="s"), color="tab:red", linewidth=0.8, linestyle=":")
bottom.legend()
fig.tight_layout()
plt.show()

# %%
late = (weeks >= pd.to_datetime(cutoff_times[0], unit="s")) & ~np.isnan(recent_top) & ~np.isnan(all_time_top)
weekly = claims.compare(recent_top[late].mean(), all_time_top[late].mean(), kind="percent",
                        se=ev.paired_standard_error(recent_top[late], all_time_top[late]))
claims.say(
    f"Over the {claims.fmt(int(late.sum()))} weeks from the first test cutoff on, the recent top 20 receive "
    f"{claims.fmt(weekly.value, 'percent')} of a week's ratings on average, the all-time top 20 "
    f"{claims.fmt(weekly.reference, 'percent')} (twice the standard error of the weekly differences is "
    f"{claims.fmt(weekly.noise, 'percent')}): "
    + weekly.word("**what was popular lately predicts the next week better than what was popular overall.**",
                  "on this data the all-time favourites predict the next week better than the recent ones.",
                  "on this data the two are indistinguishable.")
)

# %% [markdown]
# ## 2. Evaluating as in production: the global time split
#
# A recommender in production is trained on everything that happened up to some moment and
# then serves requests *after* it. An offline evaluation should ask the same question.
#
# - A **random split** (the TFRS tutorials' 80/20, lesson 02) draws test ratings from the
#   whole timeline. Training then holds ratings made *after* many test ratings, by the same
#   user and by everyone else: the model has seen which films were about to become popular.
# - A **per-user holdout** (`ev.leave_last_k`, lesson 03) tests each user on their latest
#   ratings, which fixes the first leak but not the second: other users' later ratings still
#   train (Ji et al. 2023 show how much this flatters models).
# - A **global time split** (`ev.global_time_split`) picks one moment, the *cutoff*. Every
#   rating before it trains; each user with at least `MIN_HISTORY` ratings before it is
#   tested on their first `HORIZON` ratings after it; nothing after the cutoff is ever seen.
#
# The table counts, for each protocol, the test ratings that training already "knows the
# future of".

# %%
def future_in_training(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Shares of test ratings older than some training rating: of the same user, of anyone."""
    newest_own = train.groupby("user_id")["timestamp"].max()
    own = test["timestamp"].to_numpy() < test["user_id"].map(newest_own).fillna(-np.inf).to_numpy()
    anyone = test["timestamp"].to_numpy() < train["timestamp"].max()
    return {"older than a training rating of the same user": claims.fmt(own.mean(), "percent"),
            "older than some training rating": claims.fmt(anyone.mean(), "percent")}


last_split = ev.global_time_split(ratings, quantile=QUANTILES[-1], min_history=MIN_HISTORY, horizon=HORIZON)
random_train, random_test = ev.random_split(ratings, test_fraction=0.2, seed=SEED)
holdout_train, holdout_test = ev.leave_last_k(ratings, HORIZON)
pd.DataFrame({
    "random 80/20": future_in_training(random_train, random_test),
    f"each user's last {HORIZON}": future_in_training(holdout_train, holdout_test),
    f"global time split at quantile {QUANTILES[-1]}": future_in_training(last_split.train, last_split.test),
}).T.rename_axis("protocol")

# %% [markdown]
# ### Rolling cutoffs
#
# One cutoff tests only the users who happen to come back right after it, and MovieLens
# users rate in bursts: too few to tell models apart (the count is below the table). So we
# **roll the cutoff**: one global time
# split at each of the quantiles 0.5, 0.6, 0.7, 0.8 and 0.9 of the rating times
# (`ev.rolling_time_splits`), each model retrained at each cutoff, and the **user-cutoff
# pairs** pooled. A user tested at two cutoffs counts twice, with different histories and
# different next movies. Every mean below comes with its standard error over these pairs,
# and a difference between two models with the standard error of the *paired* differences
# (`ev.paired_standard_error`): both models are measured on the same pairs, so the pairs'
# own difficulty cancels out.

# %%
splits = ev.rolling_time_splits(ratings, QUANTILES, min_history=MIN_HISTORY, horizon=HORIZON)
cutoff_table = pd.DataFrame([{
    "quantile": split.quantile,
    "cutoff": pd.to_datetime(split.cutoff, unit="s").strftime("%Y-%m-%d"),
    "training ratings": len(split.train),
    "test users": len(split.test_users),
    "test ratings": len(split.test),
} for split in splits])
n_pairs = int(cutoff_table["test users"].sum())
claims.say(f"The split at quantile {QUANTILES[-1]} tests {claims.fmt(len(last_split.test_users))} users; "
           f"the five cutoffs together give **{claims.fmt(n_pairs)} user-cutoff pairs**.")
cutoff_table

# %% [markdown]
# ### Validation without the future either
#
# Every choice a model makes (how many epochs, which window, which penalty) is made on a
# **validation split cut the same way inside its training data**: the global time split at
# quantile 0.9 of the ratings before the cutoff. Its test users are tested on their next
# ratings *before* the cutoff, so no choice ever looks past it.
#
# ```mermaid
# flowchart LR
#     A["ratings before the validation cutoff<br/>(fit)"] --> B["validation users' next ratings<br/>(choose)"] --> C["cutoff"] --> D["test users' next ratings<br/>(report)"]
# ```
#
# Then every model is **refitted on all the ratings before the cutoff** with the chosen
# setting: the count baselines and EASE with their window or penalty, the neural models
# trained again from the same starting point and seed for the chosen number of epochs
# (`models.training.keep_best_epochs` does it for every neural model of the course). The
# choice never sees the test period, and no model misses the weeks just before the cutoff,
# the weeks recent popularity lives on.

# %% tags=["setup"]
def validation_split(train: pd.DataFrame) -> ev.TimeSplit:
    """The validation split of one cutoff: the same global time split, inside ``train``."""
    return ev.global_time_split(train, quantile=VALIDATION_QUANTILE, min_history=MIN_HISTORY, horizon=HORIZON)


def validation_recall(split: ev.TimeSplit, scores: np.ndarray, users: list[str], movie_ids: list[str]) -> float:
    """Masked recall@K of ``scores`` (one row per user of ``users``) on ``split``'s test ratings."""
    seen = ev.interaction_matrix(split.train, users, movie_ids)
    relevant = ev.interaction_matrix(split.test, users, movie_ids)
    return ev.recall_at_k(ev.top_k(scores, K, exclude=seen), relevant, K)


# %% [markdown]
# ### Exercise 5.1 · Evaluating on rolling global time splits
#
# Implement `evaluate_cutoffs(ratings, quantiles, recommend, movie_ids)`: for each quantile,
# the shared split `ev.global_time_split` (or `ev.rolling_time_splits` for all of them);
# call the recommender with that split's training ratings *only*; rank the whole catalogue for
# each test user with the movies they rated before the cutoff excluded (`ev.top_k`); and
# return one row per user-cutoff pair with recall@k and NDCG@k (`ev.recall_by_user`,
# `ev.ndcg_by_user`). Every model of this lesson is measured by your function.

# %% tags=["exercise"] exercise="5.1"
def evaluate_cutoffs(ratings: pd.DataFrame, quantiles, recommend, movie_ids: list[str], *, k: int = K,
                     min_history: int = MIN_HISTORY, horizon: int = HORIZON) -> pd.DataFrame:
    """Measure a recommender on rolling global time splits, one row per user-cutoff pair.

    Args:
        ratings: every rating, with ``user_id``, ``movie_id`` and ``timestamp``.
        quantiles: one cutoff per quantile of the rating times, e.g. ``(0.5, 0.6, 0.7)``;
            each is split with ``ev.global_time_split(ratings, quantile=q,
            min_history=min_history, horizon=horizon)``.
        recommend: a function ``(train, users, cutoff) -> scores``, called once per cutoff
            with the ratings before the cutoff (the split's ``train``), the test users (a
            sorted list of ids) and the cutoff time; returns ``float [len(users),
            len(movie_ids)]``, higher is better, columns in ``movie_ids`` order.
        movie_ids: the catalogue.
        k: the length of each list.

    Returns:
        A DataFrame with columns ``cutoff``, ``user_id``, ``recall@{k}`` and ``ndcg@{k}``:
        one row per test user of each split, splits in the order of ``quantiles`` and users
        sorted. Each list ranks the whole catalogue except the movies the user rated before
        the cutoff; the relevant movies are the user's test ratings of that split.
    """
    # BEGIN SOLUTION
    rows = []
    for split in ev.rolling_time_splits(ratings, tuple(quantiles), min_history=min_history, horizon=horizon):
        users = sorted(split.test_users)
        scores = recommend(split.train, users, split.cutoff)
        seen = ev.interaction_matrix(split.train, users, movie_ids)
        relevant = ev.interaction_matrix(split.test, users, movie_ids)
        ranked = ev.top_k(scores, k, exclude=seen)
        rows.append(pd.DataFrame({
            "cutoff": split.cutoff,
            "user_id": users,
            f"recall@{k}": ev.recall_by_user(ranked, relevant, k),
            f"ndcg@{k}": ev.ndcg_by_user(ranked, relevant, k),
        }))
    return pd.concat(rows, ignore_index=True)
    # END SOLUTION


# %% [markdown]
# ## 3. Baselines that know about time
#
# The first baseline is lesson 00's: the movies most rated before the cutoff, for everybody.
# The results of every model are collected in `results`, one frame of user-cutoff pairs per
# model, and summarised by `summary` (mean and standard error over the pairs).

# %% tags=["setup"]
def popularity_recommender(movie_ids: list[str]):
    """Everybody gets the movies most rated before the cutoff."""

    def recommend(train: pd.DataFrame, users: list[str], cutoff: int) -> np.ndarray:
        counts = train["movie_id"].astype(str).value_counts().reindex(movie_ids, fill_value=0)
        return np.tile(counts.to_numpy(dtype=np.float64), (len(users), 1))

    return recommend


def summary(results: dict[str, pd.DataFrame], reference: str | None = None) -> pd.DataFrame:
    """recall@K and NDCG@K of each model (mean and standard error over user-cutoff pairs);
    with ``reference``, the paired difference in recall@K to that model and its standard error."""
    rows = []
    for name, frame in results.items():
        recall, ndcg = frame[f"recall@{K}"].to_numpy(), frame[f"ndcg@{K}"].to_numpy()
        row = {"model": name, f"recall@{K}": recall.mean(), "± se": ev.standard_error(recall),
               f"ndcg@{K}": ndcg.mean(), "± se ": ev.standard_error(ndcg), "pairs": len(frame)}
        if reference is not None:
            base = results[reference][f"recall@{K}"].to_numpy()
            row[f"recall@{K} − {reference}"] = recall.mean() - base.mean()
            row["± paired se"] = ev.paired_standard_error(recall, base)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


# %%
results = {}
started = time.perf_counter()
results["popularity"] = evaluate_cutoffs(ratings, QUANTILES, popularity_recommender(movie_ids), movie_ids)
print(f"evaluated in {time.perf_counter() - started:.1f} s")
results["popularity"].head()

# %% [markdown]
# ### Popularity over a recent window
#
# The plot of section 1 suggests the obvious improvement: count only the ratings of the
# last days before the cutoff. The window is a hyper-parameter, chosen per cutoff on its
# validation split from a grid that spans a week to a year.
#
# ### Exercise 5.2 · Popularity over a recent window
#
# Implement `recent_popularity(ratings, movie_ids, now, window)`: for each movie of the
# catalogue, its number of ratings in the `window` seconds before `now`. Ratings at or after
# `now` have not happened yet, even if the frame holds them.

# %% tags=["exercise"] exercise="5.2"
def recent_popularity(ratings: pd.DataFrame, movie_ids: list[str], now: int, window: int) -> np.ndarray:
    """Each movie's number of ratings over a recent window.

    Args:
        ratings: ratings with ``movie_id`` and ``timestamp`` (seconds); may hold ratings
            after ``now``, which must not count.
        movie_ids: the catalogue, in the order of the result.
        now: the moment of the recommendation (a timestamp).
        window: the window's length in seconds.

    Returns:
        ``float64 [len(movie_ids)]``: the number of ratings of each movie with
        ``now - window <= timestamp < now``; 0 for a movie without one. Ratings of movies
        outside ``movie_ids`` are ignored.
    """
    # BEGIN SOLUTION
    times = ratings["timestamp"]
    recent = ratings[(times >= now - window) & (times < now)]
    counts = recent["movie_id"].astype(str).value_counts()
    return counts.reindex([str(m) for m in movie_ids], fill_value=0).to_numpy(dtype=np.float64)
    # END SOLUTION


# %% tags=["setup"]
WINDOW_DAYS = (7, 14, 30, 60, 120, 365)  # the recent-popularity windows to choose from


class RecentPopularity:
    """Popularity over the last ``window`` days before the cutoff, the window chosen on each
    cutoff's validation split from ``WINDOW_DAYS``; ``chosen`` records the choices."""

    def __init__(self, movie_ids: list[str]):
        self.movie_ids = movie_ids
        self.chosen: list[dict] = []

    def __call__(self, train: pd.DataFrame, users: list[str], cutoff: int) -> np.ndarray:
        validation = validation_split(train)
        v_users = sorted(validation.test_users)
        grid = {days: validation_recall(validation, np.tile(recent_popularity(
                    validation.train, self.movie_ids, validation.cutoff, days * DAY), (len(v_users), 1)),
                    v_users, self.movie_ids)
                for days in WINDOW_DAYS}
        days = max(grid, key=grid.get)
        self.chosen.append({"cutoff": cutoff, "window (days)": days, "validation recall@10": grid[days]})
        return np.tile(recent_popularity(train, self.movie_ids, cutoff, days * DAY), (len(users), 1))


# %%
recent = RecentPopularity(movie_ids)
results["recent popularity"] = evaluate_cutoffs(ratings, QUANTILES, recent, movie_ids)
pd.DataFrame(recent.chosen).assign(cutoff=lambda f: pd.to_datetime(f["cutoff"], unit="s").dt.date)

# %% [markdown]
# ### A Markov chain on the last movie
#
# The simplest model of *order*: count how often each movie came right after each other
# movie in anyone's history before the cutoff, and recommend what most often followed the
# user's latest movie (`models.sequential.markov_scores`, a first-order Markov chain; movies
# that never followed it are ordered by popularity). From here on the lesson needs
# TensorFlow: importing `recsys_course.models` loads it.

# %% tags=["setup"]
import tensorflow as tf

from recsys_course import baselines, models
from recsys_course.models import sequential

SEED = recsys_course.seed_everything(42)  # again, now that TensorFlow is imported


def markov_recommender(movie_ids: list[str]):
    """What most often followed the user's latest movie before the cutoff."""

    def recommend(train: pd.DataFrame, users: list[str], cutoff: int) -> np.ndarray:
        return sequential.markov_scores(train, users, movie_ids, last=1)

    return recommend


# %%
results["Markov chain (last movie)"] = evaluate_cutoffs(ratings, QUANTILES, markov_recommender(movie_ids), movie_ids)
summary(results).round(4)

# %% [markdown]
# ### The static models: EASE and the bag-of-history tower
#
# Two models from lesson 03 that read the history as a set: EASE (its penalty chosen on
# validation from a grid, `recsys_course.baselines.ease_weights`) and the two-tower model
# whose query is a bag of the user's movies (`models.train_history_model`, lesson 03's
# dot-product configuration, with smaller vectors since it retrains at every cutoff
# (`HISTORY_TOWER`), its epoch chosen on validation). Both choose on each cutoff's
# validation split and are then refitted on everything before the cutoff, the tower queried
# with each test user's whole history up to it.

# %% tags=["setup"]
EASE_GRID = (100.0, 300.0, 1000.0)  # EASE penalties to choose from
HISTORY_TOWER = {"embedding_dim": 128, "l2": 1e-4, "learning_rate": 3e-3, "max_epochs": 30}


class EaseRecommender:
    """EASE on the 0/1 matrix of the ratings before the cutoff, its penalty chosen on the
    cutoff's validation split from ``EASE_GRID``."""

    def __init__(self, movie_ids: list[str]):
        self.movie_ids = movie_ids
        self.chosen: list[dict] = []

    def __call__(self, train: pd.DataFrame, users: list[str], cutoff: int) -> np.ndarray:
        validation = validation_split(train)
        v_users = sorted(validation.test_users)
        fit_matrix = ev.interaction_matrix(validation.train, sorted(validation.train["user_id"].unique()), self.movie_ids)
        v_history = ev.interaction_matrix(validation.train, v_users, self.movie_ids)
        grid = {l2: validation_recall(validation, baselines.scores(v_history, baselines.ease_weights(fit_matrix, l2)),
                                      v_users, self.movie_ids)
                for l2 in EASE_GRID}
        l2 = max(grid, key=grid.get)
        self.chosen.append({"cutoff": cutoff, "lambda": l2, "validation recall@10": grid[l2]})
        matrix = ev.interaction_matrix(train, sorted(train["user_id"].unique()), self.movie_ids)
        return baselines.scores(ev.interaction_matrix(train, users, self.movie_ids), baselines.ease_weights(matrix, l2))


class HistoryTowerRecommender:
    """Lesson 02's bag-of-history tower, its epoch chosen on the cutoff's validation split,
    then refitted for that many epochs on every rating before the cutoff and queried with
    each user's whole history before it."""

    def __init__(self, movie_ids: list[str], settings: dict = HISTORY_TOWER):
        self.movie_ids, self.settings = movie_ids, dict(settings)
        self.chosen: list[dict] = []

    def __call__(self, train: pd.DataFrame, users: list[str], cutoff: int) -> np.ndarray:
        validation = validation_split(train)
        v_users = sorted(validation.test_users)
        fit_matrix = ev.interaction_matrix(validation.train, sorted(validation.train["user_id"].unique()), self.movie_ids)
        run = models.train_history_model(
            fit_matrix, self.movie_ids, ev.interaction_matrix(validation.train, v_users, self.movie_ids),
            ev.interaction_matrix(validation.test, v_users, self.movie_ids), seed=SEED,
            refit_matrix=ev.interaction_matrix(train, sorted(train["user_id"].unique()), self.movie_ids),
            **self.settings)
        self.chosen.append({"cutoff": cutoff, "epoch": run.best_epoch, "validation recall@10": run.validation_recall})
        return run.model.scores(ev.interaction_matrix(train, users, self.movie_ids))


# %%
ease = EaseRecommender(movie_ids)
started = time.perf_counter()
results["EASE"] = evaluate_cutoffs(ratings, QUANTILES, ease, movie_ids)
history_tower = HistoryTowerRecommender(movie_ids)
results["history tower (bag)"] = evaluate_cutoffs(ratings, QUANTILES, history_tower, movie_ids)
print(f"EASE and the history tower at {len(QUANTILES)} cutoffs: {time.perf_counter() - started:.0f} s")
baseline_table = summary(results, reference="recent popularity")
baseline_table.round(4)

# %%
best_baseline = baseline_table[f"recall@{K}"].idxmax()
static = baseline_table.loc[["EASE", "history tower (bag)"], f"recall@{K}"]
versus_recent = claims.compare(static.max(), baseline_table.loc["recent popularity", f"recall@{K}"],
                               se=baseline_table.loc[static.idxmax(), "± paired se"])
claims.say(
    f"Over {claims.fmt(n_pairs)} user-cutoff pairs, the best baseline is **{best_baseline}**. The better "
    f"static model, {static.idxmax()}, reaches a recall@10 of {claims.fmt(static.max())}, "
    + versus_recent.word("higher than", "lower than", "about the same as")
    + f" recent popularity's {claims.fmt(baseline_table.loc['recent popularity', f'recall@{K}'])} "
    f"(difference {versus_recent.change()}, twice its paired standard error is {claims.fmt(versus_recent.noise)})."
    + claims.pick(versus_recent.worse,
                  " Knowing *when* beats knowing *who*: a model that ignores time has to make up for "
                  "the trend before its personalisation can show.", "")
)

# %% [markdown]
# ## 4. Sequences: a GRU query tower
#
# A sequence model reads a user's movies *in order* and predicts the next one. Training
# data comes from the histories themselves: every rating that has an earlier one is a
# target, and the ratings before it are its input. Two rules keep the future out:
#
# 1. order each user's ratings by time (MovieLens stores seconds, and a burst of ratings can
#    share one: equal times keep their row order, the convention of `ev.global_time_split`);
# 2. an input position never holds its own target or anything after it.
#
# Instead of one example per target, as the TFRS tutorial builds them, we keep one row per
# user with their latest `length + 1` ratings and shift it by one: the model reads positions
# `0 .. length - 1` and must predict, at each position, the rating that followed. One pass
# over the row trains all positions at once (SASRec's set-up, Kang and McAuley 2018).
#
# ```text
# user's ratings in time order:   r0   r1   r2   r3   r4
# inputs  (what the model reads): r0   r1   r2   r3
# targets (what comes next):      r1   r2   r3   r4
# ```
#
# ### Exercise 5.3 · Next-item training examples
#
# Implement `next_item_examples(ratings, length)`. It returns *row positions* of `ratings`,
# not movie ids, so that the movies, their times and any feature of them can be looked up
# for inputs and targets alike (`models.sequential.example_features` does so).

# %% tags=["exercise"] exercise="5.3"
def next_item_examples(ratings: pd.DataFrame, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-item examples from each user's latest ratings.

    Args:
        ratings: rows with ``user_id`` and ``timestamp``, in any order.
        length: the number of positions of each example.

    Returns:
        ``(inputs, targets)``, both ``int64 [n_users, length]``: one row per user with at
        least two ratings, users sorted by ``str(user_id)``. The user's ratings are ordered by
        time, equal timestamps keeping their row order; of these, the latest ``length + 1``
        are kept (all of them if fewer). ``inputs`` holds the row positions (``0 ..
        len(ratings) - 1``) of all but the last kept rating, ``targets`` of all but the first,
        so that ``targets[u, j]`` is the rating right after ``inputs[u, j]``. Both are
        right-aligned (the latest rating is in the last column) and padded on the left
        with ``-1``.
    """
    # BEGIN SOLUTION
    users = ratings["user_id"].astype(str).to_numpy()
    positions = np.arange(len(ratings))
    order = np.lexsort((positions, ratings["timestamp"].to_numpy(), users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], len(order)]
    inputs, targets = [], []
    for start, end in zip(starts, ends):
        kept = order[max(start, end - length - 1):end]
        if len(kept) < 2:
            continue
        pad = np.full(length + 1 - len(kept), -1)
        inputs.append(np.r_[pad, kept[:-1]])
        targets.append(np.r_[pad, kept[1:]])
    if not inputs:
        return np.zeros((0, length), dtype=np.int64), np.zeros((0, length), dtype=np.int64)
    return np.array(inputs, dtype=np.int64), np.array(targets, dtype=np.int64)
    # END SOLUTION


# %%
some_user = sorted(ratings["user_id"].astype(str).unique())[0]
one_user = ratings[ratings["user_id"].astype(str) == some_user]
inputs, targets = next_item_examples(one_user, 5)
titles = one_user["movie_title"].to_numpy()
pd.DataFrame({"position": range(5),
              "input (the model has read up to here)": [titles[i] if i >= 0 else "(padding)" for i in inputs[0]],
              "target (what came next)": [titles[t] if t >= 0 else "(padding)" for t in targets[0]]})

# %% [markdown]
# ### The tower and the model
#
# The TFRS sequential-retrieval tutorial's query tower is an `Embedding` of the movie ids
# followed by a `GRU`, a recurrent layer that reads the sequence left to right and keeps a
# running summary of it (Hidasi et al. 2016 introduced GRUs for session-based
# recommendation). With `return_sequences=True` it outputs that summary at every position,
# so position $j$ has read movies $0..j$ and nothing after. The candidate tower is one
# vector and one bias per movie, and the score is a dot product, as in every retrieval model
# of the course (`models.sequential.GRUTower`, `SequentialRetrievalModel`).
#
# Two choices differ from the tutorial:
#
# - **A full softmax.** The tutorial trains with TFRS's `Retrieval` task, an in-batch
#   softmax. With a few thousand movies, scoring all of them at every position costs about
#   as much as scoring the other positions of a batch, and it has no sampling bias to correct
#   (lesson 03's logQ correction). Klenitskiy and Vasilev (2023) found the full softmax
#   much better than the sampled losses for SASRec too.
# - **Every position a target**, as above, rather than one example per target.
#
# The settings (vector size, history length, dropout, learning rate, batch size, the epoch
# cap) were chosen on the validation splits of real MovieLens 100K, never on its test pairs
# (the comment above `models.sequential.SEQUENCE_SETTINGS` says how); here each cutoff only
# chooses its epoch, stopping after two epochs without improvement on validation.

# %% tags=["setup"]
SETTINGS = sequential.SEQUENCE_SETTINGS
#: The sequence models of the comparison: name -> (tower, with time features).
SEQUENCE_MODELS = {"GRU": ("gru", False), "GRU + time": ("gru", True), "attention + time": ("attention", True)}


class SequenceRecommender:
    """A sequence model (``kind`` ``"gru"`` or ``"attention"``): at each cutoff, its epoch
    count is chosen on the validation split, then it is trained again from the same start
    for that many epochs on every rating before the cutoff, and queried at the cutoff with
    each user's latest movies. ``time_features`` adds the recency and gap features (section 6).

    Training starts from the model of the previous cutoff when that model was fitted on
    ratings before this cutoff's validation cutoff (all in the past of what validation
    measures), as a production model is refreshed from yesterday's rather than trained
    from scratch; otherwise it starts afresh. ``runs`` keeps each cutoff's ``SequentialRun``.
    """

    def __init__(self, movie_ids: list[str], kind: str, time_features: bool = False, *, settings: dict = SETTINGS):
        self.movie_ids, self.kind, self.time_features = movie_ids, kind, time_features
        self.settings = dict(settings)
        self.model, self.last_cutoff = None, None
        self.runs: dict[int, sequential.SequentialRun] = {}

    def examples(self, frame: pd.DataFrame, recency: sequential.Recency | None) -> dict[str, np.ndarray]:
        """The next-item training features of ``frame``."""
        inputs, targets = next_item_examples(frame, self.settings["length"])
        return sequential.example_features(frame, inputs, targets, self.movie_ids, recency)

    def __call__(self, train: pd.DataFrame, users: list[str], cutoff: int) -> np.ndarray:
        s = self.settings
        validation = validation_split(train)
        fit = validation.train
        # One table for both runs: each of its rows counts only the ratings before its own
        # moment, so validation reads nothing of the validation period through it.
        recency = (sequential.Recency.build(train, self.movie_ids, s["window_days"] * DAY)
                   if self.time_features else None)
        v_users = sorted(validation.test_users)
        v_queries = sequential.query_features(fit, v_users, self.movie_ids, s["length"], validation.cutoff, recency)
        warm = self.model is not None and self.last_cutoff <= validation.cutoff
        if warm:
            if recency is not None:
                self.model.set_recency(recency)
        else:
            self.model = sequential.build_sequential_model(
                self.kind, len(self.movie_ids), dim=s["dim"], length=s["length"], time_features=self.time_features,
                recency=recency, learning_rate=s["learning_rate"], dropout=s["dropout"], blocks=s["blocks"],
                heads=s["heads"], horizon=s["horizon"], mask_seen=s["mask_seen"],
                mask_builder=causal_attention_mask if self.kind == "attention" else None)
        run = sequential.train_sequential_model(
            self.model, self.examples(fit, recency), v_queries, ev.interaction_matrix(fit, v_users, self.movie_ids),
            ev.interaction_matrix(validation.test, v_users, self.movie_ids), refit=self.examples(train, recency),
            max_epochs=s["max_epochs"], patience=s["patience"], batch_size=s["batch_size"], seed=SEED, warm=warm)
        self.runs[cutoff], self.last_cutoff = run, cutoff
        queries = sequential.query_features(train, users, self.movie_ids, s["length"], cutoff, recency)
        return self.model.scores(queries)

    @property
    def validation_recall(self) -> float:
        """Mean best-epoch validation recall@10 over the cutoffs run so far: how a sequence
        model is chosen without looking at the test pairs."""
        return float(np.mean([run.validation_recall for run in self.runs.values()]))


# %%
started = time.perf_counter()
gru = SequenceRecommender(movie_ids, *SEQUENCE_MODELS["GRU"])
results["GRU"] = evaluate_cutoffs(ratings, QUANTILES, gru, movie_ids)
print(f"GRU at {len(QUANTILES)} cutoffs: {time.perf_counter() - started:.0f} s; epochs chosen:",
      [run.best_epoch for run in gru.runs.values()])
summary(results, reference=best_baseline).round(4)

# %% [markdown]
# ## 5. Causal self-attention: SASRec
#
# A GRU squeezes the whole past into one running vector. Self-attention lets every position
# look back at *all* earlier positions and weigh them by relevance: the Transformer's
# mechanism (Vaswani et al. 2017), used for next-item prediction by SASRec (Kang and McAuley
# 2018). Each position $i$ forms a query $\mathbf{q}_i$ and every position $j$ a key
# $\mathbf{k}_j$ and a value $\mathbf{v}_j$; position $i$'s output is
# $\sum_j \operatorname{softmax}_j(\mathbf{q}_i \cdot \mathbf{k}_j / \sqrt{d})\,\mathbf{v}_j$.
#
# Attention has no notion of order by itself, so two things restore it: a learned **position
# embedding** added to each movie's vector, and a **causal mask** that forbids position $i$
# to attend to any $j > i$. Without the mask, the output at position 3 would read the movie
# at position 4, which is its own training target: the model would learn to copy and would
# fail at serving time, when position 4 does not exist yet. The mask must also hide the
# left padding of short histories.
#
# ### Exercise 5.4 · A causal attention mask
#
# Implement `causal_attention_mask(valid)`, with TensorFlow operations: it runs inside the
# model while it trains. Keras's `MultiHeadAttention` takes it as `attention_mask`, where
# `True` means "may attend".

# %% tags=["exercise"] exercise="5.4"
def causal_attention_mask(valid: tf.Tensor) -> tf.Tensor:
    """Which positions each position may attend to.

    Args:
        valid: ``bool [batch, length]``, True where the position holds a movie (False on
            the left padding).

    Returns:
        ``bool [batch, length, length]``: entry ``[b, i, j]`` is True exactly when
        ``j <= i`` and ``valid[b, j]``. Built with TensorFlow operations, so that it also
        works inside a ``tf.function``.
    """
    # BEGIN SOLUTION
    valid = tf.cast(valid, tf.bool)
    length = tf.shape(valid)[1]
    past = tf.linalg.band_part(tf.ones((length, length), dtype=tf.bool), -1, 0)
    return tf.logical_and(past[tf.newaxis], valid[:, tf.newaxis, :])
    # END SOLUTION


# %%
print(causal_attention_mask(tf.constant([[False, True, True, True]])).numpy()[0].astype(int))

# %% [markdown]
# `models.sequential.AttentionTower` uses your mask: movie embedding plus position
# embedding, then a block of causal self-attention and a small feed-forward network, each
# with a residual connection and layer normalisation (SASRec's encoder, built from Keras's
# `MultiHeadAttention`, `Dense` and `LayerNormalization`). The candidate side and the
# training are the GRU's. Time features are added to both towers in the next section; to
# keep the comparison to one change at a time, the attention tower is measured with them.
#
# ## 6. Time features
#
# Neither tower knows *when* it is asked. Two features tell it:
#
# - **The recency of a movie.** For every movie, the logarithm of its number of ratings in
#   the last days before the moment of the query (`sequential.Recency`; the window is in
#   `SETTINGS`). It
#   enters the score as a term $w(\mathbf{q}) \cdot \log(1 + \text{recent count}_j)$, where
#   the weight $w$ is computed from the query vector: a user who is back after months may
#   follow the trend, one in the middle of a session may not. In training, the moment is the
#   time of each target, and only ratings before it are counted.
# - **The time since the user's last rating**, in log-spaced buckets (under a minute, a few
#   minutes, ..., about a day, ..., months), as a learned vector added to the query. In
#   training it is the time from each input to its target; at a cutoff, the time from the
#   user's last rating to the cutoff.
#
# Both are known at the moment of the query, so they leak nothing. YouTube's candidate
# generator (Covington et al. 2016) feeds the age of each training example for the same
# reason: a model trained on the past is otherwise biased against what is new.

# %%
started = time.perf_counter()
gru_time = SequenceRecommender(movie_ids, *SEQUENCE_MODELS["GRU + time"])
results["GRU + time"] = evaluate_cutoffs(ratings, QUANTILES, gru_time, movie_ids)
attention_time = SequenceRecommender(movie_ids, *SEQUENCE_MODELS["attention + time"])
results["attention + time"] = evaluate_cutoffs(ratings, QUANTILES, attention_time, movie_ids)
print(f"two sequence models with time features at {len(QUANTILES)} cutoffs: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## 7. The comparison
#
# Every model, the same user-cutoff pairs, the same masked lists. The last two
# columns compare each model with the best baseline: the difference in recall@10 and the
# standard error of the paired differences.

# %%
table = summary(results, reference=best_baseline)
# The sequence model of the headline is chosen on validation (mean over the cutoffs), never
# on the test pairs; the baseline it faces is the best one on the test pairs, the harder bar.
sequence_models = {"GRU": gru, "GRU + time": gru_time, "attention + time": attention_time}
best_sequence = max(sequence_models, key=lambda name: sequence_models[name].validation_recall)
table.round(4)

# %%
fig, (left, right) = plt.subplots(2, 1, figsize=(8, 7))
order = table[f"recall@{K}"].sort_values()
colours = ["tab:blue" if name in SEQUENCE_MODELS else "tab:gray" for name in order.index]
left.barh(order.index, order.to_numpy(), xerr=2 * table.loc[order.index, "± se"], color=colours)
left.set(title=f"recall@{K} over {n_pairs} user-cutoff pairs (bars: ± 2 standard errors)", xlabel=f"recall@{K}")
per_cutoff = {name: frame.groupby("cutoff")[f"recall@{K}"].mean() for name, frame in results.items()}
for name in (best_baseline, "EASE", best_sequence):
    series = per_cutoff[name]
    right.plot(pd.to_datetime(series.index, unit="s"), series.to_numpy(), marker="o", label=name)
right.set(title="recall@10 at each cutoff", xlabel="cutoff", ylabel=f"recall@{K}")
right.legend()
fig.tight_layout()
plt.show()

# %%
def versus(name: str, reference: str):
    """``claims.compare`` of two models' recall@K with the paired standard error."""
    a, b = results[name][f"recall@{K}"].to_numpy(), results[reference][f"recall@{K}"].to_numpy()
    return claims.compare(a.mean(), b.mean(), se=ev.paired_standard_error(a, b))


headline = versus(best_sequence, best_baseline)
time_effect = versus("GRU + time", "GRU")
tower_effect = versus("attention + time", "GRU + time")
inside = [name for name in table.index if name != best_baseline and not versus(name, best_baseline).distinct]
claims.say(
    f"The sequence model with the best validation recall, **{best_sequence}**, reaches a recall@10 of "
    f"{claims.fmt(headline.value)} on the test pairs: "
    + headline.word("higher than", "lower than", "about the same as")
    + f" the best baseline, {best_baseline} ({claims.fmt(headline.reference)}; difference {headline.change()}, "
    f"{claims.fmt(headline.relative, 'percent')} of it, and twice the paired standard error is "
    f"{claims.fmt(headline.noise)}). "
    + f"Time features move the GRU by {time_effect.change()} "
    + claims.pick(time_effect.distinct, "(beyond the noise); ", "(inside the noise); ")
    + f"the attention tower instead of the GRU, both with time features, by {tower_effect.change()} "
    + claims.pick(tower_effect.distinct, "(beyond the noise). ", "(inside the noise). ")
    + (f"Inside the noise of {best_baseline}: {', '.join(inside)}." if inside
       else f"Every other model is distinguishable from {best_baseline}.")
)

# %% [markdown]
# How the epochs were chosen: one validation curve per cutoff for the attention tower
# (validation recall@10 after each epoch; training stops two epochs after the best).

# %%
fig, axes = plt.subplots(figsize=(7, 3.5))
for cutoff, run in attention_time.runs.items():
    axes.plot(run.curve["epoch"], run.curve["validation recall@10"], marker="o",
              label=pd.to_datetime(cutoff, unit="s").strftime("%Y-%m-%d"))
axes.set(title="attention + time: validation recall@10 by epoch, one line per cutoff",
         xlabel="epoch", ylabel="validation recall@10")
axes.legend(title="cutoff")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - A history has an **order** and a request has a **moment**; a bag of movies keeps
#   neither, and what is popular drifts from week to week.
# - A **random split** trains on ratings made after the test ratings, and a per-user holdout
#   still trains on other users' later ratings. A **global time split** trains on
#   everything before a cutoff and tests each user's next ratings: nothing from the future.
#   One cutoff tests few users, so **roll the cutoff** and pool the **user-cutoff pairs**;
#   choose every setting on a validation split cut the same way inside the training data.
# - **Recency baselines** come first: popularity over a recent window is one line of
#   pandas, and any model must be compared with it on the same user-cutoff pairs.
# - **Next-item examples**: order by time (ties by row), shift by one, pad on the left; no
#   position may read its own target.
# - A **GRU query tower** (the TFRS tutorial) and a **causal self-attention tower**
#   (SASRec) read the history in order and give one query vector per position; trained
#   with a full softmax at every position, they still serve with one dot product.
# - The **causal mask** is what keeps self-attention honest: position $i$ reads only $j \le i$.
# - **Time features** (the recency of a movie's popularity, the gap since the user's last
#   rating) give a sequence model what the recency baseline knows.
# - Report the number of pairs, standard errors, and which differences are inside the
#   noise; compare one change at a time.
#
# ## Further reading
#
# - Balázs Hidasi, Alexandros Karatzoglou, Linas Baltrunas, Domonkos Tikk.
#   *Session-based Recommendations with Recurrent Neural Networks.* ICLR 2016.
#   <https://arxiv.org/abs/1511.06939>
# - Wang-Cheng Kang, Julian McAuley. *Self-Attentive Sequential Recommendation.* ICDM 2018.
#   <https://arxiv.org/abs/1808.09781>
# - Anton Klenitskiy, Alexey Vasilev. *Turning Dross Into Gold Loss: is BERT4Rec really
#   better than SASRec?* RecSys 2023. <https://arxiv.org/abs/2309.07602>
# - Yitong Ji, Aixin Sun, Jie Zhang, Chenliang Li. *A Critical Study on Data Leakage in
#   Recommender System Offline Evaluation.* ACM TOIS 2023. <https://arxiv.org/abs/2010.11060>
# - Malte Ludewig, Noemi Mauro, Sara Latifi, Dietmar Jannach. *Performance Comparison of
#   Neural and Non-Neural Approaches to Session-based Recommendation.* RecSys 2019.
#   <https://arxiv.org/abs/1910.12781>
# - Jiacheng Li, Yujie Wang, Julian McAuley. *Time Interval Aware Self-Attention for
#   Sequential Recommendation.* WSDM 2020. <https://doi.org/10.1145/3336191.3371786>
# - Paul Covington, Jay Adams, Emre Sargin. *Deep Neural Networks for YouTube
#   Recommendations.* RecSys 2016. <https://doi.org/10.1145/2959100.2959190>
# - Ashish Vaswani et al. *Attention Is All You Need.* NeurIPS 2017.
#   <https://arxiv.org/abs/1706.03762>
# - TensorFlow Recommenders: *Recommending movies: retrieval using a sequential model*,
#   <https://www.tensorflow.org/recommenders/examples/sequential_retrieval>
#
# Next: lesson 06 ranks with several objectives at once and re-ranks for diversity.
