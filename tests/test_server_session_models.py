"""SavedModels the TF2 object-graph load cannot revive, served from a TF1 session like TF Serving.

Covers the three kinds that failed before (Keras 2 exports saved with their optimizer, TF1
graphs without shapes / with loosely declared dtypes, reference variables) with TF Serving's
own test SavedModels (tests/data/tfserving, see its README) and with models written here by
tf_keras and by a TF1 SavedModelBuilder (tests/fixtures/legacy_models.py). Every model is
served by a real server subprocess and must answer what its writer computed in-process.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.fixtures.legacy_models import KERAS2_VARIANTS, TF1_LABELS
from tests.fixtures.server import server_command, server_env, start_server
from tests.helpers.serving import (
    COUNTER,
    DATA,
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    TWO_VERSIONS,
    loader_of,
    model_config,
    publish,
    states,
    wait_for,
)


def post(server, path: str, body) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=60)


def ok(response: requests.Response):
    assert response.status_code == 200, response.text
    return response.json()


# ---- one server for every kind ----


@pytest.fixture(scope="module")
def legacy(keras2_models, tf1_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("legacy-server")
    keras_root, keras_expected = keras2_models
    tf1_root, tf1_expected = tf1_models
    entries = [
        {"name": "half_plus_two", "base_path": HALF_PLUS_TWO},
        {"name": "half_plus_two_tf2", "base_path": DATA / "saved_model_half_plus_two_tf2_cpu"},
        {"name": "half_plus_three", "base_path": HALF_PLUS_THREE},
        {"name": "counter", "base_path": COUNTER},
        {"name": "tf1", "base_path": tf1_root / "tf1", "versions": [1]},
        {"name": "tf1_noinit", "base_path": tf1_root / "tf1_noinit"},
    ] + [
        {"name": f"keras2_{o}_{s}", "base_path": keras_root / f"keras2_{o}_{s}"}
        for o, s in KERAS2_VARIANTS
    ]
    config = work / "models.config"
    config.write_text(model_config(entries))
    monitoring = work / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    server = start_server(None, f"--monitoring_config_file={monitoring}", config_file=config,
                          workdir=work)
    yield server, keras_expected, tf1_expected["models"]["tf1/1"]
    server.stop()


def test_each_kind_is_served_by_the_expected_loader(legacy):
    server = legacy[0]
    expected = {
        "half_plus_two": "tf2", "half_plus_three": "session", "counter": "session",
        "tf1": "session", "keras2_legacy_save": "session", "keras2_legacy_tfsave": "session",
    }
    for model, kind in expected.items():
        assert loader_of(server, model) == kind, model
    for optimizer, save in KERAS2_VARIANTS:  # whichever loads them, they load and answer
        assert loader_of(server, f"keras2_{optimizer}_{save}") in ("tf2", "session")
    assert "Error when importing Keras" not in server.log().split("Successfully loaded")[-1]


@pytest.mark.parametrize("optimizer, save", KERAS2_VARIANTS)
def test_keras2_models_answer_as_in_their_writer(legacy, optimizer, save):
    server, keras_expected, _ = legacy
    name = f"keras2_{optimizer}_{save}"
    sample = keras_expected["models"][name]
    got = ok(post(server, f"/v1/models/{name}:predict", {"instances": sample["instances"]}))
    np.testing.assert_allclose(got["predictions"], sample["predictions"], rtol=1e-5, atol=1e-7)
    meta = ok(requests.get(f"{server.url}/v1/models/{name}/metadata", timeout=30))
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    (spec,) = inputs.values()
    assert spec["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in spec["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]


def test_tf_serving_half_plus_two(legacy):
    server = legacy[0]
    assert ok(post(server, "/v1/models/half_plus_two:predict",
                   {"instances": [1.0, 2.0, 5.0]})) == {"predictions": [2.5, 3.0, 4.5]}
    assert ok(post(server, "/v1/models/half_plus_two:predict",
                   {"inputs": [2.0, 3.0, 4.0]})) == {"outputs": [3.0, 3.5, 4.0]}
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert ok(post(server, "/v1/models/half_plus_two:classify", body)) == {
        "results": [[["", 3.0]]]}
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert ok(post(server, "/v1/models/half_plus_two:regress", body)) == {"results": [3.0]}
    assert ok(requests.get(f"{server.url}/v1/models/half_plus_two", timeout=30)) == {
        "model_version_status": [{"version": "123", "state": "AVAILABLE",
                                  "status": {"error_code": "OK", "error_message": ""}}]}
    meta = ok(requests.get(f"{server.url}/v1/models/half_plus_two/metadata", timeout=30))
    expected = json.loads((DATA / "half_plus_two_model_metadata.json").read_text())
    expected["model_spec"]["name"] = "half_plus_two"
    assert meta == expected


def test_tf_serving_half_plus_two_written_by_tf2(legacy):
    server = legacy[0]
    assert loader_of(server, "half_plus_two_tf2") == "tf2"
    base = "/v1/models/half_plus_two_tf2"
    assert ok(post(server, f"{base}:predict", {"instances": [2.0, 3.0, 4.0]})) == {
        "predictions": [3.0, 3.5, 4.0]}
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert ok(post(server, f"{base}:classify", body)) == {"results": [[["", 3.0]]]}
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert ok(post(server, f"{base}:regress", body)) == {"results": [3.0]}


def test_tf_serving_half_plus_three_without_shapes(legacy):
    server = legacy[0]
    assert ok(post(server, "/v1/models/half_plus_three:predict",
                   {"instances": [1.0, 2.0, 5.0]})) == {"predictions": [3.5, 4.0, 5.5]}
    # Its regress signature declares the serialized tf.Example as DT_FLOAT; the placeholder
    # is a string, so TF Serving (and we) run it.
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 2.0}, {"x": 4.0}]}
    assert ok(post(server, "/v1/models/half_plus_three:regress", body)) == {
        "results": [4.0, 5.0]}
    meta = ok(requests.get(f"{server.url}/v1/models/half_plus_three/metadata", timeout=30))
    defs = meta["metadata"]["signature_def"]["signature_def"]
    regress_input = defs["tensorflow/serving/regress"]["inputs"]["inputs"]
    assert regress_input["dtype"] == "DT_FLOAT"  # what the SignatureDef says, as TF Serving
    assert regress_input["name"] == "tf_example:0"
    assert defs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    # Predict follows the declared DT_FLOAT, so the graph refuses it, as in TF Serving.
    response = post(server, "/v1/models/half_plus_three:predict",
                    {"signature_name": "tensorflow/serving/regress", "instances": [1.0]})
    assert response.status_code == 400
    assert response.json() == {"error": "Type mismatch: actual float vs. expect string"}
    # A classify call is refused by the signature check, not by a crash.
    response = post(server, "/v1/models/half_plus_three:classify",
                    {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]})
    assert response.status_code == 400 and "classification" in response.json()["error"]


def test_tf_serving_counter_keeps_state_in_reference_variables(legacy):
    server = legacy[0]
    path = "/v1/models/counter:predict"
    first = ok(post(server, path, {"signature_name": "incr_counter_by",
                                   "inputs": {"delta": 3.0}}))["outputs"]
    second = ok(post(server, path, {"signature_name": "incr_counter_by",
                                    "inputs": {"delta": 2.0}}))["outputs"]
    assert first >= 3.0 and second == first + 2.0
    # Signatures without inputs cannot be called over REST (TF Serving's own answer).
    response = post(server, path, {"signature_name": "get_counter", "inputs": {}})
    assert response.status_code == 400
    assert response.json() == {"error": "Failed to get input map for signature: get_counter"}


def test_tf1_builder_model_predict_classify_regress(legacy):
    server, _, expected = legacy
    got = ok(post(server, "/v1/models/tf1:predict", {"instances": expected["x"]}))
    assert got == {"predictions": expected["y"]}
    examples = [{"x": x} for x in expected["x"]]
    got = ok(post(server, "/v1/models/tf1:classify",
                  {"signature_name": "classify", "examples": examples}))
    assert [[label for label, _ in row] for row in got["results"]] == expected["classes"]
    assert expected["classes"][0] == TF1_LABELS  # from the lookup table, via its init op
    np.testing.assert_allclose([[s for _, s in row] for row in got["results"]],
                               expected["scores"], rtol=1e-6)
    got = ok(post(server, "/v1/models/tf1_noinit:classify",
                  {"signature_name": "classify", "examples": examples}))
    assert [[label for label, _ in row] for row in got["results"]] == expected["classes"]
    got = ok(post(server, "/v1/models/tf1:regress",
                  {"signature_name": "regress", "examples": examples}))
    assert got == {"results": expected["regress"]}
    first = ok(post(server, "/v1/models/tf1:predict",
                    {"signature_name": "count", "inputs": {"delta": [1.0, 2.0]}}))["outputs"]
    second = ok(post(server, "/v1/models/tf1:predict",
                     {"signature_name": "count", "inputs": {"delta": 4.0}}))["outputs"]
    assert second == first + 4.0


def test_tf1_metadata_records_unknown_rank(legacy):
    server = legacy[0]
    meta = ok(requests.get(f"{server.url}/v1/models/tf1/versions/1/metadata", timeout=30))
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(defs) >= {"serving_default", "classify", "regress", "count"}
    x = defs["serving_default"]["inputs"]["x"]
    assert x == {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [], "unknown_rank": True},
                 "name": "x:0"}
    assert defs["classify"]["method_name"] == "tensorflow/serving/classify"
    assert defs["classify"]["outputs"]["classes"]["dtype"] == "DT_STRING"


def test_session_models_errors_are_tf_serving_errors(legacy):
    server = legacy[0]
    response = post(server, "/v1/models/tf1:predict", {"instances": ["a", "b"]})
    assert response.status_code == 400 and "error" in response.json()
    response = post(server, "/v1/models/tf1:predict", {"signature_name": "nope",
                                                       "instances": [1.0]})
    assert response.status_code == 400
    assert "not found in signature def" in response.json()["error"]
    response = post(server, "/v1/models/tf1:regress",
                    {"signature_name": "regress", "examples": [{"y": 1.0}]})
    assert response.status_code == 400 and "error" in response.json()


def test_metrics_count_session_models(legacy):
    server = legacy[0]
    ok(post(server, "/v1/models/tf1:predict", {"instances": [1.0]}))
    text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).text
    assert ':tensorflow:serving:request_count{model_name="tf1",status="OK"}' in text
    assert re.search(r':tensorflow:serving:runtime_latency_count\{[^}]*model_name="tf1"', text)
    assert re.search(r':tensorflow:cc:saved_model:load_attempt_count\{model_path="[^"]*tf1/1",'
                     r'status="success"\} 1', text)


# ---- versions, labels, hot swap and batching on the session path ----


@pytest.fixture(scope="module")
def swapping(tf1_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("session-swap")
    tf1_root, expected = tf1_models
    base = work / "tf1"
    base.mkdir()
    publish(tf1_root / "tf1" / "1", base, 1)
    config = work / "models.config"
    config.write_text(model_config([
        {"name": "tf1", "base_path": base},
        {"name": "both", "base_path": tf1_root / "tf1", "versions": [1, 2],
         "labels": {"stable": 1, "canary": 2}},
    ]))
    params = work / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n"
                      "num_batch_threads { value: 2 }\n")
    server = start_server(None, "--file_system_poll_wait_seconds=1", "--enable_batching",
                          f"--batching_parameters_file={params}", config_file=config,
                          workdir=work)
    yield server, base, tf1_root, expected["models"]
    server.stop()


def test_session_model_versions_and_labels(swapping):
    server, _, _, expected = swapping
    xs = expected["tf1/1"]["x"]
    for path, key in (("/versions/1", "tf1/1"), ("/versions/2", "tf1/2"),
                      ("/labels/stable", "tf1/1"), ("/labels/canary", "tf1/2"), ("", "tf1/2")):
        got = ok(post(server, f"/v1/models/both{path}:predict", {"instances": xs}))
        assert got == {"predictions": expected[key]["y"]}, path


def test_session_model_batching_gives_each_request_its_rows(swapping):
    server, _, _, expected = swapping
    w, b = 2.0, -1.0  # version 2 of "both"
    values = [[float(i)] * (1 + i % 3) for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(
            lambda v: post(server, "/v1/models/both:predict", {"instances": v}), values))
    for sent, response in zip(values, responses):
        assert ok(response) == {"predictions": [w * v + b for v in sent]}


def test_session_model_hot_swap(swapping):
    server, base, tf1_root, expected = swapping
    xs = expected["tf1/1"]["x"]
    assert ok(post(server, "/v1/models/tf1:predict", {"instances": xs})) == {
        "predictions": expected["tf1/1"]["y"]}
    publish(tf1_root / "tf1" / "2", base, 2)
    wait_for(lambda: states(server, "tf1") == {"2": ("AVAILABLE", "OK"), "1": ("END", "OK")},
             "version 2 to replace version 1")
    assert ok(post(server, "/v1/models/tf1:predict", {"instances": xs})) == {
        "predictions": expected["tf1/2"]["y"]}
    assert "Unloading servable version {name: tf1 version: 1}" in server.log()


# ---- TF Serving's config files and bad model ----


def _config_from(template: Path, tmp_path: Path) -> Path:
    text = template.read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(HALF_PLUS_TWO))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(HALF_PLUS_THREE))
    path = tmp_path / template.name
    path.write_text(text)
    return path


def test_good_model_config_serves_both_models(serve, tmp_path):
    server = serve(config_file=_config_from(DATA / "good_model_config.txt", tmp_path))
    assert ok(post(server, "/v1/models/half_plus_two:predict", {"instances": [2.0]})) == {
        "predictions": [3.0]}
    assert ok(post(server, "/v1/models/half_plus_three:predict", {"instances": [2.0]})) == {
        "predictions": [4.0]}
    status = ok(requests.get(f"{server.url}/v1/models/half_plus_three", timeout=30))
    assert status["model_version_status"][0]["version"] == "123"
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def _run_to_exit(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    cmd = server_command(*args, **kwargs)
    return subprocess.run(cmd, capture_output=True, text=True, env=server_env(),
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_bad_model_config_is_refused_with_tf_servings_words(tmp_path):
    config = _config_from(DATA / "bad_model_config.txt", tmp_path)
    done = _run_to_exit(None, config_file=config)
    assert done.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in done.stderr
    assert str(config) in done.stderr


def test_bad_half_plus_two_does_not_load(tmp_path):
    done = _run_to_exit(DATA / "bad_half_plus_two", model_name="default")
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "Could not find SavedModel .pb or .pbtxt" in log
    assert "{name: default version: 123}" in log


def test_two_versions_metadata_equals_tf_servings(serve, tmp_path):
    name = "saved_model_half_plus_two_2_versions"
    config = tmp_path / "two.config"
    config.write_text(model_config([{"name": name, "base_path": TWO_VERSIONS,
                                     "versions": [123, 124], "labels": {"Version_Label": 123}}]))
    server = serve(config_file=config)
    meta = ok(requests.get(f"{server.url}/v1/models/{name}/versions/123/metadata", timeout=30))
    expected = json.loads((DATA / f"{name}_metadata.json").read_text())
    assert meta == expected
    # The REST handler test's predict/regress/classify answers, by version and by label.
    assert ok(post(server, f"/v1/models/{name}:predict",
                   {"instances": [[1.0, 2.0], [3.0, 4.0]]})) == {
        "predictions": [[2.5, 3.0], [3.5, 4.0]]}
    for path in ("/versions/123", "/labels/Version_Label"):
        got = ok(post(server, f"/v1/models/{name}{path}:predict", {"instances": [1.0, 2.0]}))
        assert got == {"predictions": [2.5, 3.0]}
        body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
        assert ok(post(server, f"/v1/models/{name}{path}:regress", body)) == {"results": [42]}
        body = {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}
        assert ok(post(server, f"/v1/models/{name}{path}:classify", body)) == {
            "results": [[["", 12]]]}


# ---- in-process: the loader choice and the session path against the TF2 path ----


def test_loader_kind():
    from tfserve_magic.server.models import loader_kind

    assert loader_kind(str(HALF_PLUS_TWO / "00000123")) == "tf2"
    assert loader_kind(str(HALF_PLUS_THREE / "00000123")) == "session"
    assert loader_kind(str(COUNTER / "00000123")) == "session"
    with pytest.raises(FileNotFoundError):
        loader_kind(str(DATA / "bad_half_plus_two" / "00000123"))
    with pytest.raises(LookupError, match="Could not find meta graph def"):
        loader_kind(str(HALF_PLUS_TWO / "00000123"), tags=("gpu",))


def test_session_path_answers_like_the_tf2_path():
    from tfserve_magic.server.models import Servable, _signature_specs, read_meta_graph
    from tfserve_magic.server.session_model import SessionModel

    path = str(HALF_PLUS_TWO / "00000123")
    tf2 = Servable("half", 123, path, ["serve"])
    assert tf2.loader == "tf2"
    session = SessionModel(path, ["serve"], read_meta_graph(path, ["serve"]), _signature_specs)
    try:
        assert set(session.signatures) == set(tf2.signatures)
        for name, sig in tf2.signatures.items():
            other = session.signatures[name]
            assert other.specs == sig.specs and other.output_names == sig.output_names
            assert other.method_name == sig.method_name
        x = np.array([[1.0], [2.0], [5.0]], np.float32)
        want = tf2.signature("").run({"x": x})
        got = session.signatures["serving_default"].run({"x": x})
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
        # A [3] input for a [None, 1] placeholder runs, as with TF Serving's session.
        flat = session.signatures["serving_default"].run({"x": x.ravel()})
        np.testing.assert_array_equal(flat["y"], want["y"].ravel())
    finally:
        session.close()


def test_loading_keras2_models_never_imports_keras(keras2_models):
    root, _ = keras2_models
    code = (
        "import sys\n"
        "from tfserve_magic.server import _no_keras\n"
        "_no_keras.install()\n"
        "from tfserve_magic.server.models import loader_kind\n"
        "kinds = [loader_kind(p) for p in sys.argv[1:]]\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('keras', 'tf_keras')\n"
        "       and getattr(sys.modules[m], '__file__', None)]\n"
        "print(kinds, bad)\n"
    )
    paths = [str(root / f"keras2_{o}_{s}" / "1") for o, s in KERAS2_VARIANTS]
    done = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True,
                          env=server_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    kinds, imported = done.stdout.strip().splitlines()[-1].rsplit("] [", 1)
    assert imported == "]", f"Keras modules were imported: {imported}"
    assert kinds.count("session") >= 2  # at least the legacy-optimizer exports


def test_both_loaders_fail_cleanly_on_a_broken_variables_file(tmp_path):
    from tfserve_magic.server.models import loader_kind

    broken = tmp_path / "1"
    shutil.copytree(HALF_PLUS_THREE / "00000123", broken)
    (broken / "variables" / "variables.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(Exception) as caught:
        loader_kind(str(broken))
    assert not isinstance(caught.value, AssertionError)
