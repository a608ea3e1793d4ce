"""Worker process of lesson 09's multi-worker training (started by
``recsys_course.cluster.launch.run_multiworker_training``; not meant to be run by hand).

``python -m recsys_course.cluster.multiworker_two_tower FOLDER`` reads ``TF_CONFIG``, the pairs in
``FOLDER/data.npz`` and ``FOLDER/settings.json``, trains the course's id-only two-tower model
(``recsys_course.models.build_two_tower``) under ``MultiWorkerMirroredStrategy`` and,
on worker 0 (the chief), writes ``result.json`` and ``embeddings.npz`` to ``FOLDER``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from recsys_course.cluster.lifetime import limit_lifetime

limit_lifetime()

import recsys_course  # noqa: E402  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from recsys_course.models import LossPerExample, TwoTowerModel, build_two_tower  # noqa: E402


class GatheredNegativesModel(TwoTowerModel):
    """In-batch softmax over the movies of the *global* batch, not only this replica's.

    Each replica all-gathers the movie vectors of every replica (in replica order, which
    with DATA sharding is the order of the global batch), then rolls them so that its own
    positives sit on the diagonal that TFRS's ``Retrieval`` task expects; the softmax does
    not depend on the order of the candidates. ``all_gather`` has a gradient, so every
    replica's loss also trains the movies of the other replicas.
    """

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        if self.correction or self.remove_accidental_hits:
            raise ValueError("gathered negatives support neither the correction nor accidental-hit removal")
        users = self.query_embeddings(features)
        movies = self.candidate_embeddings(features)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return self.retrieval_loss(users, movies, features, compute_metrics=False)
        all_movies = context.all_gather(movies, axis=0)
        sizes = context.all_gather(tf.shape(movies)[:1], axis=0)
        offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
        return self.retrieval_loss(users, tf.roll(all_movies, shift=-offset, axis=0), features,
                                   compute_metrics=False)


#: Steps left out of :class:`StepClock`'s rate: the first ones trace the training step and
#: fill the shuffle buffer, seconds that do not recur.
WARMUP_STEPS = 20


class StepClock(tf.keras.callbacks.Callback):
    """Records the end time of every training step; :meth:`rate` is the seconds per step
    after the warm-up (every step's time when there are too few to leave any out)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []
        self.start = 0.0

    def on_train_begin(self, logs=None) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.ends.append(time.perf_counter())

    def rate(self) -> float:
        n = len(self.ends)
        if n == 0:
            return float("nan")
        warm = min(WARMUP_STEPS, n // 2)
        if warm == 0:
            return (self.ends[-1] - self.start) / n
        return (self.ends[-1] - self.ends[warm - 1]) / (n - warm)


def main(folder: Path) -> None:
    settings = json.loads((folder / "settings.json").read_text())
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    index = config.get("task", {}).get("index", 0)
    if settings.get("fail_worker") == index:
        print(f"worker {index}: failing on purpose (fail_worker={index})", file=sys.stderr)
        sys.exit(3)
    recsys_course.seed_everything(settings["seed"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    data = np.load(folder / "data.npz")
    users, movies = data["user_id"], data["movie_id"]
    user_vocabulary = np.unique(users)
    with strategy.scope():
        model = build_two_tower(
            user_vocabulary, data["catalogue"], settings["embedding_dim"], settings["learning_rate"],
            model_class=GatheredNegativesModel if settings["gather_negatives"] else TwoTowerModel,
        )
    # Every worker builds the same shuffled stream (same seed); DATA sharding then hands
    # each worker its slice of every global batch.
    pairs = tf.data.Dataset.from_tensor_slices({"user_id": users, "movie_id": movies})
    batches = pairs.shuffle(len(users), seed=settings["seed"]).batch(settings["global_batch_size"])
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = batches.with_options(options)
    # The loss reported per step is the global batch's summed loss (all replicas).
    losses, clock = LossPerExample(len(users)), StepClock()
    started = time.perf_counter()
    # steps_per_epoch (None: the whole data) caps every epoch at that many global batches.
    model.fit(batches, epochs=settings["epochs"], steps_per_epoch=settings.get("steps_per_epoch"), verbose=0,
              callbacks=[losses, clock])
    fit_seconds = time.perf_counter() - started
    if index != 0:
        return
    # Reading mirrored variables outside strategy.run is local: no collective needed.
    movie_vectors = model.candidate_model(tf.constant(data["catalogue"])).numpy()
    user_vectors = model.query_model(tf.constant(user_vocabulary)).numpy()
    np.savez(folder / "embeddings.npz", user_ids=user_vocabulary, user_embeddings=user_vectors,
             movie_ids=data["catalogue"], movie_embeddings=movie_vectors)
    (folder / "result.json").write_text(json.dumps({
        "fit_seconds": fit_seconds,
        "steps": len(clock.ends),
        "seconds_per_step": clock.rate(),
        "replicas": strategy.num_replicas_in_sync,
        "per_replica_batch_size": settings["global_batch_size"] // strategy.num_replicas_in_sync,
        "loss_per_example": losses.values,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
