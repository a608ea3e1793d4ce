"""One rung of the scale ladder: a dataset reduced to integer (user, movie) pairs and split.

Every method of the ladder runs in a fresh process, so the dataset is prepared once per rung
(:func:`prepare_rung`, itself run in a child process: loading ten million ratings into
pandas takes gigabytes) and saved as compact arrays that each method's process reads
(:func:`load_rung`): about nine bytes per rating instead of the rating frame's hundreds.

A rung is named by a data source (anything ``COURSE_DATA`` accepts: ``synthetic:1m``,
``/path/to/ml-1m``) optionally followed by ``@fraction``: ``/path/to/ml-25m@0.1`` keeps a
seeded tenth of the movies and their ratings, so one real dataset can make a ladder of its own.

The split is the course's (``recsys_course.evaluation.random_split``): 20 % of the ratings
for test, then 10 % of the rest for validation (hyper-parameters), the rest to fit. Metrics
are computed for a seeded sample of test users (``eval_users``; validation likewise), over
the full catalogue of the rung's movies.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_course.evaluation import random_split

FIT, VALIDATION, TEST = 0, 1, 2
TEST_FRACTION, VALIDATION_FRACTION, SPLIT_SEED = 0.2, 0.1, 42
EVAL_USERS, VALIDATION_USERS = 2000, 1000  #: users sampled for test and validation metrics


def parse_rung(spec: str) -> tuple[str, float]:
    """``"source@fraction"`` -> ``(source, fraction)``; no ``@`` means the whole source."""
    source, at, fraction = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    try:
        value = float(fraction)
    except ValueError:
        raise ValueError(f"rung {spec!r}: the part after '@' must be a fraction of the movies, e.g. @0.1") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"rung {spec!r}: the fraction of movies must be in (0, 1], got {value}")
    return source, value


@dataclass(frozen=True)
class Rung:
    """A prepared rung: every rating as integer codes and its part of the split.

    ``user``/``item``: ``int32 [n_ratings]`` codes in ``0..n_users-1`` / ``0..n_items-1``
    (items are the movies rated at least once in the rung); ``part``: ``int8`` :data:`FIT`,
    :data:`VALIDATION` or :data:`TEST`; ``eval_users``/``val_users``: sorted codes of the
    sampled test / validation users (each has at least one fit rating and one rating in
    that part). ``meta``: source, description and sizes.
    """

    user: np.ndarray
    item: np.ndarray
    part: np.ndarray
    n_users: int
    n_items: int
    eval_users: np.ndarray
    val_users: np.ndarray
    meta: dict

    def pairs(self, part: int) -> tuple[np.ndarray, np.ndarray]:
        """``(users, items)`` of the ratings in ``part``."""
        mask = self.part == part
        return self.user[mask], self.item[mask]

    def matrix(self, part: int):
        """The 0/1 ``scipy.sparse`` CSR matrix ``[n_users, n_items]`` of ``part``."""
        from recsys_course.baselines import interaction_csr

        users, items = self.pairs(part)
        return interaction_csr(users, items, (self.n_users, self.n_items))


def _sample(users: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(users) <= limit:
        return np.sort(users).astype(np.int32)
    return np.sort(np.random.default_rng(seed).choice(users, size=limit, replace=False)).astype(np.int32)


def prepare_rung(spec: str, folder: str | Path, *, eval_users: int = EVAL_USERS,
                 val_users: int = VALIDATION_USERS) -> dict:
    """Load the rung's source, code, split and sample it, save it in ``folder`` and return
    its ``meta`` (also saved): ``rung``, ``source``, ``description``, ``fraction``,
    ``n_ratings``, ``n_users``, ``n_movies``, ``n_fit``, ``load_seconds``."""
    from recsys_course.data import load_movielens

    source, fraction = parse_rung(spec)
    started = time.perf_counter()
    data = load_movielens(source)
    ratings = data.ratings[["user_id", "movie_id"]]
    description, data_source, data_description = data.summary(), data.source, data.description
    del data
    if fraction < 1.0:
        movies = np.sort(ratings["movie_id"].unique())
        kept = movies[np.random.default_rng(0).random(len(movies)) < fraction]
        ratings = ratings[ratings["movie_id"].isin(kept)]
    user_codes, _ = pd.factorize(ratings["user_id"], sort=True)
    item_codes, items = pd.factorize(ratings["movie_id"], sort=True)
    del ratings
    frame = pd.DataFrame({"row": np.arange(len(user_codes), dtype=np.int64)})
    train, test = random_split(frame, TEST_FRACTION, seed=SPLIT_SEED)
    fit, validation = random_split(train, VALIDATION_FRACTION, seed=SPLIT_SEED)
    part = np.full(len(frame), FIT, dtype=np.int8)
    part[test["row"].to_numpy()] = TEST
    part[validation["row"].to_numpy()] = VALIDATION
    del frame, train, test, fit, validation
    user, item = user_codes.astype(np.int32), item_codes.astype(np.int32)
    n_users, n_items = int(user.max()) + 1, len(items)
    fit_users = np.unique(user[part == FIT])
    tested = np.intersect1d(np.unique(user[part == TEST]), fit_users)
    validated = np.intersect1d(np.unique(user[part == VALIDATION]), fit_users)
    meta = {
        "rung": spec, "source": source, "fraction": fraction, "data_source": data_source,
        "data_description": data_description,
        "description": description if fraction == 1.0 else f"{description}; a seeded {fraction:g} of its movies",
        "n_ratings": int(len(user)), "n_users": n_users, "n_movies": n_items,
        "n_fit": int((part == FIT).sum()), "eval_users": int(min(len(tested), eval_users)),
        "load_seconds": round(time.perf_counter() - started, 2),
    }
    from recsys_course.scale.methods import peak_rss_mb

    meta["prepare_peak_rss_mb"] = peak_rss_mb()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "rung.npz", user=user, item=item, part=part, n_users=n_users, n_items=n_items,
             eval_users=_sample(tested, eval_users, 1), val_users=_sample(validated, val_users, 2))
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


def load_rung(folder: str | Path) -> Rung:
    """The rung saved in ``folder`` by :func:`prepare_rung`."""
    folder = Path(folder)
    with np.load(folder / "rung.npz") as arrays:
        return Rung(user=arrays["user"], item=arrays["item"], part=arrays["part"],
                    n_users=int(arrays["n_users"]), n_items=int(arrays["n_items"]),
                    eval_users=arrays["eval_users"], val_users=arrays["val_users"],
                    meta=json.loads((folder / "meta.json").read_text(encoding="utf-8")))


if __name__ == "__main__":  # python -m recsys_course.scale.rungs SPEC FOLDER (the ladder's preparation)
    prepare_rung(sys.argv[1], sys.argv[2])
