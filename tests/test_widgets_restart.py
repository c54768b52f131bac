"""`%tfserve draw` after the server was stopped: the widget offers to start it again.

The real path of "Run All, then play" when a notebook stopped its server in its last cell: the
magic hands the widget ``restarter(name)``, the widget shows the connection error with a
"Start NAME again" button, and the button starts the same server and repeats the prediction.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tfserve_magic import manager
from tfserve_magic._restart import restarter
from tfserve_magic.server.sizing import reuse_port_supported


@pytest.fixture
def served(mlp_export):
    handle = manager.start("Pad", mlp_export, port=0)
    yield handle
    manager.stop(all=True)


def test_draw_widget_restarts_a_stopped_server_and_predicts(shell, served):
    widget = shell.run_line_magic("tfserve", "draw Pad")
    assert callable(widget.restart)
    manager.stop("Pad")
    assert manager.find("Pad") is None
    widget.live.value = False
    widget.on_down(140, 40)
    widget.on_move(140, 240)
    widget.on_up()
    widget.predict_button.click()
    assert widget.status.kind == "error" and "cannot connect" in widget.status.text
    assert widget.status.offered == "Start Pad again"
    widget.status.action.click()
    again = manager.find("Pad")
    assert again is not None and again.pid != served.pid
    assert again.base_path == served.base_path
    assert widget.client.base_url == again.url
    assert widget.status.kind == "ok", widget.status.value
    assert widget.top_class() is not None


def test_no_restart_for_what_the_manager_does_not_know():
    assert restarter("http://127.0.0.1:1/v1/models/X") is None
    assert restarter("NoSuchServer") is None
    assert restarter(None) is None


@pytest.mark.skipif(not reuse_port_supported(), reason="--workers needs SO_REUSEPORT (Linux)")
def test_restart_keeps_every_start_option(mlp_export):
    """A server started with non-default workers, poll, gpu and server flags, stopped, comes
    back through restarter(name) with all of them (from its ServerRecord), on the same port."""
    first = manager.start("Opts", mlp_export, port=0, workers=2, poll=3, gpu="none",
                          extra_args=["--rest_api_max_body_bytes=2000"], timeout=240)
    try:
        start_again = restarter("Opts")
        assert len(first.workers) == 2
        manager.stop("Opts")
        assert manager.find("Opts") is None
        again = start_again()
        assert again.pid != first.pid and not again.reused
        assert again.url == first.url and again.base_path == first.base_path
        assert len(again.workers) == 2
        record = manager.running_record("Opts")
        assert (record.workers, record.poll, record.gpu) == ("2", 3, "none")
        assert record.extra_args == ("--rest_api_max_body_bytes=2000",)
        with open(f"/proc/{again.pid}/cmdline", "rb") as fh:
            argv = fh.read().decode().split("\0")
        assert "--workers=2" in argv and "--file_system_poll_wait_seconds=3" in argv
        assert "--rest_api_max_body_bytes=2000" in argv
        with open(f"/proc/{again.pid}/environ", "rb") as fh:
            environ = dict(v.partition("=")[::2] for v in fh.read().decode().split("\0") if v)
        assert environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")  # --gpu none again
        # the server flag is in force: a body over 2000 bytes is refused with 413
        body = json.dumps({"instances": [[0.0] * 784] * 4}).encode()
        request = urllib.request.Request(f"{again.url}/v1/models/Opts:predict", data=body)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        assert start_again().pid == again.pid  # running: nothing is started twice
    finally:
        manager.stop(all=True)
