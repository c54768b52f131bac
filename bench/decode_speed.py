"""Decode speed of predict bodies: orjson + np.asarray versus the codec (fast path).

Prints CPU ns per body for MNIST-shaped requests ([N, 28, 28, 1] float32, about 80 % zeros, as
a Python client sends them: json.dumps(x.tolist()), orjson, or orjson on the numpy array as
tfserve_magic.Client does), for N = 1 and 100, and the cost of encoding a 100x10 float32
softmax response and a 100x784 one.
Run: .venv/bin/python bench/decode_speed.py
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import orjson

from tfserve_magic.server import codec

SPECS = {"x": ("x", np.dtype("float32"), (-1, 28, 28, 1))}


def mnist_like(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28, 1)).astype(np.float32) / 255
    x[rng.random(x.shape) < 0.8] = 0.0
    return x


def per_call_ns(fn, budget_s: float = 1.0, min_runs: int = 5) -> float:
    """Best of 5 rounds of the mean CPU time per call.

    Thread CPU time rather than wall time: the 2-core development machine is shared, and CPU
    time stays meaningful when other processes compete for the cores.
    """
    fn()
    runs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s / 5 or runs < min_runs:
        fn()
        runs += 1
    rounds = []
    for _ in range(5):
        t0 = time.thread_time_ns()
        for _ in range(runs):
            fn()
        rounds.append((time.thread_time_ns() - t0) / runs)
    return min(rounds)


def baseline(body: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(body)["instances"], dtype=np.float32)


def ours(body: bytes) -> np.ndarray:
    request = codec.parse_predict(body)
    tensors, _ = codec.decode_predict(request, SPECS)
    return tensors["x"]


def main() -> int:
    print(f"{'body':32s} {'bytes':>9s} {'orjson+asarray':>15s} {'codec':>12s} {'speed-up':>9s}")
    for n in (1, 100):
        x = mnist_like(n)
        for style, body in (
            ("json.dumps", json.dumps({"instances": x.tolist()}).encode()),
            ("orjson", orjson.dumps({"instances": x.tolist()})),
            # What tfserve_magic.Client sends: float32 written as float32 (short reprs).
            ("orjson numpy", orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)),
        ):
            request = codec.parse_predict(body)
            codec.decode_predict(request, SPECS)
            assert request.decoded_by in ("simd", "fast"), "the fast path was not taken"
            assert np.array_equal(ours(body), baseline(body))
            base = per_call_ns(lambda body=body: baseline(body))
            mine = per_call_ns(lambda body=body: ours(body))
            label = f"{n} image(s), {style}"
            print(f"{label:32s} {len(body):9d} {base:13.0f}ns {mine:10.0f}ns {base / mine:8.1f}x")
    rng = np.random.default_rng(1)
    softmax = rng.dirichlet(np.ones(10), size=100).astype(np.float32)
    enc = per_call_ns(lambda: codec.encode_predict({"probs": softmax}, True))
    print(f"encode 100x10 float32 softmax: {enc / 1e3:.0f} us per response")
    images = rng.random((100, 784)).astype(np.float32)
    enc = per_call_ns(lambda: codec.encode_predict({"images": images}, True))
    print(f"encode 100x784 float32 output: {enc / 1e6:.1f} ms per response")
    return 0


if __name__ == "__main__":
    sys.exit(main())
