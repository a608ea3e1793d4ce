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

URLs are matched as TF Serving matches them (``http_rest_api_util.cc``): on the raw
request target, before percent-decoding, so ``%3A`` and ``%2F`` are part of a model name and
never a ``:`` or ``/`` of the route; the model name and label are decoded afterwards. Under
``/v1/`` a request that matches no route, or uses a method other than GET and POST, is 400
``Malformed request``; OPTIONS is a CORS preflight (200 with an ``Origin`` header, else
400); TRACE and CONNECT are 501 and paths outside ``/v1/`` 404, as TF Serving's HTTP library
answers them.

Errors are ``{"error": "..."}`` with TF Serving's statuses: 400 for a malformed URL or body,
an unknown label or too many instances (INVALID_ARGUMENT), 404 for an unknown model or
version, 501 for ``:classify`` and ``:regress`` (not implemented here), 503 with
``Retry-After`` when predict work is saturated (UNAVAILABLE), 504 past the request deadline
(DEADLINE_EXCEEDED). Predict work is bounded by :class:`recsys_course.serving.limits.PredictLimits`
(instances per request, requests computing and waiting, the deadline, answer bytes). The
HTTP listener adds JSON answers for its own limits: 408 when a request's headers and body do
not arrive within ``header_timeout`` seconds, 413 for a body over ``max_body_bytes`` (at
once, without ``100 Continue``), 431 for headers over 64 KiB, 503 when every connection
slot is busy, 400 and a closed connection for a request whose framing is ambiguous (both
``Content-Length`` and ``Transfer-Encoding``, a repeated or invalid ``Content-Length``). No
error body carries a file path or a Python exception name, and none is longer than
:data:`recsys_course.serving.protocol.MAX_ERROR_CHARS` characters; details go to the
server's log.

HTTP is served by `waitress <https://docs.pylonsproject.org/projects/waitress/>`_, a
production WSGI server in pure Python: one asynchronous loop holds every connection (an idle
keep-alive connection costs a socket, not a thread) and a fixed pool of worker threads runs
requests. The practice server keeps the number of open connections below the process's file
limit, closes the longest-idle keep-alive connection when a new client needs the slot, and
backs off instead of spinning when ``accept`` fails.

