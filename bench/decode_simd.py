"""Decode time of TF Serving predict bodies: our exact tiers, our SIMD tier, simdjson alone, and
MLServer's path (orjson + np.asarray of the same images as one flat V2 tensor).

Bodies are what the classic TF Serving clients send for an MNIST model:
``json.dumps({"signature_name": ..., "instances": x.tolist()})`` of float32 [N, 28, 28, 1]
images, N = 1, 10, 100, 1,000, with MNIST-like values (about 80 % zeros, the rest k/255) or
dense random values. Columns, CPU time per call (best of 5 rounds, so other processes on a busy
machine count less):

- exact: ``codec.parse_predict`` + ``decode_predict`` with the SIMD tier off (before issue 23)
- ours: the same calls with the SIMD tier (server/simd_decode.py)
- simdjson: pysimdjson parse + ``Array.as_buffer`` of the instances -> float32, no checks at all
- orjson V2: ``orjson.loads`` of the flat V2 body + ``np.asarray(data, float32)``

Every column's tensor is checked to be the same. Ratios are from the same run.
Run: python -m bench.decode_simd [--sizes 1,10,100,1000] [--budget 0.5] (about a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import orjson
import simdjson

from bench.decode_speed import mnist_like, per_call_ns
from bench.peers import v2_body
from tfserve_magic.server import codec, simd_decode

SPECS = {"x": codec.InputSpec("x", np.dtype("float32"), (-1, 28, 28, 1))}
_PARSER = simdjson.Parser()


def dense_random(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28, 1)).astype(np.float32)


def classic_body(x: np.ndarray) -> bytes:
    return json.dumps({"signature_name": "serving_default", "instances": x.tolist()}).encode()


def codec_decode(body: bytes, simd: bool) -> np.ndarray:
    simd_decode.ENABLED = simd
    try:
        request = codec.parse_predict(body)
        tensors, _ = codec.decode_predict(request, SPECS)
    finally:
        simd_decode.ENABLED = True
    assert request.decoded_by == ("simd" if simd else "fast"), request.decoded_by
    return tensors["x"]


def simdjson_only(body: bytes) -> np.ndarray:
    doc = _PARSER.parse(body)
    instances = doc["instances"]
    shape = (len(instances), 28, 28, 1)
    flat = np.frombuffer(instances.as_buffer(of_type="d"), dtype=np.float64)
    del doc, instances  # the parser is reused: no proxies may outlive the call
    return flat.reshape(shape).astype(np.float32)


def orjson_v2(body: bytes) -> np.ndarray:
    tensor = orjson.loads(body)["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def measure(x: np.ndarray, budget: float) -> dict:
    body = classic_body(x)
    v2 = v2_body(body)
    calls = {
        "exact": lambda: codec_decode(body, False),
        "ours": lambda: codec_decode(body, True),
        "simdjson": lambda: simdjson_only(body),
        "orjson V2": lambda: orjson_v2(v2),
    }
    for name, call in calls.items():
        got = call()
        assert got.dtype == x.dtype and got.tobytes() == x.tobytes(), name
    times = {name: per_call_ns(call, budget, min_runs=1) / 1e6 for name, call in calls.items()}
    return {"bytes": len(body), "ms": times}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_simd", description=__doc__)
    parser.add_argument("--sizes", default="1,10,100,1000", help="images per body")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per measurement")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU ms per call, best of 5 rounds; {os.cpu_count()} CPUs, load average {load:.1f}")
    head = f"{'values':6s} {'images':>6s} {'bytes':>10s} " + " ".join(
        f"{c:>10s}" for c in ("exact", "ours", "simdjson", "orjson V2")
    )
    print(head + f" {'exact/ours':>10s} {'ours/simd':>9s} {'V2/ours':>8s}")
    for kind, make in (("mnist", mnist_like), ("dense", dense_random)):
        for n in sizes:
            row = measure(make(n), args.budget)
            ms = row["ms"]
            cells = " ".join(f"{ms[c]:10.3f}" for c in ("exact", "ours", "simdjson", "orjson V2"))
            print(
                f"{kind:6s} {n:6d} {row['bytes']:10d} {cells} {ms['exact'] / ms['ours']:9.2f}x "
                f"{ms['ours'] / ms['simdjson']:8.2f}x {ms['orjson V2'] / ms['ours']:7.2f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
