"""The process manager: real server processes started, reused, restarted, listed and stopped.

Also the pure parts (GPU policy, argument checks, tables) and the no-orphan guarantees: the
owner's exit (atexit) and SIGKILL both end its servers; ``detach`` survives its owner.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tfserve_magic import gpu, manager
from tfserve_magic.manager import StartError, spec

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- helpers
def save_half_plus_two(base: Path, version: int = 1, offset: float = 2.0) -> Path:
    """A real SavedModel: y = x / 2 + offset, serving_default over float32 [None, 3]."""
    import tensorflow as tf

    class HalfPlus(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 0.5 + offset}

    module = HalfPlus()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return base


def predict(url: str, model: str, rows) -> list:
    body = json.dumps({"instances": rows}).encode()
    request = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=body)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"]


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.time() + seconds
    while pid_running(pid):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_half_plus_two(tmp_path_factory.mktemp("half") / "half")


@pytest.fixture(scope="module", autouse=True)
def stop_everything():
    yield
    manager.stop(all=True)


# ---------------------------------------------------------------------------- GPU policy (pure)
def test_gpu_request_parsing():
    assert gpu.parse_request("auto") == "auto"
    assert gpu.parse_request(None) == "auto"
    assert gpu.parse_request("none") == "none"
    assert gpu.parse_request("1") == [1]
    assert gpu.parse_request(0) == [0]
    assert gpu.parse_request("0, 2") == [0, 2]
    for bad in ("gpu0", "1,1", "-2", "0;1"):
        with pytest.raises(ValueError):
            gpu.parse_request(bad)


def test_visible_devices_follow_the_kernel():
    derive = gpu.derive_visible_devices
    assert derive("none", "0,1") == ""
    assert derive("auto", None) is None  # inherit every GPU, as the kernel does
    assert derive("auto", "") == ""
    assert derive("auto", "2,3") == "2,3"
    assert derive("auto", "-1") == ""
    assert derive([1], "2,3") == "3"  # the notebook's GPU:1 is physical GPU 3
    assert derive([0, 1], None) == "0,1"
    assert derive([0], "GPU-uuid-a,GPU-uuid-b") == "GPU-uuid-a"
    with pytest.raises(ValueError, match="sees only 2 GPU"):
        derive([2], "2,3")
    with pytest.raises(ValueError, match="sees only 0 GPU"):
        derive([0], "")


def test_visible_devices_follow_tf_set_visible_devices():
    narrowed = gpu.KernelTF(physical=4, visible=(2,), initialized=False)
    assert gpu.derive_visible_devices("auto", None, narrowed) == "2"
    assert gpu.derive_visible_devices("auto", "4,5,6,7", narrowed) == "6"
    assert gpu.derive_visible_devices([0], "4,5,6,7", narrowed) == "6"
    hidden = gpu.KernelTF(physical=2, visible=(), initialized=True)
    assert gpu.derive_visible_devices("auto", None, hidden) == ""
    with pytest.raises(ValueError, match="TensorFlow sees only 1"):
        gpu.derive_visible_devices([1], None, narrowed)
    everything = gpu.KernelTF(physical=2, visible=(0, 1), initialized=True)
    assert gpu.derive_visible_devices("auto", "0,1", everything) == "0,1"


def test_device_labels():
    assert gpu.label_for("", 8) == "CPU"
    assert gpu.label_for("3", 8) == "GPU:0"  # the child renumbers its GPUs from 0
    assert gpu.label_for("2,3", 8) == "GPU:0,1"
    assert gpu.label_for(None, 2) == "GPU:0,1"
    assert gpu.label_for(None, 0) == "CPU"


def test_memory_warning_only_when_the_kernel_holds_the_gpu():
    held = gpu.KernelTF(physical=1, visible=(0,), initialized=True, growth=(False,))
    assert "--gpu none" in gpu.memory_warning(held, {}, None)
    assert "set_memory_growth" in gpu.memory_warning(held, {}, "0")
    assert gpu.memory_warning(held, {}, "") is None  # server on CPU
    assert gpu.memory_warning(held, {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}, None) is None
    growing = gpu.KernelTF(physical=1, visible=(0,), initialized=True, growth=(True,))
    assert gpu.memory_warning(growing, {}, None) is None
    not_started = gpu.KernelTF(physical=1, visible=(0,), initialized=False, growth=(False,))
    assert gpu.memory_warning(not_started, {}, None) is None
    assert gpu.memory_warning(None, {}, None) is None


def test_plan_on_this_cpu_machine_is_quiet():
    plan = gpu.plan("auto", {"CUDA_VISIBLE_DEVICES": ""})
    assert plan.env == {"CUDA_VISIBLE_DEVICES": ""} and plan.label == "CPU"
    assert plan.warnings == []
    plan = gpu.plan("none", {})
    assert plan.env == {"CUDA_VISIBLE_DEVICES": ""} and plan.label == "CPU"
    plan = gpu.plan("1", {"CUDA_VISIBLE_DEVICES": "5,6"})
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "6", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert plan.label == "GPU:0"


# ---------------------------------------------------------------------------- state, arguments
def test_state_dir_is_private_and_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSERVE_MAGIC_HOME", str(tmp_path / "a"))
    first = manager.state_dir()
    monkeypatch.setenv("TFSERVE_MAGIC_HOME", str(tmp_path / "b"))
    second = manager.state_dir()
    assert first == tmp_path / "a" and second == tmp_path / "b"
    assert stat.S_IMODE(second.stat().st_mode) == 0o700


def test_bad_requests_fail_before_spawning(tmp_path, model_dir):
    with pytest.raises(StartError, match="does not exist"):
        manager.start("M", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StartError, match="no model versions"):
        manager.start("M", tmp_path / "empty")
    with pytest.raises(StartError, match="give its parent"):
        manager.start("M", model_dir / "1")
    with pytest.raises(StartError, match="must be letters"):
        manager.start("bad/name", model_dir)
    with pytest.raises(StartError, match="--gpu must be"):
        manager.start("M", model_dir, gpu="first")
    with pytest.raises(StartError, match="not both"):
        manager.start("M", model_dir, config=tmp_path / "x.config")
    with pytest.raises(StartError, match="config file not found"):
        manager.start(None, config=tmp_path / "x.config")
    with pytest.raises(StartError, match="--backend must be"):
        manager.start("M", model_dir, backend="docker")
    with pytest.raises(StartError, match="ports must be"):
        manager.start("M", model_dir, port=70000)
    assert manager.servers() == []


def test_backend_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(manager.MODEL_SERVER_VAR, raising=False)
    assert spec.resolve_backend("auto") == ("python", None)
    with pytest.raises(StartError, match="not on PATH"):
        spec.resolve_backend("tensorflow_model_server")
    fake = tmp_path / "tensorflow_model_server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert spec.resolve_backend("auto") == ("tensorflow_model_server", str(fake))
    assert spec.resolve_backend("python") == ("python", None)
    monkeypatch.setenv(manager.MODEL_SERVER_VAR, str(tmp_path / "nope"))
    with pytest.raises(StartError, match="not an executable"):
        spec.resolve_backend("auto")


def test_start_result_takes_starts_options_and_nothing_else(model_dir):
    """One signature (one place for defaults): a misspelled option is a TypeError, not ignored."""
    import inspect

    assert inspect.signature(manager.start).parameters == \
        inspect.signature(manager.start_result).parameters
    for call in (manager.start, manager.start_result):
        with pytest.raises(TypeError, match="prot"):
            call("M", model_dir, prot=0)
        with pytest.raises(TypeError):
            call("M", model_dir, 8501)  # options are keyword-only
    with pytest.raises(StartError, match="ports must be"):
        manager.start_result("M", model_dir, port=70000)
    assert manager.servers() == []


def test_config_is_parsed_with_the_serving_protos(tmp_path, monkeypatch):
    config = tmp_path / "models.config"
    config.write_text(
        textwrap.dedent(
            """
            model_config_list {
              config { name: "mlp" base_path: "/m/mlp" model_platform: "tensorflow" }
              config {
                name: 'cnn'
                base_path: "rel/cnn"
                version_labels { key: "stable" value: 1 }
              }
            }
            """
        )
    )
    parsed = spec.parse_config(config)
    assert [m.name for m in parsed.model_config_list.config] == ["mlp", "cnn"]
    monkeypatch.chdir(tmp_path)
    assert spec.absolute_base_paths(parsed) is True
    assert parsed.model_config_list.config[0].base_path == "/m/mlp"
    assert parsed.model_config_list.config[1].base_path == str(tmp_path / "rel/cnn")
    assert parsed.model_config_list.config[1].version_labels["stable"] == 1
    config.write_text("model_config_list { config { nme: 'typo' } }")
    with pytest.raises(StartError, match="not a valid TF Serving model config.*nme"):
        spec.parse_config(config)


def test_tables():
    handle = manager.ServerHandle(
        name="MLP", url="http://127.0.0.1:8501", port=8501, host="127.0.0.1", pid=42,
        backend="python", devices=["CPU:0"], models={"MLP": [1, 3]}, log_path="/l/MLP.log",
        started=time.time() - 75,
    )
    assert handle.summary() == "Serving MLP v3 at http://127.0.0.1:8501 (pid 42)"
    text = manager.format_servers([handle])
    assert "MLP v3" in text and "CPU:0" in text and "1m 15s" in text and "/l/MLP.log" in text
    table = manager.ServerTable([handle])
    assert "<table>" in table._repr_html_() and repr(table) == text
    assert repr(manager.ServerTable([])) == "No servers running."
    status = {"MLP": [
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "2", "state": "END", "status": {"error_code": "NOT_FOUND", "error_message": "gone"}},
    ]}
    text = manager.format_status(status)
    assert "AVAILABLE" in text and "NOT_FOUND: gone" in text
    view = manager.StatusView("MLP", status, devices=["CPU:0"])
    assert "color:#b00" in view._repr_html_() and repr(view).startswith("MLP on CPU:0:")
    handle.reused = True
    assert "--restart" in handle.summary()


# ---------------------------------------------------------------------------- real servers
def test_start_reuse_restart_stop(model_dir, tmp_path):
    progress = []
    first = manager.start("half", model_dir, port=0, progress=progress.append, poll=1)
    assert progress[0] == "Starting half on CPU ..."
    assert first.models == {"half": [1]} and not first.reused
    assert first.backend == "python" and first.devices == ["CPU:0"]
    assert first.grpc_target and first.grpc_target.startswith("127.0.0.1:")
    assert first.summary() == (
        f"Serving half v1 at {first.url} and gRPC {first.grpc_target} (pid {first.pid})"
    )
    assert predict(first.url, "half", [[2.0, 4.0, 6.0]]) == [[3.0, 4.0, 5.0]]
    record = json.loads((manager.state_dir() / "half.json").read_text())
    assert record["pid"] == first.pid and record["owner_pid"] == os.getpid()
    info = json.loads(Path(record["info_path"]).read_text())
    assert info["port"] == first.port and info["devices"] == ["CPU:0"]

    again = manager.start("half", model_dir, port=0, poll=1)
    assert again.reused and again.pid == first.pid and "Reusing half v1" in again.summary()
    # asking for the port it already has (explicitly, as `--port N` does) reuses it too
    exact = manager.start("half", model_dir, port=first.port, port_retries=0, poll=1)
    assert exact.reused and exact.pid == first.pid
    with pytest.raises(StartError, match="other start options: port"):
        manager.start("half", model_dir, port=free_port(), port_retries=0, poll=1)

    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    with pytest.raises(StartError, match="--restart") as err:
        manager.start("half", other, port=0, poll=1)
    assert f"options: base path (base_path '{model_dir}' now '{other}')" in str(err.value)
    with pytest.raises(StartError, match="--restart") as err:
        manager.start("half", model_dir, port=0, poll=2)
    assert "options: poll (poll 1.0 now 2.0)" in str(err.value)  # names what differs
    assert pid_running(first.pid)

    restarted = manager.start("half", other, port=0, poll=1, restart=True)
    assert restarted.pid != first.pid and not restarted.reused
    assert wait_gone(first.pid, 5)
    assert [h.name for h in manager.servers()] == ["half"]
    assert manager.find("half").pid == restarted.pid
    assert manager.find_model("half") == (restarted.url, "half")
    assert manager.find("nothing") is None and manager.find_model("nothing") is None

    states = manager.status("half")
    assert [(s["version"], s["state"]) for s in states["half"]] == [("1", "AVAILABLE")]
    assert manager.logs("half", n=200).startswith("$ ")  # the command line heads the log

    stopped = manager.stop("half")
    assert [h.pid for h in stopped] == [restarted.pid]
    assert not pid_running(restarted.pid)
    assert manager.servers() == [] and not (manager.state_dir() / "half.json").exists()
    assert manager.logs("half", n=3)  # the log outlives the server
    with pytest.raises(LookupError, match="no running server named 'half'"):
        manager.stop("half")
    with pytest.raises(LookupError):
        manager.status("half")


def test_two_servers_side_by_side_and_port_taken(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        a = manager.start("a", model_dir, port=port)
        b = manager.start("b", model_dir, port=port)
        assert port not in (a.port, b.port) and a.port != b.port
        assert predict(a.url, "a", [[0.0, 0.0, 0.0]]) == [[2.0, 2.0, 2.0]]
        assert predict(b.url, "b", [[2.0, 2.0, 2.0]]) == [[3.0, 3.0, 3.0]]
        assert sorted(h.name for h in manager.servers()) == ["a", "b"]

        with pytest.raises(StartError) as err:
            manager.start("c", model_dir, port=port, port_retries=0)
        assert str(port) in err.value.log_tail
        assert "server log" in str(err.value)
    stopped = manager.stop(all=True)
    assert sorted(h.name for h in stopped) == ["a", "b"]
    assert not pid_running(a.pid) and not pid_running(b.pid)
    assert manager.servers() == []


def test_broken_savedmodel_shows_the_log_tail(tmp_path):
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(StartError) as err:
        manager.start("broken", tmp_path / "broken", port=0, timeout=60)
    assert "broken did not start" in err.value.reason
    assert err.value.log_tail.strip()
    assert manager.servers() == []


def _owner_script(code: str) -> str:
    return "import os, sys, time\nfrom tfserve_magic import manager\n" + textwrap.dedent(code)


def _run_owner(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _owner_script(code)], cwd=REPO, stdout=subprocess.PIPE,
        text=True, **kwargs,
    )


def test_owner_killed_with_sigkill_takes_its_server_along(model_dir):
    owner = _run_owner(
        f"""
        h = manager.start("orphan", {str(model_dir)!r}, port=0)
        print(h.pid, flush=True)
        time.sleep(120)
        """
    )
    try:
        server_pid = int(owner.stdout.readline())
        assert pid_running(server_pid)
    finally:
        owner.kill()
        owner.wait()
    assert wait_gone(server_pid, 15), "the server outlived its SIGKILLed owner"
    assert (manager.state_dir() / "orphan.json").exists()  # nobody was left to remove it...
    assert "orphan" not in [h.name for h in manager.servers()]
    assert not (manager.state_dir() / "orphan.json").exists()  # ...so listing pruned it


def test_a_server_whose_owner_died_is_replaced_not_reused(model_dir):
    """Between its kernel's death and its own exit (its pid watch) a server must not be reused:
    "Restart & Run All" would get a server that dies under the new kernel."""
    ghost = manager.start("ghost", model_dir, port=0, detach=True)  # never exits on its own
    dead = subprocess.Popen(["true"])
    dead.wait()
    record_path = manager.state_dir() / "ghost.json"
    record = json.loads(record_path.read_text())
    record.update(owner_pid=dead.pid, detach=False)  # as if owned by a kernel that just died
    record["key"]["detach"] = False
    record_path.write_text(json.dumps(record))
    fresh = manager.start("ghost", model_dir, port=0)
    assert not fresh.reused and fresh.pid != ghost.pid
    assert wait_gone(ghost.pid, 5)
    assert [h.pid for h in manager.servers() if h.name == "ghost"] == [fresh.pid]
    manager.stop("ghost")


def test_owner_exit_stops_owned_servers_but_not_detached(model_dir):
    owner = _run_owner(
        f"""
        owned = manager.start("owned", {str(model_dir)!r}, port=0)
        kept = manager.start("kept", {str(model_dir)!r}, port=0, detach=True)
        print(owned.pid, kept.pid, flush=True)
        """
    )
    out, _ = owner.communicate(timeout=120)
    owned_pid, kept_pid = map(int, out.split())
    assert not pid_running(owned_pid), "atexit did not stop the owned server"
    try:
        assert pid_running(kept_pid)
        time.sleep(1.5)  # longer than the parent-pid watch interval
        assert pid_running(kept_pid)
        assert [h.name for h in manager.servers()] == ["kept"]
        assert manager.find("kept").detach
    finally:
        manager.stop("kept")
    assert not pid_running(kept_pid)


def test_supervisor_stops_its_command_when_the_parent_dies():
    parent = subprocess.Popen(["sleep", "60"])
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "tfserve_magic.manager", "supervise", str(parent.pid), "--",
         "sleep", "60"],
        cwd=REPO,
    )
    try:
        time.sleep(1.0)
        children = subprocess.run(
            ["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 1
        parent.kill()
        parent.wait()
        supervisor.wait(timeout=15)  # raises if the supervisor outlives its parent
        assert wait_gone(int(children[0]), 5)
    finally:
        for proc in (parent, supervisor):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_tensorflow_model_server_backend(model_dir, tmp_path, monkeypatch):
    """A stand-in binary with tensorflow_model_server's flags only (no info file, no --host)."""
    fake = tmp_path / "bin" / "tensorflow_model_server"
    fake.parent.mkdir()
    fake.write_text(
        f"#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m tfserve_magic serve \"$@\"\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    port = free_port()
    handle = manager.start("tfms", model_dir, port=port, poll=1)
    assert handle.backend == "tensorflow_model_server"
    assert handle.summary().endswith(", tensorflow_model_server)")
    assert handle.models == {"tfms": [1]}
    assert predict(handle.url, "tfms", [[2.0, 2.0, 2.0]]) == [[3.0, 3.0, 3.0]]
    argv = json.loads((manager.state_dir() / "tfms.json").read_text())["argv"]
    assert str(fake) in argv and not any(a.startswith(("--info_file", "--host")) for a in argv)
    assert handle.port == port
    # The same --port as TF Serving's binary: gRPC answers there too.
    assert handle.grpc_port and f"--port={handle.grpc_port}" in argv
    from tfserve_magic.client import GrpcClient

    assert GrpcClient(handle).status()[0]["state"] == "AVAILABLE"
    again = manager.start("tfms", model_dir, port=port, poll=1)
    assert again.reused and again.pid == handle.pid
    listed = manager.servers()
    assert [(h.name, h.backend) for h in listed] == [("tfms", "tensorflow_model_server")]
    assert manager.status("tfms")["tfms"][0]["state"] == "AVAILABLE"
    [stopped] = manager.stop("tfms")
    assert wait_gone(stopped.pid, 10)
    left = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_config_file_serves_several_models_and_the_cli_sees_them(model_dir, tmp_path, monkeypatch):
    save_half_plus_two(tmp_path / "plus3", offset=3.0)
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "half" base_path: "{model_dir}" model_platform: "tensorflow" }}\n'
        '  config { name: "plus3" base_path: "plus3" model_platform: "tensorflow" }\n'
        "}\n"
    )
    monkeypatch.chdir(tmp_path)  # relative config path and relative base_path inside it
    handle = manager.start(None, config="models.config", port=0)
    assert handle.name == "models" and handle.models == {"half": [1], "plus3": [1]}
    assert handle.summary() == (
        f"Serving half v1, plus3 v1 at {handle.url} and gRPC {handle.grpc_target} "
        f"(pid {handle.pid})"
    )
    assert handle.config == str(config)
    assert manager.find_model("plus3") == (handle.url, "plus3")
    assert predict(handle.url, "plus3", [[0.0, 2.0, 4.0]]) == [[3.0, 4.0, 5.0]]

    import tfserve_magic

    client = tfserve_magic.Client("plus3")
    assert client.predict(instances=[[2.0, 2.0, 2.0]]).tolist() == [[4.0, 4.0, 4.0]]
    assert handle.client.model_name == "half"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "tfserve_magic", *args], cwd=REPO, capture_output=True,
            text=True, timeout=60,
        )

    listing = cli("list")
    assert listing.returncode == 0 and "half v1, plus3 v1" in listing.stdout
    assert handle.url in listing.stdout
    status = cli("status", "models")
    assert status.stdout.startswith("models on CPU:0:") and status.stdout.count("AVAILABLE") == 2
    assert cli("logs", "models", "-n", "2").stdout.count("\n") == 2
    missing = cli("status", "nothing")
    assert missing.returncode == 1 and "no running server named 'nothing'" in missing.stderr
    stop = cli("stop", "models")
    assert stop.stdout.strip() == f"Stopped models (pid {handle.pid})"
    assert wait_gone(handle.pid, 5) and manager.servers() == []


