"""``ServerHandle``: what ``start``, ``find`` and ``servers`` return for one running server."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

from tfserve_magic._text import html_table
from tfserve_magic.records import ServerRecord
from tfserve_magic.server.process import connect_host


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

    @classmethod
    def from_record(cls, record: ServerRecord) -> ServerHandle:
        """The handle of a recorded server, from its info file once written (no request sent)."""
        where = record.endpoint()
        info = where.info
        return cls(
            name=record.name,
            url=where.url,
            port=where.port,
            host=where.host,
            pid=record.pid,
            backend=record.backend,
            devices=list((info.devices if info else ()) or record.devices),
            models=where.models,
            log_path=record.log_path,
            grpc_port=where.grpc_port,
            started=float((info.started if info else 0.0) or record.started),
            detach=record.detach,
            owner_pid=record.owner_pid,
            base_path=record.base_path,
            config=record.config,
            tf_version=info.tf_version if info else None,
            healthy=bool(where.url),
            workers=[dataclasses.asdict(w) for w in info.workers] if info else [],
        )

    @property
    def client(self):
        """A ``tfserve_magic.Client`` for this server's first model."""
        from tfserve_magic.client import Client

        return Client(self.url, model=next(iter(self.models), self.name))

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` for ``grpc.insecure_channel`` (TF Serving's PredictionService)."""
        return f"{connect_host(self.host)}:{self.grpc_port}" if self.grpc_port else None

    @property
    def uptime_s(self) -> float:
        return max(0.0, time.time() - self.started) if self.started else 0.0

    def models_text(self) -> str:
        """"MLP v3, other v1": each model with its newest version."""
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
        line = f"{self.models_text()} at {self.url}{grpc_text} (pid {self.pid}{extra})"
        if self.reused:
            if self.owner_pid and self.owner_pid != os.getpid() and not self.detach:
                return (
                    f"Reusing {line}, started {age(self.uptime_s)} ago by another process (pid "
                    f"{self.owner_pid}) with the same name, base path and options; it now stays "
                    "until every process using it has exited (--restart starts a fresh one)"
                )
            return (
                f"Reusing {line}, started {age(self.uptime_s)} ago with the same name, base path "
                "and options (--restart starts a fresh one)"
            )
        return f"Serving {line}"

    @property
    def proxied_url(self) -> str | None:
        """The first model's URL through the notebook server's proxy (JupyterHub, Binder), or
        None where no proxy serves this kernel's ports."""
        from tfserve_magic.proxy_url import proxied_for

        model = next(iter(self.models), None)
        return proxied_for(f"{self.url}/v1/models/{model}") if model and self.url else None

    def _fields(self) -> list[tuple[str, str]]:
        source = self.config or self.base_path or ""
        rows = [
            ("url", self.url),
            ("grpc", self.grpc_target or "-"),
            ("pid", str(self.pid)),
            ("backend", self.backend),
            ("devices", ", ".join(self.devices) or "?"),
            ("models", self.models_text()),
            ("source", source),
            ("log", self.log_path),
            ("client", f"tfserve_magic.Client({self.name!r})"),
        ]
        if self.backend == "python":
            rows.append(("workers", workers_text(self.workers)))
        proxied = self.proxied_url
        if proxied:
            rows.append(("proxy", f"{proxied} (from your own computer, with your Jupyter token)"))
        if self.detach:
            rows.append(("detached", "yes: keeps running after the kernel exits"))
        return rows

    def __repr__(self) -> str:
        lines = [self.summary()] + [f"  {key:<8} {value}" for key, value in self._fields()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_table(["", ""], self._fields(), caption=self.summary())


def age(seconds: float) -> str:
    """"42s", "3m 5s", "2h 10m"."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def workers_text(workers: list) -> str:
    """The worker processes of a server, in words (memory per worker as measured at start)."""
    if len(workers) <= 1:
        return "1 process (--workers N or auto uses more cores; workers=N from Python)"
    memory = [w.get("rss_bytes") or 0 for w in workers]
    text = f"{len(workers)} processes, {max(memory) / 2**20:.0f} MiB resident each at start"
    restarts = sum(int(w.get("restarts") or 0) for w in workers)
    if restarts:
        text += f"; {restarts} restart(s) after a worker died (see the log)"
    busy = [f"worker {w.get('index')} {w.get('state')}" for w in workers
            if w.get("state", "ready") != "ready"]
    if busy:
        text += "; " + ", ".join(busy)
    return text
