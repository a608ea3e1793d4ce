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
``:regress`` (not implemented here). The practice server adds JSON answers for its own
limits: 405 for methods other than GET and POST, 408 when a request's headers and body do
not arrive within ``header_timeout`` seconds, 413 for a body over ``max_body_bytes``, 431
for headers over 64 KiB, 503 when every connection slot is busy. No error body carries a
file path or a Python exception name; details go to the server's log.

HTTP is served by `waitress <https://docs.pylonsproject.org/projects/waitress/>`_, a
production WSGI server in pure Python: one asynchronous loop holds every connection (an idle
keep-alive connection costs a socket, not a thread) and a fixed pool of worker threads runs
requests. The practice server keeps the number of open connections below the process's file
limit, closes the longest-idle keep-alive connection when a new client needs the slot, and
backs off instead of spinning when ``accept`` fails.

gRPC (optional, TF Serving's ``--port``, conventionally 8500): ``PredictionService.Predict``,
``PredictionService.GetModelMetadata`` and ``ModelService.GetModelStatus`` from
``tensorflow-serving-api``.

Both listen on 127.0.0.1 only: the practice server is for your own machine.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from collections.abc import Callable, Sequence

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
_VERSION = r"(?P<version>[0-9]+)"  # ASCII digits only ("\\d" would accept "٣")
_TARGET = r"/v1/models/(?P<name>[^/:]+)(?:/versions/" + _VERSION + r"|/labels/(?P<label>[^/:]+))?"
PREDICT_PATH = re.compile(_TARGET + r":(?P<method>predict|classify|regress)", re.IGNORECASE)
STATUS_PATH = re.compile(_TARGET + r"(?P<metadata>/metadata)?", re.IGNORECASE)
MAX_VERSION = 2**63 - 1  # versions are int64 in TF Serving's protos
ALLOWED_METHODS = ("GET", "POST")
REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


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


def parse_version(text: str | None) -> int | None:
    """A version from a URL or a request: ``None`` when absent, else an int64; 400 for
    numbers a version cannot be (TF Serving's versions are int64)."""
    if text is None:
        return None
    if len(text) > 19 or int(text) > MAX_VERSION:
        raise ServingRequestError(f"Invalid version: {text[:25]}{'...' if len(text) > 25 else ''} is not an int64")
    return int(text)


class RestApp:
    """TF Serving's REST routes on top of a :class:`ModelRepository`, as a WSGI application.

    ``handle(method, path, body)`` (``path`` already percent-decoded) returns
    ``(http_status, json_payload)`` without any sockets; calling the object serves WSGI.
    """

    def __init__(self, repository: ModelRepository, log: Callable[[str], None] | None = None) -> None:
        self.repository = repository
        self._log = log or (lambda line: None)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        # WSGI hands the decoded path over as latin-1 characters; undo that to get UTF-8 text.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        body = environ["wsgi.input"].read() if method == "POST" else b""
        status, payload = self.handle(method, path, body)
        data = dumps(payload)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        if status == 405:
            headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
        start_response(f"{status} {REASONS.get(status, 'Error')}", headers)
        return [data]

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        try:
            return 200, self._route(method.upper(), path, body)
        except ServingRequestError as error:
            return error.status, error.body()
        except Exception:  # a server answers, it does not crash
            # The body names neither the exception nor a file: both go to the log only.
            self._log("internal error while serving " + f"{method} {path[:200]}:\n" + traceback.format_exc())
            return 500, {"error": "internal error while serving the request; the server's log has the details"}

    def _route(self, method: str, path: str, body: bytes) -> dict:
        if method not in ALLOWED_METHODS:
            raise MethodNotAllowed(f"Method {method[:20]} is not allowed: the REST API answers GET and POST")
        if not path.lower().startswith("/v1/"):
            raise NotFoundError(f"Not found: {path[:200]} (the REST API lives under /v1/models/)")
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
            version = parse_version(status["version"])
            if status["metadata"]:
                return self._metadata(self._servable(status))
            return self.repository.status(status["name"], version, status["label"])
        raise ServingRequestError(f"Malformed request: {method} {path[:200]}")

    def _servable(self, match: re.Match):
        return self.repository.servable(match["name"], parse_version(match["version"]), match["label"])

    @staticmethod
    def _metadata(servable) -> dict:
        defs = {key: _proto_dict(value) for key, value in servable.signature_defs().items()}
        return {
            "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": defs}},
        }


class MethodNotAllowed(ServingRequestError):
    status = 405
    grpc_code = "UNIMPLEMENTED"