def _fake_binary(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "tensorflow_model_server"
    fake.write_text("#!/bin/sh\n" + body + "\n")
    fake.chmod(0o755)
    return fake


def test_a_server_that_exits_early_reports_its_log(model_dir, tmp_path, monkeypatch):
    fake = _fake_binary(tmp_path, 'echo "Failed to start server. Error: $1 is not ok" >&2; exit 3')
    monkeypatch.setenv(manager.MODEL_SERVER_VAR, str(fake))
    held = gpu.KernelTF(physical=1, visible=(0,), initialized=True, growth=(False,))
    monkeypatch.setattr(gpu, "kernel_tf_state", lambda: held)
    monkeypatch.setattr(gpu, "_system_gpu_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.warns(manager.GpuMemoryWarning, match="--gpu none"):
        result = manager.start_result("early", model_dir, backend="tensorflow_model_server")
    assert isinstance(result, manager.Failed) and result.exit_code == 3
    assert "exited with code 3: Failed to start server. Error: --port=" in result.reason
    assert manager.servers() == []


TF_STARTUP_CHATTER = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795503413.427127   29272 port.cc:153] oneDNN custom operations are on. You may see
I0000 00:00:1795503413.427458   29272 cudart_stub.cc:31] Could not find cuda drivers on your machine
I0000 00:00:1795503413.467407   29272 cpu_feature_guard.cc:227] This TensorFlow binary is optimized
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow
E0000 00:00:1795503417.169146   29282 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA \
error: Failed call to cuInit: UNKNOWN ERROR (303)"""


def test_the_log_tail_of_a_failed_start_leaves_out_tensorflow_chatter(model_dir, tmp_path,
                                                                      monkeypatch):
    """Every TF process prints these lines on a CPU-only machine; in the error they hide the cause
    (they stay in the log file)."""
    (tmp_path / "chatter.txt").write_text(TF_STARTUP_CHATTER + "\n")
    fake = _fake_binary(
        tmp_path, f'cat {tmp_path / "chatter.txt"} >&2; echo "Loading servable MLP v1" >&2; '
        'echo "Failed to start server. Error: Wire format was corrupt" >&2; exit 1'
    )
    monkeypatch.setenv(manager.MODEL_SERVER_VAR, str(fake))
    with pytest.raises(StartError) as err:
        manager.start("chatty", model_dir, backend="tensorflow_model_server", timeout=30)
    assert "Wire format was corrupt" in err.value.reason
    tail = err.value.log_tail
    assert "Loading servable MLP v1" in tail and "Wire format was corrupt" in tail
    for chatter in ("absl::InitializeLog", "oneDNN", "cudart_stub", "cpu_feature_guard",
                    "To enable the following", "cuInit"):
        assert chatter not in tail and chatter not in str(err.value)
    assert "oneDNN custom operations" in Path(err.value.log_path).read_text()


def test_a_server_that_never_gets_ready_times_out_and_is_stopped(model_dir, tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    fake = _fake_binary(tmp_path, f"echo waiting for nothing; echo $$ > {pid_file}; exec sleep 60")
    monkeypatch.setenv(manager.MODEL_SERVER_VAR, str(fake))
    with pytest.raises(StartError, match="within 2s and was stopped") as err:
        manager.start("slow", model_dir, backend="tensorflow_model_server", timeout=2)
    assert "waiting for nothing" in err.value.log_tail
    assert manager.servers() == []
    assert wait_gone(int(pid_file.read_text()), 5)  # the binary under its supervisor, too
    left = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_interrupted_start_leaves_no_process(model_dir, tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    fake = _fake_binary(tmp_path, f"echo $$ > {pid_file}; exec sleep 60")
    monkeypatch.setenv(manager.MODEL_SERVER_VAR, str(fake))
    shown = []

    def progress(text):  # Ctrl-C arrives while the line shows the elapsed time
        shown.append(text)
        if len(shown) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        manager.start("ctrlc", model_dir, backend="tensorflow_model_server", progress=progress)
    assert shown[1].startswith("Starting ctrlc on CPU ... ")
    assert wait_gone(int(pid_file.read_text()), 5)
    assert manager.servers() == [] and not (manager.state_dir() / "ctrlc.json").exists()


@pytest.mark.gpu
def test_gpu_auto_serves_on_the_kernels_gpu(model_dir, monkeypatch):
    if not Path("/proc/driver/nvidia/gpus").is_dir():
        pytest.skip("no NVIDIA GPU on this machine")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    handle = manager.start("gpu", model_dir, port=0, gpu="auto")
    try:
        assert any(d.startswith("GPU:") for d in handle.devices)
        cpu = manager.start("cpu", model_dir, port=0, gpu="none")
        assert cpu.devices == ["CPU:0"]
    finally:
        manager.stop(all=True)
