"""The gRPC client (``Client(..., protocol="grpc")``), the manager's gRPC port and
``%%predict --grpc`` / ``--show grpc`` against real servers started by the process manager."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from IPython.core.error import UsageError

import tfserve_magic as tfm
from tfserve_magic.client import Client, GrpcClient, ServingError


@pytest.fixture(scope="module")
def half(server_test_models):
    handle = tfm.start("GHalf", server_test_models["half"], port=0, gpu="none", timeout=120)
    yield handle
    tfm.stop("GHalf")


@pytest.fixture(scope="module")
def digits(mlp_export):
    handle = tfm.start("GDigits", mlp_export, port=0, gpu="none", timeout=120)
    yield handle
    tfm.stop("GDigits")


def test_manager_serves_grpc_on_a_free_port_and_shows_it(half):
    assert half.grpc_port and half.grpc_target == f"127.0.0.1:{half.grpc_port}"
    assert f"and gRPC {half.grpc_target}" in half.summary()
    listed = [h for h in tfm.servers() if h.name == "GHalf"][0]
    assert listed.grpc_target == half.grpc_target
    table = repr(tfm.servers())
    assert "grpc" in table.splitlines()[0] and half.grpc_target in table
    assert ("grpc", half.grpc_target) in half._fields()


def test_client_by_name_handle_and_target(half):
    by_name = Client("GHalf", protocol="grpc")
    assert isinstance(by_name, GrpcClient) and by_name.model_name == "GHalf"
    assert by_name.target == half.grpc_target
    assert GrpcClient(half).target == half.grpc_target
    by_target = Client(f"grpc://{half.grpc_target}/GHalf", protocol="grpc")
    assert by_target.model_name == "GHalf"
    with pytest.raises(ValueError, match="protocol"):
        Client("GHalf", protocol="carrier-pigeon")
    with pytest.raises(LookupError, match="no running server or model named 'nope'"):
        Client("nope", protocol="grpc")


def test_predict_classify_regress_metadata_status(half):
    client = Client("GHalf", protocol="grpc")
    rest = Client("GHalf")
    x = [1.0, 2.0, 3.0]  # a list of Python floats: cast to the signature's float32
    grpc_result = client.predict(x)
    np.testing.assert_array_equal(grpc_result, rest.predict(x))
    assert grpc_result.outputs.dtype == np.float32 and grpc_result.latency_s > 0
    assert client.predict(x, version=2).tolist() == [3.5, 4.0, 4.5]
    assert client.predict(inputs={"x": np.array([2.0, 5.0], np.float32)},
                          signature_name="scalar").tolist() == 7.0
    examples = [{"x": 0.0}, {"x": [100.0]}]
    classified = client.classify(examples, signature_name="classify")
    assert classified["classes"].tolist() == [["neg", "pos"], ["neg", "pos"]]
    np.testing.assert_allclose(classified["scores"], rest.classify(
        examples, signature_name="classify")["scores"], rtol=1e-6)
    regressed = client.regress([{"x": 2.0}], signature_name="regress", label=None)
    assert regressed.tolist() == [4.0]
    meta = client.metadata()
    assert meta.version == 2 and meta == rest.metadata()
    assert client.status() == rest.status()
    assert client.status(version=2)[0]["state"] == "AVAILABLE"


def test_errors_are_serving_errors_with_the_servers_message(half):
    client = Client("GHalf", protocol="grpc")
    with pytest.raises(ServingError) as info:
        client.predict([1.0], version=9)
    assert info.value.code == "NOT_FOUND" and info.value.status_code == 404
    assert info.value.message == "Servable not found for request: Specific(GHalf, 9)"
    assert str(info.value).startswith(f"gRPC NOT_FOUND from grpc://{half.grpc_target}/GHalf: ")
    with pytest.raises(ServingError) as info:
        client.predict(inputs={"nope": np.zeros(1, np.float32)})
    assert info.value.message.startswith("Signature input alias: x(feed name: ")
    assert "x float32[-1]" in info.value.hint
    with pytest.raises(ServingError, match="No signature was found with the name: nope"):
        client.classify([{"x": 1.0}], signature_name="nope")
    dead = GrpcClient("127.0.0.1:1", model="m", timeout=2)
    with pytest.raises(ServingError, match="cannot connect to 127.0.0.1:1"):
        dead.status()


def test_client_module_does_not_import_tensorflow(half):
    code = (
        "import sys\n"
        "import tfserve_magic as tfm\n"
        "c = tfm.Client('GHalf', protocol='grpc')\n"
        "print(c.predict([2.0]).tolist())\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[4.0]"


def test_predict_magic_over_grpc(shell, digits, mnist, trained_mlp, capsys):
    shell.user_ns.update(x=mnist.x_test[:5], y=mnist.y_test[:5])
    try:
        result = shell.run_cell_magic("predict", "GDigits --grpc --labels y", "x")
        expected = trained_mlp.predict(mnist.x_test[:5], verbose=0)
        np.testing.assert_allclose(result.predictions, expected, rtol=1e-5, atol=1e-6)
        assert result.url.startswith("grpc://")
        with pytest.raises(UsageError, match="gRPC NOT_FOUND.*Specific\\(GDigits, 7\\)"):
            shell.run_cell_magic("predict", "GDigits --grpc --version 7", "x")
        with pytest.raises(UsageError, match="REST only"):
            shell.run_cell_magic("predict", "GDigits --grpc", '{"instances": [1]}')
    finally:
        for name in ("x", "y"):
            shell.user_ns.pop(name, None)


def test_show_grpc_prints_a_runnable_official_stub_snippet(shell, digits, mnist, capsys):
    shell.user_ns.update(x=mnist.x_test[:3])
    try:
        capsys.readouterr()
        result = shell.run_cell_magic("predict", "GDigits --show grpc --version 1", "x")
        code = capsys.readouterr().out
    finally:
        shell.user_ns.pop("x", None)
    assert "prediction_service_pb2_grpc.PredictionServiceStub" in code
    assert "request.model_spec.version.value = 1" in code and "np.load(" in code
    probe = code + "\nimport json\nprint(json.dumps({k: v.tolist() for k, v in outputs.items()}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()
    assert printed[0].startswith("1 {")  # the version that answered, then the outputs
    outputs = json.loads(printed[-1])
    (values,) = outputs.values()
    np.testing.assert_allclose(values, result.predictions, rtol=1e-5, atol=1e-6)
