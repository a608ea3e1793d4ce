"""SavedModel warm-up records: ``assets.extra/tf_serving_warmup_requests``.

TF Serving's *SavedModel Warmup* guide: the TensorFlow runtime initialises some components
lazily, so the first requests after a model loads can be orders of magnitude slower than
the rest. If a SavedModel carries a TFRecord file named ``tf_serving_warmup_requests`` in
its ``assets.extra/`` folder, each record a serialised ``PredictionLog`` (at most 1,000 of
them, representative of real traffic), the server replays them while loading the version
and only then marks it AVAILABLE. The practice server replays them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # the limit stated in TF Serving's warm-up guide


def _as_array(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind == "U":  # tf.make_tensor_proto wants bytes for DT_STRING
        array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
    return array


def predict_log(
    inputs: Mapping[str, Any], *, model_name: str = "", signature_name: str = "serving_default"
):
    """One warm-up record: a ``PredictionLog`` wrapping a ``PredictRequest`` whose
    ``inputs`` hold ``inputs`` as ``TensorProto``s (strings become ``DT_STRING``)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, values in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(_as_array(values)))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def write_warmup_requests(
    export_dir: str | Path,
    requests: Sequence[Mapping[str, Any]],
    *,
    model_name: str = "",
    signature_name: str = "serving_default",
) -> Path:
    """Write ``requests`` (one ``{input name: values}`` mapping each) as the warm-up file of
    the SavedModel in ``export_dir``; return the file's path.

    Raises ``ValueError`` for no requests or more than 1,000.
    """
    import tensorflow as tf

    if not 0 < len(requests) <= MAX_WARMUP_RECORDS:
        raise ValueError(f"between 1 and {MAX_WARMUP_RECORDS} warm-up requests, got {len(requests)}")
    path = Path(export_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for inputs in requests:
            record = predict_log(inputs, model_name=model_name, signature_name=signature_name)
            writer.write(record.SerializeToString())
    return path


def read_warmup_requests(export_dir: str | Path) -> list:
    """The ``PredictRequest``s stored in a SavedModel's warm-up file (empty if it has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(export_dir) / WARMUP_FILE
    if not path.exists():
        return []
    requests = []
    for raw in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        if log.WhichOneof("log_type") == "predict_log":
            requests.append(log.predict_log.request)
    return requests
