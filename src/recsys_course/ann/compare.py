"""Annoy among its peers: one corpus, one set of queries, one ground truth, several index
families, measured the same way (lesson 07 section 9 and ``course bench 07``).

Every measurement returns rows of the same shape, so one table and one Pareto plot can hold
them all::

    {"library", "setting", "recall@10", "qps", "build_seconds", "index_mb"}

Families measured (each skipped, with the reason, when its package is missing):

* ``exact_single``: the lesson's ``exact_top_k``, one query at a time (the baseline).
* ``exact_batched``: one matrix product for a batch of queries, then ``argpartition`` and a
  sort of the ``k`` best per row (:func:`exact_top_k_batched`).
* ``annoy``: random-projection forest over the inner-product reduction (the lesson's own).
* ``hnsw``: Faiss's ``IndexHNSWFlat`` (a hierarchical navigable small-world graph) searched
  with the inner product (package ``faiss-cpu``, extra ``ann``).
* ``scann``: Google's ScaNN (partition tree, anisotropic quantisation, exact re-ordering),
  NumPy API, when an installed ``scann`` can be imported without breaking TensorFlow.

Every search runs on one thread (index builds may use every core), so the numbers compare
work per core. That also keeps them meaningful on a busy machine, where BLAS threads waiting
for each other can make a multi-threaded matrix product several times slower than one
thread. On an idle machine with many cores, batched exact search can additionally spread
its matrix products over the cores; the single-query indexes scale by answering
different queries on different cores.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from recsys_course.ann.sweep import annoy_sweep, timed_queries

HNSW_INSTALL = 'pip install "faiss-cpu==1.15.1"  (or: pip install -e ".[ann]")'
SCANN_WHY_NOT = (
    "scann 1.4.2 (the newest release) ships TensorFlow ops built for TensorFlow 2.20; next to "
    "TensorFlow 2.21 `import scann` fails to load them (undefined absl symbol), and because "
    "TensorFlow Recommenders imports scann when it is installed, it also breaks `import "
    "tensorflow_recommenders`. Install scann only in a separate environment without TFRS."
)


def recall_rows(found: Sequence[Sequence[int]], truth: np.ndarray, k: int) -> float:
    """Mean share of each row of ``truth[:, :k]`` present in the first ``k`` of ``found``."""
    return float(np.mean([len(set(np.asarray(f)[:k].tolist()) & set(t[:k].tolist())) / k
                          for f, t in zip(found, truth)]))


# ------------------------------------------------------------------ exact, batched

def exact_top_k_batched(
    items: np.ndarray, queries: np.ndarray, k: int, item_block: int | None = None
) -> np.ndarray:
    """Exact inner-product top-``k`` for a batch of queries at once, best first.

    One matrix product per block of items (``queries @ block.T``), ``argpartition`` of each
    row to keep its ``k`` best, a merge with the best so far,
    and a final sort of the ``k`` survivors per row. Blocking over items bounds memory at
    ``len(queries) * item_block`` floats whatever the catalogue size; by default a block's
    scores take about 4 MB, so they stay in the processor's cache for the selection.

    Returns:
        ``int64 [len(queries), min(k, n_items)]`` row indices into ``items``.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(k, len(items))
    item_block = item_block or max(4 * k, 2**20 // len(queries))
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    for start in range(0, len(items), item_block):
        scores = queries @ items[start:start + item_block].T
        keep = min(k, scores.shape[1])
        # The k largest sit at the end after partitioning at n - k (partitioning -scores
        # would first copy the whole block just to negate it).
        part = np.argpartition(scores, scores.shape[1] - keep, axis=1)[:, -keep:]
        ids = np.concatenate([best_ids, part + start], axis=1)
        vals = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        if ids.shape[1] > k:
            top = np.argpartition(vals, vals.shape[1] - k, axis=1)[:, -k:]
            ids, vals = np.take_along_axis(ids, top, axis=1), np.take_along_axis(vals, top, axis=1)
        best_ids, best_scores = ids, vals
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1)


