"""Shared fixtures: an IPython shell with the extension, and the no-orphan-server guard.

Model fixtures live in tests/fixtures/models.py, server fixtures in tests/fixtures/server.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU tests; gpu-marked tests set their own

pytest_plugins = ["tests.fixtures.models", "tests.fixtures.server"]

SERVER_PATTERN = "tfserve_magic serve|tfserve serve|tensorflow_model_server"


def _server_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", SERVER_PATTERN], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()} - {os.getpid()}


@pytest.fixture(scope="session", autouse=True)
def no_orphan_servers(tmp_path_factory):
    """Fail the run if any model-server process started during the tests outlives them."""
    before = _server_pids()
    # Keep servers' per-user registry away from the developer's real one.
    registry = tmp_path_factory.mktemp("tfserve-registry")
    os.environ["TFSERVE_MAGIC_HOME"] = str(registry)
    yield
    deadline = time.time() + 10
    left = _server_pids() - before
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = _server_pids() - before
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
