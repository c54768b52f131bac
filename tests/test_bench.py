"""The benchmark harness's own parts (bench/), without TensorFlow or a model server.

The full harness runs with ``make bench``; these check the pieces that decide its numbers: the
asyncio load client against real HTTP servers (keep-alive, chunked, close-delimited, errors),
py-spy's folded-stack parsing, the target verdicts and the report files.
"""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest

from bench import load, report
from bench.peers import REPO
from bench.profile import fold

EXPECTED = np.array([[0.1, 0.9]], dtype=np.float32)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "length"  # set per server: length | chunked | close | wrong | status

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        request = json.loads(self.rfile.read(length))
        n = len(request["instances"])
        values = EXPECTED.tolist() * n
        if self.mode == "wrong":
            values = [[0.9, 0.1]] * n
        body = json.dumps({"predictions": values}).encode()
        self.send_response(503 if self.mode == "status" else 200)
        self.send_header("Content-Type", "application/json")
        if self.mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(body) // 2
            for part in (body[:half], body[half:], b""):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        elif self.mode == "close":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def http_server():
    servers = []

    def start(mode: str) -> str:
        handler = type(f"Handler_{mode}", (_Handler,), {"mode": mode})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1/models/MLP:predict"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


BODY = json.dumps({"instances": [[[[0.0]]]]}).encode()


@pytest.mark.parametrize("mode", ["length", "chunked", "close"])
def test_python_client_reads_every_framing_and_checks_values(http_server, mode):
    url = http_server(mode)
    check = load.prediction_checker(EXPECTED)
    result = load.run_python(url, BODY, concurrency=4, seconds=0.5, check=check)
    assert result.requests > 10
    assert result.errors == 0
    assert result.checked == result.requests
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.per_second == pytest.approx(result.requests / result.seconds)


@pytest.mark.parametrize("mode", ["wrong", "status"])
def test_python_client_counts_wrong_answers(http_server, mode):
    url = http_server(mode)
    check = load.prediction_checker(EXPECTED)
    result = load.run_python(url, BODY, concurrency=2, seconds=0.3, check=check)
    assert result.requests > 0
    assert result.errors == result.requests


def test_check_sample_and_refused_connections(http_server):
    url = http_server("length")
    check = load.prediction_checker(EXPECTED)
    assert load.check_sample(url, BODY, check, count=3) == 0
    dead = "http://127.0.0.1:9/v1/models/MLP:predict"  # discard port: nothing listens
    assert load.check_sample(dead, BODY, check, count=2) == 2


def test_prediction_checker_rejects_bad_bodies():
    check = load.prediction_checker(EXPECTED)
    assert check(b'{"predictions": [[0.10001, 0.9]]}')
    assert not check(b'{"predictions": [[0.2, 0.9]]}')
    assert not check(b'{"predictions": [[0.1, 0.9], [0.1, 0.9]]}')
    assert not check(b'{"error": "bad"}')
    assert not check(b"not json")


@pytest.mark.skipif(load.wrk_path() is None, reason="wrk is not installed")
def test_wrk_counts_requests_and_bad_answers(http_server, tmp_path):
    body_file = tmp_path / "body.json"
    body_file.write_bytes(BODY)
    good = load.run_wrk(http_server("length"), body_file, concurrency=2, seconds=1)
    assert good.requests > 10 and good.errors == 0
    bad = load.run_wrk(http_server("status"), body_file, concurrency=2, seconds=1)
    assert bad.requests > 0 and bad.errors >= bad.requests


def test_fold_ranks_functions_and_parts():
    app = "handle (tfserve_magic/server/app.py:10)"
    codec = f"decode ({REPO}/tfserve_magic/server/codec.py:20)"  # this checkout's path
    tf_call = "__call__ (/venv/lib/python3.11/site-packages/tensorflow/python/x.py:5)"
    raw = "\n".join([
        f'process 1:"python";main (tfserve_magic/server/main.py:3);{app};{codec} 60',
        f"{app};{tf_call} 30",
        f"{app} 10",
        "garbage line",
    ])
    profile = fold(raw)
    assert profile["samples"] == 100
    assert profile["self"][0] == ["decode (tfserve_magic/server/codec.py)", 60, 60.0]
    assert profile["inclusive"][0] == ["handle (tfserve_magic/server/app.py)", 100, 100.0]
    assert [row[0] for row in profile["inclusive"]] == [
        "handle (tfserve_magic/server/app.py)", "decode (tfserve_magic/server/codec.py)"]
    parts = {name: share for name, _, share in profile["categories"]}
    assert parts["JSON <-> numpy codec (server/codec.py and its parsers)"] == 60.0
    assert parts["model call (TensorFlow)"] == 30.0
    assert parts["routing, checks, model manager (server/*.py)"] == 10.0


