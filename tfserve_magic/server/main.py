"""``python -m tfserve_magic serve``: tensorflow_model_server's flags -> a running server.

Start-up order follows TF Serving: parse flags, load every model (in parallel), and only then
open the gRPC and REST ports, so a client never sees a half-started server. Once the port is
bound the info file the process manager waits for (a ``records.ServerInfo``) is written
atomically; it is removed on exit. With ``--workers`` above 1 this process becomes the workers'
parent (server/workers.py), handed the callables it needs; each worker runs this module again.
Flags: server/flags.py; ports, pids and the parent watch: server/process.py.
"""

from __future__ import annotations

import datetime
import functools
import gc
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from tfserve_magic import owners
from tfserve_magic.records import ServerInfo, remove_info
from tfserve_magic.server.flags import FlagError, defaults, given, parse_flags, usage, worker_flags
from tfserve_magic.server.flags import check as _check
from tfserve_magic.server.peers import PeerChannel, WorkerReady, worker_context
from tfserve_magic.server.process import bind, client_url, pid_alive, watch_parent
from tfserve_magic.server.resources import Limits, read_limits
from tfserve_magic.server.sizing import plan

log = logging.getLogger("tfserve_magic.server")

# ---- logging in TF Serving's style: "2026-11-24 06:00:00.123456: I file.py:12] message" ----


class _TFStyleFormatter(logging.Formatter):
    LETTERS = {"DEBUG": "D", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}

    def format(self, record):
        when = datetime.datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S.%f")
        letter = self.LETTERS.get(record.levelname, "I")
        text = f"{when}: {letter} {record.module}.py:{record.lineno}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _LogHandler(logging.StreamHandler):
    """stderr (the server's log file) that remembers a failed write instead of printing a
    traceback per line: a full disk must not bury the log under "--- Logging error ---"."""

    error: OSError | None = None

    def handleError(self, record):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            self.error = exc
            return
        super().handleError(record)


