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
# # Appendix · How each model's cost grows
#
# The lessons train every model on MovieLens 100K, where EASE, a closed-form linear model
# fitted in seconds, is a hard baseline for the two-tower models (lesson 03). Yet large
# recommenders retrieve with two towers and an approximate nearest-neighbour index. This appendix shows why, with
# measurements: the same models trained on growing data, from a few tens of thousands to
# ten million ratings, timed and weighed one by one.
#
# **You will learn to**
#
# - read a cost on log-log axes, where a power law $c \cdot n^b$ is a straight line of
#   slope $b$, and fit that *growth exponent* from measurements;
# - state how the training time and memory of popularity, item-kNN, EASE and a two-tower
#   model grow with the number of ratings or movies, and how exact, Annoy and HNSW search
#   grow with the catalogue;
# - predict from a few small runs when a method outgrows a machine, and check the
#   prediction against the arithmetic of its largest matrix;
# - explain why production retrieval uses two towers and an ANN index even where EASE
#   would be as accurate.
#
# There are no exercises. The numbers come from one recorded run of the benchmark
# `course bench ladder`, not from the data this site was built with (a run to ten million
# ratings takes too long for a page). Rerun it on your machine with
# `course bench ladder --record` and rebuild this page to see your own.

# %% tags=["setup"]
import recsys_course  # noqa: F401  (the course's settings before anything else)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recsys_course import claims
from recsys_course.claims import compare, fmt, pick, say, signed
from recsys_course.scale import report

# %% [markdown]
# ## 1. What was measured
#
# The ladder is a list of datasets of growing size, the *rungs*: synthetic MovieLens-shaped
# data generated with the shapes of MovieLens 100K, 1M and 20M (`COURSE_DATA=synthetic:...`).
# On each rung:
#
# - the ratings are split at random: a fifth for test, a tenth of the rest for validation,
#   the rest to fit the models (the course's `evaluation.random_split`);
# - every method runs in a **fresh process**, so one method's memory cannot inflate the next
#   one's peak, and on **one thread**, so a time measures the work of one core (the
#   two-worker run is the one exception: two processes, one thread each); on this 2-core
#   machine the one-process towers train while popularity, item-kNN and EASE run one after
#   the other on the other core (the towers report their fastest epoch after the first, since
#   an epoch beside EASE's inverse ran up to a fifth slower), and the two-worker run has the
#   machine to itself;
# - **training seconds** time the fit alone, not loading the data or measuring quality;
#   **peak memory** is the process's peak resident memory (`VmHWM`, read by the process as
#   it finishes), which includes the Python interpreter and its libraries;
# - **recall@10** is measured for the same sampled test users with every method, over the
#   whole catalogue, with the movies a user rated in the fit split excluded.
#
# The methods are the course's: popularity (lesson 00), item-kNN with each movie's nearest
# neighbours and EASE (lesson 03) built from a sparse user × movie matrix
# (`recsys_course.baselines`), the id-only two-tower model (lessons 02 and 09) on one
# process and on two `MultiWorkerMirroredStrategy` workers, and exact, Annoy and HNSW search
# (lesson 07) over that model's movie vectors. EASE's $\lambda$ and the towers' number of
# epochs are chosen on the validation split (training stops at the first epoch that does not
# improve it). The one-process towers use lesson 02's popularity correction, without which
# their validation recall falls from the first epoch on. The two-worker row is there for the
# **time per epoch** only: lesson 09's job (without the correction, a negligible share of the
# time) is timed on a slice of one epoch (its size is given below the table of rungs), after
# its first steps, and that time per batch is scaled to a whole epoch. It is not trained to
# the end, so it has no training time or recall of its own; its quality is the one-process
# model's, which lesson 09 compares.

# %%
result = report.recorded_ladder()
if result is None:
    raise FileNotFoundError("no recorded ladder in this copy of the course: run `course bench ladder --record`")
rungs = pd.DataFrame(result["rungs"]).T
rungs = rungs[["label", "n_ratings", "n_users", "n_movies"]].rename(
    columns={"label": "data", "n_ratings": "ratings", "n_users": "users", "n_movies": "movies"}
).astype({"ratings": int, "users": int, "movies": int}).reset_index(drop=True)
rungs

