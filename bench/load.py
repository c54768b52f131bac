"""HTTP load generators: wrk when installed, else a bounded asyncio client on raw streams.

Both keep ``concurrency`` keep-alive connections busy for a fixed time, POSTing the same body,
and return a ``LoadResult``. wrk's Lua script counts every response that is not a 200 with
``"predictions"``; the asyncio client checks every response's values itself. ``check_sample``
uses the asyncio client to check a few responses' values when wrk generates the load.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import numpy as np

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
RESULT_PREFIX = "BENCH "
SLOW_PEER_PER_SECOND = 30.0  # below this one-by-one rate a peer is driven by the Python client


@dataclass
class LoadResult:
    """One measurement: ``requests`` answered in ``seconds`` by one peer."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx, wrong or unparsable bodies, socket errors, timeouts
    checked: int  # responses whose values were compared with the expected predictions
    generator: str
    failed: int = 0  # of ``errors``: requests that got no response at all (socket errors)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "per_second": self.per_second}


def wrk_path() -> Optional[str]:
    return shutil.which("wrk")


def run_wrk(url: str, body_file: Path, concurrency: int, seconds: float,
            marker: str = "predictions") -> LoadResult:
    """Drive ``url`` with wrk (one thread: the generator shares the cores with the server)."""
    command = [
        wrk_path() or "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "120s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(body_file),
        marker,  # a 200 without this key in its body counts as bad
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 180)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    stats = json.loads(lines[-1][len(RESULT_PREFIX) :])
    socket_errors = sum(stats[key] for key in ("connect", "read", "write", "timeout"))
    return LoadResult(
        requests=stats["requests"],
        seconds=stats["duration_us"] / 1e6,
        p50_ms=stats["p50_us"] / 1000.0,
        p99_ms=stats["p99_us"] / 1000.0,
        errors=max(stats["bad"], stats["status"]) + socket_errors,
        checked=0,
        generator="wrk",
        failed=socket_errors,
    )


def prediction_checker(expected: np.ndarray, atol: float = 1e-4,
                       protocol: str = "v1") -> Callable[[bytes], bool]:
    """A function telling whether a response body holds ``expected`` as its predictions
    (``protocol="v2"``: an Open Inference Protocol answer, first output, flat data + shape)."""
    import orjson

    def check(body: bytes) -> bool:
        try:
            answer = orjson.loads(body)
            if protocol == "v2":
                output = answer["outputs"][0]
                predictions = np.asarray(output["data"], dtype=np.float32).reshape(
                    output["shape"])
            else:
                predictions = np.asarray(answer["predictions"], dtype=np.float32)
        except (ValueError, KeyError, TypeError, IndexError):
            return False
        return predictions.shape == expected.shape and bool(
            np.allclose(predictions, expected, atol=atol, rtol=0)
        )

    return check


def run_python(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    check: Callable[[bytes], bool],
    max_requests: Optional[int] = None,
    timeout: float = 120.0,
) -> LoadResult:
    """Drive ``url`` with ``concurrency`` keep-alive connections, checking every response."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_drive(url, body, concurrency, seconds, check, max_requests, timeout))


def check_sample(url: str, body: bytes, check: Callable[[bytes], bool], count: int = 3) -> int:
    """Send ``count`` requests one after another; return how many were not answered right."""
    result = run_python(url, body, 1, 60.0, check, max_requests=count)
    wrong = result.errors - result.failed
    return count - (result.requests - wrong)


class _Budget:
    """Shared across connections: stops everyone at the deadline or after ``max_requests``."""

    def __init__(self, seconds: float, max_requests: Optional[int]):
        self.deadline = time.perf_counter() + seconds
        self.left = max_requests

    def take(self) -> bool:
        if time.perf_counter() >= self.deadline:
            return False
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        return True


async def _drive(url, body, concurrency, seconds, check, max_requests, timeout) -> LoadResult:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    budget = _Budget(seconds, max_requests)
    latencies: list[float] = []
    counts = {"errors": 0, "checked": 0, "failed": 0}
    started = time.perf_counter()
    workers = [
        _connection(parts.hostname, parts.port, request, budget, latencies, counts, check, timeout)
        for _ in range(concurrency)
    ]
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies or [0.0]) * 1000.0
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        errors=counts["errors"],
        checked=counts["checked"],
        generator="python",
        failed=counts["failed"],
    )


async def _connection(host, port, request, budget, latencies, counts, check, timeout) -> None:
    reader = writer = None
    while budget.take():
        began = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, body, keep_alive = await asyncio.wait_for(_read_response(reader), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            counts["errors"] += 1
            counts["failed"] += 1
            writer = _close(writer)
            await asyncio.sleep(0.01)
            continue
        latencies.append(time.perf_counter() - began)
        counts["checked"] += 1
        if status != 200 or not check(body):
            counts["errors"] += 1
        if not keep_alive:
            writer = _close(writer)
    _close(writer)


def _close(writer):
    if writer is not None:
        writer.close()
    return None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one HTTP/1.x response: (status, body, whether the connection stays open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    connection = headers.get("connection", "")
    keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        body = await reader.read()
        keep_alive = False
    return int(status), body, keep_alive
