"""A bounded fuzz of the practice server (issue 36): a fixed list of hostile requests (the
issue's cases) and a seeded generator of a few hundred malformed REST requests and gRPC
calls, on the toy models. Every answer must be a well-formed HTTP/1.1 response (a JSON error
of at most MAX_ERROR_CHARS characters, without internals or Python's words, never a 500) or
a gRPC status other than INTERNAL/UNKNOWN; afterwards the server is alive and answers status
and predictions. Same seed, same requests: the verdict does not depend on the machine.

Raw sockets on 127.0.0.1 (port 0), a short read time-out per request, no hypothesis (not a
dependency of the course): the generator is ``random.Random(36)``.
"""

import copy
import json
import random
import re
import socket
import string
from pathlib import Path

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import pytest
import tensorflow as tf

from recsys_course.serving.export import save_version
from recsys_course.serving.protocol import MAX_ERROR_CHARS
from recsys_course.serving.server import HttpLimits, PracticeServer
from test_serving_robustness import LEAKS, PYTHON_WORDING, Typed
from toy_models import Scaler, export_toy_models

SEED = 36
REST_CASES = 300
GRPC_CASES = 150
#: Inputs of each served model and the kind of value each takes.
INPUTS = {
    "retrieval": {"user_id": "string"},
    "query_tower": {"user_id": "string"},
    "ranker": {"user_id": "string", "movie_id": "string"},
    "scaler": {"x": "float"},
    "typed": {"n": "int", "flag": "bool"},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("models")
    export_toy_models(root)
    for name, module in (("scaler", Scaler(2.0)), ("typed", Typed())):
        save_version(module, root / name, 1, signatures={"serving_default": module.serve})
    limits = HttpLimits(header_timeout=2.0, max_body_bytes=8 * 2**20)  # cut-short requests end fast
    server = PracticeServer(model_base_path=root, port=0, grpc_port=0, poll_seconds=5, limits=limits).start()
    try:
        yield server
    finally:
        server.stop()


# ---- REST over a raw socket ---------------------------------------------------------------
def exchange(server: PracticeServer, data: bytes, timeout: float = 30.0) -> list[tuple[int, dict, bytes]]:
    """Send ``data`` on a fresh connection; return every response read until the server
    closes the connection or stays silent for a moment: ``(status, headers, body)``."""
    port = int(server.rest_url.rsplit(":", 1)[1])
    answers: list[tuple[int, dict, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server may refuse and close before reading everything
            pass
        sock.settimeout(timeout)
        buffer = b""
        head_request = data.startswith(b"HEAD ")
        while True:
            try:
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return answers
                    buffer += chunk
            except (TimeoutError, ConnectionResetError):
                return answers
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            match = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", status_line)
            assert match, f"not an HTTP/1.1 status line: {status_line!r}"
            headers = dict(line.split(": ", 1) for line in lines)
            status = int(match.group(1))
            if status == 100:
                continue
            length = 0 if head_request else int(headers.get("Content-Length", "0"))
            while len(buffer) < length:
                chunk = sock.recv(65536)
                assert chunk, "the connection closed inside a response body"
                buffer += chunk
            answers.append((status, headers, buffer[:length]))
            buffer = buffer[length:]
            if headers.get("Connection") == "close":
                return answers
            sock.settimeout(0.3)  # more responses only if the request held several


def check_answer(status: int, headers: dict, body: bytes, what: str) -> None:
    assert status == 200 or 400 <= status < 600, f"{what}: status {status}"
    assert status != 500, f"{what}: internal error {body[:300]!r}"
    if not body:
        return  # HEAD, or the 200 of a CORS preflight
    assert headers.get("Content-Type") == "application/json", f"{what}: {headers}"
    payload = json.loads(body)
    if status == 200:
        return
    assert set(payload) == {"error"} and isinstance(payload["error"], str), f"{what}: {payload}"
    error = payload["error"]
    assert len(error) <= MAX_ERROR_CHARS, f"{what}: a {len(error)}-character error"
    assert not LEAKS.search(error), f"{what}: leaks internals: {error[:300]!r}"
    assert not PYTHON_WORDING.search(error), f"{what}: speaks Python: {error[:300]!r}"


def http_request(method: str, target: str, body: bytes = b"", headers: dict | None = None,
                 chunked: bool = False, version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        pieces = [body[i:i + 100] for i in range(0, len(body), 100)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


PREDICT = "/v1/models/{}:predict"
FIXED = [
    # (what, raw request bytes, expected statuses)
    ("1,000,000 instances", http_request("POST", PREDICT.format("retrieval"),
                                         b'{"instances": [' + b",".join([b'"u1"'] * 1_000_000) + b"]}"), {400}),
    ("1,001 columnar instances", http_request("POST", PREDICT.format("scaler"),
                                              json.dumps({"inputs": [1.0] * 1001}).encode()), {400}),
    ("Content-Length and chunked", b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models/scaler HTTP/1.1\r\n\r\n", {400}),
    ("two Content-Lengths", b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}", {400}),
    ("Expect with 70 MB", b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                          b"Content-Length: 70000000\r\n\r\n", {413}),
    # waitress alone answered a complete request with "Expect: 100-continue" by inviting a
    # body that never comes, then 408 after the header time-out
    ("Expect without a body", b"GET /v1/models/scaler HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", {200}),
    ("headers cut short", b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nContent-Le", {408}),
    ("body cut short", b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{", {408}),
    ("1 MB signature_name", http_request("POST", PREDICT.format("scaler"), json.dumps(
        {"instances": [1.0], "signature_name": "s" * 1_000_000}).encode()), {400}),
    ("60 KB model name", http_request("GET", "/v1/models/" + "m" * 60_000), {404}),
    ("batch sizes disagree", http_request("POST", PREDICT.format("ranker"), json.dumps(
        {"inputs": {"user_id": ["u1"], "movie_id": ["m1", "m2"]}}).encode()), {400}),
    ("5000-digit integer", http_request("POST", PREDICT.format("typed"),
                                        b'{"inputs": {"n": [' + b"7" * 5000 + b'], "flag": [true]}}'), {400}),
    ("invalid UTF-8", http_request("POST", PREDICT.format("retrieval"), b'{"instances": ["\xc3\x28"]}'), {400}),
    ("lone surrogate", http_request("POST", PREDICT.format("retrieval"), b'{"instances": ["\\udfff"]}'), {400}),
    ("10,000-level nesting", http_request("POST", PREDICT.format("scaler"),
                                          b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"), {400}),
    ("unknown label", http_request("POST", "/v1/models/scaler/labels/canary:predict", b'{"instances": [1.0]}'), {400}),
    ("encoded colon", http_request("POST", "/v1/models/scaler%3Apredict", b'{"instances": [1.0]}'), {400}),
    ("encoded slash", http_request("GET", "/v1/models/scaler%2Fmetadata"), {404}),
    ("PUT", http_request("PUT", PREDICT.format("scaler"), b'{"instances": [1.0]}'), {400}),
    ("TRACE", http_request("TRACE", "/v1/models/scaler"), {501}),
    ("outside /v1", http_request("GET", "/healthz"), {404}),
    ("lowercase method", http_request("post", PREDICT.format("scaler"), b'{"instances": [1.0]}'), {400}),
    ("HTTP/1.0 with Transfer-Encoding", b"POST /v1/models/scaler:predict HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
                                        b"Content-Length: 2\r\n\r\n{}", {400}),
    ("gzip transfer coding", b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
     {501}),
    ("broken chunk size", b"POST /v1/models/scaler:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"zz\r\n{}\r\n0\r\n\r\n", {400}),
]


@pytest.mark.parametrize("what,data,expected", FIXED, ids=[case[0] for case in FIXED])
def test_fixed_hostile_requests_get_clean_answers(served, what, data, expected):
    answers = exchange(served, data)
    assert answers, f"{what}: no answer"
    status, headers, body = answers[0]
    check_answer(status, headers, body, what)
    assert status in expected, f"{what}: expected {expected}, got {status} {body[:300]!r}"
    assert len(answers) == 1, f"{what}: {len(answers)} answers (a smuggled request was served?)"


# ---- the seeded REST generator ------------------------------------------------------------------
ODD_VALUES = [None, True, False, 0, -1, 2**63, 2**64, -(2**63) - 1, 1.5, 1e39, -0.0, "", "u1", "m3",
              "x" * 2000, "\u00e9\u00e8\U0001f600", "\x00\x07", [], [[]], {}, {"b64": "@@@"}, {"b64": "dTE"},
              {"b64": 7}, {"b64": "dTE", "x": 1}, [1, "a"], [[1.0, 2.0], [3.0]], list(range(1001)),
              "@NAN@", "@BIGINT@", "@HUGEFLOAT@", "@DEEP@"]
RAW_TOKENS = {'"@NAN@"': "NaN", '"@BIGINT@"': "9" * 400, '"@HUGEFLOAT@"': "1e400",
              '"@DEEP@"': "[" * 80 + "1" + "]" * 80}


def valid_value(rng: random.Random, kind: str):
    return {"string": rng.choice(["u1", "u2", "m1", "m7", "nobody"]), "float": rng.uniform(-10, 10),
            "int": rng.randint(-5, 5), "bool": rng.random() < 0.5}[kind]


def valid_body(rng: random.Random, model: str) -> dict:
    inputs, size = INPUTS[model], rng.randint(1, 4)
    if rng.random() < 0.5:
        return {"instances": [{name: valid_value(rng, kind) for name, kind in inputs.items()} for _ in range(size)]}
    return {"inputs": {name: [valid_value(rng, kind) for _ in range(size)] for name, kind in inputs.items()}}


def odd(rng: random.Random):
    """A fresh copy of one of ODD_VALUES (shared lists would make cycles once mutated)."""
    return copy.deepcopy(rng.choice(ODD_VALUES))


def mutate_json(rng: random.Random, document):
    """Replace, drop or add one part of a JSON document (in place where it can)."""
    containers = []

    def walk(value):
        if isinstance(value, (dict, list)) and value:
            containers.append(value)
            for child in (value.values() if isinstance(value, dict) else value):
                walk(child)

    walk(document)
    if not containers or rng.random() < 0.1:
        return rng.choice([odd(rng), [document], "just a string"])
    target = rng.choice(containers)
    keys = list(target) if isinstance(target, dict) else list(range(len(target)))
    key = rng.choice(keys)
    action = rng.random()
    if action < 0.6:
        target[key] = odd(rng)
    elif action < 0.75:
        del target[key]
    elif isinstance(target, dict):
        target[rng.choice(["signature_name", "inputs", "instances", "extra", key + "x", "b64"])] = odd(rng)
    else:
        target.append(odd(rng))
    return document


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(data) + 1)
        action = rng.random()
        if action < 0.3 and data:
            del data[position:position + rng.randint(1, 8)]
        elif action < 0.6:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif action < 0.8:
            data[position:position] = rng.choice([b"\xff", b"\xc3", b"\\u", b"\\ud800", b'"', b"{", b"]", b"\x00"])
        else:
            data = data[:position]
    return bytes(data)


def random_target(rng: random.Random, method: str) -> str:
    model = rng.choice(list(INPUTS) + ["nope", "", "retrieval%3Apredict", "sc%61ler", "%FF%FE", "a" * 300,
                                       "r\u00e9trieval", "ranker%2Fmetadata", "..", "%00"])
    address = rng.choice(["", "", "/versions/1", "/versions/0", "/versions/" + "9" * rng.randint(1, 25),
                          "/labels/stable", "/labels/" + "".join(rng.choices(string.printable[:62] + "%:", k=5)),
                          "/versions/-1", "/versions/1/labels/x"])
    suffix = rng.choice([":predict"] * 4 + [":classify", ":regress", ":PREDICT", "", "/metadata", "/METADATA",
                                            ":predict?x=1", ":predict#f", "/", ":"]) if method != "GET" else \
        rng.choice(["", "", "/metadata", "/metadata/x", ":predict", "?x=1"])
    prefix = rng.choice(["/v1/models/"] * 8 + ["/V1/Models/", "/v1/models//", "/v2/models/", "/", "/v1/"])
    return (prefix + model + address + suffix).replace(" ", "%20")


def generated_requests(count: int = REST_CASES, seed: int = SEED) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        method = rng.choices(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"],
                             weights=[60, 25, 3, 2, 2, 3, 2, 2, 1])[0]
        target = random_target(rng, method)
        model = rng.choice(list(INPUTS))
        document = valid_body(rng, model)
        for _ in range(rng.randint(0, 3)):
            document = mutate_json(rng, document)
        text = json.dumps(document, ensure_ascii=rng.random() < 0.5)
        for token, raw in RAW_TOKENS.items():
            text = text.replace(token, raw)
        body = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.3:
            body = mutate_bytes(rng, body)
        headers = {}
        if rng.random() < 0.5:
            headers["Content-Type"] = rng.choice(["application/json", "text/plain", "application/json; charset=latin-1"])
        if rng.random() < 0.05:
            headers["Expect"] = "100-continue"
        if method in ("GET", "HEAD", "TRACE", "OPTIONS", "DELETE") and rng.random() < 0.8:
            body = b""
        if method == "OPTIONS" and rng.random() < 0.5:
            headers["Origin"] = rng.choice(["http://localhost", "null", "https://example.org"])
        chunked = bool(body) and rng.random() < 0.1
        cases.append((f"#{index} {method} {target[:80]}", http_request(method, target, body, headers, chunked)))
    return cases


def test_seeded_malformed_requests_get_clean_answers_and_the_server_survives(served):
    seen: dict[int, int] = {}
    for what, data in generated_requests():
        answers = exchange(served, data)
        assert len(answers) == 1, f"{what}: {len(answers)} answers to {data[:300]!r}"
        status, headers, body = answers[0]
        check_answer(status, headers, body, f"{what} {data[:200]!r}")
        seen[status] = seen.get(status, 0) + 1
    # The generator must reach past the parser: refusals of several kinds and some successes.
    assert {200, 400, 404} <= set(seen), seen
    assert 408 not in seen, "every generated request is complete: none may wait for the header time-out"
    assert_alive(served)


def assert_alive(server: PracticeServer) -> None:
    status, _, body = exchange(server, http_request("GET", "/v1/models/scaler"))[0]
    assert status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"
    status, _, body = exchange(server, http_request("POST", PREDICT.format("scaler"), b'{"instances": [1.5]}'))[0]
    assert (status, json.loads(body)) == (200, {"predictions": [3.0]})
    assert server.predict_slots.running == 0 and server.predict_slots.waiting == 0


# ---- the seeded gRPC generator ------------------------------------------------------------------
def random_tensor(rng: random.Random):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    dtype = rng.choice([types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT64, types_pb2.DT_INT32,
                        types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF, types_pb2.DT_COMPLEX64,
                        types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, 0, 99])
    proto = tensor_pb2.TensorProto(dtype=dtype)
    shape = rng.choice([[], [1], [3], [2, 2], [0], [1001], [-1], [10**12], [1000, 1000], None])
    if shape is None:
        proto.tensor_shape.unknown_rank = True
    else:
        proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]))
    content = rng.random()
    if content < 0.25:
        proto.tensor_content = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 4, 8, 12, 16])))
    elif content < 0.45:
        proto.float_val.extend(rng.uniform(-5, 5) for _ in range(rng.randint(0, 4)))
    elif content < 0.6:
        proto.int64_val.extend(rng.randint(-(2**63), 2**63 - 1) for _ in range(rng.randint(0, 4)))
    elif content < 0.8:
        proto.string_val.extend(bytes(rng.randrange(256) for _ in range(rng.randint(0, 6)))
                                for _ in range(rng.randint(0, 4)))
    elif content < 0.9:
        proto.bool_val.extend(rng.random() < 0.5 for _ in range(rng.randint(0, 4)))
    return proto


def random_spec(rng: random.Random, spec) -> None:
    spec.name = rng.choice(list(INPUTS) * 3 + ["nope", "", "a" * 5000, "\u00e9", "retrieval:predict"])
    choice = rng.random()
    if choice < 0.2:
        spec.version.value = rng.choice([0, 1, 2, -1, 2**63 - 1, -(2**63)])
    elif choice < 0.3:
        spec.version_label = rng.choice(["stable", "canary", "", "x" * 3000])
    if rng.random() < 0.2:
        spec.signature_name = rng.choice(["serving_default", "nope", "s" * 3000, ""])


def generated_grpc_calls(count: int = GRPC_CASES, seed: int = SEED) -> list[tuple[str, str, object]]:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    rng = random.Random(seed + 1)
    calls = []
    for index in range(count):
        kind = rng.choices(["Predict", "GetModelMetadata", "GetModelStatus"], weights=[80, 10, 10])[0]
        if kind == "Predict":
            message = predict_pb2.PredictRequest()
            random_spec(rng, message.model_spec)
            names = list(INPUTS.get(message.model_spec.name, {"user_id": "string"}))
            for name in rng.sample(names + ["extra", "x" * 500], k=rng.randint(0, len(names) + 1)):
                if rng.random() < 0.5:  # a valid tensor for the input, often
                    kind_of = INPUTS.get(message.model_spec.name, {}).get(name, "string")
                    values = [valid_value(rng, kind_of) for _ in range(rng.randint(1, 3))]
                    message.inputs[name].CopyFrom(tf.make_tensor_proto(values if kind_of != "float" else
                                                                       [float(v) for v in values],
                                                                       dtype={"float": tf.float32}.get(kind_of)))
                else:
                    message.inputs[name].CopyFrom(random_tensor(rng))
            if rng.random() < 0.15:
                message.output_filter.append(rng.choice(["y", "scores", "nope", "z" * 2000]))
        elif kind == "GetModelMetadata":
            message = get_model_metadata_pb2.GetModelMetadataRequest()
            random_spec(rng, message.model_spec)
            message.metadata_field.extend(rng.sample(["signature_def", "other", "x" * 2000], k=rng.randint(0, 2)))
        else:
            message = get_model_status_pb2.GetModelStatusRequest()
            random_spec(rng, message.model_spec)
        calls.append((f"#{index} {kind} {message.model_spec.name[:40]}", kind, message))
    return calls


def test_seeded_grpc_calls_get_a_clean_status_and_the_server_survives(served):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
               grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED}
    seen: dict[str, int] = {}
    with grpc.insecure_channel(served.grpc_target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        for what, kind, message in generated_grpc_calls():
            stub = models if kind == "GetModelStatus" else prediction
            try:
                getattr(stub, kind)(message, timeout=30)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as error:
                code, details = error.code(), error.details() or ""
            assert code in allowed, f"{what}: {code} {details[:300]!r}"
            assert len(details) <= MAX_ERROR_CHARS and not LEAKS.search(details), f"{what}: {details[:300]!r}"
            seen[code.name] = seen.get(code.name, 0) + 1
        assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND"} <= set(seen), seen
    assert_alive(served)
