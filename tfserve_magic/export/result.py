"""What an export gives back (``ExportResult``) or raises (``ExportError``), and how it shows."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tfserve_magic._text import html_table, text_table


class ExportError(ValueError):
    """An export that cannot be done or did not verify; the message says how to fix it."""


class ServedVersionWarning(UserWarning):
    """An export replaced a version that a running server has loaded (it keeps the old one)."""


@dataclass
class ExportResult:
    """What was written: the version folder, its signatures and how to serve it."""

    path: Path
    version: int
    base_path: Path
    model_name: str
    # signature name -> {"inputs": {name: (dtype, shape)}, "outputs": {name: (dtype, shape)}}
    signatures: dict[str, dict[str, dict[str, tuple[str, tuple]]]]
    verified: bool = False
    # signature name -> largest |live - loaded| over the probe batches (float outputs)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    probe: str = ""
    # e.g. "version 1 ... is being served by MLP ..." (also issued as a ServedVersionWarning)
    warnings: list[str] = field(default_factory=list)
    # export_model(..., warmup=X): <version>/assets.extra/tf_serving_warmup_requests
    warmup: Path | None = None

    @property
    def server_command(self) -> str:
        """The ``tensorflow_model_server`` command line that serves this base path."""
        return (
            "tensorflow_model_server --rest_api_port=8501"
            f" --model_name={shlex.quote(self.model_name)}"
            f" --model_base_path={shlex.quote(str(self.base_path))}"
        )

    @property
    def magic_command(self) -> str:
        return f"%tfserve start {shlex.quote(self.model_name)} {shlex.quote(str(self.base_path))}"

    def _rows(self) -> list[list[str]]:
        rows = []
        for sig_name, sig in self.signatures.items():
            for kind in ("inputs", "outputs"):
                for name, (dtype, shape) in sig[kind].items():
                    rows.append([sig_name, kind[:-1], name, dtype, shape_text(shape)])
        return rows

    def _verdict(self) -> str:
        if not self.verified:
            return "not verified (verify=False)"
        worst = max(self.max_abs_diff.values(), default=0.0)
        return f"verified: reloaded and compared on {self.probe}, max abs diff {worst:.3g}"

    def __repr__(self) -> str:
        headers = ["signature", "", "name", "dtype", "shape"]
        return "\n".join(
            [
                f"Exported version {self.version} to {self.path}",
                self._verdict(),
                "",
                text_table(headers, self._rows()),
                *([f"Warm-up requests: {self.warmup}"] if self.warmup else []),
                "",
                "Serve it with:",
                f"  {self.server_command}",
                f"  or: {self.magic_command}",
                *(f"Warning: {w}" for w in self.warnings),
            ]
        )

    def _repr_html_(self) -> str:
        import html

        headers = ["signature", "", "name", "dtype", "shape"]
        return (
            f"<div><b>Exported version {self.version}</b> to <code>{html.escape(str(self.path))}"
            f"</code><br><small>{html.escape(self._verdict())}</small>"
            f"{html_table(headers, self._rows())}"
            + (f"<div>Warm-up requests: <code>{html.escape(str(self.warmup))}</code></div>"
               if self.warmup else "")
            + f"<div>Serve it with:</div><pre>{html.escape(self.server_command)}\n"
            f"{html.escape(self.magic_command)}</pre>"
            + "".join(f"<div><b>Warning:</b> {html.escape(w)}</div>" for w in self.warnings)
            + "</div>"
        )


def shape_text(shape: tuple | None) -> str:
    if shape is None:
        return "unknown"
    return str(tuple(shape))

