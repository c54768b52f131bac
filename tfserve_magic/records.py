"""The two records that say a server runs: its info file and the manager's registry record.

Like TensorBoard's ``TensorBoardInfo``: one frozen type each, checked when written and when
read, so the server, the workers' parent, the registry and the manager cannot drift apart.

- ``ServerInfo``: written by the serving process (or the workers' parent) once its port is
  bound and every model's first load has finished (``--info_file``); removed when it exits.
- ``ServerRecord``: written by the manager when it launches a server (``<name>.json`` in the
  per-user state folder) and read by the registry to find servers by name.

Unknown keys are ignored when reading (a newer writer may add some); a missing or mistyped
required key makes the file unreadable (``None``), as a partial file would be.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from tfserve_magic.server.process import (
    client_url,
    connect_host,
    pid_alive,
    read_json,
    write_json_atomic,
)

INFO_FORMAT = 1
RECORD_FORMAT = 1


class RecordError(ValueError):
    """A record that does not hold what its type says (raised when writing or parsing)."""


def _check(name: str, value: Any, kinds: tuple, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in kinds:
        raise RecordError(f"{name} must be {_kind_names(kinds)}, not a bool")
    if not isinstance(value, kinds):
        raise RecordError(f"{name} must be {_kind_names(kinds)}, not {type(value).__name__}")


def _kind_names(kinds: tuple) -> str:
    return " or ".join(k.__name__ for k in kinds)


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process of a ``--workers N`` server."""

    index: int
    pid: int
    rss_bytes: int | None = None
    restarts: int = 0  # times the parent replaced this worker (server/workers.py)
    state: str = "ready"  # "ready", "restarting" or "starting"

    def __post_init__(self):
        _check("worker index", self.index, (int,))
        _check("worker pid", self.pid, (int,))
        _check("worker rss_bytes", self.rss_bytes, (int,), optional=True)
        _check("worker restarts", self.restarts, (int,))
        _check("worker state", self.state, (str,))


