"""``--workers N|auto``: several server processes on one port, under one parent.

Python runs one core's worth of model calls per process, so to use a machine's cores the server
runs N worker processes. Each one is the ordinary single-process server (its own models, batching
and thread pool) bound to the same REST port with ``SO_REUSEPORT``: the kernel spreads incoming
connections over the workers, and nothing in the request path is shared.

The parent (``run_parent``; it never imports TensorFlow) reserves the ports, starts the workers,
writes the info file once every worker is ready, owns ``--parent_pid``, the signals and
shutdown. Like uvicorn's multiprocess supervisor it is handed what it runs (how to bind, the
worker command, how to watch the owner) rather than importing the server's entry point.
A worker that dies is never restarted silently: the parent logs it and stops the whole server
(exit 1), so the process manager sees a dead server rather than a smaller one. Workers watch the
parent (``PR_SET_PDEATHSIG`` and ``--parent_pid``), so a SIGKILLed parent leaves no children
behind. How many workers: server/sizing.py; inside a worker: server/peers.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tfserve_magic.records import ServerInfo
from tfserve_magic.server.peers import WorkerContext, WorkerReady, ready_path
from tfserve_magic.server.process import client_url, port_free
from tfserve_magic.server.sizing import auto_count, available_memory, parse_workers, usable_cpus

log = logging.getLogger("tfserve_magic.server")

STOP_TIMEOUT_S = 10.0

# (REST port, gRPC port or -1, worker count) -> a worker's command line
WorkerCommand = Callable[[int, int, int], list[str]]


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

    def __init__(self, flags: dict, argv: list[str], sock: socket.socket,
                 worker_command: WorkerCommand,
                 grpc: tuple[socket.socket | None, int] = (None, -1)):
        self.flags = flags
        self.argv = argv
        # Bound with SO_REUSEPORT and listening, so that no other server can take the port
        # while the workers start; closed (its queue reset) once the first worker listens.
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.worker_command = worker_command
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
        env.update(WorkerContext(self.directory, index, self.planned).environ())
        # TensorFlow takes nearly all of a GPU's memory in the first process that uses it;
        # with growth on, the workers share the GPU (the manager sets this for a single
        # server too, docs/gpu.md).
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        command = self.worker_command(self.port, self.grpc_port, self.planned)
        self.children[index] = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def ready(self, index: int) -> WorkerReady | None:
        return WorkerReady.read(ready_path(self.directory, index))

    def _failed_child(self) -> tuple[int, int] | None:
        for index, child in self.children.items():
            code = child.poll()
            if code is not None:
                return index, code
        return None

    def _wait_ready(self, indices) -> dict[int, WorkerReady] | None:
        """Wait for ``indices`` to be ready; None if a worker exited or a stop came first."""
        ready: dict[int, WorkerReady] = {}
        while not self.stopping.is_set():
            for index in indices:
                if index not in ready:
                    answer = self.ready(index)
                    if answer is not None:
                        ready[index] = answer
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

    def run(self, watch_owner: Callable[[Callable[[], None]], None] | None = None) -> int:
        """Run until stopped (a signal, ``watch_owner``'s callback, a dead worker)."""
        if watch_owner is not None:
            watch_owner(self.stopping.set)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            return self._run()
        finally:
            self.stop()

    def _start_workers(self) -> dict[int, WorkerReady] | None:
        """Start the workers (``auto``: one first, then as many more as cores and memory
        allow); their ready files, or None when the start failed or was stopped."""
        first = list(range(self.planned)) if self.requested else [0]
        log.info("Starting %s on port %d (--workers=%s)",
                 f"{len(first)} workers" if self.requested else "the first worker",
                 self.port, self.flags["workers"])
        for index in first:
            self.spawn(index)
        ready = self._wait_ready(first)
        if ready is None:
            return None
        self.sock.close()  # the workers hold the port now; nothing is ever accepted here
        if self.grpc_sock is not None:
            self.grpc_sock.close()
        if not self.requested:
            rss = ready[0].worker.rss_bytes
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
                return None
            ready.update(more)
        return ready

    def info(self, ready: dict[int, WorkerReady]) -> ServerInfo:
        """The server's info file: the first worker's (models, gRPC port, devices) as the
        parent's, with every worker listed."""
        return ready[0].info.replace(
            pid=os.getpid(),
            port=self.port,
            url=client_url(self.flags["host"], self.port),
            argv=tuple(self.argv),
            parent_pid=self.flags["parent_pid"] or None,
            started=time.time(),
            workers=tuple(ready[i].worker for i in sorted(ready)),
        )

    def _run(self) -> int:
        ready = self._start_workers()
        if ready is None:
            return self.exit_code
        info = self.info(ready)
        for worker in info.workers:
            log.info("Worker %d (pid %d) ready, resident memory %s", worker.index,
                     worker.pid, _mib(worker.rss_bytes))
        if self.flags["info_file"]:
            info.write(self.flags["info_file"])
        log.info("Server ready: %d worker(s) sharing %s", len(info.workers), info.url)
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
    if port and not port_free(host, port):
        if explicit:
            raise OSError(f"Could not bind the gRPC API to {host}:{port}: Address already in use")
        log.warning("Cannot bind gRPC to %s:%d: Address already in use; serving REST only "
                    "(pass --port=0 for a free gRPC port)", host, port)
        return None, -1
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock, sock.getsockname()[1]


def run_parent(flags: dict, argv: list[str], *, bind: Callable[[], socket.socket],
               worker_command: WorkerCommand, grpc_port_given: bool,
               watch_owner: Callable[[Callable[[], None]], None] | None = None) -> int:
    """Reserve the ports (REST with ``bind()``, which sets SO_REUSEPORT; then gRPC) and run
    the workers until stopped. ``grpc_port_given``: ``--port`` was on the command line, so a
    taken gRPC port fails the start."""
    try:
        sock = bind()
    except OSError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1
    try:
        grpc = reserve_grpc_port(flags, grpc_port_given)
    except OSError as exc:
        sock.close()
        log.error("Failed to start server. Error: %s", exc)
        return 1
    return Parent(flags, argv, sock, worker_command, grpc).run(watch_owner)
