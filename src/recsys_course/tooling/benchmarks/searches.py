"""The offline searches whose results lessons state instead of re-running them.

Each search trains a grid of settings on a validation split, measures them and writes one
JSON file to ``recsys_course/models/recorded/<name>.json``, which lessons read with
``recsys_course.models.recorded_search``. They are slow by design (minutes to an hour on 2
cores), so they run by hand, on real data, when a lesson's recipe changes::

    python -m recsys_course.tooling.benchmarks.searches retrieval_recipe --data PATH/ml-100k
    python -m recsys_course.tooling.benchmarks.searches history_epochs --data PATH/ml-100k
    python -m recsys_course.tooling.benchmarks.searches ranking_recipe --data PATH/ml-100k

``ranking_recipe`` reads lesson 04's solution (its models and recipes) as ``course bench``
does.

Every search uses the lessons' protocol: a seeded 80/20 random split of the ratings (seed
42), a seeded 10 % of the training rows as validation, models fitted on the rest. Numbers
are validation numbers: the test split is never read here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

SEED = 42
PROTOCOL = ("seeded 80/20 random split of the ratings (seed 42); validation = a seeded 10 % of train, "
            "the models fit on the rest")


def _splits(data):
    from recsys_course import evaluation as ev

    train, _ = ev.random_split(data.ratings, 0.2, seed=SEED)
    fit, validation = ev.random_split(train, 0.1, seed=SEED)
    return fit, validation


def _validation_matrices(data, fit, validation, movie_ids):
    from recsys_course import evaluation as ev

    users = sorted(set(validation["user_id"]) & set(fit["user_id"]))
    return users, ev.interaction_matrix(fit, users, movie_ids), ev.interaction_matrix(validation, users, movie_ids)


#: (correction, batch size, learning rate) of ``retrieval_recipe``: without the correction every
#: setting peaks within two epochs, so the corrected grid leaves out the slowest corners.
RECIPE_GRID = ([(False, b, lr) for b in (512, 1024, 2048, 4096) for lr in (0.05, 0.1, 0.2, 0.5)]
               + [(True, b, lr) for b in (512, 1024, 2048) for lr in (0.05, 0.1, 0.2)])


def retrieval_recipe(data, grid=None, max_epochs: int = 40, patience: int = 3) -> dict:
    """Batch size x Adagrad learning rate of the id-only two-tower model, without and with
    the logQ correction: validation masked recall@10 after every epoch, the best kept."""
    import recsys_course
    import tensorflow as tf

    from recsys_course import evaluation as ev, models
    from recsys_course.models import features as mf

    fit, validation = _splits(data)
    movie_ids = np.unique(data.movies["movie_id"].astype(str).to_numpy()).astype(str)
    user_vocabulary = np.unique(fit["user_id"].astype(str).to_numpy()).astype(str)
    users, seen, relevant = _validation_matrices(data, fit, validation, movie_ids)
    fit_matrix = ev.interaction_matrix(fit, sorted(fit["user_id"].unique()), movie_ids)
    popular = np.tile(fit_matrix.sum(axis=0).astype(float), (len(users), 1))
    popularity = ev.recall_at_k(ev.top_k(popular, 10, exclude=seen), relevant, 10)
    grid = grid or RECIPE_GRID
    rows = []
    for correction, batch_size, learning_rate in grid:
        recsys_course.seed_everything(SEED)
        model = models.build_two_tower(user_vocabulary, movie_ids, 32, learning_rate, correction=correction)
        pairs = mf.pair_features(fit, probability=mf.candidate_probability(fit) if correction else None)
        batches = mf.to_dataset(pairs, batch_size, shuffle_seed=SEED)
        best, best_epoch, stale, started = -1.0, 0, 0, time.perf_counter()
        for epoch in range(1, max_epochs + 1):
            model.fit(batches, epochs=1, verbose=0)
            queries = model.query_model(tf.constant(users)).numpy()
            vectors = model.candidate_model(tf.constant(movie_ids)).numpy()
            recall = ev.recall_at_k(ev.top_k(queries @ vectors.T, 10, exclude=seen), relevant, 10)
            if recall > best:
                best, best_epoch, stale = recall, epoch, 0
            else:
                stale += 1
                if stale >= patience:
                    break
        rows.append({"correction": correction, "batch_size": batch_size, "learning_rate": learning_rate,
                     "validation_recall@10": round(best, 4), "best_epoch": best_epoch,
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "what": "batch size and Adagrad learning rate of the id-only two-tower model, without and with the "
                "logQ correction",
        "protocol": PROTOCOL,
        "metric": f"validation masked recall@10 (users queried once, fit ratings masked) at the best epoch; at most "
                  f"{max_epochs} epochs, stopped after {patience} without improvement",
        "popularity_validation_recall@10": round(popularity, 4),
        "rows": rows,
    }


def history_epochs(data, max_epochs: int = 60, every: int = 5, patience: int = 3) -> dict:
    """The number of epochs of each history-tower configuration (``models.HISTORY_GRID``):
    validation masked recall@10 every ``every`` epochs, the best kept."""
    from recsys_course import evaluation as ev, models

    fit, validation = _splits(data)
    movie_ids = list(np.unique(data.movies["movie_id"].astype(str)))
    fit_users = sorted(fit["user_id"].unique())
    fit_matrix = ev.interaction_matrix(fit, fit_users, movie_ids)
    users = sorted(set(validation["user_id"]) & set(fit_users))
    history = fit_matrix[np.searchsorted(fit_users, users)]
    relevant = ev.interaction_matrix(validation, users, movie_ids)
    rows = []
    for config in models.HISTORY_GRID:
        started = time.perf_counter()
        run = models.train_history_model(fit_matrix, movie_ids, history, relevant, seed=SEED,
                                         max_epochs=max_epochs, every=every, patience=patience, **config)
        # The one-standard-error rule (Breiman et al. 1984): the fewest epochs whose validation
        # recall is within one standard error (over users) of the best epoch's.
        per_user = ev.recall_by_user(ev.top_k(run.model.scores(history), 10, exclude=history), relevant, 10)
        se = ev.standard_error(per_user)
        curve = run.curve.set_index("epoch")["validation recall@10"]
        within = curve[curve >= run.validation_recall - se]
        rows.append({"configuration": models.history_config_label(config), "epochs": int(within.index.min()),
                     "best_epoch": run.best_epoch, "validation_recall@10": round(run.validation_recall, 4),
                     "standard_error": round(se, 4),
                     "curve": {int(e): round(float(v), 4) for e, v in curve.items()},
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "what": "epochs of each history-tower configuration of models.HISTORY_GRID",
        "protocol": PROTOCOL,
        "metric": f"validation masked recall@10 every {every} epochs (at most {max_epochs}, stopped after "
                  f"{patience} measures without improvement); epochs = the fewest whose recall is within one "
                  "standard error (over users) of the best epoch's",
        "rows": rows,
    }


def ranking_recipe(data) -> dict:
    """Lesson 04's rating models with the Adam recipe: the baseline architecture, and the
    improved model with and without its cross layer at every L2 of ``L2_GRID``; each row the
    lowest validation RMSE under early stopping and the epoch it came at."""
    from recsys_course.tooling.catalog import load_catalog
    from recsys_course.tooling.grading.loader import load_lesson

    catalog = load_catalog()
    lesson = load_lesson(catalog.root / "solutions" / catalog.lesson("04").filename, "search_lesson_04")
    from recsys_course import evaluation as ev

    train, _ = ev.random_split(data.ratings, 0.2, seed=SEED)  # the lesson's split
    fit, valid = ev.random_split(train, lesson.VALIDATION_FRACTION, seed=SEED)
    vocab = lesson.build_vocabulary(train, data.movies)
    fit_features, valid_features = lesson.to_features(fit, vocab), lesson.to_features(valid, vocab)
    runs = [("baseline, Adam recipe", None, lambda: lesson.baseline_scorer(vocab))]
    runs += [(f"improved, {'with' if n else 'no'} cross layer", l2,
              lambda l2=l2, n=n: lesson.CrossScorer(vocab, l2=l2, n_cross=n))
             for n in (1, 0) for l2 in lesson.L2_GRID]
    truth = valid["user_rating"].to_numpy(float)
    rows = []
    for name, l2, scorer in runs:
        started = time.perf_counter()
        model, curves = lesson.train_rating_model(scorer(), fit_features, valid_features, lesson.IMPROVED_RECIPE)
        best = int(curves["valid_rmse"].idxmin())
        # One-standard-error rule, as for lesson 03's epochs: the fewest epochs whose validation
        # RMSE is within one standard error of the best (the model holds the best epoch's
        # weights; RMSE's standard error from the squared errors' by the delta method).
        squared = (lesson.predict_ratings(model, valid_features) - truth) ** 2
        se = ev.standard_error(squared) / (2 * float(np.sqrt(squared.mean())))
        within = curves.index[curves["valid_rmse"] <= curves["valid_rmse"][best] + se]
        rows.append({"model": name, "L2": l2, "validation_rmse": round(float(curves["valid_rmse"][best]), 4),
                     "epochs": int(within.min()) + 1, "best_epoch": best + 1, "standard_error": round(se, 4),
                     "curve": [round(float(v), 4) for v in curves["valid_rmse"]], "epochs_run": len(curves),
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "what": "L2 strength and epochs of lesson 04's rating models trained with the Adam recipe",
        "protocol": PROTOCOL,
        "metric": "lowest validation RMSE (early stopping after 2 epochs without improvement, at most 20 epochs); "
                  "epochs = the fewest whose validation RMSE is within one standard error of the best",
        "rows": rows,
    }


SEARCHES = {"retrieval_recipe": retrieval_recipe, "history_epochs": history_epochs, "ranking_recipe": ranking_recipe}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search", choices=sorted(SEARCHES))
    parser.add_argument("--data", required=True, help="the dataset (COURSE_DATA syntax), e.g. PATH/ml-100k")
    parser.add_argument("--name", default=None,
                        help="the dataset's name as pages show it, e.g. 'MovieLens 100K (GroupLens)' (default: its "
                             "description without the folder)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: models/recorded/)")
    parser.add_argument("--only", nargs="*", default=None, metavar="CORRECTION:BATCH:RATE",
                        help="retrieval_recipe: run these settings only (e.g. 1:2048:0.05) and merge their rows "
                             "into the recorded file")
    args = parser.parse_args(argv)
    import recsys_course
    from recsys_course.models.recorded import RECORDED_DIR

    data = recsys_course.load_movielens(args.data)
    out = args.out or RECORDED_DIR / f"{args.search}.json"
    started = time.perf_counter()
    options = {}
    if args.only:
        if args.search != "retrieval_recipe":
            parser.error("--only applies to retrieval_recipe")
        options["grid"] = [(c == "1", int(b), float(lr)) for c, b, lr in (item.split(":") for item in args.only)]
    name = args.name or re.sub(r" from \S+", "", data.description)  # a page never shows a machine's path
    result = {"search": args.search, "dataset": name, **SEARCHES[args.search](data, **options),
              "produced_by": f"python -m recsys_course.tooling.benchmarks.searches {args.search} --data PATH "
                             f"--name {name!r}",
              "search_seconds": round(time.perf_counter() - started)}
    if args.only and out.is_file():  # merge: the new rows replace the same settings
        recorded = json.loads(out.read_text(encoding="utf-8"))
        key = lambda row: (row["correction"], row["batch_size"], row["learning_rate"])  # noqa: E731
        new = {key(row): row for row in result["rows"]}
        rows = [new.pop(key(row), row) for row in recorded["rows"]] + list(new.values())
        result = {**recorded, "rows": sorted(rows, key=key)}
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
