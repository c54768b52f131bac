"""Warm-up replay at load (issue 22): files from our writer and from TF Serving's own recipe
(the tensorflow-serving-api protos and tf.io.TFRecordWriter, as resnet_warmup.py), every
request kind, iterations, the record limit, and the errors that fail a load."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import requests

from tests.fixtures.server import start_server
from tests.helpers.serving import publish, wait_for
from tests.helpers.warmup import (
    MONITORING,
    metric,
    metric_total,
    predict,
    warmup_file,
    write_records,
)


def example(x: float) -> bytes:
    import tensorflow as tf

    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    return tf.train.Example(features=tf.train.Features(feature=feature))


def every_kind_of_log() -> list[bytes]:
    """One PredictionLog of each replayed kind for the ``half`` test model, built with the
    tensorflow-serving-api protos (model names and versions that TF Serving ignores)."""
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    logs = []
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "whatever"
    predict.model_spec.version.value = 99
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    logs.append(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=predict)))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.signature_name = "classify"
    classify.input.example_list.examples.extend([example(0.5), example(-1.0)])
    logs.append(prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=classify)))
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress"
    regress.input.example_list.examples.append(example(4.0))
    logs.append(prediction_log_pb2.PredictionLog(
        regress_log=prediction_log_pb2.RegressLog(request=regress)))
    multi = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify", "classify"), ("regress", "regress")):
        task = multi.tasks.add()
        task.model_spec.name = "half"
        task.model_spec.signature_name = sig
        task.method_name = f"tensorflow/serving/{method}"
    multi.input.example_list.examples.append(example(1.0))
    logs.append(prediction_log_pb2.PredictionLog(
        multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)))
    return [log.SerializeToString() for log in logs]


@pytest.fixture
def half_copy(server_test_models, tmp_path):
    """A model folder holding only version 1 of ``half``."""
    base = tmp_path / "half"
    base.mkdir()
    shutil.copytree(server_test_models["half"] / "1", base / "1")
    return base


def test_our_writer_writes_tf_servings_format(half_copy):
    """Read back with TensorFlow's TFRecord reader and the tensorflow-serving-api protos."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    import tfserve_magic as tfm

    path = tfm.write_warmup(half_copy / "1", np.array([1.5, 2.5, 3.5, 4.5]), n=2, batch_size=2)
    assert path == warmup_file(half_copy / "1")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert len(logs) == 2
    for log, rows in zip(logs, ([1.5, 2.5], [3.5, 4.5])):
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["x"]
        assert request.inputs["x"].dtype == tf.float32.as_datatype_enum
        assert tf.make_ndarray(request.inputs["x"]).tolist() == rows
    # per signature: {signature: data}; ints become the declared float
    tfm.write_warmup(half_copy / "1", {"serving_default": [1, 2], "scalar": {"x": [3]}},
                     signature=None)
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
        "serving_default", "serving_default", "scalar"]


def test_export_hook_reads_data_or_data_per_signature(half_copy):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from tfserve_magic.warmup import write_export_warmup

    def signatures(path):
        return [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
                .model_spec.signature_name for r in tf.data.TFRecordDataset(str(path))]

    path = write_export_warmup(half_copy / "1", {"x": [1.0, 2.0]}, n=5)
    assert signatures(path) == ["serving_default", "serving_default"]
    path = write_export_warmup(half_copy / "1", {"scalar": [1.0], "serving_default": [2.0]})
    assert sorted(signatures(path)) == ["scalar", "serving_default"]


def test_writer_refuses_data_that_does_not_fit(half_copy):
    import tfserve_magic as tfm

    with pytest.raises(tfm.WarmupError, match="signature 'nope' not found"):
        tfm.write_warmup(half_copy / "1", [1.0], signature="nope")
    with pytest.raises(tfm.WarmupError, match=r"shape \[2, 3\]; the signature takes \[None\]"):
        tfm.write_warmup(half_copy / "1", np.zeros((2, 3)))
    with pytest.raises(tfm.WarmupError, match=r"inputs are \['x'\], X has \['y'\]"):
        tfm.write_warmup(half_copy / "1", {"y": [1.0]})
    with pytest.raises(tfm.WarmupError, match="cannot be float32"):
        tfm.write_warmup(half_copy / "1", ["a"])
    with pytest.raises(tfm.WarmupError, match="not a SavedModel version folder"):
        tfm.write_warmup(half_copy, [1.0])
    assert not warmup_file(half_copy / "1").exists()


def test_replayed_at_load_with_iterations_through_batching(half_copy, tmp_path):
    """Our writer's file: the log and the metrics count the records, and with batching on each
    record goes through the batching queue once per iteration."""
    import tfserve_magic as tfm

    tfm.write_warmup(half_copy / "1", [1.0, 2.0, 3.0], n=3)
    monitoring = tmp_path / "monitoring.pbtxt"
    monitoring.write_text(MONITORING)
    server = start_server(half_copy, f"--monitoring_config_file={monitoring}",
                          "--num_request_iterations_for_warmup=2", "--enable_batching",
                          model_name="half", workdir=tmp_path)
    try:
        log = server.log()
        assert "Starting to read warmup data for model at " in log
        assert re.search(r"Finished reading warmup data for model at \S+tf_serving_warmup_requests"
                         r"\. Number of warmup records read: 3\. Elapsed time \(microseconds\): "
                         r"\d+\.", log), log
        model_path = str(half_copy / "1")
        assert metric(server, ":tensorflow:serving:model_warmup_records_read",
                      model_path=model_path, status="OK") == 3
        assert metric(server, ":tensorflow:serving:model_warmup_latency_count",
                      model_path=model_path, status="OK") == 1
        assert metric(server, ":tensorflow:serving:batching_session:input_batch_size_count") == 6
        assert predict(server, "half", [2.0]).json() == {"predictions": [3.0]}
    finally:
        server.stop()


