"""The magics' argument parser (``tfserve_magic.magic_args``): mistakes are UsageErrors,
``--help`` returns None after printing, and ``--`` hands the rest on unchanged."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from tfserve_magic.magic_args import MagicArgumentParser


def _parser(**kwargs) -> MagicArgumentParser:
    parser = MagicArgumentParser(prog="%demo", **kwargs)
    parser.add_argument("name")
    parser.add_argument("--port", type=int)
    return parser


def test_mistakes_are_usage_errors_and_help_returns_none(capsys):
    parser = _parser()
    assert parser.parse_line(["M", "--port", "5"]).port == 5
    with pytest.raises(UsageError, match=r"(?s)%demo: argument --port: invalid int.*usage: %demo"):
        parser.parse_line(["M", "--port", "x"])
    with pytest.raises(UsageError, match="the following arguments are required: name"):
        parser.parse_line([])
    assert parser.parse_line(["--help"]) is None
    assert "usage: %demo" in capsys.readouterr().out


def test_passthrough_keeps_the_words_after_a_lone_double_dash():
    parser = _parser(passthrough="extra")
    parsed = parser.parse_line(["M", "--port", "1", "--", "--port=9", "--rest_api_timeout_in_ms=5"])
    assert parsed.port == 1 and parsed.extra == ["--port=9", "--rest_api_timeout_in_ms=5"]
    assert parser.parse_line(["M"]).extra == []
    with pytest.raises(UsageError, match="unrecognized arguments: --other"):
        _parser().parse_line(["M", "--", "--other"])


def test_start_passes_flags_after_double_dash_to_the_server(shell):
    from tfserve_magic.magics import _loaded

    parser = _loaded[id(shell)]._parser("start")
    args = parser.parse_line(["M", "/models/m", "--port", "0", "--", "--file_system_poll_wait_seconds=2"])
    assert (args.name, args.port, args.extra) == ("M", 0, ["--file_system_poll_wait_seconds=2"])
