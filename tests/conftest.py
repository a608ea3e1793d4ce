"""Shared test set-up: the grading plugin and the lessons under test.

``make test`` grades ``solutions/`` (``--tree solutions``); learners' ``course check`` grades
their ``lessons/``; instructors' ``course grade`` points ``--lessons-dir`` at a submission.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything can import TensorFlow
os.environ.setdefault("COURSE_DATA", "synthetic")  # tests never touch the network

pytest_plugins = ["recsys_course.grading.plugin"]
