"""The course's own tooling: the ``course`` command, grading, the site build and benchmarks.

This layer imports the library (``recsys_course`` and its sub-packages ``data``, ``models``,
``evaluation``, ``serving``, ``ann``, ``cluster``, ``claims``); the library never imports it,
and the lessons import only the library. The site's cache of executed lessons is keyed to the
library and the lesson, so a change here re-executes no lesson.
"""
