"""The methods of the scale ladder, each run in a fresh process on one prepared rung.

``python -m recsys_course.scale.methods METHOD FOLDER [OPTIONS_JSON]`` runs one method on the
rung saved in ``FOLDER`` (:mod:`recsys_course.scale.rungs`) and writes ``FOLDER/METHOD.json``.
The process reports its timings, quality, ``peak_rss_mb`` (its peak resident memory and
that of the worker processes it started, :func:`peak_rss_mb`) and ``start_rss_mb``: its
resident memory once its libraries are imported, before it reads the rung (what any run of
the method costs before the data counts).

Methods (:data:`METHODS`), all trained on the rung's fit split and measured the same way,
recall@10 of each sampled test user over the full catalogue with the movies they rated in
the fit split excluded (``recsys_course.evaluation``):

* ``popularity``, ``item_knn``, ``ease``: :mod:`recsys_course.baselines` on the sparse
  fit matrix. EASE's lambda is chosen on the validation split (:data:`EASE_GRID`) up to
  :data:`EASE_TUNE_MAX_MOVIES` movies; above that one inverse per candidate costs minutes,
  and the rung reuses the lambda chosen on the largest tuned rung scaled by the ratio of
  the mean number of ratings per movie (``l2_from`` in the options).
* ``two_tower``: the library's id-only two-tower model (``recsys_course.models``) with
  lesson 02's popularity (logQ) correction, one process, stopped early on validation
  recall@10 (at most :data:`MAX_EPOCHS` epochs). Without the correction, the in-batch
  softmax pushes popular movies down epoch after epoch and validation recall falls from
  the first epoch on (measured on ``synthetic:small`` and ``synthetic:100k``).
* ``two_tower_2workers``: the same towers and batches on two worker processes with
  ``MultiWorkerMirroredStrategy`` on 127.0.0.1
  (``recsys_course.cluster.launch.run_multiworker_training``, lesson 09's job); each worker
  takes half of every batch and scores its users against the movies of the whole batch
  (gathered), so every pair meets as many negatives as on one process. Lesson 09's worker
  trains without the popularity correction (one subtraction per logit, a negligible share of
  the time), so this run's time per epoch compares with the one-process run's. It is timed,
  not trained: the first :data:`TWO_WORKER_STEPS` batches of one epoch (all of a shorter
  epoch), the time per step after the warm-up scaled to a whole epoch; no recall.
* ``exact``, ``annoy``, ``hnsw``: top-10 search over the one-process two-tower model's movie
  vectors, for the sampled test users' vectors, one query at a time on one thread. Their
  ``train_seconds`` is the index build; recall@10 is the two towers' served through the
  index (asking for 10 plus the user's rated movies, then excluding those).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recsys_course import evaluation
from recsys_course.scale.rungs import FIT, TEST, VALIDATION, Rung, load_rung

K = 10
NEIGHBOURS = 100  #: item-kNN keeps each movie's 100 most similar movies (not tuned)
EASE_GRID = (50.0, 200.0, 500.0, 2000.0, 5000.0, 20000.0)  #: lambda candidates, chosen on validation
EASE_TUNE_MAX_MOVIES = 5000
#: The two-tower recipe: the library's id-only model (lesson 09's) with batches of 1,024
#: (lesson 02's improved recipe): an in-batch softmax costs batch size x embedding size per
#: pair, so smaller batches cost less per epoch on one core.
TOWER = {"embedding_dim": 32, "batch_size": 1024, "learning_rate": 0.1, "seed": 42}
MAX_EPOCHS, PATIENCE = 10, 1  #: stop after PATIENCE epochs without a better validation recall
#: The two-worker job is timed on at most this many global batches of one epoch: its time
#: per step does not depend on how many batches follow, and a whole epoch of the largest
#: rung would take minutes of exchanges on loopback.
TWO_WORKER_STEPS = 600
NOT_TRAINED = "train_seconds and recall@10: timed on a slice of one epoch, not trained to the end"
ANNOY_TREES, HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 20, 16, 64, 64
QUERIES = 500  #: queries timed per index (the first sampled test users)
EVAL_BATCH = 256  #: users scored at once


def rss_mb(field: str = "VmRSS") -> float | None:
    """This process's resident memory (``VmRSS``) or its peak since it started this
    program (``VmHWM``) in MB, from ``/proc/self/status`` (Linux); ``None`` elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def peak_rss_mb() -> float | None:
    """The peak resident memory of this process and of the processes it started and
    waited for: the larger of its own ``VmHWM`` and ``getrusage(RUSAGE_CHILDREN).ru_maxrss``
    (the largest waited-for child; Linux reports kilobytes).

    Why not the parent's ``os.wait4``: on Linux a process's ``ru_maxrss`` keeps the peak of
    the memory it had *before* ``exec``, which for a child is its parent's (a copy, or the
    parent's own with ``vfork``), so a large parent would inflate every child's number.
    ``VmHWM`` starts afresh at ``exec``. A child of this process inherits this process's
    peak the same way, which never exceeds the value taken here."""
    import resource

    own = rss_mb("VmHWM")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if own is None:
        return None
    return round(max(own, children), 1)


