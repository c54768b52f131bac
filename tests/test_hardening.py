"""Hardening: no request may freeze the server, slow clients cannot exhaust it, a reused server
belongs to everyone using it (issue 16). Every test runs real server subprocesses on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.fixtures.server import server_command, server_env, start_server

WAIT_S = 30.0  # bound of every wait loop (never a timing assertion)


def _until(predicate, timeout=WAIT_S, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def _copy_version(src: Path, dst: Path) -> None:
    """Copy a version folder atomically (copy beside it, then rename)."""
    tmp = dst.parent / f".copy-{dst.name}"
    shutil.copytree(src, tmp)
    os.rename(tmp, dst)


@pytest.fixture(scope="module")
def half_base(server_test_models, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("half-base")
    _copy_version(server_test_models["half"] / "1", base / "1")
    return base


@pytest.fixture(scope="module")
def server(half_base, tmp_path_factory):
    """Default flags: the hardening must hold without any option."""
    running = start_server(half_base, model_name="half",
                           workdir=tmp_path_factory.mktemp("hardening-default"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tight(half_base, tmp_path_factory):
    """Small limits, CORS on and one extra allowed Host name."""
    running = start_server(
        half_base,
        "--rest_api_max_header_bytes=8192",
        "--rest_api_header_timeout_seconds=1",
        "--rest_api_body_timeout_seconds=1",
        "--rest_api_idle_timeout_seconds=1",
        "--rest_api_allowed_hosts=models.internal",
        "--rest_api_enable_cors_support",
        model_name="half",
        workdir=tmp_path_factory.mktemp("hardening-tight"),
    )
    yield running
    running.stop()


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (or a response is complete)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_response(sock)


def _read_response(sock) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
        head, sep, body = received.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") and len(body) >= int(line[15:]):
                    return received


def _status_code(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


def _predict(url: str, values, model="half", **kwargs):
    return requests.post(f"{url}/v1/models/{model}:predict", json={"instances": values},
                         timeout=30, **kwargs)


# ---- 1. one request must not freeze every client ----


def _status_latencies_while(url: str, send) -> tuple[requests.Response, list[float]]:
    """Run ``send()`` in a thread; meanwhile time status calls. Returns its response and them."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(response=send()), daemon=True)
    thread.start()
    latencies = []
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline:
        started = time.perf_counter()
        assert requests.get(f"{url}/v1/models/half", timeout=60).status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    thread.join(60)
    return result["response"], latencies


def test_deep_nesting_fails_fast_and_status_keeps_answering(server):
    body = b'{"instances": ' + b"[" * 4_000_000
    response, latencies = _status_latencies_while(
        server.url,
        lambda: requests.post(f"{server.url}/v1/models/half:predict", data=body, timeout=120),
    )
    assert response.status_code == 400
    assert "levels deep" in response.json()["error"]
    assert max(latencies, default=0.0) < 2.0, latencies  # generous: it took 9-30 s before


def test_large_slow_path_body_is_decoded_off_the_event_loop(server):
    # Valid numbers and one string at the end: the fast path refuses it, the exact walk runs.
    values = ",".join(["0.123456789"] * 1_400_000)
    body = ('{"instances": [' + values + ', "a"]}').encode()
    assert len(body) > 16_000_000
    response, latencies = _status_latencies_while(
        server.url,
        lambda: requests.post(f"{server.url}/v1/models/half:predict", data=body, timeout=120),
    )
    assert response.status_code == 400, response.text
    assert latencies, "no status call ran while the body was decoded"
    assert max(latencies) < 2.0, latencies
    assert _predict(server.url, [2.0]).json() == {"predictions": [3.0]}


_BIG = 1_400_000  # 0.123456789 this many times: a 16.8 MB body


def _big_body(tail: str = "") -> bytes:
    return ('{"instances": [' + ",".join(["0.123456789"] * _BIG) + tail + "]}").encode()


def _deep_body() -> bytes:
    """16 MB of instances nested 250 deep: under the depth limit, over numpy's 64 dimensions."""
    instance = "[" * 250 + "1" + "]" * 250
    return ('{"instances": [' + ",".join([instance] * 32_000) + "]}").encode()


_BIG_BODIES = {
    "nan": (lambda: _big_body(", NaN"), 200),
    "string": (lambda: _big_body(', "a"'), 400),
    "deep": (_deep_body, 400),
    "valid": (_big_body, 200),
}