# ---- HTTP transport (waitress) -------------------------------------------------------------
#: File descriptors kept free for everything but client connections (model files, gRPC,
#: TensorFlow's own): running out of them aborts TensorFlow, so connections stop well before.
FD_RESERVE = 64
#: Seconds a connection must have been silent before the server may close it to make room.
IDLE_GRACE = 1.0


def connection_cap(requested: int) -> int:
    """``requested``, lowered so that open connections can never exhaust the process's file
    descriptors (soft ``RLIMIT_NOFILE`` minus those already open minus :data:`FD_RESERVE`)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # not POSIX: no limit to respect
        return requested
    if soft == resource.RLIM_INFINITY:
        return requested
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    return max(4, min(requested, soft - in_use - FD_RESERVE))


def _waitress_classes():
    """The waitress server and channel, specialised for JSON errors, a header time-out,
    eviction of idle keep-alive connections and back-off on ``accept`` failures. Built on
    first use so that importing this module does not import waitress."""
    from waitress.channel import HTTPChannel
    from waitress.server import TcpWSGIServer
    from waitress.task import ErrorTask
    from waitress.utilities import Error

    messages = {
        408: "the request did not arrive within {header_timeout:g} s; send the headers and body promptly",
        413: "the request body is larger than the server's limit of {max_body_bytes} bytes; send fewer "
             "examples per request (or start the server with a larger --max-body-bytes)",
        431: "the request headers are larger than the server's limit",
    }

    class RequestTimeout(Error):
        code, reason = 408, "Request Timeout"

    class JsonErrorTask(ErrorTask):
        """Waitress's own errors (malformed HTTP, 413, 431, our 408) as TF Serving-style JSON."""

        def execute(self) -> None:
            error = self.request.error
            adj = self.channel.server.adj
            template = messages.get(error.code)
            message = (template.format(header_timeout=self.channel.server.header_timeout,
                                       max_body_bytes=adj.max_request_body_size)
                       if template else f"{error.reason}: {error.body}")
            body = dumps({"error": message})
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class Channel(HTTPChannel):
        error_task_class = JsonErrorTask
        request_started = 0.0  # monotonic time the current (partial) request began

        def received(self, data):
            if self.request is None and data:
                self.request_started = time.monotonic()
            return super().received(data)

        def idle(self) -> bool:
            """Between requests on a keep-alive connection: nothing read, queued or unsent."""
            return (self.request is None and not self.requests and not self.total_outbufs_len
                    and not self.will_close and not self.close_when_flushed)

    overloaded = dumps({"error": "the server has no free connection slot: retry shortly"})
    overloaded_response = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(overloaded)).encode() + b"\r\n\r\n" + overloaded
    )

    class Server(TcpWSGIServer):
        channel_class = Channel
        header_timeout = 20.0
        _paused_until = 0.0  # accept() failed (out of descriptors): wait instead of spinning

        def readable(self):
            super().readable()  # runs the periodic maintenance and waitress's own bookkeeping
            if not self.accepting or time.monotonic() < self._paused_until:
                return False
            if len(self._map) < self.adj.connection_limit:
                return True
            # At the cap: free the longest-idle keep-alive connections and accept once they
            # are closed; if every connection is mid-request, accept and answer 503.
            channels = list(self.active_channels.values())
            if any(c.will_close or c.close_when_flushed for c in channels):
                return False  # slots are being freed: accept on a later pass
            if self._evict_idle(channels):
                return False
            # A connection accepted a moment ago may not have sent its request yet: give it
            # IDLE_GRACE seconds before it counts as idle (or the 503 below is premature).
            young = time.time() - IDLE_GRACE
            return not any(c.idle() and c.last_activity > young for c in channels)

        def _evict_idle(self, channels) -> int:
            """Mark the longest-idle connections (idle for IDLE_GRACE s or more) for closing;
            return how many."""
            old = time.time() - IDLE_GRACE
            idle = sorted((c for c in channels if c.idle() and c.last_activity <= old), key=lambda c: c.last_activity)
            excess = len(self._map) - self.adj.connection_limit + 1 + self.adj.connection_limit // 32
            for channel in idle[:excess]:
                channel.will_close = True  # closed by the loop's next pass (HTTPChannel.handle_write)
            return len(idle[:excess])

        def handle_accept(self):
            try:
                accepted = self.accept()
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._paused_until = time.monotonic() + 0.25
                return
            if accepted is None:
                return
            conn, addr = accepted
            if len(self._map) >= self.adj.connection_limit:
                # Every slot is busy with a request in progress: say so at once and hang up.
                try:
                    conn.setblocking(False)
                    conn.send(overloaded_response)
                except OSError:
                    pass
                conn.close()
                return
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                conn.close()
                return
            self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

        stopping = False

        def serve_until_stopped(self) -> None:
            """Waitress's loop, ended by :attr:`stopping` (set it, then ``pull_trigger``);
            closing happens here, in the loop's own thread, never under a running poll."""
            from waitress import wasyncore

            poll = wasyncore.poll2 if self.adj.asyncore_use_poll else wasyncore.poll
            try:
                while not self.stopping:
                    poll(self.adj.asyncore_loop_timeout, self._map)
            finally:
                self.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
                wasyncore.close_all(self._map)

        def maintenance(self, now):
            super().maintenance(now)  # idle keep-alive connections past channel_timeout
            too_old = time.monotonic() - self.header_timeout
            for channel in list(self.active_channels.values()):
                partial = channel.request
                if (partial is None or partial.completed or channel.requests or channel.will_close
                        or channel.close_when_flushed or channel.request_started > too_old):
                    continue
                with channel.requests_lock:  # hand the stalled request over as a 408 error
                    partial.error = RequestTimeout("request not received in time")
                    partial.completed = True
                    channel.request = None
                    channel.requests.append(partial)
                self.add_task(channel)

    return Server


