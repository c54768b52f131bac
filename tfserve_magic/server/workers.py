"""``--workers N|auto``: several server processes on one port, under one parent.

Python runs one core's worth of model calls per process, so to use a machine's cores the server
runs N worker processes. Each one is the ordinary single-process server (its own models, batching
and thread pool) bound to the same REST port with ``SO_REUSEPORT``: the kernel spreads incoming
connections over the workers, and nothing in the request path is shared.

The parent (``run_parent``; it never imports TensorFlow) reserves the ports, starts the workers,
writes the info file once every worker is ready, owns ``--parent_pid``, the signals and
shutdown. Like uvicorn's multiprocess supervisor it is handed what it runs (how to bind, the
worker command, how to watch the owner) rather than importing the server's entry point.

Supervision, as gunicorn and Kubernetes do it: a worker that dies is logged with its exit code
or signal (a SIGKILL under a memory limit is most likely the out-of-memory killer) and replaced,
after a short backoff, by the same command on the same ports; the others keep serving, so only
the requests the dead worker held fail. Restarts are counted in the info file
(``workers[i].restarts``) and, through the peer channel, in the ``:tfserve_magic:worker_restarts``
metric. A crash loop (``CRASH_LOOP_DEATHS`` deaths within ``CRASH_LOOP_WINDOW_S``) stops the
server with a ``Server failed: ...`` log line and exit code ``EXIT_CRASH_LOOP``, so the process
manager sees a failed server rather than one restarting forever. Workers watch the parent
(``PR_SET_PDEATHSIG`` and ``--parent_pid``), so a SIGKILLed parent leaves no children behind.
How many workers: server/sizing.py; inside a worker: server/peers.py.
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
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tfserve_magic.records import ServerInfo, WorkerInfo
from tfserve_magic.server.peers import (
    WorkerContext,
    WorkerReady,
    ready_path,
    socket_path,
    supervisor_path,
)
from tfserve_magic.server.process import client_url, port_free, write_json_atomic
from tfserve_magic.server.sizing import auto_count, available_memory, parse_workers, usable_cpus

log = logging.getLogger("tfserve_magic.server")

STOP_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = 0.5  # before the first replacement; doubles with each recent death
RESTART_BACKOFF_MAX_S = 5.0
CRASH_LOOP_DEATHS = 3  # this many worker deaths ...
CRASH_LOOP_WINDOW_S = 60.0  # ... within this many seconds stop the server
EXIT_CRASH_LOOP = 3  # the parent's exit code after a crash loop
FAILED_PREFIX = "Server failed: "  # the log line the process manager shows for a dead server

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
        # Supervision, once every worker was ready: the live view the info file shows.
        self.base_info: ServerInfo | None = None
        self.workers: dict[int, WorkerInfo] = {}
        self.restarts: dict[int, int] = {}
        self.deaths: deque[float] = deque()  # when workers died (monotonic), for the crash loop
        self.restart_at: dict[int, float] = {}  # index -> when its replacement starts
        self.starting: set[int] = set()  # replacements started, not ready yet

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
        self.base_info = info
        self.workers = {w.index: w for w in info.workers}
        self.restarts = dict.fromkeys(self.workers, 0)
        self._write_supervisor()
        if not self._write_info(starting=True):
            return 1
        log.info("Server ready: %d worker(s) sharing %s", len(info.workers), info.url)
        while not self.stopping.is_set():
            failure = self._supervise()
            if failure is not None:
                log.error("%s%s", FAILED_PREFIX, failure)
                return EXIT_CRASH_LOOP
            self.stopping.wait(0.1)
        log.info("Stopping %d worker(s)", len(self.children))
        return 0

    # -- supervision --

    def _supervise(self) -> str | None:
        """One round: notice deaths, start due replacements, take in ready ones. Returns the
        reason to stop the server (a crash loop), else None."""
        now = time.monotonic()
        for index, child in list(self.children.items()):
            code = child.poll()
            if code is None or index in self.restart_at:
                continue
            failure = self._on_death(index, child, code, now)
            if failure is not None:
                return failure
        for index, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[index]
                self.spawn(index)
                self.starting.add(index)
                pid = self.children[index].pid
                self.workers[index] = WorkerInfo(index, pid, None)
                log.info("Starting a replacement for worker %d (pid %d, restart %d)", index,
                         pid, self.restarts[index])
                self._write_info()
        for index in list(self.starting):
            answer = self.ready(index)
            if answer is not None and answer.worker.pid == self.children[index].pid:
                self.starting.discard(index)
                self.workers[index] = answer.worker
                log.info("Worker %d replaced: pid %d serving, resident memory %s", index,
                         answer.worker.pid, _mib(answer.worker.rss_bytes))
                self._write_info()
        return None

    def _on_death(self, index: int, child: subprocess.Popen, code: int,
                  now: float) -> str | None:
        """Log a worker's death, forget its files and schedule its replacement; the reason to
        stop instead when this death makes a crash loop."""
        how = death_text(code)
        was_starting = index in self.starting
        self.starting.discard(index)
        for path in (ready_path(self.directory, index), socket_path(self.directory, index)):
            path.unlink(missing_ok=True)  # a stale channel or ready file would look alive
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > CRASH_LOOP_WINDOW_S:
            self.deaths.popleft()
        what = "its replacement" if was_starting else "it"
        if len(self.deaths) >= CRASH_LOOP_DEATHS:
            return (f"worker {index} (pid {child.pid}) {how}; {len(self.deaths)} worker deaths "
                    f"within {CRASH_LOOP_WINDOW_S:.0f} s, a crash loop: stopping the server "
                    f"(after {sum(self.restarts.values())} restart(s); its log lines are above)")
        self.restarts[index] = self.restarts.get(index, 0) + 1
        delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** (len(self.deaths) - 1))
        self.restart_at[index] = now + delay
        log.error("Worker %d (pid %d) %s; replacing %s in %.1f s (the other workers keep "
                  "serving)", index, child.pid, how, what, delay)
        self._write_supervisor()
        self._write_info()
        return None

    def _write_supervisor(self) -> None:
        """What the workers report about their supervision (the restart metric)."""
        try:
            write_json_atomic(supervisor_path(self.directory),
                              {"restarts": {str(i): n for i, n in self.restarts.items()}})
        except OSError as exc:  # the private temp folder: only a full disk gets here
            log.warning("Could not record the worker restarts: %s", exc)

    def _write_info(self, starting: bool = False) -> bool:
        """The info file with every worker as it is now: its pid, memory, restarts and its
        state: "ready" (serving), "restarting" (dead, waiting for the backoff) or "starting"
        (the replacement loads). False when it could not be written (a failed start when
        ``starting``; later only a warning)."""
        path = self.flags["info_file"]
        if not path or self.base_info is None:
            return True
        info = self.base_info.replace(workers=tuple(self.workers[i] for i in sorted(self.workers)))
        data = info.to_json()
        for entry in data["workers"]:
            index = entry["index"]
            entry["restarts"] = self.restarts.get(index, 0)
            entry["state"] = ("restarting" if index in self.restart_at  # dead, pid is its last
                              else "starting" if index in self.starting  # the replacement's pid
                              else "ready")
        data["restarts"] = sum(self.restarts.values())
        try:
            write_json_atomic(path, data)
        except OSError as exc:
            if starting:
                log.error("Failed to start server. Error: cannot write the --info_file %s: %s",
                          path, exc.strerror or exc)
                return False
            log.warning("Could not update the --info_file %s: %s", path, exc.strerror or exc)
        return True

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


def death_text(code: int) -> str:
    """How a worker ended, from its exit status: "exited with code 1", or "was killed by
    SIGKILL" with the likely cause (the out-of-memory killer, and the memory limit if any)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    text = f"was killed by {name} (exit code {code})"
    if -code == signal.SIGKILL:
        limit = limit_text()
        text += (f": probably out of memory ({limit})" if limit
                 else ": out of memory, or killed by hand")
    return text


def limit_text() -> str:
    """The memory limit this process runs under, as text for a SIGKILL's log line ("" when
    there is none). Reads this process's cgroup (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``); server/resources.py holds the full parser."""
    limit = _cgroup_memory_limit()
    return f"the memory limit is {_mib(limit)}" if limit else ""


_NO_LIMIT = 2**60  # cgroup v1 writes a huge number for "no limit"


def _cgroup_memory_limit(root: str = "/sys/fs/cgroup", cgroup_file: str = "/proc/self/cgroup"):
    try:
        lines = Path(cgroup_file).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            candidates = [Path(root, path.lstrip("/"), "memory.max")]
        elif "memory" in controllers.split(","):
            candidates = [Path(root, "memory", path.lstrip("/"), "memory.limit_in_bytes"),
                          Path(root, "memory", "memory.limit_in_bytes")]
        else:
            continue
        for candidate in candidates:
            try:
                text = candidate.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < _NO_LIMIT:
                return int(text)
            return None
    return None


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
