"""A seeded, MovieLens-shaped synthetic dataset with planted structure.

Why it exists: TFDS needs the network once, CI and the tests have none. The generator plants
the structure recommenders exploit, so models measurably learn on it:

* latent taste vectors for users and movies; a rating is ``mean + user bias + movie bias +
  taste . appeal + noise``, rounded to 1-5 stars (what matrix factorisation recovers);
* genres are drawn near a movie's appeal vector, and title words are drawn per genre, so
  content features carry signal (what side-feature towers use);
* occupation and age shift a user's taste, so demographics carry some signal;
* log-normal movie popularity and user activity give the long tail of real data;
* users mostly rate what they are likely to enjoy (missing-not-at-random), so which movies a
  user rated is predictable beyond popularity (what retrieval models learn);
* timestamps fall in Sep 1997 - Apr 1998 like MovieLens 100K, each user active in a burst.

Sizes (:data:`SIZES`): ``small`` (the default: tests and the CI site build), ``tiny`` (smoke
tests), ``100k`` (MovieLens 100K's shape), and for the scale benchmarks ``1m`` (ML-1M's shape)
and ``10m`` (ten million ratings over a 20,000-movie catalogue, the shape of ML-20M's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_course.data.grouplens import OCCUPATION_LABELS_100K, bucketize_age

GENRES = [
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]
# Relative frequency of each genre in MovieLens 100K's u.item (Drama and Comedy dominate).
GENRE_WEIGHTS = np.array(
    [251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56, 61, 247, 101, 251, 71, 27], float
)
GENRE_WORDS = {
    "Action": ["Strike", "Fury", "Mission", "Impact", "Pursuit"],
    "Adventure": ["Quest", "Voyage", "Island", "Expedition", "Treasure"],
    "Animation": ["Toon", "Sketch", "Doodle", "Cartoon", "Puppet"],
    "Children": ["Puppy", "Playground", "Kid", "Magic Box", "Birthday"],
    "Comedy": ["Mix-Up", "Wedding", "Road Trip", "Roommates", "Prank"],
    "Crime": ["Heist", "Alibi", "Syndicate", "Getaway", "Racket"],
    "Documentary": ["Story", "Portrait", "Record", "Chronicle", "Witness"],
    "Drama": ["Promise", "Letters", "Homecoming", "Silence", "Winter"],
    "Fantasy": ["Dragon", "Kingdom", "Spell", "Sorcerer", "Unicorn"],
    "Film-Noir": ["Shadow", "Dame", "Rain", "Cigarette", "Nightfall"],
    "Horror": ["Curse", "Haunting", "Scream", "Cellar", "Ghoul"],
    "Musical": ["Melody", "Rhythm", "Ballroom", "Song", "Encore"],
    "Mystery": ["Riddle", "Clue", "Secret", "Enigma", "Puzzle"],
    "Romance": ["Kiss", "Sweetheart", "Valentine", "Heart", "Honeymoon"],
    "Sci-Fi": ["Galaxy", "Android", "Orbit", "Starship", "Cyborg"],
    "Thriller": ["Conspiracy", "Hostage", "Deadline", "Trap", "Pulse"],
    "War": ["Battalion", "Trenches", "Frontline", "Siege", "Armistice"],
    "Western": ["Saddle", "Outlaw", "Frontier", "Canyon", "Sheriff"],
}
ADJECTIVES = [
    "Last", "Silent", "Golden", "Broken", "Lost", "Wild", "Secret", "Midnight", "Crimson",
    "Distant", "Little", "Endless", "Final", "Hidden", "Burning", "Electric", "Frozen",
    "Lonely", "Perfect", "Restless",
]
OCCUPATIONS = OCCUPATION_LABELS_100K  # MovieLens 100K's occupations -> TFDS's labels
OCCUPATION_WEIGHTS = np.array(
    [79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9, 105, 66, 14, 12, 31, 196, 27, 45], float
)
T_START, T_END = 874_724_710, 893_286_638  # first and last timestamp of MovieLens 100K


@dataclass(frozen=True)
class SyntheticSize:
    n_users: int
    n_movies: int
    mean_ratings_per_user: float
    # Which movies a user rates is drawn without replacement by the Gumbel-top-k trick. Over
    # the whole catalogue that costs users x movies random draws: exact, and seconds up to
    # the 1M shape. The largest size draws each user's keys over a pool of movies sampled
    # by popularity instead (a few times the user's count), which keeps generation in seconds
    # at ten million ratings and keeps the planted popularity and taste structure.
    pooled: bool = False


SIZES = {
    # Small enough that tests and the CI site build finish quickly, big enough to learn from.
    "small": SyntheticSize(n_users=600, n_movies=900, mean_ratings_per_user=60.0),
    # For smoke tests of the benchmarks (tests/dev/test_benchmarks.py): every code path in seconds.
    "tiny": SyntheticSize(n_users=150, n_movies=240, mean_ratings_per_user=35.0),
    # The shape of MovieLens 100K: 943 users, 1,682 movies, about 100,000 ratings.
    "100k": SyntheticSize(n_users=943, n_movies=1682, mean_ratings_per_user=106.0),
    # The shape of MovieLens 1M: 6,040 users, 3,706 rated movies, about 1,000,000 ratings.
    "1m": SyntheticSize(n_users=6040, n_movies=3706, mean_ratings_per_user=165.6),
    # Ten million ratings with ML-20M's catalogue size and ratings per user (20,000 movies).
    "10m": SyntheticSize(n_users=69_000, n_movies=20_000, mean_ratings_per_user=145.0, pooled=True),
}


def generate(size: str | SyntheticSize = "small", seed: int = 0,
             latent_dim: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(ratings, movies)`` frames with TFDS feature names; same seed, same data.
    ``size`` is a name in :data:`SIZES` or a :class:`SyntheticSize`."""
    if isinstance(size, SyntheticSize):
        shape = size
    elif size in SIZES:
        shape = SIZES[size]
    else:
        raise ValueError(f"unknown synthetic size {size!r}; choose one of {sorted(SIZES)}")
    rng = np.random.default_rng(seed)
    n_u, n_m, k = shape.n_users, shape.n_movies, latent_dim

    # Movies: genres first, then an appeal vector near the mean of their genre directions.
    genre_dirs = rng.normal(0.0, 1.0, (len(GENRES), k))
    genre_p = GENRE_WEIGHTS / GENRE_WEIGHTS.sum()
    n_genres = rng.choice([1, 2, 3], size=n_m, p=[0.5, 0.35, 0.15])
    movie_genres = [
        sorted(rng.choice(len(GENRES), size=g, replace=False, p=genre_p)) for g in n_genres
    ]
    appeal = np.stack([genre_dirs[g].mean(axis=0) for g in movie_genres])
    appeal = 0.8 * appeal + rng.normal(0.0, 0.6, (n_m, k))
    popularity = rng.lognormal(0.0, 1.2, n_m)
    movie_bias = rng.normal(0.0, 0.4, n_m) + 0.15 * (np.log(popularity) / 1.2)
    years = np.clip(np.round(1998 - rng.gamma(1.3, 6.0, n_m)), 1922, 1998).astype(int)

    titles, used = [], set()
    for i, genres in enumerate(movie_genres):
        noun = rng.choice(GENRE_WORDS[GENRES[genres[0]]])
        base = f"{rng.choice(ADJECTIVES)} {noun}"
        if rng.random() < 0.5:
            base = f"The {base}"
        title, sequel = base, 2
        while title in used:
            title, sequel = f"{base} {sequel}", sequel + 1
        used.add(title)
        titles.append(f"{title} ({years[i]})")

    # Users: occupation and age shift the taste vector; activity is log-normal, at least 20.
    occupations = list(OCCUPATIONS)
    occ = rng.choice(len(occupations), size=n_u, p=OCCUPATION_WEIGHTS / OCCUPATION_WEIGHTS.sum())
    ages = np.clip(np.round(rng.gamma(7.0, 4.8, n_u)), 7, 73).astype(int)
    occ_dirs = rng.normal(0.0, 0.6, (len(occupations), k))
    age_dir = rng.normal(0.0, 0.6, k)
    taste = occ_dirs[occ] + np.outer((ages - 34.0) / 12.0, age_dir) + rng.normal(0.0, 0.8, (n_u, k))
    user_bias = rng.normal(0.0, 0.35, n_u)
    gender = rng.random(n_u) < 0.71
    zips = [f"{z:05d}" for z in rng.integers(1000, 99999, n_u)]
    activity = rng.lognormal(0.0, 0.9, n_u)
    counts = 20 + np.round(activity / activity.mean() * (shape.mean_ratings_per_user - 20))
    counts = np.minimum(counts, int(0.6 * n_m)).astype(int)

    # Which movies each user rates: popularity times liking, sampled without replacement
    # with the Gumbel-top-k trick (vectorised, instead of a loop of choices).
    if shape.pooled:
        uid, mid, liking = _pooled_selection(rng, taste, appeal, popularity, counts)
    else:
        affinity = taste @ appeal.T / np.sqrt(k)
        keys = np.log(popularity)[None, :] + 1.0 * affinity + rng.gumbel(size=(n_u, n_m))
        order = np.argsort(-keys, axis=1)
        uid = np.repeat(np.arange(n_u), counts)
        mid = np.concatenate([order[u, : counts[u]] for u in range(n_u)])
        liking = affinity[uid, mid]
    counts = np.bincount(uid, minlength=n_u)  # a pooled user may have fewer than asked
    times = np.empty(len(uid), np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for u in range(n_u):
        start = rng.uniform(T_START, T_END - 86_400)
        span = min(rng.exponential(40 * 86_400), T_END - start)
        times[offsets[u] : offsets[u + 1]] = start + rng.uniform(0.0, 1.0, counts[u]) * span
    signal = user_bias[uid] + movie_bias[mid] + 0.9 * liking
    # Centre the selected ratings on MovieLens 100K's mean (3.53): selection favours liked
    # movies, so the raw scores of rated movies are higher than average.
    raw = 3.53 + signal - signal.mean() + rng.normal(0.0, 0.85, len(uid))
    stars = np.clip(np.round(raw), 1, 5)

    # Per-row text columns index arrays of per-movie and per-user objects: every row of a
    # movie shares its title string and genre list (cheap at ten million rows).
    movie_genre_lists = np.empty(n_m, dtype=object)
    movie_genre_lists[:] = [[GENRES[g] for g in gs] for gs in movie_genres]
    occupation_texts = np.array(occupations, dtype=object)[occ]
    # Rows in time order, as a log of events would be; equal timestamps by user id *as text*
    # (the order a sort of the id column gives), found once per user, not per row.
    user_ids = np.array([str(u + 1) for u in range(n_u)], dtype=object)
    text_rank = np.empty(n_u, np.int64)
    text_rank[np.argsort(user_ids.astype(str), kind="stable")] = np.arange(n_u)
    row = np.lexsort((text_rank[uid], times))
    uid, mid, stars, times = uid[row], mid[row], stars[row], times[row]
    ratings = pd.DataFrame(
        {
            "user_id": user_ids[uid],
            "movie_id": np.array([str(m + 1) for m in range(n_m)], dtype=object)[mid],
            "movie_title": np.array(titles, dtype=object)[mid],
            "movie_genres": movie_genre_lists[mid],
            "user_rating": stars.astype("float32"),
            "timestamp": times.astype("int64"),
            "raw_user_age": ages[uid].astype("float32"),
            "bucketized_user_age": bucketize_age(ages)[uid].astype("float32"),
            "user_gender": gender[uid],
            "user_occupation_label": np.array([OCCUPATIONS[o] for o in occupation_texts], dtype=object)[uid],
            "user_occupation_text": occupation_texts[uid],
            "user_zip_code": np.array(zips, dtype=object)[uid],
        }
    )
    movies = pd.DataFrame(
        {
            "movie_id": [str(m + 1) for m in range(n_m)],
            "movie_title": titles,
            "movie_genres": list(movie_genre_lists),
        }
    )
    return ratings, movies


def _pooled_selection(rng: np.random.Generator, taste: np.ndarray, appeal: np.ndarray,
                      popularity: np.ndarray, counts: np.ndarray, chunk: int = 2048):
    """Each user's movies by Gumbel-top-k over a pool drawn by popularity (with replacement,
    four times the user's count plus 50, de-duplicated), keyed by liking plus Gumbel noise.
    Returns (user index, movie index, liking) arrays, users in order; a user whose pool has
    fewer distinct movies than their count keeps the whole pool."""
    n_u, k = taste.shape
    n_m = appeal.shape[0]
    cumulative = np.cumsum(popularity / popularity.sum())
    users, movies, likings = [], [], []
    for start in range(0, n_u, chunk):
        block = np.arange(start, min(n_u, start + chunk))
        pool = 4 * counts[block] + 50
        owner = np.repeat(block, pool)
        drawn = np.minimum(np.searchsorted(cumulative, rng.random(owner.size)), n_m - 1)
        pairs = np.unique(owner.astype(np.int64) * n_m + drawn)  # sorted by user, then movie
        owner, drawn = pairs // n_m, pairs % n_m
        liking = np.einsum("ij,ij->i", taste[owner], appeal[drawn]) / np.sqrt(k)
        keys = liking + rng.gumbel(size=owner.size)
        order = np.lexsort((-keys, owner))
        owner, drawn, liking = owner[order], drawn[order], liking[order]
        rank = np.arange(owner.size) - np.searchsorted(owner, owner, side="left")
        keep = rank < counts[owner]
        users.append(owner[keep])
        movies.append(drawn[keep])
        likings.append(liking[keep])
    return np.concatenate(users), np.concatenate(movies), np.concatenate(likings)
