"""MLServer as a peer: a custom runtime (``mlserver.MLModel``) that loads the bench SavedModel.

MLServer speaks the V2 (Open Inference) protocol, so its bodies are the same images as V2 flat
tensors: ``{"inputs": [{"name": "x", "shape": [N,28,28,1], "datatype": "FP32", "data": [...]}]}``
at ``/v2/models/MLP/infer``. Its settings are MLServer's defaults (one inference worker process
beside the HTTP process), bound to 127.0.0.1 on free ports. Runs in its own virtualenv
(bench/peer_envs.py): ``python -m bench.mlserver_peer SAVED_MODEL PORT WORKDIR`` writes
``settings.json``/``model-settings.json`` into WORKDIR and execs ``mlserver start WORKDIR``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        import tensorflow as tf

        self._tf = tf
        loaded = tf.saved_model.load(self.settings.parameters.uri)
        self._keep = loaded
        self.signature = loaded.signatures["serving_default"]
        self.input_name = next(iter(self.signature.structured_input_signature[1]))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self.signature(**{self.input_name: self._tf.constant(x, dtype="float32")})
        (y,) = outputs.values()
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name="predictions", payload=y.numpy())],
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str]) -> None:
    saved_model, port, workdir = argv[0], int(argv[1]), Path(argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": _free_port(),
        "metrics_port": _free_port(),
    }))
    (workdir / "model-settings.json").write_text(json.dumps({
        "name": "MLP", "implementation": "bench.mlserver_peer.SavedModelRuntime",
        "parameters": {"uri": str(saved_model)},
    }))
    mlserver = Path(sys.executable).with_name("mlserver")
    os.execv(str(mlserver), [str(mlserver), "start", str(workdir)])


if __name__ == "__main__":
    main(sys.argv[1:])
