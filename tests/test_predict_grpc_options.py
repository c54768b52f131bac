"""Every ``%%predict`` option with ``--grpc``, against one real server (process manager) that
serves the Multi test model (versions, labels, signatures, named inputs) and the tutorial MLP:
each option gives what it gives over REST, or a ``UsageError`` that says why not."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from IPython.core.error import UsageError

from tests.helpers.snippets import response_of as _response_of
from tests.helpers.snippets import run_snippet as _run_snippet
from tfserve_magic.predict_view import PredictionResult

MODELS = """model_config_list {{
  config {{ name: "Multi" base_path: "{multi}" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }} }}
  config {{ name: "GpDigits" base_path: "{mlp}" model_platform: "tensorflow" }}
}}
"""


@pytest.fixture(scope="module")
def both(mlp_export, tmp_path_factory):
    import tfserve_magic as tfm
    from tests.helpers.multi_model import build_multi_model

    folder = tmp_path_factory.mktemp("grpc-options")
    config = folder / "models.config"
    config.write_text(MODELS.format(multi=build_multi_model(folder / "Multi"), mlp=mlp_export))
    handle = tfm.start("GpBoth", config=config, port=0, gpu="none", timeout=120)
    assert handle.grpc_target
    yield handle
    tfm.stop("GpBoth")


@pytest.fixture
def ns(shell, mnist):
    shell.user_ns.update(x=mnist.x_test[:6], y=mnist.y_test[:6], np=np,
                         a=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), b=np.array([10, 20]))
    yield shell
    for name in ("x", "y", "a", "b", "res"):
        shell.user_ns.pop(name, None)


def _both_ways(shell, line, cell):
    """The result over REST and over gRPC."""
    return (shell.run_cell_magic("predict", line, cell),
            shell.run_cell_magic("predict", f"{line} --grpc", cell))


def test_versions_labels_signatures_columnar_and_named_inputs(ns, both):
    body = "np.array([1.5, -2.0], dtype=np.float32)"
    for option, factor in (("--label canary", 2), ("--label stable", 1), ("--version 2", 2)):
        rest, grpc = _both_ways(ns, f"Multi --signature scale {option}", body)
        assert grpc.url.startswith("grpc://") and rest.url.startswith("http://")
        assert grpc.predictions.tolist() == rest.predictions.tolist() == [1.5 * factor, -2.0 * factor]
    rest, grpc = _both_ways(ns, "Multi --signature scale --columnar --version 1", body)
    assert grpc.predictions.tolist() == rest.predictions.tolist() == [1.5, -2.0]
    rest, grpc = _both_ways(ns, "Multi --version 2", '{"a": a, "b": b}')
    assert grpc.predictions["sum"].tolist() == rest.predictions["sum"].tolist() == [16.0, 34.0]
    assert grpc.kind is None and grpc.task is None
    with pytest.raises(UsageError, match="version label: nope"):
        ns.run_cell_magic("predict", "Multi --grpc --signature scale --label nope", body)


def test_labels_top_and_output_variable(ns, both, mnist):
    rest, grpc = _both_ways(ns, "GpDigits --labels y --top 2 -o res", "x")
    assert ns.user_ns["res"] is grpc and isinstance(grpc, PredictionResult)
    np.testing.assert_allclose(grpc.predictions, rest.predictions, rtol=1e-5, atol=1e-6)
    assert grpc.task == rest.task == "multiclass" and grpc.kind == "probabilities"
    assert grpc.predicted_classes.tolist() == rest.predicted_classes.tolist()
    assert grpc.top_classes.shape == (6, 2) and grpc.accuracy == rest.accuracy
    assert grpc.mismatches == rest.mismatches
    with pytest.raises(UsageError, match="--top K needs K >= 1"):
        ns.run_cell_magic("predict", "GpDigits --grpc --top 0", "x")


@pytest.mark.parametrize("kind", ["curl", "python", "node"])
def test_show_rest_code_over_grpc_is_the_rest_equivalent(kind, ns, both, capsys):
    if shutil.which({"curl": "curl", "python": sys.executable, "node": "node"}[kind]) is None:
        pytest.skip(f"{kind} is not installed")
    capsys.readouterr()
    result = ns.run_cell_magic(
        "predict", f"Multi --grpc --signature scale --label canary --show {kind}", "[1.5, -2.0]")
    code = capsys.readouterr().out
    assert result.url.startswith("grpc://")
    assert "REST request equivalent to the gRPC request" in code
    assert f"{both.url}/v1/models/Multi/labels/canary:predict" in code
    assert _response_of(kind, _run_snippet(kind, code)) == {"predictions": [3.0, -4.0]}
    assert result.predictions.tolist() == [3.0, -4.0]


def test_show_grpc_and_what_cannot_be_shown(ns, both, capsys):
    capsys.readouterr()
    ns.run_cell_magic("predict", "Multi --grpc --signature scale --version 2 --show grpc", "[1.0]")
    code = capsys.readouterr().out
    assert "request.model_spec.version.value = 2" in code and both.grpc_target in code
    # a bare gRPC address has no REST address to write curl for: said before anything is sent
    target = f"grpc://{both.grpc_target}/Multi"
    with pytest.raises(UsageError, match="REST address of .* is unknown"):
        ns.run_cell_magic("predict", f"{target} --grpc --signature scale --show curl", "[1.0]")
    assert capsys.readouterr().out == ""
    plain = ns.run_cell_magic("predict", f"{target} --grpc --signature scale", "[1.0]")
    assert plain.predictions.tolist() == [2.0]
    # the gRPC request cannot name one array's input among two: a UsageError, not a traceback
    with pytest.raises(UsageError, match=r"the signature takes named inputs a float32\[-1,2\], b int64\[-1\]"):
        ns.run_cell_magic("predict", "Multi --show grpc", "[[1.0, 2.0]]")
    with pytest.raises(UsageError, match="REST only"):
        ns.run_cell_magic("predict", "Multi --grpc --show curl", '{"instances": [1.0]}')
    with pytest.raises(UsageError, match="is a REST URL: gRPC needs the server or model name"):
        ns.run_cell_magic("predict", f"{both.url}/v1/models/Multi --grpc", "[1.0]")
