"""The practice server: a small stand-in for TensorFlow Serving, for learning its protocols
offline. It is **not** TensorFlow Serving (no batching, no C++ runtime, no monitoring); it
runs SavedModels with ``tf.saved_model.load`` and answers a documented subset of TF
Serving's APIs the way TF Serving does, so the same clients work against both.

REST (``http://127.0.0.1:<port>``, TF Serving's ``--rest_api_port``, conventionally 8501):

=====================================================================  ===========================
``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``                   model status
``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata``          signatures (SignatureDefs)
``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict``           Predict, row or columnar
=====================================================================  ===========================

Errors are ``{"error": "..."}`` with TF Serving's HTTP statuses: 400 for a malformed URL or
body (bad JSON, neither or both of ``instances``/``inputs``, unknown input name, wrong
type or shape), 404 for an unknown model, version or label, 501 for ``:classify`` and
``:regress`` (not implemented here).

gRPC (optional, TF Serving's ``--port``, conventionally 8500): ``PredictionService.Predict``,
``PredictionService.GetModelMetadata`` and ``ModelService.GetModelStatus`` from
``tensorflow-serving-api``.

Both listen on 127.0.0.1 only: the practice server is for your own machine.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlsplit

from recsys_course.serving.protocol import (
    NotFoundError,
    ServingRequestError,
    UnimplementedError,
    decode_predict_request,
    dumps,
    encode_predict_response,
)
from recsys_course.serving.repository import ModelRepository, ModelSpec

HOST = "127.0.0.1"  # never 0.0.0.0: the practice server is not meant to be reachable
_TARGET = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
PREDICT_PATH = re.compile(_TARGET + r":(?P<method>predict|classify|regress)", re.IGNORECASE)
STATUS_PATH = re.compile(_TARGET + r"(?P<metadata>/metadata)?", re.IGNORECASE)


def _proto_dict(message) -> dict:
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5 names the option differently
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True
        )


class RestApp:
    """TF Serving's REST routes on top of a :class:`ModelRepository`, without sockets:
    ``handle(method, path, body)`` returns ``(http_status, json_payload)``."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        try:
            return 200, self._route(method.upper(), unquote(urlsplit(path).path), body)
        except ServingRequestError as error:
            return error.status, error.body()
        except Exception as error:  # noqa: BLE001 - a server answers, it does not crash
            return 500, {"error": f"internal error: {type(error).__name__}: {error}"}

    def _route(self, method: str, path: str, body: bytes) -> dict:
        if not path.lower().startswith("/v1/"):
            raise NotFoundError(f"Not found: {path} (the REST API lives under /v1/models/)")
        predict = PREDICT_PATH.fullmatch(path)
        if method == "POST" and predict:
            if predict["method"].lower() != "predict":
                raise UnimplementedError(
                    f":{predict['method']} is not implemented by the practice server; use :predict"
                )
            servable = self._servable(predict)
            call = decode_predict_request(body, servable.signature)
            outputs = servable.run(call.signature_name, call.inputs)
            return encode_predict_response(outputs, call.layout)
        status = STATUS_PATH.fullmatch(path)
        if method == "GET" and status:
            version = int(status["version"]) if status["version"] else None
            if status["metadata"]:
                return self._metadata(self._servable(status))
            return self.repository.status(status["name"], version, status["label"])
        raise ServingRequestError(f"Malformed request: {method} {path}")

    def _servable(self, match: re.Match):
        version = int(match["version"]) if match["version"] else None
        return self.repository.servable(match["name"], version, match["label"])

    @staticmethod
    def _metadata(servable) -> dict:
        defs = {key: _proto_dict(value) for key, value in servable.signature_defs().items()}
        return {
            "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": defs}},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
    server_version = "recsys-course-practice-server"
    timeout = 60  # an idle keep-alive connection is closed after a minute

    def setup(self) -> None:
        super().setup()
        # Answers go out in one write with Nagle's algorithm off: otherwise a small
        # response waits for the client's delayed ACK and every request costs ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.log_requests:
            sys.stderr.write(f"[practice server] {self.address_string()} {format % args}\n")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            status, payload = 400, {"error": "unreadable request body"}
        else:
            status, payload = self.server.app.handle(self.command, self.path, body)
        data = dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n")  # end_headers() without its separate flush
        self._headers_buffer.append(data)
        self.flush_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, app: RestApp, log_requests: bool) -> None:
        super().__init__((HOST, port), _Handler)
        self.app, self.log_requests = app, log_requests
        self.connections: set[socket.socket] = set()

    def close_connections(self) -> None:
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _grpc_services(repository: ModelRepository):
    """gRPC servicers for Predict, GetModelMetadata and GetModelStatus."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    def abort(context, error: ServingRequestError):
        """Raises: ``context.abort`` ends the call with the error's gRPC status code."""
        context.abort(getattr(grpc.StatusCode, error.grpc_code), error.message)

    def target(spec):
        version = spec.version.value if spec.HasField("version") else None
        return spec.name, version, spec.version_label or None

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - gRPC method name
            try:
                servable = repository.servable(*target(request.model_spec))
                signature = servable.signature(request.model_spec.signature_name or None)
                inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
                outputs = servable.run(signature.name, inputs)
            except ServingRequestError as error:
                abort(context, error)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature.name
            wanted = list(request.output_filter) or list(outputs)
            for key in wanted:
                if key not in outputs:
                    abort(context, ServingRequestError(f"output tensor alias not found: {key}"))
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

        def GetModelMetadata(self, request, context):  # noqa: N802
            try:
                servable = repository.servable(*target(request.model_spec))
            except ServingRequestError as error:
                abort(context, error)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, value in servable.signature_defs().items():
                signature_map.signature_def[key].CopyFrom(value)
            response.metadata["signature_def"].Pack(signature_map)
            return response

    class Models(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):  # noqa: N802
            try:
                name, version, label = target(request.model_spec)
                status = repository.status(name, version, label)
            except ServingRequestError as error:
                abort(context, error)
            response = get_model_status_pb2.GetModelStatusResponse()
            for row in status["model_version_status"]:
                entry = response.model_version_status.add()
                entry.version = int(row["version"])
                entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(row["state"])
                entry.status.error_message = row["status"]["error_message"]
            return response

    return Prediction(), Models(), prediction_service_pb2_grpc, model_service_pb2_grpc


