"""The scale ladder: how each model's cost grows with the data (``course bench ladder``, the
appendix page ``solutions/10_scale_ladder.py``).

==============  ==========================================================================
module          what it holds
==============  ==========================================================================
``rungs``       one rung: a data source reduced to integer (user, movie) codes, split and
                sampled once, saved for the methods' processes (``prepare_rung``)
``methods``     each method (popularity, item-kNN, EASE, two towers on one and two
                processes, exact/Annoy/HNSW search) trained and measured on a rung, in a
                process of its own: ``python -m recsys_course.scale.methods``
``growth``      power laws fitted on log-log axes, the "practical" rule, dense matrix bytes
``report``      the ladder's summary (exponents against the expected complexity, limits,
                EASE at MovieLens 25M's size) and the recorded run the page shows
==============  ==========================================================================

The orchestration (a fresh process per method and size, peak memory from the kernel) is the
benchmark's, in ``recsys_course.tooling.benchmarks.ladder``.
"""