# %%
first, last = rungs.iloc[0], rungs.iloc[-1]
say(f"The recorded run has {fmt(len(rungs), 'count')} rungs, from {fmt(first['ratings'], 'count')} ratings "
    f"of {fmt(first['movies'], 'count')} movies to {fmt(last['ratings'], 'count')} ratings of "
    f"{fmt(last['movies'], 'count')} movies: {fmt(last['ratings'] / first['ratings'], 'number')} times more "
    "ratings. Every number below comes from that one run.")
machine = result["run"]
say(f"That run took {fmt(machine['wall_seconds'] / 60, 'number')} minutes on a machine with "
    f"{fmt(machine['cpus'], 'count')} cores and {fmt(machine['memory_mb'] / 1000, 'number')} GB of memory "
    f"(one-minute system load: {fmt(machine['load_average_before'][0], 'number')} when it started, "
    f"{fmt(machine['load_average_after'][0], 'number')} when it ended). The two-worker job was timed on the "
    f"first {fmt(result['settings']['two_worker_steps_timed'], 'count')} batches of one epoch, or the whole "
    "epoch where it has fewer.")

# %% [markdown]
# ## 2. Time, memory and quality on each rung
#
# Training time first. Search methods build an index instead of training; their build time
# is in section 4.

# %%
TRAINED = ["popularity", "item_knn", "ease", "two_tower"]  # the two-worker run is timed per epoch only
SEARCH = ["exact", "annoy", "hnsw"]
report.pivot(result, "train_seconds", TRAINED)

# %% [markdown]
# Peak memory of each process, in MB. Every process starts with the interpreter and its
# libraries (TensorFlow for the two towers), so on the smallest rung the peaks are mostly
# that fixed cost. The two-worker row shows the larger of its two worker processes: the run
# needs about twice that.

# %%
report.pivot(result, "peak_rss_mb", TRAINED + ["two_tower_2workers"] + SEARCH)

# %% tags=["check"]
smallest = result["ladder"][list(result["ladder"])[0]]
claims.claim(all(e["peak_rss_mb"] < 2 * e["start_rss_mb"] for name, e in smallest.items()
                 if report.measured(e) and report.METHODS[name].memory),
             "on the smallest rung the peaks are mostly that fixed cost")

# %% [markdown]
# And what the cost buys: recall@10 of the same test users. The search rows serve the
# one-process two towers through each index (asking for ten movies plus the ones the user
# rated, then leaving those out), so exact search repeats the two towers' recall and an
# approximate index returns a slightly different list.

# %%
recall = report.pivot(result, "recall@10", TRAINED + SEARCH)
recall

# %%
largest = list(result["ladder"])[-1]
at_largest = result["ladder"][largest]


def versus_ease(name: str, verb: str) -> str:
    """``name``'s recall@10 against EASE's on the largest rung, in words (the paired
    standard error over the same users decides "above", "below" or "about the same")."""
    entry, ease = at_largest[name], at_largest["ease"]
    c = compare(entry["recall@10"], ease["recall@10"], se=entry["recall@10_minus_ease_se"])
    return (f"{report.METHODS[name].label} {verb} {fmt(entry['recall@10'], 'metric')}, "
            f"{c.word('above', 'below', 'about the same as')} EASE's {fmt(ease['recall@10'], 'metric')} "
            f"({signed(c.difference, like=ease['recall@10'])})")


say(f"On the largest rung, {versus_ease('two_tower', 'reach')}; {versus_ease('item_knn', 'reaches')}; "
    f"{versus_ease('popularity', 'reaches')}. A difference within twice its paired standard error over users "
    "is called about the same.")

