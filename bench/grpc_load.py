"""gRPC vs REST on our server, in the same run: the same model, images and concurrencies.

The gRPC load generator is Python (``grpc.aio``; ``ghz`` is in no package registry here): one
or two driver processes, each keeping its share of the concurrent calls in flight over its own
channels, sending the pre-serialized ``PredictRequest`` bytes (inputs in ``tensor_content``, as
``tf.make_tensor_proto`` writes them), so the client does as little per call as ``wrk`` does
for REST. Cells alternate REST and gRPC. Also measured here, in-process: what decoding one
request costs the server (``PredictRequest`` parse + ``np.frombuffer`` vs our JSON codec).

``python -m bench.grpc_load drive TARGET PAYLOAD CONCURRENCY SECONDS`` is the driver process.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.peers import REPO

PREDICT = "/tensorflow.serving.PredictionService/Predict"
_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def request_bytes(body: bytes) -> bytes:
    """The JSON bench body (``instances`` of [N,28,28,1]) as a serialized PredictRequest."""
    from tfserve_magic import _protos, tensor_proto

    doc = json.loads(body)
    request = _protos.apis("predict_pb2").PredictRequest()
    request.model_spec.name = "MLP"
    request.model_spec.signature_name = doc.get("signature_name", "serving_default")
    images = np.asarray(doc["instances"], dtype=np.float32)
    tensor_proto.fill(request.inputs["inputs"], images, content=True)
    return request.SerializeToString()


def _input_name(peer_url: str) -> str:
    """The signature's single input name, from the REST metadata of the peer."""
    import requests

    base = peer_url.split(":predict")[0]
    meta = requests.get(base + "/metadata", timeout=10).json()
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    (name,) = inputs
    return name


def _with_input_name(payload: bytes, name: str) -> bytes:
    from tfserve_magic import _protos

    request = _protos.apis("predict_pb2").PredictRequest.FromString(payload)
    if name != "inputs":
        request.inputs[name].CopyFrom(request.inputs["inputs"])
        del request.inputs["inputs"]
    return request.SerializeToString()


def _check(target: str, payload: bytes, expected: np.ndarray) -> int:
    """0 when one response matches the expected outputs, else 1."""
    import grpc

    from tfserve_magic import _protos, tensor_proto

    with grpc.insecure_channel(target, options=_OPTIONS) as channel:
        call = channel.unary_unary(PREDICT)
        raw = call(payload, timeout=60)
    response = _protos.apis("predict_pb2").PredictResponse.FromString(raw)
    (output,) = response.outputs.values()
    got = tensor_proto.to_numpy(output)
    return 0 if got.shape == expected.shape and np.allclose(got, expected, atol=1e-4) else 1


def run_grpc(target: str, payload_file: Path, concurrency: int, seconds: float) -> dict:
    """Drive ``concurrency`` calls in flight for ``seconds`` from 1 or 2 driver processes."""
    processes = 1 if concurrency == 1 else 2
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    drivers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.grpc_load", "drive", target, str(payload_file),
             str(share), str(seconds)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        for share in shares if share
    ]
    results = []
    for driver in drivers:
        out, _ = driver.communicate(timeout=seconds + 120)
        if driver.returncode != 0:
            raise RuntimeError(f"gRPC driver failed with code {driver.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    requests = sum(r["requests"] for r in results)
    elapsed = max(r["seconds"] for r in results)
    return {
        "requests": requests, "seconds": elapsed, "per_second": requests / elapsed,
        "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
        "errors": sum(r["errors"] for r in results), "generator": "python grpc.aio",
    }


def _percentile(values: list, pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(pct / 100 * (len(values) - 1))))]


async def _drive(target: str, payload: bytes, concurrency: int, seconds: float) -> dict:
    import grpc

    channels = [grpc.aio.insecure_channel(target, options=_OPTIONS) for _ in range(concurrency)]
    calls = [channel.unary_unary(PREDICT) for channel in channels]
    for call in calls:  # connect first, as wrk does
        await call(payload, timeout=60)
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(call):
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                await call(payload, timeout=60)
            except grpc.RpcError:
                errors[0] += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker(call) for call in calls))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return {"requests": len(latencies), "seconds": elapsed, "latencies_ms": latencies,
            "errors": errors[0]}


def decode_costs(bodies: dict) -> list:
    """Server-side decode of one request, microseconds: gRPC (parse + frombuffer) vs REST."""
    from tfserve_magic import _protos, tensor_proto
    from tfserve_magic.server import codec

    predict_pb2 = _protos.apis("predict_pb2")
    specs = {"inputs": ("inputs", np.dtype(np.float32), (None, 28, 28, 1))}
    rows = []
    for n_images, body in sorted(bodies.items()):
        payload = request_bytes(body)

        def grpc_decode(payload=payload):
            request = predict_pb2.PredictRequest.FromString(payload)
            return tensor_proto.to_numpy(request.inputs["inputs"])

        def rest_decode(body=body):
            return codec.decode_predict(codec.parse_predict(body), specs)[0]["inputs"]

        assert np.array_equal(grpc_decode(), rest_decode())
        rows.append({"n_images": n_images, "grpc_bytes": len(payload), "rest_bytes": len(body),
                     "grpc_us": _best_us(grpc_decode), "rest_us": _best_us(rest_decode)})
    return rows


def _best_us(fn, budget_s: float = 0.5) -> float:
    """Median of the per-call time over short batches (microseconds)."""
    fn()
    samples = []
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end or len(samples) < 5:
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        samples.append((time.perf_counter() - t0) / 10 * 1e6)
    return statistics.median(samples)