class HttpLimits:
    """The REST listener's limits (defaults suit a laptop; every one is a CLI option).

    Attributes:
        threads: worker threads running requests (waitress ``threads``).
        connection_limit: open connections at most; lowered to fit the file limit.
        backlog: the kernel's queue of connections not yet accepted (``listen`` backlog).
        idle_timeout: seconds an idle keep-alive connection stays open.
        header_timeout: seconds a request's headers and body may take to arrive (408).
        max_body_bytes: largest request body (413).
        max_header_bytes: largest request head (431).
    """

    def __init__(self, *, threads: int = 8, connection_limit: int = 1000, backlog: int = 2048,
                 idle_timeout: float = 60.0, header_timeout: float = 20.0,
                 max_body_bytes: int = 64 * 2**20, max_header_bytes: int = 64 * 2**10) -> None:
        self.threads, self.connection_limit, self.backlog = threads, connection_limit, backlog
        self.idle_timeout, self.header_timeout = idle_timeout, header_timeout
        self.max_body_bytes, self.max_header_bytes = max_body_bytes, max_header_bytes


def _grpc_services(repository: ModelRepository):
    """gRPC servicers for Predict, GetModelMetadata and GetModelStatus.

    Every refusal is a gRPC status with TF Serving's code: a request naming an unknown model
    or version is NOT_FOUND; a TensorProto that does not decode, an input name, dtype or shape
    the signature does not take, or an unsupported ``metadata_field`` is INVALID_ARGUMENT.
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    from recsys_course.serving.protocol import check_inputs

    def abort(context, error: ServingRequestError):
        """Raises: ``context.abort`` ends the call with the error's gRPC status code."""
        context.abort(getattr(grpc.StatusCode, error.grpc_code), error.message)

    def target(spec):
        version = spec.version.value if spec.HasField("version") else None
        if version is not None and version < 0:
            raise ServingRequestError(f"Invalid version: {version}")
        return spec.name, version, spec.version_label or None

    def decode(key: str, proto):
        try:
            return tf.make_ndarray(proto)
        except Exception:  # any undecodable proto is the client's error
            raise ServingRequestError(
                f"input '{key[:100]}': the TensorProto does not decode (its dtype, shape and "
                "values disagree); build it with tf.make_tensor_proto"
            ) from None

    def guarded(method):
        """Run a servicer method; unexpected failures become INTERNAL without details."""
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except ServingRequestError as error:
                abort(context, error)
            except Exception:
                if context.code() is not None:  # context.abort() already ended the call
                    raise
                traceback.print_exc(file=sys.stderr)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; the server's log has the details")
        wrapper.__name__ = method.__name__
        return wrapper

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guarded
        def Predict(self, request, context):  # gRPC method name
            servable = repository.servable(*target(request.model_spec))
            signature = servable.signature(request.model_spec.signature_name or None)
            inputs = {key: decode(key, proto) for key, proto in request.inputs.items()}
            check_inputs(inputs, signature)  # names, dtypes and shapes, as REST checks them
            outputs = servable.run(signature.name, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature.name
            wanted = list(request.output_filter) or list(outputs)
            for key in wanted:
                if key not in outputs:
                    raise ServingRequestError(f"output tensor alias not found in signature: {key[:100]}")
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

        @guarded
        def GetModelMetadata(self, request, context):
            # TF Serving: at least one field, and "signature_def" is the only one it knows.
            fields = list(request.metadata_field)
            if not fields:
                raise ServingRequestError("GetModelMetadataRequest must specify at least one metadata_field")
            unknown = [f for f in fields if f != "signature_def"]
            if unknown:
                raise ServingRequestError(f"Metadata field {unknown[0][:100]} is not supported")
            servable = repository.servable(*target(request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, value in servable.signature_defs().items():
                signature_map.signature_def[key].CopyFrom(value)
            response.metadata["signature_def"].Pack(signature_map)
            return response

    class Models(model_service_pb2_grpc.ModelServiceServicer):
        @guarded
        def GetModelStatus(self, request, context):
            name, version, label = target(request.model_spec)
            status = repository.status(name, version, label)
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
        limits: the REST listener's :class:`HttpLimits`.
        grpc_max_message_bytes: largest gRPC request or response (TF Serving sets no practical
            limit; gRPC's own default is 4 MiB).
        grpc_max_concurrent_rpcs: RPCs in progress at most; more get RESOURCE_EXHAUSTED.

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
        limits: HttpLimits | None = None,
        grpc_max_message_bytes: int = 256 * 2**20,
        grpc_max_concurrent_rpcs: int = 256,
    ) -> None:
        log = (lambda line: print(f"[practice server] {line}", file=sys.stderr, flush=True)) if verbose else None
        self.repository = ModelRepository(
            models, config_file=model_config_file, root=model_base_path, model_name=model_name,
            warmup=warmup, log=log, retry_seconds=max(poll_seconds, 0.1),
        )
        self._log = log or (lambda line: None)
        self.verbose = verbose
        self.port, self.grpc_port_requested = port, grpc_port
        self.poll_seconds, self.log_requests = poll_seconds, log_requests
        self.limits = limits or HttpLimits()
        self.grpc_max_message_bytes, self.grpc_max_concurrent_rpcs = grpc_max_message_bytes, grpc_max_concurrent_rpcs
        self._http = None
        self._http_thread: threading.Thread | None = None
        self._grpc = None
        self.grpc_port: int | None = None
        self.connection_limit: int | None = None

    @property
    def rest_url(self) -> str:
        if self._http is None:
            raise RuntimeError("the server is not running: call start() first")
        return f"http://{HOST}:{self._http.effective_port}"

    @property
    def grpc_target(self) -> str:
        if self.grpc_port is None:
            raise RuntimeError("gRPC is not enabled (pass grpc_port=0 or a port number)")
        return f"{HOST}:{self.grpc_port}"

    def start(self) -> PracticeServer:
        """Load the models, then listen. Returns ``self``."""
        self.repository.refresh()
        app = RestApp(self.repository, log=lambda line: print(f"[practice server] {line}", file=sys.stderr, flush=True))
        if self.log_requests:
            app = _logged(app)
        limits = self.limits
        if not self.verbose:  # waitress warns on stderr when the connection cap is reached
            import logging

            logging.getLogger("waitress").setLevel(logging.ERROR)
        self.connection_limit = connection_cap(limits.connection_limit)
        self._http = _waitress_classes()(
            app,
            host=HOST, port=self.port, threads=limits.threads, backlog=limits.backlog,
            connection_limit=self.connection_limit, channel_timeout=limits.idle_timeout,
            cleanup_interval=max(0.5, min(limits.header_timeout, limits.idle_timeout) / 4),
            max_request_body_size=limits.max_body_bytes, max_request_header_size=limits.max_header_bytes,
            ident="recsys-course-practice-server", expose_tracebacks=False, clear_untrusted_proxy_headers=False,
            log_socket_errors=False, asyncore_use_poll=True,  # select() stops at descriptor 1024
        )
        self._http.header_timeout = limits.header_timeout
        self._http_thread = threading.Thread(
            target=self._http.serve_until_stopped, name="practice-server-http", daemon=True
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
        options = [
            ("grpc.max_receive_message_length", self.grpc_max_message_bytes),
            ("grpc.max_send_message_length", self.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.limits.threads, thread_name_prefix="practice-grpc"),
            options=options, maximum_concurrent_rpcs=self.grpc_max_concurrent_rpcs,
        )
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
            server, self._http = self._http, None
            server.stopping = True
            server.pull_trigger()  # wake the loop; it closes every socket on its way out
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
                self._http_thread = None

    def __enter__(self) -> PracticeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _logged(app):
    """Wrap a WSGI app to print one line per request to stderr."""
    def logged(environ, start_response):
        def start(status, headers, exc_info=None):
            sys.stderr.write(
                f"[practice server] {environ.get('REMOTE_ADDR', '-')} "
                f"\"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')[:200]}\" {status.split()[0]}\n"
            )
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return logged
