"""A server that stops by itself (a crash loop of its workers) is shown by `%tfserve list` and
`%tfserve status` with the reason from its log, instead of vanishing (issue 21)."""

from __future__ import annotations

import os
import re
import signal

import pytest

import tfserve_magic as tfm
from tests.helpers.serving import wait_for
from tfserve_magic.server import workers

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")


def _new_replacement(name: str, killed: set[int]) -> int | None:
    for pid in re.findall(r"Starting a replacement for worker 1 \(pid (\d+)", tfm.logs(name, 400)):
        if int(pid) not in killed:
            return int(pid)
    return None


def test_a_crash_loop_is_listed_with_its_reason(server_test_models, shell):
    handle = tfm.start("Looping", server_test_models["half"], port=0, workers=2, timeout=240)
    try:
        victim = max(w["pid"] for w in handle.workers if w["index"] == 1)
        os.kill(victim, signal.SIGKILL)
        killed = {victim}
        for _ in range(workers.CRASH_LOOP_DEATHS - 1):
            pid = wait_for(lambda: _new_replacement("Looping", killed), "a replacement", 120)
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        wait_for(lambda: "Looping" in tfm.servers().failed, "the failure in the list", 120)
    finally:
        tfm.stop(all=True)
    table = tfm.servers()
    assert "crash loop" in table.failed["Looping"]
    assert "Looping stopped by itself:" in repr(table) and "crash loop" in table._repr_html_()
    with pytest.raises(LookupError, match="stopped by itself: .*crash loop"):
        tfm.status("Looping")
    listed = shell.run_line_magic("tfserve", "list")
    assert "Looping stopped by itself" in repr(listed)
    # a new start of the same name forgets the old failure
    again = tfm.start("Looping", server_test_models["half"], port=0, workers=1, timeout=240)
    try:
        assert "Looping" not in tfm.servers().failed
    finally:
        tfm.stop(again.name)
