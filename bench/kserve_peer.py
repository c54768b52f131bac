"""KServe's Python model server as a peer: a ``kserve.Model`` that loads the bench SavedModel.

Written the way KServe's custom-model docs show (``load``/``predict`` on a ``kserve.Model``,
``kserve.ModelServer().start([model])``), serving the V1 protocol at
``/v1/models/MLP:predict`` with the same ``{"instances": ...}`` bodies as ours; gRPC off. KServe
binds 0.0.0.0 unconditionally, so its uvicorn config is bound to 127.0.0.1 here instead.
Runs in its own virtualenv (bench/peer_envs.py):
``python bench/kserve_peer.py SAVED_MODEL PORT``.
"""

from __future__ import annotations

import sys

import kserve
import numpy as np
import tensorflow as tf


class SavedModelPredictor(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.signature = None
        self.input_name = ""
        self.load()

    def load(self) -> bool:
        loaded = tf.saved_model.load(self.path)
        self.signature = loaded.signatures["serving_default"]
        self._keep = loaded  # the signature's variables live as long as the loaded object
        self.input_name = next(iter(self.signature.structured_input_signature[1]))
        self.ready = True
        return self.ready

    async def predict(self, payload: dict, headers: dict | None = None) -> dict:
        x = np.asarray(payload["instances"], dtype=np.float32)
        outputs = self.signature(**{self.input_name: tf.constant(x)})
        (y,) = outputs.values()
        return {"predictions": y.numpy().tolist()}


def _loopback_only() -> None:
    import uvicorn
    from kserve.protocol.rest import server as rest_server

    real = uvicorn.Config

    def config(app, **kwargs):
        kwargs["host"] = "127.0.0.1"
        return real(app, **kwargs)

    rest_server.uvicorn.Config = config


def main(argv: list[str]) -> None:
    path, port = argv[0], int(argv[1])
    _loopback_only()
    model = SavedModelPredictor("MLP", path)
    kserve.ModelServer(http_port=port, enable_grpc=False).start([model])


if __name__ == "__main__":
    main(sys.argv[1:])
