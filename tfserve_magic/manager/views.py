"""How servers and model status look in a notebook and a terminal: ``%tfserve list``'s table and
``%tfserve status``'s view (plain text and HTML from the same rows)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from tfserve_magic._text import html_table, text_table
from tfserve_magic.manager.handle import ServerHandle, age, workers_text
from tfserve_magic.manager.state import find

_SERVER_HEADERS = ["name", "url", "grpc", "pid", "models", "devices", "backend", "uptime", "log"]
_STATUS_HEADERS = ["model", "version", "state", "error"]


def _server_row(handle: ServerHandle) -> list[str]:
    url = handle.url if handle.healthy else f"{handle.url} (not answering)"
    return [
        handle.name,
        url,
        handle.grpc_target or "-",
        str(handle.pid),
        handle.models_text(),
        ", ".join(handle.devices) or "?",
        handle.backend + (" (detached)" if handle.detach else ""),
        age(handle.uptime_s),
        handle.log_path,
    ]


def format_servers(handles: Sequence[ServerHandle]) -> str:
    """The ``list`` table as plain text."""
    if not handles:
        return "No servers running."
    return text_table(_SERVER_HEADERS, [_server_row(h) for h in handles])


def _status_rows(status_by_model: dict[str, list[dict]]) -> list[list[str]]:
    rows = []
    for model, entries in status_by_model.items():
        for entry in entries:
            err = entry.get("status", {}) or {}
            code = err.get("error_code", "OK")
            error = "" if code == "OK" else f"{code}: {err.get('error_message', '')}"
            rows.append([model, str(entry.get("version", "")), entry.get("state", ""), error])
    return rows


def format_status(status_by_model: dict[str, list[dict]]) -> str:
    """``status`` (model -> version status dicts) as a plain-text table."""
    rows = _status_rows(status_by_model)
    return text_table(_STATUS_HEADERS, rows) if rows else "No model versions known."


class ServerTable(list):
    """The result of ``%tfserve list``: a list of handles shown as one table, and below it the
    servers that stopped by themselves (``.failed``: name -> why, e.g. a crash loop)."""

    def __init__(self, handles=(), failed: dict[str, str] | None = None):
        super().__init__(handles)
        self.failed = dict(failed or {})

    def _failed_lines(self) -> list[str]:
        return [f"{name} stopped by itself: {why}" for name, why in self.failed.items()]

    def __repr__(self) -> str:
        if not self and self.failed:
            return "\n".join(self._failed_lines())
        return "\n".join([format_servers(self)] + self._failed_lines())

    def _repr_html_(self) -> str:
        failed = "".join(f'<p style="color:#b00">{html.escape(line)}</p>'
                         for line in self._failed_lines())
        if not self:
            return failed or "<p>No servers running.</p>"
        return html_table(_SERVER_HEADERS, [_server_row(h) for h in self]) + failed


class StatusView(dict):
    """The result of ``%tfserve status NAME``: model -> version status dicts, as a table."""

    def __init__(
        self, name: str, status_by_model: dict[str, list[dict]], devices: list[str] | None = None
    ):
        super().__init__(status_by_model)
        self.name = name
        handle = find(name)
        if devices is None:
            devices = handle.devices if handle is not None else []
        self.devices = list(devices)
        self.workers = list(handle.workers) if handle is not None else []

    @property
    def title(self) -> str:
        title = f"{self.name} on {', '.join(self.devices)}" if self.devices else self.name
        if len(self.workers) > 1:  # memory per worker, as measured when each became ready
            title += f" ({workers_text(self.workers)})"
        return title

    def __repr__(self) -> str:
        return f"{self.title}:\n{format_status(self)}"

    def _repr_html_(self) -> str:
        rows = _status_rows(self)
        styles = ["" if r[2] == "AVAILABLE" else "color:#b00" if r[3] else "color:#777" for r in rows]
        return html_table(_STATUS_HEADERS, rows, row_styles=styles, caption=self.title)
