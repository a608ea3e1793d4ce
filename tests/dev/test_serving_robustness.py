"""The practice server against hostile and careless clients (issue 19): every malformed request
gets a 4xx JSON error without a traceback, an exception name or a file path; its limits
answer 408/413/431/503 in JSON; 64 clients connecting at once all get answers; idle
sockets beyond the process's file limit neither crash it nor lock out a real request; gRPC
refuses malformed TensorProtos with INVALID_ARGUMENT.

Every server binds 127.0.0.1 on a free port; every wait is bounded; subprocesses are killed
in ``finally`` blocks."""

import http.client
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from recsys_course.serving.client import RestClient
from recsys_course.serving.export import save_version
from recsys_course.serving.protocol import MAX_ERROR_CHARS
from recsys_course.serving.server import HttpLimits, PracticeServer
from toy_models import Scaler, export_toy_models

LEAKS = re.compile(r"Traceback|File \"|[A-Za-z]+(Error|Exception)\b|/tmp/|/home/|/work/|/usr/|site-packages")
# Python's words for what is wrong with a request (issue 36): the client wrote JSON, not Python.
PYTHON_WORDING = re.compile(r"codec|sys\.|int_max_str_digits|NoneType|\b(True|False|None|dict)\b|[{\[]'\w+'")


class Wide(tf.Module):
    """``x float32 [B, None]`` -> its row sums: a few instances can make a large message."""

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.reduce_sum(x, axis=1)}