def test_every_request_kind_from_an_independent_writer(half_copy, tmp_path):
    write_records(warmup_file(half_copy / "1"), every_kind_of_log())
    monitoring = tmp_path / "monitoring.pbtxt"
    monitoring.write_text(MONITORING)
    server = start_server(half_copy, f"--monitoring_config_file={monitoring}",
                          "--workers=2", model_name="half", workdir=tmp_path)
    try:
        assert "Number of warmup records read: 4." in server.log()
        # both workers replayed the file (the endpoint sums the workers)
        assert metric(server, ":tensorflow:serving:model_warmup_records_read", status="OK") == 8
        assert predict(server, "half", [2.0]).json() == {"predictions": [3.0]}
    finally:
        server.stop()


def test_warmup_can_be_turned_off(half_copy, tmp_path):
    write_records(warmup_file(half_copy / "1"), [b"not a PredictionLog"])
    server = start_server(half_copy, "--enable_model_warmup=false", model_name="half",
                          workdir=tmp_path)
    try:
        assert "warmup data" not in server.log()
        assert predict(server, "half", [2.0]).json() == {"predictions": [3.0]}
    finally:
        server.stop()


def _bad_files():
    """(name, writer of the version folder's warm-up file, error code, message pattern)."""
    from tensorflow_serving.apis import prediction_log_pb2, session_service_pb2

    good = every_kind_of_log()

    def corrupt(path):
        write_records(path, good)
        data = bytearray(path.read_bytes())
        data[20] ^= 0xFF  # inside the first record's payload: its CRC no longer matches
        path.write_bytes(bytes(data))

    def truncated(path):
        write_records(path, good)
        path.write_bytes(path.read_bytes()[:-3])

    def unparseable(path):
        write_records(path, [good[0], b"\xff\xff garbage"])

    def failing(path):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.inputs["wrong"].CopyFrom(tf.make_tensor_proto([1.0]))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        write_records(path, [good[0], log.SerializeToString()])

    def session_run(path):
        log = prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog(
            request=session_service_pb2.SessionRunRequest()))
        write_records(path, [log.SerializeToString()])

    def too_many(path):
        write_records(path, [good[0]] * 1001)

    return [
        ("corrupt", corrupt, "DATA_LOSS",
         r"^corrupted record at 12\. Please verify your warmup data is in TFRecord format\.$"),
        ("truncated", truncated, "DATA_LOSS",
         r"^truncated record at \d+.*\. Please verify your warmup data is in TFRecord format\.$"),
        ("unparseable", unparseable, "INVALID_ARGUMENT",
         r"^Failed to parse warmup record: .*garbage from \S+/tf_serving_warmup_requests$"),
        ("failing", failing, "INVALID_ARGUMENT",
         r"^Signature input alias: x\(feed name: \S+\) not found in request"),
        ("session_run", session_run, "UNIMPLEMENTED", r"^Unsupported log_type for warmup: 5$"),
        ("too_many", too_many, "INVALID_ARGUMENT",
         r"^Number of warmup records exceeds the maximum \(1000\) at \S+$"),
    ]


def test_bad_warmup_fails_the_load_while_the_old_version_serves(half_copy, server_test_models,
                                                                tmp_path):
    monitoring = tmp_path / "monitoring.pbtxt"
    monitoring.write_text(MONITORING)
    server = start_server(half_copy, "--file_system_poll_wait_seconds=0.5",
                          f"--monitoring_config_file={monitoring}", model_name="half",
                          workdir=tmp_path)
    try:
        for version, (name, writer, code, pattern) in enumerate(_bad_files(), start=2):
            source = tmp_path / f"src-{name}"
            shutil.copytree(server_test_models["half"] / "2", source)
            writer(warmup_file(source))
            publish(source, half_copy, version)

            def failed(version=version):
                body = requests.get(f"{server.url}/v1/models/half/versions/{version}",
                                    timeout=10)
                entry = body.json()["model_version_status"][0] if body.ok else {}
                return entry if entry.get("state") == "END" else None

            entry = wait_for(failed, f"version {version} ({name}) to fail")
            assert entry["status"]["error_code"] == code, (name, entry)
            assert re.search(pattern, entry["status"]["error_message"]), (name, entry)
            assert predict(server, "half", [2.0]).json() == {"predictions": [3.0]}, name
        # as TF Serving: the metrics record a read that ended in the reader (framing), not a
        # record or request that failed
        text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=10).text
        assert metric_total(text, ":tensorflow:serving:model_warmup_latency_count",
                       model_path=str(half_copy / "2"),
                       status="DATA_LOSS: corrupted record at 12") == 1
        assert metric_total(text, ":tensorflow:serving:model_warmup_latency_count",
                       model_path=str(half_copy / "5")) == 0  # the failing request
        # exactly 1,000 records load
        source = tmp_path / "src-limit"
        shutil.copytree(server_test_models["half"] / "2", source)
        write_records(warmup_file(source), [every_kind_of_log()[0]] * 1000)
        publish(source, half_copy, 20)
        wait_for(lambda: predict(server, "half", [2.0]).json() == {"predictions": [4.0]},
                 "version 20 with 1,000 records to serve")
        assert "Number of warmup records read: 1000." in server.log()
    finally:
        server.stop()
