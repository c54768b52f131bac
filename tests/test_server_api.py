"""The REST API of ``python -m tfserve_magic serve`` against TF Serving's contract.

One server (config file: four small models, labels, CORS, Prometheus, a 1 MB body limit) is
shared by the whole module; every test sends real HTTP requests to it.
"""

from __future__ import annotations

import base64
import concurrent.futures
import gzip
import json
import socket
import time

import numpy as np
import pytest
import requests

from tests.fixtures.server import server_models_config, start_server

BODY_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def api(server_test_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("api-server")
    config = work / "models.config"
    config.write_text(server_models_config(server_test_models))
    monitoring = work / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    server = start_server(
        None,
        "--rest_api_enable_cors_support",
        f"--monitoring_config_file={monitoring}",
        f"--rest_api_max_body_bytes={BODY_LIMIT}",
        config_file=config,
        workdir=work,
    )
    yield server
    assert server.stop() == 0
    assert not server.info_path.exists(), "the info file must be removed on exit"


def post(api, path, body, **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(api.url + path, data=data, timeout=30, **kwargs)


def ok_json(response):
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


# ---- status and metadata ----


def test_status_lists_versions_descending(api):
    response = requests.get(f"{api.url}/v1/models/half")
    assert response.text.startswith('{\n "model_version_status": [\n  {\n   "version": "2"')
    body = ok_json(response)
    states = body["model_version_status"]
    assert [s["version"] for s in states] == ["2", "1"]
    assert all(s["state"] == "AVAILABLE" for s in states)
    assert states[0]["status"] == {"error_code": "OK", "error_message": ""}


def test_status_of_one_version_and_unknowns(api):
    one = ok_json(requests.get(f"{api.url}/v1/models/half/versions/1"))
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    assert error_of(requests.get(f"{api.url}/v1/models/half/versions/7"), 404) == (
        "Could not find version 7 of model half"
    )
    assert error_of(requests.get(f"{api.url}/v1/models/nope"), 404) == (
        "Could not find any versions of model nope"
    )
    # TF Serving ignores a label on the status call: every version is listed.
    labelled = ok_json(requests.get(f"{api.url}/v1/models/half/labels/whatever"))
    assert len(labelled["model_version_status"]) == 2


def test_metadata_has_tf_serving_shape(api):
    body = ok_json(requests.get(f"{api.url}/v1/models/multi/metadata"))
    assert body["model_spec"] == {"name": "multi", "signature_name": "", "version": "1"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert "__saved_model_init_op" in defs
    sig = defs["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    a = sig["inputs"]["a"]
    assert a["dtype"] == "DT_FLOAT"
    assert a["name"] == "serving_default_a:0"
    assert a["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
        "unknown_rank": False,
    }
    assert sig["inputs"]["b"]["dtype"] == "DT_INT64"
    assert sig["outputs"]["positive"]["dtype"] == "DT_BOOL"
    init = defs["__saved_model_init_op"]["outputs"]["__saved_model_init_op"]
    assert init["tensor_shape"] == {"dim": [], "unknown_rank": True}


def test_metadata_by_version_and_label(api):
    stable = ok_json(requests.get(f"{api.url}/v1/models/half/labels/stable/metadata"))
    assert stable["model_spec"]["version"] == "1"
    v2 = ok_json(requests.get(f"{api.url}/v1/models/half/versions/2/metadata"))
    assert v2["model_spec"]["version"] == "2"
    assert error_of(requests.get(f"{api.url}/v1/models/half/labels/nope/metadata"), 400) == (
        "Unrecognized servable version label: nope"
    )
    assert error_of(requests.get(f"{api.url}/v1/models/half/versions/9/metadata"), 404) == (
        "Servable not found for request: Specific(half, 9)"
    )


def test_label_of_an_unknown_model_is_an_unknown_label(api):
    """TF Serving looks labels up per model: an unknown model with a label is 400, not 404."""
    assert error_of(post(api, "/v1/models/nope/labels/stable:predict", {}), 400) == (
        "Unrecognized servable version label: stable"
    )
    assert error_of(requests.get(f"{api.url}/v1/models/nope/labels/x/metadata"), 400) == (
        "Unrecognized servable version label: x"
    )
    # Without a label the unknown model is still 404.
    assert error_of(post(api, "/v1/models/nope:predict", {}), 404) == (
        "Servable not found for request: Latest(nope)"
    )


# ---- predict ----


def test_predict_row_and_columnar(api):
    assert ok_json(post(api, "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]})) == {
        "predictions": [3.5, 4.0, 5.5]
    }
    assert ok_json(post(api, "/v1/models/half:predict", {"inputs": [3.0, 4.0]})) == {
        "outputs": [4.5, 5.0]
    }
    # Named single input in both forms, integers accepted for a float input.
    assert ok_json(post(api, "/v1/models/half:predict", {"instances": [{"x": 2}]})) == {
        "predictions": [4.0]
    }
    assert ok_json(post(api, "/v1/models/half:predict", {"inputs": {"x": [2]}})) == {
        "outputs": [4.0]
    }


def test_predict_versions_and_labels_route_to_the_right_model(api):
    body = {"instances": [2.0]}
    assert ok_json(post(api, "/v1/models/half/versions/1:predict", body))["predictions"] == [3.0]
    assert ok_json(post(api, "/v1/models/half/labels/canary:predict", body))["predictions"] == [
        4.0
    ]
    assert ok_json(post(api, "/v1/models/half/labels/stable:predict", body))["predictions"] == [
        3.0
    ]
    # Case-insensitive URL, percent-decoded model name.
    assert ok_json(post(api, "/V1/Models/h%61lf:predict", body))["predictions"] == [4.0]


def test_predict_multi_input_multi_output(api):
    row = ok_json(
        post(api, "/v1/models/multi:predict", {
            "instances": [{"a": [1.0, 2.0], "b": 3}, {"a": [0.5, 0.5], "b": -1}]
        })
    )
    assert row == {
        "predictions": [
            {"total": 6.0, "doubled": 6, "positive": True},
            {"total": 0.0, "doubled": -2, "positive": False},
        ]
    }
    col = ok_json(post(api, "/v1/models/multi:predict", {
        "inputs": {"a": [[1.0, 2.0]], "b": [3], "ignored_extra": 1}
    }))
    assert col == {"outputs": {"total": [6.0], "doubled": [6], "positive": [True]}}


def test_scalar_output_only_in_columnar_form(api):
    body = {"signature_name": "scalar", "inputs": [1.0, 2.0, 3.0]}
    assert ok_json(post(api, "/v1/models/half:predict", body)) == {"outputs": 6.0}
    row = {"signature_name": "scalar", "instances": [1.0, 2.0]}
    assert "no shape information" in error_of(post(api, "/v1/models/half:predict", row), 400)


def test_strings_b64_and_bytes_outputs(api):
    raw = b"\x00\xffbin"
    body = {"instances": ["abc", {"b64": base64.b64encode(raw).decode()}]}
    result = ok_json(post(api, "/v1/models/strings:predict", body))["predictions"]
    assert result[0] == {"length": 3, "upper": "ABC", "echo_bytes": {"b64": "YWJj"}}
    assert result[1]["length"] == len(raw)
    assert base64.b64decode(result[1]["echo_bytes"]["b64"]) == raw
    bad = {"instances": [{"b64": "not base64!"}]}
    assert "base64" in error_of(post(api, "/v1/models/strings:predict", bad), 400).lower()


def test_dtype_rules(api):
    good = {"instances": [{"d": 1.5, "u": 7, "flag": True}]}
    assert ok_json(post(api, "/v1/models/dtypes:predict", good)) == {
        "predictions": [{"d2": 3.0, "u_sum": 8, "flag_not": False}]
    }
    for bad_value, field in ((1, "flag"), (1.5, "u"), (None, "d"), ("1", "d")):
        instance = {"d": 1.0, "u": 1, "flag": False, field: bad_value}
        message = error_of(post(api, "/v1/models/dtypes:predict", {"instances": [instance]}), 400)
        assert "is not of expected type" in message, message
    half = {"signature_name": "half", "inputs": [1.0]}
    assert "half" in error_of(post(api, "/v1/models/dtypes:predict", half), 400)


def test_nan_and_infinity_both_ways(api):
    body = b'{"inputs": [NaN, Infinity, -Infinity, 1e40]}'
    response = post(api, "/v1/models/half:predict", body)
    assert response.status_code == 200, response.text
    assert "NaN" in response.text and "-Infinity" in response.text
    values = json.loads(response.text)["outputs"]  # Python's json accepts the bare tokens
    assert values[0] != values[0] and values[1] == float("inf") and values[2] == float("-inf")
    assert values[3] == float("inf")  # too large for float32


def test_float_formatting(api):
    # Version 2 serves y = 0.5x + 3 in float32.
    response = post(api, "/v1/models/half:predict", {"inputs": [-6.0, 2.0 / 3.0, 17999994]})
    assert response.status_code == 200
    assert response.text.replace(" ", "").replace("\n", "") == (
        '{"outputs":[0.0,3.33333325,9e+06]}'
    )


def test_order_of_checks(api):
    # 1. JSON parse errors win over an unknown model.
    assert "JSON Parse error" in error_of(post(api, "/v1/models/nope:predict", b"{bad"), 400)
    assert "document is empty" in error_of(post(api, "/v1/models/half:predict", b""), 400)
    # 2. signature_name type before the model lookup.
    message = error_of(post(api, "/v1/models/nope:predict", {"signature_name": 3}), 400)
    assert "signature_name" in message
    # 3. the model lookup before the body keys.
    assert error_of(post(api, "/v1/models/nope:predict", {}), 404) == (
        "Servable not found for request: Latest(nope)"
    )
    message = error_of(post(api, "/v1/models/half:predict", {"signature_name": "zz"}), 400)
    assert message == 'Serving signature name: "zz" not found in signature def'
    # 4. the body keys.
    assert "Missing 'inputs' or 'instances' key" in error_of(
        post(api, "/v1/models/half:predict", {}), 400
    )
    both = {"inputs": [1.0], "instances": [1.0]}
    assert "only one of" in error_of(post(api, "/v1/models/half:predict", both), 400)
    assert "No values" in error_of(post(api, "/v1/models/half:predict", {"instances": []}), 400)
    assert "not object" in error_of(post(api, "/v1/models/half:predict", b"[1]"), 400).lower()


def test_ragged_and_missing_named_inputs(api):
    ragged = {"instances": [{"a": [1.0, 2.0], "b": 1}, {"a": [1.0], "b": 1}]}
    message = error_of(post(api, "/v1/models/multi:predict", ragged), 400)
    assert "Expecting tensor size" in message or "Expecting shape" in message
    missing = {"instances": [{"a": [1.0, 2.0]}]}
    assert "keys must be equal to" in error_of(post(api, "/v1/models/multi:predict", missing), 400)
    plain = {"instances": [1.0, 2.0]}
    assert "plain list" in error_of(post(api, "/v1/models/multi:predict", plain), 400)
    missing_col = {"inputs": {"a": [[1.0, 2.0]]}}
    assert "Missing named input: b" in error_of(
        post(api, "/v1/models/multi:predict", missing_col), 400
    )


def test_shape_errors_come_from_the_model(api):
    # No shape check before the model (as TF Serving): a width the ops accept works ...
    wide = {"inputs": {"a": [[1.0, 2.0, 3.0]], "b": [1]}}
    assert ok_json(post(api, "/v1/models/multi:predict", wide))["outputs"]["total"] == [7.0]
    # ... and batch sizes the ops reject fail with the op's own message.
    wrong = {"inputs": {"a": [[1.0, 2.0], [3.0, 4.0]], "b": [1, 2, 3]}}
    message = error_of(post(api, "/v1/models/multi:predict", wrong), 400)
    assert "Incompatible shapes" in message
    assert "Detected at node" not in message and "[Op:" not in message


def test_model_errors_and_dropped_clients_do_not_disturb_concurrent_requests(api):
    """TF op errors, parse errors and half-sent bodies interleaved with good requests from
    several threads: every good request gets its own right answer, and the server lives."""
    wrong = {"inputs": {"a": [[1.0, 2.0], [3.0, 4.0]], "b": [1, 2, 3]}}

    def client(worker):
        with requests.Session() as session:
            for step in range(12):
                value = float(worker * 100 + step)
                good = session.post(f"{api.url}/v1/models/half/versions/1:predict",
                                    data=json.dumps({"instances": [value]}), timeout=30)
                assert good.json() == {"predictions": [0.5 * value + 2.0]}
                if step % 3 == 0:
                    bad = session.post(f"{api.url}/v1/models/multi:predict",
                                       data=json.dumps(wrong), timeout=30)
                    assert "Incompatible shapes" in error_of(bad, 400)
                elif step % 3 == 1:
                    assert "Parse error" in error_of(session.post(
                        f"{api.url}/v1/models/half:predict", data=b"{", timeout=30), 400)
                else:
                    with socket.create_connection((api.info["host"], api.port), 5) as sock:
                        sock.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: localhost\r\n"
                                     b"Content-Length: 50\r\n\r\n{\"instances\"")

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for future in [pool.submit(client, worker) for worker in range(6)]:
            future.result()
    assert api.alive()
    assert "model_version_status" in ok_json(requests.get(f"{api.url}/v1/models/half"))


# ---- classify / regress ----


def test_classify_and_regress(api):
    body = {"signature_name": "classify", "examples": [{"x": 0.0}, {"x": 3.0}]}
    results = ok_json(post(api, "/v1/models/half:classify", body))["results"]
    assert [[label for label, _ in r] for r in results] == [["neg", "pos"], ["neg", "pos"]]
    assert results[0][1][1] == pytest.approx(0.5)
    assert results[1][1][1] > 0.9
    body = {"signature_name": "regress", "examples": [{"x": 2.0}], "context": {}}
    assert ok_json(post(api, "/v1/models/half:regress", body)) == {"results": [4.0]}
    body = {"signature_name": "regress", "context": {"x": 4.0}, "examples": [{}]}
    assert ok_json(post(api, "/v1/models/half/versions/1:regress", body)) == {"results": [4.0]}


def test_classify_regress_errors(api):
    assert "examples" in error_of(post(api, "/v1/models/nope:classify", {}), 400)
    assert "examples" in error_of(post(api, "/v1/models/half:regress", {"examples": []}), 400)
    body = {"signature_name": "regress", "examples": [{"x": 1.0}]}
    assert error_of(post(api, "/v1/models/nope:regress", body), 404)
    # The default signature takes "x", not serialized Examples.
    assert "inputs" in error_of(post(api, "/v1/models/half:regress", {"examples": [{"x": 1.0}]}),
                                400)
    # An int64 feature where the model parses float: the TF op's own error, 400.
    body = {"signature_name": "regress", "examples": [{"x": 4}]}
    assert "Data types don't match" in error_of(post(api, "/v1/models/half:regress", body), 400)


def test_classify_regress_signature_checks_use_tf_serving_words(api):
    """GetClassification/RegressionSignatureDef before the run, PostProcess*Result after."""
    def error(verb, model, signature, status=400):
        body = {"signature_name": signature, "examples": [{"x": 1.0}]}
        return error_of(post(api, f"/v1/models/{model}:{verb}", body), status)

    assert error("classify", "half", "nope") == "No signature was found with the name: nope"
    assert error("regress", "half", "classify") == "Expected one output Tensor."
    regress_sig = error("classify", "half", "regress")
    assert regress_sig.startswith('Expected classification signature outputs to contain at least '
                                  'one of "classes" or "scores". Signature was: inputs {')
    assert 'key: "outputs"' in regress_sig  # the SignatureDef's text form, as DebugString
    default = error("regress", "half", "")
    assert default.startswith("No regression inputs found in SignatureDef: inputs {")
    assert error("classify", "dtypes", "double_scores") == (
        "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"
    )
    assert error("regress", "dtypes", "wide_outputs") == (
        "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]"
    )


# ---- URLs, methods, headers ----


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/models/half"),
        ("POST", "/v1/models/half/metadata"),
        ("GET", "/v1/models/half:predict"),
        ("POST", "/v1/models/half/versions/abc:predict"),
        ("POST", "/v1/models/half/versions/-1:predict"),
        ("POST", "/v1/models/half/version/1:predict"),
        ("POST", "/v1/models/half/label/x:predict"),
        ("POST", "/v1/models/half/versions/1/labels/x:predict"),
        ("GET", "/v1/models/half/"),
        ("GET", "/v1/models/a/b"),
        ("POST", "/v1/models/half:predict?x=1"),
        ("GET", "/v1/models/half?x=1"),
        ("POST", "/v1/models/half:PREDICT"),
        ("PUT", "/v1/models/half"),
        ("DELETE", "/v1/models/half"),
    ],
)
def test_malformed_urls(api, method, path):
    response = requests.request(method, api.url + path, data=b'{"instances":[1.0]}', timeout=10)
    message = error_of(response, 400)
    assert message.startswith(f"Malformed request: {method} /v1/models/")


def test_other_url_errors(api):
    assert error_of(requests.get(f"{api.url}/v1/models"), 400) == "Missing model name in request."
    big = "9" * 25
    assert error_of(requests.get(f"{api.url}/v1/models/half/versions/{big}"), 400) == (
        f"Failed to convert version: {big} to numeric."
    )
    html = requests.get(f"{api.url}/foo")
    assert html.status_code == 404 and "text/html" in html.headers["Content-Type"]
    # Upper-case METADATA falls through to a status request, as in TF Serving.
    assert "model_version_status" in ok_json(requests.get(f"{api.url}/v1/models/half/METADATA"))


def test_cors_headers_and_preflight(api):
    response = requests.get(f"{api.url}/v1/models/half")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
    error = post(api, "/v1/models/nope:predict", {})
    assert error.headers["Access-Control-Allow-Origin"] == "*"
    pre = requests.options(f"{api.url}/v1/models/half:predict",
                           headers={"Origin": "http://localhost:8888"})
    assert pre.status_code == 200 and pre.content == b""
    assert requests.options(f"{api.url}/v1/models/half:predict").status_code == 400


def test_gzip_bodies(api):
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
    response = post(api, "/v1/models/half:predict", body, headers={"Content-Encoding": "gzip"})
    assert ok_json(response) == {"predictions": [3.5, 4.0]}
    # Like TF Serving, any Content-Encoding that contains "gzip" is gunzipped.
    for encoding in ("x-gzip", "gzip, identity"):
        also = post(api, "/v1/models/half:predict", body, headers={"Content-Encoding": encoding})
        assert ok_json(also) == {"predictions": [3.5, 4.0]}
    broken = post(api, "/v1/models/half:predict", b"not gzip",
                  headers={"Content-Encoding": "gzip"})
    assert "gzip" in error_of(broken, 400)
    bomb = gzip.compress(b" " * (BODY_LIMIT + 10))
    assert error_of(post(api, "/v1/models/half:predict", bomb,
                         headers={"Content-Encoding": "gzip"}), 413)


def test_huge_body_is_refused(api):
    huge = b'{"instances": [' + b"1.0," * (BODY_LIMIT // 4) + b"1.0]}"
    message = error_of(post(api, "/v1/models/half:predict", huge), 413)
    assert "--rest_api_max_body_bytes" in message


def test_client_disconnect_mid_body_costs_nothing(api):
    for _ in range(3):
        with socket.create_connection((api.info["host"], api.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/models/half:predict HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Length: 100000\r\n\r\n" + b'{"instances": [1.0,'
            )
    assert ok_json(post(api, "/v1/models/half:predict", {"instances": [1.0]}))
    assert api.alive()


def _raw_exchange(api, request: bytes, then: bytes = b"") -> bytes:
    """Send raw HTTP bytes (``then`` after the server's first reply bytes) and read to EOF."""
    with socket.create_connection((api.info["host"], api.port), timeout=10) as sock:
        sock.sendall(request)
        if then:
            interim = sock.recv(4096)
            assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
            sock.sendall(then)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_what_real_clients_send(api):
    """curl's form content type, Expect: 100-continue, chunked bodies, HTTP/1.0, a BOM with
    CRLF and tabs, HEAD, and the MNIST tutorial's json.dumps of float32 lists."""
    body = b'{"instances": [1.0, 2.0, 5.0]}'
    form = post(api, "/v1/models/half/versions/1:predict", body,
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert ok_json(form) == {"predictions": [2.5, 3.0, 4.5]}
    head = (b"POST /v1/models/half/versions/1:predict HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\n")
    reply = _raw_exchange(api, head + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                          % len(body), then=body)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b'{"predictions":[2.5,3.0,4.5]}')
    chunked = _raw_exchange(api, head + b"Transfer-Encoding: chunked\r\n\r\n"
                            b'5\r\n{"ins\r\n19\r\ntances": [1.0, 2.0, 5.0]}\r\n0\r\n\r\n')
    assert chunked.endswith(b'{"predictions":[2.5,3.0,4.5]}'), chunked
    http10 = _raw_exchange(api, b"POST /v1/models/half/versions/1:predict HTTP/1.0\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert b" 200 " in http10.split(b"\r\n")[0] and http10.endswith(b"[2.5,3.0,4.5]}")
    pretty = b'\xef\xbb\xbf{\r\n\t"instances": [\r\n\t\t1e0,\r\n\t\t2E+0,\n\t\t5.0\r\n\t]\r\n}\r\n'
    assert ok_json(post(api, "/v1/models/half/versions/1:predict", pretty)) == {
        "predictions": [2.5, 3.0, 4.5]
    }
    head_request = requests.head(f"{api.url}/v1/models/half", timeout=10)
    assert head_request.status_code == 400 and head_request.content == b""
    # The TF Serving MNIST tutorial: float32 .tolist() through json.dumps (17-digit doubles).
    values = [0.1, 1 / 3, 1e-7, 0.30000001192092896, -0.0]
    mnist_style = json.dumps({"signature_name": "serving_default", "instances": values})
    predicted = ok_json(post(api, "/v1/models/half/versions/1:predict", mnist_style,
                             headers={"content-type": "application/json"}))["predictions"]
    expected = np.float32(0.5) * np.array(values, dtype=np.float32) + np.float32(2.0)
    assert np.array_equal(np.array(predicted, dtype=np.float32), expected)


def test_keep_alive_connection_serves_many_requests(api):
    with requests.Session() as session:
        for value in range(20):
            response = session.post(f"{api.url}/v1/models/half:predict",
                                    data=json.dumps({"instances": [float(value)]}))
            assert response.json() == {"predictions": [0.5 * value + 3.0]}


def test_status_is_not_stuck_behind_a_slow_model(api):
    """A long model call runs off the event loop, so a status call answers before it ends."""
    slow = {"signature_name": "slow", "inputs": {"n": [6000]}}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        long_call = pool.submit(post, api, "/v1/models/multi:predict", slow)
        time.sleep(0.2)
        status = requests.get(f"{api.url}/v1/models/multi", timeout=30)
        status_done = time.monotonic()
        assert status.status_code == 200
        assert not long_call.done(), "the status call should have answered first"
        long_done = long_call.result()
        assert long_done.status_code == 200, long_done.text
        assert time.monotonic() >= status_done


def test_prometheus_metrics(api):
    post(api, "/v1/models/half:predict", {"instances": [1.0]})
    post(api, "/v1/models/nope:predict", {})
    scraped = requests.get(f"{api.url}/monitoring/prometheus/metrics")
    assert scraped.headers["Content-Type"] == "text/plain"  # TF Serving's exact header
    text = scraped.text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="half",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert 'model_name="half",API="predict",entrypoint="REST",le="+Inf"' in text
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' in text
    assert "# HELP" not in text



def _metric_value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prometheus_counts_requests_and_histograms_are_cumulative(api):
    url = f"{api.url}/monitoring/prometheus/metrics"
    ok = ':tensorflow:serving:request_count{model_name="strings",status="OK"}'
    bad = ':tensorflow:serving:request_count{model_name="strings",status="INVALID_ARGUMENT"}'
    latency = (':tensorflow:serving:request_latency_count{model_name="strings",API="predict",'
               'entrypoint="REST"}')
    before = requests.get(url).text
    for _ in range(3):
        ok_json(post(api, "/v1/models/strings:predict", {"instances": ["a"]}))
    error_of(post(api, "/v1/models/strings:predict", {"instances": [1]}), 400)
    after = requests.get(url).text
    assert _metric_value(after, ok) - _metric_value(before, ok) == 3
    assert _metric_value(after, bad) - _metric_value(before, bad) == 1
    assert _metric_value(after, latency) - _metric_value(before, latency) == 3  # successes only
    prefix = ':tensorflow:serving:request_latency_bucket{model_name="strings",API="predict"'
    buckets = [line for line in after.splitlines() if line.startswith(prefix)]
    counts = [float(line.rsplit(" ", 1)[1]) for line in buckets]
    assert counts == sorted(counts), "bucket counts are cumulative"
    assert buckets[-1].split("le=")[1].startswith('"+Inf"')
    assert counts[-1] == _metric_value(after, latency)
