"""Keras 2 SavedModels written by a real TF 2.15.1 (tests/data/keras2_tf215) are served.

TF 2.15 is the last release whose ``tf.keras`` is Keras 2; its exports, saved with their
optimizer, are what the classic tutorial's users have on disk. The server must answer them
exactly as TF 2.15.1 did, through the TF1-session loader, on REST and gRPC.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.fixtures.server import start_server
from tests.helpers.serving import loader_of, model_config
from tfserve_magic.tensor_proto import from_numpy, to_numpy

DATA = Path(__file__).parent / "data" / "keras2_tf215"
EXPECTED = json.loads((DATA / "expected.json").read_text())
SAVES = sorted(EXPECTED["models"])
# Keras 2.11+ optimizers revive without Keras; the legacy optimizer (every tf.keras up to 2.10,
# and tf.keras.optimizers.legacy later) does not, so only the session loader serves it.
LOADER = {"legacy_adam_model_save": "session", "model_save": "tf2", "tf_saved_model_save": "tf2"}


@pytest.fixture(scope="module")
def keras215(tmp_path_factory):
    work = tmp_path_factory.mktemp("keras215")
    config = work / "models.config"
    config.write_text(model_config([{"name": s, "base_path": DATA / s} for s in SAVES]))
    server = start_server(None, config_file=config, workdir=work)
    yield server
    assert server.stop() == 0


def test_written_by_tf_2_15():
    assert EXPECTED["tf_version"].startswith("2.15.")
    assert EXPECTED["keras_version"].startswith("2.15.")


@pytest.mark.parametrize("save", SAVES)
def test_tf215_keras2_export_answers_as_its_writer(keras215, save):
    assert loader_of(keras215, save) == LOADER[save]
    expected = EXPECTED["models"][save]
    answer = requests.post(f"{keras215.url}/v1/models/{save}:predict",
                           json={"instances": expected["instances"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected["predictions"],
                               rtol=1e-5, atol=1e-6)

    meta = requests.get(f"{keras215.url}/v1/models/{save}/metadata", timeout=30).json()
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    (name,) = inputs
    dims = [int(d["size"]) for d in inputs[name]["tensor_shape"]["dim"]]
    assert dims == [-1, 28, 28, 1]  # a free batch dimension, as Keras 2 wrote it

    with grpc.insecure_channel(f"127.0.0.1:{keras215.info['grpc_port']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = save
        request.inputs[name].CopyFrom(from_numpy(np.float32(expected["instances"])))
        (output,) = stub.Predict(request, 60).outputs.values()
    np.testing.assert_allclose(to_numpy(output), expected["predictions"], rtol=1e-5, atol=1e-6)
