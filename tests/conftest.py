"""Shared test set-up: the grading plugin and the lessons under test.

``make test`` grades ``solutions/`` (``--tree solutions``); learners' ``course check`` grades
their ``lessons/``; instructors' ``course grade`` points ``--lessons-dir`` at a submission.
"""

import os
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything can import TensorFlow
os.environ.setdefault("COURSE_DATA", "synthetic")  # tests never touch the network
# Extracted zips and cleaned copies go to a throwaway folder, not the user's cache.
os.environ.setdefault("COURSE_CACHE_DIR", tempfile.mkdtemp(prefix="course-test-cache-"))

# The grading plugin is also a `pytest11` entry point of the installed package; naming it here
# keeps a clone that is not installed working (pytest registers a plugin name once). pytester
# is pytest's own plugin for testing plugins (tests/dev/test_grading_plugin.py).
pytest_plugins = ["recsys_course.tooling.grading.plugin", "pytester"]
