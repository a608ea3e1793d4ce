"""Protocol conformance of the practice server (recsys_course.serving.server) with the parts
of TF Serving's REST and gRPC APIs it documents: request and response shapes in row and
columnar formats, string inputs, and errors as {"error": ...} bodies with 400/404 statuses.
Also: it answers concurrent clients without errors, and it listens on 127.0.0.1 only."""

import json
import threading

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from recsys_course.serving.client import GrpcClient, RestClient, ServingError
from recsys_course.serving.server import PracticeServer
from toy_models import export_toy_models, toy_servables


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The three toy models, exported and served (REST and gRPC) for the whole module."""
    models = tmp_path_factory.mktemp("models")
    export_toy_models(models)
    server = PracticeServer(model_base_path=models, port=0, grpc_port=0, poll_seconds=0.5).start()
    client = RestClient(server.rest_url, timeout=30)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def reference():
    """The same servables in memory, to compare answers with."""
    return toy_servables()


def test_server_listens_on_loopback_only(served):
    server, _ = served
    assert server.rest_url.startswith("http://127.0.0.1:"), f"REST must bind 127.0.0.1, got {server.rest_url}"
    assert server.grpc_target.startswith("127.0.0.1:"), f"gRPC must bind 127.0.0.1, got {server.grpc_target}"


def test_status_response_shape(served):
    _, client = served
    status = client.status("retrieval")
    assert status == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]}, f"unexpected status body: {status}"
    assert client.status("retrieval", version=1)["model_version_status"][0]["version"] == "1"


def test_metadata_lists_the_serving_signature(served):
    _, client = served
    metadata = client.metadata("ranker")
    assert metadata["model_spec"] == {"name": "ranker", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert {k: v["dtype"] for k, v in signature["inputs"].items()} == {
        "user_id": "DT_STRING", "movie_id": "DT_STRING"
    }
    assert {k: v["dtype"] for k, v in signature["outputs"].items()} == {"score": "DT_FLOAT"}
    assert signature["method_name"] == "tensorflow/serving/predict"


def test_row_format_objects_and_bare_values_give_the_same_answer(served, reference):
    _, client = served
    users = ["u1", "u3", "somebody-new"]
    objects = client.predict("retrieval", {"instances": [{"user_id": u} for u in users]})
    bare = client.predict("retrieval", {"instances": users})
    assert objects == bare
    predictions = objects["predictions"]
    assert len(predictions) == 3 and set(predictions[0]) == {"movie_ids", "scores"}
    expected = reference["retrieval"].serve(tf.constant(users))
    assert [p["movie_ids"] for p in predictions] == expected["movie_ids"].numpy().astype(str).tolist()
    np.testing.assert_allclose([p["scores"] for p in predictions], expected["scores"].numpy(), rtol=1e-5)


def test_columnar_format_returns_outputs_object(served, reference):
    _, client = served
    answer = client.predict("retrieval", {"inputs": {"user_id": ["u2", "u4"]}})
    assert set(answer) == {"outputs"} and set(answer["outputs"]) == {"movie_ids", "scores"}
    expected = reference["retrieval"].serve(tf.constant(["u2", "u4"]))
    assert answer["outputs"]["movie_ids"] == expected["movie_ids"].numpy().astype(str).tolist()
    bare = client.predict("retrieval", {"inputs": ["u2", "u4"]})
    assert bare == answer, "a single input may be given without its name"


def test_single_output_is_returned_without_its_name(served, reference):
    _, client = served
    pairs = {"user_id": ["u1", "u2", "u1"], "movie_id": ["m1", "m5", "m8"]}
    rows = client.predict("ranker", {"instances": [dict(zip(pairs, v)) for v in zip(*pairs.values())]})
    columns = client.predict("ranker", {"inputs": pairs})
    expected = reference["ranker"].serve(tf.constant(pairs["user_id"]), tf.constant(pairs["movie_id"]))["score"]
    np.testing.assert_allclose(rows["predictions"], expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(columns["outputs"], expected.numpy(), rtol=1e-5)
    embedding = client.predict("query_tower", {"instances": ["u1"], "signature_name": "serving_default"})
    assert np.asarray(embedding["predictions"]).shape == (1, 4)


def test_unicode_and_base64_strings(served):
    _, client = served
    plain = client.predict("retrieval", {"instances": ["u1"]})
    encoded = client.predict("retrieval", {"instances": [{"user_id": {"b64": "dTE="}}]})  # b"u1"
    assert encoded == plain, "a {'b64': ...} value must decode to the same string"
    client.predict("retrieval", {"instances": ["utilisateur-é-😀"]})  # unknown user: OOV row, no error


ERRORS = [
    ("POST", "/v1/models/nope:predict", {"instances": ["u1"]}, 404, "Servable not found"),
    ("POST", "/v1/models/retrieval/versions/9:predict", {"instances": ["u1"]}, 404, "Specific(retrieval, 9)"),
    # an unknown label is INVALID_ARGUMENT in TF Serving (ServerCore::GetModelVersionForLabel)
    ("POST", "/v1/models/retrieval/labels/stable:predict", {"instances": ["u1"]}, 400, "Unrecognized servable version label"),
    ("GET", "/v1/models/nope", None, 404, "nope"),
    ("GET", "/v1/models/retrieval/versions/9", None, 404, "version 9"),
    ("GET", "/v1/models/nope/metadata", None, 404, "nope"),
    ("POST", "/v1/models/retrieval:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/retrieval:predict", b"[1, 2]", 400, "JSON object"),
    ("POST", "/v1/models/retrieval:predict", {"instances": ["u1"], "inputs": ["u1"]}, 400, "Not both"),
    ("POST", "/v1/models/retrieval:predict", {"examples": ["u1"]}, 400, "Missing 'inputs' or 'instances'"),
    ("POST", "/v1/models/retrieval:predict", {"instances": [{"userid": "u1"}]}, 400, "userid"),
    ("POST", "/v1/models/retrieval:predict", {"inputs": {"user": ["u1"]}}, 400, "user"),
    ("POST", "/v1/models/ranker:predict", {"instances": [{"user_id": "u1"}]}, 400, "movie_id"),
    ("POST", "/v1/models/ranker:predict", {"instances": ["u1"]}, 400, "each instance must be an object"),
    ("POST", "/v1/models/retrieval:predict", {"instances": [7]}, 400, "DT_STRING"),
    ("POST", "/v1/models/retrieval:predict", {"instances": []}, 400, "non-empty"),
    ("POST", "/v1/models/retrieval:predict", {"inputs": {"user_id": [["u1"], ["u2", "u3"]]}}, 400, "ragged"),
    ("POST", "/v1/models/retrieval:predict", {"inputs": {"user_id": [["u1"]]}}, 400, "shape"),
    ("POST", "/v1/models/retrieval:predict", {"instances": ["u1"], "signature_name": "nope"}, 400, "nope"),
    # TensorFlow's own message survives (not just "Graph execution error:")
    ("POST", "/v1/models/ranker:predict", {"inputs": {"user_id": ["u1"], "movie_id": ["m1", "m2"]}}, 400, "must be equal"),
    ("GET", "/v1/models/retrieval:predict", None, 400, "Malformed request"),
    ("POST", "/v1/models/retrieval", {"instances": ["u1"]}, 400, "Malformed request"),
    ("POST", "/v1/models/retrieval:classify", {"examples": []}, 501, "not implemented"),
    ("GET", "/v2/models/retrieval", None, 404, "Not found"),
]


@pytest.mark.parametrize("method,path,body,status,fragment", ERRORS, ids=[f"{e[3]}-{e[1]}-{i}" for i, e in enumerate(ERRORS)])
def test_errors_have_status_and_error_body(served, method, path, body, status, fragment):
    _, client = served
    got_status, payload = client.request(method, path, body)
    assert got_status == status, f"{method} {path} {body!r}: expected HTTP {status}, got {got_status} {payload}"
    assert isinstance(payload, dict) and set(payload) == {"error"}, f"expected an {{'error': ...}} body, got {payload}"
    assert fragment.lower() in payload["error"].lower(), f"expected {fragment!r} in {payload['error']!r}"


def test_server_keeps_answering_after_errors(served):
    _, client = served
    client.request("POST", "/v1/models/retrieval:predict", b"{broken")
    assert client.predict("retrieval", {"instances": ["u1"]})["predictions"]


def test_client_raises_serving_error_with_status(served):
    _, client = served
    with pytest.raises(ServingError) as raised:
        client.predict("nope", {"instances": ["u1"]})
    assert raised.value.status == 404 and "nope" in raised.value.message


def test_grpc_predict_matches_rest_and_reports_errors(served):
    server, client = served
    grpc_client = GrpcClient(server.grpc_target, timeout=30)
    try:
        outputs = grpc_client.predict("retrieval", {"user_id": ["u1", "u2"]})
        rest = client.predict("retrieval", {"inputs": {"user_id": ["u1", "u2"]}})["outputs"]
        assert outputs["movie_ids"].astype(str).tolist() == rest["movie_ids"]
        np.testing.assert_allclose(outputs["scores"], rest["scores"], rtol=1e-6)
        scores = grpc_client.predict("ranker", {"user_id": ["u1"], "movie_id": ["m2"]}, version=1)["score"]
        assert scores.shape == (1,)
        assert grpc_client.status("ranker") == [(1, "AVAILABLE")]
        with pytest.raises(ServingError) as raised:
            grpc_client.predict("nope", {"user_id": ["u1"]})
        assert raised.value.status == "NOT_FOUND"
        with pytest.raises(ServingError) as raised:
            grpc_client.predict("retrieval", {"uid": ["u1"]})
        assert raised.value.status == "INVALID_ARGUMENT"
    finally:
        grpc_client.close()


def test_grpc_metadata(served):
    server, _ = served
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    import grpc

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "query_tower"
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(server.grpc_target) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(signatures)
    assert list(signatures.signature_def["serving_default"].inputs) == ["user_id"]


def test_concurrent_clients_get_no_errors(served, reference):
    """8 threads x 200 requests, each thread with its own keep-alive connection."""
    _, client = served
    expected = {
        u: reference["retrieval"].serve(tf.constant([u]))["movie_ids"].numpy().astype(str)[0].tolist()
        for u in ("u1", "u2", "u3", "u4")
    }
    failures: list[str] = []

    def worker(offset: int) -> None:
        own = RestClient(client.url, timeout=30)
        try:
            for i in range(200):
                user = f"u{(offset + i) % 4 + 1}"
                try:
                    got = own.predict("retrieval", {"instances": [user]})["predictions"][0]["movie_ids"]
                    if got != expected[user]:
                        failures.append(f"{user}: {got}")
                except Exception as error:  # counted, reported below
                    failures.append(repr(error))
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "some client threads did not finish"
    assert not failures, f"{len(failures)} of 1600 requests failed, e.g. {failures[:3]}"


def test_response_is_plain_json_with_content_length(served):
    server, _ = served
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(server.rest_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("POST", "/v1/models/retrieval:predict", body=json.dumps({"instances": ["u1"]}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        assert int(response.getheader("Content-Length")) == len(body)
        assert "predictions" in json.loads(body)
    finally:
        connection.close()


# ---- where TF Serving's own behaviour is matched (issue 36) ---------------------------------
def send(server: PracticeServer, method: str, target: str, body: bytes | None = None, headers=None):
    """One request with ``target`` sent exactly as given (no quoting): ``(status, body)``."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(server.rest_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for key, value in {"Content-Length": str(len(body or b"")), **(headers or {})}.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


