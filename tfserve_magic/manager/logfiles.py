"""Server log files: rotation, tails, and the line of a failed start's log that says why."""

from __future__ import annotations

import os
import re
from pathlib import Path

LOG_TAIL_LINES = 25

# TensorFlow's start-up chatter (every TF process prints it on a CPU-only machine): kept in the
# log file, left out of the log tail an error message shows, where it would hide the real cause.
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|cpu_feature_guard\.cc.*This TensorFlow binary is optimized"
    r"|^To enable the following instructions:"
    r"|failed call to cuInit: .*UNKNOWN ERROR \(303\)"
)
_LOG_PREFIX = re.compile(r"^\S+ [\d:.]+: [A-Z] \S+\] |^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] ")


def rotate(path: Path) -> None:
    """Keep the previous run's log as ``NAME.log.1``."""
    if path.exists():
        os.replace(path, path.with_name(path.name + ".1"))


def tail(path: Path, n: int) -> str:
    """The last ``n`` lines of ``path`` (read from the end: logs can be large)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            chunk = min(size, max(8192, n * 400))
            fh.seek(size - chunk)
            data = fh.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if chunk < size and lines:
        lines = lines[1:]  # first line may be cut
    return "\n".join(lines[-n:])


def error_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    """The last ``n`` lines of a failed server's log, without TensorFlow's start-up chatter."""
    lines = [ln for ln in tail(path, 4 * n).splitlines() if not _STARTUP_NOISE.search(ln)]
    return "\n".join(lines[-n:])


def failure_reason(name: str, code: int, log_tail: str) -> str:
    """The exit code and the line of the log that best says why (TF Serving's own wording)."""
    reason = f"{name} did not start: the server exited with code {code}"
    lines = [_LOG_PREFIX.sub("", ln).strip() for ln in log_tail.splitlines()]
    hits = [ln for ln in lines if "Failed to start server" in ln] or [
        ln for ln in lines
        if re.search(r"error|fail|refused|in use", ln, re.I) and not re.search(r"cuInit|cuda", ln)
    ]
    if hits:
        reason += f": {hits[-1][:400]}"
    return reason
