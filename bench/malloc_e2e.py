"""Would glibc malloc tuning help a real 100-image request? (issue 23; docs/codec.md)

A 100-image REST body is about 1 MB and every step after it (the received chunks, the joined
body, simdjson's buffers, the float64 buffer, the tensor) allocates a block of that order.
glibc serves such blocks with mmap until its dynamic threshold has risen past them, and trims
freed heap tops. Fixed thresholds (what ``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` and
``mallopt(M_TRIM_THRESHOLD, 128 MiB)`` at server start would set) keep freed blocks for the
next request. This starts our server twice on the bench model (``--workers=1``): as the CLI
runs it, and with the same thresholds through glibc's environment variables
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, the same effect as mallopt before the
first allocation). Then it sends the classic 100-image body to each, one request at a time
(c=1, keep-alive), alternating the two servers request by request so that the load of a shared
machine falls on both alike. Reports per server: median and p90 wall time per request as a
client sees it, and the server's CPU ms per request (all threads). Every answer must be a 200;
every 50th is checked against the model's predictions.

Run: python -m bench.malloc_e2e [--requests 300] (a minute or two, plus the model's training
on first use). Linux/glibc only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from bench.model import prepare_assets
from bench.peers import REPO, start_peer, wait_ready

N_IMAGES = 100
TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}
SETTINGS = {"thresholds set": TUNED, "glibc default": {}}  # label -> extra environment


def _cpu_seconds(peer) -> float:
    """The server's CPU time: nanosecond /proc schedstat of every thread on Linux (psutil's
    clock ticks are 10 ms, coarser than a request), else psutil."""
    total = 0
    try:
        for task in Path(f"/proc/{peer.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):  # a thread that just ended
                continue
    except OSError:
        return peer.cpu_seconds()
    return total / 1e9


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=60), parts.path


def _check(answer: bytes, expected: np.ndarray) -> None:
    got = np.asarray(json.loads(answer)["predictions"], dtype=np.float32)
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5):
        raise RuntimeError("a prediction does not match the model's")


def measure(requests: int, build_dir: Path, log=print) -> dict:
    assets = prepare_assets(build_dir, log=log)
    body = assets.body_bytes(N_IMAGES)
    expected = assets.expected[("A", N_IMAGES)]
    workdir = build_dir / "malloc_e2e"
    peers, saved = {}, {name: os.environ.pop(name, None) for name in TUNED}
    try:
        for label, extra in SETTINGS.items():
            os.environ.update(extra)  # start_peer passes this process's environment on
            try:
                peers[label] = start_peer("ours", assets.versions["A"], assets.base_path,
                                          workdir, tag="_" + label.replace(" ", "_"))
            finally:
                for name in extra:
                    os.environ.pop(name, None)
        for peer in peers.values():
            wait_ready(peer, assets.body_bytes(1))
        connections = {label: _connection(peer.url) for label, peer in peers.items()}
        headers = {"Content-Type": "application/json"}
        walls = {label: [] for label in peers}
        cpu = dict.fromkeys(peers, 0.0)
        for i in range(requests + 20):  # the first 20 rounds warm up and are not counted
            order = list(peers) if i % 2 == 0 else list(reversed(list(peers)))
            for label in order:
                conn, path = connections[label]
                cpu_before = _cpu_seconds(peers[label])
                start = time.perf_counter()
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                wall = time.perf_counter() - start
                cpu_spent = _cpu_seconds(peers[label]) - cpu_before
                if response.status != 200:
                    raise RuntimeError(f"{label}: HTTP {response.status}: {answer[:200]!r}")
                if i % 50 == 0:
                    _check(answer, expected)
                if i >= 20:
                    walls[label].append(wall)
                    cpu[label] += cpu_spent
        for conn, _ in connections.values():
            conn.close()
    finally:
        os.environ.update({name: value for name, value in saved.items() if value is not None})
        for peer in peers.values():
            peer.stop()
    rows = {}
    for label, times in walls.items():
        times.sort()
        rows[label] = {
            "median_ms": statistics.median(times) * 1e3,
            "p90_ms": times[int(0.9 * (len(times) - 1))] * 1e3,
            "cpu_ms": cpu[label] / len(times) * 1e3,  # mean: CPU time adds up
            "requests": len(times),
        }
    return {"bytes": len(body), "load_average": os.getloadavg(), "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.malloc_e2e", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="counted requests per server")
    parser.add_argument("--build-dir", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    result = measure(args.requests, args.build_dir)
    print(f"{N_IMAGES}-image body ({result['bytes']:,} bytes), c=1, {args.requests} requests "
          f"each, alternating; load average {result['load_average'][0]:.1f}")
    print(f"{'server':15s} {'median ms':>10s} {'p90 ms':>8s} {'CPU ms/req':>11s}")
    for label, row in result["rows"].items():
        print(f"{label:15s} {row['median_ms']:10.2f} {row['p90_ms']:8.2f} {row['cpu_ms']:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