# ----------------------------------------------------------------------------- quality
def recall_by_user(rung: Rung, score_rows: Callable[[np.ndarray], np.ndarray], users: np.ndarray,
                   part: int = TEST, seen=None) -> np.ndarray:
    """``float [len(users)]``: each user's recall@10 against their ratings in ``part``,
    ranking every movie with ``score_rows(user_codes) -> float [n, n_items]`` and
    excluding the movies each rated in the fit split (``seen``: that CSR matrix, built
    when not given)."""
    seen = rung.matrix(FIT) if seen is None else seen
    relevant = rung.matrix(part)
    values = []
    for start in range(0, len(users), EVAL_BATCH):
        batch = users[start:start + EVAL_BATCH]
        ranked = evaluation.top_k(score_rows(batch), K, exclude=seen[batch].toarray() > 0)
        truth = relevant[batch].toarray() > 0
        values += [evaluation.recall_at_k(ranked[i:i + 1], truth[i:i + 1], K) for i in range(len(batch))]
    return np.asarray(values, dtype=np.float64)


def _quality(values: np.ndarray) -> dict:
    return {"recall@10": float(np.mean(values)), "recall@10_se": evaluation.standard_error(values),
            "users": int(len(values))}


def _save_users(folder: Path, method: str, values: np.ndarray) -> None:
    np.save(folder / f"{method}.recall.npy", values)


# ----------------------------------------------------------------------------- baselines
def run_popularity(folder: Path) -> dict:
    from recsys_course import baselines

    start = rss_mb()
    rung = load_rung(folder)
    started = time.perf_counter()
    fit = rung.matrix(FIT)
    counts = baselines.popularity_counts(fit)
    seconds = time.perf_counter() - started
    values = recall_by_user(rung, lambda users: np.broadcast_to(counts, (len(users), len(counts))),
                            rung.eval_users, seen=fit)
    _save_users(folder, "popularity", values)
    return {"start_rss_mb": start, "train_seconds": seconds, **_quality(values)}


def run_item_knn(folder: Path, neighbours: int = NEIGHBOURS) -> dict:
    from recsys_course import baselines

    start = rss_mb()
    rung = load_rung(folder)
    started = time.perf_counter()
    fit = rung.matrix(FIT)
    weights = baselines.item_knn_weights(fit, neighbours=neighbours)
    seconds = time.perf_counter() - started
    values = recall_by_user(rung, lambda users: baselines.scores(fit[users], weights), rung.eval_users, seen=fit)
    _save_users(folder, "item_knn", values)
    return {"start_rss_mb": start, "train_seconds": seconds, "neighbours": neighbours, **_quality(values)}


