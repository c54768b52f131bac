"""A ``--workers`` server supervises its workers; a server that cannot write its files says so.

Real servers (two workers) under load: a SIGKILLed worker is replaced on the same port while the
other keeps serving, only requests the dead worker held fail (none with the clients' retry), and
a crash loop stops the server with one clear log line. The parent alone, with small stand-in
workers, shows the bookkeeping without TensorFlow. Unwritable ``--info_file`` and log: a
one-line error and an exit code, no traceback.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.server import server_env
from tests.helpers.processes import alive as _alive
from tests.helpers.processes import metric_value as _metric
from tests.helpers.processes import monitoring_config as _monitoring
from tests.helpers.processes import parent_pid as _ppid
from tests.helpers.processes import wait_gone as _wait_gone
from tests.helpers.serving import wait_for
from tfserve_magic import records
from tfserve_magic.server import metrics, peers, sizing, workers

pytestmark = pytest.mark.skipif(
    not sizing.reuse_port_supported(), reason="--workers needs SO_REUSEPORT (Linux)"
)
METRICS = "/monitoring/prometheus/metrics"
WAIT_S = 120.0  # generous: the test machine may be busy; no timing is asserted


def _wait_for(condition, what: str, server=None):
    if server is not None and not server.alive():
        pytest.fail(f"the server exited before {what}:\n{server.log()[-3000:]}")
    return wait_for(condition, what, timeout=WAIT_S)


def _raw_info(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _replaced(info_path: Path, index: int, old_pid: int) -> dict | None:
    """Worker ``index``'s entry once a replacement of ``old_pid`` serves, else None."""
    for entry in _raw_info(info_path).get("workers", []):
        if entry["index"] == index and entry["pid"] != old_pid and entry["state"] == "ready":
            return entry
    return None


