"""tfserve_magic.Client: JSON codec and resolution, then against the real server.

The server tests start ``python -m tfserve_magic serve`` (the ``serve`` fixture) on the tutorial
MLP and on small tf.Module models built here: two named inputs with two outputs, an extra
signature, two versions with labels (config file), and classify/regress signatures.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.helpers.multi_model import CONFIG, build_multi_model
from tfserve_magic.client import (
    Client,
    ModelMetadata,
    Prediction,
    ServingError,
    decode_json,
    encode_json,
    to_array,
)

# --------------------------------------------------------------------------- pure: codec


def test_encode_numpy_and_nonfinite_tokens():
    body = {"instances": np.array([[1.5, np.nan], [np.inf, -np.inf]], dtype=np.float32)}
    data = encode_json(body)
    assert data == b'{"instances":[[1.5,NaN],[Infinity,-Infinity]]}'
    # python floats too, and a real None stays null
    assert encode_json([float("nan"), None, 2]) == b"[NaN,null,2]"
    # the sentinels that mark NaN/Inf inside arrays are never values the array holds
    top = np.finfo(np.float32).max
    tricky = np.array([top, -top / 2, np.nan, top / 4, np.inf, 0.5], dtype=np.float32)
    back = json.loads(encode_json({"x": tricky, "s": np.float64("-inf")}))
    assert np.array_equal(np.asarray(back["x"], dtype=np.float32), tricky, equal_nan=True)
    assert back["s"] == -math.inf


def test_encode_finite_float32_is_shortest_repr_and_exact():
    values = np.array([0.1, 1 / 3, 1e-8, 123456.78], dtype=np.float32)
    decoded = json.loads(encode_json({"x": values}))["x"]
    assert np.array_equal(np.asarray(decoded, dtype=np.float32), values)
    assert decoded[0] == 0.1


def test_encode_bytes_as_b64_and_odd_arrays():
    strided = np.arange(12).reshape(3, 4)[:, ::2]  # not C-contiguous
    body = {
        "instances": [b"\x00ab", np.array([b"xy"], dtype=object), np.array(["s"])],
        "z": strided,
        "scalar": np.float32(2.5),
        "flag": np.bool_(True),
    }
    decoded = json.loads(encode_json(body))
    assert decoded["instances"] == [{"b64": "AGFi"}, [{"b64": "eHk="}], ["s"]]
    assert decoded["z"] == strided.tolist()
    assert decoded["scalar"] == 2.5 and decoded["flag"] is True


def test_encode_rejects_unknown_objects():
    with pytest.raises(TypeError, match="cannot send a value of type object"):
        encode_json({"x": object()})


def test_decode_bare_nonfinite_tokens():
    parsed = decode_json(b'{"predictions": [NaN, Infinity, -Infinity, 1.0]}')
    values = parsed["predictions"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf


def test_to_array_b64_and_dtypes():
    decoded = to_array([[{"b64": "AGFi"}], [{"b64": "eA=="}]])
    assert decoded.dtype == object and decoded.shape == (2, 1)
    assert decoded[0, 0] == b"\x00ab" and decoded[1, 0] == b"x"
    assert to_array([[1.0, 2.0]], "float32").dtype == np.float32
    assert to_array([1, 2], "int64").dtype == np.int64
    assert to_array(["a", "b"], "string").tolist() == ["a", "b"]
    ragged = to_array([[1], [1, 2]])
    assert ragged.dtype == object and len(ragged) == 2


# --------------------------------------------------------------------------- pure: objects


def test_prediction_behaves_like_its_array():
    outputs = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    p = Prediction(outputs, latency_s=0.002)
    assert p.shape == (2, 2) and p.dtype == np.float32
    assert p.argmax(1).tolist() == [1, 0]
    assert np.argmax(p, axis=1).tolist() == [1, 0]
    assert (p == outputs).all() and (p * 2)[0, 1] == pytest.approx(1.8)
    assert np.asarray(p) is outputs
    assert p[1, 0] == pytest.approx(0.8) and len(p) == 2
    assert "2.0 ms" in repr(p)


def test_prediction_with_several_outputs_is_a_dict():
    p = Prediction({"a": np.zeros(2), "b": np.ones((2, 3))}, latency_s=0.01)
    assert list(p.keys()) == ["a", "b"] and p["b"].shape == (2, 3)
    with pytest.raises(TypeError, match=r"several outputs \(a, b\)"):
        np.asarray(p)


def test_serving_error_text():
    err = ServingError(400, "bad input", hint="signature expects x", url="http://h/v1/models/M")
    assert err.status_code == 400 and err.message == "bad input"
    assert str(err) == "HTTP 400 from http://h/v1/models/M: bad input\nsignature expects x"
    assert str(ServingError(None, "cannot connect")) == "Request failed: cannot connect"


METADATA = {
    "model_spec": {"name": "MLP", "signature_name": "", "version": "3"},
    "metadata": {
        "signature_def": {
            "signature_def": {
                "serving_default": {
                    "inputs": {
                        "images": {
                            "dtype": "DT_FLOAT",
                            "tensor_shape": {
                                "dim": [{"size": "-1", "name": ""}, {"size": "784", "name": ""}],
                                "unknown_rank": False,
                            },
                            "name": "serving_default_images:0",
                        }
                    },
                    "outputs": {
                        "probs": {
                            "dtype": "DT_FLOAT",
                            "tensor_shape": {"dim": [], "unknown_rank": True},
                            "name": "StatefulPartitionedCall:0",
                        }
                    },
                    "method_name": "tensorflow/serving/predict",
                },
                "__saved_model_init_op": {"inputs": {}, "outputs": {}, "method_name": ""},
            }
        }
    },
}


def test_model_metadata_parsing():
    meta = ModelMetadata(METADATA)
    assert list(meta) == ["serving_default"] and meta.version == 3
    assert meta["serving_default"]["inputs"] == {"images": ("float32", (None, 784))}
    assert meta["serving_default"]["outputs"] == {"probs": ("float32", None)}
    assert meta.describe() == (
        "signature 'serving_default' expects inputs: images float32[-1,784]; "
        "outputs: probs float32[?]"
    )


def test_client_url_forms():
    c = Client("http://127.0.0.1:9/v1/models/MLP")
    assert (c.base_url, c.model_name, c.url) == (
        "http://127.0.0.1:9",
        "MLP",
        "http://127.0.0.1:9/v1/models/MLP",
    )
    c = Client("http://127.0.0.1:9/", model="M")
    assert c.url == "http://127.0.0.1:9/v1/models/M"
    c = Client("localhost:9/v1/models/M/versions/2")
    assert c.model_url() == "http://localhost:9/v1/models/M/versions/2"
    assert c.model_url(label="x") == "http://localhost:9/v1/models/M/labels/x"
    with pytest.raises(ValueError, match="names no model"):
        Client("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="cannot read"):
        Client("http://127.0.0.1:9/v2/whatever")
    with pytest.raises(ValueError, match="not both"):
        c.model_url(version=1, label="x")


def test_unknown_name_lists_running_servers():
    # conftest points the manager at an empty per-test registry, so nothing runs here
    with pytest.raises(LookupError, match=r"no running server or model named 'Nope'.*start"):
        Client("Nope")


def test_argument_errors_before_any_request():
    c = Client("http://127.0.0.1:9/v1/models/M")
    with pytest.raises(ValueError, match="exactly one of"):
        c.predict()
    with pytest.raises(ValueError, match="exactly one of"):
        c.predict([1.0], inputs=[1.0])
    with pytest.raises(ValueError, match="batch dimension"):
        c.predict(np.float32(1.0))
    with pytest.raises(ValueError, match="empty"):
        c.predict([])
    with pytest.raises(ValueError, match="different batch sizes"):
        c.predict({"a": np.zeros(3), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="chunk_size"):
        Client("http://127.0.0.1:9/v1/models/M", chunk_size=-1)


def test_build_predict_body_named_rows():
    body = Client.build_predict_body(
        {"a": np.array([[1.0, 2.0], [3.0, 4.0]]), "b": [5, 6]}, signature_name="two"
    )
    assert json.loads(encode_json(body)) == {
        "signature_name": "two",
        "instances": [{"a": [1.0, 2.0], "b": 5}, {"a": [3.0, 4.0], "b": 6}],
    }


def test_unreachable_server_is_a_serving_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Client(f"http://127.0.0.1:{port}/v1/models/M", timeout=2)
    with pytest.raises(ServingError, match="cannot connect") as info:
        c.predict([[1.0]])
    assert info.value.status_code is None


def test_silent_server_times_out():
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        c = Client(f"http://127.0.0.1:{silent.getsockname()[1]}/v1/models/M", timeout=0.3)
        with pytest.raises(ServingError, match="no answer within 0.3 s") as info:
            c.predict([[1.0]])
    assert info.value.status_code is None


# --------------------------------------------------------------------------- real server

@pytest.fixture(scope="module")
def multi_server(tmp_path_factory):
    """The Multi model's versions 1 and 2 with labels, served from a model config file."""
    from tests.fixtures.server import start_server

    folder = tmp_path_factory.mktemp("multi")
    base = build_multi_model(folder / "Multi")
    config = folder / "models.config"
    config.write_text(CONFIG.format(base=base))
    server = start_server(config_file=str(config), workdir=folder)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlp(mlp_server):
    with Client(mlp_server.url, model="MLP", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def multi(multi_server):
    with Client(f"{multi_server.url}/v1/models/Multi", timeout=60) as client:
        yield client


def test_row_and_columnar_match_the_model(mlp, mnist, trained_mlp):
    x = mnist.x_test[:6]
    expected = trained_mlp.predict(x, verbose=0)
    row = mlp.predict(x)
    assert isinstance(row, Prediction) and row.row and row.n_requests == 1
    assert row.dtype == np.float32 and row.shape == (6, 10)
    np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    assert row.latency_s > 0 and row.raw["predictions"][0] == pytest.approx(expected[0], abs=1e-6)
    columnar = mlp.predict(inputs=x)
    assert not columnar.row and "outputs" in columnar.raw
    np.testing.assert_array_equal(columnar, row)
    # lists work as well as arrays
    np.testing.assert_array_equal(mlp.predict(x.tolist()), row)


def test_chunking_splits_and_concatenates(mlp, mnist):
    x = mnist.x_test[:23]
    whole = mlp.predict(x)
    chunked = mlp.predict(x, chunk_size=10)
    assert chunked.n_requests == 3 and len(chunked.raw) == 3
    assert [len(r["predictions"]) for r in chunked.raw] == [10, 10, 3]
    # batch size changes TF's kernels, so allow float32 rounding
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)
    assert chunked.request_body["instances"] is x  # the whole batch, for --show
    small_default = Client(mlp.url, chunk_size=7)
    assert small_default.predict(x).n_requests == 4
    # the default chunk size (1000) splits an evaluation-sized batch
    many = mnist.x_train[:1200]
    evaluated = mlp.predict(many)
    assert evaluated.n_requests == 2 and evaluated.shape == (1200, 10)
    np.testing.assert_allclose(evaluated[1000:1005], mlp.predict(many[1000:1005]), rtol=1e-5)


