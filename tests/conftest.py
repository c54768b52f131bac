"""Shared fixtures: an IPython shell with the extension, and the no-orphan-server guard.

Model fixtures live in tests/fixtures/models.py, server fixtures in tests/fixtures/server.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU tests; gpu-marked tests set their own

pytest_plugins = ["tests.fixtures.models", "tests.fixtures.server", "tests.fixtures.legacy_models"]

SERVER_PATTERN = "tfserve_magic serve|tfserve serve|tensorflow_model_server"


def _server_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", SERVER_PATTERN], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()} - {os.getpid()}


def _started_by_this_run(pid: int, registry: str) -> bool:
    """Servers inherit TFSERVE_MAGIC_HOME from the run that started them; other test runs on
    the same machine (their servers match SERVER_PATTERN too) must not be killed by this one."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (or gone): judge by the pattern alone
    return f"TFSERVE_MAGIC_HOME={registry}".encode() in environ


@pytest.fixture(scope="session", autouse=True)
def no_orphan_servers(tmp_path_factory):
    """Fail the run if any model-server process started during the tests outlives them."""
    before = _server_pids()
    # Keep servers' per-user registry away from the developer's real one.
    registry = tmp_path_factory.mktemp("tfserve-registry")
    os.environ["TFSERVE_MAGIC_HOME"] = str(registry)
    yield
    deadline = time.time() + 10

    def ours_left():
        return {p for p in _server_pids() - before if _started_by_this_run(p, str(registry))}

    left = ours_left()
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = ours_left()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"model-server processes outlived the tests: {sorted(left)}"


@pytest.fixture
def shell():
    """A real InteractiveShell with tfserve_magic loaded; cell errors propagate to the test."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "tfserve_magic")
    yield ip
    ip.run_line_magic("unload_ext", "tfserve_magic")