def batched_exact_sweep(
    items: np.ndarray, queries: np.ndarray, truth: np.ndarray, *, k: int = 10,
    batch_sizes: Sequence[int] = (1, 4, 16, 64, 200), repeats: int = 2,
) -> pd.DataFrame:
    """Queries per second of :func:`exact_top_k_batched` for each batch size.

    The whole query set runs in consecutive batches of ``batch_size``; the fastest of
    ``repeats`` passes counts. ``index_mb`` is the raw matrix (there is no index)."""
    rows = []
    for batch in batch_sizes:
        batch = int(min(batch, len(queries)))
        best, found = float("inf"), None
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            parts = [exact_top_k_batched(items, queries[i:i + batch], k) for i in range(0, len(queries), batch)]
            best = min(best, time.perf_counter() - started)
            found = found if found is not None else np.concatenate(parts)
        rows.append({"library": "exact_batched", "setting": f"batch={batch}", "batch_size": batch,
                     f"recall@{k}": round(recall_rows(found, truth, k), 4),
                     "qps": round(len(queries) / best, 1), "build_seconds": 0.0,
                     "index_mb": round(items.nbytes / 1e6, 1)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ optional libraries

def load_faiss():
    """The ``faiss`` module, or ``None`` when ``faiss-cpu`` is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def load_scann() -> tuple[object | None, str]:
    """``(scann_ops_pybind, "")`` when ScaNN's NumPy API is usable, else ``(None, reason)``.

    ScaNN's package ``__init__`` also loads its TensorFlow ops whenever TensorFlow is
    importable; those are built for one TensorFlow version and fail on others. The NumPy API
    does not need them, so TensorFlow is hidden from that one import.
    """
    try:
        found = importlib.util.find_spec("scann") is not None
    except ValueError:  # sys.modules["scann"] is None: deliberately hidden
        found = False
    if not found:
        return None, "scann is not installed. " + SCANN_WHY_NOT
    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ModuleNotFoundError
    try:
        from scann.scann_ops.py import scann_ops_pybind
    except Exception as error:  # any failure means "skip ScaNN", with the reason
        return None, f"scann is installed but cannot be imported ({error}). " + SCANN_WHY_NOT
    finally:
        if saved is None:
            sys.modules.pop("tensorflow", None)
        else:
            sys.modules["tensorflow"] = saved
    return scann_ops_pybind, ""


@contextlib.contextmanager
def one_thread():
    """Inside: BLAS (via ``threadpoolctl``, when installed) and Faiss use one thread, as one
    request of an online service does. A single matrix-vector product gains little from a
    second thread, and on a busy machine the threads' waiting for each other costs far more.
    Without ``threadpoolctl`` BLAS keeps its default thread count."""
    with contextlib.ExitStack() as stack:
        if single_thread_available():
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        faiss = load_faiss() if "faiss" in sys.modules else None
        if faiss is not None:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            stack.callback(faiss.omp_set_num_threads, before)
        yield


def single_thread_available() -> bool:
    """True when :func:`one_thread` can limit BLAS (``threadpoolctl`` is installed)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def hnsw_sweep(
    items: np.ndarray, queries: np.ndarray, truth: np.ndarray, *, k: int = 10,
    m_grid: Sequence[int] = (16,), ef_construction: int = 64,
    ef_search_grid: Sequence[int] = (16, 32, 64, 128, 256), repeats: int = 2,
) -> pd.DataFrame:
    """HNSW (Faiss ``IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``) over the raw items.

    ``M`` (links per node) is fixed at build time, ``efSearch`` (the length of the candidate
    list kept while walking the graph) per query. The graph is searched with the inner
    product directly: with the angular/Euclidean reduction of the lesson the padded query
    lies far from every item (all on a sphere of radius ``M``), and the greedy walk does much
    worse (recall@10 0.63 at ``efSearch=128`` against 0.99, 200,000 synthetic items).
    Building uses every core; each query runs on one thread.
    """
    faiss = load_faiss()
    if faiss is None:
        raise ModuleNotFoundError(f"HNSW needs faiss-cpu: {HNSW_INSTALL}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = []
    for m in m_grid:
        index = faiss.IndexHNSWFlat(items.shape[1], int(m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        started = time.perf_counter()
        index.add(np.ascontiguousarray(items, dtype=np.float32))
        build_seconds = time.perf_counter() - started
        size_mb = faiss.serialize_index(index).nbytes / 1e6
        with one_thread():
            for ef in ef_search_grid:
                index.hnsw.efSearch = int(ef)
                qps, found = timed_queries(lambda q, index=index: index.search(q[None, :], k)[1][0], queries, repeats)
                rows.append({"library": "hnsw", "setting": f"M={m}, efSearch={ef}",
                             f"recall@{k}": round(recall_rows(found, truth, k), 4), "qps": round(qps, 1),
                             "build_seconds": round(build_seconds, 2), "index_mb": round(size_mb, 1)})
        del index
    return pd.DataFrame(rows)


def scann_sweep(
    items: np.ndarray, queries: np.ndarray, truth: np.ndarray, *, k: int = 10,
    leaves_to_search_grid: Sequence[int] = (10, 25, 50, 100), reorder: int = 100,
    repeats: int = 2, seed: int = 42,
) -> pd.DataFrame:
    """ScaNN with a partition tree (about sqrt(n) leaves), anisotropic asymmetric hashing and
    exact re-ordering of the best ``reorder`` candidates, for inner-product search.

    Raises ``ModuleNotFoundError`` with the reason when ScaNN cannot be used here."""
    pybind, reason = load_scann()
    if pybind is None:
        raise ModuleNotFoundError(reason)
    n_leaves = int(max(16, round(np.sqrt(len(items)))))
    started = time.perf_counter()
    searcher = (
        pybind.builder(items, k, "dot_product")
        .tree(num_leaves=n_leaves, num_leaves_to_search=min(leaves_to_search_grid),
              training_sample_size=min(len(items), 250_000))
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(reorder)
        .build()
    )
    build_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        searcher.serialize(folder)
        size_mb = sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6
    rows = []
    for leaves in leaves_to_search_grid:
        qps, found = timed_queries(
            lambda q, leaves=leaves: searcher.search(q, final_num_neighbors=k, leaves_to_search=int(leaves),
                                      pre_reorder_num_neighbors=reorder)[0],
            queries, repeats)
        rows.append({"library": "scann", "setting": f"leaves={n_leaves}, search {leaves}, reorder {reorder}",
                     f"recall@{k}": round(recall_rows(found, truth, k), 4), "qps": round(qps, 1),
                     "build_seconds": round(build_seconds, 2), "index_mb": round(size_mb, 1)})
    return pd.DataFrame(rows)


def annoy_rows(
    augmented_items: np.ndarray, queries: np.ndarray, truth: np.ndarray, *,
    build_index: Callable, search: Callable, recall_at_k: Callable, k: int = 10,
    n_trees_grid: Sequence[int] = (10, 30), search_k_grid: Sequence[int] = (1000, 2000, 5000, 10000, 30000),
    repeats: int = 2, seed: int = 42,
) -> pd.DataFrame:
    """Annoy over the reduction (the lesson's functions), in the common row format."""
    table = annoy_sweep(augmented_items, queries, truth, build_index=build_index, search=search,
                        recall_at_k=recall_at_k, n_trees_grid=n_trees_grid, search_k_grid=search_k_grid,
                        metric="angular", k=k, repeats=repeats, seed=seed)
    table.insert(0, "library", "annoy")
    table.insert(1, "setting", [f"n_trees={t}, search_k={s}" for t, s in zip(table["n_trees"], table["search_k"])])
    return table[["library", "setting", f"recall@{k}", "qps", "build_seconds", "index_mb", "n_trees", "search_k"]]


def compare_libraries(
    items: np.ndarray, queries: np.ndarray, lesson, *, k: int = 10, repeats: int = 2, seed: int = 42,
    annoy_trees: Sequence[int] = (10, 30), annoy_search_k: Sequence[int] = (1000, 2000, 5000, 10000, 30000),
    hnsw_m: Sequence[int] = (16,), hnsw_ef: Sequence[int] = (16, 32, 64, 128, 256),
    scann_leaves: Sequence[int] = (10, 25, 50, 100),
    batch_sizes: Sequence[int] = (1, 4, 16, 64, 200),
    log: Callable[[str], None] = lambda message: None,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """Every family on the same items, queries and ground truth, in one run.

    ``lesson`` provides ``exact_top_k``, ``augment_for_mips``, ``build_annoy_index``,
    ``mips_search`` and ``recall_against_exact`` (the reference solutions or a learner's).

    Returns:
        ``(table, truth, skipped)``: one row per (library, setting) with columns
        ``library, setting, recall@k, qps, build_seconds, index_mb``; the exact ids
        ``int64 [n_queries, k]``; and ``{library: reason}`` for the families not measured.
    """
    log("exact search, one query at a time")
    with one_thread():
        qps, answers = timed_queries(lambda q: lesson.exact_top_k(items, q, k), queries, repeats)
    truth = np.stack([np.asarray(a, dtype=np.int64) for a in answers])
    parts = [pd.DataFrame([{"library": "exact_single", "setting": "NumPy, one query", f"recall@{k}": 1.0,
                            "qps": round(qps, 1), "build_seconds": 0.0, "index_mb": round(items.nbytes / 1e6, 1)}])]
    log("exact search, batched")
    with one_thread():
        parts.append(batched_exact_sweep(items, queries, truth, k=k, batch_sizes=batch_sizes, repeats=repeats))
    augmented, _ = lesson.augment_for_mips(items)
    log("Annoy")
    with one_thread():  # Annoy's queries are single-threaded anyway; its build too (n_jobs=1)
        parts.append(annoy_rows(augmented, queries, truth, build_index=lesson.build_annoy_index,
                                search=lesson.mips_search, recall_at_k=lesson.recall_against_exact, k=k,
                                n_trees_grid=annoy_trees, search_k_grid=annoy_search_k, repeats=repeats,
                                seed=seed))
    del augmented
    skipped: dict[str, str] = {}
    log("HNSW")
    try:
        parts.append(hnsw_sweep(items, queries, truth, k=k, m_grid=hnsw_m, ef_search_grid=hnsw_ef,
                                repeats=repeats))
    except ModuleNotFoundError as error:
        skipped["hnsw"] = str(error)
    log("ScaNN")
    try:
        with one_thread():
            parts.append(scann_sweep(items, queries, truth, k=k, leaves_to_search_grid=scann_leaves,
                                     repeats=repeats, seed=seed))
    except ModuleNotFoundError as error:
        skipped["scann"] = str(error)
    table = pd.concat(parts, ignore_index=True)
    single = float(table.loc[table["library"] == "exact_single", "qps"].iloc[0])
    table["speedup"] = (table["qps"] / single).round(2)
    return table, truth, skipped


def pareto_front(rows: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The rows no other row beats on both recall@k and QPS, by increasing recall."""
    rows = rows.sort_values([f"recall@{k}", "qps"], ascending=[False, False])
    keep, fastest = [], -np.inf
    for index, row in rows.iterrows():
        if row["qps"] > fastest:
            keep.append(index)
            fastest = row["qps"]
    return rows.loc[keep].sort_values(f"recall@{k}")


def best_at_recall(table: pd.DataFrame, min_recall: float, k: int = 10) -> dict[str, dict]:
    """For each library, its fastest setting with recall@k >= ``min_recall``:
    ``{library: {"qps", "speedup_vs_exact_single", "setting", "recall@k"}}`` (libraries that
    never reach it are left out)."""
    single = float(table.loc[table["library"] == "exact_single", "qps"].iloc[0])
    best = {}
    for library, rows in table.groupby("library", sort=False):
        good = rows[rows[f"recall@{k}"] >= min_recall]
        if good.empty:
            continue
        row = good.sort_values("qps", ascending=False).iloc[0]
        best[library] = {"qps": float(row["qps"]), "speedup_vs_exact_single": round(float(row["qps"]) / single, 2),
                         "setting": row["setting"], f"recall@{k}": float(row[f"recall@{k}"])}
    return best


def crossover_batch_size(table: pd.DataFrame, library: str = "annoy", min_recall: float = 0.95,
                         k: int = 10) -> int | None:
    """Smallest measured batch size at which batched exact search answers more queries per
    second than ``library``'s fastest setting with recall@k >= ``min_recall`` (``None`` when
    no measured batch size does, or the library never reaches that recall)."""
    best = best_at_recall(table, min_recall, k).get(library)
    if best is None:
        return None
    batched = table[table["library"] == "exact_batched"].sort_values("batch_size")
    faster = batched[batched["qps"] > best["qps"]]
    return None if faster.empty else int(faster["batch_size"].iloc[0])


def plot_pareto(table: pd.DataFrame, ax, k: int = 10, title: str = "") -> None:
    """recall@k (x) against QPS (y, log) for every library; batched exact as its own points."""
    styles = {"exact_single": ("black", "s"), "exact_batched": ("grey", "D"), "annoy": ("tab:blue", "o"),
              "hnsw": ("tab:orange", "^"), "scann": ("tab:green", "v")}
    for library, rows in table.groupby("library", sort=False):
        colour, marker = styles.get(library, ("tab:red", "x"))
        rows = rows.sort_values(f"recall@{k}")
        if library == "annoy":  # one curve per forest size, with the same colour
            for n_trees, sub in rows.groupby(rows["setting"].str.extract(r"n_trees=(\d+)")[0], sort=False):
                ax.plot(sub[f"recall@{k}"], sub["qps"], marker=marker, color=colour,
                        alpha=0.5 + 0.5 * (int(n_trees) >= 30), label=f"annoy, {n_trees} trees")
        elif library == "exact_batched":
            ax.scatter(rows[f"recall@{k}"], rows["qps"], marker=marker, color=colour, label="exact, batched")
            for number, (_, row) in enumerate(rows.sort_values("qps").iterrows()):
                ax.annotate(f"B={row['batch_size']:.0f}", (row[f"recall@{k}"], row["qps"]), fontsize=7,
                            textcoords="offset points", xytext=(-40 if number % 2 else 8, -3))
        else:
            ax.plot(rows[f"recall@{k}"], rows["qps"], marker=marker, color=colour, label=library.replace("_", ", "))
    ax.set(yscale="log", xlabel=f"recall@{k} against exact search", ylabel="queries per second (log)", title=title)
    ax.legend(fontsize=8)


RECORDED = Path(__file__).parent / "lesson_07_recorded.json"


def recorded_benchmark(path: str | os.PathLike = RECORDED) -> dict | None:
    """The recorded run of ``course bench 07`` that lesson 07 shows, or ``None`` if absent.

    Returns:
        ``{"caption": str, "best": DataFrame}``: what was measured (size, queries; never the
        machine or its load, which a page does not show), and per library its fastest setting
        at recall@10 >= 0.95 against exact search, with QPS, speed-up over single-query exact
        search, build seconds and size.
    """
    path = Path(path)
    if not path.exists():
        return None
    import json

    run = json.loads(path.read_text(encoding="utf-8"))
    result = run["lessons"]["07"]
    sweep = result["sweep"]
    rows = []
    for library, best in result["best_at_recall_0.95"].items():
        settings = {row["setting"]: row for row in result["libraries"][library]}
        chosen = settings.get(best["setting"], {})
        rows.append({"library": library, "setting": best["setting"], "recall@10": chosen.get("recall@10"),
                     "qps": best["qps"], "x exact single": best["speedup_vs_exact_single"],
                     "build_seconds": chosen.get("build_seconds"), "index_mb": chosen.get("index_mb")})
    for library, reason in sweep.get("skipped", {}).items():
        rows.append({"library": library, "setting": "skipped: " + reason.split(".")[0]})
    # No machine or load on a page: queries per second are this run's, recall is not.
    caption = (
        f"`course bench 07`: {sweep['n_items']:,} items of {sweep['dim']} numbers, {sweep['n_queries']} queries, one "
        "run. Queries per second depend on the machine and on what else it was doing; recall against exact "
        "search, build sizes and the order of the libraries carry over."
    )
    return {"caption": caption, "best": pd.DataFrame(rows).set_index("library")}
