"""First request after start and after a hot swap, with and without warm-up records (issue 22).

A convolutional model's first call pays for work TensorFlow defers until then (graph
optimisation, kernel and buffer set-up), so without warm-up the first user request is far slower
than the next ones. TF Serving (and our server) replays
``<version>/assets.extra/tf_serving_warmup_requests`` before a version serves; here
``export_model(..., warmup=X)`` writes that file. Two model folders hold the same CNN, one with
warm-up records and one without; for each, a server (one worker) is started and timed on its
first predict, then version 2 is renamed into the base path (hot swap) and the first predict
answered by version 2 is timed. Reported: first-request latencies, the steady latency (median
of the next requests) and the ratios cold / warm.

``python -m bench.warmup_first_request [--rounds N]`` runs it alone and rewrites its section
of docs/benchmarks.md (``--no-write`` leaves the file alone).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.env import REPO, tf_env

BEGIN, END = "<!-- warmup-first-request:begin -->", "<!-- warmup-first-request:end -->"
IMAGE = (64, 64, 3)
STEADY_REQUESTS = 9
START_TIMEOUT_S = 600.0


def log(message: str) -> None:
    print(f"[warmup-bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- the model (child process: the harness never imports TensorFlow) ----


def _build(root: str) -> None:
    """Write cold/1, cold/2 (no warm-up) and warm/1, warm/2 (3 warm-up records) under root;
    version 2 goes to a staging folder, renamed into the base path during the run."""
    import keras
    import numpy as np

    from tfserve_magic.export import export_model

    rows = np.random.default_rng(0).random((3, *IMAGE), dtype=np.float32)
    for version in (1, 2):
        keras.utils.set_random_seed(version)
        x = inputs = keras.Input(IMAGE, name="image")
        for filters in (32, 64, 64, 128, 128):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
        for kind, warmup in (("cold", None), ("warm", rows)):
            target = Path(root) / (kind if version == 1 else f"stage-{kind}")
            export_model(model, target, version=version, verify=False, warmup=warmup)


def build_models(root: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.warmup_first_request", "--build",
                           str(root)], cwd=REPO, env=tf_env(), capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"building the model failed:\n{done.stderr[-3000:]}")


# ---- one server ----


class Server:
    def __init__(self, base: Path, workdir: Path, name: str):
        self.info_path = workdir / f"{name}.json"
        self.log_path = workdir / f"{name}.log"
        cmd = [sys.executable, "-m", "tfserve_magic", "serve", f"--model_base_path={base}",
               f"--model_name={name}", "--rest_api_port=0", "--port=-1", "--workers=1",
               "--file_system_poll_wait_seconds=0.2", f"--info_file={self.info_path}"]
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(cmd, cwd=REPO, env=tf_env(), stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.started = time.perf_counter()
        self.name = name
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.info_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server {name} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.start_s = time.perf_counter() - self.started
        self.url = json.loads(self.info_path.read_text())["url"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def predict(self, body: bytes) -> tuple[float, dict]:
        started = time.perf_counter()
        response = requests.post(f"{self.url}/v1/models/{self.name}:predict", data=body,
                                 timeout=120)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed, response.json()

    def available(self, version: int) -> bool:
        body = requests.get(f"{self.url}/v1/models/{self.name}", timeout=10).json()
        return any(s["version"] == str(version) and s["state"] == "AVAILABLE"
                   for s in body.get("model_version_status", []))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _body() -> bytes:
    import numpy as np

    image = np.random.default_rng(1).random((1, *IMAGE), dtype=np.float32)
    return json.dumps({"instances": image.round(4).tolist()}).encode()


def measure(root: Path, kind: str, workdir: Path) -> dict:
    """First and steady latency after start and after the hot swap, for one model folder."""
    body = _body()
    base = workdir / kind
    shutil.copytree(root / kind, base)
    server = Server(base, workdir, kind)
    try:
        first, answer = server.predict(body)
        steady = statistics.median(server.predict(body)[0] for _ in range(STEADY_REQUESTS))
        out = {"start_s": server.start_s, "first_s": first, "steady_s": steady}
        hidden = base / ".incoming-2"
        shutil.copytree(root / f"stage-{kind}" / "2", hidden)
        os.rename(hidden, base / "2")  # the hot swap
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.available(2):
            if time.monotonic() > deadline:
                raise RuntimeError(f"version 2 of {kind} did not load:\n{server.log()[-3000:]}")
            time.sleep(0.01)
        out["swap_first_s"], swapped = server.predict(body)
        if swapped == answer:
            raise RuntimeError("the first request after the swap was not answered by version 2")
        out["swap_steady_s"] = statistics.median(
            server.predict(body)[0] for _ in range(STEADY_REQUESTS))
        counts = re.findall(r"Number of warmup records read: (\d+)", server.log())
        out["warmup_records"] = [int(c) for c in counts]
        return out
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def run(rounds: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="warmup-bench-") as tmp:
        root = Path(tmp) / "models"
        log("exporting the CNN (two versions, with and without warm-up records) ...")
        build_models(root)
        samples: dict[str, list[dict]] = {"cold": [], "warm": []}
        for index in range(rounds):
            for kind in (("cold", "warm") if index % 2 == 0 else ("warm", "cold")):
                result = measure(root, kind, Path(tmp))
                log(f"  {kind}: first {result['first_s'] * 1e3:.0f} ms (steady "
                    f"{result['steady_s'] * 1e3:.0f} ms), after swap first "
                    f"{result['swap_first_s'] * 1e3:.0f} ms; warm-up records "
                    f"{result['warmup_records']}")
                samples[kind].append(result)
    median = {kind: {key: statistics.median(r[key] for r in runs) for key in runs[0]
                     if key != "warmup_records"} for kind, runs in samples.items()}
    if samples["warm"][0]["warmup_records"] != [3, 3] or samples["cold"][0]["warmup_records"]:
        raise RuntimeError(f"unexpected warm-up replay: {samples}")
    return {
        "median": median, "rounds": rounds,
        "ratio_start": median["cold"]["first_s"] / median["warm"]["first_s"],
        "ratio_swap": median["cold"]["swap_first_s"] / median["warm"]["swap_first_s"],
        "load_average": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
    }


# ---- docs/benchmarks.md ----


def section(result: dict) -> str:
    med = result["median"]

    def ms(value: float) -> str:
        return f"{value * 1e3:.0f}"

    rows = [
        f"| after start | {ms(med['cold']['first_s'])} | {ms(med['warm']['first_s'])} | "
        f"{ms(med['cold']['steady_s'])} | {ms(med['warm']['steady_s'])} | "
        f"**{result['ratio_start']:.1f}x** |",
        f"| after hot swap | {ms(med['cold']['swap_first_s'])} | "
        f"{ms(med['warm']['swap_first_s'])} | {ms(med['cold']['swap_steady_s'])} | "
        f"{ms(med['warm']['swap_steady_s'])} | **{result['ratio_swap']:.1f}x** |",
    ]
    return "\n".join([
        BEGIN,
        "## First request with and without warm-up",
        "",
        "A CNN (ten 3x3 convolutions on 64x64x3 images, untrained) exported twice by "
        "`export_model`, once with `warmup=` three sample images (TF Serving's "
        "`assets.extra/tf_serving_warmup_requests`), served by one worker; one image per "
        "request over REST (`python -m bench.warmup_first_request`). TensorFlow defers graph "
        "optimisation and kernel set-up to a function's first call; with warm-up records the "
        "server pays it while loading, before the version is AVAILABLE. The hot swap renames "
        "version 2 into the base path and times the first request version 2 answers. Steady: "
        f"median of the next {STEADY_REQUESTS} requests. {result['rounds']} round(s); "
        f"{result['cpus']} CPUs, load average {result['load_average'][0]} at the end (a busy "
        "shared machine: the first-request times vary with the load, the ratio less). From "
        f"launch to ready: {med['cold']['start_s']:.1f} s without warm-up, "
        f"{med['warm']['start_s']:.1f} s with (the replay runs while loading).",
        "",
        "| first request | without warm-up (ms) | with warm-up (ms) | steady without (ms) | "
        "steady with (ms) | without / with |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        END,
    ])


def write_section(result: dict, md_path: Path) -> None:
    """Replace this bench's section of docs/benchmarks.md, or append it at the end."""
    text = md_path.read_text() if md_path.exists() else ""
    new = section(result)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + new + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    md_path.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warmup_first_request",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (default 1)")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--build", metavar="DIR", help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args(argv)
    if args.build:
        _build(args.build)
        return 0
    result = run(max(1, args.rounds))
    log(f"first request without / with warm-up: after start {result['ratio_start']:.1f}x, "
        f"after hot swap {result['ratio_swap']:.1f}x")
    print(json.dumps(result))
    if not args.no_write:
        write_section(result, REPO / "docs" / "benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
