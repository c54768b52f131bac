"""Peer (e): the in-process ceiling, the same work as a server minus HTTP.

A loop of orjson parse, ``np.asarray``, the signature call and an orjson dump on the same bodies
the servers get, with the model's objects frozen out of the garbage collector (``gc.freeze``).
It runs as its own process so it shares the machine the way the servers do, and answers the
harness over stdin/stdout: a line ``{"body": PATH, "seconds": S}`` in, one ``BENCH {...}``
result line out.
Run: ``python -m bench.ceiling SAVED_MODEL_DIR``.
"""

from __future__ import annotations

import gc
import json
import sys
import time

import numpy as np
import orjson
import tensorflow as tf

PREFIX = "BENCH "


def make_call(saved_model_dir: str):
    """One request's work as a function: body bytes in, response bytes out."""
    infer = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    (input_name,) = infer.structured_input_signature[1].keys()

    def call(body: bytes) -> bytes:
        request = orjson.loads(body)
        images = np.asarray(request["instances"], dtype=np.float32)
        (output,) = infer(**{input_name: tf.constant(images)}).values()
        return orjson.dumps({"predictions": output.numpy()}, option=orjson.OPT_SERIALIZE_NUMPY)

    return call


def measure(call, body: bytes, seconds: float) -> dict:
    latencies = []
    start = time.perf_counter()
    deadline = start + seconds
    response = b""
    now = start
    while now < deadline:
        began = now
        response = call(body)
        now = time.perf_counter()
        latencies.append(now - began)
    ms = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "seconds": now - start,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "response": response.decode(),
    }


def main() -> None:
    call = make_call(sys.argv[1])
    # Move TensorFlow's few hundred thousand objects out of the collector's sight: otherwise the
    # ~80k lists a 100-image body parses into trigger full collections that walk all of them,
    # and the "ceiling" would mostly measure the garbage collector.
    gc.freeze()
    print(PREFIX + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        order = json.loads(line)
        with open(order["body"], "rb") as handle:
            body = handle.read()
        print(PREFIX + json.dumps(measure(call, body, float(order["seconds"]))), flush=True)


if __name__ == "__main__":
    main()