def test_nonfinite_values_round_trip(mlp, mnist):
    x = mnist.x_test[:2].copy()
    x[0, 0, 0, 0] = np.nan
    result = mlp.predict(x)
    assert np.isnan(result[0]).all() and np.isfinite(result[1]).all()


def test_status_and_metadata(mlp, multi):
    assert [(s["version"], s["state"]) for s in mlp.status()] == [("1", "AVAILABLE")]
    meta = mlp.metadata()
    assert meta.version == 1 and list(meta) == ["serving_default"]
    assert meta["serving_default"]["inputs"] == {"inputs": ("float32", (None, 28, 28, 1))}
    assert meta["serving_default"]["outputs"] == {"output_0": ("float32", (None, 10))}
    multi_meta = multi.metadata(label="stable")
    assert multi_meta.version == 1
    assert set(multi_meta) == {"serving_default", "scale", "regress", "classify"}
    assert multi_meta["serving_default"]["inputs"] == {
        "a": ("float32", (None, 2)),
        "b": ("int64", (None,)),
    }
    assert multi.metadata(version=2).version == 2


def test_named_inputs_several_outputs_versions_and_labels(multi):
    a = np.array([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]], dtype=np.float32)
    b = np.array([10, 20, 30])
    latest = multi.predict({"a": a, "b": b})
    assert set(latest.keys()) == {"sum", "scaled"} and latest["sum"].dtype == np.float32
    np.testing.assert_allclose(latest["sum"], 2 * a.sum(1) + b)
    np.testing.assert_allclose(latest["scaled"], 2 * a)
    as_objects = multi.predict([{"a": a[i], "b": int(b[i])} for i in range(3)], version=1)
    np.testing.assert_allclose(as_objects["sum"], a.sum(1) + b)
    columnar = multi.predict(inputs={"a": a, "b": b}, label="stable")
    np.testing.assert_allclose(columnar["sum"], a.sum(1) + b)
    chunked = multi.predict({"a": a, "b": b}, label="canary", chunk_size=2)
    assert chunked.n_requests == 2
    np.testing.assert_allclose(chunked["sum"], latest["sum"])


