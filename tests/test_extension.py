"""The extension itself: fast %load_ext, the router's UsageErrors, %config, %reload_ext."""

from __future__ import annotations

import subprocess
import sys

import pytest
from IPython.core.error import UsageError


def test_load_ext_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'tfserve_magic')\n"
        "assert 'tfserve' in ip.magics_manager.magics['line']\n"
        "assert 'predict' in ip.magics_manager.magics['cell']\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'requests', 'ipywidgets') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_subcommand_lists_subcommands(shell):
    with pytest.raises(UsageError) as err:
        shell.run_line_magic("tfserve", "")
    for name in ("export", "start", "stop", "list", "status", "logs"):
        assert name in str(err.value)


def test_unknown_subcommand(shell):
    with pytest.raises(UsageError, match="unknown subcommand 'frobnicate'"):
        shell.run_line_magic("tfserve", "frobnicate")


def test_argparse_errors_are_usage_errors(shell):
    with pytest.raises(UsageError, match="the following arguments are required"):
        shell.run_line_magic("tfserve", "export")
    with pytest.raises(UsageError, match="invalid int value"):
        shell.run_line_magic("tfserve", "export m ./saved --version x")


def test_subcommand_help_does_not_exit(shell, capsys):
    assert shell.run_line_magic("tfserve", "export --help") is None
    assert "BASE_PATH" in capsys.readouterr().out.upper()


def test_help_text_lists_subcommands(shell):
    doc = shell.find_line_magic("tfserve").__doc__
    assert "export" in doc and "start" in doc


def test_config_lists_options(shell, capsys):
    shell.run_line_magic("config", "TFServeMagics")
    out = capsys.readouterr().out
    assert "TFServeMagics.default_port" in out
    shell.run_line_magic("config", "TFServeMagics.top_k = 5")
    magics = next(c for c in shell.configurables if type(c).__name__ == "TFServeMagics")
    assert magics.top_k == 5


def test_reload_ext(shell):
    shell.run_line_magic("reload_ext", "tfserve_magic")
    assert "tfserve" in shell.magics_manager.magics["line"]
    with pytest.raises(UsageError):
        shell.run_line_magic("tfserve", "")
    kinds = [type(c).__name__ for c in shell.configurables].count("TFServeMagics")
    assert kinds == 1
