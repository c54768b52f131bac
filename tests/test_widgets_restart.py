"""`%tfserve draw` after the server was stopped: the widget offers to start it again.

The real path of "Run All, then play" when a notebook stopped its server in its last cell: the
magic hands the widget ``restarter(name)``, the widget shows the connection error with a
"Start NAME again" button, and the button starts the same server and repeats the prediction.
"""

from __future__ import annotations

import pytest

from tfserve_magic import manager
from tfserve_magic._restart import restarter


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