def test_signature_selection(multi):
    x = np.array([1.0, -2.0], dtype=np.float32)
    np.testing.assert_allclose(multi.predict(x, signature_name="scale", version=1), x)
    canary = multi.predict(inputs=x, signature_name="scale", label="canary")
    np.testing.assert_allclose(canary, 2 * x)
    pinned = Client(multi.url + "/versions/1")
    np.testing.assert_allclose(pinned.predict(x, signature_name="scale"), x)


def test_classify_and_regress(multi):
    examples = [{"x": 0.25}, {"x": 0.75}]
    regressed = multi.regress(examples, signature_name="regress", version=2)
    assert regressed.dtype == np.float32
    np.testing.assert_allclose(regressed, [0.5, 1.5])
    classified = multi.classify(examples, signature_name="classify")
    assert classified["classes"].tolist() == [["yes", "no"], ["yes", "no"]]
    np.testing.assert_allclose(classified["scores"], [[0.25, 0.75], [0.75, 0.25]])


def test_dtype_error_has_the_signature_hint(mlp):
    with pytest.raises(ServingError) as info:
        mlp.predict([[["a"]]])
    err = info.value
    assert err.status_code == 400 and "is not of expected type: float" in err.message
    assert err.hint.splitlines() == [
        "signature 'serving_default' expects inputs: inputs float32[-1,28,28,1]; "
        "outputs: output_0 float32[-1,10]",
        "sent: instances list[1,1,1] of str",
    ]
    assert str(err).startswith("HTTP 400 from http://127.0.0.1:") and err.hint in str(err)


