"""Training loops that report the loss per example.

TFRS's ``tfrs.Model.train_step`` reports as ``loss`` the loss of the *current batch*, and
the retrieval task's loss is a *sum* over the batch's rows, so Keras's ``history["loss"]``
holds each epoch's last-batch sum: noisy, and much smaller when the last batch is partial.
Everything here reports instead the mean loss per training example, comparable across
epochs, batch sizes and datasets:

* :class:`LossPerExample`, a Keras callback that sums every batch's loss over an epoch and
  divides by the number of examples;
* :func:`fit_with_loss_per_example`, ``model.fit`` with that callback, the loop every
  package model trains with;
* :func:`loss_per_example`, the same number measured on held-out features;
* :func:`train_with_curves`, one epoch at a time with per-split loss and factorized top-K
  accuracy after each, keeping the weights of the best validation epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

import tensorflow as tf  # recsys_course/__init__.py has already set TF_USE_LEGACY_KERAS=1

from recsys_course.env import seed_everything
from recsys_course.models.features import to_dataset

#: Key of the factorized top-K accuracy in ``model.evaluate(..., return_dict=True)``.
TOP_K_KEY = "factorized_top_k/top_{k}_categorical_accuracy"


class LossPerExample(tf.keras.callbacks.Callback):
    """Records each epoch's mean loss per training example in :attr:`values`.

    For models whose reported ``loss`` is the current batch's *summed* loss (every
    ``tfrs.Model`` with a ``Retrieval`` task): the callback adds up the batches' losses and
    divides by ``n_examples``, the number of rows one epoch visits. Under a distribution
    strategy the reported loss is the global batch's, so ``n_examples`` is the global count.
    """

    def __init__(self, n_examples: int) -> None:
        super().__init__()
        if n_examples <= 0:
            raise ValueError(f"LossPerExample needs the number of training examples, got {n_examples}")
        self.n_examples = int(n_examples)
        self.values: list[float] = []
        self._total = 0.0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._total = 0.0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._total += float(logs["loss"])

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.values.append(self._total / self.n_examples)


def fit_with_loss_per_example(
    model: tf.keras.Model, batches: tf.data.Dataset, n_examples: int, *, epochs: int,
    callbacks: list | None = None,
) -> dict[str, list[float]]:
    """``model.fit(batches, epochs=epochs)`` silently; returns the Keras history (one float
    per epoch per key) plus ``"loss_per_example"`` from :class:`LossPerExample`.

    ``n_examples`` is the number of rows in one pass over ``batches``. Read
    ``"loss_per_example"`` to follow training, never ``"loss"`` (see the module docstring).
    """
    recorder = LossPerExample(n_examples)
    history = model.fit(batches, epochs=epochs, verbose=0, callbacks=[recorder, *(callbacks or [])])
    return {
        **{key: [float(v) for v in values] for key, values in history.history.items()},
        "loss_per_example": list(recorder.values),
    }


def loss_per_example(model: tf.keras.Model, features: dict[str, np.ndarray], batch_size: int) -> float:
    """Mean retrieval loss per (query, candidate) pair over full batches of ``batch_size``.

    The in-batch softmax loss of a batch depends on how many negatives it holds, so only
    full batches are used (rows beyond the last full batch are ignored); the result is
    comparable between splits evaluated with the same ``batch_size``. ``training=True``
    asks ``compute_loss`` for the training objective without computing top-K metrics.
    """
    total, rows = 0.0, 0
    step = _compiled_loss(model)
    for batch in to_dataset(features, batch_size, drop_remainder=True):
        total += float(step(batch))
        rows += batch_size
    return total / rows if rows else float("nan")


def _compiled_loss(model: tf.keras.Model):
    """``model.compute_loss(batch, training=True)`` as a ``tf.function`` made once per model
    (full batches share one trace; eager calls cost several times more per batch)."""
    step = model.__dict__.get("_course_loss_step")
    if step is None:
        step = tf.function(lambda batch: model.compute_loss(batch, training=True))
        object.__setattr__(model, "_course_loss_step", step)  # not a Keras-tracked attribute
    return step


@dataclass
class TrainingRun:
    """What :func:`train_with_curves` measured.

    ``curves`` has one row per (epoch, split) with columns ``epoch`` (1-based), ``split``,
    ``loss`` (per example, see :func:`loss_per_example`) and ``top_K`` for every K asked.
    ``best_epoch`` is the epoch whose weights the model holds at the end.
    """

    curves: pd.DataFrame
    best_epoch: int
    seconds: float
    selected_on: str = ""

    def at(self, split: str, epoch: int | None = None) -> pd.Series:
        """The row of ``split`` at ``epoch`` (default: the best epoch)."""
        epoch = self.best_epoch if epoch is None else epoch
        rows = self.curves[(self.curves["split"] == split) & (self.curves["epoch"] == epoch)]
        return rows.iloc[0]


def train_with_curves(
    model: tf.keras.Model,
    train: tf.data.Dataset,
    evaluate_on: dict[str, dict[str, np.ndarray]],
    *,
    epochs: int,
    ks: tuple[int, ...] = (10, 50, 100),
    select_on: str | None = "validation",
    monitor: int = 100,
    patience: int | None = None,
    eval_batch_size: int = 4096,
    loss_batch_size: int = 1024,
) -> TrainingRun:
    """Train ``model`` one epoch at a time and measure it on every split after each epoch.

    Args:
        model: a compiled ``tfrs.Model`` whose task holds a ``FactorizedTopK`` metric with
            the ``ks`` below.
        train: batches to fit on (see :func:`to_dataset`).
        evaluate_on: ``{split name: feature dict}``; each is evaluated after every epoch
            with ``model.evaluate`` (factorized top-K) and :func:`loss_per_example`.
        epochs: the most epochs to train.
        select_on: the split whose ``top_{monitor}`` accuracy picks the epoch to keep; the
            model ends with that epoch's weights. ``None`` keeps the last epoch.
        patience: stop after this many epochs without improvement on ``select_on``.
        eval_batch_size, loss_batch_size: batch sizes for the metrics and for the loss.

    Returns:
        A :class:`TrainingRun` with the curves and the selected epoch.
    """
    started = time.perf_counter()
    eval_sets = {name: to_dataset(f, eval_batch_size) for name, f in evaluate_on.items()}
    rows, best_score, best_epoch, best_weights, waited = [], -np.inf, 0, None, 0
    if select_on is not None and select_on not in evaluate_on:
        raise ValueError(f"select_on={select_on!r} is not one of the evaluated splits {list(evaluate_on)}")
    for epoch in range(1, epochs + 1):
        model.fit(train, epochs=1, verbose=0)
        this_epoch = {}
        for name, dataset in eval_sets.items():
            result = model.evaluate(dataset, return_dict=True, verbose=0)
            row = {"epoch": epoch, "split": name,
                   "loss": loss_per_example(model, evaluate_on[name], loss_batch_size)}
            row.update({f"top_{k}": float(result[TOP_K_KEY.format(k=k)]) for k in ks})
            this_epoch[name] = row
        rows.extend(this_epoch.values())
        if select_on is None:
            best_epoch = epoch
            continue
        score = this_epoch[select_on][f"top_{monitor}"]
        if score > best_score:
            best_score, best_epoch, best_weights, waited = score, epoch, model.get_weights(), 0
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return TrainingRun(
        pd.DataFrame(rows), best_epoch, time.perf_counter() - started,
        selected_on=select_on or "last epoch",
    )


def keep_best_epochs(model: tf.keras.Model, batches: tf.data.Dataset, measure, *, max_epochs: int,
                     patience: int, every: int = 1, measure_first: bool = False,
                     refit_batches: tf.data.Dataset | None = None, seed: int | None = None,
                     column: str = "validation recall@10") -> tuple[int, float, pd.DataFrame]:
    """Early stopping on a validation measure: fit ``model`` on ``batches`` ``every`` epochs at
    a time up to ``max_epochs``, call ``measure()`` (higher is better) after each step, stop
    after ``patience`` steps without a strictly better value, and leave the model holding the
    weights of the best step.

    With ``measure_first`` the weights the model starts with (a warm start) are measured as
    epoch 0 and kept if no step beats them.

    With ``refit_batches`` the epoch count is only *chosen* on validation: the model then
    goes back to where it started (its weights and its optimizer's state, with ``seed``
    re-applied through :func:`recsys_course.env.seed_everything`) and is fitted on
    ``refit_batches`` for the chosen number of epochs, and it ends holding *those* weights.
    This is the standard protocol when ``batches`` hold the ratings before a validation
    cutoff and ``refit_batches`` everything before the test cutoff: the choice never sees
    the test period, and the final model sees as much of the past as the count baselines
    that are refitted on it. Optimizer slots created during training (Adam's moments) start
    at zero again, as in a fresh optimizer. The returned value and curve stay the validation
    run's (a refitted model has seen the validation ratings). The model must compute its
    loss as a ``tfrs.Model`` does, ``compute_loss(batch, training)``.

    Returns ``(best_epoch, best_value, curve)``, the curve one row per measurement with
    columns ``epoch`` and ``column``.
    """
    start = optimizer_start = None
    if refit_batches is not None:
        # Keras creates a layer's weights at its first call: one loss on one batch creates
        # them all, so that the starting point can be saved whole.
        model.compute_loss(next(iter(batches)), training=False)
        start, optimizer_start = model.get_weights(), _optimizer_state(model)
    best, best_epoch, best_weights, rows, stale = -1.0, 0, None, [], 0
    if measure_first:
        best, best_weights = measure(), model.get_weights()
        rows.append({"epoch": 0, column: best})
    for epoch in range(every, max_epochs + 1, every):
        model.fit(batches, epochs=every, verbose=0)
        if start is not None and len(model.get_weights()) != len(start):
            raise RuntimeError("the model created weights during training that one compute_loss call did "
                               "not: its starting point cannot be restored for the refit")
        value = measure()
        rows.append({"epoch": epoch, column: value})
        if value > best:
            best, best_epoch, best_weights, stale = value, epoch, model.get_weights(), 0
        else:
            stale += 1
            if stale >= patience:
                break
    if refit_batches is None:
        model.set_weights(best_weights)
    else:
        model.set_weights(start)
        _restore_optimizer_state(model, optimizer_start)
        if seed is not None:
            seed_everything(seed)
        if best_epoch:
            model.fit(refit_batches, epochs=best_epoch, verbose=0)
    return best_epoch, best, pd.DataFrame(rows)


def _optimizer_state(model: tf.keras.Model) -> dict:
    """The current value of each variable of ``model``'s optimizer, by variable."""
    return {v.ref(): v.numpy() for v in model.optimizer.variables}


def _restore_optimizer_state(model: tf.keras.Model, state: dict) -> None:
    """Put back the values of :func:`_optimizer_state`; a variable created since (a slot
    built by the first training step) is set to zero, its value in a fresh optimizer."""
    for variable in model.optimizer.variables:
        variable.assign(state.get(variable.ref(), np.zeros(variable.shape, variable.dtype.as_numpy_dtype)))
