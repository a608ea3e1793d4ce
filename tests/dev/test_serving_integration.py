"""The lesson's clients against a real TensorFlow Serving. Skipped unless TF_SERVING_URL is set.

To run it: execute lesson 08 once (it exports retrieval, query_tower and ranker into
.course/lesson05/models and prints a `docker run tensorflow/serving ...` command), start that
container, then

    TF_SERVING_URL=http://127.0.0.1:8501 TF_SERVING_GRPC=127.0.0.1:8500 \\
        .venv/bin/python -m pytest tests/dev/test_serving_integration.py

The same checks pass against the practice server (python -m recsys_course.serving
--model-config-file .course/lesson05/models/models.local.config), which is how they were
written; the point of this file is to catch any place where the stand-in and TF Serving
disagree."""

import os

import numpy as np
import pytest

from recsys_course.serving.client import GrpcClient, RestClient, ServingError

URL = os.environ.get("TF_SERVING_URL")
GRPC = os.environ.get("TF_SERVING_GRPC")
pytestmark = pytest.mark.skipif(not URL, reason="set TF_SERVING_URL to test against a running TF Serving")
USER = "1"  # any string: unknown users get the out-of-vocabulary embedding


@pytest.fixture(scope="module")
def client():
    rest = RestClient(URL, timeout=30)
    yield rest
    rest.close()


@pytest.mark.parametrize("model", ["retrieval", "query_tower", "ranker"])
def test_model_has_an_available_version(client, model):
    states = [row["state"] for row in client.status(model)["model_version_status"]]
    assert "AVAILABLE" in states, f"{model}: no AVAILABLE version in {states}"


def test_metadata_names_the_inputs(client):
    signatures = client.metadata("ranker")["metadata"]["signature_def"]["signature_def"]
    assert set(signatures["serving_default"]["inputs"]) == {"user_id", "movie_id"}


def test_row_and_columnar_answers_agree(client):
    rows = client.predict("retrieval", {"instances": [{"user_id": USER}]})["predictions"][0]
    columns = client.predict("retrieval", {"inputs": {"user_id": [USER]}})["outputs"]
    assert rows["movie_ids"] == columns["movie_ids"][0]
    np.testing.assert_allclose(rows["scores"], columns["scores"][0], rtol=1e-6)
    scores = np.asarray(rows["scores"])
    assert np.all(np.diff(scores) <= 1e-6), "scores must come best first"


def test_single_output_models(client):
    embedding = client.predict("query_tower", {"instances": [USER]})["predictions"]
    assert np.asarray(embedding).ndim == 2
    movies = client.predict("retrieval", {"instances": [USER]})["predictions"][0]["movie_ids"][:3]
    scores = client.predict("ranker", {"inputs": {"user_id": [USER] * 3, "movie_id": movies}})["outputs"]
    assert np.asarray(scores).shape == (3,)


@pytest.mark.parametrize("path,body,status", [
    ("/v1/models/no_such_model:predict", {"instances": [USER]}, 404),
    ("/v1/models/retrieval:predict", {"instances": [{"uid": USER}]}, 400),
    ("/v1/models/retrieval:predict", b"{not json", 400),
])
def test_errors(client, path, body, status):
    got, payload = client.request("POST", path, body)
    assert got == status and "error" in payload, f"expected {status} with an error body, got {got} {payload}"


@pytest.mark.skipif(not GRPC, reason="set TF_SERVING_GRPC to test gRPC too")
def test_grpc_matches_rest(client):
    grpc_client = GrpcClient(GRPC, timeout=30)
    try:
        outputs = grpc_client.predict("retrieval", {"user_id": [USER]})
        rest = client.predict("retrieval", {"inputs": {"user_id": [USER]}})["outputs"]
        assert outputs["movie_ids"].astype(str).tolist() == rest["movie_ids"]
        with pytest.raises(ServingError):
            grpc_client.predict("no_such_model", {"user_id": [USER]})
    finally:
        grpc_client.close()
