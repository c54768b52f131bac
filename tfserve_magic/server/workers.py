"""``--workers N|auto``: several server processes on one port, under one parent.

Python runs one core's worth of model calls per process, so to use a machine's cores the server
runs N worker processes. Each one is the ordinary single-process server (its own models, batching
and thread pool) bound to the same REST port with ``SO_REUSEPORT``: the kernel spreads incoming
connections over the workers, and nothing in the request path is shared.

The parent (this module's ``run_parent``; it never imports TensorFlow) reserves the port, starts
the workers, writes the info file once every worker is ready, owns ``--parent_pid``, the signals
and shutdown. A worker that dies is never restarted silently: the parent logs it and stops the
whole server (exit 1), so the process manager sees a dead server rather than a smaller one.
Workers watch the parent (``PR_SET_PDEATHSIG`` and ``--parent_pid``), so a SIGKILLed parent
leaves no children behind.

Answers that describe the server as a whole are the same whichever worker answers: the worker
that gets a status or Prometheus request asks the others over a Unix socket each worker opens in
a private folder (the peer channel) and merges the answers. A version is AVAILABLE only when
every worker serves it; counters and histograms are summed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tfserve_magic.server")

ENV_DIR = "TFSERVE_MAGIC_WORKER_DIR"
ENV_INDEX = "TFSERVE_MAGIC_WORKER_INDEX"
ENV_COUNT = "TFSERVE_MAGIC_WORKER_COUNT"

STOP_TIMEOUT_S = 10.0
MEMORY_RESERVE = 0.10  # of the available memory, left free when --workers=auto counts workers
PEER_TIMEOUT_S = 5.0


# ---- how many workers ----


def parse_workers(text: str) -> int | None:
    """``"auto"`` -> None; ``"N"`` -> N >= 1; anything else raises ValueError."""
    value = str(text).strip().lower()
    if value == "auto":
        return None
    try:
        count = int(value, 10)
    except ValueError:
        raise ValueError(f"--workers must be a positive integer or 'auto', not {text!r}") from None
    if count < 1:
        raise ValueError(f"--workers must be at least 1, not {count}")
    return count


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def reuse_port_supported() -> bool:
    # macOS has SO_REUSEPORT but does not spread connections; Windows has none.
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def available_memory() -> int | None:
    """MemAvailable in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident memory of ``pid`` (default: this process) from /proc, else None."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def auto_count(cpus: int, available: int | None, worker_rss: int | None) -> int:
    """``auto``: one worker per usable core, as many as the free memory holds.

    ``available`` is measured once the first worker is loaded, so it already excludes that
    worker; RSS counts shared library pages in full, so the cap errs on the safe side.
    """
    if available is None or not worker_rss:
        return cpus
    fits = 1 + int(available * (1 - MEMORY_RESERVE)) // worker_rss
    return max(1, min(cpus, fits))


def planned_count(flags: dict) -> int:
    """How many workers ``flags`` ask for before anything is loaded (``auto``: usable cores)."""
    count = parse_workers(flags.get("workers", "1"))
    if count is None:
        count = usable_cpus()
    if count > 1 and not reuse_port_supported():
        log.warning("--workers=%s needs SO_REUSEPORT (Linux); serving with one process",
                    flags.get("workers"))
        return 1
    return count


# ---- in a worker ----


@dataclass(frozen=True)
class WorkerContext:
    """What a worker process knows about its siblings (from the environment the parent set)."""

    directory: Path
    index: int
    count: int

    @property
    def socket_path(self) -> Path:
        return self.directory / f"w{self.index}.sock"

    @property
    def ready_path(self) -> Path:
        return self.directory / f"w{self.index}.json"

    def peer_sockets(self) -> list[Path]:
        """The other ready workers' channels."""
        return sorted(p for p in self.directory.glob("w*.sock") if p != self.socket_path)


def worker_context() -> WorkerContext | None:
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return None
    return WorkerContext(
        Path(directory), int(os.environ.get(ENV_INDEX, "0")), int(os.environ.get(ENV_COUNT, "1"))
    )


