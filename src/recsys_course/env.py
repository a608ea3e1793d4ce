"""Process-wide set-up shared by lessons, tests and the CLI."""

from __future__ import annotations

import os
import random
import sys

DEFAULT_SEED = 42


def seed_everything(seed: int = DEFAULT_SEED) -> int:
    """Seed Python, NumPy and (if it is already imported) TensorFlow; return the seed.

    TensorFlow is only seeded when it has been imported, so that lessons that never use it
    (and their tests) do not pay its start-up time. Lessons that use TensorFlow import it
    before calling this. ``enable_op_determinism`` makes reruns give the same numbers on CPU.
    """
    random.seed(seed)
    import numpy as np  # here, so `course` commands that never seed start faster

    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.keras.utils.set_random_seed(seed)
        try:
            tf.config.experimental.enable_op_determinism()
        except (AttributeError, RuntimeError):  # older TF, or already initialised
            pass
    return seed