# %% [markdown]
# ## 3. Growth on log-log axes
#
# If a cost grows as $c \cdot n^b$, then $\log(\text{cost}) = \log c + b \log n$: a straight
# line of slope $b$ on log-log axes, whatever $c$ is. Fitting that line to the measurements
# (least squares on the logarithms) gives the **growth exponent** $b$, which is what decides
# whether a method survives ten times more data: ten times the ratings costs $10^b$ times
# the time.
#
# What each method should cost, from its algorithm:
#
# | method | grows with | time | memory |
# |---|---|---|---|
# | popularity | ratings | $n_\text{ratings}$: one count per rating | $n_\text{ratings}$ (the data) |
# | item-kNN | ratings and movies | the Gram matrix $X^\top X$: the sum over users of their ratings squared; comparing every pair of movies: $n_\text{movies}^2$ | the data, plus the neighbours kept per movie |
# | EASE | movies | one $n_\text{movies} \times n_\text{movies}$ inverse: $n_\text{movies}^3$ | one dense $n_\text{movies}^2$ matrix of 8-byte numbers |
# | two towers | ratings | each epoch is one pass over the ratings: $n_\text{ratings}$ per epoch | the data and the embedding tables |
# | exact search | movies | every movie's score for every query: $n_\text{movies}$ per query | the movie vectors |
# | Annoy, HNSW | movies | a fixed number of tree leaves or graph steps: sub-linear, about $\log n_\text{movies}$ per query | the vectors and the index |
#
# Fixed costs (starting Python, a library call's overhead) flatten the small end of every
# curve, so an exponent fitted over sizes where they dominate comes out below the
# algorithm's. EASE's inverse is the clearest case (its rate of arithmetic is measured
# below), so its exponent is fitted on the two largest catalogues; the table says which
# sizes each fit uses.

# %% tags=["setup"]
COLOURS = {"popularity": "#757575", "item_knn": "#26a69a", "ease": "#ef6c00", "two_tower": "#3949ab",
           "two_tower_2workers": "#8e24aa", "exact": "#ef6c00", "annoy": "#26a69a", "hnsw": "#3949ab"}


def capital(text: str) -> str:
    """``text`` with its first letter in upper case, to start a sentence."""
    return text[:1].upper() + text[1:]


def points(name: str, measure: str, size: str) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, values) of one method's measure over the rungs where it was measured."""
    pairs = [(result["rungs"][rung][size], entries[name].get(measure)) for rung, entries in result["ladder"].items()
             if name in entries and report.measured(entries[name]) and entries[name].get(measure)]
    return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)


def draw(ax, name: str, measure: str, size: str, law: dict | None, label: str, marker: str = "o",
         style: str = "-") -> None:
    """The measurements as dots and, when fitted, the power law as a line with its exponent."""
    x, y = points(name, measure, size)
    ax.loglog(x, y, marker, color=COLOURS[name], linestyle="none")
    if law:
        grid = np.geomspace(x.min(), x.max(), 50)
        ax.loglog(grid, law["coefficient"] * grid ** law["exponent"], style, color=COLOURS[name],
                  label=f"{label}: slope {law['exponent']:.2f}")


def memory_added(name: str, size: str) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, MB the method's process added to its starting size) over the rungs."""
    x, peak = points(name, "peak_rss_mb", size)
    _, start = points(name, "start_rss_mb", size)
    return x, np.maximum(peak - start, 0.0)


# %%
exponents = result["exponents"]
fig, axes = plt.subplots(4, 1, figsize=(6.5, 14))
for name in ("popularity", "item_knn"):
    draw(axes[0], name, "train_seconds", "n_ratings", exponents[name]["time"], report.METHODS[name].label)
for name in ("two_tower", "two_tower_2workers"):
    draw(axes[0], name, "seconds_per_epoch", "n_ratings", exponents[name]["time"],
         report.METHODS[name].label + " (per epoch)")
axes[0].set(title="Training time against ratings", xlabel="ratings", ylabel="seconds")
draw(axes[1], "ease", "inverse_seconds", "n_movies", exponents["ease"]["time"], "EASE, the inverse")
draw(axes[1], "ease", "train_seconds", "n_movies", exponents["ease"].get("train_seconds"), "EASE, the whole fit",
     marker="s", style="--")
axes[1].set(title="EASE's training time against movies", xlabel="movies", ylabel="seconds")
for name in SEARCH:
    draw(axes[2], name, "query_ms", "n_movies", exponents[name]["time"], report.METHODS[name].label)
axes[2].set(title="Search time per query against movies", xlabel="movies", ylabel="milliseconds per query")
movies, added = memory_added("ease", "n_movies")
axes[3].loglog(movies, added, "o", color=COLOURS["ease"], label="EASE: measured (peak minus start)")
grid = np.geomspace(movies.min(), movies.max(), 50)
axes[3].loglog(grid, 8 * grid**2 / 1e6, "--", color="#757575", label="one n x n float64 matrix (8 n² bytes)")
axes[3].set(title="Memory EASE adds against movies", xlabel="movies", ylabel="MB")
for ax in axes:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# The fitted exponents against the expected ones, time and memory (the memory a method adds
# to its process's starting size). A fit "agrees" when it lies within
# `report.AGREEMENT` of the expected exponent, or that far below 1 for a sub-linear one.