@pytest.mark.parametrize("kind", sorted(_BIG_BODIES))
def test_status_stays_fast_while_16mb_bodies_are_decoded(server, kind):
    # Bodies of 1 MiB and more are decoded in a helper process, or in-process by the compiled
    # SIMD decoder, which lets the GIL go ("valid"): either way the server's GIL stays free.
    # In-process, single C calls held it: max 86-220 ms, and 3.7 s for the deep body.
    make, expected = _BIG_BODIES[kind]
    body = make()
    assert len(body) > 16_000_000
    response, latencies = _status_latencies_while(
        server.url,
        lambda: requests.post(f"{server.url}/v1/models/half:predict", data=body, timeout=120),
    )
    assert response.status_code == expected, response.text[:300]
    assert len(latencies) >= 5, latencies
    assert max(latencies) < 0.5, latencies
    assert statistics.median(latencies) < 0.05, latencies


@pytest.fixture(scope="module")
def in_process(half_base, tmp_path_factory):
    """A server that decodes every body in-process (the helper processes turned off)."""
    os.environ["TFSERVE_MAGIC_DECODE_PROCESS_BYTES"] = "0"
    try:
        running = start_server(half_base, model_name="half",
                               workdir=tmp_path_factory.mktemp("hardening-in-process"))
    finally:
        del os.environ["TFSERVE_MAGIC_DECODE_PROCESS_BYTES"]
    yield running
    running.stop()


def _large_cases() -> dict:
    values = [float(i % 97) / 4 for i in range(240_000)]  # about 1.5 MB of JSON
    rows = json.dumps({"instances": values}).encode()
    assert len(rows) > 1 << 20
    return {
        "rows": ("half", rows),
        "columns": ("half", json.dumps({"inputs": values}).encode()),
        "named signature": ("half", json.dumps(
            {"signature_name": "serving_default", "instances": values}).encode()),
        "escaped signature": ("half", b'{"signature_name": "serving\\u005fdefault", '
                              + rows[1:]),
        "unknown signature": ("half", json.dumps(
            {"signature_name": "nope", "instances": values}).encode()),
        "nan": ("half", rows[:-2] + b", NaN]}"),
        "string": ("half", rows[:-2] + b', "a"]}'),
        "bytes object": ("half", rows[:-2] + b', {"b64": "AAAA"}]}'),
        "truncated": ("half", rows[:-7]),
        "not an object": ("half", rows[len(b'{"instances": '):-1]),
        "unknown model, truncated": ("nope", rows[:-7]),
        "unknown model": ("nope", rows),
        "classify": ("half", json.dumps(
            {"examples": [{"x": [v]} for v in values[:90_000]]}).encode()),
    }


def test_large_bodies_get_the_same_answers_as_in_process(server, in_process):
    for case, (model, body) in _large_cases().items():
        api = "classify" if case == "classify" else "predict"
        answers = [
            requests.post(f"{s.url}/v1/models/{model}:{api}", data=body, timeout=120)
            for s in (server, in_process)
        ]
        assert answers[0].status_code == answers[1].status_code, case
        assert answers[0].content == answers[1].content, case
    values = json.loads(_large_cases()["rows"][1])["instances"]
    small = _predict(server.url, sorted(set(values))).json()["predictions"]
    expected = dict(zip(sorted(set(values)), small))
    big = requests.post(f"{server.url}/v1/models/half:predict",
                        data=_large_cases()["rows"][1], timeout=120).json()["predictions"]
    assert big == [expected[v] for v in values]


def test_codec_errors_keep_their_status_through_pickle():
    import pickle

    from tfserve_magic.server.codec import CodecError

    error = pickle.loads(pickle.dumps(CodecError("not implemented", 501)))
    assert (type(error), str(error), error.status) == (CodecError, "not implemented", 501)


def test_decode_pool_that_cannot_start_falls_back(monkeypatch, caplog):
    from tfserve_magic.server import decode_pool

    def refuse():
        raise OSError("no processes here")

    monkeypatch.setattr(decode_pool, "_Helper", refuse)
    pool = decode_pool.DecodePool()
    for _ in range(2):
        with pytest.raises(decode_pool.PoolUnavailable):
            pool.run("predict", b"{}", None)
    assert pool.broken
    assert sum("in-process" in r.getMessage() for r in caplog.records) == 1


