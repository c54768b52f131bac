"""The gRPC API of ``python -m tfserve_magic serve`` against TF Serving's contract.

One server (config file: the server tests' models, labels, a Unix socket, the health service,
Prometheus) is shared by the module; every test calls it with the official
``tensorflow-serving-api`` stubs over a real channel.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.fixtures.server import server_models_config, start_server

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def grpc_server(server_test_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("grpc-server")
    half_in = work / "half_in"
    _export_half_input(half_in / "1")
    config = work / "models.config"
    config.write_text(server_models_config(server_test_models, extra={"half_in": half_in}))
    monitoring = work / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    socket_path = work / "tf-serving.sock"
    server = start_server(
        None,
        f"--grpc_socket_path={socket_path}",
        "--enable_grpc_healthcheck_service",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=60000,grpc.lb_policy_name=grpclb",
        f"--monitoring_config_file={monitoring}",
        config_file=config,
        workdir=work,
    )
    server.socket_path = socket_path
    yield server
    assert server.stop() == 0


def _export_half_input(path):
    class HalfIn(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float16, name="h")])
        def predict(self, h):
            return {"twice": h * 2}

    module = HalfIn()
    tf.saved_model.save(module, str(path), signatures=module.predict)


@pytest.fixture(scope="module")
def channel(grpc_server):
    ch = grpc.insecure_channel(
        f"127.0.0.1:{grpc_server.info['grpc_port']}",
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _predict(name="half", signature=None, version=None, label=None, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature is not None:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, 10)
    return info.value.code(), info.value.details()


def _example(**features):
    example = example_pb2.Example()
    for key, values in features.items():
        example.features.feature[key].float_list.value.extend(values)
    return example


# ---- readiness and transport ----


def test_info_file_records_grpc_port_and_readiness_probe(grpc_server, stub):
    assert isinstance(grpc_server.info["grpc_port"], int) and grpc_server.info["grpc_port"] > 0
    code, details = _error(stub.Predict, _predict("intentionally_missing_model"))
    assert code == NOT_FOUND and "Servable" in details
    assert details == "Servable not found for request: Latest(intentionally_missing_model)"


def test_predict_over_unix_socket(grpc_server):
    with grpc.insecure_channel(f"unix:{grpc_server.socket_path}") as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        response = stub.Predict(_predict(x=np.array([2.0], np.float32), version=1), 10)
    assert list(response.outputs["y"].float_val) == [3.0]


def test_health_service_names(grpc_server, channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "PredictionService", "ModelService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="tensorflow.serving.X"), timeout=10)
    assert info.value.code() == NOT_FOUND


# ---- Predict ----


def test_predict_tensor_content_and_echo(stub):
    request = _predict(x=np.array([2.0, 4.0], np.float32), signature="serving_default",
                       label="stable")
    request.output_filter.append("y")
    assert request.inputs["x"].tensor_content  # make_tensor_proto's form
    response = stub.Predict(request, 10)
    y = response.outputs["y"]
    assert y.dtype == tf.float32.as_datatype_enum and not y.tensor_content
    assert [d.size for d in y.tensor_shape.dim] == [2]
    assert list(y.float_val) == [3.0, 4.0]
    spec = response.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("half", 1, "serving_default")
    assert spec.WhichOneof("version_choice") == "version"  # never the label


def test_predict_typed_fields_scalar_and_padding(stub):
    # The official test client: float_val 2.0 with no shape is a scalar.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.model_spec.version.value = 1
    request.inputs["x"].dtype = tf.float32.as_datatype_enum
    request.inputs["x"].float_val.append(2.0)
    response = stub.Predict(request, 10)
    y = response.outputs["y"]
    assert len(y.tensor_shape.dim) == 0 and list(y.float_val) == [3.0]
    # Too few values repeat the last one; latest version (2) is 0.5x + 3.
    request.model_spec.ClearField("version")
    request.inputs["x"].tensor_shape.dim.add().size = 3
    request.inputs["x"].float_val[:] = [4.0]
    response = stub.Predict(request, 10)
    assert list(response.outputs["y"].float_val) == [5.0, 5.0, 5.0]
    assert response.model_spec.version.value == 2
    # No values at all: zeros.
    request.inputs["x"].ClearField("float_val")
    assert list(stub.Predict(request, 10).outputs["y"].float_val) == [3.0, 3.0, 3.0]


def test_predict_strings_ints_bools(stub):
    strings = stub.Predict(_predict("strings", text=np.array([b"ab", "\u00e9".encode()])), 10)
    assert list(strings.outputs["length"].int_val) == [2, 2]
    assert list(strings.outputs["upper"].string_val) == [b"AB", "\u00e9".encode()]
    assert strings.outputs["upper"].dtype == tf.string.as_datatype_enum
    request = _predict("dtypes", d=np.array([1.5, -2.0]), u=np.array([1, 255], np.uint8),
                       flag=np.array([True, False]))
    out = stub.Predict(request, 10).outputs
    assert list(out["d2"].double_val) == [3.0, -4.0]
    assert list(out["u_sum"].int_val) == [2, 256]
    assert list(out["flag_not"].bool_val) == [False, True]
    multi = stub.Predict(
        _predict("multi", a=np.array([[1, 2], [3, 4]], np.float32), b=np.array([5, -1])), 10
    ).outputs
    assert list(multi["doubled"].int64_val) == [10, -2]
    assert list(multi["total"].float_val) == [8.0, 6.0]


def test_predict_half_in_and_out(stub):
    # DT_HALF input through half_val (16-bit patterns in int32 entries) and tensor_content.
    request = _predict("half_in")
    request.inputs["h"].dtype = tf.float16.as_datatype_enum
    request.inputs["h"].tensor_shape.dim.add().size = 2
    request.inputs["h"].half_val.extend([15872, 46080])  # 1.5, -0.25
    twice = stub.Predict(request, 10).outputs["twice"]
    assert list(twice.half_val) == [16896, 47104]  # 3.0, -0.5: typed field in the response
    request = _predict("half_in", h=np.array([1.5, -0.25], np.float16))
    twice = stub.Predict(request, 10).outputs["twice"]
    assert twice.dtype == tf.float16.as_datatype_enum
    assert tf.make_ndarray(twice).tolist() == [3.0, -0.5]
    # A float16 output (JSON cannot carry it, gRPC can).
    h = stub.Predict(_predict("dtypes", signature="half", x=np.array([0.5], np.float32)), 10)
    assert np.array(h.outputs["h"].half_val, np.uint16).view(np.float16).tolist() == [0.5]


def test_predict_runs_classify_signature(stub):
    serialized = np.array([_example(x=[0.0]).SerializeToString()], dtype=object)
    out = stub.Predict(_predict("half", signature="classify", inputs=serialized), 10).outputs
    assert list(out["classes"].string_val) == [b"neg", b"pos"]
    assert np.allclose(out["scores"].float_val, [0.5, 0.5])


# ---- Predict errors ----


def test_model_spec_errors(stub, model_stub):
    no_spec = predict_pb2.PredictRequest()
    for call, request in (
        (stub.Predict, no_spec),
        (stub.Classify, classification_pb2.ClassificationRequest()),
        (stub.Regress, regression_pb2.RegressionRequest()),
        (stub.GetModelMetadata,
         get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])),
        (model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()),
    ):
        assert _error(call, request) == (INVALID, "Missing ModelSpec")
    assert _error(stub.Predict, _predict("")) == (INVALID, "ModelSpec has no name specified.")
    assert _error(stub.Predict, _predict("nope", version=3)) == (
        NOT_FOUND, "Servable not found for request: Specific(nope, 3)")
    assert _error(stub.Predict, _predict("half", version=0)) == (
        NOT_FOUND, "Servable not found for request: Specific(half, 0)")
    assert _error(stub.Predict, _predict("half", label="gone")) == (
        INVALID, "Unrecognized servable version label: gone")
    assert _error(stub.Predict, _predict("nope", label="stable")) == (
        INVALID, "Unrecognized servable version label: stable")
    assert _error(stub.Predict, _predict("half", signature="nope")) == (
        grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')


def test_input_count_and_alias_errors(stub):
    assert _error(stub.Predict, _predict("half")) == (
        INVALID,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}.",
    )
    a = np.zeros([1, 2], np.float32)
    assert _error(stub.Predict, _predict("multi", a=a)) == (
        INVALID,
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). Sent extra: {}. "
        "Missing but required: {b}.",
    )
    three = _predict("multi", a=a, b=np.zeros([1], np.int64), c=np.zeros([1]))
    assert _error(stub.Predict, three) == (
        INVALID,
        "input size does not match signature: 3!=2 len({a,b,c}) != len({a,b}). Sent extra: {c}. "
        "Missing but required: {}.",
    )
    assert _error(stub.Predict, _predict("half", feature=np.zeros([1], np.float32))) == (
        INVALID,
        "Signature input alias: x(feed name: serving_default_x:0) not found in request and no "
        "default value provided. Inputs expected to be in the request {feature}, or default "
        "input alias set: ",
    )


def test_tensor_parsing_and_dtype_errors(stub):
    bad = _predict("half", x=np.zeros([2], np.float32))
    bad.inputs["x"].tensor_content = b"\0" * 7
    assert _error(stub.Predict, bad) == (INVALID, "tensor parsing error: x")
    unset = _predict("half")
    unset.inputs["x"].float_val.append(1.0)  # dtype left DT_INVALID
    assert _error(stub.Predict, unset) == (INVALID, "tensor parsing error: x")
    negative = _predict("half")
    negative.inputs["x"].dtype = tf.float32.as_datatype_enum
    negative.inputs["x"].tensor_shape.dim.add().size = -1
    assert _error(stub.Predict, negative) == (INVALID, "tensor parsing error: x")
    assert _error(stub.Predict, _predict("half", x=np.array([1, 2], np.int32))) == (
        INVALID, "Expects arg[0] to be float but int32 is provided")
    assert _error(stub.Predict, _predict("half", x=np.array([b"a"], object))) == (
        INVALID, "Expects arg[0] to be float but string is provided")


def test_output_filter_errors_come_after_inputs(stub):
    request = _predict("multi", a=np.zeros([1, 2], np.float32), b=np.zeros([1], np.int64))
    request.output_filter.extend(["total", "nope"])
    assert _error(stub.Predict, request) == (
        INVALID,
        "output tensor alias not found in signature: nope Outputs expected to be in the set "
        "{doubled,positive,total}.",
    )
    request.output_filter[:] = ["total", "total"]
    assert _error(stub.Predict, request) == (INVALID, "duplicate output tensor alias: total")
    request.output_filter[:] = ["doubled"]
    assert list(stub.Predict(request, 10).outputs) == ["doubled"]
    request.inputs.pop("b")
    request.output_filter[:] = ["nope"]
    assert _error(stub.Predict, request)[1].startswith("input size does not match signature")


def test_graph_errors_are_tf_statuses_and_server_keeps_serving(stub):
    code, details = _error(stub.Predict, _predict("multi", a=np.zeros([2, 2], np.float32),
                                                  b=np.zeros([3], np.int64)))
    assert code == INVALID and details
    assert stub.Predict(_predict(x=np.array([2.0], np.float32), version=1), 10)


def test_deadline_exceeded_then_serving(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_predict("multi", signature="slow", n=np.array([3000], np.int32)), 0.05)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stub.Predict(_predict(x=np.array([2.0], np.float32), version=1), 10)


# ---- Classify, Regress, MultiInference ----


def _classify(signature, *examples, context=None, name="half"):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if context is not None:
        request.input.example_list_with_context.context.CopyFrom(context)
        request.input.example_list_with_context.examples.extend(examples)
    else:
        request.input.example_list.examples.extend(examples)
    return request


def test_classify(stub):
    response = stub.Classify(_classify("classify", _example(x=[0.0]), _example(x=[100.0])), 10)
    first, second = response.result.classifications
    assert [c.label for c in first.classes] == ["neg", "pos"]
    assert [c.score for c in first.classes] == [0.5, 0.5]
    assert [round(c.score, 3) for c in second.classes] == [0.0, 1.0]
    assert response.model_spec.signature_name == "classify"
    assert response.model_spec.version.value == 2


def test_classify_with_context_merges_features(stub):
    response = stub.Classify(
        _classify("classify", example_pb2.Example(), context=_example(x=[100.0])), 10
    )
    assert round(response.result.classifications[0].classes[1].score, 3) == 1.0


def test_regress_and_echo(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half"
    request.model_spec.signature_name = "regress"
    request.model_spec.version_label = "stable"
    request.input.example_list.examples.extend([_example(x=[2.0]), _example(x=[4.0])])
    response = stub.Regress(request, 10)
    assert [r.value for r in response.result.regressions] == [3.0, 4.0]
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (1, "regress")


def test_classify_regress_errors(stub):
    assert _error(stub.Classify, _classify("nope", _example(x=[1.0]))) == (
        INVALID, "No signature was found with the name: nope")
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half"
    request.model_spec.signature_name = "nope"
    assert _error(stub.Regress, request) == (INVALID, "No signature was found with the name: nope")
    assert _error(stub.Classify, _classify("classify")) == (INVALID, "Input is empty.")
    # The signature is checked before the input.
    code, details = _error(stub.Classify, _classify("serving_default"))
    assert code == INVALID and details.startswith("No classification inputs found in SignatureDef")
    code, details = _error(
        stub.Classify, _classify("double_scores", _example(x=[1.0]), name="dtypes"))
    assert (code, details) == (INVALID, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE")
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "dtypes"
    request.model_spec.signature_name = "wide_outputs"
    request.input.example_list.examples.append(_example(x=[1.0]))
    assert _error(stub.Regress, request) == (
        INVALID,
        "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]",
    )


def _task(signature, method, name="half"):
    task = inference_pb2.InferenceTask(method_name=method)
    task.model_spec.name = name
    task.model_spec.signature_name = signature
    return task


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.extend([_task("regress", "tensorflow/serving/regress"),
                          _task("classify", "tensorflow/serving/classify")])
    request.tasks[0].model_spec.version.value = 1
    request.input.example_list.examples.append(_example(x=[2.0]))
    first, second = stub.MultiInference(request, 10).results
    assert first.regression_result.regressions[0].value == 3.0
    assert first.model_spec.signature_name == "regress" and first.model_spec.version.value == 1
    assert [c.label for c in second.classification_result.classifications[0].classes] == [
        "neg", "pos"]
    assert second.model_spec.signature_name == "classify"


def test_multi_inference_errors(stub):
    def call(*tasks, examples=(_example(x=[1.0]),)):
        request = inference_pb2.MultiInferenceRequest()
        request.tasks.extend(tasks)
        request.input.example_list.examples.extend(examples)
        return _error(stub.MultiInference, request)

    assert call() == (INVALID, "ModelSpec has no name specified.")
    assert call(_task("regress", "tensorflow/serving/regress"),
                _task("classify", "tensorflow/serving/classify", name="")) == (
        INVALID, "Found ModelSpec with an empty model name.")
    assert call(_task("regress", "tensorflow/serving/regress"),
                _task("classify", "tensorflow/serving/classify", name="multi")) == (
        INVALID, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    assert call(_task("regress", "tensorflow/serving/regress"),
                _task("regress", "tensorflow/serving/regress")) == (
        INVALID, "Duplicate evaluation of signature: regress")
    assert call(_task("nope", "tensorflow/serving/regress")) == (
        INVALID, "Requested signature not found in model graph: nope")
    assert call(_task("regress", "tensorflow/serving/predict")) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")
    assert call(_task("regress", "tensorflow/serving/regress"), examples=()) == (
        INVALID, "Input is empty.")


# ---- GetModelMetadata, GetModelStatus ----


def test_metadata_packing(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half"
    request.model_spec.version_label = "stable"
    request.model_spec.signature_name = "classify"
    response = stub.GetModelMetadata(request, 10)
    assert response.model_spec.name == "half" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == ""
    assert list(response.metadata) == ["signature_def"]
    any_value = response.metadata["signature_def"]
    assert any_value.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_value.Unpack(signature_map)
    defs = signature_map.signature_def
    assert {"serving_default", "classify", "regress", "scalar", "__saved_model_init_op"} <= set(defs)
    x = defs["serving_default"].inputs["x"]
    assert x.dtype == tf.float32.as_datatype_enum and x.name == "serving_default_x:0"
    assert [d.size for d in x.tensor_shape.dim] == [-1]
    assert defs["serving_default"].method_name == "tensorflow/serving/predict"


def test_metadata_errors(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "nope"
    assert _error(stub.GetModelMetadata, request) == (
        INVALID, "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.extend(["signature_def", "other"])
    assert _error(stub.GetModelMetadata, request) == (
        INVALID, "Metadata field other is not supported")
    del request.metadata_field[1]
    assert _error(stub.GetModelMetadata, request) == (
        NOT_FOUND, "Servable not found for request: Latest(nope)")


def test_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half"
    request.model_spec.version_label = "unknown-label-is-ignored"
    statuses = model_stub.GetModelStatus(request, 10).model_version_status
    assert [s.version for s in statuses] == [2, 1]
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert all(s.state == available and s.status.error_code == 0 for s in statuses)
    assert all(s.status.error_message == "" for s in statuses)
    request.model_spec.version.value = 1
    assert [s.version for s in model_stub.GetModelStatus(request, 10).model_version_status] == [1]
    request.model_spec.version.value = 9
    assert _error(model_stub.GetModelStatus, request) == (
        NOT_FOUND, "Could not find version 9 of model half")
    request.model_spec.name = "nope"
    request.model_spec.ClearField("version")
    assert _error(model_stub.GetModelStatus, request) == (
        NOT_FOUND, "Could not find any versions of model nope")
    request.model_spec.name = ""
    assert _error(model_stub.GetModelStatus, request) == (
        NOT_FOUND, "Could not find any versions of model ")


def test_shares_metrics_with_rest(grpc_server, stub):
    stub.Predict(_predict(x=np.array([2.0], np.float32), version=1), 10)
    requests.post(f"{grpc_server.url}/v1/models/half/versions/1:predict",
                  json={"instances": [2.0]}, timeout=10).raise_for_status()
    text = requests.get(f"{grpc_server.url}/metrics", timeout=10).text
    assert 'entrypoint="GRPC"' in text and 'entrypoint="REST"' in text
    assert ':tensorflow:serving:request_count{model_name="half",status="OK"}' in text


def test_100_mb_request(stub):
    x = np.ones(25_000_000, np.float32)  # 100 MB of tensor_content
    response = stub.Predict(_predict(x=x, signature="scalar", version=1), 120)
    assert list(response.outputs["total"].float_val) == [25_000_000.0]
