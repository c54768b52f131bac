"""Real exports served: a trained Keras MLP (via export_model) and a TF1-style graph SavedModel."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.fixtures.server import start_server


def test_mlp_predictions_match_keras(mlp_server, trained_mlp, mnist):
    images = mnist.x_test[:5]
    expected = trained_mlp.predict(images, verbose=0)
    response = requests.post(f"{mlp_server.url}/v1/models/MLP:predict",
                             json={"instances": images.tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    predictions = np.array(response.json()["predictions"], dtype=np.float32)
    assert predictions.shape == (5, 10)
    np.testing.assert_allclose(predictions, expected, rtol=1e-4, atol=1e-6)
    columnar = requests.post(f"{mlp_server.url}/v1/models/MLP:predict",
                             json={"inputs": images[:2].tolist()}, timeout=30)
    np.testing.assert_allclose(np.array(columnar.json()["outputs"]), expected[:2], rtol=1e-4,
                               atol=1e-6)


def test_mlp_metadata_and_status(mlp_server):
    status = requests.get(f"{mlp_server.url}/v1/models/MLP").json()
    assert status["model_version_status"][0]["version"] == "1"
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = requests.get(f"{mlp_server.url}/v1/models/MLP/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    (spec,) = sig["inputs"].values()
    assert spec["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in spec["tensor_shape"]["dim"]][1:] == ["28", "28", "1"]


@pytest.fixture(scope="module")
def tf1_export(tmp_path_factory):
    """A graph-mode SavedModel written with TF1's SavedModelBuilder (what TF 1.x/2.0-era
    estimator and Keras exports look like): y = 2x + 1 and a classify signature."""
    import tensorflow as tf

    base = tmp_path_factory.mktemp("tf1") / "graph"
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        weight = v1.get_variable("w", initializer=tf.constant(2.0))
        y = tf.add(weight * x, 1.0, name="y")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        scores = tf.concat([1.0 - tf.sigmoid(parsed["x"]), tf.sigmoid(parsed["x"])], axis=1)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(base / "1"))
            utils = v1.saved_model.signature_def_utils
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    "serving_default": utils.predict_signature_def({"x": x}, {"y": y}),
                    "classify": utils.classification_signature_def(serialized, None, scores),
                },
            )
            builder.save()
    return base


def test_tf1_graph_saved_model_serves(tf1_export, tmp_path):
    server = start_server(tf1_export, model_name="graph", workdir=tmp_path)
    try:
        response = requests.post(f"{server.url}/v1/models/graph:predict",
                                 json={"instances": [1.0, 2.5]})
        assert response.json() == {"predictions": [3.0, 6.0]}
        body = {"signature_name": "classify", "examples": [{"x": 0.0}]}
        response = requests.post(f"{server.url}/v1/models/graph:classify", json=body)
        assert response.status_code == 200, response.text
        ((first, second),) = response.json()["results"]
        assert first[1] == pytest.approx(0.5) and second[1] == pytest.approx(0.5)
        meta = requests.get(f"{server.url}/v1/models/graph/metadata").json()
        defs = meta["metadata"]["signature_def"]["signature_def"]
        assert defs["classify"]["method_name"] == "tensorflow/serving/classify"
        assert defs["serving_default"]["inputs"]["x"]["name"] == "x:0"
    finally:
        assert server.stop() == 0


def test_direct_signature_call_matches_the_function(tf1_export, tmp_path):
    """Signature.run's direct call (captures read once, output positions packed once) gives
    what the loaded function itself gives, for a TF1 graph export and a multi-input,
    multi-output tf.Module; errors still come back as TF Serving's."""
    import tensorflow as tf

    from tfserve_magic.server.servable import Servable
    from tfserve_magic.server.status import ServingError

    class Module(tf.Module):
        def __init__(self):
            self.scale = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="b"),
                                      tf.TensorSpec([None], tf.int64, name="a")])
        def serve(self, b, a):
            return {"z": b * self.scale, "k": a + 1, "m": tf.reduce_sum(b, axis=1)}

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "module" / "1"), signatures={"serving_default":
                                                                            module.serve})
    cases = [
        (str(tf1_export / "1"), {"x": np.array([1.0, 2.5], np.float32)}),
        (str(tmp_path / "module" / "1"),
         {"b": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "a": np.array([5, 6])}),
    ]
    for path, tensors in cases:
        signature = Servable("m", 1, path, ["serve"]).signature("")
        assert signature._direct is not None
        expected = signature.function(**{k: tf.constant(v) for k, v in tensors.items()})
        got = signature.run(tensors)
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            assert got[name].dtype == value.numpy().dtype
            assert np.array_equal(got[name], value.numpy())
    with pytest.raises(ServingError) as error:  # TF's own dtype check, as before
        signature.run({"b": np.ones((2, 2), np.float64), "a": np.array([5, 6])})
    assert error.value.code == "INVALID_ARGUMENT" and "double" in error.value.message