def bind_reuse_port(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


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
        return render_merged(answers, type(self.metrics))


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


def render_merged(answers: list[dict], metrics_class) -> str:
    """The Prometheus text of the summed metrics, plus one memory and request line per worker."""
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
    return text + "\n".join(lines) + "\n"


# ---- the parent ----


def _child_flags(flags: dict, defaults: dict, *, port: int, parent: int,
                 count: int, grpc_port: int = -1) -> list[str]:
    """The command line of a worker: the parent's flags, with the ports and process options
    the parent owns replaced."""
    own = {"workers", "info_file", "parent_pid", "owners_file", "rest_api_port",
           "rest_api_port_retries", "port"}
    args = []
    for name, value in flags.items():
        if name in own or value == defaults.get(name):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        args.append(f"--{name}={value}")
    args += [f"--rest_api_port={port}", f"--port={grpc_port}", "--workers=1",
             f"--parent_pid={parent}"]
    # TensorFlow's thread pools keep their defaults in every worker: splitting the cores
    # between the workers' pools (1 intra-op thread each on 2 cores) measured 35 % slower at
    # 100 images, c=8 (docs/benchmarks.md).
    # TF Serving's --rest_api_num_threads is the server's total: split it over the workers.
    if "rest_api_num_threads" in flags:
        threads = max(1, flags["rest_api_num_threads"] // count)
        args = [a for a in args if not a.startswith("--rest_api_num_threads=")]
        args.append(f"--rest_api_num_threads={threads}")
    return args


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, however it dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Parent:
    """Starts, watches and stops the workers; see the module docstring."""

    def __init__(self, flags: dict, defaults: dict, argv: list[str], sock: socket.socket,
                 grpc: tuple[socket.socket | None, int] = (None, -1)):
        self.flags = flags
        self.defaults = defaults
        self.argv = argv
        # Bound with SO_REUSEPORT and listening, so that no other server can take the port
        # while the workers start; closed (its queue reset) once the first worker listens.
        self.sock = sock
        self.port = sock.getsockname()[1]
        # The gRPC port every worker binds (-1: none), held by grpc_sock until they do.
        self.grpc_sock, self.grpc_port = grpc
        self.requested = parse_workers(flags["workers"])
        self.cpus = usable_cpus()
        self.planned = self.requested or self.cpus
        self.directory = Path(tempfile.mkdtemp(prefix="tfserve-workers-"))
        self.children: dict[int, subprocess.Popen] = {}
        self.stopping = threading.Event()
        self.exit_code = 0  # a worker's code when it fails during start-up

    def spawn(self, index: int) -> None:
        env = dict(os.environ)
        env.update({ENV_DIR: str(self.directory), ENV_INDEX: str(index),
                    ENV_COUNT: str(self.planned)})
        # TensorFlow takes nearly all of a GPU's memory in the first process that uses it;
        # with growth on, the workers share the GPU (the manager sets this for a single
        # server too, docs/gpu.md).
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        command = [sys.executable, "-m", "tfserve_magic", "serve", *_child_flags(
            self.flags, self.defaults, port=self.port, parent=os.getpid(), count=self.planned,
            grpc_port=self.grpc_port)]
        self.children[index] = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def ready(self, index: int) -> dict | None:
        try:
            return json.loads((self.directory / f"w{index}.json").read_text())
        except (OSError, ValueError):
            return None

    def _failed_child(self) -> tuple[int, int] | None:
        for index, child in self.children.items():
            code = child.poll()
            if code is not None:
                return index, code
        return None

    def _wait_ready(self, indices) -> dict[int, dict] | None:
        """Wait for ``indices`` to be ready; None if a worker exited or a stop came first."""
        ready: dict[int, dict] = {}
        while not self.stopping.is_set():
            for index in indices:
                if index not in ready:
                    info = self.ready(index)
                    if info is not None:
                        ready[index] = info
            if len(ready) == len(indices):
                return ready
            failed = self._failed_child()
            if failed is not None:
                log.error("Failed to start server. Error: worker %d exited with code %d while "
                          "starting (its log lines are above)", *failed)
                self.exit_code = failed[1] or 1
                return None
            self.stopping.wait(0.05)
        return None

    def run(self) -> int:
        from tfserve_magic.server import main as server_main

        if self.flags["parent_pid"]:
            server_main._watch_parent(self.flags["parent_pid"], self.stopping.set,
                                      self.flags["owners_file"])
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            return self._run(server_main)
        finally:
            self.stop()

    def _run(self, server_main) -> int:
        first = list(range(self.planned)) if self.requested else [0]
        log.info("Starting %s on port %d (--workers=%s)",
                 f"{len(first)} workers" if self.requested else "the first worker",
                 self.port, self.flags["workers"])
        for index in first:
            self.spawn(index)
        ready = self._wait_ready(first)
        if ready is None:
            return self.exit_code
        self.sock.close()  # the workers hold the port now; nothing is ever accepted here
        if self.grpc_sock is not None:
            self.grpc_sock.close()
        if not self.requested:
            rss = ready[0].get("rss_bytes")
            available = available_memory()
            count = auto_count(self.cpus, available, rss)
            log.info(
                "--workers=auto: %d usable core(s), %s available, %s per worker -> %d worker(s)",
                self.cpus, _mib(available), _mib(rss), count,
            )
            rest = list(range(1, count))
            for index in rest:
                self.spawn(index)
            more = self._wait_ready(rest)
            if more is None:
                return self.exit_code
            ready.update(more)
        workers = [
            {"index": i, "pid": ready[i]["pid"], "rss_bytes": ready[i].get("rss_bytes")}
            for i in sorted(ready)
        ]
        for worker in workers:
            log.info("Worker %d (pid %d) ready, resident memory %s", worker["index"],
                     worker["pid"], _mib(worker["rss_bytes"]))
        first_info = ready[0]
        info = {
            **first_info,
            "pid": os.getpid(),
            "port": self.port,
            "url": _tls_url(server_main._client_url(self.flags["host"], self.port),
                            self.flags),  # [issue 22 hook]
            "argv": self.argv,
            "parent_pid": self.flags["parent_pid"] or None,
            "started": time.time(),
            "workers": workers,
        }
        info.pop("index", None)  # grpc_port: the workers' shared port, from the first one
        info.pop("rss_bytes", None)
        if self.flags["info_file"]:
            server_main._write_info(self.flags["info_file"], info)
        log.info("Server ready: %d worker(s) sharing %s", len(workers), info["url"])
        while not self.stopping.is_set():
            failed = self._failed_child()
            if failed is not None:
                log.error("Worker %d exited with code %d; stopping the server (workers are "
                          "never restarted silently)", *failed)
                return 1
            self.stopping.wait(0.2)
        log.info("Stopping %d worker(s)", len(self.children))
        return 0

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                try:
                    child.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("Worker pid %d did not stop in %.0f s; killing it", child.pid,
                            STOP_TIMEOUT_S)
                child.kill()
                child.wait(5)
        self.sock.close()
        if self.grpc_sock is not None:
            self.grpc_sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _mib(value: int | None) -> str:
    return "unknown" if value is None else f"{value / 2**20:.0f} MiB"


def reserve_grpc_port(flags: dict, explicit: bool) -> tuple[socket.socket | None, int]:
    """The gRPC port the workers share, held by a SO_REUSEPORT socket until they bind it.

    ``--port=0`` is resolved here once (each worker would otherwise pick its own free port);
    ``-1`` stays off. A taken port fails the start when ``--port`` was given, and only turns
    gRPC off (with a warning) when it is the default 8500, as for a single server.
    """
    port = flags["port"]
    if port < 0:
        return None, -1
    host = flags["host"] or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    from tfserve_magic.server.main import _port_free

    if port and not _port_free(family, host, port):
        if explicit:
            raise OSError(f"Could not bind the gRPC API to {host}:{port}: Address already in use")
        log.warning("Cannot bind gRPC to %s:%d: Address already in use; serving REST only "
                    "(pass --port=0 for a free gRPC port)", host, port)
        return None, -1
    sock = socket.socket(family, socket.SOCK_STREAM)
    bind_reuse_port(sock)
    sock.bind((host, port))
    return sock, sock.getsockname()[1]


def run_parent(flags: dict, defaults: dict, argv: list[str], bind) -> int:
    """Reserve the ports (REST with ``bind(reuse_port=True)``, then gRPC) and run the workers
    until stopped."""
    from tfserve_magic.server.main import _port_given

    try:
        sock = bind()
    except OSError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1
    try:
        grpc = reserve_grpc_port(flags, _port_given(argv))
    except OSError as exc:
        sock.close()
        log.error("Failed to start server. Error: %s", exc)
        return 1
    return Parent(flags, defaults, argv, sock, grpc).run()


def write_ready(context: WorkerContext, info: dict) -> None:
    """A worker's "I am serving" file for the parent (atomic, like the info file)."""
    from tfserve_magic.server import main as server_main

    server_main._write_info(str(context.ready_path), {
        **info, "index": context.index, "pid": os.getpid(), "rss_bytes": rss_bytes(),
    })


def _tls_url(url: str, flags: dict) -> str:  # [issue 22 hook] https:// with REST over TLS
    from tfserve_magic.server import tls

    return tls.rest_url(url, flags)
