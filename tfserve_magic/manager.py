"""Start, find and stop model-server processes for this user (no IPython, no TensorFlow).

A server is a child process (``sys.executable -m tfserve_magic serve ...``, or the real
``tensorflow_model_server``) whose output goes to a log file. It is recorded in the per-user
state folder as ``<name>.json``; the embedded server also writes ``<name>.info.json`` itself once
its port is bound and its models are loaded. ``start`` waits for that file (or REST readiness
for the real binary) or for the child's exit, then confirms with the REST status call.
Servers started here stop when this process exits (atexit), and watch this process's pid so a
SIGKILLed kernel leaves no orphan; ``detach=True`` opts out of both.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tfserve_magic import gpu as gpu_policy
from tfserve_magic._text import html_table, text_table

# Records, info files and pid checks live in registry (the one home of name lookup).
from tfserve_magic.registry import HOME_VAR, state_dir  # noqa: F401 - public re-exports
from tfserve_magic.registry import all_records as _all_records
from tfserve_magic.registry import children as _children
from tfserve_magic.registry import connect_host as _connect_host
from tfserve_magic.registry import info_path as _info_path
from tfserve_magic.registry import pid_alive as _pid_alive
from tfserve_magic.registry import read_json as _read_json
from tfserve_magic.registry import record_alive as _record_alive
from tfserve_magic.registry import record_path as _record_path

MODEL_SERVER_VAR = "TFSERVE_MAGIC_MODEL_SERVER"
MODEL_SERVER_BINARY = "tensorflow_model_server"
DEFAULT_PORT_RETRIES = 100
LOG_TAIL_LINES = 25
RECORD_FORMAT = 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# Environment variables a kernel may carry that must not leak into the child's interpreter.
_ENV_DENYLIST = ("PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONHOME")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_atexit_registered = False
_lock = threading.Lock()


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


# ---------------------------------------------------------------------------- handles
@dataclass
class ServerHandle:
    """A running server: where it answers, what it serves, on which devices, and its log."""

    name: str
    url: str
    port: int
    host: str
    pid: int
    backend: str
    devices: list[str]
    models: dict[str, list[int]]
    reused: bool = False
    log_path: str = ""
    grpc_port: int | None = None
    started: float = 0.0
    detach: bool = False
    owner_pid: int = 0
    base_path: str | None = None
    config: str | None = None
    tf_version: str | None = None
    healthy: bool = True
    workers: list = field(default_factory=list)  # [{"index", "pid", "rss_bytes"}] (--workers)

    @property
    def client(self):
        """A ``tfserve_magic.Client`` for this server's first model."""
        from tfserve_magic.client import Client

        return Client(self.url, model=next(iter(self.models), self.name))

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` for ``grpc.insecure_channel`` (TF Serving's PredictionService)."""
        return f"{_connect_host(self.host)}:{self.grpc_port}" if self.grpc_port else None

    @property
    def uptime_s(self) -> float:
        return max(0.0, time.time() - self.started) if self.started else 0.0

    def _models_text(self) -> str:
        parts = []
        for model, versions in self.models.items():
            shown = f" v{max(versions)}" if versions else " (no version available)"
            parts.append(model + shown)
        return ", ".join(parts) or self.name

    def summary(self) -> str:
        """One line: "Serving MLP v3 at http://127.0.0.1:8501 (pid 1234)"."""
        extra = "" if self.backend == "python" else f", {self.backend}"
        if len(self.workers) > 1:
            extra += f", {len(self.workers)} workers"
        grpc_text = f" and gRPC {self.grpc_target}" if self.grpc_target else ""
        line = f"{self._models_text()} at {self.url}{grpc_text} (pid {self.pid}{extra})"
        if self.reused:
            return (
                f"Reusing {line}, started {_age(self.uptime_s)} ago with the same name, base path "
                "and options (--restart starts a fresh one)"
            )
        return f"Serving {line}"

    def _fields(self) -> list[tuple[str, str]]:
        source = self.config or self.base_path or ""
        rows = [
            ("url", self.url),
            ("grpc", self.grpc_target or "-"),
            ("pid", str(self.pid)),
            ("backend", self.backend),
            ("devices", ", ".join(self.devices) or "?"),
            ("models", self._models_text()),
            ("source", source),
            ("log", self.log_path),
            ("client", f"tfserve_magic.Client({self.name!r})"),
        ]
        if self.backend == "python":
            rows.append(("workers", _workers_text(self.workers)))
        if self.detach:
            rows.append(("detached", "yes: keeps running after the kernel exits"))
        return rows

    def __repr__(self) -> str:
        lines = [self.summary()] + [f"  {key:<8} {value}" for key, value in self._fields()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_table(["", ""], self._fields(), caption=self.summary())


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


_SERVER_HEADERS = ["name", "url", "grpc", "pid", "models", "devices", "backend", "uptime", "log"]


def _server_row(handle: ServerHandle) -> list[str]:
    url = handle.url if handle.healthy else f"{handle.url} (not answering)"
    return [
        handle.name,
        url,
        handle.grpc_target or "-",
        str(handle.pid),
        handle._models_text(),
        ", ".join(handle.devices) or "?",
        handle.backend + (" (detached)" if handle.detach else ""),
        _age(handle.uptime_s),
        handle.log_path,
    ]


def format_servers(handles: Sequence[ServerHandle]) -> str:
    """The ``list`` table as plain text."""
    if not handles:
        return "No servers running."
    return text_table(_SERVER_HEADERS, [_server_row(h) for h in handles])


_STATUS_HEADERS = ["model", "version", "state", "error"]


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
    """The result of ``%tfserve list``: a list of handles shown as one table."""

    def __repr__(self) -> str:
        return format_servers(self)

    def _repr_html_(self) -> str:
        if not self:
            return "<p>No servers running.</p>"
        return html_table(_SERVER_HEADERS, [_server_row(h) for h in self])


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
            title += f" ({_workers_text(self.workers)})"
        return title

    def __repr__(self) -> str:
        return f"{self.title}:\n{format_status(self)}"

    def _repr_html_(self) -> str:
        rows = _status_rows(self)
        styles = ["" if r[2] == "AVAILABLE" else "color:#b00" if r[3] else "color:#777" for r in rows]
        return html_table(_STATUS_HEADERS, rows, row_styles=styles, caption=self.title)


# ---------------------------------------------------------------------------- state folder
def _log_path(name: str) -> Path:
    logs_dir = state_dir() / "logs"
    logs_dir.mkdir(mode=0o700, exist_ok=True)
    return logs_dir / f"{name}.log"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def _remove_record(record: dict) -> None:
    for path in (_record_path(record["name"]), Path(record.get("info_path") or "")):
        if path.name:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------------------- processes
def _wait_gone(record: dict, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _record_alive(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pid: int, signum: int, group: bool) -> None:
    try:
        if group and hasattr(os, "killpg") and os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(record: dict, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL the server's process group."""
    pid = record["pid"]
    if _record_alive(record):
        _signal(pid, signal.SIGTERM, group=False)
        if not _wait_gone(record, timeout):
            _signal(pid, getattr(signal, "SIGKILL", signal.SIGTERM), group=True)
            _wait_gone(record, 5.0)
    proc = _children.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass


def _stop_owned_at_exit() -> None:
    """atexit: stop the servers this process started (unless detached)."""
    me = os.getpid()
    try:
        records = _all_records()
    except OSError:
        return
    owned = [r for r in records if r.get("owner_pid") == me and not r.get("detach")]
    _terminate_all(owned, timeout=5.0)


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_owned_at_exit)
        _atexit_registered = True


class _NameLock:
    """An exclusive per-name file lock, so two kernels do not start the same server twice."""

    def __init__(self, name: str):
        self.path = state_dir() / f".{name}.lock"
        self.fh = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no cross-process lock
            return self
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()  # closing releases the lock


# ---------------------------------------------------------------------------- REST
def _get_json(url: str, timeout: float) -> dict:
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def _model_status(url: str, model: str, timeout: float = 2.0) -> list[dict]:
    data = _get_json(f"{url}/v1/models/{model}", timeout)
    entries = data.get("model_version_status", [])
    return entries if isinstance(entries, list) else []


def _available(entries: list[dict]) -> list[int]:
    versions = []
    for entry in entries:
        if entry.get("state") == "AVAILABLE":
            try:
                versions.append(int(entry.get("version")))
            except (TypeError, ValueError):
                pass
    return sorted(versions)


def _live_models(url: str, models: Iterable[str], timeout: float) -> dict[str, list[int]] | None:
    """model -> AVAILABLE versions, or None if the server does not answer."""
    result = {}
    for model in models:
        try:
            result[model] = _available(_model_status(url, model, timeout))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                return None
            result[model] = []
        except (OSError, ValueError):
            return None
    return result


# ---------------------------------------------------------------------------- handles from records
def _handle(record: dict, *, refresh: bool = False, reused: bool = False) -> ServerHandle:
    info = None
    if record.get("info_path"):
        info = _read_json(Path(record["info_path"]))
    source = info or record
    host = source.get("host") or record.get("host", "127.0.0.1")
    port = int(source.get("port") or 0)
    url = f"http://{_connect_host(host)}:{port}" if port else ""
    models_field = source.get("models") or {}
    models: dict[str, list[int]] = {}
    for model, value in models_field.items():
        versions = value.get("versions", []) if isinstance(value, dict) else value
        models[model] = sorted(int(v) for v in versions or [])
    handle = ServerHandle(
        name=record["name"],
        url=url,
        port=port,
        host=host,
        pid=record["pid"],
        backend=record.get("backend", "python"),
        devices=list(source.get("devices") or record.get("devices") or []),
        models=models or {m: [] for m in record.get("models", [])},
        reused=reused,
        log_path=record.get("log_path", ""),
        grpc_port=source.get("grpc_port", record.get("grpc_port")),
        started=float(source.get("started") or record.get("started") or 0.0),
        detach=bool(record.get("detach")),
        owner_pid=int(record.get("owner_pid") or 0),
        base_path=record.get("base_path"),
        config=record.get("config"),
        tf_version=source.get("tf_version"),
        healthy=bool(url),
        workers=list(source.get("workers") or []),
    )
    if refresh and url:
        live = _live_models(url, list(handle.models), timeout=1.0)
        handle.healthy = live is not None
        if live is not None:
            handle.models = live
    return handle


def _live_records() -> list[dict]:
    """Records of running servers; records of dead ones are removed."""
    live = []
    for record in _all_records():
        if _record_alive(record):
            live.append(record)
        else:
            _children.pop(record["pid"], None)
            _remove_record(record)
    return live


def _record_for(name: str) -> dict:
    for record in _live_records():
        if record["name"] == name:
            return record
    running = ", ".join(r["name"] for r in _live_records()) or "none"
    raise LookupError(f"no running server named {name!r} (running: {running})")


# ---------------------------------------------------------------------------- public API
def servers() -> list[ServerHandle]:
    """Every live server of this user (models and versions asked from each); stale records pruned."""
    return ServerTable(_handle(r, refresh=True) for r in _live_records())


def find(name: str) -> ServerHandle | None:
    """The live server called ``name``, or None."""
    for record in _live_records():
        if record["name"] == name:
            return _handle(record)
    return None


def find_model(model_name: str) -> tuple[str, str] | None:
    """``(url, model)`` of a live server serving ``model_name`` (or named so), else None."""
    handles = [_handle(r) for r in _live_records()]
    handles.sort(key=lambda h: h.name != model_name)
    for handle in handles:
        if model_name in handle.models and handle.url:
            return handle.url, model_name
    for handle in handles:
        if handle.name == model_name and handle.url and handle.models:
            return handle.url, next(iter(handle.models))
    return None


def status(name: str) -> dict[str, list[dict]]:
    """model -> version status dicts (TF Serving's ``model_version_status``) of server ``name``."""
    handle = _handle(_record_for(name))
    if not handle.url:
        raise RuntimeError(f"{name} (pid {handle.pid}) is still starting")
    result = {}
    for model in handle.models:
        try:
            result[model] = _model_status(handle.url, model, timeout=5.0)
        except urllib.error.HTTPError as exc:
            result[model] = [] if exc.code == 404 else _raise_unreachable(handle, exc)
        except (OSError, ValueError) as exc:
            _raise_unreachable(handle, exc)
    return result


def _raise_unreachable(handle: ServerHandle, exc: Exception):
    raise RuntimeError(
        f"{handle.name} (pid {handle.pid}) does not answer at {handle.url}: {exc}; "
        f"see its log with %tfserve logs {handle.name}"
    ) from None


def logs(name: str, n: int = 20) -> str:
    """The last ``n`` lines of server ``name``'s log (also after it stopped)."""
    if n < 1:
        raise ValueError("the number of log lines must be at least 1")
    path = None
    for record in _all_records():
        if record["name"] == name:
            path = Path(record.get("log_path", ""))
    if path is None or not path.is_file():
        if not _NAME_RE.fullmatch(name):
            raise LookupError(f"no server named {name!r}")
        path = _log_path(name)
    if not path.is_file():
        raise LookupError(f"no log for a server named {name!r} in {state_dir()}")
    return _tail(path, n)


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


def _error_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    """The last ``n`` lines of a failed server's log, without TensorFlow's start-up chatter."""
    lines = [ln for ln in _tail(path, 4 * n).splitlines() if not _STARTUP_NOISE.search(ln)]
    return "\n".join(lines[-n:])


def _tail(path: Path, n: int) -> str:
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


def stop(name: str | None = None, *, all: bool = False, timeout: float = 10.0) -> list[ServerHandle]:
    """Stop server ``name`` (or every server of this user): SIGTERM, wait, SIGKILL; drop records."""
    if all:
        records = _live_records()
    elif name:
        records = [_record_for(name)]
    else:
        raise ValueError("stop needs a server name or all=True")
    stopped = [_handle(record) for record in records]
    _terminate_all(records, timeout)
    return stopped


def _terminate_all(records: list[dict], timeout: float) -> None:
    """Stop several servers at once: SIGTERM to all first, so their shutdowns overlap."""
    for record in records:
        if _record_alive(record):
            _signal(record["pid"], signal.SIGTERM, group=False)
    for record in records:
        _terminate(record, timeout)
        _remove_record(record)


# ---------------------------------------------------------------------------- start
@dataclass
class _Spec:
    """A resolved start request: what runs, and the key that decides reuse."""

    name: str
    base_path: str | None
    config: str | None
    models: list[str]
    backend: str
    binary: str | None
    key: dict = field(default_factory=dict)
    served_config: str | None = None  # what the server reads: ``config`` with absolute paths


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


def _numeric_versions(base: Path) -> list[int]:
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def _parse_config(path: Path):
    """The ``ModelServerConfig`` in ``path``, parsed with tensorflow-serving-api's protos.

    They are plain protobuf modules (no TensorFlow import), so a typo is reported here with the
    parser's line and column instead of as a server that dies at start-up.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        return text_format.Parse(
            path.read_text(errors="replace"), model_server_config_pb2.ModelServerConfig()
        )
    except text_format.ParseError as exc:
        raise StartError(f"{path} is not a valid TF Serving model config: {exc}") from None


def _absolute_base_paths(config) -> bool:
    """Resolve each relative ``base_path`` against the working folder; True if any changed."""
    changed = False
    for model in config.model_config_list.config:
        path = Path(model.base_path).expanduser()
        if model.base_path and not path.is_absolute():
            model.base_path = str(Path.cwd() / path)
            changed = True
    return changed


def _resolve_backend(backend: str) -> tuple[str, str | None]:
    if backend not in ("auto", "python", MODEL_SERVER_BINARY):
        raise StartError(f"--backend must be auto, python or {MODEL_SERVER_BINARY}, not {backend!r}")
    if backend == "python":
        return "python", None
    named = os.environ.get(MODEL_SERVER_VAR)
    binary = shutil.which(named) if named else shutil.which(MODEL_SERVER_BINARY)
    if named and not binary:
        raise StartError(f"{MODEL_SERVER_VAR}={named!r} is not an executable file")
    if binary:
        return MODEL_SERVER_BINARY, os.path.abspath(binary)
    if backend == "auto":
        return "python", None
    raise StartError(
        f"{MODEL_SERVER_BINARY} is not on PATH; install it, set {MODEL_SERVER_VAR} to its path, "
        "or use --backend python (the embedded server)"
    )


def _resolve(name, base_path, config, backend, key_options) -> _Spec:
    if config is not None:
        if base_path is not None:
            raise StartError("give either BASE_PATH or --config, not both")
        config_path = Path(config).expanduser()
        config_path = config_path if config_path.is_absolute() else Path.cwd() / config_path
        if not config_path.is_file():
            raise StartError(f"model config file not found: {config_path}")
        text = config_path.read_text(errors="replace")
        parsed = _parse_config(config_path)
        models = [model.name for model in parsed.model_config_list.config]
        if not models:
            raise StartError(
                f"{config_path} names no model (expected model_config_list {{ config {{ name: ... }} }})"
            )
        name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", config_path.stem)
        base, config_abs = None, str(config_path)
        served_config = config_abs
        extra_key = {"config_sha256": hashlib.sha256(text.encode()).hexdigest()}
        if _NAME_RE.fullmatch(name):
            if _absolute_base_paths(parsed):  # TF Serving needs absolute base paths
                from google.protobuf import text_format

                resolved = state_dir() / f"{name}.config"
                resolved.write_text(text_format.MessageToString(parsed))
                served_config = str(resolved)
    else:
        if not name or base_path is None:
            raise StartError("start needs a NAME and a BASE_PATH (or a model config file)")
        base_dir = Path(base_path).expanduser()
        base_dir = base_dir if base_dir.is_absolute() else Path.cwd() / base_dir
        if not base_dir.is_dir():
            raise StartError(f"base path {base_dir} does not exist (or is not a folder)")
        if not _numeric_versions(base_dir):
            hint = ""
            if (base_dir / "saved_model.pb").exists():
                hint = (
                    f"; it is itself a SavedModel: give its parent, or move it to {base_dir}/1"
                )
            raise StartError(
                f"{base_dir} holds no model versions: TF Serving expects numbered subfolders "
                f"such as {base_dir}/1/saved_model.pb (`%tfserve export` writes them){hint}"
            )
        models, base, config_abs, served_config, extra_key = [name], str(base_dir), None, None, {}
    if not _NAME_RE.fullmatch(name):
        raise StartError(
            f"server name {name!r} must be letters, digits, '_', '.' or '-' (at most 100)"
        )
    kind, binary = _resolve_backend(backend)
    key = {"name": name, "base_path": base, "config": config_abs, "backend": kind,
           "binary": binary, **key_options, **extra_key}
    return _Spec(name, base, config_abs, models, kind, binary, key, served_config)


def _free_port(first: int, retries: int) -> int:
    """A port nobody listens on (all interfaces, as tensorflow_model_server binds)."""
    for port in ([0] if first == 0 else range(first, min(first + retries, 65535) + 1)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise StartError(f"REST port {first} is taken" + (f" (and the next {retries})" if retries else ""))


def _seconds_flag(value: float, backend: str) -> str:
    if float(value).is_integer():
        return str(int(value))
    if backend != "python":
        raise StartError(f"{MODEL_SERVER_BINARY} takes whole seconds for --poll, not {value}")
    return str(value)


def _child_env(gpu_env: dict[str, str], backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DENYLIST}
    env.update(gpu_env)
    env["PYTHONUNBUFFERED"] = "1"
    if backend == "python":
        # run this very package, even if the kernel found it via a path added at run time
        package_root = str(Path(__file__).resolve().parent.parent)
        parts = [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def _rotate_log(path: Path) -> None:
    if path.exists():
        os.replace(path, path.with_name(path.name + ".1"))


_LOG_PREFIX = re.compile(r"^\S+ [\d:.]+: [A-Z] \S+\] |^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] ")


def _failure_reason(name: str, code: int, tail: str) -> str:
    """The exit code and the line of the log that best says why (TF Serving's own wording)."""
    reason = f"{name} did not start: the server exited with code {code}"
    lines = [_LOG_PREFIX.sub("", ln).strip() for ln in tail.splitlines()]
    hits = [ln for ln in lines if "Failed to start server" in ln] or [
        ln for ln in lines
        if re.search(r"error|fail|refused|in use", ln, re.I) and not re.search(r"cuInit|cuda", ln)
    ]
    if hits:
        reason += f": {hits[-1][:400]}"
    return reason


def _launch(
    spec: _Spec,
    *,
    port: int,
    port_retries: int,
    host: str,
    grpc_port: int | None,
    gpu_plan: gpu_policy.GpuPlan,
    poll: float | None,
    detach: bool,
    timeout: float,
    extra_args: Sequence[str],
    progress: Callable[[str], None],
    workers: str = "1",
) -> Launched | Failed | TimedOut:
    name = spec.name
    log_path = _log_path(name)
    info_path = _info_path(name)
    for stale in (info_path,):
        if stale.exists():
            stale.unlink()
    models_flags = (
        [f"--model_config_file={spec.served_config}"]
        if spec.served_config
        else [f"--model_name={name}", f"--model_base_path={spec.base_path}"]
    )
    poll_flags = (
        [f"--file_system_poll_wait_seconds={_seconds_flag(poll, spec.backend)}"]
        if poll is not None
        else []
    )
    if spec.backend == "python":
        argv = [sys.executable, "-m", "tfserve_magic", "serve", *models_flags,
                f"--rest_api_port={port}", f"--rest_api_port_retries={port_retries}",
                f"--host={host}", f"--info_file={info_path}", f"--workers={workers}"]
        argv.append(f"--port={grpc_port if grpc_port is not None else 0}")  # 0: a free port
        if not detach:
            argv.append(f"--parent_pid={os.getpid()}")
        expect = ["tfserve_magic"]
        rest_port = None
    else:
        rest_port = _free_port(port, port_retries)
        grpc = grpc_port if grpc_port is not None else _free_port(0, 0)
        argv = [spec.binary, f"--port={grpc}", f"--rest_api_port={rest_port}", *models_flags]
        if not detach:  # the real binary cannot watch the kernel: a small supervisor does
            argv = [sys.executable, "-m", "tfserve_magic.manager", "supervise",
                    str(os.getpid()), "--", *argv]
        expect = [os.path.basename(spec.binary or MODEL_SERVER_BINARY), "tfserve_magic"]
        grpc_port = grpc
    argv += [*poll_flags, *extra_args]

    _rotate_log(log_path)
    progress(f"Starting {name} on {gpu_plan.label} ...")
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(gpu_plan.env, spec.backend),
                cwd=os.getcwd(),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return Failed(f"could not run {argv[0]}: {exc}", None, "", str(log_path))
    _children[proc.pid] = proc
    started = time.time()
    record = {
        "format": RECORD_FORMAT, "name": name, "pid": proc.pid, "owner_pid": os.getpid(),
        "detach": detach, "backend": spec.backend, "key": spec.key, "host": host,
        "grpc_port": grpc_port, "log_path": str(log_path),
        "info_path": str(info_path) if spec.backend == "python" else None,
        "base_path": spec.base_path, "config": spec.config, "models": spec.models,
        "devices": [gpu_plan.label] if gpu_plan.label != "default devices" else [],
        "expect": expect, "argv": argv, "started": started, "state": "starting",
    }
    _write_json(_record_path(name), record)
    if not detach:
        _register_atexit()

    try:
        return _wait_ready(spec, proc, record, rest_port=rest_port, host=host, timeout=timeout,
                           label=gpu_plan.label, progress=progress)
    except BaseException:  # Ctrl-C (or a failing progress display) while waiting: no orphan
        _terminate(record, timeout=5.0)
        _remove_record(record)
        raise


def _wait_ready(spec, proc, record, *, rest_port, host, timeout, label, progress):
    """Poll until the child exits (Failed), its models are AVAILABLE (Launched), or time is up."""
    name = spec.name
    log_path = Path(record["log_path"])
    info_path = Path(record["info_path"]) if record.get("info_path") else None
    t0 = time.monotonic()
    next_tick = t0 + 1.0
    while True:
        code = proc.poll()
        if code is not None:
            _children.pop(proc.pid, None)
            _remove_record(record)
            tail = _error_tail(log_path)
            return Failed(_failure_reason(name, code, tail), code, tail, str(log_path))
        ready = None
        if spec.backend == "python":
            info = _read_json(info_path)
            if info is not None and isinstance(info.get("port"), int):
                url = f"http://{_connect_host(info.get('host') or host)}:{info['port']}"
                live = _live_models(url, list(info.get("models") or spec.models), timeout=2.0)
                if live and all(live.values()):
                    ready = live
        else:
            url = f"http://127.0.0.1:{rest_port}"
            live = _live_models(url, spec.models, timeout=1.0)
            if live and all(live.values()):
                ready = live
                record.update(port=rest_port, host="0.0.0.0", models={
                    m: {"versions": v} for m, v in live.items()
                })
        if ready is not None:
            record["state"] = "ready"
            _write_json(_record_path(name), record)
            handle = _handle(record)
            handle.models = ready
            return Launched(handle)
        now = time.monotonic()
        if now - t0 > timeout:
            tail = _error_tail(log_path)
            _terminate(record, timeout=5.0)
            _remove_record(record)
            return TimedOut(proc.pid, tail, str(log_path))
        if now >= next_tick:
            progress(f"Starting {name} on {label} ... {int(now - t0)}s")
            next_tick = now + 1.0
        time.sleep(0.1)


_KEY_WORDS = {"base_path": "base path", "config": "config file", "config_sha256": "config text",
              "port_retries": "port choice (--port given or not)", "extra_args": "server flags",
              "workers": "workers",
              "gpu_env": "gpu", "binary": "backend"}


def _orphaned(record: dict) -> bool:
    """A server whose owner (a kernel, restarted or killed) is gone but which has not exited yet.

    It watches its owner's pid and stops within a second or so; reusing it in that second (a
    quick "Restart & Run All") would hand the new kernel a server that dies under it.
    """
    owner = int(record.get("owner_pid") or 0)
    return bool(owner) and not record.get("detach") and owner != os.getpid() and not _pid_alive(
        owner
    )


def _same_start(old, new: dict, running_port: int) -> bool:
    """Whether a running server answers a new start request as asked (then it is reused).

    A port that differs only in how it was asked for (``--port 8501`` against the default "8501
    or the next free one") still matches when the server already listens where it is asked to.
    """
    new = json.loads(json.dumps(new))
    if old == new:
        return True
    if not isinstance(old, dict):
        return False
    rest_old = {k: v for k, v in old.items() if k not in ("port", "port_retries")}
    rest_new = {k: v for k, v in new.items() if k not in ("port", "port_retries")}
    return rest_old == rest_new and new.get("port") in (0, running_port)


def _key_difference(old, new: dict) -> str:
    """What differs between a running server's start options and a new request's, in words."""
    new = json.loads(json.dumps(new))
    old = old if isinstance(old, dict) else {}
    changed = [k for k in new if k != "name" and old.get(k) != new[k]]
    words = list(dict.fromkeys(_KEY_WORDS.get(k, k.replace("_", " ")) for k in changed))
    if not words:
        return "base path or options"
    details = []
    for key in changed[:3]:
        if key in ("base_path", "port", "host", "gpu", "detach", "backend", "poll", "grpc_port",
                   "workers"):
            details.append(f"{key} {old.get(key)!r} now {new[key]!r}")
    return ", ".join(words) + (f" ({'; '.join(details)})" if details else "")


def _workers_text(workers: list) -> str:
    if len(workers) <= 1:
        return "1 process (--workers N or auto uses more cores; workers=N from Python)"
    memory = [w.get("rss_bytes") or 0 for w in workers]
    return f"{len(workers)} processes, {max(memory) / 2**20:.0f} MiB resident each at start"


def default_workers() -> str:
    """``%tfserve start``'s worker count: one process on small machines (Binder: 1-2 GB, a core
    or two), else ``auto`` (one per usable core, as many as the free memory holds)."""
    from tfserve_magic.server.workers import usable_cpus

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    return "1" if usable_cpus() <= 2 or total < 4 * 2**30 else "auto"


def start(
    name: str | None,
    base_path: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | None = None,
    port: int = 8501,
    host: str = "127.0.0.1",
    grpc_port: int | None = None,
    gpu: str | int | None = "auto",
    poll: float | None = None,
    restart: bool = False,
    detach: bool = False,
    backend: str = "auto",
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    port_retries: int = DEFAULT_PORT_RETRIES,
    workers: int | str | None = None,
) -> ServerHandle:
    """Start a server for ``name`` at ``base_path`` (or ``config``), or reuse an identical one.

    Returns once every model has an AVAILABLE version. ``port`` is the first REST port tried
    (the next ``port_retries`` ports are tried when it is taken; 0 lets the system choose).
    ``workers`` (python backend): server processes sharing the port, N or "auto" (default:
    ``default_workers()``). Raises ``StartError`` with the reason and the tail of the server's log.
    """
    result = start_result(
        name, base_path, config=config, port=port, host=host, grpc_port=grpc_port, gpu=gpu,
        poll=poll, restart=restart, detach=detach, backend=backend, timeout=timeout,
        extra_args=extra_args, progress=progress, port_retries=port_retries, workers=workers,
    )
    if isinstance(result, (Launched, Reused)):
        return result.handle
    if isinstance(result, TimedOut):
        raise StartError(
            f"the server (pid {result.pid}) did not make its model AVAILABLE within {timeout:g}s "
            "and was stopped; a larger --timeout may help on a slow machine",
            result.log_tail,
            log_path=result.log_path,
        )
    raise StartError(result.reason, result.log_tail, log_path=result.log_path)


def start_result(
    name: str | None,
    base_path: str | os.PathLike | None = None,
    **options,
) -> Launched | Reused | Failed | TimedOut:
    """``start`` as a typed result (Launched, Reused, Failed, TimedOut) instead of raising.

    Invalid arguments still raise ``StartError``.
    """
    progress = options.pop("progress", None) or (lambda text: None)
    port = int(options.get("port", 8501))
    port_retries = int(options.get("port_retries", DEFAULT_PORT_RETRIES))
    host = options.get("host") or "127.0.0.1"
    grpc_port = options.get("grpc_port")
    poll = options.get("poll")
    restart = bool(options.get("restart", False))
    detach = bool(options.get("detach", False))
    timeout = float(options.get("timeout", 120.0))
    extra_args = [str(a) for a in options.get("extra_args", ())]
    workers = str(options.get("workers") or default_workers()).strip().lower()
    from tfserve_magic.server.workers import parse_workers

    try:
        parse_workers(workers)
    except ValueError as exc:
        raise StartError(str(exc)) from None
    if not 0 <= port <= 65535 or (grpc_port is not None and not 0 < grpc_port <= 65535):
        raise StartError("ports must be between 1 and 65535 (0: any free REST port)")
    if timeout <= 0:
        raise StartError("the start timeout must be positive")
    try:
        gpu_plan = gpu_policy.plan(options.get("gpu", "auto"))
    except ValueError as exc:
        raise StartError(str(exc)) from None
    key_options = {
        "port": port, "port_retries": port_retries, "host": host, "grpc_port": grpc_port,
        # normalised, so the magic's defaults and the function's defaults give the same key
        "gpu": gpu_policy.parse_request(options.get("gpu", "auto")), "gpu_env": gpu_plan.env,
        "poll": 1.0 if poll is None else float(poll),  # TF Serving's default poll interval
        "detach": detach, "extra_args": extra_args, "workers": workers,
    }
    spec = _resolve(
        name, None if base_path is None else os.fspath(base_path),
        None if options.get("config") is None else os.fspath(options["config"]),
        options.get("backend", "auto") or "auto", key_options,
    )
    if spec.backend != "python" and host not in ("127.0.0.1", "0.0.0.0", "localhost"):
        raise StartError(f"{MODEL_SERVER_BINARY} binds every interface; --host {host} needs "
                         "--backend python")
    with _lock, _NameLock(spec.name):
        existing = next((r for r in _live_records() if r["name"] == spec.name), None)
        if existing is not None:
            handle = _handle(existing, refresh=True)
            same = _same_start(existing.get("key"), spec.key, handle.port)
            orphaned = _orphaned(existing)
            if orphaned:  # its kernel is gone: it is about to exit, never reuse it
                same, restart = True, True
            if same and not restart and handle.healthy and all(handle.models.values()):
                handle.reused = True
                return Reused(handle)
            if not same and not restart:
                source = existing.get("config") or existing.get("base_path")
                raise StartError(
                    f"a server named {spec.name!r} is already running (pid {existing['pid']}, "
                    f"{source}) with other start options: "
                    f"{_key_difference(existing.get('key'), spec.key)}; pass --restart "
                    f"(restart=True) to replace it, or stop it with "
                    f"%tfserve stop {spec.name}"
                )
            why = ("its owner is gone; restarting" if orphaned else
                   "restarting" if restart else "not answering; restarting")
            progress(f"{spec.name} (pid {existing['pid']}) {why} ...")
            _terminate(existing, timeout=10.0)
            _remove_record(existing)
        for warning in gpu_plan.warnings:
            warnings.warn(warning, GpuMemoryWarning, stacklevel=3)
        result = _launch(
            spec, port=port, port_retries=port_retries, host=host, grpc_port=grpc_port,
            gpu_plan=gpu_plan, poll=poll, detach=detach, timeout=timeout, extra_args=extra_args,
            progress=progress, workers=workers,
        )
    return result


# ---------------------------------------------------------------------------- supervisor
def _supervise(parent_pid: int, argv: list[str]) -> int:
    """Run ``argv`` (a server that cannot watch its parent) and stop it when ``parent_pid`` dies.

    Used for ``tensorflow_model_server``; SIGTERM/SIGINT are forwarded to the server.
    """
    child = subprocess.Popen(argv)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if not _pid_alive(parent_pid):
            child.terminate()
            try:
                return child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()


if __name__ == "__main__":
    # python -m tfserve_magic.manager supervise PARENT_PID -- ARGV...
    if len(sys.argv) >= 4 and sys.argv[1] == "supervise" and sys.argv[3] == "--":
        raise SystemExit(_supervise(int(sys.argv[2]), sys.argv[4:]))
    print("usage: python -m tfserve_magic.manager supervise PARENT_PID -- COMMAND...", file=sys.stderr)
    raise SystemExit(2)
