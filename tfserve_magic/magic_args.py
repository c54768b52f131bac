"""Argument parsing of the magics: argparse whose mistakes are ``UsageError``s.

Used by ``%tfserve`` (``magics``) and ``%%predict`` (``predict_magic``), which import it and not
each other. A mistake is an IPython ``UsageError`` (shown without a traceback) and ``--help``
prints the help and returns None instead of raising ``SystemExit``.
"""

from __future__ import annotations

import argparse

from IPython.core.error import UsageError

__all__ = ["MagicArgumentParser", "HelpShown"]


class HelpShown(Exception):
    """Raised instead of ``SystemExit`` when argparse printed ``--help``."""


class MagicArgumentParser(argparse.ArgumentParser):
    """argparse for a magic's line: errors are ``UsageError``, never ``SystemExit``.

    ``passthrough``: the attribute that receives the words after a lone ``--`` unchanged (e.g.
    flags for another program); without it ``--`` means what it means to argparse.
    """

    def __init__(self, *args, passthrough: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.passthrough = passthrough

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")

    def exit(self, status=0, message=None):
        if status:
            raise UsageError(message or f"{self.prog}: error")
        raise HelpShown()

    def parse_args(self, args=None, namespace=None):
        words = list(args) if args is not None else []
        if self.passthrough is None:
            return super().parse_args(words, namespace)
        rest: list[str] = []
        if "--" in words:  # argparse's REMAINDER would also swallow our own options
            cut = words.index("--")
            words, rest = words[:cut], words[cut + 1 :]
        parsed = super().parse_args(words, namespace)
        setattr(parsed, self.passthrough, rest)
        return parsed

    def parse_line(self, words) -> argparse.Namespace | None:
        """The parsed words, or None when ``--help`` printed the help."""
        try:
            return self.parse_args(words)
        except HelpShown:
            return None
