"""Where our server's time goes: py-spy samples of it under the benchmark's load.

The server is started as py-spy's child (so no ptrace rights beyond the user's own are needed),
driven with one body and concurrency, and stopped; the raw stacks are folded into the functions
that take the most samples, by self time and by inclusive time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import load
from bench.model import BenchAssets
from bench.peers import BATCHING_FILE, PEERS, REPO, RunningPeer, ours_command, tf_env, wait_ready

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# A sample belongs to the first part that its deepest matching frame's file falls in.
PARTS = (
    ("JSON <-> numpy codec (server/codec.py)", ("tfserve_magic/server/codec.py",)),
    ("batching scheduler (server/batching.py)", ("tfserve_magic/server/batching.py",)),
    ("numpy", ("numpy/",)),
    ("model call (TensorFlow's Python side and its kernels)", ("tensorflow/", "keras/")),
    ("routing, checks, model manager (server/*.py)", ("tfserve_magic/",)),
    ("HTTP server (uvicorn, httptools, h11)", ("uvicorn/", "httptools/", "h11/")),
    ("event loop, threads, logging", ("asyncio/", "uvloop/", "concurrent/", "threading.py",
                                      "logging/")),
)


def py_spy_path() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def profile_ours(
    assets: BenchAssets,
    workdir: Path,
    n_images: int,
    concurrency: int,
    seconds: float,
    batching: bool = False,
    rate: int = 250,
) -> dict:
    """Sample our server under load; return the folded profile summary."""
    spy = py_spy_path()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    key = "ours_batching" if batching else "ours"
    tag = f"{key}_{n_images}img_c{concurrency}"
    raw_file = workdir / f"profile_{tag}.txt"
    info_file = workdir / f"profile_{tag}.info.json"
    info_file.unlink(missing_ok=True)
    log_path = workdir / f"profile_{tag}.log"
    extra = []
    if batching:
        extra = ["--enable_batching", f"--batching_parameters_file={BATCHING_FILE}"]
    record = [spy, "record", "--format", "raw", "--rate", str(rate), "--nonblocking"]
    record += ["-o", str(raw_file), "--"]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            record + ours_command(assets.base_path, info_file, *extra),
            cwd=REPO, env=tf_env(), stdout=log_file, stderr=log_file, start_new_session=True,
        )
    server = RunningPeer(PEERS[key], process, log_path, info_file=info_file)
    try:
        body = assets.body_bytes(n_images)
        wait_ready(server, body)
        if load.wrk_path():
            result = load.run_wrk(server.url, assets.bodies[n_images], concurrency, seconds)
        else:
            check = load.prediction_checker(assets.expected[("A", n_images)])
            result = load.run_python(server.url, body, concurrency, seconds, check)
        # Stop the server itself; py-spy then writes its file and exits.
        server_pid = server.pid
        if server_pid != process.pid:
            os.kill(server_pid, signal.SIGTERM)
        process.wait(60)
    finally:
        server.stop()
    summary = fold(raw_file.read_text())
    summary.update(
        {"n_images": n_images, "concurrency": concurrency, "peer": key, "raw_file": str(raw_file),
         "per_second": result.per_second}
    )
    (workdir / f"profile_{tag}.json").write_text(json.dumps(summary, indent=1))
    return summary


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in file:
            tail = file.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return file


def _frame(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['name']} ({_short(match['file'])})"


def fold(raw: str, top: int = 12) -> dict:
    """Top functions from py-spy's raw (collapsed) output: by self samples (any code), by
    inclusive samples (our functions), and the share of each part of the stack (``PARTS``)."""
    self_counts: Counter = Counter()
    inclusive: Counter = Counter()
    parts: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if f]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if not frames:
            continue
        samples = int(count)
        total += samples
        self_counts[frames[-1]] += samples
        for name in set(frames):
            if "(tfserve_magic/" in name:  # inclusive time: our own functions only
                inclusive[name] += samples
        parts[_part(frames)] += samples

    def table(counter: Counter) -> list:
        return [[name, n, 100.0 * n / total] for name, n in counter.most_common(top)]

    return {"samples": total, "self": table(self_counts), "inclusive": table(inclusive),
            "categories": table(parts)}


def _part(frames: list) -> str:
    for frame in reversed(frames):
        for name, prefixes in PARTS:
            if any(f"({prefix}" in frame for prefix in prefixes):
                return name
    return "other"
