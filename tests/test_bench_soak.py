"""``make soak`` (bench/soak.py), run for a few seconds: a real 2-worker server under mixed load
with a hot swap and a worker kill, and the report it prints. Timings are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.env import REPO, tf_env
from tfserve_magic.server import sizing

pytestmark = pytest.mark.skipif(not sizing.reuse_port_supported(),
                                reason="--workers needs SO_REUSEPORT (Linux)")


def test_a_short_soak_reports_and_survives_a_swap_and_a_kill(tmp_path):
    env = {**tf_env(), "TFSERVE_MAGIC_OFFLINE": "1"}  # the bundled digits: a quick model
    report = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "12", "--threads", "2",
         "--build-dir", str(tmp_path / "build"), "--json", str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "memory and open files of the parent and each worker" in out
    data = json.loads(report.read_text())
    rows = data["rows"]
    assert len(rows) >= 2 and all(r["parent"][0] > 0 and r["parent"][1] > 0 for r in rows)
    assert rows[-1]["version"] >= 2 and rows[-1]["kills"] == 1  # one swap and one kill at least
    assert all(len(r["workers"]) == 2 for r in rows)
    assert set(data["requests"]) == {"rest-1", "rest-100", "grpc-1", "grpc-100", "status"}
    assert sum(data["requests"].values()) == sum(r["requests"] for r in rows)
    # the clients retry once after a reset: the kill costs nothing
    assert data["failed"] == {}, data["errors"]
    assert "the server stopped cleanly" in out