# %%
report.exponent_table(result).round(2)

# %%
def growth_sentence(name: str) -> str:
    """How ``name``'s fitted time exponent compares with its algorithm's, in words."""
    entry = exponents[name]
    law = entry["time"]
    if law is None or entry["expected_time"] is None:
        return ""
    return (f"{capital(report.METHODS[name].label)}: the {report.MEASURE_WORDS[entry['time_measure']]} grows with the "
            f"{report.SIZE_WORDS[entry['size']]} to the power {fmt(law['exponent'], 'number')} (expected "
            f"{report.expected_words(entry['expected_time'])}), which "
            f"{pick(entry['time_agrees'], 'agrees', 'does not agree')}.")


say(" ".join(part for part in (growth_sentence(name) for name in exponents) if part))

# %%
ease_fit, smallest_ease = exponents["ease"], smallest["ease"]
slower = compare(ease_fit["train_seconds"]["exponent"], ease_fit["time"]["exponent"], noise=report.AGREEMENT,
                 kind="number")
gram_first = compare(smallest_ease["gram_seconds"], smallest_ease["inverse_seconds"],
                     noise=0.2 * smallest_ease["inverse_seconds"], kind="number")
say(f"EASE's whole fit grows with the movies to the power {fmt(ease_fit['train_seconds']['exponent'], 'number')}, "
    f"{slower.word('more steeply than', 'less steeply than', 'about as steeply as')} its inverse "
    f"({fmt(ease_fit['time']['exponent'], 'number')}). On the smallest rung, building the Gram matrix from the "
    f"ratings took {fmt(smallest_ease['gram_seconds'], 'seconds')} and the inverse "
    f"{fmt(smallest_ease['inverse_seconds'], 'seconds')}"
    + pick(gram_first.direction == "higher" and slower.direction == "lower",
           ": the Gram matrix grows with the ratings, not with the cube of the movies, and dominates until the "
           "catalogue is large enough for the cube to win.",
           "."))

# %%
# The inverse's work is known: LAPACK's Cholesky factorisation (dpotrf) and the inverse from
# it (dpotri: a triangular inverse, dtrtri, then a triangular product, dlauum) take about
# n³/3 floating-point operations each for n movies, n³ in all. Work over time is the rate
# one core reached; a rate that rises with n bends the fitted exponent below 3.
movies_ease, inverse_ease = points("ease", "inverse_seconds", "n_movies")
order = np.argsort(movies_ease)
movies_ease, rate = movies_ease[order], (movies_ease ** 3 / inverse_ease / 1e9)[order]  # GFLOP/s
faster = compare(rate[-1], rate[0], noise=0.25 * rate[0], kind="number")
say(f"Counted that way, EASE's inverse ran at {fmt(rate[0], 'number')} GFLOP/s on "
    f"{fmt(int(movies_ease[0]), 'count')} movies and {fmt(rate[-1], 'number')} GFLOP/s on "
    f"{fmt(int(movies_ease[-1]), 'count')}: "
    + faster.word("one core did more operations per second on the larger matrix",
                  "one core did fewer operations per second on the larger matrix",
                  "about the same rate at both ends")
    + pick(faster.direction == "higher" and ease_fit["time_every_size"]["exponent"] < 3,
           " (on a small matrix, a larger share of the work is memory-bound panel steps and call overhead), "
           "so over the whole ladder the time grows more slowly than the cube of the movies: a line through "
           f"every rung has slope {fmt(ease_fit['time_every_size']['exponent'], 'number')}.",
           ".")
    + pick(ease_fit["time_agrees"] and not report.agrees(ease_fit["time_every_size"]["exponent"],
                                                          ease_fit["expected_time"]),
           f" Between the two largest catalogues the rate went from {fmt(rate[-2], 'number')} to "
           f"{fmt(rate[-1], 'number')} GFLOP/s, and the slope there, "
           f"{fmt(ease_fit['time']['exponent'], 'number')}, agrees with 3 where the line through every rung "
           "does not: it is the exponent the table reads, and the one that predicts larger catalogues.",
           ""))

