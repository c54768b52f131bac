"""Where our server's time goes: py-spy samples of it under the benchmark's load.

The server is started, warmed up, then sampled by ``py-spy record --pid`` (the same user's
process; no root needed where ptrace is not restricted) while one body and concurrency drive it.
The raw stacks are folded into the functions that take the most samples, by self time and by
inclusive time, and into the parts of the server they belong to.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import load
from bench.model import BenchAssets
from bench.peers import REPO, start_peer, wait_ready

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# The process's entry frames, under nearly every sample: left out of the inclusive ranking.
_ENTRY = re.compile(r"\(tfserve_magic/(cli|__main__|server/main)\.py\)$")
# A sample belongs to the first part that its deepest matching frame's file falls in.
PARTS = (
    ("JSON <-> numpy codec (server/codec.py and its parsers)",
     ("tfserve_magic/server/codec", "tfserve_magic/server/_fastjson",
      "tfserve_magic/server/_rapidjson")),
    ("batching scheduler (server/batching.py)", ("tfserve_magic/server/batching.py",)),
    ("numpy", ("numpy/",)),
    ("model call (TensorFlow)", ("tensorflow/", "keras/")),
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
    gil: bool = True,
) -> dict:
    """Sample our server (attached by pid, after start-up and a warm-up) under load.

    With ``gil`` (the default) only the thread holding the GIL is sampled: the server is one
    Python process, so that is the serial work that bounds it, and ``gil_busy`` says how much
    of the time the GIL was held. Without, every running Python thread is sampled.
    """
    spy = py_spy_path()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    key = "ours_batching" if batching else "ours"
    tag = f"_profile_{n_images}img_c{concurrency}"
    raw_file = workdir / f"{key}{tag}.txt"
    raw_file.unlink(missing_ok=True)
    body = assets.body_bytes(n_images)
    check = load.prediction_checker(assets.expected[("A", n_images)])
    server = start_peer(key, assets.versions["A"], assets.base_path, workdir, tag=tag)
    try:
        wait_ready(server, body)
        load.run_python(server.url, body, concurrency, 1.0, check)  # warm-up, not sampled
        record = [spy, "record", "--pid", str(server.pid), "--format", "raw", "--rate",
                  str(rate), "--nonblocking", "-o", str(raw_file)] + (["--gil"] if gil else [])
        with open(workdir / f"{key}{tag}.py-spy.log", "w") as spy_log:
            sampler = subprocess.Popen(record, stdout=spy_log, stderr=spy_log)
        try:
            time.sleep(1.0)  # attached
            if sampler.poll() is not None:
                raise RuntimeError(f"py-spy could not attach to pid {server.pid} "
                                   f"(see {spy_log.name})")
            began = time.perf_counter()
            if load.wrk_path():
                result = load.run_wrk(server.url, assets.bodies[n_images], concurrency, seconds)
            else:
                result = load.run_python(server.url, body, concurrency, seconds, check)
            loaded_s = time.perf_counter() - began
        finally:
            if sampler.poll() is None:
                sampler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            sampler.wait(60)
    finally:
        server.stop()
    if not raw_file.exists():
        raise RuntimeError(f"py-spy wrote no samples (see {spy_log.name})")
    summary = fold(raw_file.read_text())
    summary.update({"n_images": n_images, "concurrency": concurrency, "peer": key,
                    "raw_file": str(raw_file), "per_second": result.per_second, "gil": gil,
                    "gil_busy": summary["samples"] / (rate * loaded_s) if gil else None})
    (workdir / f"{key}{tag}.json").write_text(json.dumps(summary, indent=1))
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
            if "(tfserve_magic/" in name and not _ENTRY.search(name):
                inclusive[name] += samples  # inclusive time: our own functions only
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
