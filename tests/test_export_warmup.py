"""``export_model(..., warmup=X)`` and ``%tfserve export ... --warmup X`` (issue 22): the file is
TF Serving's format (read back with TensorFlow's TFRecord reader and the tensorflow-serving-api
protos), a server replays it at load, and warm-up data that does not fit leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.error import UsageError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

from tests.fixtures.server import start_server  # noqa: E402
from tests.helpers.warmup import predict, read_records, warmup_file  # noqa: E402
from tfserve_magic.export import ExportError, export_model  # noqa: E402

WORDS = np.array([["cat"], ["dog"], ["emu"]])


def word_model():
    """A lookup-table model (string input): its first call initialises the table."""
    word = keras.Input((1,), dtype="string", name="word")
    one_hot = keras.layers.StringLookup(vocabulary=["cat", "dog"], output_mode="one_hot")(word)
    return keras.Model(word, keras.layers.Dense(2, kernel_initializer="ones")(one_hot))


def logged_requests(path) -> list:
    logs = []
    for record in read_records(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs


def test_export_writes_tf_serving_warmup_records_that_the_server_replays(tmp_path):
    model = word_model()
    base = tmp_path / "words"
    result = export_model(model, base, warmup=WORDS)
    assert result.warmup == warmup_file(base / "1") and result.warmup.is_file()
    assert f"Warm-up requests: {result.warmup}" in repr(result)
    logs = logged_requests(result.warmup)
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    for log, row in zip(logs, WORDS):
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["word"]
        assert tf.make_ndarray(request.inputs["word"]).tolist() == [[row[0].encode()]]
    assert sorted(p.name for p in base.iterdir()) == ["1"]  # no scratch folder left

    server = start_server(base, model_name="words", workdir=tmp_path)
    try:
        log = server.log()
        assert "Number of warmup records read: 3." in log
        expected = model(tf.constant([["dog"]])).numpy().tolist()
        assert predict(server, "words", [["dog"]]).json() == {"predictions": expected}
    finally:
        server.stop()


def test_warmup_for_named_signatures(tmp_path):
    from tests.helpers.export_models import Calculator

    pair = {"x": np.ones(2, "float32"), "offset": np.zeros(2, "float32")}
    result = export_model(Calculator(), tmp_path / "calc", signatures={"affine": "affine", "stats": "stats"},
                          warmup={"serving_default": pair,
                                  "stats": np.ones((2, 2), "float32")})
    requests = [log.predict_log.request for log in logged_requests(result.warmup)]
    assert [(r.model_spec.signature_name, sorted(r.inputs)) for r in requests] == [
        ("serving_default", ["offset", "x"])] * 2 + [("stats", ["values"])] * 2


def test_warmup_that_does_not_fit_is_an_export_error_and_leaves_nothing(tmp_path):
    base = tmp_path / "words"
    with pytest.raises(ExportError, match=r"warm-up data .*input 'word' has shape \[3\]"):
        export_model(word_model(), base, warmup=np.array(["cat", "dog", "emu"]))
    assert list(base.iterdir()) == []
    with pytest.raises(ExportError, match=r"inputs are \['word'\], X has \['nope'\]"):
        export_model(word_model(), base, warmup={"nope": WORDS})
    assert list(base.iterdir()) == []


def test_export_magic_warmup_option(shell, tmp_path):
    shell.user_ns["model"] = word_model()
    shell.user_ns["rows"] = WORDS[:2]
    result = shell.run_line_magic("tfserve", f"export model {tmp_path / 'w'} --warmup rows")
    assert len(logged_requests(result.warmup)) == 2
    with pytest.raises(UsageError, match="warm-up data"):
        shell.run_line_magic("tfserve", f"export model {tmp_path / 'w'} --warmup rows[:,0]")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["1"]
