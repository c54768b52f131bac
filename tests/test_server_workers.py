"""``--workers``: real server subprocesses with two workers sharing one port.

Both workers answer, status and metrics speak for the whole server, a hot swap under load fails
nothing, and no worker outlives its parent however the parent ends. A worker's death and its
replacement: tests/test_server_supervise.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.server import server_env, start_server
from tests.helpers.processes import alive as _alive
from tests.helpers.processes import metric_value as _metric
from tests.helpers.processes import monitoring_config as _monitoring
from tests.helpers.processes import parent_pid as _ppid
from tests.helpers.processes import wait_gone as _wait_gone
from tfserve_magic import records
from tfserve_magic.server import flags as server_flags
from tfserve_magic.server import peers, sizing, workers

METRICS = "/monitoring/prometheus/metrics"


def _half_v1(server_test_models, tmp_path) -> Path:
    base = tmp_path / "half"
    base.mkdir()
    shutil.copytree(server_test_models["half"] / "1", base / "1")
    return base


needs_reuse_port = pytest.mark.skipif(
    not sizing.reuse_port_supported(), reason="--workers needs SO_REUSEPORT (Linux)"
)


@pytest.fixture(scope="module")
def two_workers(server_test_models, tmp_path_factory):
    if not sizing.reuse_port_supported():
        pytest.skip("--workers needs SO_REUSEPORT (Linux)")
    tmp = tmp_path_factory.mktemp("two-workers")
    server = start_server(
        server_test_models["half"], "--workers=2", f"--monitoring_config_file={_monitoring(tmp)}",
        model_name="half", workdir=tmp,
    )
    yield server
    server.stop()


def test_two_workers_share_the_port_and_both_answer(two_workers):
    info = two_workers.info
    pids = [w["pid"] for w in info["workers"]]
    assert info["pid"] == two_workers.pid  # the parent wrote the info file
    assert len(set(pids)) == 2 and two_workers.pid not in pids
    assert all(_ppid(p) == two_workers.pid for p in pids)
    assert all(w["rss_bytes"] > 0 for w in info["workers"])
    log = two_workers.log()
    assert log.count("Server ready: 2 worker(s)") == 1
    assert len(re.findall(r"Worker \d \(pid \d+\) ready, resident memory \d+ MiB", log)) == 2
    before = requests.get(two_workers.url + METRICS, timeout=10).text
    sent = 60
    for i in range(sent):  # a new connection each time: the kernel spreads them
        answer = requests.post(f"{two_workers.url}/v1/models/half:predict",
                               json={"instances": [float(i)]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [0.5 * i + 3.0]}  # version 2 (latest)
    text = requests.get(two_workers.url + METRICS, timeout=10).text
    per_worker = {
        pid: _metric(text, "tfserve_magic_worker_request_count", pid=pid)
        - _metric(before, "tfserve_magic_worker_request_count", pid=pid)
        for pid in pids
    }
    assert all(count > 0 for count in per_worker.values()), per_worker
    # The Prometheus endpoint sums over the workers, whichever one answers.
    predicts = _metric(text, ":tensorflow:serving:request_latency_count", API="predict")
    predicts_before = _metric(before, ":tensorflow:serving:request_latency_count", API="predict")
    assert predicts - predicts_before == sent
    for _ in range(6):
        again = requests.get(two_workers.url + METRICS, timeout=10).text
        assert _metric(again, ":tensorflow:serving:request_latency_count", API="predict") == (
            predicts
        )
    memory = [_metric(text, "tfserve_magic_worker_resident_memory_bytes", pid=p) for p in pids]
    assert all(m > 0 for m in memory)


def test_status_is_the_same_from_every_worker(two_workers):
    answers = {
        requests.get(f"{two_workers.url}/v1/models/half", timeout=10).text for _ in range(10)
    }
    assert len(answers) == 1
    status = json.loads(answers.pop())["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE")]
    missing = requests.get(f"{two_workers.url}/v1/models/nope", timeout=10)
    assert missing.status_code == 404
    assert "Could not find any versions of model nope" in missing.json()["error"]


def test_both_workers_answer_grpc_on_one_port(two_workers):
    import grpc
    import numpy as np
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfserve_magic.tensor_proto import from_numpy

    port = two_workers.info["grpc_port"]
    assert isinstance(port, int) and port > 0  # one port, chosen once by the parent
    pids = [w["pid"] for w in two_workers.info["workers"]]
    before = requests.get(two_workers.url + METRICS, timeout=10).text
    sent = 40
    for i in range(sent):  # a new channel (connection) each time: the kernel spreads them
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "half"
            request.inputs["x"].CopyFrom(from_numpy(np.float32([i])))
            answer = stub.Predict(request, 30)
            assert answer.model_spec.version.value == 2
            assert list(answer.outputs["y"].float_val) == [0.5 * i + 3.0]
    text = requests.get(two_workers.url + METRICS, timeout=10).text
    latency = ":tensorflow:serving:request_latency_count"
    grpc_calls = _metric(text, latency, API="Predict", entrypoint="GRPC") - _metric(
        before, latency, API="Predict", entrypoint="GRPC")
    assert grpc_calls == sent
    per_worker = [
        _metric(text, "tfserve_magic_worker_request_count", pid=p)
        - _metric(before, "tfserve_magic_worker_request_count", pid=p)
        for p in pids
    ]
    assert all(count > 0 for count in per_worker), per_worker


@needs_reuse_port
def test_hot_swap_under_load_fails_nothing_and_status_waits_for_every_worker(
    serve, server_test_models, tmp_path
):
    base = _half_v1(server_test_models, tmp_path)
    server = serve(base, "--workers=2", "--file_system_poll_wait_seconds=0.2",
                   model_name="half")
    url = f"{server.url}/v1/models/half:predict"
    failures, answers, stop = [], [], threading.Event()

    def load(new_connections: bool):
        session = requests.Session()
        while not stop.is_set():
            try:
                post = requests.post if new_connections else session.post
                answer = post(url, json={"instances": [2.0]}, timeout=30)
                if answer.status_code != 200:
                    failures.append(answer.text)
                else:
                    answers.append(answer.json()["predictions"][0])
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        staging = tmp_path / "staging"
        shutil.copytree(server_test_models["half"] / "2", staging)
        staging.rename(base / "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = requests.get(f"{server.url}/v1/models/half/versions/2", timeout=10)
            if status.status_code == 200 and (
                status.json()["model_version_status"][0]["state"] == "AVAILABLE"
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"version 2 never AVAILABLE:\n{server.log()[-3000:]}")
        # AVAILABLE means every worker serves it: no worker answers with version 1 any more
        # once its own unload finished; an explicit version 2 works on every connection.
        for _ in range(30):
            answer = requests.post(f"{server.url}/v1/models/half/versions/2:predict",
                                   json={"instances": [2.0]}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"predictions": [4.0]}
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert 3.0 in answers and 4.0 in answers  # v1 before the swap, v2 after
    assert answers[-1] == 4.0


@needs_reuse_port
def test_sigterm_stops_every_worker_and_removes_the_info_file(serve, server_test_models):
    server = serve(server_test_models["half"], "--workers=2", model_name="half")
    pids = [w["pid"] for w in server.info["workers"]]
    assert server.stop() == 0
    assert _wait_gone(pids) == []
    assert not server.info_path.exists()


@needs_reuse_port
def test_sigkill_of_the_parent_leaves_no_worker(serve, server_test_models):
    server = serve(server_test_models["half"], "--workers=2", model_name="half")
    pids = [w["pid"] for w in server.info["workers"]]
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(10)
    assert _wait_gone(pids) == []


@needs_reuse_port
def test_parent_pid_gone_stops_the_parent_and_its_workers(serve, server_test_models):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        server = serve(server_test_models["half"], "--workers=2", f"--parent_pid={owner.pid}",
                       model_name="half")
        pids = [w["pid"] for w in server.info["workers"]]
        assert all(_alive(p) for p in pids)
    finally:
        owner.kill()
        owner.wait(5)
    assert server.process.wait(30) == 0
    assert _wait_gone(pids) == []
    assert not server.info_path.exists()


@needs_reuse_port
def test_a_worker_failing_to_load_fails_the_start(tmp_path):
    empty = tmp_path / "empty"
    (empty / "1").mkdir(parents=True)  # a version folder without a SavedModel
    command = [sys.executable, "-m", "tfserve_magic", "serve", "--model_name=bad",
               f"--model_base_path={empty}", "--rest_api_port=0", "--workers=2",
               f"--info_file={tmp_path / 'info.json'}"]
    done = subprocess.run(command, env=server_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Failed to start server" in done.stderr
    assert not (tmp_path / "info.json").exists()


def test_bad_workers_value_is_a_flag_error():
    done = subprocess.run(
        [sys.executable, "-m", "tfserve_magic", "serve", "--model_base_path=/x", "--workers=0"],
        env=server_env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "--workers must be at least 1" in done.stderr


# ---- the pieces, without processes ----


def test_parse_workers():
    assert sizing.parse_workers("auto") is None
    assert sizing.parse_workers("AUTO") is None
    assert sizing.parse_workers("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError):
            sizing.parse_workers(bad)


def test_auto_count_is_capped_by_cores_and_memory():
    gib = 2**30
    assert sizing.auto_count(16, 64 * gib, gib // 2) == 16
    assert sizing.auto_count(16, 2 * gib, gib // 2) == 4  # 1 running + 90% of 2 GiB / 0.5
    assert sizing.auto_count(16, 0, gib) == 1
    assert sizing.auto_count(4, None, None) == 4
    assert 1 <= sizing.usable_cpus() <= (os.cpu_count() or 1)


def _entry(version, state, code="OK"):
    return {"version": str(version), "state": state,
            "status": {"error_code": code, "error_message": "" if code == "OK" else "boom"}}


def test_merge_status_reports_available_only_when_every_worker_does():
    both = [[_entry(2, "AVAILABLE"), _entry(1, "END")]] * 2
    assert peers.merge_status(both) == [_entry(2, "AVAILABLE"), _entry(1, "END")]
    half_way = [[_entry(2, "AVAILABLE"), _entry(1, "END")],
                [_entry(2, "LOADING"), _entry(1, "AVAILABLE")]]
    assert peers.merge_status(half_way) == [_entry(2, "LOADING"), _entry(1, "UNLOADING")]
    not_seen = [[_entry(2, "AVAILABLE"), _entry(1, "AVAILABLE")], [_entry(1, "AVAILABLE")]]
    assert peers.merge_status(not_seen) == [_entry(2, "START"), _entry(1, "AVAILABLE")]
    failed = [[_entry(3, "END", "UNKNOWN")], [_entry(3, "LOADING")]]
    assert peers.merge_status(failed) == [_entry(3, "END", "UNKNOWN")]
    # a worker that did not answer counts: nothing is AVAILABLE on it
    assert peers.merge_status([[_entry(1, "AVAILABLE")]], expected=2) == [_entry(1, "START")]


def test_render_merged_sums_counters_and_histograms():
    from tfserve_magic.server.metrics import ServerMetrics

    answers = []
    for index, count in enumerate((3, 4)):
        metrics = ServerMetrics()
        for _ in range(count):
            metrics.record_request("m", "OK", "predict", 0.001)
        metrics.record_request("m", "NOT_FOUND", "predict", 0.001)
        answers.append({"index": index, "pid": 100 + index, "rss_bytes": 5 << 20,
                        "metrics": json.loads(json.dumps(peers.metrics_state(metrics)))})
    text = peers.render_merged(answers, ServerMetrics)
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 7' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 2' in text
    assert _metric(text, ":tensorflow:serving:request_latency_count") == 7
    assert ':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",' \
           'entrypoint="REST",le="+Inf"} 7' in text
    assert 'tfserve_magic_worker_request_count{worker="1",pid="101"} 5' in text
    assert f'tfserve_magic_worker_resident_memory_bytes{{worker="0",pid="100"}} {5 << 20}' in text
    assert text.count("# TYPE :tensorflow:serving:request_count counter") == 1


def test_worker_flags_replace_what_the_parent_owns():
    parse_flags = server_flags.parse_flags
    flags = parse_flags(["--model_base_path=/m", "--rest_api_port=0", "--workers=2",
                         "--info_file=/i.json", "--parent_pid=7", "--enable_batching",
                         "--rest_api_num_threads=8"])
    args = server_flags.worker_flags(flags, port=8501, parent=42, count=2)
    assert "--model_base_path=/m" in args and "--enable_batching=true" in args
    assert "--rest_api_port=8501" in args and "--parent_pid=42" in args
    assert "--workers=1" in args and "--rest_api_num_threads=4" in args
    assert not any("parallelism" in a for a in args)  # TF's own defaults in every worker
    assert not any(a.startswith(("--info_file", "--parent_pid=7", "--workers=2")) for a in args)
    assert parse_flags(args)["rest_api_port"] == 8501  # the child parses what it is given


def test_a_worker_ready_file_is_checked(tmp_path):
    context = peers.WorkerContext(tmp_path, 1, 2)
    info = records.ServerInfo(pid=1, host="127.0.0.1", port=8501, url="http://127.0.0.1:8501")
    peers.WorkerReady.measure(context, info).write(context.ready_path)
    ready = peers.WorkerReady.read(context.ready_path)
    assert ready.worker == records.WorkerInfo(1, os.getpid(), ready.worker.rss_bytes)
    assert ready.info == info.replace(pid=os.getpid())
    data = json.loads(context.ready_path.read_text())
    assert data["index"] == 1 and data["port"] == 8501  # the info file's keys plus two
    for broken in ({**data, "index": "1"}, {**data, "port": None}, {"index": 1}):
        context.ready_path.write_text(json.dumps(broken))
        assert peers.WorkerReady.read(context.ready_path) is None
    context.ready_path.write_text('{"index": 1, "pid"')  # a partial write
    assert peers.WorkerReady.read(context.ready_path) is None
    assert context.environ() == {peers.ENV_DIR: str(tmp_path), peers.ENV_INDEX: "1",
                                 peers.ENV_COUNT: "2"}


# ---- through the manager and the magic ----


@needs_reuse_port
def test_manager_start_with_workers(server_test_models):
    from tfserve_magic import manager

    try:
        handle = manager.start("half", server_test_models["half"], port=0, workers=2)
        assert len(handle.workers) == 2 and handle.summary().endswith(", 2 workers)")
        assert "2 processes" in repr(handle)
        pids = [w["pid"] for w in handle.workers]
        view = manager.StatusView("half", manager.status("half"))
        assert "2 processes" in view.title and "MiB resident each" in view.title
        assert view["half"][0]["state"] == "AVAILABLE"
        again = manager.start("half", server_test_models["half"], port=0, workers=2)
        assert again.reused and again.pid == handle.pid
        with pytest.raises(manager.StartError, match="other start options: .*workers"):
            manager.start("half", server_test_models["half"], port=0, workers=1)
        with pytest.raises(manager.StartError, match="--workers must be"):
            manager.start("half", server_test_models["half"], port=0, workers="many")
    finally:
        manager.stop(all=True)
    assert _wait_gone(pids) == []


def test_default_workers_is_one_on_small_machines(monkeypatch):
    from tfserve_magic import manager

    def cores(count):  # the manager may ask either module
        for module in (sizing, workers):
            monkeypatch.setattr(module, "usable_cpus", lambda: count)

    cores(2)
    assert manager.default_workers() == "1"
    cores(16)
    expected = "auto" if os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >= 4 * 2**30 \
        else "1"
    assert manager.default_workers() == expected


@needs_reuse_port
def test_magic_start_workers(shell, server_test_models, capsys):
    from tfserve_magic import manager

    try:
        handle = shell.run_line_magic(
            "tfserve", f"start half {server_test_models['half']} --port 0 --workers 2"
        )
        assert len(handle.workers) == 2
        assert capsys.readouterr().out.strip().endswith(", 2 workers)")
    finally:
        manager.stop(all=True)


@needs_reuse_port
def test_a_second_server_cannot_join_a_workers_port(serve, server_test_models, tmp_path):
    first = serve(server_test_models["half"], "--workers=2", model_name="half")
    for count in ("--workers=2", "--workers=1"):
        done = subprocess.run(
            [sys.executable, "-m", "tfserve_magic", "serve", "--model_name=half",
             f"--model_base_path={server_test_models['half']}", f"--rest_api_port={first.port}",
             count, f"--info_file={tmp_path / 'second.json'}"],
            env=server_env(), capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 1, done.stderr[-2000:]
        assert "Could not bind the REST API" in done.stderr
    # with retries, a second multi-worker server moves on to the next free port
    second = serve(server_test_models["half"], "--workers=2", f"--rest_api_port={first.port}",
                   "--rest_api_port_retries=20", model_name="half")
    assert second.port != first.port
    answer = requests.get(f"{first.url}/v1/models/half", timeout=10)
    assert answer.status_code == 200


def test_the_cli_default_uses_the_machine(monkeypatch):
    flags = server_flags.parse_flags(["--model_base_path=/m"])
    assert flags["workers"] == "auto"
    monkeypatch.setattr(sizing, "usable_cpus", lambda: 6)
    monkeypatch.setattr(sizing, "reuse_port_supported", lambda: True)
    assert sizing.planned_count(flags["workers"]) == 6
    assert sizing.planned_count("3") == 3
    monkeypatch.setattr(sizing, "reuse_port_supported", lambda: False)
    assert sizing.planned_count(flags["workers"]) == 1  # no SO_REUSEPORT balancing
