"""Decode time of TF Serving predict bodies: our exact tiers, our SIMD tier, simdjson alone, and
MLServer's path (orjson + np.asarray of the same images as one flat V2 tensor).

Bodies are what the classic TF Serving clients send for an MNIST model:
``json.dumps({"signature_name": ..., "instances": x.tolist()})`` of float32 [N, 28, 28, 1]
images, N = 1, 10, 100, 1,000, with MNIST-like values (about 80 % zeros, the rest k/255) or
dense random values. Columns, CPU time per call (best of 5 rounds, so other processes on a busy
machine count less):

- exact: ``codec.parse_predict`` + ``decode_predict`` with the SIMD tier off (before issue 23)
- ours py: the same calls with the SIMD tier on pysimdjson alone (no compiled decoder)
- ours: the same calls as served: the compiled decoder where it was built (server/_simdnest.cpp)
- simdjson: pysimdjson parse + ``Array.as_buffer`` of the instances -> float32, no checks at all
- orjson V2: ``orjson.loads`` of the flat V2 body + ``np.asarray(data, float32)``

Every column's tensor is checked to be the same. Ratios are from the same run.
Run: python -m bench.decode_simd [--sizes 1,10,100,1000] [--budget 0.5] [--json] (about a
minute); ``make bench`` runs it and reports the table (bench/decode_report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import orjson
import simdjson

from bench.decode_report import COLUMNS, JSON_MARKER
from bench.decode_speed import mnist_like, per_call_ns
from bench.peers import v2_body
from tfserve_magic.server import codec, simd_decode

SPECS = {"x": codec.InputSpec("x", np.dtype("float32"), (-1, 28, 28, 1))}
_PARSER = simdjson.Parser()
COMPILED = simd_decode.COMPILED  # as served (False where the compiled decoder was not built)


def dense_random(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28, 1)).astype(np.float32)


def classic_body(x: np.ndarray) -> bytes:
    return json.dumps({"signature_name": "serving_default", "instances": x.tolist()}).encode()


def codec_decode(body: bytes, simd: bool, compiled: bool = True) -> np.ndarray:
    simd_decode.ENABLED = simd
    simd_decode.COMPILED = compiled and COMPILED
    try:
        request = codec.parse_predict(body)
        tensors, _ = codec.decode_predict(request, SPECS)
    finally:
        simd_decode.ENABLED, simd_decode.COMPILED = True, COMPILED
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
        "ours py": lambda: codec_decode(body, True, compiled=False),
        "ours": lambda: codec_decode(body, True),
        "simdjson": lambda: simdjson_only(body),
        "orjson V2": lambda: orjson_v2(v2),
    }
    for name, call in calls.items():
        got = call()
        assert got.dtype == x.dtype and got.tobytes() == x.tobytes(), name
    times = {name: per_call_ns(call, budget, min_runs=1) / 1e6 for name, call in calls.items()}
    return {"bytes": len(body), "ms": times}


KINDS = {"mnist": mnist_like, "dense": dense_random}


def measure_all(sizes, budget: float, log=None) -> dict:
    """Every (values, images) row: bytes and CPU ms per call of each column."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for kind, make in KINDS.items():
        for n in sizes:
            row = {"values": kind, "n_images": n, **measure(make(n), budget)}
            rows.append(row)
            if log is not None:
                log(format_row(row))
    return {"cpus": os.cpu_count(), "load_average": load, "budget_s": budget,
            "compiled": COMPILED, "rows": rows}


def header() -> str:
    cells = " ".join(f"{c:>10s}" for c in COLUMNS)
    return (f"{'values':6s} {'images':>6s} {'bytes':>10s} {cells} {'exact/ours':>10s} "
            f"{'ours/simd':>9s} {'V2/ours':>8s}")


def format_row(row: dict) -> str:
    ms = row["ms"]
    cells = " ".join(f"{ms[c]:10.3f}" for c in COLUMNS)
    return (f"{row['values']:6s} {row['n_images']:6d} {row['bytes']:10d} {cells} "
            f"{ms['exact'] / ms['ours']:9.2f}x {ms['ours'] / ms['simdjson']:8.2f}x "
            f"{ms['orjson V2'] / ms['ours']:7.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_simd", description=__doc__)
    parser.add_argument("--sizes", default="1,10,100,1000", help="images per body")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--json", action="store_true",
                        help=f"also print the rows as one JSON line after {JSON_MARKER.strip()!r}")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU ms per call, best of 5 rounds; {os.cpu_count()} CPUs, load average {load:.1f}; "
          f"compiled decoder {'built' if COMPILED else 'NOT built: ours = ours py'}")
    print(header())
    data = measure_all(sizes, args.budget, log=lambda line: print(line, flush=True))
    if args.json:
        print(JSON_MARKER + json.dumps(data), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
