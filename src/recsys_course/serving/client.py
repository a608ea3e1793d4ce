"""Clients for TensorFlow Serving's REST and gRPC APIs.

They only use the documented APIs, so they work against a real TF Serving (for example the
Docker image, with ``TF_SERVING_URL=http://127.0.0.1:8501``) and against the course's
practice server alike. The REST client needs only the standard library.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import numpy as np


class ServingError(RuntimeError):
    """The server answered with an error: ``status`` is the HTTP status (or the gRPC status
    code name), ``message`` the server's error text."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def model_path(model: str, version: int | None = None, label: str | None = None) -> str:
    """``/v1/models/<model>[/versions/<v>|/labels/<l>]``."""
    if version is not None and label is not None:
        raise ValueError("address a version or a label, not both")
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{quote(label, safe='')}"
    return path


class RestClient:
    """A TF Serving REST client with one keep-alive connection per thread.

    Args:
        url: ``http://host:port`` of the REST API (TF Serving's ``--rest_api_port``).
        timeout: seconds to wait for each response.
    """

    def __init__(self, url: str = "http://127.0.0.1:8501", timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected a URL like http://127.0.0.1:8501, got {url!r}")
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return ``(http_status, parsed JSON body)``. A connection the
        server closed is reopened once."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                if attempt == 2:
                    raise
        try:
            payload = json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            payload = {"error": raw.decode("utf-8", "replace")}
        return response.status, payload

    def _checked(self, method: str, path: str, body: Any = None) -> dict:
        status, payload = self.request(method, path, body)
        if status != 200:
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            raise ServingError(status, str(message))
        return payload

    def status(self, model: str, *, version: int | None = None, label: str | None = None) -> dict:
        """``GET /v1/models/<model>``: the ``model_version_status`` list."""
        return self._checked("GET", model_path(model, version, label))

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None) -> dict:
        """``GET /v1/models/<model>/metadata``: the signatures of the served version."""
        return self._checked("GET", model_path(model, version, label) + "/metadata")

    def predict(
        self, model: str, body: Mapping, *, version: int | None = None, label: str | None = None
    ) -> dict:
        """``POST /v1/models/<model>:predict`` with ``body`` (``instances`` or ``inputs``);
        raises :class:`ServingError` for an error answer."""
        return self._checked("POST", model_path(model, version, label) + ":predict", body)

    def available_versions(self, model: str) -> list[int]:
        """Versions of ``model`` in state AVAILABLE (empty if the model is unknown)."""
        try:
            rows = self.status(model)["model_version_status"]
        except ServingError:
            return []
        return sorted(int(row["version"]) for row in rows if row["state"] == "AVAILABLE")

    def wait_for_version(self, model: str, version: int, timeout: float = 60.0) -> float:
        """Poll the status API until ``version`` is AVAILABLE; return the seconds waited."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if version in self.available_versions(model):
                return time.perf_counter() - start
            time.sleep(0.1)
        raise TimeoutError(f"{model} version {version} not AVAILABLE after {timeout:.0f} s")


class GrpcClient:
    """A TF Serving gRPC client (``tensorflow_serving.apis``): ``PredictionService.Predict``
    and ``ModelService.GetModelStatus``.

    Args:
        target: ``host:port`` of the gRPC API (TF Serving's ``--port``, conventionally 8500).
        timeout: deadline of each call in seconds.
        max_message_bytes: largest request or reply (gRPC's default of 4 MiB is too small
            for a batch of a few thousand embeddings).
    """

    def __init__(self, target: str = "127.0.0.1:8500", timeout: float = 30.0,
                 max_message_bytes: int = 256 * 2**20) -> None:
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.target, self.timeout = target, timeout
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    @staticmethod
    def predict_request(
        model: str,
        inputs: Mapping[str, Any],
        *,
        signature_name: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
    ):
        """A ``PredictRequest`` whose ``inputs`` hold ``inputs`` as ``TensorProto``s."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = int(version)
        if label is not None:
            request.model_spec.version_label = label
        for name, values in inputs.items():
            array = np.asarray(values)
            if array.dtype.kind == "U":  # TensorProto strings are bytes
                array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        return request

    def predict(self, model: str, inputs: Mapping[str, Any], **spec) -> dict[str, np.ndarray]:
        """Run ``Predict``; return the outputs as NumPy arrays (strings as ``bytes``).

        Raises :class:`ServingError` with the gRPC status name (``NOT_FOUND``,
        ``INVALID_ARGUMENT``, ...) when the server refuses the request.
        """
        import grpc
        import tensorflow as tf

        request = self.predict_request(model, inputs, **spec)
        try:
            response = self.prediction.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code().name, error.details() or "") from None
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def status(self, model: str) -> list[tuple[int, str]]:
        """``(version, state name)`` for every version the server knows."""
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        try:
            response = self.models.GetModelStatus(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code().name, error.details() or "") from None
        state = get_model_status_pb2.ModelVersionStatus.State
        return [(int(s.version), state.Name(s.state)) for s in response.model_version_status]

    def close(self) -> None:
        self.channel.close()