def measure(peer, assets, args, *, rest, log=print) -> dict:
    """Alternate REST (``rest(n_images, concurrency)``) and gRPC cells on the running ``peer``."""
    info = json.loads(Path(peer.info_file).read_text())
    if not info.get("grpc_port"):
        raise RuntimeError("our server reports no gRPC port")
    target = f"127.0.0.1:{info['grpc_port']}"
    name = _input_name(peer.url)
    payloads = {}
    for n_images in args.bodies:
        path = Path(args.build_dir) / "run" / f"grpc_{n_images}.bin"
        path.write_bytes(_with_input_name(request_bytes(assets.body_bytes(n_images)), name))
        payloads[n_images] = path
        run_grpc(target, path, 8, 0.5)  # warm-up
    rows = []
    for round_index in range(args.rounds):
        for n_images in args.bodies:
            for concurrency in args.concurrency:
                order = ("rest", "grpc") if round_index % 2 == 0 else ("grpc", "rest")
                for protocol in order:
                    if protocol == "grpc":
                        row = run_grpc(target, payloads[n_images], concurrency, args.seconds)
                        row["errors"] += _check(target, payloads[n_images].read_bytes(),
                                                assets.expected[("A", n_images)])
                    else:
                        row = rest(n_images, concurrency)
                    row.update({"protocol": protocol, "round": round_index,
                                "n_images": n_images, "concurrency": concurrency})
                    rows.append(row)
                    log(f"  r{round_index} {protocol:<5} {n_images:>3} img c={concurrency:<3} "
                        f"{row['per_second']:9.1f} req/s  p50 {row['p50_ms']:8.2f} ms  "
                        f"errors {row['errors']}")
    summary = []
    for n_images in args.bodies:
        for concurrency in args.concurrency:
            cell = {}
            for protocol in ("rest", "grpc"):
                mine = [r for r in rows if (r["protocol"], r["n_images"], r["concurrency"])
                        == (protocol, n_images, concurrency)]
                cell[protocol] = {
                    "per_second": statistics.median(r["per_second"] for r in mine),
                    "p50_ms": statistics.median(r["p50_ms"] for r in mine),
                    "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                    "errors": sum(r["errors"] for r in mine),
                }
            ratio = cell["grpc"]["per_second"] / max(cell["rest"]["per_second"], 1e-9)
            summary.append({"n_images": n_images, "concurrency": concurrency, "ratio": ratio,
                            **cell})
    bodies = {n: assets.body_bytes(n) for n in args.bodies}
    return {"rows": rows, "summary": summary, "decode": decode_costs(bodies), "target": target}


def targets(results: dict) -> list:
    """The issue's gRPC targets: >= 1.5x REST at 100 images c=8, >= 0.8x at 1 image."""
    found = {(s["n_images"], s["concurrency"]): s["ratio"]
             for s in (results.get("grpc") or {}).get("summary", [])}
    out = []
    for n_images, needed in ((100, 1.5), (1, 0.8)):
        value = found.get((n_images, 8))
        out.append({
            "name": f"gRPC vs our REST, {n_images} image{'s' if n_images > 1 else ''}, c=8",
            "needed": f">= {needed:g}x", "value": value,
            "measured": "n/a" if value is None else f"{value:.2f}x",
            "status": "n/a" if value is None else ("pass" if value >= needed else "miss"),
        })
    return out


def markdown_section(results: dict) -> str:
    grpc = results.get("grpc")
    if not grpc:
        return ""
    lines = ["## gRPC vs REST (our server, same run)", ""]
    if "error" in grpc:
        return "\n".join(lines + [f"The gRPC measurement failed: `{grpc['error']}`", ""])
    lines += [
        "The same server process, model and images over its two front ends: REST (JSON "
        "`instances`, the load generator above) and gRPC (`PredictRequest` with the images in "
        "`tensor_content`, as `tf.make_tensor_proto` writes them; a Python `grpc.aio` load "
        "generator in two processes, `ghz` being in no registry here). Cells alternate the two "
        "protocols; medians over rounds.",
        "",
        "| images | concurrency | REST req/s | gRPC req/s | gRPC / REST | REST p50 ms | "
        "gRPC p50 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in grpc["summary"]:
        lines.append(
            f"| {s['n_images']} | {s['concurrency']} | {s['rest']['per_second']:.0f} | "
            f"{s['grpc']['per_second']:.0f} | {s['ratio']:.2f}x | {s['rest']['p50_ms']:.2f} | "
            f"{s['grpc']['p50_ms']:.2f} | {s['rest']['errors'] + s['grpc']['errors']} |"
        )
    lines += ["", "Decode cost per request on the server (one core, in-process, best of batches):",
              "", "| images | gRPC bytes | gRPC decode us | REST bytes | REST decode us | "
              "REST / gRPC |", "|---:|---:|---:|---:|---:|---:|"]
    for d in grpc["decode"]:
        lines.append(
            f"| {d['n_images']} | {d['grpc_bytes']:,} | {d['grpc_us']:.1f} | "
            f"{d['rest_bytes']:,} | {d['rest_us']:.1f} | {d['rest_us'] / d['grpc_us']:.0f}x |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "drive":
        _, target, payload_file, concurrency, seconds = argv
        payload = Path(payload_file).read_bytes()
        result = asyncio.run(_drive(target, payload, int(concurrency), float(seconds)))
        print(json.dumps(result))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
