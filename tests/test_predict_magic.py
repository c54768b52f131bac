"""``%%predict`` / ``%predict`` and their view: line parsing, errors, then the real server.

The server tests drive the magic through a real InteractiveShell against
``python -m tfserve_magic serve`` on the tutorial MLP, and run the printed curl, Python and
Node.js snippets as subprocesses to prove they work.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys

import numpy as np
import pytest
from IPython.core.error import UsageError

from tests.helpers.snippets import response_of, run_snippet
from tfserve_magic.client import Prediction
from tfserve_magic.predict_magic import split_line
from tfserve_magic.predict_view import PredictionResult, request_snippet


def _dead_url(model: str = "M") -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/models/{model}"


# --------------------------------------------------------------------------- pure: line parsing


@pytest.mark.parametrize(
    "line, argv, expression",
    [
        ("MLP", ["MLP"], ""),
        ("MLP x_test[:5]", ["MLP"], "x_test[:5]"),
        ("MLP --top 2 np.zeros((1, 9)) -o r", ["MLP", "--top", "2", "-o", "r"], "np.zeros((1, 9))"),
        ("MLP --labels y[:5] x[:5] * 2", ["MLP", "--labels", "y[:5]"], "x[:5] * 2"),
        ("--version=3 M {'a': [1, 2]}", ["M", "--version=3"], "{'a': [1, 2]}"),
        ("M --label 'stable' --show=curl", ["M", "--label", "stable", "--show=curl"], ""),
        ('M {"instances": [1.0, 2.0]}', ["M"], '{"instances": [1.0, 2.0]}'),
        ("M -x", ["M"], "-x"),
        ("M --columnar --bogus 1", ["M", "--columnar", "--bogus"], "1"),
    ],
)
def test_split_line(line, argv, expression):
    assert split_line(line) == (argv, expression)


def test_split_line_rejects_options_inside_the_expression():
    with pytest.raises(UsageError, match="before or after"):
        split_line("M x --top 3 + 1")


# --------------------------------------------------------------------------- pure: the view


def test_view_classifier_with_labels():
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    result = PredictionResult(
        Prediction(probs, latency_s=0.004, url="http://h/v1/models/MLP"),
        labels=np.array([1, 2, 2]),
        top_k=2,
        max_rows=10,
    )
    assert result.kind == "probabilities"
    assert result.predicted_classes.tolist() == [1, 0, 2]
    assert result.probabilities.tolist() == pytest.approx([0.7, 0.6, 0.6])
    assert result.top_classes.tolist() == [[1, 2], [0, 1], [2, 0]]
    assert result.accuracy == pytest.approx(2 / 3) and result.mismatches == [1]
    text = repr(result)
    assert text.splitlines()[0] == "MLP: 3 instances | 1 request, 4.0 ms | accuracy 66.7% (2/3)"
    assert "MISMATCH" in text.splitlines()[4] and "1 (0.700), 2 (0.200)" in text
    page = result._repr_html_()
    assert page.count("background-color:#fdd") == 1 and "accuracy 66.7%" in page


def test_view_one_hot_labels_logits_and_hidden_mismatches():
    logits = np.array([[2.0, -1.0]] * 30, dtype=np.float32)
    labels = np.tile([[1, 0]], (30, 1))
    labels[25] = [0, 1]
    result = PredictionResult(Prediction(logits, latency_s=0.01), labels=labels, max_rows=5)
    assert result.kind == "scores" and result.mismatches == [25]
    text = repr(result)
    assert "score" in text.splitlines()[1] and "25 more instances not shown" in text
    assert "mismatches further down: 25" in text


def test_view_labels_must_match_the_batch():
    with pytest.raises(ValueError, match="2 labels for 3 predictions"):
        PredictionResult(Prediction(np.zeros((3, 4)), latency_s=0.0), labels=[1, 2])


def test_view_values_and_several_outputs():
    result = PredictionResult(
        Prediction({"sum": np.array([1.5, 2.5]), "twice": np.ones((2, 40))}, latency_s=0.0)
    )
    assert result.kind is None and result.accuracy is None
    lines = repr(result).splitlines()
    assert lines[1].split() == ["#", "sum", "twice"] and "..." in lines[3]
    scalar = PredictionResult(Prediction(np.float32(6.0), latency_s=0.0, row=False))
    assert scalar.n == 1 and "6.0" in repr(scalar)


def test_view_integer_class_outputs_and_binary_sigmoid():
    classes = PredictionResult(Prediction(np.array([3, 1]), latency_s=0.0), labels=[3, 2])
    assert classes.kind == "classes" and classes.accuracy == 0.5
    sigmoid = np.array([[0.9], [0.2], [0.4]], dtype=np.float32)
    binary = PredictionResult(Prediction(sigmoid, latency_s=0.0), labels=[1, 0, 1])
    assert binary.predicted_classes.tolist() == [1, 0, 0]
    assert binary.probabilities.tolist() == pytest.approx([0.9, 0.8, 0.6])
    # without binary labels, one unit is a plain value (a regression, perhaps)
    assert PredictionResult(Prediction(sigmoid, latency_s=0.0)).kind is None


def test_view_summary_fits_each_kind():
    p = np.array([[0.55], [0.2], [0.9], [0.65]], dtype=np.float32)
    binary = PredictionResult(Prediction(p, latency_s=0.0), labels=[1, 0, 1, 0],
                              class_names=["neg", "pos"], threshold=0.6)
    assert binary.predicted_classes.tolist() == ["neg", "neg", "pos", "pos"]  # at 0.6
    assert binary.probabilities.tolist() == pytest.approx([0.45, 0.8, 0.9, 0.65])
    assert binary.accuracy == 0.5 and binary.mismatches == [0, 3]
    text = repr(binary)
    assert "read as binary: one number per instance within 0..1" in text
    assert "at threshold 0.6 | positive pos: precision 0.500, recall 0.500" in text
    assert text.splitlines()[3].split()[-2:] == ["pos", "MISMATCH"]  # true class by name
    assert binary.metrics(threshold=0.5).precision_at == pytest.approx(2 / 3)
    scores = np.array([[0.9, 0.1, 0.7], [0.2, 0.6, 0.1]], dtype=np.float32)
    multi = PredictionResult(Prediction(scores, latency_s=0.0), labels=[[1, 0, 1], [0, 0, 0]],
                             class_names=["x", "y", "z"])
    assert multi.task == "multilabel" and multi.mismatches == [1]
    rows = repr(multi).splitlines()
    assert rows[1].split()[:3] == ["#", "predicted", "labels"] and "x, z" in rows[3]
    assert "exact match 50.0%" in repr(multi)
    values = PredictionResult(Prediction(np.array([1.0, 5.0]), latency_s=0.0),
                              labels=[1.5, 2.0], inputs=["first", "second"])
    assert values.evaluation.mae == pytest.approx(1.75)
    assert "MAE 1.75, RMSE 2.151, R² -73 (n=2)" in repr(values) and "1  5          2     3        second" \
        in repr(values)
    with pytest.raises(ValueError, match="no labels"):
        PredictionResult(Prediction(np.array([1.0]), latency_s=0.0)).metrics()


def test_snippet_inline_quotes_and_kinds():
    url = "http://127.0.0.1:1/v1/models/M:predict"
    curl = request_snippet("curl", url, {"instances": [["it's"]]})
    assert curl.body_path is None
    assert "--data-binary '{\"instances\":[[\"it'\\''s\"]]}'" in curl.code
    python = request_snippet("python", url, b'{"instances": [1.0]}\n')
    assert "body = '{\"instances\": [1.0]}\\n'" in python.code
    node = request_snippet("node", url, '{"a": "\u2028"}')
    assert 'const body = "{\\"a\\": \\"\\u2028\\"}";' in node.code
    with pytest.raises(ValueError, match="unknown snippet kind"):
        request_snippet("ruby", url, b"{}")


def test_snippet_large_body_goes_to_a_file(tmp_path):
    body = {"instances": np.zeros((20, 28, 28), dtype=np.float32)}
    snippet = request_snippet("curl", "http://h:1/v1/models/M:predict", body, body_dir=tmp_path)
    assert snippet.body_path.parent == tmp_path
    assert snippet.body_path.read_bytes().startswith(b'{"instances":[[[0.0,0.0')
    assert f"--data-binary '@{snippet.body_path}'" in snippet.code
    assert "abridged" in snippet.code and "(18 more)" in snippet.code
    assert len(snippet.code) < 1500


# --------------------------------------------------------------------------- magic errors


def test_help_and_usage_errors(shell, capsys):
    assert shell.run_line_magic("predict", "--help") is None
    assert "--columnar" in capsys.readouterr().out
    with pytest.raises(UsageError, match="needs an expression"):
        shell.run_line_magic("predict", _dead_url())
    with pytest.raises(UsageError, match="no running server or model named 'Nope'"):
        shell.run_line_magic("predict", "Nope [1.0]")
    with pytest.raises(UsageError, match="unrecognized arguments: --bogus"):
        shell.run_line_magic("predict", "M --bogus [1.0]")
    with pytest.raises(UsageError, match="not allowed with argument"):
        shell.run_cell_magic("predict", "M --version 1 --label a", "[1.0]")
    with pytest.raises(UsageError, match="-o needs a variable name"):
        shell.run_cell_magic("predict", f"{_dead_url()} -o 1x", "[1.0]")
    with pytest.raises(UsageError, match="line takes NAME and options only"):
        shell.run_cell_magic("predict", f"{_dead_url()} [2.0]", "[1.0]")


def test_body_errors_are_usage_errors(shell):
    url = _dead_url()
    with pytest.raises(UsageError, match="cannot evaluate the request 'no_such_variable"):
        shell.run_cell_magic("predict", url, "no_such_variable[:3]\n")
    with pytest.raises(UsageError, match="neither JSON .* nor a Python expression"):
        shell.run_cell_magic("predict", url, '{"instances": [1.0,]]}')
    with pytest.raises(UsageError, match="put \"signature_name\""):
        shell.run_cell_magic("predict", f"{url} --signature s", '{"instances": [1.0]}')
    with pytest.raises(UsageError, match="batch dimension"):
        shell.run_cell_magic("predict", url, "3.0")
    with pytest.raises(UsageError, match="cannot evaluate labels"):
        shell.run_cell_magic("predict", f"{url} --labels nope", "[1.0]")


def test_no_variable_expansion_and_unreachable_server(shell, capsys):
    shell.user_ns["x"] = "EXPANDED"
    url = _dead_url()
    body = '{"instances": ["{x}", "$x"]}'
    with pytest.raises(UsageError, match="cannot connect"):
        shell.run_cell_magic("predict", f"{url} --show curl", body)
    printed = capsys.readouterr().out
    assert "--data-binary '" + body + "'" in printed
    with pytest.raises(UsageError, match="cannot connect"):
        shell.run_line_magic("predict", f"{url} --show python " + body)
    assert repr(body) in capsys.readouterr().out
    # through run_cell, as a notebook sends it: IPython would expand {x} and $x in the line
    for line in (f"%predict {url} --show curl ['{{x}}', '$x']", f"%%predict {url} -o {{x}}\n[1]"):
        result = shell.run_cell(line)
        assert isinstance(result.error_in_exec, UsageError)
    out = capsys.readouterr().out
    assert '{"instances":["{x}","$x"]}' in out and "EXPANDED" not in out
    assert "-o needs a variable name, got '{x}'" in str(result.error_in_exec)


# --------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def digits(mlp_export):
    """The tutorial MLP started by the process manager as "Digits" (resolved by name)."""
    import tfserve_magic as tfm

    handle = tfm.start("Digits", mlp_export, port=0, gpu="none", timeout=120)
    yield handle
    tfm.stop("Digits")


@pytest.fixture(scope="module")
def multi_named(tmp_path_factory):
    """The Multi model (versions 1, 2; labels stable, canary) on a server named "Several"."""
    import tfserve_magic as tfm
    from tests.helpers.multi_model import CONFIG, build_multi_model

    folder = tmp_path_factory.mktemp("multi-magic")
    base = build_multi_model(folder / "Multi")
    config = folder / "models.config"
    config.write_text(CONFIG.format(base=base))
    handle = tfm.start("Several", config=config, port=0, gpu="none", timeout=120)
    yield handle
    tfm.stop("Several")


@pytest.fixture
def ns(shell, mnist):
    shell.user_ns.update(x=mnist.x_test[:12], y=mnist.y_test[:12], np=np)
    yield shell
    for name in ("x", "y", "res", "a", "b"):
        shell.user_ns.pop(name, None)


def _magics(shell):
    from tfserve_magic.magics import _loaded

    return _loaded[id(shell)]


def test_cell_with_labels_accuracy_and_output_variable(ns, digits, trained_mlp, mnist):
    result = ns.run_cell_magic("predict", "Digits --labels y --top 2 -o res", "x\n")
    expected = trained_mlp.predict(mnist.x_test[:12], verbose=0)
    assert isinstance(result, PredictionResult) and ns.user_ns["res"] is result
    np.testing.assert_allclose(result.predictions, expected, rtol=1e-5, atol=1e-6)
    assert result.predicted_classes.tolist() == expected.argmax(1).tolist()
    right = expected.argmax(1) == mnist.y_test[:12]
    assert result.accuracy == pytest.approx(right.mean())
    assert result.mismatches == np.flatnonzero(~right).tolist()
    assert result.n == 12 and result.top_classes.shape == (12, 2)
    assert result.url == digits.client.url
    assert f"accuracy {right.mean():.1%}" in repr(result)
    assert result._repr_html_().count("background-color:#fdd") == len(result.mismatches)
    # as a notebook runs it: the result is the cell's value, so `_` holds it
    ns.run_cell("%%predict Digits\nx[:2]\n")
    assert isinstance(ns.user_ns["_"], PredictionResult) and ns.user_ns["_"].n == 2


def test_line_form_columnar_and_dict_bodies(ns, digits):
    row = ns.run_line_magic("predict", "Digits x[:3]")
    columnar = ns.run_line_magic("predict", "Digits --columnar x[:3]")
    assert row.prediction.row and not columnar.prediction.row
    np.testing.assert_array_equal(columnar.predictions, row.predictions)
    as_body = ns.run_cell_magic("predict", "Digits", '{"instances": x[:3]}')
    np.testing.assert_array_equal(as_body.predictions, row.predictions)
    columnar_body = ns.run_cell_magic(
        "predict", "Digits", '{"inputs": x[:3], "signature_name": "serving_default"}'
    )
    assert not columnar_body.prediction.row
    np.testing.assert_array_equal(columnar_body.predictions, row.predictions)


def test_json_body_is_sent_as_typed(ns, digits, mnist):
    images = json.dumps(mnist.x_test[:2].tolist())
    body = '{\n  "signature_name": "serving_default",\n  "instances": ' + images + "\n}\n"
    result = ns.run_cell_magic("predict", "Digits --labels y[:2]", body)
    assert result.request_body == body.encode()
    expected = ns.run_line_magic("predict", "Digits x[:2]")
    np.testing.assert_allclose(result.predictions, expected.predictions, rtol=1e-6)
    assert result.accuracy is not None
    columnar = ns.run_cell_magic("predict", "Digits", '{"inputs": ' + images + "}")
    assert not columnar.prediction.row and columnar.predictions.shape == (2, 10)


def test_chunk_size_and_timeout_come_from_the_config(ns, digits):
    magics = _magics(ns)
    magics.chunk_size = 5
    result = ns.run_cell_magic("predict", "Digits --labels y", "x")
    assert result.n_requests == 3 and result.n == 12
    assert [len(r["predictions"]) for r in result.prediction.raw] == [5, 5, 2]
    # a socket that accepts connections but never answers: the request times out
    magics.request_timeout = 0.3
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/models/M"
        with pytest.raises(UsageError, match="no answer within 0.3 s"):
            ns.run_cell_magic("predict", url, "x")


def test_server_errors_are_usage_errors_with_hints(ns, digits, capsys):
    with pytest.raises(UsageError, match="input 'inputs' takes float32 numbers, got strings"):
        ns.run_line_magic("predict", 'Digits [[["a"]]]')
    with pytest.raises(UsageError) as info:
        ns.run_line_magic("predict", "Digits [[1.0, 2.0]]")
    message = str(info.value)
    assert message.startswith("HTTP 400 from http://127.0.0.1:")
    assert "expects inputs: inputs float32[-1,28,28,1]" in message
    with pytest.raises(UsageError, match="available signatures: serving_default"):
        ns.run_cell_magic("predict", "Digits", '{"signature_name": "nope", "instances": [1]}')
    with pytest.raises(UsageError, match=r"HTTP 404.*\nversions of Digits: 1 \(AVAILABLE\)"):
        ns.run_cell_magic("predict", "Digits --version 9", "x[:1]")
    with pytest.raises(UsageError, match="Unexpected|parse|JSON"):
        ns.run_cell_magic("predict", "Digits", '{"instances": [1.0], "x": NaN}{')
    with pytest.raises(UsageError, match="3 labels for 12 predictions"):
        ns.run_cell_magic("predict", "Digits --labels y[:3]", "x")
    capsys.readouterr()
    cell = ns.run_cell("%predict Digits [[1.0, 2.0]]")
    assert isinstance(cell.error_in_exec, UsageError)
    assert "Traceback" not in capsys.readouterr().out


def test_versions_labels_signatures_and_named_inputs(ns, multi_named):
    ns.user_ns["a"] = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    ns.user_ns["b"] = np.array([10, 20])
    body = "np.array([1.0, 2.0], dtype=np.float32)"
    canary = ns.run_cell_magic("predict", "Multi --signature scale --label canary", body)
    stable = ns.run_cell_magic("predict", "Multi --signature scale --label stable", body)
    first = ns.run_cell_magic("predict", "Multi --signature scale --version 1", body)
    assert canary.predictions.tolist() == [2.0, 4.0] and stable.predictions.tolist() == [1.0, 2.0]
    assert first.predictions.tolist() == [1.0, 2.0]
    named = ns.run_cell_magic("predict", "Multi --version 1", '{"a": a, "b": b}')
    assert named.predictions["sum"].tolist() == [13.0, 27.0] and named.kind is None
    assert set(repr(named).splitlines()[1].split()) == {"#", "scaled", "sum"}
    with pytest.raises(UsageError, match=r"missing column 'b': the signature's inputs are "
                       r"a float32\[-1,2\], b int64\[-1\]"):
        ns.run_cell_magic("predict", "Multi", '{"a": a}')
    with pytest.raises(UsageError, match="version_labels"):
        ns.run_cell_magic("predict", "Multi --signature scale --label nope", body)


@pytest.mark.parametrize("kind", ["curl", "python", "node"])
def test_printed_snippets_work(kind, ns, digits, multi_named, capsys):
    if shutil.which({"curl": "curl", "python": sys.executable, "node": "node"}[kind]) is None:
        pytest.skip(f"{kind} is not installed")
    # small: the body inline, a label in the URL
    small = ns.run_cell_magic(
        "predict", f"Multi --signature scale --label canary --show {kind}", "[1.5, -2.0]"
    )
    code = capsys.readouterr().out
    assert "/v1/models/Multi/labels/canary:predict" in code and "abridged" not in code
    assert '"signature_name":"scale"' in code.replace("\\", "")
    assert response_of(kind, run_snippet(kind, code)) == {"predictions": [3.0, -4.0]}
    assert small.predictions.tolist() == [3.0, -4.0]
    # large: the whole batch (sent in chunks) in a file, an abridged preview inline
    _magics(ns).chunk_size = 2
    large = ns.run_cell_magic("predict", f"Digits --show {kind}", "x[:3]")
    code = capsys.readouterr().out
    assert large.n_requests == 2 and "abridged" in code and len(code) < 2000
    # the body file lives in the tests' per-user state folder, not in the real temp folder
    assert os.path.join(os.environ["TFSERVE_MAGIC_HOME"], "requests") in code
    response = response_of(kind, run_snippet(kind, code))
    np.testing.assert_allclose(response["predictions"], large.predictions, rtol=1e-6)


def test_json_body_snippet_is_the_typed_body(ns, multi_named, capsys):
    body = '{"signature_name": "scale",   "inputs": [1.0, NaN]}'
    result = ns.run_cell_magic("predict", "Multi --version 2 --show curl", body)
    code = capsys.readouterr().out
    assert f"--data-binary '{body}'" in code and "/versions/2:predict" in code
    response = response_of("curl", run_snippet("curl", code))
    assert response["outputs"][0] == 2.0 and np.isnan(response["outputs"][1])
    assert result.predictions[0] == 2.0 and np.isnan(result.predictions[1])


def test_client_resolves_names_and_handles(digits, multi_named):
    from tfserve_magic.client import Client

    by_model = Client("Multi")
    assert by_model.url == f"{multi_named.url}/v1/models/Multi"
    by_server = Client("Several")
    assert by_server.model_name == "Multi" and by_server.base_url == multi_named.url
    assert Client(digits).url == f"{digits.url}/v1/models/Digits"
    with pytest.raises(LookupError, match="Running: .*Digits at http://127.0.0.1"):
        Client("Unknown")
