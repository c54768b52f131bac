"""Inside a ``--workers`` server: a worker, its siblings, and the one view they give.

Each worker is the ordinary single-process server. The parent (server/workers.py) tells it
who it is through the environment (``TFSERVE_MAGIC_WORKER_DIR`` / ``_INDEX`` / ``_COUNT``:
``WorkerContext``); the worker says it is serving by writing its ready file (``WorkerReady``)
in that folder, which the parent waits for.

Answers that describe the server as a whole are the same whichever worker answers: the worker
that gets a status or Prometheus request asks the others over a Unix socket each worker opens in
the private folder (the peer channel) and merges the answers. A version is AVAILABLE only when
every worker serves it; counters and histograms are summed. A worker that died is not asked
(the parent removes its socket); its replacement opens the same path once it has loaded the
models, and from then on counts again. The parent's restart counts (``supervisor_path``) are
added to the metrics as ``:tfserve_magic:worker_restarts``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path

from tfserve_magic.records import RecordError, ServerInfo, WorkerInfo
from tfserve_magic.server.metrics import worker_restart_lines
from tfserve_magic.server.process import read_json, write_json_atomic
from tfserve_magic.server.sizing import rss_bytes

log = logging.getLogger("tfserve_magic.server")

ENV_DIR = "TFSERVE_MAGIC_WORKER_DIR"
ENV_INDEX = "TFSERVE_MAGIC_WORKER_INDEX"
ENV_COUNT = "TFSERVE_MAGIC_WORKER_COUNT"

PEER_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WorkerContext:
    """What a worker process knows about its siblings (from the environment the parent set)."""

    directory: Path
    index: int
    count: int

    @property
    def socket_path(self) -> Path:
        return socket_path(self.directory, self.index)

    @property
    def ready_path(self) -> Path:
        return ready_path(self.directory, self.index)

    def environ(self) -> dict[str, str]:
        """The environment variables that hand this context to a worker process."""
        return {ENV_DIR: str(self.directory), ENV_INDEX: str(self.index),
                ENV_COUNT: str(self.count)}

    def peer_sockets(self) -> list[Path]:
        """The other ready workers' channels."""
        return sorted(p for p in self.directory.glob("w*.sock") if p != self.socket_path)


def worker_context() -> WorkerContext | None:
    """This process's context when it is a worker (its parent set the environment), else
    None."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return None
    return WorkerContext(
        Path(directory), int(os.environ.get(ENV_INDEX, "0")), int(os.environ.get(ENV_COUNT, "1"))
    )


def ready_path(directory: Path, index: int) -> Path:
    return Path(directory) / f"w{index}.json"


def socket_path(directory: Path, index: int) -> Path:
    """Worker ``index``'s peer channel (a Unix socket)."""
    return Path(directory) / f"w{index}.sock"


def supervisor_path(directory: Path) -> Path:
    """The parent's file for its workers: ``{"restarts": {index: count}}``."""
    return Path(directory) / "supervisor.json"


def worker_restarts(directory: Path) -> dict[int, int]:
    """How often the parent replaced each worker (empty before it wrote any)."""
    data = read_json(supervisor_path(directory)) or {}
    restarts = data.get("restarts")
    if not isinstance(restarts, dict):
        return {}
    return {int(k): int(v) for k, v in restarts.items() if str(k).isdigit()
            and isinstance(v, int)}


@dataclass(frozen=True)
class WorkerReady:
    """A worker's "I am serving" file for its parent: the worker's own ``ServerInfo`` (what a
    single server would write) and its ``WorkerInfo``, written as one JSON object: the info
    file's keys plus ``index`` and ``rss_bytes``."""

    info: ServerInfo
    worker: WorkerInfo

    @classmethod
    def measure(cls, context: WorkerContext, info: ServerInfo) -> WorkerReady:
        """This worker, now: its pid and resident memory."""
        pid = os.getpid()
        return cls(info.replace(pid=pid), WorkerInfo(context.index, pid, rss_bytes()))

    def write(self, path) -> None:
        write_json_atomic(path, {**self.info.to_json(), "index": self.worker.index,
                                 "rss_bytes": self.worker.rss_bytes})

    @classmethod
    def read(cls, path) -> WorkerReady | None:
        """The ready file at ``path``; None while it is missing, partial or malformed."""
        data = read_json(path)
        if data is None:
            return None
        try:
            info = ServerInfo.from_json(data)
            return cls(info, WorkerInfo(data.get("index"), info.pid, data.get("rss_bytes")))
        except RecordError:
            return None


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            request = json.loads(self.rfile.readline())
            answer = self.server.answer(request)
        except Exception as exc:  # noqa: BLE001 - a bad peer request must not kill the channel
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(answer).encode("utf-8") + b"\n")


