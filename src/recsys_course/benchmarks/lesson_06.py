"""Lesson 06: six re-rankers of the same top-100 retrieval candidates, measured on accuracy
(precision@10 on rated and on liked movies, NDCG@10) and beyond accuracy (intra-list
diversity, coverage@10, novelty), with the wall time of each.

It follows the lesson (``solutions/06_multitask_diversity.py``) step by step with the
lesson's own functions: models trained on the fit part of the seeded 80/20 split, every
choice (multitask loss weights, tower depth, MMR's λ) made on the validation split carved
from training, the test split scored once. Targets (issue 17): the best re-ranker beats the
retrieval order on precision@10 (rated and liked) and NDCG@10 on real data; MMR buys at
least 20 % more intra-list diversity for at most 5 % of precision@10.
"""

from __future__ import annotations

import time

import numpy as np

from recsys_course import evaluation
from recsys_course.data import MovieLens, split_ratings


def _rounded(metrics: dict) -> dict:
    return {key: round(float(value), 4) for key, value in metrics.items()}


def multitask_implicit_diverse(data: MovieLens, lesson) -> dict:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    train, test = split_ratings(data.ratings, 0.2, seed=lesson.SEED)
    fit, valid = split_ratings(train, lesson.VALIDATION_FRACTION, seed=lesson.SEED)
    retrieval = lesson.train_two_tower(fit, data.movies, embedding_dim=lesson.EMBEDDING_DIM,
                                       epochs=lesson.EPOCHS, batch_size=1024, seed=lesson.SEED)
    movie_ids = retrieval.movie_ids
    val_stage = lesson.make_stage(fit, valid, movie_ids)
    test_stage = lesson.make_stage(train, test, movie_ids)
    genres = lesson.genre_matrix(data.movies, movie_ids)
    probability = evaluation.item_probability(
        evaluation.interaction_matrix(fit, np.unique(fit["user_id"].astype(str)), movie_ids))
    val_candidates, _ = lesson.candidates_for(retrieval, val_stage)
    test_candidates, test_retrieval_scores = lesson.candidates_for(retrieval, test_stage)
    seconds["retrieval: train and query"] = time.perf_counter() - t0

    # Multitask weights, chosen by re-ranked precision@10 on validation.
    sweep, models = {}, {}
    for weights in lesson.TASK_WEIGHTS:
        t0 = time.perf_counter()
        model = models[weights] = lesson.train_multitask(fit, movie_ids, *weights)
        seconds[f"multitask {weights[0]:g}/{weights[1]:g}: train"] = time.perf_counter() - t0
        reranked = lesson.order_by(val_candidates, lesson.rating_scores(model, val_stage, val_candidates))
        sweep[f"{weights[0]:g}/{weights[1]:g}"] = _rounded({
            "validation_rmse": lesson.rmse_on(model, valid),
            "own_retrieval_precision@10": evaluation.precision_at_k(
                lesson.own_retrieval_ranked(model, val_stage), val_stage.rated, lesson.K),
            "reranked_precision@10": evaluation.precision_at_k(reranked, val_stage.rated, lesson.K),
        })
    best_weights = max((w for w in lesson.TASK_WEIGHTS if w[0] > 0),
                       key=lambda w: sweep[f"{w[0]:g}/{w[1]:g}"]["reranked_precision@10"])

    # Implicit ranker: shallow vs deeper towers, chosen on validation.
    depth, implicit_models = {}, {}
    for name, hidden in {"shallow": (), "deeper": (64,)}.items():
        t0 = time.perf_counter()
        implicit_models[name] = lesson.train_implicit(fit, movie_ids, hidden)
        seconds[f"implicit {name}: train"] = time.perf_counter() - t0
        scores = lesson.implicit_scores(implicit_models[name], val_stage, val_candidates)
        ranked = lesson.order_by(val_candidates, scores)
        depth[name] = _rounded(lesson.measure(ranked, val_stage, genres, probability))
    best_depth = max(depth, key=lambda name: depth[name]["precision@10 rated"])
    implicit = implicit_models[best_depth]

    # MMR's λ: the most diverse setting within the precision budget, on validation.
    val_implicit = lesson.implicit_scores(implicit, val_stage, val_candidates)
    curve = {lam: _rounded(lesson.measure(lesson.diversify(val_candidates, val_implicit, genres, lam),
                                          val_stage, genres, probability)) for lam in lesson.MMR_LAMBDAS}
    floor = (1 - lesson.MAX_PRECISION_LOSS) * curve[1.0]["precision@10 rated"]
    best_lambda = max((lam for lam in curve if curve[lam]["precision@10 rated"] >= floor),
                      key=lambda lam: curve[lam]["diversity@10"])

    # The test split, once; each re-ranker timed on its own (scoring + ordering).
    rerank = {}
    for name in ("retrieval order", "rating ranker", "blend: retrieval + rating ranks", "multitask",
                 "implicit ranker", "implicit + MMR"):
        t0 = time.perf_counter()
        lists = lesson.rerankers(test_stage, test_candidates, test_retrieval_scores, models[(1.0, 0.0)],
                                 models[best_weights], implicit, genres, best_lambda, only=name)
        rerank[name] = {**_rounded(lesson.measure(lists[name], test_stage, genres, probability)),
                        "seconds": round(time.perf_counter() - t0, 2)}

    base, plain, mmr = rerank["retrieval order"], rerank["implicit ranker"], rerank["implicit + MMR"]
    best = max(rerank, key=lambda name: rerank[name]["precision@10 rated"])
    accuracy = ("precision@10 rated", "precision@10 liked", "ndcg@10")
    return {
        "split": "random 80/20, seed 42; validation = 10 % of train; models trained on the rest",
        "n_test_users": int(len(test_stage.users)),
        "multitask_sweep_validation": sweep,
        "multitask_weights_chosen": list(best_weights),
        "implicit_depth_validation": depth,
        "implicit_depth_chosen": best_depth,
        "mmr_validation": {f"{lam:g}": row for lam, row in curve.items()},
        "mmr_lambda_chosen": best_lambda,
        "rerank": rerank,
        "best_by_precision_rated": best,
        "best_beats_retrieval_on_all_accuracy": all(rerank[best][m] > base[m] for m in accuracy),
        "mmr_diversity_gain": round(mmr["diversity@10"] / plain["diversity@10"] - 1, 4),
        "mmr_precision_cost": round(1 - mmr["precision@10 rated"] / plain["precision@10 rated"], 4),
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
    }
