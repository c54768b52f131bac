"""Per-request cost of small predict requests, step by step, without HTTP.

Times what ``ServingApp._predict`` does for one request (parse, decode, model call, encode)
on the harness's cached MNIST MLP and bodies, next to the in-process ceiling's
``orjson.loads`` + ``np.asarray`` + signature + ``orjson.dumps``. CPU time per call, best of
several rounds (the machine is shared, so the minimum is the steadiest number).
Run: ``python -m bench.small_requests [--images 1,100] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import json  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from tfserve_magic.server import _no_keras  # noqa: E402

_no_keras.install()

import tensorflow as tf  # noqa: E402

from tfserve_magic.server import codec  # noqa: E402
from tfserve_magic.server.models import Servable  # noqa: E402

BUILD = os.path.join(os.path.dirname(__file__), "..", "build", "bench")


def _body(images: int) -> bytes:
    path = os.path.join(BUILD, "bodies", f"mnist_{images}.json")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    rng = np.random.default_rng(0)
    x = np.where(rng.random((images, 28, 28, 1)) < 0.8, 0.0, rng.random((images, 28, 28, 1)))
    return json.dumps({"signature_name": "serving_default", "instances": x.tolist()}).encode()


def _best(fn, rounds: int, budget_s: float = 0.3) -> tuple[float, float]:
    """Best per-call seconds over `rounds` rounds of about `budget_s` each: wall clock, and
    this thread's CPU time (what a one-thread server spends holding the loop)."""
    fn()
    calls = 1
    while True:  # calibrate
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - t > budget_s / 4:
            break
        calls *= 2
    wall = cpu = float("inf")
    for _ in range(rounds):
        t, c = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            fn()
        cpu = min(cpu, (time.thread_time() - c) / calls)
        wall = min(wall, (time.perf_counter() - t) / calls)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", default="1,100")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", default=os.path.join(BUILD, "models", "serve", "MLP", "1"))
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    servable = Servable("MLP", 1, args.model, ["serve"])
    sig = servable.signature("serving_default")
    fn = sig.function
    (input_name,) = sig.specs
    gc.freeze()
    for images in [int(n) for n in args.images.split(",")]:
        body = _body(images)
        req = codec.parse_predict(body)
        tensors, row = codec.decode_predict(req, sig.specs)
        outputs = sig.run(tensors)
        x = tensors[input_name]

        def parse_decode():
            r = codec.parse_predict(body)
            return codec.decode_predict(r, sig.specs)

        def baseline_decode():
            return np.asarray(orjson.loads(body)["instances"], dtype=np.float32)

        def whole():
            r = codec.parse_predict(body)
            t, rw = codec.decode_predict(r, sig.specs)
            return codec.encode_predict(sig.run(t), rw)

        def ceiling():
            images_ = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
            (out,) = fn(**{input_name: tf.constant(images_)}).values()
            return orjson.dumps({"predictions": out.numpy()}, option=orjson.OPT_SERIALIZE_NUMPY)

        steps = [
            ("parse + decode (codec)", parse_decode),
            ("orjson.loads + np.asarray", baseline_decode),
            ("Signature.run", lambda: sig.run({input_name: x})),
            ("signature(**kwargs) (ceiling's call)",
             lambda: fn(**{input_name: tf.constant(x)})),
            ("encode_predict", lambda: codec.encode_predict(outputs, row)),
            ("orjson.dumps numpy", lambda: orjson.dumps(
                {"predictions": outputs[next(iter(outputs))]},
                option=orjson.OPT_SERIALIZE_NUMPY)),
            ("whole _predict (sync)", whole),
            ("ceiling loop", ceiling),
        ]
        print(f"{images} image(s), body {len(body):,} bytes, path {req.path}/{req.decoded_by}")
        print(f"  {'step':40s} {'wall us':>9s} {'thread CPU us':>14s}")
        for label, step in steps:
            wall, cpu = _best(step, args.rounds)
            print(f"  {label:40s} {wall * 1e6:9.1f} {cpu * 1e6:14.1f}")


if __name__ == "__main__":
    main()
