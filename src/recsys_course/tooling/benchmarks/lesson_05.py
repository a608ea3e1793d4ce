"""Lesson 05: sequence models against recency-aware and static baselines on the rolling
global time split, every model measured in the same run on the same user-cutoff pairs.

Protocol (the lesson's, with its own functions): one global time split per quantile in
``lesson.QUANTILES`` (train on every rating before the cutoff; test each user with at least
``MIN_HISTORY`` ratings before it on their next ``HORIZON``), the user-cutoff pairs pooled.
Every model is fitted on the ratings before its cutoff's *validation* cutoff (the same split
at ``VALIDATION_QUANTILE`` of the training ratings) and chooses its setting there: the
recent-popularity window, EASE's penalty, the history tower's and the sequence models'
epoch. Every model is then refitted on everything before the cutoff with that setting (the
neural ones from the same start and seed for the chosen number of epochs,
``models.training.keep_best_epochs``) and reads each user's history up to the cutoff.
Lists are masked (movies rated before the cutoff excluded) over the full catalogue, via the
lesson's ``evaluate_cutoffs``.

Keys: ``comparison`` (per model: ``recall@10``, ``ndcg@10``, their standard errors over the
pairs, and the paired difference in recall@10 to the best baseline with its standard
error), ``pairs``, ``best_baseline`` (the non-sequence model with the best recall@10),
``best_sequential`` (the GRU or attention model with the best mean validation recall@10
over the cutoffs, ``best_sequential_chosen_by``: never chosen on the test pairs),
``headline`` (their difference, its paired standard error, the relative gain and whether
it exceeds two standard errors), ``per_cutoff`` recall@10 and the settings each model chose at each cutoff.

Quick mode (``COURSE_BENCH_QUICK=1``): one cutoff, at most ``QUICK_EPOCHS`` epochs per sequence model.
"""

from __future__ import annotations

import time

import numpy as np

from recsys_course import evaluation as ev
from recsys_course.data import MovieLens
from recsys_course.tooling.benchmarks import QUICK_EPOCHS, quick, when_quick


def _summary(frame, reference, k: int) -> dict:
    recall, ndcg = frame[f"recall@{k}"].to_numpy(), frame[f"ndcg@{k}"].to_numpy()
    row = {
        f"recall@{k}": round(float(recall.mean()), 4),
        f"recall@{k}_se": round(ev.standard_error(recall), 4),
        f"ndcg@{k}": round(float(ndcg.mean()), 4),
        f"ndcg@{k}_se": round(ev.standard_error(ndcg), 4),
    }
    if reference is not None:
        base = reference[f"recall@{k}"].to_numpy()
        row[f"recall@{k}_minus_best_baseline"] = round(float(recall.mean() - base.mean()), 4)
        row[f"recall@{k}_minus_best_baseline_se"] = round(ev.paired_standard_error(recall, base), 4)
    return row


def sequential_recommendation(data: MovieLens, lesson) -> dict:
    ratings = data.ratings
    movie_ids = sorted(data.movies["movie_id"].astype(str))
    quantiles = lesson.QUANTILES[-1:] if quick() else lesson.QUANTILES  # a quick run: one cutoff
    settings = dict(lesson.SETTINGS, **when_quick(max_epochs=QUICK_EPOCHS))
    k = lesson.K
    recommenders = {
        "popularity": lesson.popularity_recommender(movie_ids),
        "recent popularity": lesson.RecentPopularity(movie_ids),
        "Markov chain (last movie)": lesson.markov_recommender(movie_ids),
        "EASE": lesson.EaseRecommender(movie_ids),
        "history tower (bag)": lesson.HistoryTowerRecommender(
            movie_ids, dict(lesson.HISTORY_TOWER, **when_quick(max_epochs=5))),
    }
    sequence_names = list(lesson.SEQUENCE_MODELS)
    for name, (kind, time_features) in lesson.SEQUENCE_MODELS.items():
        recommenders[name] = lesson.SequenceRecommender(movie_ids, kind, time_features=time_features,
                                                        settings=settings)
    results, seconds, chosen = {}, {}, {}
    for name, recommend in recommenders.items():
        started = time.perf_counter()
        results[name] = lesson.evaluate_cutoffs(ratings, quantiles, recommend, movie_ids)
        seconds[name] = round(time.perf_counter() - started, 1)
        if hasattr(recommend, "chosen"):
            chosen[name] = [{key: (round(float(v), 4) if isinstance(v, float) else v) for key, v in row.items()}
                            for row in recommend.chosen]
        if hasattr(recommend, "runs"):
            chosen[name] = [{"cutoff": int(c), "epoch": run.best_epoch,
                             "validation recall@10": round(run.validation_recall, 4)}
                            for c, run in recommend.runs.items()]

    def mean_recall(name: str) -> float:
        return float(results[name][f"recall@{k}"].mean())

    baselines = [n for n in results if n not in sequence_names]
    best_baseline = max(baselines, key=mean_recall)
    # Chosen on validation (mean best-epoch validation recall over the cutoffs), never on the
    # test pairs; the baseline it faces is the best on the test pairs, the harder bar.
    validation = {name: recommenders[name].validation_recall for name in sequence_names}
    best_sequential = max(validation, key=validation.get)
    reference = results[best_baseline]
    comparison = {name: _summary(frame, reference, k) for name, frame in results.items()}
    a, b = results[best_sequential][f"recall@{k}"].to_numpy(), reference[f"recall@{k}"].to_numpy()
    difference, se = float(a.mean() - b.mean()), ev.paired_standard_error(a, b)
    return {
        "protocol": f"rolling global time split at quantiles {list(quantiles)}, min_history "
                    f"{lesson.MIN_HISTORY}, horizon {lesson.HORIZON}; validation at quantile "
                    f"{lesson.VALIDATION_QUANTILE} of each cutoff's training ratings",
        "pairs": int(len(reference)),
        "comparison": comparison,
        "best_baseline": best_baseline,
        "best_sequential": best_sequential,
        "best_sequential_chosen_by": {"mean validation recall@10": {n: round(v, 4) for n, v in validation.items()}},
        "headline": {
            "recall@10_difference": round(difference, 4),
            "paired_se": round(se, 4),
            "relative": round(difference / max(b.mean(), 1e-12), 4),
            "beyond_two_se": bool(abs(difference) > 2 * se and difference > 0),
        },
        "per_cutoff_recall@10": {
            name: {str(int(c)): round(float(v), 4) for c, v in frame.groupby("cutoff")[f"recall@{k}"].mean().items()}
            for name, frame in results.items()
        },
        "chosen": chosen,
        "settings": {key: (float(v) if isinstance(v, (float, np.floating)) else v) for key, v in settings.items()},
        "seconds": seconds,
    }