def run_ease(folder: Path, l2_from: dict | None = None, grid: tuple[float, ...] = EASE_GRID) -> dict:
    """EASE with lambda chosen on validation among ``grid``, or, above
    :data:`EASE_TUNE_MAX_MOVIES` movies when ``l2_from`` is given, scaled from ``l2_from`` =
    ``{"l2": value, "mean_count": ratings per movie where it was chosen}``."""
    from recsys_course import baselines

    start = rss_mb()
    rung = load_rung(folder)
    fit = rung.matrix(FIT)
    mean_count = fit.nnz / max(1, int((baselines.popularity_counts(fit) > 0).sum()))
    tuning: dict[str, float] = {}
    tune_started = time.perf_counter()
    if l2_from is None or rung.n_items <= EASE_TUNE_MAX_MOVIES:
        for l2 in grid:
            weights = baselines.ease_weights(fit, l2)
            tuning[f"{l2:g}"] = float(np.mean(recall_by_user(
                rung, lambda users, w=weights: baselines.scores(fit[users], w), rung.val_users,
                part=VALIDATION, seen=fit)))
            del weights  # one n x n matrix at a time: the peak is one fit's
        l2 = float(max(grid, key=lambda value: tuning[f"{value:g}"]))
        how = "chosen on validation"
    else:
        l2 = float(l2_from["l2"]) * mean_count / float(l2_from["mean_count"])
        how = "scaled from a smaller rung's choice by the ratio of ratings per movie"
    tuning_seconds = time.perf_counter() - tune_started
    phases: dict[str, float] = {}
    started = time.perf_counter()
    weights = baselines.ease_weights(fit, l2, timings=phases)
    seconds = time.perf_counter() - started
    values = recall_by_user(rung, lambda users: baselines.scores(fit[users], weights), rung.eval_users, seen=fit)
    _save_users(folder, "ease", values)
    return {"start_rss_mb": start, "train_seconds": seconds, "inverse_seconds": phases["inverse_seconds"],
            "gram_seconds": phases["gram_seconds"], "l2": l2, "l2_how": how, "validation_recall@10": tuning,
            "tuning_seconds": tuning_seconds, "mean_ratings_per_movie": mean_count, **_quality(values)}


# ----------------------------------------------------------------------------- two towers
def _id_frames(rung: Rung, part: int = FIT):
    import pandas as pd

    users, items = rung.pairs(part)
    train = pd.DataFrame({"user_id": users.astype(str), "movie_id": items.astype(str)})
    movies = pd.DataFrame({"movie_id": np.arange(rung.n_items).astype(str)})
    return train, movies


def _vector_scores(user_vectors: dict, movie_vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of users (codes) from ``user_vectors[code]`` and movie vectors in code order."""
    return lambda users: np.stack([user_vectors[int(u)] for u in users]) @ movie_vectors.T


def steady_epoch_seconds(epoch_seconds: list[float]) -> float:
    """The time per epoch a run reports: its fastest epoch after the first (the first also
    traces the training step, seconds on any data), or its only one.

    The fastest, not the median: the towers train beside the baselines
    (``recsys_course.tooling.benchmarks.ladder``), and an epoch that shared the machine's
    memory with EASE's inverse took up to a fifth longer (10M ratings: 128 and 135 s beside
    it, 109 s alone), so the fastest epoch is the one closest to the towers' own cost."""
    if not epoch_seconds:
        raise ValueError("no epoch was timed")
    later = epoch_seconds[1:] or epoch_seconds
    return float(min(later))