def test_shape_error_has_the_signature_hint(mlp, mnist):
    with pytest.raises(ServingError) as info:
        mlp.predict(mnist.x_test[:2, :27])  # 27 rows: Flatten gives 756 values, not 784
    assert info.value.status_code == 400
    assert "expects inputs: inputs float32[-1,28,28,1]" in info.value.hint
    assert "sent: instances float32[2,27,28,1]" in info.value.hint


def test_named_input_errors_list_the_expected_names(multi):
    with pytest.raises(ServingError) as info:
        multi.predict({"a": np.zeros((1, 2)), "c": [1]})
    assert info.value.status_code == 400
    assert "expects inputs: a float32[-1,2], b int64[-1]" in info.value.hint
    assert "sent: instances of named inputs a float64[1,2], c list[1] of int" in info.value.hint
    with pytest.raises(ServingError, match="expects inputs: a float32"):
        multi.predict([1.0, 2.0])  # a plain list for two inputs


def test_unknown_signature_version_label_and_model(mlp, multi, mlp_server):
    with pytest.raises(ServingError) as info:
        mlp.predict([[0.0]], signature_name="nope")
    assert info.value.status_code == 400
    assert info.value.hint == "available signatures: serving_default"
    with pytest.raises(ServingError) as info:
        mlp.predict(np.zeros((1, 28, 28, 1)), version=7)
    assert info.value.status_code == 404 and info.value.hint == "versions of MLP: 1 (AVAILABLE)"
    with pytest.raises(ServingError) as info:
        multi.predict(np.zeros(1), signature_name="scale", label="nope")
    assert info.value.status_code == 400
    assert "version_labels" in info.value.hint and "2 (AVAILABLE), 1 (AVAILABLE)" in info.value.hint
    with pytest.raises(ServingError) as info:
        Client(mlp_server.url, model="Nope").predict([[0.0]])
    assert info.value.status_code == 404 and "no model named 'Nope'" in info.value.hint