ONE = b'{"instances": ["u1"]}'
TF_SERVING_URLS = [
    # TF Serving matches routes on the raw target (http_rest_api_util.cc) and decodes the model
    # name and label afterwards: an encoded ':' or '/' is part of the name, never the route.
    ("POST", "/v1/models/retrieval%3Apredict", ONE, 400, "Malformed request"),
    ("GET", "/v1/models/retrieval%2Fmetadata", None, 404, "retrieval/metadata"),
    ("GET", "/v1/models/retrieval%2Fversions%2F1", None, 404, "retrieval/versions/1"),
    ("GET", "/v1/models/retriev%61l", None, 200, "AVAILABLE"),
    ("POST", "/v1/models/retriev%61l:predict", ONE, 200, "predictions"),
    ("POST", "/v1/models/retrieval/labels/st%61ble:predict", ONE, 400, "Unrecognized servable version label: stable"),
    ("POST", "/v1/models/retrieval/versions/%31:predict", ONE, 400, "Malformed request"),
    ("POST", "/v1/models/retrieval:predict?verbose=1", ONE, 400, "Malformed request"),  # the query is matched too
    ("POST", "/V1/MODELS/retrieval:predict", ONE, 200, "predictions"),  # (?i) routes
    ("POST", "/v1/models/retrieval:PREDICT", ONE, 400, "Malformed request"),  # the method is compared exactly
    ("GET", "/v1/models/retrieval/METADATA", None, 200, "model_version_status"),  # ... and so is "metadata"
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/models/retrieval/versions/9223372036854775808", None, 400, "Failed to convert version"),
    # methods under /v1/: GET and POST are routed, OPTIONS is a CORS preflight, the rest malformed
    ("PUT", "/v1/models/retrieval:predict", ONE, 400, "Malformed request: PUT"),
    ("DELETE", "/v1/models/retrieval", None, 400, "Malformed request: DELETE"),
    ("PATCH", "/v1/models/retrieval", None, 400, "Malformed request: PATCH"),
    ("OPTIONS", "/v1/models/retrieval:predict", None, 400, "Origin header is missing in CORS preflight"),
    ("TRACE", "/v1/models/retrieval", None, 501, "TRACE"),  # refused by TF Serving's HTTP library
    ("GET", "/v1/nothing/here", None, 400, "Malformed request"),
    # outside /v1/: 404 (TF Serving's HTTP library answers it, as an HTML page)
    ("GET", "/", None, 404, "Not found"),
    ("POST", "/v2/models/retrieval:predict", ONE, 404, "Not found"),
    ("PUT", "/metrics", None, 404, "Not found"),
]