def _helpers(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "decode_pool"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


def _helper_body() -> bytes:
    """A large body that goes to a helper process: the escape in its signature name keeps the
    compiled SIMD decoder (which would decode it in-process, without the GIL) out."""
    return _large_cases()["escaped signature"][1]


def test_dead_decode_process_falls_back_without_losing_requests(half_base, tmp_path):
    running = start_server(half_base, model_name="half", workdir=tmp_path)
    try:
        body = _helper_body()
        first = requests.post(f"{running.url}/v1/models/half:predict", data=body, timeout=120)
        assert first.status_code == 200
        helpers = _helpers(running.pid)
        assert helpers, "no decode process ran"
        for pid in helpers:
            os.kill(pid, 9)
        for _ in range(3):  # the first finds the dead helper, the others decode in-process
            again = requests.post(f"{running.url}/v1/models/half:predict", data=body, timeout=120)
            assert again.status_code == 200 and again.content == first.content
        assert _until(lambda: running.log().count("Decoding large bodies in-process") == 1)
    finally:
        running.stop()


def test_large_numeric_bodies_stay_in_process_with_the_compiled_decoder(half_base, tmp_path):
    from tfserve_magic.server import simd_decode

    if not simd_decode.COMPILED:
        pytest.skip("the compiled SIMD decoder was not built")
    running = start_server(half_base, model_name="half", workdir=tmp_path)
    try:
        rows = _large_cases()["rows"][1]
        answer = requests.post(f"{running.url}/v1/models/half:predict", data=rows, timeout=120)
        assert answer.status_code == 200
        assert not _helpers(running.pid), "a proved numeric body went to a helper process"
        escaped = requests.post(f"{running.url}/v1/models/half:predict", data=_helper_body(),
                                timeout=120)
        assert escaped.status_code == 200 and escaped.content == answer.content
        assert _helpers(running.pid), "the escaped body should have gone to a helper"
    finally:
        running.stop()


def test_decode_processes_exit_with_a_killed_server(half_base, tmp_path):
    running = start_server(half_base, model_name="half", workdir=tmp_path)
    try:
        body = _helper_body()
        assert requests.post(f"{running.url}/v1/models/half:predict", data=body,
                             timeout=120).status_code == 200
        helpers = _helpers(running.pid)
        assert helpers
        running.process.kill()
        running.process.wait(10)
        assert _until(lambda: not any(_running(p) for p in helpers), 10)
    finally:
        running.stop()


def test_documents_deeper_than_numpy_allows_get_400_not_500(server):
    for depth in (70, 200):
        body = '{"instances": ' + "[" * depth + "1" + "]" * depth + "}"
        response = requests.post(f"{server.url}/v1/models/half:predict", data=body, timeout=30)
        assert response.status_code == 400, (depth, response.text)


# ---- 2. request headers are bounded ----


def _get_with_header(port: int, size: int) -> bytes:
    return _raw(port, b"GET /v1/models/half HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                + b"a" * size + b"\r\n\r\n")


def test_header_block_is_capped_at_64_kib_by_default(server):
    assert _status_code(_get_with_header(server.port, 40_000)) == 200
    response = _get_with_header(server.port, 200_000)
    assert _status_code(response) == 431
    assert b"rest_api_max_header_bytes" in response
    # Many small header lines count too.
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    response = _raw(server.port, b"GET /v1/models/half HTTP/1.1\r\nHost: localhost\r\n" + lines
                    + b"\r\n")
    assert _status_code(response) == 431
    assert _predict(server.url, [2.0]).status_code == 200


def test_header_cap_is_configurable(tight):
    assert _status_code(_get_with_header(tight.port, 4_000)) == 200
    assert _status_code(_get_with_header(tight.port, 10_000)) == 431


# ---- 3. idle and slow connections are dropped; connections are capped ----


def _closed_within(sock, timeout: float) -> bytes | None:
    """What the server sent before closing ``sock``; None if it stayed open ``timeout`` s."""
    sock.settimeout(timeout)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return received


def test_idle_connection_is_closed(tight):
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:
        assert _closed_within(sock, 10.0) == b""


def test_keep_alive_connection_is_closed_after_idle_timeout(tight):
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:
        sock.sendall(b"GET /v1/models/half HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sent = _closed_within(sock, 10.0)
    assert sent is not None and _status_code(sent) == 200


def test_slow_headers_get_408_and_are_closed(tight):
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:
        sock.sendall(b"GET /v1/models/half HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        sent = _closed_within(sock, 10.0)
    assert sent is not None and _status_code(sent) == 408
    assert b"rest_api_header_timeout_seconds" in sent


def test_slow_body_gets_408_and_is_closed(tight):
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:
        sock.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                     b'{"instances"')
        sent = _closed_within(sock, 10.0)
    assert sent is not None and _status_code(sent) == 408
    assert _predict(tight.url, [2.0]).json() == {"predictions": [3.0]}


def _limit_descriptors(limit: int):
    def apply():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return apply


def test_connection_flood_cannot_take_every_descriptor(server_test_models, tmp_path):
    """300 stalled connections against a 256-descriptor server: the extra ones get 503 (not a
    reset), the version poller still loads a new version, and normal requests work again once
    the stalled connections are gone."""
    base = tmp_path / "base"
    _copy_version(server_test_models["half"] / "1", base / "1")
    info, log = tmp_path / "info.json", tmp_path / "server.log"
    cmd = server_command(base, "--file_system_poll_wait_seconds=0.3",
                         "--rest_api_header_timeout_seconds=60", model_name="half",
                         info_file=info)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=server_env(),
                                   preexec_fn=_limit_descriptors(256))
    stalled = []
    try:
        assert _until(info.exists, 120), log.read_text()
        port = json.loads(info.read_text())["port"]
        url = f"http://127.0.0.1:{port}"
        refused = 0
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /v1/models/half HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            stalled.append(sock)
        for sock in stalled:
            sock.settimeout(0.05)
            try:
                head = sock.recv(65536)
            except TimeoutError:
                continue
            if head:
                assert _status_code(head) == 503, head[:200]
                refused += 1
        assert refused > 0, "every stalled connection was accepted and held"
        # A new client is told to retry, not reset.
        response = _raw(port, b"GET /v1/models/half HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _status_code(response) == 503
        # The poller can still open files: a new version loads while the flood holds.
        _copy_version(server_test_models["half"] / "2", base / "2")

        def v2_available():
            text = log.read_text(errors="replace")
            return "Successfully loaded servable version {name: half version: 2}" in text
        assert _until(v2_available), log.read_text()[-3000:]
        for sock in stalled:
            sock.close()
        stalled.clear()
        response = _until(lambda: _try_predict(url), 10)
        assert response is not None and response.json() == {"predictions": [4.0]}
        assert "Too many open files" not in log.read_text(errors="replace")
    finally:
        for sock in stalled:
            sock.close()
        process.terminate()
        process.wait(15)


def _try_predict(url):
    try:
        response = _predict(url, [2.0])
    except requests.RequestException:
        return None
    return response if response.status_code == 200 else None


# ---- 6. a version folder that appears non-atomically is retried ----


def test_half_copied_version_is_retried_when_its_files_change(server_test_models, serve,
                                                              tmp_path):
    base = tmp_path / "base"
    _copy_version(server_test_models["half"] / "1", base / "1")
    running = serve(base, "--file_system_poll_wait_seconds=0.2", model_name="half")
    source = server_test_models["half"] / "2"
    (base / "2").mkdir()  # `cp -r` in progress: saved_model.pb first, variables later
    shutil.copy2(source / "saved_model.pb", base / "2" / "saved_model.pb")

    def v2_state():
        entries = requests.get(f"{running.url}/v1/models/half", timeout=10).json()
        return next((e for e in entries["model_version_status"] if e["version"] == "2"), None)
    assert _until(lambda: (v2_state() or {}).get("state") == "END"), v2_state()
    assert v2_state()["status"]["error_code"] != "OK"
    shutil.copytree(source / "variables", base / "2" / "variables")
    for extra in source.iterdir():
        if not (base / "2" / extra.name).exists():
            (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, base / "2" / extra.name)
    assert _until(lambda: (v2_state() or {}).get("state") == "AVAILABLE"), running.log()[-3000:]
    assert _predict(running.url, [2.0]).json() == {"predictions": [4.0]}


# ---- 8. huge version numbers ----


def test_version_with_thousands_of_digits_is_400(server):
    digits = "9" * 5000
    response = requests.get(f"{server.url}/v1/models/half/versions/{digits}", timeout=30)
    assert response.status_code == 400
    assert "Failed to convert version" in response.json()["error"]
    response = requests.post(f"{server.url}/v1/models/half/versions/{digits}:predict",
                             json={"instances": [1.0]}, timeout=30)
    assert response.status_code == 400
    # Leading zeros are still a valid version number.
    response = requests.post(f"{server.url}/v1/models/half/versions/{'0' * 30}1:predict",
                             json={"instances": [2.0]}, timeout=30)
    assert response.json() == {"predictions": [3.0]}


def test_invalid_utf8_feature_name_is_400(server):
    """Found by the fuzz test (seed 99): protobuf refuses such map keys; it was a 500."""
    body = b'{"examples": [{"x\xff": 1.0}]}'
    response = requests.post(f"{server.url}/v1/models/half:classify", data=body, timeout=30)
    assert response.status_code == 400
    assert "not valid UTF-8" in response.json()["error"]


# ---- 9. Host header and cross-site POSTs ----


def test_foreign_host_header_is_refused_on_loopback(server):
    url = f"{server.url}/v1/models/half"
    response = requests.get(url, headers={"Host": "attacker.example"}, timeout=10)
    assert response.status_code == 403
    assert "rest_api_allowed_hosts" in response.json()["error"]
    response = _predict(server.url, [2.0], headers={"Host": f"attacker.example:{server.port}"})
    assert response.status_code == 403
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]", "LOCALHOST",
                 "app.localhost"):
        assert requests.get(url, headers={"Host": host}, timeout=10).status_code == 200, host


def test_allowed_hosts_flag_adds_names(tight):
    url = f"{tight.url}/v1/models/half"
    assert requests.get(url, headers={"Host": "models.internal:8501"}, timeout=10).ok
    assert requests.get(url, headers={"Host": "other.internal"}, timeout=10).status_code == 403


def test_cross_site_simple_post_is_refused_without_cors(server):
    url = f"{server.url}/v1/models/half:predict"
    body = '{"instances": [2.0]}'
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    response = requests.post(url, data=body, headers=evil, timeout=10)
    assert response.status_code == 403
    assert "rest_api_enable_cors_support" in response.json()["error"]
    form = {"Sec-Fetch-Site": "cross-site",
            "Content-Type": "application/x-www-form-urlencoded"}
    assert requests.post(url, data=body, headers=form, timeout=10).status_code == 403
    # Same origin, and clients that are not browsers, are served.
    same = {"Origin": server.url, "Content-Type": "text/plain"}
    assert requests.post(url, data=body, headers=same, timeout=10).json() == {
        "predictions": [3.0]}
    assert requests.post(url, data=body, timeout=10).status_code == 200
    assert requests.post(url, data=body, headers={"Content-Type": "text/plain"},
                         timeout=10).status_code == 200


def test_cross_site_post_is_served_with_cors(tight):
    headers = {"Origin": "http://evil.example", "Content-Type": "text/plain",
               "Sec-Fetch-Site": "cross-site"}
    response = requests.post(f"{tight.url}/v1/models/half:predict",
                             data='{"instances": [2.0]}', headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


def test_project_clients_pass_the_checks(server, tmp_path):
    from tfserve_magic.client import Client

    assert np.allclose(Client(server.url, model="half").predict([2.0]), [3.0])
    curl = shutil.which("curl")
    if curl:
        out = subprocess.run(
            [curl, "-s", "-d", '{"instances": [2.0]}', f"{server.url}/v1/models/half:predict"],
            capture_output=True, text=True, timeout=30,
        )
        assert json.loads(out.stdout) == {"predictions": [3.0]}
    node = shutil.which("node")
    if node:  # the notebooks' Node.js snippet style: fetch with a Buffer body
        body = tmp_path / "body.json"
        body.write_text('{"instances": [2.0]}')
        script = (f"const fs = require('fs'); fetch('{server.url}/v1/models/half:predict', "
                  f"{{method: 'POST', body: fs.readFileSync('{body}')}})"
                  ".then(r => r.text()).then(t => console.log(t));")
        out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
        assert json.loads(out.stdout) == {"predictions": [3.0]}, out.stderr


# ---- 4. a reused server belongs to every kernel using it ----

_KERNEL = textwrap.dedent("""
    import json, sys
    from tfserve_magic import manager
    while True:
        handle = manager.start("dup", sys.argv[1], port=0, timeout=120)
        print(json.dumps({"reused": handle.reused, "pid": handle.pid, "url": handle.url,
                          "summary": handle.summary()}), flush=True)
        if sys.stdin.readline().strip() != "again":  # a kernel at work until told to exit
            break
""")


def _kernel(base: Path, home: Path) -> subprocess.Popen:
    env = dict(server_env(), TFSERVE_MAGIC_HOME=str(home))
    return subprocess.Popen([sys.executable, "-c", _KERNEL, str(base)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_reused_server_outlives_the_kernel_that_started_it(half_base, tmp_path):
    home = tmp_path / "home"
    kernels = []
    server_pid = None
    try:
        a = _kernel(half_base, home)
        kernels.append(a)
        started = json.loads(a.stdout.readline())
        server_pid = started["pid"]
        assert not started["reused"]
        b = _kernel(half_base, home)
        kernels.append(b)
        reused = json.loads(b.stdout.readline())
        assert reused["reused"] and reused["pid"] == server_pid
        assert f"another process (pid {a.pid})" in reused["summary"]
        a.communicate("\n", timeout=60)  # A exits normally (its atexit hook runs)
        assert a.returncode == 0
        time.sleep(3)  # the parent watch polls twice a second; it had time to act
        assert _pid_running(server_pid)
        assert _predict(reused["url"], [2.0], model="dup").json() == {"predictions": [3.0]}
        b.stdin.write("again\n")  # B re-runs its start cell: the same server, not a restart
        b.stdin.flush()
        again = json.loads(b.stdout.readline())
        assert again["reused"] and again["pid"] == server_pid
        b.communicate("\n", timeout=60)  # the last user exits: the server goes with it
        assert _until(lambda: not _pid_running(server_pid), 20), "server outlived its owners"
    finally:
        for kernel in kernels:
            if kernel.poll() is None:
                kernel.kill()
                kernel.wait(10)
        if server_pid and _pid_running(server_pid):
            os.kill(server_pid, 9)


def test_reused_server_stops_when_the_reusing_kernel_is_killed_last(half_base, tmp_path):
    """The parent watch (not only atexit) honours every owner: A exits, B is SIGKILLed."""
    home = tmp_path / "home"
    a, b = _kernel(half_base, home), None
    server_pid = None
    try:
        server_pid = json.loads(a.stdout.readline())["pid"]
        b = _kernel(half_base, home)
        assert json.loads(b.stdout.readline())["reused"]
        a.communicate("\n", timeout=60)
        time.sleep(2)
        assert _pid_running(server_pid)
        b.kill()
        b.wait(10)
        assert _until(lambda: not _pid_running(server_pid), 20), "server outlived its owners"
    finally:
        for kernel in (a, b):
            if kernel is not None and kernel.poll() is None:
                kernel.kill()
                kernel.wait(10)
        if server_pid and _pid_running(server_pid):
            os.kill(server_pid, 9)


def test_request_guard_rules():
    from tfserve_magic.server.guard import RequestGuard, host_name, is_loopback

    assert host_name("[::1]:8501") == "::1" and host_name("LocalHost.:80") == "localhost"
    assert is_loopback("127.3.2.1") and is_loopback("::1") and not is_loopback("10.0.0.1")
    loopback = RequestGuard(bind_host="127.0.0.1")
    assert loopback.refuse("GET", {b"host": b"example.com"})
    assert loopback.refuse("GET", {}) is None  # HTTP/1.0 without Host
    anywhere = RequestGuard(bind_host="0.0.0.0")
    assert anywhere.refuse("GET", {b"host": b"example.com"}) is None
    star = RequestGuard(bind_host="localhost", allowed_hosts=["*"])
    assert star.refuse("GET", {b"host": b"example.com"}) is None
    post = {b"host": b"127.0.0.1:8501", b"content-type": b"text/plain; charset=utf-8"}
    assert loopback.refuse("POST", {**post, b"origin": b"https://127.0.0.1:8501"}) is None
    assert loopback.refuse("POST", {**post, b"origin": b"null"})
    assert loopback.refuse("POST", {**post, b"sec-fetch-site": b"same-site"})
    assert loopback.refuse("POST", {**post, b"sec-fetch-site": b"same-origin"}) is None
    json_post = {**post, b"content-type": b"application/json", b"origin": b"http://evil"}
    assert loopback.refuse("POST", json_post) is None  # needs a preflight, which fails
    assert RequestGuard(bind_host="127.0.0.1", cors=True).refuse(
        "POST", {**post, b"origin": b"http://evil"}) is None
