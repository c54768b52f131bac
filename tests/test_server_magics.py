"""``%tfserve start | stop | list | status | logs`` in a real InteractiveShell, real servers."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from IPython.core.error import UsageError

from tfserve_magic import manager


def _magics(shell):
    return next(c for c in shell.configurables if type(c).__name__ == "TFServeMagics")


@pytest.fixture(autouse=True)
def _stop_servers():
    yield
    manager.stop(all=True)


def test_start_reuse_list_status_logs_stop(shell, mlp_export, monkeypatch, capsys):
    monkeypatch.chdir(mlp_export.parent)  # a relative BASE_PATH, as in a notebook
    handle = shell.run_line_magic("tfserve", f"start MLP ./{mlp_export.name}")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Starting MLP on CPU ...",
        f"Serving MLP v1 at {handle.url} and gRPC {handle.grpc_target} (pid {handle.pid})",
    ]
    assert handle.base_path == str(mlp_export) and handle.port >= 8501
    body = json.dumps({"instances": [[[[0.0]] * 28] * 28]}).encode()
    request = urllib.request.Request(f"{handle.url}/v1/models/MLP:predict", data=body)
    with urllib.request.urlopen(request, timeout=30) as response:
        [probabilities] = json.loads(response.read())["predictions"]
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1.0) < 1e-4

    again = shell.run_line_magic("tfserve", f"start MLP {mlp_export}")
    assert again.reused and again.pid == handle.pid
    assert capsys.readouterr().out.startswith(f"Reusing MLP v1 at {handle.url}")
    assert manager.start("MLP", mlp_export).reused  # the function's defaults match the magic's
    # `--port N` for the port it already listens on is the same request
    assert shell.run_line_magic("tfserve", f"start MLP {mlp_export} --port {handle.port}").reused
    capsys.readouterr()

    table = shell.run_line_magic("tfserve", "list")
    assert [h.name for h in table] == ["MLP"]
    assert handle.url in repr(table) and "MLP v1" in repr(table)
    assert "<table>" in table._repr_html_()

    view = shell.run_line_magic("tfserve", "status MLP")
    assert view["MLP"][0]["state"] == "AVAILABLE" and "AVAILABLE" in repr(view)

    shell.run_line_magic("tfserve", "logs MLP -n 3")
    lines = capsys.readouterr().out.splitlines()
    assert 1 <= len(lines) <= 3

    shell.run_line_magic("tfserve", "stop MLP")
    assert capsys.readouterr().out.strip() == f"Stopped MLP (pid {handle.pid})"
    assert repr(shell.run_line_magic("tfserve", "list")) == "No servers running."
    with pytest.raises(UsageError, match="no running server named 'MLP'"):
        shell.run_line_magic("tfserve", "status MLP")
    with pytest.raises(UsageError, match="no running server named 'MLP'"):
        shell.run_line_magic("tfserve", "stop MLP")


def test_start_failures_are_usage_errors_with_the_log_tail(shell, tmp_path, capsys):
    with pytest.raises(UsageError, match="does not exist"):
        shell.run_line_magic("tfserve", f"start MLP {tmp_path / 'missing'}")
    assert capsys.readouterr().out == ""  # refused before starting: only the error, no status
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"\x00 definitely not a SavedModel")
    with pytest.raises(UsageError) as err:
        shell.run_line_magic("tfserve", f"start broken {broken.parent} --port 0")
    assert "broken did not start" in str(err.value)
    assert "Last lines of the server log" in str(err.value)
    assert capsys.readouterr().out.splitlines() == [
        "Starting broken on CPU ...",
        "Failed to start broken (why: below)",
    ]
    assert manager.servers() == []


def test_argument_errors(shell):
    with pytest.raises(UsageError, match="needs NAME BASE_PATH"):
        shell.run_line_magic("tfserve", "start MLP")
    with pytest.raises(UsageError, match="needs a server NAME or --all"):
        shell.run_line_magic("tfserve", "stop")
    with pytest.raises(UsageError, match="invalid choice"):
        shell.run_line_magic("tfserve", "start MLP ./saved --backend docker")
    with pytest.raises(UsageError, match="no log for a server named 'nothing'"):
        shell.run_line_magic("tfserve", "logs nothing")


def test_flags_after_double_dash_go_to_the_server(shell):
    parser = _magics(shell)._parser("start")
    args = parser.parse_args(
        ["MLP", "./saved", "--gpu", "none", "--", "--enable_batching", "--port=9"]
    )
    assert (args.name, args.base_path, args.gpu) == ("MLP", "./saved", "none")
    assert args.extra == ["--enable_batching", "--port=9"]
    args = parser.parse_args(["--config", "models.config", "--restart"])
    assert args.config == "models.config" and args.restart and args.extra == []


def test_stop_all(shell, mlp_export, capsys):
    first = manager.start("one", mlp_export, port=0)
    second = manager.start("two", mlp_export, port=0, detach=True)
    shell.run_line_magic("tfserve", "stop --all")
    out = capsys.readouterr().out
    assert f"Stopped one (pid {first.pid})" in out and f"Stopped two (pid {second.pid})" in out
    assert manager.servers() == []
    for pid in (first.pid, second.pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    shell.run_line_magic("tfserve", "stop --all")
    assert capsys.readouterr().out.strip() == "No server was running."


def test_status_line_updates_one_display_in_a_kernel(shell, monkeypatch):
    from IPython.core.displaypub import CapturingDisplayPublisher

    from tfserve_magic.magics import _StatusLine

    publisher = CapturingDisplayPublisher()
    monkeypatch.setattr(shell, "display_pub", publisher)
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    line = _StatusLine(shell)
    line.update("Starting MLP on CPU ...")
    line.update("Starting MLP on CPU ... 3s")
    line.update("Serving MLP v1 at http://127.0.0.1:8501 (pid 1)", final=True)
    outputs = publisher.outputs
    assert [o["data"]["text/plain"] for o in outputs][-1].startswith("Serving MLP v1")
    ids = {o["transient"]["display_id"] for o in outputs}
    assert len(outputs) == 3 and len(ids) == 1
    assert [o["update"] for o in outputs] == [False, True, True]