def _results(ours_1: float, ours_100: float) -> dict:
    def cell(peer, n, c, rate):
        return {"peer": peer, "n_images": n, "concurrency": c, "per_second": rate,
                "images_per_second": rate * n, "p50_ms": 1.0, "p99_ms": 2.0, "rss_mb": 500.0,
                "errors": 0, "checked": 3, "requests": 100, "rounds": 1, "spread": [rate, rate]}

    summary = [
        cell("flask", 1, 8, 100.0), cell("flask", 100, 8, 2.0),
        cell("fastapi", 1, 8, 200.0), cell("fastapi", 100, 8, 5.0),
        cell("ours", 1, 8, ours_1), cell("ours", 100, 8, ours_100),
        cell("ours", 1, 32, 400.0), cell("ours_batching", 1, 32, 600.0),
        cell("ceiling", 1, 1, 1000.0), cell("ceiling", 100, 1, 30.0),
    ]
    return {
        "summary": summary,
        "settings": {"bodies": [1, 100], "concurrency": [8, 32], "rounds": 1, "seconds": 1.0,
                     "peers": ["flask", "fastapi", "ours", "ours_batching", "ceiling"],
                     "generator": "python", "quick": True},
        "machine": report.machine_info("python"),
        "decode": {"data": {"speedup_100": 2.5, "rows": [
            {"n_images": 100, "style": "json.dumps", "bytes": 800000, "baseline_ms": 5.0,
             "ours_ms": 2.0}]}, "output": "encode 100x10 float32 softmax: 30 us per response"},
        "startup": {"import_tensorflow_s": 3.0, "tfserve_start_s": 4.5, "import_runs_s": [3.0],
                    "start_runs_s": [4.5]},
        "hot_swap": {"seconds": 1.2, "runs_s": [1.2], "poll_wait_seconds": 1.0},
        "profiles": [],
        "data_source": "test",
    }


def test_targets_pass_and_miss_from_ratios():
    results = _results(ours_1=400.0, ours_100=20.0)
    verdicts = {t["name"]: t["status"] for t in report.evaluate_targets(results)}
    assert verdicts["ours vs Flask, 1 image, c=8"] == "pass"  # 4x >= 3.5x
    assert verdicts["ours vs Flask, 100 images, c=8"] == "pass"  # 10x >= 8x
    assert verdicts["ours vs FastAPI, 1 image, c=8"] == "pass"  # 2x >= 1.5x
    assert verdicts["ours vs FastAPI, 100 images, c=8"] == "pass"  # 4x
    assert verdicts["ours vs in-process ceiling, 100 images, c=8"] == "miss"  # 0.67x
    assert verdicts["--enable_batching vs ours, 1 image, c=32"] == "pass"  # 1.5x
    assert verdicts["our decode vs orjson + np.asarray, 100 images"] == "pass"
    assert verdicts["%tfserve start to AVAILABLE, minus bare `import tensorflow`"] == "miss"
    missing = _results(400.0, 20.0)
    missing["summary"] = [r for r in missing["summary"] if r["peer"] != "fastapi"]
    missing["decode"] = None
    verdicts = {t["name"]: t["status"] for t in report.evaluate_targets(missing)}
    assert verdicts["ours vs FastAPI, 1 image, c=8"] == "n/a"
    assert verdicts["our decode vs orjson + np.asarray, 100 images"] == "n/a"


def test_report_files_are_written(tmp_path):
    results = _results(ours_1=400.0, ours_100=20.0)
    results["targets"] = report.evaluate_targets(results)
    md_path, png_path = tmp_path / "benchmarks.md", tmp_path / "benchmarks.png"
    report.write_chart(results, png_path)
    report.write_markdown(results, md_path, png_path)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md_path.read_text()
    assert "| 100 | 8 | **ours** | 20.0 | 20.0-20.0 | 2,000 |" in text
    assert "| ours vs in-process ceiling, 100 images, c=8 | >= 0.9x | 0.67x | **MISS** |" in text
    assert "![requests per second per peer](benchmarks.png)" in text
    assert "Smoke run" in text


def test_decode_speed_rows_are_parsed():
    from bench.run import _DECODE_ROW

    line = "100 image(s), json.dumps            788772      44284022ns   27661970ns      1.6x"
    match = _DECODE_ROW.match(line)
    assert match and match["n"] == "100" and match["style"] == "json.dumps"
    assert float(match["base"]) / float(match["ours"]) == pytest.approx(1.6, abs=0.01)