class _ChannelServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class PeerChannel:
    """This worker's side of the peer channel: answers siblings, and asks them.

    ``install`` makes ``metrics.render`` and ``manager.status`` (used by REST, and by gRPC when
    it is served) return the merged view of every worker; the channel itself answers with the
    local originals, so two workers asking each other at once never recurse.
    """

    def __init__(self, context: WorkerContext, manager, metrics):
        self.context = context
        self.manager = manager
        self.metrics = metrics
        self._local_status = manager.status
        self._local_render = metrics.render
        self._server = None

    @classmethod
    def open(cls, context: WorkerContext, manager, metrics) -> PeerChannel:
        """Start answering siblings and make status and metrics speak for every worker."""
        channel = cls(context, manager, metrics)
        channel.start()
        channel.install()
        return channel

    def install(self) -> None:
        self.manager.status = self.status
        self.metrics.render = self.render

    def start(self) -> None:
        path = self.context.socket_path
        path.unlink(missing_ok=True)
        self._server = _ChannelServer(str(path), _Handler)
        self._server.answer = self._answer
        threading.Thread(target=self._server.serve_forever, name="peer-channel",
                         daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self.context.socket_path.unlink(missing_ok=True)

    # -- answering siblings --

    def _answer(self, request: dict) -> dict:
        op = request.get("op")
        if op == "metrics":
            return self.local_metrics()
        if op == "status":
            try:
                return {"status": self._local_status(request["name"], request.get("version"))}
            except Exception as exc:  # noqa: BLE001 - e.g. NOT_FOUND: reported to the asker
                return {"missing": str(exc)}
        return {"error": f"unknown op {op!r}"}

    def local_metrics(self) -> dict:
        return {
            "index": self.context.index,
            "pid": os.getpid(),
            "rss_bytes": rss_bytes(),
            "metrics": metrics_state(self.metrics),
        }

    # -- asking siblings --

    def ask_all(self, request: dict) -> list[dict]:
        answers = []
        for path in self.context.peer_sockets():
            try:
                answers.append(ask(path, request))
            except OSError as exc:  # a sibling that is shutting down
                log.warning("Worker channel %s did not answer: %s", path.name, exc)
        return answers

    def status(self, name: str, version: int | None = None) -> list[dict]:
        local = None
        try:
            local = self._local_status(name, version)
        except Exception as exc:  # noqa: BLE001 - another worker may know the model already
            error = exc
        others = self.ask_all({"op": "status", "name": name, "version": version})
        views = [a["status"] for a in others if "status" in a]
        if local is None:
            if not views:
                raise error
        else:
            views.insert(0, local)
        return merge_status(views, expected=len(others) + 1)

    def render(self) -> str:
        answers = [self.local_metrics()]
        answers += [a for a in self.ask_all({"op": "metrics"}) if "metrics" in a]
        return render_merged(answers, type(self.metrics), worker_restarts(self.context.directory))


def ask(path: Path, request: dict, timeout: float = PEER_TIMEOUT_S) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    return json.loads(b"".join(chunks))


# ---- merging ----

_PROGRESS = {"START": 0, "LOADING": 1, "AVAILABLE": 2, "UNLOADING": 3, "END": 4}


def merge_status(views: list[list[dict]], expected: int | None = None) -> list[dict]:
    """One ``model_version_status`` list from every worker's.

    A version is AVAILABLE only when every worker reports it AVAILABLE. Otherwise a worker's
    load error wins; a version still coming up on some worker is reported in that worker's
    (earliest) state (START where a worker does not list it yet); one on its way out on some
    worker is UNLOADING until every worker reports END.
    """
    expected = max(expected or 0, len(views))
    by_version: dict[str, list[dict]] = {}
    for view in views:
        for entry in view:
            by_version.setdefault(entry["version"], []).append(entry)
    merged = []
    for entries in by_version.values():
        failed = [e for e in entries if e["status"]["error_code"] != "OK"]
        states = [e["state"] for e in entries]
        if failed:
            merged.append(failed[0])
            continue
        if len(entries) == expected and len(set(states)) == 1:
            merged.append(entries[0])
            continue
        if any(_PROGRESS.get(s, 0) > _PROGRESS["AVAILABLE"] for s in states):
            state = "END" if len(entries) == expected and set(states) == {"END"} else "UNLOADING"
        elif len(entries) < expected:
            state = "START"
        else:
            state = min(states, key=lambda s: _PROGRESS.get(s, 0))
        merged.append({**entries[0], "state": state})
    merged.sort(key=lambda e: int(e["version"]), reverse=True)
    return merged


def metrics_state(metrics) -> dict:
    """A JSON-able copy of every counter and histogram of a ``ServerMetrics``."""
    state = {}
    for metric in metrics._all:
        with metric._lock:
            if hasattr(metric, "series"):
                state[metric.name] = [[list(k), list(v)] for k, v in metric.series.items()]
            else:
                state[metric.name] = [[list(k), v] for k, v in metric.values.items()]
    return state


def render_merged(answers: list[dict], metrics_class, restarts: dict[int, int] | None = None
                  ) -> str:
    """The Prometheus text of the summed metrics, plus one memory and request line per worker
    and the parent's restart count per worker slot (``restarts``)."""
    total = metrics_class()
    by_name = {m.name: m for m in total._all}
    for answer in answers:
        for name, rows in answer["metrics"].items():
            metric = by_name.get(name)
            if metric is None:
                continue
            for labels, value in rows:
                key = tuple(labels)
                if hasattr(metric, "series"):
                    row = metric.series.setdefault(key, [0] * len(value))
                    for i, v in enumerate(value):
                        row[i] += v
                else:
                    metric.values[key] = metric.values.get(key, 0) + value
    text = total.render()
    answers = sorted(answers, key=lambda a: a["index"])
    lines = ["# TYPE tfserve_magic_worker_resident_memory_bytes gauge"]
    for a in answers:
        lines.append(f'tfserve_magic_worker_resident_memory_bytes{{worker="{a["index"]}",'
                     f'pid="{a["pid"]}"}} {a["rss_bytes"] or 0}')
    lines.append("# TYPE tfserve_magic_worker_request_count counter")
    for a in answers:
        count = sum(v for _, v in a["metrics"].get(":tensorflow:serving:request_count", []))
        lines.append(f'tfserve_magic_worker_request_count{{worker="{a["index"]}",'
                     f'pid="{a["pid"]}"}} {int(count)}')
    if restarts:
        lines += worker_restart_lines(restarts)
    return text + "\n".join(lines) + "\n"