def run_two_tower(folder: Path, max_epochs: int = MAX_EPOCHS) -> dict:
    import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    import tensorflow as tf

    from recsys_course.env import seed_everything
    from recsys_course.models import build_two_tower
    from recsys_course.models.features import candidate_probability, pair_features
    from recsys_course.models.training import fit_with_loss_per_example

    start = rss_mb()
    rung = load_rung(folder)
    seed_everything(TOWER["seed"])
    seen = rung.matrix(FIT)
    started = time.perf_counter()
    train, movies = _id_frames(rung)
    codes = np.arange(rung.n_items)
    movie_ids = codes.astype(str)  # the catalogue in code order
    model = build_two_tower(np.unique(train["user_id"].to_numpy()), movie_ids, TOWER["embedding_dim"],
                            TOWER["learning_rate"], correction=True)
    pairs = tf.data.Dataset.from_tensor_slices(pair_features(train, probability=candidate_probability(train)))
    batches = pairs.shuffle(len(train), seed=TOWER["seed"], reshuffle_each_iteration=True).batch(TOWER["batch_size"])
    n_fit = len(train)
    del train
    build_seconds = time.perf_counter() - started

    def vectors(users: np.ndarray) -> tuple[dict, np.ndarray]:
        user_vectors = model.query_model(tf.constant(users.astype(str))).numpy()
        movie_vectors = model.candidate_model(tf.constant(movie_ids)).numpy()
        return dict(zip(users.tolist(), user_vectors)), movie_vectors

    class EarlyStopOnValidation(tf.keras.callbacks.Callback):
        """Times each epoch, then measures validation recall@10; keeps the best weights and
        stops after :data:`PATIENCE` epochs in a row that do not improve it."""

        def __init__(self):
            super().__init__()
            self.epoch_seconds, self.recalls, self.best, self._t0 = [], [], None, 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_seconds.append(time.perf_counter() - self._t0)
            by_user, movie_vectors = vectors(rung.val_users)
            recall = float(np.mean(recall_by_user(rung, _vector_scores(by_user, movie_vectors), rung.val_users,
                                                  part=VALIDATION, seen=seen)))
            self.recalls.append(recall)
            if self.best is None or recall > self.best[0]:
                self.best = (recall, epoch + 1, [w.copy() for w in model.get_weights()])
            elif epoch + 1 - self.best[1] >= PATIENCE:
                self.model.stop_training = True

    stopper = EarlyStopOnValidation()
    history = fit_with_loss_per_example(model, batches, n_fit, epochs=max_epochs, callbacks=[stopper])
    model.set_weights(stopper.best[2])
    by_user, movie_vectors = vectors(rung.eval_users)
    values = recall_by_user(rung, _vector_scores(by_user, movie_vectors), rung.eval_users, seen=seen)
    _save_users(folder, "two_tower", values)
    np.savez(folder / "vectors.npz", movies=movie_vectors.astype(np.float32),
             users=np.stack([by_user[int(u)] for u in rung.eval_users]).astype(np.float32))
    epochs = stopper.best[1]
    seconds_per_epoch = steady_epoch_seconds(stopper.epoch_seconds)
    return {
        "start_rss_mb": start, "train_seconds": build_seconds + float(np.sum(stopper.epoch_seconds)),
        "seconds_per_epoch": seconds_per_epoch, "epoch_seconds": stopper.epoch_seconds, "epochs": epochs,
        "epochs_run": len(stopper.epoch_seconds),
        "validation_recall@10": stopper.recalls, "loss_per_example": history["loss_per_example"],
        "correction": True, **TOWER, **_quality(values),
    }


def run_two_tower_2workers(folder: Path, steps: int = TWO_WORKER_STEPS) -> dict:
    """The two-worker job timed on the first ``steps`` global batches of one epoch (the
    whole epoch when it has fewer): ``seconds_per_epoch`` is the time per step after the
    warm-up times the epoch's number of batches. Timed, not trained to the end, so no
    recall is measured."""
    import math

    from recsys_course.cluster.launch import run_multiworker_training

    start = rss_mb()
    rung = load_rung(folder)
    train, movies = _id_frames(rung)
    batches_per_epoch = math.ceil(len(train) / TOWER["batch_size"])
    run = run_multiworker_training(
        train, movies, n_workers=2, epochs=1, global_batch_size=TOWER["batch_size"],
        embedding_dim=TOWER["embedding_dim"], learning_rate=TOWER["learning_rate"], seed=TOWER["seed"],
        gather_negatives=True, timeout=6 * 3600.0, steps_per_epoch=min(int(steps), batches_per_epoch))
    return {"start_rss_mb": start, "train_seconds": None, "recall@10": None, "not_measured": NOT_TRAINED,
            "seconds_per_epoch": run.seconds_per_step * batches_per_epoch,
            "seconds_per_step": run.seconds_per_step, "steps_timed": run.steps,
            "batches_per_epoch": batches_per_epoch, "fit_seconds": run.fit_seconds,
            "wall_seconds_with_startup": run.wall_seconds, "workers": 2,
            "per_replica_batch_size": run.per_replica_batch_size, "gather_negatives": True}


# ----------------------------------------------------------------------------- search
def _search_setup(folder: Path):
    rung = load_rung(folder)
    with np.load(folder / "vectors.npz") as arrays:
        items, users = np.ascontiguousarray(arrays["movies"]), np.ascontiguousarray(arrays["users"])
    return rung, items, users