def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(
    serve, server_test_models, tmp_path
):
    from tfserve_magic import Client

    server = serve(server_test_models["half"], "--workers=2",
                   f"--monitoring_config_file={_monitoring(tmp_path)}", model_name="half")
    info = _raw_info(server.info_path)
    assert [(w["restarts"], w["state"]) for w in info["workers"]] == [(0, "ready")] * 2
    victim, other = info["workers"][1]["pid"], info["workers"][0]["pid"]
    url = f"{server.url}/v1/models/half:predict"
    stop = threading.Event()
    results = {name: {"ok": 0, "failed": []} for name in ("retry0", "retry1", "raw0", "raw1")}

    def with_retry(name):  # tfserve_magic.Client: one retry after a reset or refusal (default)
        client = Client(server.url, model="half")
        while not stop.is_set():
            try:
                answer = client.predict([2.0])
                assert float(answer.outputs[0]) == 4.0
                results[name]["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, asserted below
                results[name]["failed"].append(repr(exc))

    def without_retry(name):  # a new connection per request and no retry: what the kill costs
        while not stop.is_set():
            try:
                answer = requests.post(url, json={"instances": [2.0]}, timeout=30)
                assert answer.status_code == 200, answer.text
                results[name]["ok"] += 1
            except (requests.RequestException, AssertionError) as exc:
                results[name]["failed"].append(repr(exc))

    threads = [threading.Thread(target=with_retry, args=(f"retry{i}",)) for i in range(2)]
    threads += [threading.Thread(target=without_retry, args=(f"raw{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: all(r["ok"] >= 5 for r in results.values()), "load", server)
        os.kill(victim, signal.SIGKILL)
        served_before = sum(r["ok"] for r in results.values())
        # the other worker keeps answering while the replacement loads
        _wait_for(lambda: sum(r["ok"] for r in results.values()) > served_before + 20,
                  "answers after the kill", server)
        assert _alive(other)
        entry = _wait_for(lambda: _replaced(server.info_path, 1, victim), "a replacement", server)
        assert entry["restarts"] == 1 and _ppid(entry["pid"]) == server.pid
        assert _raw_info(server.info_path)["restarts"] == 1
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    log = server.log()
    assert re.search(rf"Worker 1 \(pid {victim}\) was killed by SIGKILL \(exit code -9\): "
                     r"(probably out of memory \(the memory limit is \d+ MiB\)|out of memory, "
                     r"or killed by hand); replacing it in 0\.5 s", log), log[-3000:]
    assert f"Worker 1 replaced: pid {entry['pid']} serving" in log
    # with the retry nothing failed; without it, at most the one request each thread had in
    # flight on the dead worker
    assert results["retry0"]["failed"] == [] and results["retry1"]["failed"] == []
    assert all(len(results[f"raw{i}"]["failed"]) <= 1 for i in range(2)), results
    # the replacement answers: its own pid serves requests, and status speaks for both
    for _ in range(40):
        assert requests.post(url, json={"instances": [1.0]}, timeout=30).status_code == 200
    text = requests.get(server.url + METRICS, timeout=10).text
    assert _metric(text, "tfserve_magic_worker_request_count", pid=entry["pid"]) > 0
    assert _metric(text, metrics.WORKER_RESTARTS, worker="1") == 1
    assert _metric(text, metrics.WORKER_RESTARTS, worker="0") == 0
    status = requests.get(f"{server.url}/v1/models/half", timeout=10).json()
    assert [(s["version"], s["state"]) for s in status["model_version_status"]] == [
        ("2", "AVAILABLE")]
    assert records.read_info(server.info_path).workers[1].pid == entry["pid"]
    pids = [w["pid"] for w in _raw_info(server.info_path)["workers"]]
    assert server.stop() == 0
    assert _wait_gone(pids) == []


def test_a_crash_loop_stops_the_server_with_one_clear_line(serve, server_test_models):
    server = serve(server_test_models["half"], "--workers=2", model_name="half")
    first, other = (w["pid"] for w in server.info["workers"][::-1])
    os.kill(first, signal.SIGKILL)  # then its replacements, each as soon as it starts
    killed = {first}
    for _ in range(workers.CRASH_LOOP_DEATHS - 1):
        pid = _wait_for(lambda: _replacement_pid(server.log(), killed), "a replacement", server)
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
    assert server.process.wait(60) == workers.EXIT_CRASH_LOOP
    assert _wait_gone([other, *killed]) == []
    log = server.log()
    failed = [line for line in log.splitlines() if workers.FAILED_PREFIX in line]
    assert len(failed) == 1, log[-3000:]
    assert re.search(r"worker 1 \(pid \d+\) was killed by SIGKILL .*; 3 worker deaths within "
                     r"60 s, a crash loop: stopping the server \(after 2 restart\(s\)", failed[0])
    assert "Traceback" not in log
    assert not server.info_path.exists()


def _replacement_pid(log: str, killed: set[int]) -> int | None:
    for pid in re.findall(r"Starting a replacement for worker 1 \(pid (\d+)", log):
        if int(pid) not in killed:
            return int(pid)
    return None


# ---- the parent alone: stand-in workers that write the same ready file a real one does ----

PARENT_SCRIPT = r"""
import sys
from tfserve_magic.server import process, workers
from tfserve_magic.server.flags import parse_flags

worker, argv = sys.argv[1], sys.argv[2:]
code = workers.run_parent(
    parse_flags(argv), argv,
    bind=lambda: process.bind("127.0.0.1", 0, reuse_port=True, check_free=True),
    worker_command=lambda port, grpc_port, count: [sys.executable, worker, str(port), str(count)],
    grpc_port_given=False,
)
assert not any(m == "tensorflow" or m == "tfserve_magic.server.main" for m in sys.modules)
sys.exit(code)
"""
WORKER_SCRIPT = r"""
import os, sys, time
from tfserve_magic.records import ServerInfo
from tfserve_magic.server.peers import WorkerReady, worker_context

if os.path.exists(os.environ["BROKEN_FLAG"]):  # e.g. a model folder gone bad since the start
    sys.exit(7)
context = worker_context()
assert context.count == int(sys.argv[2])
info = ServerInfo(pid=os.getpid(), host="127.0.0.1", port=int(sys.argv[1]), url="",
                  models={"m": {"base_path": "/m", "versions": [context.index + 1]}})
WorkerReady.measure(context, info).write(context.ready_path)
time.sleep(600)
"""


@pytest.fixture
def parent(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER_SCRIPT)
    info_path = tmp_path / "info.json"
    env = {**server_env(), "BROKEN_FLAG": str(tmp_path / "broken")}
    process = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(worker), "--model_base_path=/m",
         "--workers=2", "--port=-1", f"--info_file={info_path}"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        info = _wait_for(lambda: records.read_info(info_path) or process.poll() is not None,
                         "the parent's info file")
        assert info is not True, process.stderr.read()
        yield process, info_path, info
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_parent_replaces_a_dead_worker_and_counts_it(parent):
    process, info_path, info = parent
    assert info.pid == process.pid and info.url == f"http://127.0.0.1:{info.port}"
    assert [w.index for w in info.workers] == [0, 1]
    assert all(_ppid(w.pid) == process.pid and w.rss_bytes > 0 for w in info.workers)
    assert info.models == {"m": {"base_path": "/m", "versions": [1]}}  # the first worker's
    directory = Path(f"/proc/{info.workers[0].pid}/environ").read_bytes().split(b"\0")
    directory = Path(next(e for e in directory if e.startswith(peers.ENV_DIR.encode()))
                     .split(b"=", 1)[1].decode())
    assert peers.worker_restarts(directory) == {0: 0, 1: 0}
    for round_ in (1, 2):
        old = records.read_info(info_path).workers[1].pid
        os.kill(old, signal.SIGTERM if round_ == 1 else signal.SIGKILL)
        entry = _wait_for(lambda: _replaced(info_path, 1, old), "a replacement")  # noqa: B023
        assert entry["restarts"] == round_ and _ppid(entry["pid"]) == process.pid
        assert peers.worker_restarts(directory) == {0: 0, 1: round_}
        assert process.poll() is None and _alive(info.workers[0].pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    log = process.stderr.read()
    assert "Worker 1 (pid" in log and "was killed by SIGTERM (exit code -15); replacing it" in log
    assert "was killed by SIGKILL (exit code -9)" in log
    assert not directory.exists()  # (the info file is main.py's to remove)


def test_the_parent_stops_when_replacements_keep_dying(parent, tmp_path):
    process, info_path, info = parent
    (tmp_path / "broken").touch()  # every new worker now exits with code 7 at once
    os.kill(info.workers[0].pid, signal.SIGKILL)
    assert process.wait(60) == workers.EXIT_CRASH_LOOP
    assert _wait_gone([w.pid for w in info.workers]) == []
    log = process.stderr.read()
    assert "Worker 0 (pid" in log and "replacing it in 0.5 s" in log
    assert re.search(r"Worker 0 \(pid \d+\) exited with code 7; replacing its replacement in "
                     r"1\.0 s", log), log
    assert re.search(r"Server failed: worker 0 \(pid \d+\) exited with code 7; 3 worker deaths "
                     r"within 60 s, a crash loop", log), log


# ---- the pieces ----


def test_death_text_names_the_signal_and_the_likely_cause(monkeypatch):
    assert workers.death_text(1) == "exited with code 1"
    assert workers.death_text(-15) == "was killed by SIGTERM (exit code -15)"
    monkeypatch.setattr(workers, "limit_text", lambda: "the memory limit is 450 MiB")
    assert workers.death_text(-9) == ("was killed by SIGKILL (exit code -9): probably out of "
                                      "memory (the memory limit is 450 MiB)")
    monkeypatch.setattr(workers, "limit_text", lambda: "")
    assert workers.death_text(-9).endswith(": out of memory, or killed by hand")


@pytest.mark.parametrize("lines, files, expected", [
    ("0::/user.slice/a\n", {"user.slice/a/memory.max": "471859200\n"}, 450 * 2**20),
    ("0::/a\n", {"a/memory.max": "max\n"}, None),
    ("4:memory:/docker/x\n0::/\n", {"memory/docker/x/memory.limit_in_bytes": "2147483648"},
     2 * 2**30),
    ("4:memory:/x\n", {"memory/memory.limit_in_bytes": "9223372036854771712"}, None),
    ("1:cpu:/\n", {}, None),
])
def test_the_memory_limit_is_read_from_the_cgroup(tmp_path, lines, files, expected):
    (tmp_path / "cgroup").write_text(lines)
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert workers._cgroup_memory_limit(str(tmp_path / "fs"), str(tmp_path / "cgroup")) == (
        expected)


def test_restarts_are_a_counter_of_our_own():
    assert metrics.WORKER_RESTARTS == ":tfserve_magic:worker_restarts"
    text = peers.render_merged([], metrics.ServerMetrics, {1: 2, 0: 0})
    assert (f"# TYPE {metrics.WORKER_RESTARTS} counter\n"
            f'{metrics.WORKER_RESTARTS}{{worker="0"}} 0\n'
            f'{metrics.WORKER_RESTARTS}{{worker="1"}} 2\n') in text


# ---- files the server cannot write ----


def _serve_command(tmp_path, *flags) -> list[str]:
    return [sys.executable, "-m", "tfserve_magic", "serve", "--model_name=m",
            f"--model_base_path={tmp_path / 'missing-model'}", "--rest_api_port=0", "--port=0",
            *flags]


@pytest.mark.parametrize("workers_flag", ["--workers=1", "--workers=2"])
def test_an_info_file_that_cannot_be_written_fails_in_one_line(tmp_path, workers_flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [blocker / "info.json", tmp_path]  # under a file; a folder
    if os.geteuid() != 0:  # root writes into read-only folders
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        cases.append(read_only / "info.json")
    for info_file in cases:
        done = subprocess.run(_serve_command(tmp_path, f"--info_file={info_file}", workers_flag),
                              env=server_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        errors = [ln for ln in done.stderr.splitlines() if "Failed to start server" in ln]
        assert len(errors) == 1 and f"cannot write the --info_file {info_file}: " in errors[0]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_that_cannot_be_written_fails_with_its_exit_code(tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run(_serve_command(tmp_path, f"--info_file={tmp_path / 'i.json'}"),
                              env=server_env(), stdout=subprocess.PIPE, stderr=full, text=True,
                              timeout=120)
    from tfserve_magic.server.main import EXIT_LOG_UNWRITABLE

    assert done.returncode == EXIT_LOG_UNWRITABLE
    assert done.stdout == ("tfserve serve: cannot write the log (stderr): [Errno 28] No space "
                           "left on device\n")
    assert not (tmp_path / "i.json").exists()
