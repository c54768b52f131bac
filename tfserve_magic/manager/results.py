"""What a start can end in: the typed results of ``start_result`` and the errors and warnings."""

from __future__ import annotations

from dataclasses import dataclass

from tfserve_magic.manager.handle import ServerHandle


class GpuMemoryWarning(UserWarning):
    """The kernel's TensorFlow already holds the GPU memory a server would need."""


class StartError(RuntimeError):
    """A server did not become AVAILABLE: ``.reason`` says why, ``.log_tail`` what it logged."""

    def __init__(self, reason: str, log_tail: str = "", *, log_path: str | None = None):
        self.reason = reason
        self.log_tail = log_tail
        self.log_path = log_path
        message = reason
        if log_tail.strip():
            where = f" ({log_path})" if log_path else ""
            message += f"\n\nLast lines of the server log{where}:\n{log_tail.rstrip()}"
        super().__init__(message)


@dataclass
class Launched:
    handle: ServerHandle


@dataclass
class Reused:
    handle: ServerHandle


@dataclass
class Failed:
    reason: str
    exit_code: int | None
    log_tail: str
    log_path: str


@dataclass
class TimedOut:
    pid: int
    log_tail: str
    log_path: str
    timeout: float = 0.0  # the seconds it was given

    @property
    def reason(self) -> str:
        return (f"the server (pid {self.pid}) did not make its model AVAILABLE within "
                f"{self.timeout:g}s and was stopped; a larger --timeout may help on a slow machine")