# %% [markdown]
# ## 4. Search: build once, query often
#
# An index is built once per model version and queried for every request, so the query
# time is the one that must stay small. Build seconds, milliseconds per query and the
# share of the exact top 10 each index returns:

# %%
search = pd.concat({
    "build seconds": report.pivot(result, "train_seconds", SEARCH),
    "ms per query": report.pivot(result, "query_ms", SEARCH),
    "recall@10 against exact": report.pivot(result, "recall@10_vs_exact", SEARCH),
})
search

# %%
exact_ms, hnsw_ms = at_largest["exact"]["query_ms"], at_largest["hnsw"]["query_ms"]
speed = compare(hnsw_ms, exact_ms, noise=0.2 * exact_ms, higher_is_better=False, kind="number")
steeper = compare(exponents["exact"]["time"]["exponent"], exponents["hnsw"]["time"]["exponent"],
                  noise=report.AGREEMENT, kind="number")
say(f"On the largest catalogue, HNSW answers a query in {fmt(hnsw_ms, 'number')} ms against exact search's "
    f"{fmt(exact_ms, 'number')} ms: {speed.word('slower', 'faster', 'about as fast')} "
    f"({fmt(exact_ms / hnsw_ms, 'ratio')} the speed of exact search; timings within a fifth of each other are "
    f"called about the same), returning {fmt(at_largest['hnsw']['recall@10_vs_exact'], 'percent')} of the exact "
    "top 10. "
    + pick(steeper.better,
           "Exact search's time per query grows more steeply with the catalogue than HNSW's.",
           "Over these catalogue sizes, exact search's time per query does not grow more steeply than HNSW's: "
           "fixed costs per query still dominate."))

# %% [markdown]
# ## 5. EASE at MovieLens 25M
#
# MovieLens 25M (GroupLens, 2019) is the largest of GroupLens's stable benchmark datasets. EASE
# needs one dense movies × movies matrix of 8-byte numbers; the straightforward
# implementation (Steck's, and lesson 03's `numpy.linalg.inv`) holds two, the Gram matrix
# and its inverse, while `recsys_course.baselines` inverts in place and holds one.

# %%
at_25m = result["ease_at_25m"]
fits = at_25m.get("fits_in_memory", {})
gb = 1000.0
say(f"At {fmt(at_25m['n_movies'], 'count')} movies one such matrix takes "
    f"{fmt(at_25m['one_matrix_mb'] / gb, 'number')} GB and two take {fmt(at_25m['gram_and_inverse_mb'] / gb, 'number')} "
    f"GB. The ladder's fitted memory growth predicts a peak of {fmt(at_25m['fitted_peak_mb'] / gb, 'number')} GB, "
    f"and its fitted time about {fmt(at_25m['fitted_train_seconds'] / 3600, 'number')} hours of one core. "
    f"One matrix {pick(fits.get('one_matrix'), 'fits within', 'exceeds')} the memory of the machine that recorded "
    f"this run; two {pick(fits.get('gram_and_inverse'), 'fit within', 'exceed')} it.")

# %% [markdown]
# ## 6. Where each method stops being practical
#
# A rule turns the fits into limits: the size at which the fitted training time passes a
# budget (a search: the time per query) or the fitted peak memory passes the memory of the
# machine that ran the ladder, whichever comes first. Limits far beyond the measured sizes
# are extrapolations of a straight line, not measurements: the table leaves out those more
# than a thousand times beyond the largest rung.

# %%
say(result["practical"]["rule"])
report.limit_table(result)

# %%
limits = result["practical"]["limits"]


def limit_sentence(name: str) -> str:
    """Where ``name`` stops being practical by the rule, in words."""
    limit, label = limits[name], capital(report.METHODS[name].label)
    far = limit["times_largest_measured"] is None or limit["times_largest_measured"] > report.EXTRAPOLATION_LIMIT
    if far:
        return f"{label}: neither budget within reach of the fit."
    return (f"{label}: practical up to about {fmt(limit['limit'], 'count')} {report.SIZE_WORDS[limit['size']]} "
            f"(the {limit['binding']} budget is reached first).")


say(" ".join(limit_sentence(name) for name in limits))