def _run_search(folder: Path, name: str, build: Callable[[np.ndarray], object],
                search: Callable[[object, np.ndarray, int], np.ndarray], queries: int) -> dict:
    """Build ``name``'s index over the movie vectors, time one-at-a-time top-10 queries on one
    thread, measure recall@10 against exact search and the held-out recall through it."""
    from recsys_course.ann.compare import exact_top_k_batched, one_thread, recall_rows
    from recsys_course.ann.sweep import timed_queries

    start = rss_mb()
    rung, items, users = _search_setup(folder)
    queries = users[:queries]
    started = time.perf_counter()
    index = build(items)
    build_seconds = time.perf_counter() - started
    with one_thread():
        qps, found = timed_queries(lambda q: search(index, q, K), queries, repeats=3)
    truth = exact_top_k_batched(items, queries, K)
    seen = rung.matrix(FIT)
    relevant = rung.matrix(TEST)
    values = []
    for row, user in enumerate(rung.eval_users):
        rated = set(seen[[user]].indices.tolist())
        listed = [int(i) for i in search(index, users[row], K + len(rated)) if int(i) not in rated][:K]
        ranked = np.full((1, K), evaluation.PAD, dtype=np.int64)
        ranked[0, : len(listed)] = listed
        values.append(evaluation.recall_at_k(ranked, relevant[[user]].toarray() > 0, K))
    values = np.asarray(values)
    _save_users(folder, name, values)
    return {"start_rss_mb": start, "train_seconds": build_seconds, "query_ms": 1000.0 / qps,
            "recall@10_vs_exact": recall_rows(found, truth, K), "queries": int(len(queries)),
            "index_mb": _index_mb(index), **_quality(values)}


def _index_mb(index) -> float:
    if isinstance(index, np.ndarray):
        return index.nbytes / 1e6
    if hasattr(index, "get_n_trees"):  # Annoy: the saved file's size
        from recsys_course.ann.sweep import save_to_temp

        size, path = save_to_temp(index)
        index.unload()
        Path(path).unlink()
        return size / 1e6
    from recsys_course.ann.compare import load_faiss

    return load_faiss().serialize_index(index).nbytes / 1e6


def run_exact(folder: Path, queries: int = QUERIES) -> dict:
    from recsys_course.ann.compare import exact_top_k_batched

    return _run_search(folder, "exact", lambda items: items,
                       lambda items, q, k: exact_top_k_batched(items, q[None, :], k)[0], queries)


def run_annoy(folder: Path, queries: int = QUERIES) -> dict:
    from annoy import AnnoyIndex

    def build(items: np.ndarray):
        index = AnnoyIndex(items.shape[1], "dot")  # Annoy's own inner-product reduction
        index.set_seed(42)
        for i, vector in enumerate(items):
            index.add_item(i, vector)
        index.build(ANNOY_TREES, n_jobs=1)
        return index

    return {**_run_search(folder, "annoy", build,
                          lambda index, q, k: np.asarray(index.get_nns_by_vector(q.tolist(), k)), queries),
            "n_trees": ANNOY_TREES, "search_k": "n_trees * k (Annoy's default)"}


def run_hnsw(folder: Path, queries: int = QUERIES) -> dict:
    from recsys_course.ann.compare import load_faiss

    faiss = load_faiss()
    if faiss is None:
        raise ModuleNotFoundError('HNSW needs faiss-cpu: pip install -e ".[ann]"')

    def build(items: np.ndarray):
        index = faiss.IndexHNSWFlat(items.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(items)
        return index

    def search(index, q: np.ndarray, k: int) -> np.ndarray:
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
        return index.search(q[None, :].astype(np.float32), k)[1][0]

    return {**_run_search(folder, "hnsw", build, search, queries), "M": HNSW_M, "efSearch": HNSW_EF_SEARCH,
            "efConstruction": HNSW_EF_CONSTRUCTION}


#: method name -> its function ``(folder, **options) -> result``
METHODS: dict[str, Callable[..., dict]] = {
    "popularity": run_popularity,
    "item_knn": run_item_knn,
    "ease": run_ease,
    "two_tower": run_two_tower,
    "two_tower_2workers": run_two_tower_2workers,
    "exact": run_exact,
    "annoy": run_annoy,
    "hnsw": run_hnsw,
}


def main(argv: list[str]) -> int:
    import signal

    # SIGTERM (the ladder stopping this run) ends the process through Python, so the
    # two-worker run's clean-up (recsys_course.cluster.launch.run_tasks) kills its workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    method, folder = argv[0], Path(argv[1])
    options = json.loads(argv[2]) if len(argv) > 2 else {}
    if method not in METHODS:
        print(f"unknown method {method!r}; known: {', '.join(METHODS)}", file=sys.stderr)
        return 2
    result = METHODS[method](folder, **options)
    result["peak_rss_mb"] = peak_rss_mb()
    (folder / f"{method}.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