@dataclass(frozen=True)
class ServerInfo:
    """What a ready server says about itself (its ``--info_file``)."""

    pid: int
    host: str
    port: int
    url: str
    models: dict = field(default_factory=dict)  # {name: {"base_path": str, "versions": [int]}}
    grpc_port: int | None = None
    grpc_socket_path: str | None = None
    backend: str = "python"
    tf_version: str = ""
    devices: tuple = ()
    argv: tuple = ()
    parent_pid: int | None = None
    started: float = 0.0
    workers: tuple = ()  # WorkerInfo, for --workers above 1 (the parent's file)
    restarts: int = 0  # workers replaced since start, all workers together
    # --ssl_config_file (server/tls.py): {"grpc": True, "rest": HTTPS or not, "client_verify":
    # bool, "ca": PEM of the certificates a local client trusts}; None: no TLS
    tls: dict | None = None
    format: int = INFO_FORMAT

    def __post_init__(self):
        _check("pid", self.pid, (int,))
        _check("host", self.host, (str,))
        _check("port", self.port, (int,))
        _check("url", self.url, (str,))
        _check("models", self.models, (dict,))
        for name, entry in self.models.items():
            _check("model name", name, (str,))
            _check(f"models[{name!r}]", entry, (dict,))
        _check("grpc_port", self.grpc_port, (int,), optional=True)
        _check("grpc_socket_path", self.grpc_socket_path, (str,), optional=True)
        _check("backend", self.backend, (str,))
        _check("parent_pid", self.parent_pid, (int,), optional=True)
        _check("started", self.started, (int, float))
        _check("tls", self.tls, (dict,), optional=True)
        if self.tls and self.tls.get("rest") and self.url.startswith("http://"):
            # a REST port that speaks HTTPS has an https:// URL, whoever rebuilt the URL
            object.__setattr__(self, "url", "https://" + self.url[len("http://"):])
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "argv", tuple(self.argv))
        workers = tuple(w if isinstance(w, WorkerInfo) else WorkerInfo(**_known(WorkerInfo, w))
                        for w in self.workers)
        object.__setattr__(self, "workers", workers)

    @property
    def connect_url(self) -> str:
        """The REST base URL a local client dials (``url`` as written, or rebuilt)."""
        return self.url or client_url(self.host, self.port)

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` for a gRPC channel, or None when gRPC is off."""
        return f"{connect_host(self.host)}:{self.grpc_port}" if self.grpc_port else None

    def replace(self, **changes) -> ServerInfo:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["devices"] = list(self.devices)
        data["argv"] = list(self.argv)
        data["workers"] = [dataclasses.asdict(w) for w in self.workers]
        if not self.workers:
            del data["workers"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> ServerInfo:
        """Parse a decoded info file; RecordError when it is not one."""
        if not isinstance(data, dict):
            raise RecordError("an info file holds a JSON object")
        try:
            return cls(**_known(cls, data))
        except TypeError as exc:  # a required key missing
            raise RecordError(str(exc)) from None

    def write(self, path) -> None:
        """Write atomically (mode 0600)."""
        write_json_atomic(path, self.to_json())


def read_info(path) -> ServerInfo | None:
    """The info file at ``path``, or None when missing, partial or malformed."""
    data = read_json(path) if path else None
    if data is None:
        return None
    try:
        return ServerInfo.from_json(data)
    except RecordError:
        return None


def remove_info(path, owner_pid: int | None = None) -> None:
    """Remove the info file at ``path`` if it is ``owner_pid``'s (default: this process's)."""
    info = read_info(path)
    if info is None or info.pid != (owner_pid or os.getpid()):
        return
    try:
        os.remove(path)
    except OSError:
        pass


@dataclass(frozen=True)
class ServerRecord:
    """The manager's record of a server it launched (``<name>.json``)."""

    name: str
    pid: int
    owner_pid: int = 0
    detach: bool = False
    backend: str = "python"
    key: dict = field(default_factory=dict)  # what a re-run start compares to reuse
    host: str = "127.0.0.1"
    port: int | None = None  # known at launch for the binary backend; else from the info file
    grpc_port: int | None = None
    log_path: str = ""
    info_path: str | None = None
    owners_path: str | None = None
    base_path: str | None = None
    config: str | None = None
    models: tuple = ()  # model names it serves
    devices: tuple = ()
    expect: tuple = ()  # substrings of its command line (pid-recycling guard)
    argv: tuple = ()
    started: float = 0.0
    state: str = "starting"  # "starting" | "ready"
    # start's options as asked, so the server can be started again the same way (_restart.py)
    gpu: str = "auto"
    poll: float | None = None
    workers: str | None = None
    extra_args: tuple = ()
    port_retries: int = 100
    timeout: float = 120.0
    format: int = RECORD_FORMAT

    def __post_init__(self):
        _check("name", self.name, (str,))
        _check("pid", self.pid, (int,))
        _check("owner_pid", self.owner_pid, (int,))
        _check("detach", self.detach, (bool,))
        _check("backend", self.backend, (str,))
        _check("key", self.key, (dict,))
        _check("host", self.host, (str,))
        _check("port", self.port, (int,), optional=True)
        _check("grpc_port", self.grpc_port, (int,), optional=True)
        _check("log_path", self.log_path, (str,))
        _check("info_path", self.info_path, (str,), optional=True)
        _check("owners_path", self.owners_path, (str,), optional=True)
        _check("state", self.state, (str,))
        _check("gpu", self.gpu, (str,))
        _check("poll", self.poll, (int, float), optional=True)
        _check("workers", self.workers, (str,), optional=True)
        _check("port_retries", self.port_retries, (int,))
        _check("timeout", self.timeout, (int, float))
        for name in _LISTS:
            value = getattr(self, name)
            if isinstance(value, dict):  # older records held {model: {...}}
                value = list(value)
            object.__setattr__(self, name, tuple(value))
        for arg in self.extra_args:
            _check("extra_args item", arg, (str,))

    def replace(self, **changes) -> ServerRecord:
        return dataclasses.replace(self, **changes)

    def info(self) -> ServerInfo | None:
        """The server's own info file, when it has written one."""
        return read_info(self.info_path) if self.info_path else None

    def alive(self) -> bool:
        """Whether its process still runs (and is still a server: pid-recycling guard)."""
        return pid_alive(self.pid, self.expect)

    def endpoint(self) -> Endpoint:
        """Where it answers now: from its info file once written, else from this record."""
        info = self.info()
        if info is not None:
            models = {name: _versions(entry) for name, entry in info.models.items()}
            return Endpoint(info.host or self.host, info.port, info.connect_url, info.grpc_port,
                            models or {m: [] for m in self.models}, info)
        port = self.port or 0
        url = client_url(self.host, port) if port else ""
        return Endpoint(self.host, port, url, self.grpc_port, {m: [] for m in self.models}, None)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        for name in _LISTS:
            data[name] = list(getattr(self, name))
        return data

    @classmethod
    def from_json(cls, data: dict) -> ServerRecord:
        if not isinstance(data, dict):
            raise RecordError("a server record holds a JSON object")
        try:
            return cls(**_known(cls, data))
        except TypeError as exc:
            raise RecordError(str(exc)) from None

    def write(self, path) -> None:
        write_json_atomic(path, self.to_json())


_LISTS = ("models", "devices", "expect", "argv", "extra_args")


@dataclass(frozen=True)
class Endpoint:
    """Where a recorded server answers (``url`` is "" while it is still starting)."""

    host: str
    port: int
    url: str
    grpc_port: int | None
    models: dict  # {model: sorted versions}; versions empty until the server says
    info: ServerInfo | None = None

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` for a gRPC channel, or None when gRPC is off."""
        return f"{connect_host(self.host)}:{self.grpc_port}" if self.grpc_port else None


def _versions(entry) -> list[int]:
    versions = entry.get("versions", []) if isinstance(entry, dict) else entry
    try:
        return sorted(int(v) for v in versions or [])
    except (TypeError, ValueError):
        return []


def read_record(path) -> ServerRecord | None:
    """The record at ``path``, or None when missing, partial or malformed."""
    data = read_json(path)
    if data is None:
        return None
    try:
        return ServerRecord.from_json(data)
    except RecordError:
        return None


def _known(cls, data: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}
