"""``python -m tfserve_magic serve``: flags, start-up failures, shutdown, parent watch, ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.fixtures.server import server_command, server_env, start_server
from tfserve_magic.server import main as server_main
from tfserve_magic.server.main import FlagError, parse_flags

# ---- flag parsing (in-process, no TensorFlow) ----


def test_both_flag_forms_and_bools():
    flags = parse_flags(
        ["--rest_api_port", "8601", "--model_name=m", "--enable_batching",
         "--rest_api_enable_cors_support=false", "--file_system_poll_wait_seconds", "-1"]
    )
    assert flags["rest_api_port"] == 8601
    assert flags["model_name"] == "m"
    assert flags["enable_batching"] is True
    assert flags["rest_api_enable_cors_support"] is False
    assert flags["file_system_poll_wait_seconds"] == -1
    defaults = parse_flags([])
    assert defaults["port"] == 8500 and defaults["model_name"] == "default"
    assert defaults["rest_api_timeout_in_ms"] == 30000 and defaults["saved_model_tags"] == "serve"
    assert defaults["host"] == "127.0.0.1"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--no_such_flag=1"], "Unknown flag --no_such_flag"),
        (["--use_alts_credentials=true"], "--use_alts_credentials is a tensorflow_model_server flag"),
        (["--enable_profiler=true"], "does not support"),
        (["--rest_api_port=abc"], "expected an integer"),
        (["--enable_batching=maybe"], "expected true or false"),
        (["--model_name"], "needs a value"),
        (["positional"], "Unexpected argument"),
    ],
)
def test_bad_flags_are_refused_by_name(argv, words):
    with pytest.raises(FlagError, match=words.replace("-", r"\-")):
        parse_flags(argv)


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], "Both --model_base_path and --model_config_file are empty"),
        (["--model_base_path=/x", "--batching_parameters_file=/b"], "--enable_batching"),
        (["--model_base_path=/x", "--rest_api_port=8500"], "must differ"),
        (["--model_base_path=/x", "--tensorflow_session_parallelism=1",
          "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
         "is an error"),
        (["--model_base_path=/x", "--bogus"], "Unknown flag --bogus"),
    ],
)
def test_startup_flag_errors_exit_2(argv, words, capsys):
    assert server_main.main(argv) == 2
    assert words in capsys.readouterr().err


def test_version_and_help(capsys):
    assert server_main.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TensorFlow ModelServer: ") and "TensorFlow Library: " in out
    assert server_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--rest_api_port" in out and "--model_config_file_poll_wait_seconds" in out


def test_cli_routes_serve_to_the_server():
    result = subprocess.run(
        [sys.executable, "-m", "tfserve_magic", "serve", "--version"],
        capture_output=True, text=True, timeout=60, env=server_env(),
    )
    assert result.returncode == 0 and "TensorFlow ModelServer" in result.stdout


# ---- start-up failures (subprocess) ----


def _run_to_exit(cmd, timeout=90):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=server_env())


def test_load_failure_exits_with_tf_serving_message(tmp_path):
    base = tmp_path / "broken"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    info = tmp_path / "info.json"
    result = _run_to_exit(server_command(base, model_name="broken", info_file=info))
    assert result.returncode == 1
    assert "Failed to start server. Error:" in result.stderr
    assert "{name: broken version: 1}" in result.stderr
    assert not info.exists()


def test_wrong_tags_and_missing_versions_fail_fast_without_polling(server_test_models, tmp_path):
    result = _run_to_exit(server_command(server_test_models["half"], "--saved_model_tags=gpu",
                                         model_name="half"))
    assert result.returncode == 1
    assert "Could not find meta graph def matching supplied tags" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run_to_exit(server_command(empty, "--file_system_poll_wait_seconds=0",
                                         model_name="e"))
    assert result.returncode == 1
    assert "No versions of servable e found under base path" in result.stderr


def test_waits_for_a_first_version_then_serves(server_test_models, tmp_path):
    base = tmp_path / "later"
    base.mkdir()
    info = tmp_path / "info.json"
    log_path = tmp_path / "log.txt"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            server_command(base, "--tensorflow_intra_op_parallelism=1",
                           "--tensorflow_inter_op_parallelism=1", model_name="later",
                           info_file=info),
            stdout=log_file, stderr=subprocess.STDOUT, env=server_env(),
        )
    try:
        deadline = time.monotonic() + 60
        while "No versions of servable later" not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert not info.exists(), "the port must not open before the first version loads"
        shutil.copytree(server_test_models["half"] / "1", base / "tmp-copy")
        os.rename(base / "tmp-copy", base / "1")
        while not info.exists():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        url = json.loads(info.read_text())["url"]
        response = requests.post(f"{url}/v1/models/later:predict", json={"instances": [2.0]})
        assert response.json() == {"predictions": [3.0]}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert not info.exists()


def test_sigterm_during_startup_wait_exits_cleanly(tmp_path):
    base = tmp_path / "never"
    base.mkdir()
    log_path = tmp_path / "log.txt"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(server_command(base, model_name="never"), stdout=log_file,
                                   stderr=subprocess.STDOUT, env=server_env())
    deadline = time.monotonic() + 60
    while "No versions of servable never" not in log_path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0


# ---- running servers ----


def test_exits_when_the_parent_pid_is_gone(server_test_models, tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    server = start_server(server_test_models["half"], f"--parent_pid={parent.pid}",
                          model_name="half", workdir=tmp_path)
    try:
        assert server.info["parent_pid"] == parent.pid
        parent.kill()
        parent.wait(5)
        assert server.process.wait(20) == 0
        assert not server.info_path.exists()
        assert "Parent process" in server.log()
    finally:
        parent.kill()
        server.stop()


def test_port_retries_and_info_file(server_test_models, tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        server = start_server(
            server_test_models["half"], f"--rest_api_port={taken}", "--rest_api_port_retries=20",
            model_name="half", workdir=tmp_path,
        )
        try:
            info = server.info
            assert taken < info["port"] <= taken + 20
            assert info["url"] == f"http://127.0.0.1:{info['port']}"
            assert info["format"] == 1 and info["backend"] == "python"
            assert info["pid"] == server.pid and isinstance(info["grpc_port"], int)
            assert info["models"] == {
                "half": {"base_path": str(server_test_models["half"]), "versions": [2]}
            }
            assert "CPU:0" in info["devices"]
            assert f"--rest_api_port={taken}" in info["argv"]
            assert requests.get(f"{server.url}/v1/models/half").status_code == 200
        finally:
            assert server.stop() == 0
    finally:
        blocker.close()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        cmd = server_command(server_test_models["half"], model_name="half")
        cmd = [c for c in cmd if not c.startswith("--rest_api_port")]
        result = _run_to_exit(cmd + [f"--rest_api_port={blocker.getsockname()[1]}"])
        assert result.returncode == 1 and "Could not bind" in result.stderr
    finally:
        blocker.close()


GUARD_SCRIPT = r"""
import json, os, signal, sys, threading, time
from tfserve_magic.server import main as m
info = sys.argv[1]
def report():
    while not os.path.exists(info):
        time.sleep(0.05)
    with open(info + ".modules", "w") as fh:
        json.dump({"keras": any(k == "keras" or k.startswith("keras.") for k in sys.modules),
                   "ipython": "IPython" in sys.modules,
                   "tensorflow": "tensorflow" in sys.modules,
                   "frozen": __import__("gc").get_freeze_count()}, fh)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=report, daemon=True).start()
