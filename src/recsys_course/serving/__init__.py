"""Serving support for lesson 08: exporting models in TensorFlow Serving's layout, and an
offline *practice server* that speaks a documented subset of TF Serving's APIs.

The TensorFlow Serving binary cannot be installed in the course's environment (no Docker
engine; it is not on PyPI or Debian), so learners practise the protocol against a small
stand-in built on ``tf.saved_model.load``. It is **not** TensorFlow Serving: it answers the
same REST URLs and JSON shapes, and gRPC ``PredictionService.Predict`` /
``GetModelMetadata`` and ``ModelService.GetModelStatus``, so the same clients work against
either. See :mod:`recsys_course.serving.server` for exactly what it supports.

Modules (import the one you need; the package itself imports nothing heavy):

``export``      version folders, atomic exports, ``saved_model_cli``, model config files,
                the ``docker run`` command
``servables``   ``tf.Module`` wrappers with explicit ``serving_default`` signatures for the
                retrieval model, the query tower and the ranking model that lesson
                08 serves (the models themselves come from :mod:`recsys_course.models`)
``warmup``      ``assets.extra/tf_serving_warmup_requests`` writer and reader
``ann``         an Annoy index of movie vectors that lives beside the served query tower
``protocol``    JSON <-> tensors for the REST ``:predict`` API (row and columnar formats)
``repository``  model discovery, version policies, loading, warm-up replay
``limits``      how much predict work the practice server takes on (TF Serving's batching
                names: instances per request, requests computing and waiting, deadline)
``server``      the practice server: REST on 127.0.0.1, optional gRPC
``client``      REST and gRPC clients that work against the stand-in and real TF Serving

Start the practice server from a shell with
``python -m recsys_course.serving --model-base-path models/ --port 8501``.
"""

DEFAULT_REST_PORT = 8501  # TF Serving's conventional REST port (--rest_api_port)
DEFAULT_GRPC_PORT = 8500  # TF Serving's default gRPC port (--port)