# %% [markdown]
# ## 7. Why production uses two towers anyway
#
# EASE is a strong baseline (lesson 03) with a single hyper-parameter. What it cannot do is
# grow:
#
# - **Its cost follows the catalogue, not the data.** A catalogue of a few hundred thousand
#   items (a shop, a video platform) makes the movies × movies matrix terabytes, whatever
#   the number of users. A two-tower model stores one vector per user and per item: memory
#   grows linearly with the catalogue, and one epoch costs one pass over the interactions.
# - **Training spreads over machines.** An epoch of the two towers is a sum over batches,
#   which data parallelism splits among workers (lesson 09); a dense inverse does not
#   spread as easily, and the whole matrix must be rebuilt when the catalogue changes.
# - **Serving is a vector lookup.** The query tower turns a user (and context: time, device,
#   the last items seen) into one vector, and an ANN index finds its nearest movie vectors
#   in sub-linear time (section 4). EASE scores a user with a sparse history times a dense
#   matrix row by row, and must keep all of it in memory.
# - **Features.** Towers read side features, so a new user or a new item gets a sensible
#   vector at once (cold start), where EASE only knows items with interactions.
#
# That is why large systems are funnels (lesson 06): a cheap, scalable retrieval stage (two
# towers and an ANN index, or several such sources) narrows millions of items to hundreds,
# and heavier models, sometimes item-to-item ones like EASE restricted to those candidates,
# rank what is left.

# %%
one, two = at_largest["two_tower"], at_largest["two_tower_2workers"]
gain = compare(two["seconds_per_epoch"], one["seconds_per_epoch"], noise=0.2 * one["seconds_per_epoch"],
               higher_is_better=False, kind="number")
say(f"On the largest rung, an epoch of the two towers took {fmt(one['seconds_per_epoch'], 'seconds')} on one "
    f"process and {fmt(two['seconds_per_epoch'], 'seconds')} on two workers: "
    f"{gain.word('slower', 'faster', 'about the same')} "
    f"({fmt(one['seconds_per_epoch'] / two['seconds_per_epoch'], 'ratio')} the one-process speed; within a fifth is "
    "called about the same). Two workers on one machine share its memory bandwidth and exchange gradients "
    "at every step; across machines the same code adds cores and memory, which a dense inverse cannot use "
    "as easily.")

# %% [markdown]
# ## Summary
#
# - On log-log axes a power law is a straight line; its slope, the growth exponent, says
#   what ten times more data costs. Fixed costs flatten the small end, so fit where the
#   work dominates, and compare the fit with what the algorithm should cost.
# - Popularity and a two-tower epoch should grow linearly with the ratings, item-kNN with
#   the square of each user's ratings and of the catalogue, EASE's inverse with the cube of
#   the catalogue and its memory with the square. Fitted on a few rungs, such laws say
#   roughly where a method stops fitting a machine; the arithmetic of the largest matrix
#   checks the memory side exactly.
# - Exact search costs a pass over the catalogue per query; Annoy and HNSW visit a
#   sub-linear part of it.
# - Production retrieval uses two towers and an ANN index because their costs grow with
#   the data and parallelise, and because towers read features, not because they are the
#   most accurate model at a given size.
#
# ## Further reading
#
# - Harald Steck. *Embarrassingly Shallow Autoencoders for Sparse Data.* WWW 2019.
#   <https://arxiv.org/abs/1905.03375> (EASE, its closed form and its cost.)
# - Badrul Sarwar, George Karypis, Joseph Konstan, John Riedl. *Item-based collaborative
#   filtering recommendation algorithms.* WWW 2001.
# - Paul Covington, Jay Adams, Emre Sargin. *Deep Neural Networks for YouTube
#   Recommendations.* RecSys 2016 (the candidate-generation and ranking funnel).
# - Xinyang Yi et al. *Sampling-bias-corrected neural modeling for large corpus item
#   recommendations.* RecSys 2019 (two towers with in-batch negatives at scale).
# - Yu. A. Malkov and D. A. Yashunin. *Efficient and robust approximate nearest neighbor
#   search using Hierarchical Navigable Small World graphs.* IEEE TPAMI, 2018.
# - F. Maxwell Harper and Joseph A. Konstan. *The MovieLens Datasets: History and
#   Context.* ACM TiiS, 2015; the ml-25m README at
#   <https://files.grouplens.org/datasets/movielens/ml-25m-README.html>.
