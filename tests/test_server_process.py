"""server/process.py: where a client connects, binding, pid liveness, the parent watch and the
info file's write/remove (real sockets on loopback, real child processes; no TensorFlow)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from tfserve_magic import records
from tfserve_magic.server import flags, process


@pytest.mark.parametrize(
    "host, dialled",
    [
        ("::", "[::1]"),
        ("[::]", "[::1]"),
        ("0.0.0.0", "127.0.0.1"),
        ("", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("fe80::1", "[fe80::1]"),
        ("localhost", "localhost"),
        ("192.168.1.5", "192.168.1.5"),
    ],
)
def test_connect_host_one_rule(host, dialled):
    assert process.connect_host(host) == dialled
    assert process.client_url(host, 8501) == f"http://{dialled}:8501"
    info = records.ServerInfo(pid=1, host=host, port=8501, url="", grpc_port=8500)
    assert info.connect_url == f"http://{dialled}:8501"
    assert info.grpc_target == f"{dialled}:8500"


def _dial(url_host: str, port: int) -> None:
    with socket.create_connection((url_host.strip("[]"), port), timeout=5):
        pass


def test_a_server_bound_to_every_address_is_reached_where_connect_host_says():
    any_v4 = process.bind("0.0.0.0", 0)
    try:
        _dial(process.connect_host("0.0.0.0"), any_v4.getsockname()[1])
    finally:
        any_v4.close()
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        any_v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        any_v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the case 127.0.0.1 misses
        any_v6.bind(("::", 0))
    except OSError as exc:
        pytest.skip(f"cannot bind IPv6 here: {exc}")
    any_v6.listen(1)
    try:
        port = any_v6.getsockname()[1]
        _dial(process.connect_host("::"), port)
        with pytest.raises(OSError):
            _dial("127.0.0.1", port)
    finally:
        any_v6.close()


def test_bind_moves_on_to_the_next_free_port_and_names_what_it_tried():
    taken = process.bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        assert not process.port_free("127.0.0.1", port)
        with pytest.raises(OSError, match=rf"Could not bind the REST API to 127.0.0.1 \(port {port}\)"):
            process.bind("127.0.0.1", port)
        try:
            moved = process.bind("127.0.0.1", port, retries=20)
        except OSError:
            pytest.skip("no free port in the 20 after the one taken")
        assert port < moved.getsockname()[1] <= port + 20
        assert moved.getblocking() is False
        moved.close()
    finally:
        taken.close()


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
def test_check_free_keeps_a_second_server_off_a_shared_port():
    first = process.bind("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    try:
        joined = process.bind("127.0.0.1", port, reuse_port=True)  # what workers do
        joined.close()
        with pytest.raises(OSError, match="Address already in use"):
            process.bind("127.0.0.1", port, reuse_port=True, check_free=True)
    finally:
        first.close()


def test_pid_alive():
    assert process.pid_alive(os.getpid())
    assert process.pid_alive(os.getpid(), expect=["python", "pytest"])
    assert not process.pid_alive(os.getpid(), expect=["no-such-program-xyz"])
    assert not process.pid_alive(0) and not process.pid_alive(-5) and not process.pid_alive("1")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process.pid_alive(child.pid)  # exited (reaped by poll)


def test_a_zombie_is_not_alive():
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("needs /proc")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # exited but not reaped: a zombie
        state = open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.02)
    try:
        assert not process.pid_alive(child.pid)
    finally:
        child.wait()


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_watch_parent_calls_back_once_the_owner_is_gone():
    owner = _sleeper()
    gone = threading.Event()
    try:
        process.watch_parent(owner.pid, gone.set)
        assert not gone.wait(1.0)
    finally:
        owner.kill()
        owner.wait()
    assert gone.wait(10)


def test_watch_parent_stays_while_another_owner_lives():
    first, second = _sleeper(), _sleeper()
    gone = threading.Event()
    asked = []

    def other_owners(pid):
        asked.append(pid)
        return [p for p in (second.pid,) if p != pid and process.pid_alive(p)]

    try:
        process.watch_parent(first.pid, gone.set, other_owners)
        first.kill()
        first.wait()
        deadline = time.monotonic() + 10
        while not asked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asked == [first.pid]
        assert not gone.wait(1.5)  # the second owner still runs
    finally:
        second.kill()
        second.wait()
    assert gone.wait(10)
    assert asked[-1] == second.pid


def test_write_atomic_leaves_one_private_file(tmp_path):
    path = tmp_path / "deeper" / "x.json"
    process.write_json_atomic(path, {"a": 1})
    process.write_json_atomic(path, {"a": 2})
    assert process.read_json(path) == {"a": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["x.json"]
    path.write_text("[1, 2")
    assert process.read_json(path) is None


def test_info_file_is_written_typed_and_removed_only_by_its_writer(tmp_path):
    path = tmp_path / "info.json"
    info = records.ServerInfo(pid=os.getpid(), host="::", port=8501,
                              url=process.client_url("::", 8501), argv=("--port=0",))
    info.write(path)
    data = process.read_json(path)
    for key in ("format", "pid", "host", "port", "grpc_port", "url", "backend", "tf_version",
                "devices", "models", "argv", "parent_pid", "started"):
        assert key in data  # docs/contracts.md: the keys the readers know
    assert data["url"] == "http://[::1]:8501" and "workers" not in data
    assert records.read_info(path) == info
    records.remove_info(path, owner_pid=os.getpid() + 1)
    assert path.exists()
    records.remove_info(path)
    assert not path.exists()


def test_flag_given_reads_the_command_line():
    assert flags.given(["--port=0"], "port") and flags.given(["--port", "9"], "port")
    assert not flags.given(["--rest_api_port=0"], "port")
    assert not flags.given(["--model_name", "port"], "port")  # a value, not a flag
