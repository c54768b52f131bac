"""``--enable_batching``: merged requests give each client its own rows; TF Serving's limits."""

from __future__ import annotations

import concurrent.futures
import re

import pytest
import requests

from tests.fixtures.server import start_server


@pytest.fixture(scope="module")
def batching(server_test_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("batching")
    params = work / "batching.config"
    params.write_text(
        "max_batch_size { value: 8 }\n"
        "batch_timeout_micros { value: 5000 }\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 1 }\n"
        "allowed_batch_sizes: 4\n"
        "allowed_batch_sizes: 8\n"
    )
    monitoring = work / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    server = start_server(
        server_test_models["half"], "--enable_batching", f"--batching_parameters_file={params}",
        f"--monitoring_config_file={monitoring}", model_name="half", workdir=work,
    )
    yield server
    server.stop()


def _predict(server, values, path="/v1/models/half:predict"):
    return requests.post(server.url + path, json={"instances": values}, timeout=60)


def test_concurrent_requests_get_their_own_rows(batching):
    requests_values = [[float(i)] * (1 + i % 3) for i in range(48)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda v: _predict(batching, v), requests_values))
    for values, response in zip(requests_values, responses):
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [0.5 * v + 3.0 for v in values]}
    # A lone 1-row request makes a batch of its own, padded to 4 (the concurrent ones above
    # may all fill batches of 8 when the server is fast).
    assert _predict(batching, [7.0]).json() == {"predictions": [6.5]}
    metrics = requests.get(f"{batching.url}/monitoring/prometheus/metrics").text
    processed = re.search(
        r':tensorflow:serving:batching_session:processed_batch_size_count\{[^}]*\} (\d+)', metrics
    )
    assert processed and int(processed.group(1)) >= 1
    sums = re.search(
        r':tensorflow:serving:batching_session:input_batch_size_count\{[^}]*\} (\d+)', metrics
    )
    assert int(sums.group(1)) == 49
    # Every processed batch is padded to an allowed size (4 or 8).
    buckets = dict(re.findall(
        r':tensorflow:serving:batching_session:processed_batch_size_bucket\{[^}]*le="([^"]+)"\} '
        r"(\d+)", metrics
    ))
    assert buckets["2"] == "0" and buckets["4"] != "0"


def test_request_larger_than_max_batch_size_is_400(batching):
    response = _predict(batching, [1.0] * 9)
    assert response.status_code == 400
    assert response.json()["error"] == "Task size 9 is larger than maximum input batch size 8"
    assert _predict(batching, [1.0] * 8).status_code == 200


def test_versions_and_other_verbs_still_work_with_batching(batching):
    assert _predict(batching, [2.0], "/v1/models/half/versions/2:predict").json() == {
        "predictions": [4.0]
    }
    body = {"signature_name": "regress", "examples": [{"x": 2.0}]}
    response = requests.post(f"{batching.url}/v1/models/half:regress", json=body)
    assert response.json() == {"results": [4.0]}
    scalar = {"signature_name": "scalar", "inputs": [1.0, 2.0]}
    response = requests.post(f"{batching.url}/v1/models/half:predict", json=scalar)
    assert response.status_code == 400  # an unbatched (rank-0) output cannot be split


def test_full_queue_answers_503(server_test_models, tmp_path):
    params = tmp_path / "tiny-queue.config"
    params.write_text(
        "max_batch_size { value: 1 }\nmax_enqueued_batches { value: 1 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    server = start_server(
        server_test_models["multi"], "--enable_batching", f"--batching_parameters_file={params}",
        model_name="multi", workdir=tmp_path,
    )
    try:
        slow = {"signature_name": "slow", "inputs": {"n": [2500]}}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(
                lambda _: requests.post(f"{server.url}/v1/models/multi:predict", json=slow,
                                        timeout=120),
                range(6),
            ))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes, codes
        full = next(r for r in responses if r.status_code == 503)
        assert "queue" in full.json()["error"] and "full" in full.json()["error"]
    finally:
        server.stop()