class Typed(tf.Module):
    """int64 and bool inputs, to try TF Serving's integer and boolean rules on."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="n"), tf.TensorSpec([None], tf.bool, name="flag")])
    def serve(self, n, flag):
        return {"y": tf.where(flag, n, -n)}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    export_toy_models(root)
    scaler = Scaler(2.0)
    save_version(scaler, root / "scaler", 1, signatures={"serving_default": scaler.serve})
    typed = Typed()
    save_version(typed, root / "typed", 1, signatures={"serving_default": typed.serve})
    wide = Wide()
    save_version(wide, root / "wide", 1, signatures={"serving_default": wide.serve})
    return root


@pytest.fixture(scope="module")
def served(models):
    server = PracticeServer(model_base_path=models, port=0, grpc_port=0, poll_seconds=0.5).start()
    try:
        yield server
    finally:
        server.stop()


def raw(server: PracticeServer, method: str, path: str, body: bytes | None = None, headers=None):
    """One request on a fresh connection: ``(status, headers, body bytes)``."""
    port = int(server.rest_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def assert_clean_json_error(status: int, headers: dict, body: bytes, expected: int, what: str) -> dict:
    assert status == expected, f"{what}: expected HTTP {expected}, got {status} {body[:300]!r}"
    assert headers.get("Content-Type") == "application/json", f"{what}: not JSON: {headers}"
    payload = json.loads(body)
    assert set(payload) == {"error"} and isinstance(payload["error"], str), f"{what}: {payload}"
    assert not LEAKS.search(payload["error"]), f"{what}: the error leaks internals: {payload['error']!r}"
    assert not PYTHON_WORDING.search(payload["error"]), f"{what}: the error speaks Python: {payload['error']!r}"
    assert len(payload["error"]) <= MAX_ERROR_CHARS, f"{what}: a {len(payload['error'])}-character error"
    return payload


PREDICT = "/v1/models/{}:predict"
MALFORMED = [
    ("lone surrogate", "POST", PREDICT.format("retrieval"), b'{"instances": ["\\ud800"]}', 400),
    ("lone surrogate in a name", "POST", PREDICT.format("retrieval"), b'{"instances": [{"\\udc00": "u1"}]}', 400),
    ("900-level nesting", "POST", PREDICT.format("scaler"), b'{"inputs": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}", 400),
    ("100k-level nesting", "POST", PREDICT.format("scaler"), b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ("int64 overflow", "POST", PREDICT.format("typed"), b'{"inputs": {"n": [18446744073709551616], "flag": [true]}}', 400),
    ("5000-digit integer", "POST", PREDICT.format("typed"), b'{"inputs": {"n": [' + b"9" * 5000 + b'], "flag": [true]}}', 400),
    ("float32 overflow", "POST", PREDICT.format("scaler"), b'{"instances": [1e39]}', 400),
    ("double overflow", "POST", PREDICT.format("scaler"), b'{"instances": [1e400]}', 400),
    ("int beyond float32 precision", "POST", PREDICT.format("scaler"), b'{"instances": [16777217]}', 400),
    ("bool for int64", "POST", PREDICT.format("typed"), b'{"inputs": {"n": [true], "flag": [true]}}', 400),
    ("float for int64", "POST", PREDICT.format("typed"), b'{"inputs": {"n": [2.0], "flag": [true]}}', 400),
    ("int for bool", "POST", PREDICT.format("typed"), b'{"inputs": {"n": [2], "flag": [1]}}', 400),
    ("bool for float", "POST", PREDICT.format("scaler"), b'{"instances": [true]}', 400),
    ("signature_name a number", "POST", PREDICT.format("scaler"), b'{"instances": [1.0], "signature_name": 5}', 400),
    ("signature_name null", "POST", PREDICT.format("scaler"), b'{"instances": [1.0], "signature_name": null}', 400),
    ("signature_name unknown", "POST", PREDICT.format("scaler"), b'{"instances": [1.0], "signature_name": "x"}', 400),
    ("bad base64", "POST", PREDICT.format("retrieval"), b'{"instances": [{"b64": "@@@"}]}', 400),
    ("b64 not a string", "POST", PREDICT.format("retrieval"), b'{"instances": [{"b64": 5}]}', 400),
    ("invalid UTF-8", "POST", PREDICT.format("retrieval"), b'{"instances": ["\xff\xfe"]}', 400),
    ("empty body", "POST", PREDICT.format("scaler"), b"", 400),
    ("5000-digit version", "GET", "/v1/models/scaler/versions/" + "9" * 5000, None, 400),
    ("int64+1 version", "POST", "/v1/models/scaler/versions/9223372036854775808:predict", b'{"instances": [1.0]}', 400),
    ("Arabic-Indic digit version", "GET", "/v1/models/scaler/versions/%D9%A3", None, 400),
    ("superscript digit version", "GET", "/v1/models/scaler/versions/%C2%B2/metadata", None, 400),
    ("invalid UTF-8 in the path", "GET", "/v1/models/%FF%FE", None, 404),
    # Methods as TF Serving answers them under /v1/: "Malformed request" (400), OPTIONS a
    # CORS preflight (400 without an Origin header), TRACE refused by its HTTP library (501).
    ("HEAD", "HEAD", "/v1/models/scaler", None, 400),
    ("OPTIONS", "OPTIONS", "/v1/models/scaler", None, 400),
    ("TRACE", "TRACE", "/v1/models/scaler", None, 501),
    ("PUT", "PUT", PREDICT.format("scaler"), b'{"instances": [1.0]}', 400),
    ("DELETE", "DELETE", "/v1/models/scaler", None, 400),
]


@pytest.mark.parametrize("what,method,path,body,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_a_clean_json_error(served, what, method, path, body, expected):
    status, headers, payload = raw(served, method, path, body, {"Content-Type": "application/json"})
    if method == "HEAD":  # HEAD answers carry no body, only the status and headers
        assert status == expected and headers.get("Content-Type") == "application/json", (status, headers)
        return
    assert_clean_json_error(status, headers, payload, expected, what)


def test_server_answers_after_the_malformed_corpus(served):
    for _, method, path, body, _ in MALFORMED:
        raw(served, method, path, body)
    client = RestClient(served.rest_url, timeout=30)
    try:
        assert client.predict("scaler", {"instances": [1.5]})["predictions"] == [3.0]
    finally:
        client.close()


def test_tf_serving_conformance_cases_that_succeed(served):
    client = RestClient(served.rest_url, timeout=30)
    try:
        plain = client.predict("retrieval", {"instances": ["u1"]})
        # absl::Base64Unescape (TF Serving) accepts base64 without its "=" padding
        assert client.predict("retrieval", {"instances": [{"user_id": {"b64": "dTE"}}]}) == plain
        assert client.predict("retrieval", {"instances": ["u1"], "signature_name": ""}) == plain
        typed = client.predict("typed", {"inputs": {"n": [2**62, 3], "flag": [True, False]}})["outputs"]
        assert typed == [2**62, -3]
        # integers are numbers for a float input, within float32's exact range
        assert client.predict("scaler", {"instances": [3, 16777215]})["predictions"] == [6.0, 33554430.0]
        # the literals NaN and Infinity are accepted, as TF Serving's parser does
        status, payload = client.request("POST", PREDICT.format("scaler"), b'{"instances": [Infinity]}')
        assert status == 200 and payload["predictions"] == [float("inf")]
    finally:
        client.close()


def test_metadata_of_a_deleted_version_folder_is_still_served_without_paths(tmp_path):
    scaler = Scaler(1.0)
    version = save_version(scaler, tmp_path / "scaler", 1, signatures={"serving_default": scaler.serve})
    with PracticeServer(model_base_path=tmp_path / "scaler", model_name="scaler", port=0, poll_seconds=3600) as server:
        import shutil

        shutil.rmtree(version)
        status, _, body = raw(server, "GET", "/v1/models/scaler/metadata")
        assert status == 200, body[:300]
        assert "serving_default" in json.loads(body)["metadata"]["signature_def"]["signature_def"]
        assert str(tmp_path) not in body.decode()


# ---- limits -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited(models):
    limits = HttpLimits(threads=2, connection_limit=6, header_timeout=1.0, idle_timeout=30.0,
                        max_body_bytes=4096, max_header_bytes=8192)
    server = PracticeServer(model_base_path=models, port=0, poll_seconds=5, limits=limits).start()
    try:
        yield server
    finally:
        server.stop()


def test_oversized_body_gets_413_json(limited):
    # Both bodies are a little over the 4,096-byte limit and arrive in one write, so the
    # server reads each request whole and never closes on unread data (which would make the
    # kernel reset the connection and the verdict depend on timing).
    small = json.dumps({"instances": [1.0] * 1100}).encode()  # about 5,500 bytes
    status, headers, payload = raw(limited, "POST", PREDICT.format("scaler"), small)
    assert "4096 bytes" in assert_clean_json_error(status, headers, payload, 413, "oversized body")["error"]
    # The same body chunked (no Content-Length).
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (small[i:i + 1000] for i in range(0, len(small), 1000)))
    request = (f"POST {PREDICT.format('scaler')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n").encode()
    port = int(limited.rest_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request + chunked + b"0\r\n\r\n")
        answer = read_response(sock, timeout=15)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), f"oversized chunked body: {answer[:300]!r}"
    assert b"application/json" in head and set(json.loads(payload)) == {"error"}, answer[:300]


def test_oversized_headers_get_431_json(limited):
    status, headers, payload = raw(limited, "GET", "/v1/models/scaler", None, {"X-Big": "a" * 20000})
    assert_clean_json_error(status, headers, payload, 431, "oversized headers")


def read_response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


def test_slow_request_gets_408_json_and_frees_its_slot(limited):
    port = int(limited.rest_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = read_response(slow, timeout=15)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert "error" in json.loads(body)
    client = RestClient(limited.rest_url, timeout=30)
    try:
        assert client.predict("scaler", {"instances": [1.0]})["predictions"] == [2.0]
    finally:
        client.close()


def exchange(server: PracticeServer, data: bytes, timeout: float = 15) -> bytes:
    """Send raw bytes on a fresh connection; return everything the server sends until it
    closes the connection (or ``timeout`` passes)."""
    port = int(server.rest_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_response(sock, timeout)


def statuses(answer: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.[01] \d{3}", answer)


SMUGGLING = {
    # Content-Length with Transfer-Encoding: RFC 9112 6.3 says reject, or process and close.
    "Content-Length and chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunked and Content-Length": b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
    "two Content-Lengths": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n[1.0]",
    "two different Content-Lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n[1.0] ",
    "negative Content-Length": b"Content-Length: -5\r\n\r\n",
    "signed Content-Length": b"Content-Length: +5\r\n\r\n[1.0]",
    "Content-Length with letters": b"Content-Length: 5x\r\n\r\n[1.0]",
}


@pytest.mark.parametrize("shape", list(SMUGGLING), ids=list(SMUGGLING))
def test_ambiguous_framing_is_refused_and_the_connection_closed(served, shape):
    """The trailing GET must never be answered: the server refuses the first request and
    closes the connection before reading it."""
    trailing = b"GET /v1/models/scaler HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\n"
    answer = exchange(served, head + SMUGGLING[shape] + trailing)
    assert statuses(answer) == [b"HTTP/1.1 400"], f"{shape}: {answer[:400]!r}"
    assert b"Connection: close" in answer, answer[:400]
    body = answer.partition(b"\r\n\r\n")[2]
    assert set(json.loads(body)) == {"error"}, body[:300]


def test_transfer_encoding_in_http_1_0_is_refused(served):
    answer = exchange(served, b"POST /v1/models/scaler:predict HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
                              b"Content-Length: 0\r\n\r\n")
    assert statuses(answer) == [b"HTTP/1.1 400"], answer[:300]


def test_expect_100_continue_is_not_sent_for_a_body_that_will_be_refused(limited):
    head = ("POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n")
    # The control: a body within the limit is invited.
    port = int(limited.rest_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.format(20).encode())
        sock.settimeout(15)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue"), "no 100 Continue for an acceptable body"
        sock.sendall(b'{"instances": [1.0]}')
        assert b'{"predictions":[2.0]}' in read_response(sock, timeout=3)
    # 70 MB announced (the limit is 4,096 bytes): the 413 comes at once, nothing invites the body.
    answer = exchange(limited, head.format(70_000_000).encode())
    assert statuses(answer) == [b"HTTP/1.1 413"], answer[:300]


def test_status_lines_of_the_servers_own_errors_say_http_1_1(limited):
    """A request cut short has no HTTP version of its own; the answer still says HTTP/1.1."""
    answer = exchange(limited, b"GET /v1/models/scaler HTT")  # headers never finish: 408
    assert statuses(answer) == [b"HTTP/1.1 408"], answer[:300]
    # Exactly the 8,192-byte header limit: the server reads it all (no unread bytes to reset
    # the connection with) and refuses it with 431, parsed as an HTTP/1.0 request by waitress.
    head = b"GET /v1/models/scaler HTTP/1.0\r\nX-Big: "
    answer = exchange(limited, head + b"a" * (8192 - len(head)))
    assert statuses(answer) == [b"HTTP/1.1 431"], answer[:300]


def test_errors_do_not_echo_large_inputs(served):
    body = json.dumps({"instances": [1.0], "signature_name": "s" * 1_000_000}).encode()
    status, headers, payload = raw(served, "POST", PREDICT.format("scaler"), body)
    error = assert_clean_json_error(status, headers, payload, 400, "1 MB signature_name")["error"]
    assert "not found in signature def" in error and len(payload) < 400, payload[:400]
    name = "m" * 60_000
    for method, path, expected in (("GET", f"/v1/models/{name}", 404), ("POST", PREDICT.format(name), 404),
                                   ("GET", f"/v1/models/scaler/labels/{name}", 400)):
        status, headers, payload = raw(served, method, path, b'{"instances": [1.0]}' if method == "POST" else None)
        assert_clean_json_error(status, headers, payload, expected, f"60 KB name, {method}")
        assert len(payload) < 400, payload[:400]
    # Long lists of unknown input names are cut as well.
    many = {f"unknown{i}" + "x" * 1000: "u1" for i in range(200)}
    status, headers, payload = raw(served, "POST", PREDICT.format("retrieval"), json.dumps({"instances": [many]}).encode())
    assert_clean_json_error(status, headers, payload, 400, "200 unknown names")
    assert len(payload) <= MAX_ERROR_CHARS + 20


def test_json_values_in_errors_are_written_as_json(served):
    cases = [
        (PREDICT.format("scaler"), b'{"instances": [true]}', "true"),
        (PREDICT.format("scaler"), b'{"instances": [null]}', "null"),
        (PREDICT.format("retrieval"), b'{"instances": [{"b64": 5}]}', '{"b64": 5}'),
        (PREDICT.format("retrieval"), b'{"instances": [[1, "a"]]}', "the number 1"),
        (PREDICT.format("scaler"), b'{"instances": [1.0], "signature_name": [false]}', "[false]"),
    ]
    for path, body, shown in cases:
        status, headers, payload = raw(served, "POST", path, body)
        error = assert_clean_json_error(status, headers, payload, 400, body.decode())["error"]
        assert shown in error, (body, error)


def test_tensorflow_errors_keep_their_first_informative_line(served):
    import grpc

    status, headers, payload = raw(served, "POST", PREDICT.format("ranker"),
                                   b'{"inputs": {"user_id": ["u1"], "movie_id": ["m1", "m2"]}}')
    error = assert_clean_json_error(status, headers, payload, 400, "batch sizes disagree")["error"]
    assert "must be equal" in error and "Graph execution error" not in error, error
    code, details = grpc_code(served, "ranker", {"user_id": tf.make_tensor_proto(["u1"]),
                                                 "movie_id": tf.make_tensor_proto(["m1", "m2"])})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "must be equal" in details, (code, details)
    assert "Graph execution error" not in details and not LEAKS.search(details), details


def test_connections_beyond_the_cap_get_503_json_when_all_are_busy(models):
    limits = HttpLimits(threads=2, connection_limit=6, header_timeout=60.0, idle_timeout=60.0)
    with PracticeServer(model_base_path=models, port=0, poll_seconds=5, limits=limits) as server:
        port = int(server.rest_url.rsplit(":", 1)[1])
        busy = []
        try:
            # waitress counts its listener and its wake-up pipe among the 6 slots: 4 are left
            for _ in range(4):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\n")  # headers unfinished
                busy.append(sock)
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                answer = read_response(extra, timeout=15)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), answer[:300]
            assert "error" in json.loads(body)
        finally:
            for sock in busy:
                sock.close()
        client = RestClient(server.rest_url, timeout=30)
        try:
            deadline = time.monotonic() + 20
            while True:  # the busy slots are freed once the server sees them closed
                status, payload = client.request("POST", PREDICT.format("scaler"), {"instances": [1.0]})
                if status == 200 or time.monotonic() > deadline:
                    break
                client.close()
                time.sleep(0.2)
            assert status == 200, payload
        finally:
            client.close()


def test_idle_keep_alive_connections_make_room_for_new_clients(models):
    limits = HttpLimits(threads=2, connection_limit=12, idle_timeout=60.0)
    with PracticeServer(model_base_path=models, port=0, poll_seconds=5, limits=limits) as server:
        clients = [RestClient(server.rest_url, timeout=30) for _ in range(30)]
        try:
            for client in clients:  # each one connects, asks once and stays connected, idle
                assert client.predict("scaler", {"instances": [1.0]})["predictions"] == [2.0]
        finally:
            for client in clients:
                client.close()


def test_64_simultaneous_connections_all_get_answers(served):
    port = int(served.rest_url.rsplit(":", 1)[1])
    body = json.dumps({"inputs": {"user_id": ["u1"], "movie_id": ["m2"]}})
    failures: list[str] = []
    for _ in range(3):
        barrier = threading.Barrier(64, timeout=60)

        def one(barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    connection.request("POST", PREDICT.format("ranker"), body=body)
                    response = connection.getresponse()
                    if response.status != 200:
                        failures.append(f"HTTP {response.status}: {response.read()[:200]!r}")
                    else:
                        response.read()
                finally:
                    connection.close()
            except Exception as error:  # counted and reported below
                failures.append(repr(error))

        threads = [threading.Thread(target=one) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "some clients never finished"
    assert not failures, f"{len(failures)} of 192 requests failed, e.g. {failures[:3]}"


def _reader(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)
    lines.put("")


def test_idle_sockets_beyond_the_file_limit_do_not_kill_the_server(models, tmp_path):
    """The server runs with RLIMIT_NOFILE = 256; 300 idle sockets connect; a real request
    still gets an answer (200, or a clean 503) and the process stays up."""
    resource = pytest.importorskip("resource")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 600:
        pytest.skip(f"this test needs 600 file descriptors in the test process (soft limit {soft})")

    # The limit is set in the child before it execs the server (a small Python launcher
    # rather than preexec_fn, which is unsafe in this multi-threaded test process).
    server_argv = [sys.executable, "-m", "recsys_course.serving", "--model-base-path", str(models / "scaler"),
                   "--model-name", "scaler", "--port", "0", "--quiet", "--no-warmup"]
    launcher = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
                "os.execv(sys.argv[1], sys.argv[1:])")
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, *server_argv],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    idle: list[socket.socket] = []
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if not line:
                break
            match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
        assert url, "the server did not start: " + "".join(seen)[-2000:]
        limits = Path(f"/proc/{process.pid}/limits")
        if limits.exists():
            assert re.search(r"Max open files\s+256\s+256", limits.read_text()), "the file limit was not applied"
        port = int(url.rsplit(":", 1)[1])
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(1.0)
        assert process.poll() is None, "the server died while idle sockets connected"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("POST", "/v1/models/scaler:predict", body=b'{"instances": [2.0]}')
            response = connection.getresponse()
            payload = json.loads(response.read())
        finally:
            connection.close()
        assert response.status in (200, 503), (response.status, payload)
        if response.status == 200:
            assert payload == {"predictions": [4.0]}  # the scaler doubles
        assert process.poll() is None, "the server died after the request"
        for sock in idle:
            sock.close()
        idle.clear()
        client = RestClient(url, timeout=60)
        try:
            assert client.predict("scaler", {"instances": [3.0]})["predictions"] == [6.0]
        finally:
            client.close()
    finally:
        for sock in idle:
            sock.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


# ---- gRPC -----------------------------------------------------------------------------------
def grpc_predict(server, model: str, inputs: dict):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    big = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]
    with grpc.insecure_channel(server.grpc_target, options=big) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)


def grpc_code(server, model: str, inputs: dict):
    import grpc

    try:
        grpc_predict(server, model, inputs)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def test_grpc_refuses_malformed_tensors_with_invalid_argument(served):
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    broken = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 7)
    broken.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=5)]))
    cases = {
        "undecodable": ("scaler", {"x": broken}),
        "wrong dtype": ("retrieval", {"user_id": tf.make_tensor_proto(np.array([1.0], np.float32))}),
        "float64 for float32": ("scaler", {"x": tf.make_tensor_proto(np.array([1.0], np.float64))}),
        "wrong rank": ("retrieval", {"user_id": tf.make_tensor_proto([["u1"]])}),
        "unknown input": ("retrieval", {"uid": tf.make_tensor_proto(["u1"])}),
        "missing input": ("ranker", {"user_id": tf.make_tensor_proto(["u1"])}),
    }
    for what, (model, inputs) in cases.items():
        code, details = grpc_code(served, model, inputs)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{what}: got {code} {details}"
        assert not LEAKS.search(details), f"{what}: details leak internals: {details!r}"
    assert grpc_code(served, "scaler", {"x": tf.make_tensor_proto(np.array([1.0], np.float32))})[0] == grpc.StatusCode.OK


def test_grpc_accepts_messages_beyond_grpc_default_4_mib(served):
    big = tf.make_tensor_proto(np.ones((1000, 2000), dtype=np.float32))  # 8 MB in 1000 instances
    reply = grpc_predict(served, "wide", {"x": big})
    assert tf.make_ndarray(reply.outputs["y"]).tolist() == [2000.0] * 1000


def test_grpc_metadata_field_is_honoured(served):
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    def ask(fields):
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = "scaler"
        request.metadata_field.extend(fields)
        with grpc.insecure_channel(served.grpc_target) as channel:
            try:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
            except grpc.RpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    assert ask(["signature_def"]) == grpc.StatusCode.OK
    assert ask([]) == grpc.StatusCode.INVALID_ARGUMENT
    assert ask(["signature_def", "something_else"]) == grpc.StatusCode.INVALID_ARGUMENT
