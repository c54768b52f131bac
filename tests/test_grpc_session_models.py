"""Session-loaded models (TF1 graphs, reference variables, Keras 2 exports) answer over gRPC.

Both front ends share one model manager, so the models only the TF1-session loader can serve
must answer the official ``tensorflow-serving-api`` stubs exactly as they answer REST: TF
Serving's own test SavedModels and a TF1 ``SavedModelBuilder`` model with string labels.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.fixtures.legacy_models import KERAS2_VARIANTS, TF1_LABELS
from tests.fixtures.server import start_server
from tests.helpers.serving import COUNTER, HALF_PLUS_THREE, HALF_PLUS_TWO, model_config


@pytest.fixture(scope="module")
def session_grpc(tf1_models, keras2_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("grpc-session")
    tf1_root, tf1_expected = tf1_models
    keras_root, keras_expected = keras2_models
    optimizer, save = KERAS2_VARIANTS[0]
    keras_name = f"keras2_{optimizer}_{save}"
    config = work / "models.config"
    config.write_text(model_config([
        {"name": "half_plus_two", "base_path": HALF_PLUS_TWO},
        {"name": "half_plus_three", "base_path": HALF_PLUS_THREE},
        {"name": "counter", "base_path": COUNTER},
        {"name": "tf1", "base_path": tf1_root / "tf1", "versions": [1]},
        {"name": "keras2", "base_path": keras_root / keras_name},
    ]))
    server = start_server(None, config_file=config, workdir=work)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.info['grpc_port']}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    yield stub, tf1_expected["models"]["tf1/1"], keras_expected["models"][keras_name]
    channel.close()
    assert server.stop() == 0


def _examples(request, values):
    for value in values:
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(value)
        request.input.example_list.examples.append(example)


def test_half_plus_two_predict_and_metadata(session_grpc):
    stub = session_grpc[0]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0, 5.0], dtype=tf.float32))
    response = stub.Predict(request, 30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [2.5, 3.0, 4.5])
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"

    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = "half_plus_two"
    meta.metadata_field.append("signature_def")
    answer = stub.GetModelMetadata(meta, 30)
    defs = get_model_metadata_pb2.SignatureDefMap()
    answer.metadata["signature_def"].Unpack(defs)
    assert defs.signature_def["serving_default"].inputs["x"].name == "x:0"


def test_half_plus_three_regress_on_loosely_declared_input(session_grpc):
    stub = session_grpc[0]
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_three"
    request.model_spec.signature_name = "tensorflow/serving/regress"
    _examples(request, [2.0, 4.0])
    response = stub.Regress(request, 30)
    assert [r.value for r in response.result.regressions] == [4.0, 5.0]


def test_tf1_classify_answers_labels_from_its_lookup_table(session_grpc):
    stub, expected, _ = session_grpc
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tf1"
    request.model_spec.signature_name = "classify"
    _examples(request, expected["x"])
    response = stub.Classify(request, 30)
    labels = [[c.label for c in row.classes] for row in response.result.classifications]
    assert labels == expected["classes"] and labels[0] == TF1_LABELS
    scores = [[c.score for c in row.classes] for row in response.result.classifications]
    np.testing.assert_allclose(scores, expected["scores"], rtol=1e-6)


def test_reference_variable_counter_keeps_state(session_grpc):
    stub = session_grpc[0]

    def increment(delta):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "counter"
        request.model_spec.signature_name = "incr_counter_by"
        request.inputs["delta"].CopyFrom(tf.make_tensor_proto(delta, dtype=tf.float32))
        response = stub.Predict(request, 30)
        return float(tf.make_ndarray(next(iter(response.outputs.values()))))

    first = increment(3.0)
    assert increment(2.0) == first + 2.0


def test_keras2_export_with_optimizer_predicts(session_grpc):
    stub, _, expected = session_grpc
    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = "keras2"
    meta.metadata_field.append("signature_def")
    defs = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(meta, 30).metadata["signature_def"].Unpack(defs)
    (input_name,) = defs.signature_def["serving_default"].inputs.keys()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "keras2"
    x = np.asarray(expected["instances"], dtype=np.float32)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
    response = stub.Predict(request, 30)
    (output,) = response.outputs.values()
    np.testing.assert_allclose(tf.make_ndarray(output), expected["predictions"], rtol=1e-5,
                               atol=1e-6)
