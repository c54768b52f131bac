"""Per-request cost of small predict requests, step by step, without HTTP.

Times what ``ServingApp._predict`` does for one request (parse, decode, model call, encode)
on the harness's cached MNIST MLP and bodies, next to the in-process ceiling's
``orjson.loads`` + ``np.asarray`` + signature + ``orjson.dumps``. CPU time per call, best of
several rounds (the machine is shared, so the minimum is the steadiest number).
Run: ``python -m bench.small_requests [--images 1,100] [--rounds 7]``.

``--http TREE[,TREE...]`` instead serves the model from each source tree (a folder holding a
``tfserve_magic`` package, e.g. ``git archive HEAD tfserve_magic | tar -x -C /tmp/old``; ``.``
is this checkout) and drives it with wrk (1-image body, ``--concurrency``), alternating the
trees for ``--rounds`` rounds, so an A/B comparison sees the same machine load.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
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
    parser.add_argument("--http", help="comma-separated source trees to compare over HTTP")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve-args", default="", help="extra flags for every server")
    args = parser.parse_args()
    if args.http:
        _http_ab(args)
        return
    tf.config.threading.set_intra_op_parallelism_threads(1)
    servable = Servable("MLP", 1, args.model, ["serve"])
    sig = servable.signature("serving_default")
    gc.freeze()
    for images in [int(n) for n in args.images.split(",")]:
        _report(images, sig, args.rounds)


def _report(images: int, sig, rounds: int) -> None:
    """Print each step's cost for one body size."""
    fn = sig.function
    (input_name,) = sig.specs
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
        wall, cpu = _best(step, rounds)
        print(f"  {label:40s} {wall * 1e6:9.1f} {cpu * 1e6:14.1f}")


def _start_server(tree: str, base_path: str, extra: list, workdir: str):
    """A `tfserve_magic serve` process importing the package from `tree`; (process, url)."""
    info = os.path.join(workdir, f"info-{abs(hash(tree))}.json")
    if os.path.exists(info):
        os.unlink(info)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "tfserve_magic", "serve", "--model_name=MLP",
               f"--model_base_path={base_path}", "--rest_api_port=0", f"--info_file={info}",
               f"--parent_pid={os.getpid()}", *extra]
    # cwd elsewhere: `python -m` puts the working directory before PYTHONPATH on sys.path.
    process = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not os.path.exists(info):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server from {tree} did not start")
        time.sleep(0.05)
    with open(info) as f:
        url = json.load(f)["url"]
    return process, url


def _wrk(url: str, body_path: str, connections: int, seconds: int) -> float:
    lua = os.path.join(os.path.dirname(__file__), "wrk_post.lua")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", lua,
         f"{url}/v1/models/MLP:predict", "--", body_path],
        capture_output=True, text=True, check=True,
    ).stdout
    bad = re.search(r'"bad":\s*(\d+)', out)
    if bad and int(bad.group(1)):
        raise RuntimeError(f"wrk saw {bad.group(1)} bad responses")
    return float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))


def _http_ab(args) -> None:
    trees = args.http.split(",")
    base_path = os.path.dirname(os.path.abspath(args.model))
    with tempfile.TemporaryDirectory() as workdir:
        body_path = os.path.join(workdir, "body.json")
        with open(body_path, "wb") as f:
            f.write(_body(1))
        results = {tree: [] for tree in trees}
        cpu = {tree: [] for tree in trees}  # server CPU (all threads) per request, us
        for round_ in range(args.rounds):
            for tree in trees if round_ % 2 == 0 else trees[::-1]:
                process, url = _start_server(tree, base_path, args.serve_args.split(), workdir)
                try:
                    _wrk(url, body_path, args.concurrency, 1)  # warm-up
                    cpu_before = _cpu_seconds(process.pid)
                    rate = _wrk(url, body_path, args.concurrency, int(args.seconds))
                    cpu_us = (_cpu_seconds(process.pid) - cpu_before) / (rate * args.seconds) * 1e6
                    results[tree].append(rate)
                    cpu[tree].append(cpu_us)
                finally:
                    process.terminate()
                    process.wait(timeout=30)
                print(f"round {round_ + 1} {tree}: {results[tree][-1]:,.0f} req/s, server CPU "
                      f"{cpu[tree][-1]:,.0f} us/request", flush=True)
        for tree, values in results.items():
            print(f"{tree}: median {float(np.median(values)):,.0f} req/s "
                  f"({', '.join(f'{v:,.0f}' for v in values)}), server CPU "
                  f"{float(np.median(cpu[tree])):,.0f} us/request")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