gRPC (optional, TF Serving's ``--port``, conventionally 8500): ``PredictionService.Predict``,
``PredictionService.GetModelMetadata`` and ``ModelService.GetModelStatus`` from
``tensorflow-serving-api``, under the same predict limits (the deadline is the client's, as in
TF Serving); ``Classify``, ``Regress``, ``MultiInference`` and
``HandleReloadConfigRequest`` answer UNIMPLEMENTED.

Both listen on 127.0.0.1 only: the practice server is for your own machine.
"""

from __future__ import annotations

import errno
import math
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from recsys_course.serving.limits import PredictLimits, PredictSlots, check_deadline
from recsys_course.serving.protocol import (
    AnswerTooLargeError,
    NotFoundError,
    ServingRequestError,
    UnavailableError,
    UnimplementedError,
    check_batch_size,
    clip_message,
    decode_predict_request,
    dumps,
    encode_predict_response,
    show,
)
from recsys_course.serving.repository import ModelRepository, ModelSpec

HOST = "127.0.0.1"  # never 0.0.0.0: the practice server is not meant to be reachable
# TF Serving's routes (http_rest_api_util.cc, RE2 with (?i)), matched on the raw target.
# "[0-9]" rather than "\d": RE2's \d is ASCII, Python's would accept "٣".
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_VERSION_OR_LABEL = r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
PREDICT_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)" + _VERSION_OR_LABEL + r":(?P<method>classify|regress|predict)", re.IGNORECASE
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/(?P<name>[^/:]+))?" + _VERSION_OR_LABEL + r"(?:/(?P<subresource>metadata))?", re.IGNORECASE
)
MAX_VERSION = 2**63 - 1  # versions are int64 in TF Serving's protos
#: Methods TF Serving's HTTP library (libevent) parses; TRACE and CONNECT it refuses (501).
KNOWN_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT")
REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 408: "Request Timeout", 413: "Payload Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Gateway Timeout",
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
    """A version from a URL: ``None`` when absent, else an int64; 400 with TF Serving's
    message for digits that do not fit (TF Serving's versions are int64)."""
    if text is None:
        return None
    if len(text) > 19 or int(text) > MAX_VERSION:
        raise ServingRequestError(f"Failed to convert version: {show(text, 25)} to numeric.")
    return int(text)


def request_target(environ: dict) -> str:
    """The raw request target (path and query, still percent-encoded) of a WSGI request, as
    UTF-8 text: TF Serving routes on it, so ``%3A`` never becomes a route's ``:``."""
    raw = environ.get("REQUEST_URI")
    if raw is None:  # not waitress: rebuild it from the decoded path
        from urllib.parse import quote

        query = environ.get("QUERY_STRING", "")
        raw = quote(environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=") + (f"?{query}" if query else "")
    if not raw.startswith("/"):  # absolute form, http://host/v1/...
        parts = urlsplit(raw)
        raw = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _decoded(text: str | None) -> str | None:
    """A model name or label from the URL, percent-decoded (curl_easy_unescape in TF Serving)."""
    return None if text is None else unquote(text, errors="replace")


class RestApp:
    """TF Serving's REST routes on top of a :class:`ModelRepository`, as a WSGI application.

    ``handle(method, target, body)`` returns ``(http_status, body bytes, extra headers)``
    without any sockets; calling the object serves WSGI.

    Args:
        repository: the models.
        log: called with a line per internal error (with its traceback).
        limits: the predict limits; :attr:`slots` enforces the concurrent ones.
        slots: share one :class:`PredictSlots` with the gRPC service (default: a new one).
    """

    def __init__(self, repository: ModelRepository, log: Callable[[str], None] | None = None,
                 limits: PredictLimits | None = None, slots: PredictSlots | None = None) -> None:
        self.repository = repository
        self._log = log or (lambda line: None)
        self.limits = limits or PredictLimits()
        self.slots = slots or PredictSlots(self.limits.num_batch_threads, self.limits.max_enqueued_batches)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        started = time.monotonic()
        method = environ["REQUEST_METHOD"].upper()
        status, data, headers = self.handle(method, request_target(environ), environ["wsgi.input"].read,
                                            origin=environ.get("HTTP_ORIGIN"), started=started)
        if data:
            headers = [("Content-Type", "application/json"), *headers]
        headers.append(("Content-Length", str(len(data))))
        start_response(f"{status} {REASONS.get(status, 'Error')}", headers)
        return [data]

    def handle(self, method: str, target: str, body: bytes | Callable[[], bytes] = b"", *,
               origin: str | None = None, started: float | None = None) -> tuple[int, bytes, list]:
        """Answer one request: ``(status, JSON body, extra headers)``. ``target`` is the raw
        path (and query) as sent; ``body`` the bytes or a function that reads them (called
        only by a predict request, once it holds a predict slot)."""
        try:
            return self._route(method.upper(), target, body, origin, time.monotonic() if started is None else started)
        except ServingRequestError as error:
            headers = [("Retry-After", str(error.retry_after))] if isinstance(error, UnavailableError) else []
            return error.status, dumps(error.body()), headers
        except Exception:  # a server answers, it does not crash
            # The body names neither the exception nor a file: both go to the log only.
            self._log("internal error while serving " + f"{method[:20]} {target[:200]}:\n" + traceback.format_exc())
            message = "internal error while serving the request; the server's log has the details"
            return 500, dumps({"error": message}), []

    def _route(self, method: str, target: str, body, origin: str | None, started: float) -> tuple[int, bytes, list]:
        if method in ("TRACE", "CONNECT"):
            raise UnimplementedError(f"Method {method} is not implemented: the REST API answers GET and POST")
        if method not in KNOWN_METHODS:
            raise ServingRequestError(f"Malformed request: unknown method {show(method, 20)}")
        if not _V1.fullmatch(target):
            raise NotFoundError(f"Not found: {show(target, 200)} (the REST API lives under /v1/models/)")
        if method == "OPTIONS":  # TF Serving answers a CORS preflight under /v1/
            if re.search(r"https?://", origin or ""):
                return 200, b"", []
            raise ServingRequestError("Origin header is missing in CORS preflight")
        route = (PREDICT_PATH if method == "POST" else STATUS_PATH if method == "GET" else None)
        match = route.fullmatch(target) if route else None
        if match:
            name, label = _decoded(match["name"]), _decoded(match["label"])
            version = parse_version(match["version"])
            if method == "POST" and match["method"] == "predict":  # compared as TF Serving does
                return 200, self._predict(name, version, label, body, started), []
            if method == "POST" and match["method"] in ("classify", "regress"):
                raise UnimplementedError(
                    f":{match['method']} is not implemented by the practice server; use :predict"
                )
            if method == "GET":
                if not name:
                    raise ServingRequestError("Missing model name in request.")
                if match["subresource"] == "metadata":
                    return 200, dumps(self._metadata(self.repository.servable(name, version, label))), []
                return 200, dumps(self.repository.status(name, version, label)), []
        raise ServingRequestError(f"Malformed request: {method} {show(target, 200)}")

    def _predict(self, name: str, version: int | None, label: str | None, body, started: float) -> bytes:
        """Run ``:predict`` within the limits: a predict slot first (or 503/504), then read
        and parse the body, run the model and encode the answer, checking the deadline
        between the steps."""
        servable = self.repository.servable(name, version, label)  # 404 at once, without queueing
        limits = self.limits
        deadline = limits.rest_deadline(started)
        limit = f"the server's rest_api_timeout_in_ms of {limits.rest_api_timeout_in_ms} ms"
        with self.slots.slot(deadline, limit):
            data = body() if callable(body) else body
            check_deadline(deadline, limit)
            call = decode_predict_request(data, servable.signature, limits.max_batch_size)
            del data
            check_deadline(deadline, limit)
            outputs = servable.run(call.signature_name, call.inputs)
            check_deadline(deadline, limit)
            return encode_predict_response(outputs, call.layout, limits.max_response_bytes)

    @staticmethod
    def _metadata(servable) -> dict:
        defs = {key: _proto_dict(value) for key, value in servable.signature_defs().items()}
        return {
            "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": defs}},
        }


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
    strict request framing, eviction of idle keep-alive connections and back-off on
    ``accept`` failures. Built on first use so that importing this module does not import
    waitress."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser, ParsingError
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

    class StrictParser(HTTPRequestParser):
        """Waitress's parser, stricter where a request's framing is ambiguous (RFC 9112,
        section 6): both ``Content-Length`` and ``Transfer-Encoding`` (the shape of request
        smuggling), or ``Transfer-Encoding`` in HTTP/1.0, is a 400 that closes the
        connection. ``100 Continue`` is sent only while a body is still to come: never to a
        request refused while its headers are read (413 for its announced length, 431, a bad
        header), nor to one that is already complete (waitress would then wait for a body
        that never comes, and answer 408)."""

        def parse_header(self, header_plus):
            super().parse_header(header_plus)
            if self.chunked and "CONTENT_LENGTH" in self.headers:
                raise ParsingError("a request may not carry both Content-Length and Transfer-Encoding")
            if self.version == "1.0" and "TRANSFER_ENCODING" in self.headers:
                raise ParsingError("Transfer-Encoding is not allowed in an HTTP/1.0 request")

        def received(self, data):
            consumed = super().received(data)
            if self.error is not None or self.completed:
                self.expect_continue = False  # no body to invite: refused, or none announced
            return consumed

    class JsonErrorTask(ErrorTask):
        """Waitress's own errors (malformed HTTP, 413, 431, our 408) as TF Serving-style JSON,
        always on an HTTP/1.1 status line (a request cut short has no version of its own),
        and the connection closed afterwards."""

        def __init__(self, channel, request):
            super().__init__(channel, request)
            self.version = "1.1"

        def execute(self) -> None:
            error = self.request.error
            adj = self.channel.server.adj
            template = messages.get(error.code)
            message = (template.format(header_timeout=self.channel.server.header_timeout,
                                       max_body_bytes=adj.max_request_body_size)
                       if template else f"{error.reason}: {error.body}")
            body = dumps({"error": clip_message(message)})
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class Channel(HTTPChannel):
        error_task_class = JsonErrorTask
        parser_class = StrictParser
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
        threads: worker threads for requests (waitress ``threads``); the server adds one per
            predict slot and queue place (:class:`PredictLimits`), so requests waiting for
            predict work never hold the threads that answer status and metadata.
        connection_limit: open connections at most; lowered to fit the file limit.
        backlog: the kernel's queue of connections not yet accepted (``listen`` backlog).
        idle_timeout: seconds an idle keep-alive connection stays open.
        header_timeout: seconds a request's headers and body may take to arrive (408).
        max_body_bytes: largest request body (413); 16 MiB leaves 16 KiB for each of the
            ``max_batch_size`` (1000) instances. Parsing JSON takes up to about 11 times the
            body's size in memory (many short strings), once per predict slot.
        max_header_bytes: largest request head (431).
    """

    def __init__(self, *, threads: int = 8, connection_limit: int = 1000, backlog: int = 2048,
                 idle_timeout: float = 60.0, header_timeout: float = 20.0,
                 max_body_bytes: int = 16 * 2**20, max_header_bytes: int = 64 * 2**10) -> None:
        self.threads, self.connection_limit, self.backlog = threads, connection_limit, backlog
        self.idle_timeout, self.header_timeout = idle_timeout, header_timeout
        self.max_body_bytes, self.max_header_bytes = max_body_bytes, max_header_bytes


def _grpc_services(repository: ModelRepository, limits: PredictLimits, slots: PredictSlots,
                   max_message_bytes: int):
    """gRPC servicers for Predict, GetModelMetadata and GetModelStatus, and UNIMPLEMENTED
    answers that say so for the rest of TF Serving's two services.

    Every refusal is a gRPC status with TF Serving's code: a request naming an unknown model
    or version is NOT_FOUND; a TensorProto that does not decode, an input name, dtype or shape
    the signature does not take, an unknown label, more than ``max_batch_size`` instances or
    an unsupported ``metadata_field`` is INVALID_ARGUMENT; saturated predict work is
    UNAVAILABLE; the client's deadline passing is DEADLINE_EXCEEDED; an answer over
    ``max_response_bytes`` is RESOURCE_EXHAUSTED. Predict shares ``slots`` with REST.
    """
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    from recsys_course.serving.protocol import check_inputs

    answer_limit = min(limits.max_response_bytes, max_message_bytes)

    def abort(context, error: ServingRequestError):
        """Raises: ``context.abort`` ends the call with the error's gRPC status code."""
        context.abort(getattr(grpc.StatusCode, error.grpc_code), error.message)

    def target(spec):
        version = spec.version.value if spec.HasField("version") else None
        if version is not None and version < 0:
            raise ServingRequestError(f"Invalid version: {version}")
        return spec.name, version, spec.version_label or None

    def decode(key: str, proto):
        """A TensorProto as an array, after checking what it would cost: a shape whose
        elements would take more memory than a gRPC message may hold is refused before
        anything is allocated (TensorFlow repeats a proto's last value to fill its shape)."""
        dims = [dim.size for dim in proto.tensor_shape.dim]
        if proto.tensor_shape.unknown_rank or any(size < 0 for size in dims):
            raise ServingRequestError(f"input '{show(key)}': the TensorProto's shape is not fully defined")
        check_batch_size(dims[0] if dims else 1, limits.max_batch_size)
        try:
            itemsize = 8 if proto.dtype == tf.string.as_datatype_enum else tf.as_dtype(proto.dtype).size
        except TypeError:  # not a dtype at all
            itemsize = 8
        if math.prod(dims) * max(itemsize, 1) > max_message_bytes:
            raise ServingRequestError(
                f"input '{show(key)}': a tensor of shape {dims} is larger than the server's gRPC message "
                f"limit of {max_message_bytes:,} bytes"
            )
        try:
            return tf.make_ndarray(proto)
        except Exception:  # any undecodable proto is the client's error
            raise ServingRequestError(
                f"input '{show(key)}': the TensorProto does not decode (its dtype, shape and "
                "values disagree); build it with tf.make_tensor_proto"
            ) from None

    def answer_bytes(array) -> int:
        """About what ``array`` takes in a TensorProto (its data; strings with their length)."""
        if array.dtype == object:
            return sum(len(value) + 2 for value in array.reshape(-1))
        return array.nbytes

    def deadline_of(context) -> float | None:
        """The client's deadline as a ``time.monotonic()`` time; ``None`` without one (gRPC
        then reports an effectively infinite time remaining)."""
        remaining = context.time_remaining()
        return None if remaining is None or remaining > 10**8 else time.monotonic() + remaining

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

    def unimplemented(name: str, advice: str):
        def method(self, request, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by the practice server; {advice}")
        method.__name__ = name
        return method

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guarded
        def Predict(self, request, context):  # gRPC method name
            servable = repository.servable(*target(request.model_spec))
            signature = servable.signature(request.model_spec.signature_name or None)
            deadline = deadline_of(context)
            limit = "the client's deadline"
            with slots.slot(deadline, limit, cancelled=lambda: not context.is_active()):
                inputs = {key: decode(key, proto) for key, proto in request.inputs.items()}
                check_inputs(inputs, signature)  # names, dtypes and shapes, as REST checks them
                check_deadline(deadline, limit)
                outputs = servable.run(signature.name, inputs)
                check_deadline(deadline, limit)
                wanted = list(request.output_filter) or list(outputs)
                for key in wanted:
                    if key not in outputs:
                        raise ServingRequestError(f"output tensor alias not found in signature: {show(key)}")
                size = sum(answer_bytes(np.asarray(outputs[key])) for key in wanted)
                if size > answer_limit:
                    raise AnswerTooLargeError(
                        f"the answer would take about {size:,} bytes, more than the server's limit of "
                        f"{answer_limit:,} bytes (max_response_bytes, gRPC message size); send fewer instances"
                    )
                response = predict_pb2.PredictResponse()
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = signature.name
                for key in wanted:
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
                raise ServingRequestError(f"Metadata field {show(unknown[0])} is not supported")
            servable = repository.servable(*target(request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, value in servable.signature_defs().items():
                signature_map.signature_def[key].CopyFrom(value)
            response.metadata["signature_def"].Pack(signature_map)
            return response

        Classify = unimplemented("Classify", "use Predict")
        Regress = unimplemented("Regress", "use Predict")
        MultiInference = unimplemented("MultiInference", "use one Predict call per model")

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

        HandleReloadConfigRequest = unimplemented(
            "HandleReloadConfigRequest", "edit the model config file instead (the server re-reads it when it changes)"
        )

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
        predict_limits: :class:`PredictLimits` for predict work over REST and gRPC (instances
            per request, requests computing and waiting, the REST deadline, answer bytes).
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
        predict_limits: PredictLimits | None = None,
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
        self.predict_limits = predict_limits or PredictLimits()
        #: The predict slots REST and gRPC share (tests hold them to saturate the server).
        self.predict_slots = PredictSlots(self.predict_limits.num_batch_threads,
                                          self.predict_limits.max_enqueued_batches)
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
        app = RestApp(self.repository, log=lambda line: print(f"[practice server] {line}", file=sys.stderr, flush=True),
                      limits=self.predict_limits, slots=self.predict_slots)
        if self.log_requests:
            app = _logged(app)
        limits = self.limits
        if not self.verbose:  # waitress warns on stderr when the connection cap is reached
            import logging

            logging.getLogger("waitress").setLevel(logging.ERROR)
        self.connection_limit = connection_cap(limits.connection_limit)
        self._http = _waitress_classes()(
            app,
            host=HOST, port=self.port, threads=self._worker_threads(), backlog=limits.backlog,
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

    def _worker_threads(self) -> int:
        """Threads of each listener: ``limits.threads`` plus one per predict slot and queue
        place, so that predict work, running or waiting, always leaves ``limits.threads``
        threads for everything else (status and metadata answer while predict is saturated)."""
        return self.limits.threads + self.predict_limits.num_batch_threads + self.predict_limits.max_enqueued_batches

    def _start_grpc(self, port: int) -> None:
        from concurrent import futures

        import grpc

        prediction, models, prediction_grpc, model_grpc = _grpc_services(
            self.repository, self.predict_limits, self.predict_slots, self.grpc_max_message_bytes
        )
        options = [
            ("grpc.max_receive_message_length", self.grpc_max_message_bytes),
            ("grpc.max_send_message_length", self.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._worker_threads(), thread_name_prefix="practice-grpc"),
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