def _setup_logging() -> _LogHandler:
    handler = _LogHandler(sys.stderr)
    handler.setFormatter(_TFStyleFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


EXIT_LOG_UNWRITABLE = 74  # EX_IOERR: the log (stderr) cannot be written


def _unwritable_info_file(path: str) -> str | None:
    """Why ``--info_file`` cannot be written (checked before anything loads), else None."""
    target = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(target)
    try:
        if os.path.isdir(target):
            return f"{target} is a folder"
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tfserve-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{exc.strerror or exc} ({exc.filename or folder})"
    return None


def _tf_threads(flags: dict, limits: Limits) -> tuple[int, int]:
    """TensorFlow's (intra-op, inter-op) pool sizes, 0 for TensorFlow's default: the flags,
    else the usable cores under a CPU quota (TensorFlow sizes its pools from the visible cores,
    which a container's quota does not hide; a 1-CPU container on a 16-core host would run 16)."""
    both = flags["tensorflow_session_parallelism"]
    quota = limits.usable_cores if limits.cpu_limited else 0
    return (flags["tensorflow_intra_op_parallelism"] or both or quota,
            flags["tensorflow_inter_op_parallelism"] or both or quota)


def _thread_flags(flags: dict, limits: Limits) -> dict:
    """``flags`` with the thread counts whose defaults follow the visible cores (REST model
    calls, gRPC) following the usable ones under a CPU quota. Workers get the parent's values
    on their command line (split over them, server/flags.py ``worker_flags``)."""
    if not limits.cpu_limited or worker_context() is not None:
        return flags
    table, changed = defaults(), dict(flags)
    for name in ("rest_api_num_threads", "grpc_max_threads"):  # default: 4 x visible cores
        if flags.get(name) == table[name]:
            changed[name] = 4 * limits.usable_cores
    return changed


def _log_resources(flags: dict, limits: Limits, count: int, reason: str) -> None:
    """The start-up line: which limits were read, and what was chosen from them."""
    intra, inter = _tf_threads(flags, limits)
    tf_threads = f"{intra or 'default'}/{inter or 'default'}"
    limited = limits.memory_limit is not None or limits.cpu_quota is not None
    if flags["workers"].strip().lower() == "auto" and count > 1:
        workers = (f"--workers=auto -> up to {count} worker(s) ({reason}; counted again with "
                   "the first worker's size)")
    else:
        workers = f"--workers={flags['workers']} -> {count} worker(s) ({reason})"
    log.info("%s: %s; %s; TF threads %s", "container limits" if limited else "resources",
             limits.describe(), workers, tf_threads)


def _configure_tensorflow(flags: dict, limits: Limits):
    from tfserve_magic.server import _no_keras

    _no_keras.install()
    import tensorflow as tf

    from tfserve_magic.server import session_config

    session_config.apply(tf, flags)  # threads, ConfigProto file, GPU fraction, XLA (issue 22)
    if limits.cpu_limited:  # pools neither the flags nor the file set follow the usable cores
        chosen = session_config.read_config(flags)
        intra, inter = _tf_threads(flags, limits)
        if not chosen.intra_op_parallelism_threads and intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if not chosen.inter_op_parallelism_threads and inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    return tf


def _refreeze() -> None:
    """Collect what an unloaded version left behind, then freeze the survivors again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class _Stopping(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
        print(usage())
        return 0
    try:
        flags = parse_flags(argv)
        if flags["version"]:
            print(_version_text())
            return 0
        _check(flags)
    except FlagError as exc:
        print(f"tfserve serve: {exc}\n(`python -m tfserve_magic serve --help` lists the flags)",
              file=sys.stderr)
        return 2
    handler = _setup_logging()
    worker = worker_context()
    log.info("Starting the model server (pid %d%s)", os.getpid(),
             f", worker {worker.index}" if worker is not None else "")
    if handler.error is not None:  # said where it may still reach someone (stdout)
        try:
            print(f"tfserve serve: cannot write the log (stderr): {handler.error}", flush=True)
        except OSError:
            pass
        return EXIT_LOG_UNWRITABLE
    try:
        tls = _read_tls(flags)
    except ValueError as exc:  # config.ConfigError: the file and the problem
        log.error("Failed to start server. Error: %s", exc)
        return 1
    info_file = flags["info_file"]
    if info_file:
        why = _unwritable_info_file(info_file)
        if why is not None:
            log.error("Failed to start server. Error: cannot write the --info_file %s: %s",
                      info_file, why)
            return 1

    def stop_during_startup(signum, frame):
        raise _Stopping()

    previous = {s: signal.signal(s, stop_during_startup) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        limits = read_limits()
        flags = _thread_flags(flags, limits)
        if worker_context() is None:
            count, reason = plan(flags["workers"])
            _log_resources(flags, limits, count, reason)
            if count > 1:
                return _run_parent(flags, argv)
        return _run(flags, argv, previous, limits, tls)
    except _Stopping:
        log.info("Stopped during start-up")
        return 0
    finally:
        if info_file:
            remove_info(info_file)


def _run_parent(flags: dict, argv: list[str]) -> int:
    """Become the parent of ``--workers`` processes, each running this module again."""
    from tfserve_magic.server import workers

    def worker_command(port: int, grpc_port: int, count: int) -> list[str]:
        return [sys.executable, "-m", "tfserve_magic", "serve", *worker_flags(
            flags, port=port, parent=os.getpid(), count=count, grpc_port=grpc_port)]

    return workers.run_parent(
        flags, argv,
        bind=lambda: _bind_rest(flags, reuse_port=True, check_free=True),
        worker_command=worker_command,
        grpc_port_given=given(argv, "port"),
        watch_owner=functools.partial(_watch_owner, flags),
    )


def _read_tls(flags: dict):
    """``--ssl_config_file`` checked before any model loads (server/tls.py), or None; the
    workers' parent checks it too, so a bad file fails the start once, by name."""
    if not flags["ssl_config_file"]:
        return None
    from tfserve_magic.server.tls import read_ssl_config

    return read_ssl_config(flags["ssl_config_file"])


def _bind_rest(flags: dict, **options):
    return bind(flags["host"], flags["rest_api_port"], max(0, flags["rest_api_port_retries"]),
                **options)


def _watch_owner(flags: dict, on_gone) -> None:
    """``--parent_pid`` (and the other owners in ``--owners_file``): ``on_gone`` once every
    owner has exited."""
    if flags["parent_pid"]:
        others = functools.partial(owners.live_owners, flags["owners_file"], pid_alive)
        watch_parent(flags["parent_pid"], on_gone, others)


def _run(flags: dict, argv: list[str], previous_handlers: dict, limits: Limits,
         tls=None) -> int:
    from tfserve_magic.server import config as cfg

    _watch_owner(flags, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        if flags["model_config_file"]:
            specs = cfg.parse_model_config(flags["model_config_file"])
        else:
            base_path = os.path.abspath(os.path.expanduser(flags["model_base_path"]))
            log.info(
                "Building single TensorFlow model file config:  model_name: %s "
                "model_base_path: %s", flags["model_name"], base_path,
            )
            specs = [cfg.model_spec_from_flags(flags["model_name"], base_path)]
        batching = None
        if flags["enable_batching"]:
            batching = cfg.parse_batching_parameters(flags["batching_parameters_file"])
        monitoring = cfg.parse_monitoring_config(flags["monitoring_config_file"])
    except cfg.ConfigError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1

    try:  # a bad session config file stops the start
        tf = _configure_tensorflow(flags, limits)
    except cfg.ConfigError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1
    from tfserve_magic.server import signature_check, warmup
    from tfserve_magic.server.grpc_server import GrpcStartError
    from tfserve_magic.server.metrics import ServerMetrics
    from tfserve_magic.server.models import ModelManager

    metrics = ServerMetrics()
    warmup.configure(flags, metrics, batching)  # replay at load, per-model batching (issue 22)
    signature_check.configure(flags)
    manager = ModelManager(
        specs,
        tags=[t.strip() for t in flags["saved_model_tags"].split(",") if t.strip()],
        poll_seconds=flags["file_system_poll_wait_seconds"],
        allow_unavailable_labels=flags["allow_version_labels_for_unavailable_models"],
        max_load_retries=max(0, flags["max_num_load_retries"]),
        load_retry_interval_s=max(0, flags["load_retry_interval_micros"]) / 1e6,
        on_change=_refreeze,
        metrics=metrics,
    )
    log.info("Adding/updating models.")
    started = time.perf_counter()
    errors = manager.initial_load(
        wait_for_versions=flags["file_system_poll_wait_seconds"] > 0,
        max_parallel=flags["num_load_threads"] or 4 * limits.usable_cores,
    )
    if errors:
        log.error(
            "Failed to start server. Error: Unknown: %d servable(s) did not become available: "
            "{%s}", len(errors), ", ".join(errors),
        )
        manager.stop()
        return 1
    log.info("All models loaded in %.2f s", time.perf_counter() - started)

    config_reloader = None
    if flags["model_config_file"] and flags["model_config_file_poll_wait_seconds"] > 0:
        path = flags["model_config_file"]

        def config_reloader():
            try:
                return cfg.parse_model_config(path)
            except cfg.ConfigError as exc:
                log.error("Config reload failed, keeping the current config: %s", exc)
                return None

    manager.start_polling(config_reloader, flags["model_config_file_poll_wait_seconds"])
    gc.freeze()  # TensorFlow leaves ~370k objects that every full collection would rescan

    try:
        sock = _bind_rest(flags, reuse_port=worker_context() is not None)
    except OSError as exc:
        log.error("Failed to start server. Error: %s", exc)
        manager.stop()
        return 1
    port = sock.getsockname()[1]
    devices = [d.name.replace("/device:", "") for d in tf.config.list_logical_devices()]
    https = tls is not None and flags["rest_api_ssl"]
    info = ServerInfo(
        pid=os.getpid(),
        host=flags["host"],
        port=port,
        url=client_url(flags["host"], port, "https" if https else "http"),
        tls=tls.info(rest=https) if tls is not None else None,
        backend="python",
        tf_version=tf.__version__,
        devices=tuple(devices),
        models=manager.snapshot(),
        argv=tuple(argv),
        parent_pid=flags["parent_pid"] or None,
        started=time.time(),
    )
    try:
        failed = _serve(flags, manager, metrics, monitoring, sock, info, previous_handlers, tls)
    except GrpcStartError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1
    finally:
        manager.stop()
        sock.close()
    log.info("Server stopped")
    return 1 if failed else 0


def _serve(flags, manager, metrics, monitoring, sock, info: ServerInfo,
           previous_handlers, tls=None) -> bool:
    """Serve until stopped; True when the start failed after the port opened (the info or
    ready file could not be written)."""
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    from tfserve_magic.server import limits as conn_limits
    from tfserve_magic.server import warmup
    from tfserve_magic.server.app import ServingApp
    from tfserve_magic.server.guard import RequestGuard

    batcher = warmup.shared_batcher()  # the one warm-up used at load (None: no batching)
    executor = ThreadPoolExecutor(
        max_workers=max(1, flags["rest_api_num_threads"]), thread_name_prefix="model-call"
    )
    worker = worker_context()
    try:
        grpc_server, info = _start_grpc(flags, manager, metrics, batcher, info, worker,
                                        credentials=tls and tls.grpc_credentials())
    except BaseException:
        if batcher is not None:
            batcher.stop()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    app = ServingApp(
        manager,
        metrics=metrics,
        monitoring_path=monitoring.path if monitoring.prometheus_enabled else None,
        cors=flags["rest_api_enable_cors_support"],
        batcher=batcher,
        timeout_s=flags["rest_api_timeout_in_ms"] / 1000.0,
        max_body_bytes=flags["rest_api_max_body_bytes"],
        executor=executor,
        guard=RequestGuard(
            bind_host=flags["host"], allowed_hosts=flags["rest_api_allowed_hosts"].split(","),
            cors=flags["rest_api_enable_cors_support"],
        ),
    )
    try:
        import uvloop

        new_loop = uvloop.new_event_loop
        loop_name = "uvloop"
    except ImportError:  # Windows
        import asyncio

        new_loop = asyncio.new_event_loop
        loop_name = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:  # pragma: no cover - a platform without its wheel
        http = "h11"
    auto_connections = conn_limits.default_max_connections()
    limits = conn_limits.Limits(
        max_header_bytes=flags["rest_api_max_header_bytes"],
        header_timeout_s=flags["rest_api_header_timeout_seconds"],
        body_timeout_s=flags["rest_api_body_timeout_seconds"],
        idle_timeout_s=flags["rest_api_idle_timeout_seconds"],
        max_connections=min(flags["rest_api_max_connections"] or auto_connections,
                            auto_connections),
    )
    log.info("Connection limits: %d connections, %d header bytes", limits.max_connections,
             limits.max_header_bytes)
    config = uvicorn.Config(
        app,
        loop="none",
        http=conn_limits.protocol_class(limits) if http == "httptools" else http,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,  # TF Serving ignores X-Forwarded-*; saves a middleware per request
        timeout_keep_alive=limits.idle_timeout_s,
        timeout_graceful_shutdown=5,
    )
    https = tls is not None and flags["rest_api_ssl"]
    if https:  # ours: TF Serving has no HTTPS
        config.load()
        config.ssl = tls.rest_context()
    server = _Server(config)
    if monitoring.prometheus_enabled:
        log.info("Prometheus metrics at %s%s", info.url, monitoring.path)
    log.info(
        "Exporting HTTP/REST API at:%s:%d ... (uvicorn, %s, %s%s)",
        flags["host"], info.port, http, loop_name,
        ", HTTPS" + (", client certificates required" if tls.client_verify else "")
        if https else "",
    )
    channel = None
    if worker is not None:  # status and metrics speak for every worker (server/peers.py)
        channel = PeerChannel.open(worker, manager, metrics)
        server.on_started = _announcer(
            server, lambda: WorkerReady.measure(worker, info).write(worker.ready_path),
            f"the worker's ready file {worker.ready_path}")
    elif flags["info_file"]:
        server.on_started = _announcer(server, functools.partial(info.write, flags["info_file"]),
                                       f"the --info_file {flags['info_file']}")
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    loop = new_loop()
    try:
        loop.run_until_complete(server.serve(sockets=[sock]))
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1)
        if channel is not None:
            channel.stop()
        if batcher is not None:
            batcher.stop()
        executor.shutdown(wait=False, cancel_futures=True)
        app.close()  # the decode processes
        loop.close()
    return server.failed


def _announcer(server, write, what: str):
    """``write`` (the file that says the server is ready) for ``on_started``: when it cannot
    be written, a one-line error and a stop instead of a traceback from inside uvicorn."""

    def announce() -> bool:
        try:
            write()
        except OSError as exc:
            log.error("Failed to start server. Error: cannot write %s: %s", what,
                      exc.strerror or exc)
            server.failed = True
            server.should_exit = True
            return False
        return True

    return announce


def _start_grpc(flags, manager, metrics, batcher, info: ServerInfo, worker=None,
                credentials=None):
    """Open the gRPC port (after the initial load, like TF Serving); returns the gRPC server
    (None when off) and ``info`` with its port.

    An explicit ``--port`` that cannot be bound stops the start; the default 8500 being taken
    (another server on this machine) only logs a warning and serves REST (docs/compatibility.md).
    Under ``--workers`` every worker binds the port the parent reserved (SO_REUSEPORT); the
    Unix socket, which cannot be shared, is served by the first worker.
    """
    from tfserve_magic.server.grpc_server import GrpcStartError, start_grpc

    explicit = given(list(info.argv), "port")
    if worker is not None and worker.index != 0:
        flags = {**flags, "grpc_socket_path": ""}
    try:
        server, port = start_grpc(flags, manager, metrics, batcher, reuse_port=worker is not None,
                                  credentials=credentials)
    except GrpcStartError as exc:
        if explicit or flags["grpc_socket_path"]:
            raise
        log.warning("%s; serving REST only (pass --port=0 for a free gRPC port)", exc)
        return None, info
    socket_path = flags["grpc_socket_path"]
    return server, info.replace(grpc_port=port,
                                grpc_socket_path=os.path.abspath(socket_path) if socket_path
                                else None)


try:
    import uvicorn as _uvicorn

    _ServerBase = _uvicorn.Server
except ImportError:  # pragma: no cover - uvicorn is a dependency
    _ServerBase = object


class _Server(_ServerBase):
    """uvicorn's Server without re-raising the stop signal after shutdown (we exit cleanly)."""

    on_started = None
    failed = False

    @contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None and self.on_started():
            log.info("Server ready")


def _version_text() -> str:
    from importlib import metadata

    try:
        ours = metadata.version("tfserve-magic")
    except metadata.PackageNotFoundError:
        ours = "unknown"
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "unknown"
    return f"TensorFlow ModelServer: {ours}+tfserve_magic\nTensorFlow Library: {tf_version}"
