"""Support library for the course "Recommender systems with TensorFlow, Keras and TFRS".

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` before anything imports TensorFlow:
TensorFlow Recommenders is written for Keras 2, which ``tf-keras`` provides, while
TensorFlow 2.16+ would otherwise hand out Keras 3 as ``tf.keras``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter hides the lesson output learners should read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from recsys_course.env import seed_everything


def __getattr__(name: str):
    # The data helpers import pandas (half a second); loaded on first use so that the
    # `course` command and checks that never touch data start faster.
    if name in ("MovieLens", "load_movielens", "split_ratings"):
        from recsys_course import data

        return getattr(data, name)
    raise AttributeError(f"module 'recsys_course' has no attribute {name!r}")


__all__ = ["MovieLens", "load_movielens", "seed_everything", "split_ratings"]
__version__ = "0.1.0"