class PracticeServer:
    """Serve SavedModels over TF Serving's REST API (and gRPC) on 127.0.0.1.

    Give exactly one model source:

    Args:
        model_base_path: one model's base path (with ``model_name``, or when it holds version
            folders), else a folder whose sub-folders are models.
        model_name: the name of the single model at ``model_base_path``.
        model_config_file: a TF Serving model config file; re-read when it changes.
        models: :class:`ModelSpec` objects.
        port: REST port; 0 picks a free one (read :attr:`rest_url` after :meth:`start`).
        grpc_port: gRPC port, 0 for a free one, ``None`` for no gRPC.
        poll_seconds: how often base paths and the config file are re-scanned (TF Serving's
            ``--file_system_poll_wait_seconds`` defaults to 1).
        warmup: replay ``assets.extra/tf_serving_warmup_requests`` when a version loads.
        verbose: print model events (loads, unloads, failures) to stderr.
        log_requests: print one line per HTTP request to stderr.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        model_base_path: str | Path | None = None,
        model_name: str | None = None,
        model_config_file: str | Path | None = None,
        models: Sequence[ModelSpec] | None = None,
        port: int = 8501,
        grpc_port: int | None = None,
        poll_seconds: float = 1.0,
        warmup: bool = True,
        verbose: bool = False,
        log_requests: bool = False,
    ) -> None:
        log = (lambda line: print(f"[practice server] {line}", file=sys.stderr)) if verbose else None
        self.repository = ModelRepository(
            models, config_file=model_config_file, root=model_base_path, model_name=model_name,
            warmup=warmup, log=log,
        )
        self.port, self.grpc_port_requested = port, grpc_port
        self.poll_seconds, self.log_requests = poll_seconds, log_requests
        self._http: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc = None
        self.grpc_port: int | None = None

    @property
    def rest_url(self) -> str:
        if self._http is None:
            raise RuntimeError("the server is not running: call start() first")
        return f"http://{HOST}:{self._http.server_address[1]}"

    @property
    def grpc_target(self) -> str:
        if self.grpc_port is None:
            raise RuntimeError("gRPC is not enabled (pass grpc_port=0 or a port number)")
        return f"{HOST}:{self.grpc_port}"

    def start(self) -> "PracticeServer":
        """Load the models, then listen. Returns ``self``."""
        self.repository.refresh()
        self._http = _HTTPServer(self.port, RestApp(self.repository), self.log_requests)
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
            name="practice-server-http", daemon=True,
        )
        self._http_thread.start()
        if self.grpc_port_requested is not None:
            self._start_grpc(self.grpc_port_requested)
        self.repository.start_polling(self.poll_seconds)
        return self

    def _start_grpc(self, port: int) -> None:
        from concurrent import futures

        import grpc

        prediction, models, prediction_grpc, model_grpc = _grpc_services(self.repository)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="practice-grpc"))
        prediction_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        model_grpc.add_ModelServiceServicer_to_server(models, server)
        bound = server.add_insecure_port(f"{HOST}:{port}")
        if bound == 0:
            raise OSError(f"could not bind gRPC to {HOST}:{port}")
        server.start()
        self._grpc, self.grpc_port = server, bound

    def stop(self) -> None:
        """Stop polling, close every connection and both listeners. Safe to call twice."""
        self.repository.stop()
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.close_connections()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
            self._http = None

    def __enter__(self) -> "PracticeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