@pytest.mark.parametrize("method,target,body,status,fragment", TF_SERVING_URLS,
                         ids=[f"{c[0]} {c[1]}" for c in TF_SERVING_URLS])
def test_urls_and_methods_are_answered_as_tf_serving_answers_them(served, method, target, body, status, fragment):
    server, _ = served
    got, raw = send(server, method, target, body)
    assert got == status, f"{method} {target}: expected {status}, got {got} {raw[:300]!r}"
    text = raw.decode()
    assert fragment in text, f"{method} {target}: expected {fragment!r} in {text[:300]!r}"
    if status != 200:
        assert set(json.loads(raw)) == {"error"}, raw[:300]


def test_options_with_an_origin_is_an_empty_200_as_in_tf_serving(served):
    server, _ = served
    assert send(server, "OPTIONS", "/v1/models/retrieval:predict", None, {"Origin": "http://localhost"}) == (200, b"")


def test_grpc_unknown_label_is_invalid_argument_and_unimplemented_methods_say_so(served):
    import grpc
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    server, _ = served
    grpc_client = GrpcClient(server.grpc_target, timeout=30)
    try:
        with pytest.raises(ServingError) as raised:
            grpc_client.predict("retrieval", {"user_id": ["u1"]}, label="stable")
        assert raised.value.status == "INVALID_ARGUMENT" and "Unrecognized servable version label" in raised.value.message
    finally:
        grpc_client.close()
    with grpc.insecure_channel(server.grpc_target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        calls = {
            "Classify": (prediction.Classify, classification_pb2.ClassificationRequest()),
            "Regress": (prediction.Regress, regression_pb2.RegressionRequest()),
            "MultiInference": (prediction.MultiInference, inference_pb2.MultiInferenceRequest()),
            "HandleReloadConfigRequest": (models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()),
        }
        for name, (call, message) in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call(message, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, name
            assert f"{name} is not implemented by the practice server" in refused.value.details(), refused.value.details()