sys.exit(m.main(sys.argv[2:]))
"""


def test_server_process_never_imports_keras_or_ipython(server_test_models, tmp_path):
    info = tmp_path / "info.json"
    cmd = server_command(server_test_models["half"], model_name="half", info_file=info)
    serve_args = cmd[cmd.index("serve") + 1:]
    result = _run_to_exit([sys.executable, "-c", GUARD_SCRIPT, str(info), *serve_args])
    assert result.returncode == 0, result.stderr[-2000:]
    modules = json.loads((tmp_path / "info.json.modules").read_text())
    assert modules["tensorflow"] is True
    assert modules["keras"] is False and modules["ipython"] is False
    assert modules["frozen"] > 100_000  # gc.freeze() after loading


def test_rest_api_timeout_gives_504_and_the_server_keeps_serving(server_test_models, tmp_path):
    server = start_server(server_test_models["multi"], "--rest_api_timeout_in_ms=300",
                          model_name="multi", workdir=tmp_path)
    try:
        slow = {"signature_name": "slow", "inputs": {"n": [4000]}}
        response = requests.post(f"{server.url}/v1/models/multi:predict", json=slow, timeout=60)
        assert response.status_code == 504
        assert response.json() == {"error": "Deadline Exceeded"}
        quick = {"instances": [{"a": [1.0, 2.0], "b": 1}]}
        response = requests.post(f"{server.url}/v1/models/multi:predict", json=quick, timeout=60)
        assert response.json()["predictions"] == [{"total": 4.0, "doubled": 2, "positive": True}]
    finally:
        assert server.stop() == 0
