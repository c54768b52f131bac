"""``python -m tfserve_magic serve``: tensorflow_model_server's flags -> a running server.

Start-up order follows TF Serving: parse flags, load every model (in parallel), and only then
open the gRPC and REST ports, so a client never sees a half-started server. Once the port is bound the
info file the process manager waits for is written atomically; it is removed on exit.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("tfserve_magic.server")

_CPUS = os.cpu_count() or 1


@dataclass
class Flag:
    kind: type
    default: object
    help: str


# tensorflow_model_server's flags we implement (same names and defaults), then our additions.
FLAGS: dict[str, Flag] = {
    "port": Flag(int, 8500, "gRPC port (0 picks a free port, -1 serves no gRPC over TCP)"),
    "grpc_socket_path": Flag(str, "", "also serve gRPC on this Unix socket"),
    "grpc_max_threads": Flag(int, 4 * _CPUS, "threads of the gRPC server"),
    "grpc_channel_arguments": Flag(str, "", "gRPC server options: key=value,key=value"),
    "enable_grpc_healthcheck_service": Flag(bool, False, "serve grpc.health.v1.Health"),
    "rest_api_port": Flag(
        int, 0, "HTTP/REST port; 0 picks a free port (TF Serving: 0 disables REST)"
    ),
    "rest_api_num_threads": Flag(int, 4 * _CPUS, "threads for model calls too slow to run inline"),
    "rest_api_timeout_in_ms": Flag(int, 30000, "timeout of predict/classify/regress (504)"),
    "rest_api_enable_cors_support": Flag(bool, False, "add CORS headers to every /v1 response"),
    "model_name": Flag(str, "default", "model name (single-model mode)"),
    "model_base_path": Flag(str, "", "folder holding numeric version folders (single model)"),
    "model_config_file": Flag(str, "", "text ModelServerConfig; overrides the two flags above"),
    "model_config_file_poll_wait_seconds": Flag(
        float, 0, "re-read --model_config_file every N seconds (0: once; fractions allowed)"
    ),
    "file_system_poll_wait_seconds": Flag(
        float, 1, "poll base paths every N seconds (0: once, <0: never; fractions allowed)"
    ),
    "allow_version_labels_for_unavailable_models": Flag(
        bool, False, "allow new labels to point at versions that are not loaded yet"
    ),
    "enable_batching": Flag(bool, False, "merge concurrent predict requests into batches"),
    "batching_parameters_file": Flag(str, "", "text BatchingParameters (needs --enable_batching)"),
    "monitoring_config_file": Flag(str, "", "text MonitoringConfig (Prometheus endpoint)"),
    "tensorflow_session_parallelism": Flag(int, 0, "intra- and inter-op threads (0: auto)"),
    "tensorflow_intra_op_parallelism": Flag(int, 0, "intra-op threads (0: auto)"),
    "tensorflow_inter_op_parallelism": Flag(int, 0, "inter-op threads (0: auto)"),
    "saved_model_tags": Flag(str, "serve", "comma-separated MetaGraphDef tag set to load"),
    "max_num_load_retries": Flag(
        int, 0, "retries of a failed version load (TF Serving: 5; see docs/compatibility.md)"
    ),
    "load_retry_interval_micros": Flag(int, 60_000_000, "wait between load retries"),
    "num_load_threads": Flag(int, 0, "models loaded in parallel at start-up (0: 4 x CPUs)"),
    "version": Flag(bool, False, "print the versions and exit"),
    # [issue 22 hook] begin: TF Serving's session and warm-up flags (server/warmup.py,
    # server/session_config.py, server/signature_check.py, server/batching_per_model.py)
    "enable_model_warmup": Flag(
        bool, True, "replay <version>/assets.extra/tf_serving_warmup_requests at load"
    ),
    "num_request_iterations_for_warmup": Flag(
        int, 0, "times each warm-up record is replayed (used only if > 0; otherwise once)"
    ),
    "enable_per_model_batching_parameters": Flag(
        bool, False, "with --enable_batching: batch a version by its batching_params.pbtxt "
        "(versions without one are not batched)"
    ),
    "tensorflow_session_config_file": Flag(
        str, "", "text ConfigProto (threads, soft placement, GPU options); thread and GPU "
        "fraction flags override it"
    ),
    "per_process_gpu_memory_fraction": Flag(
        float, 0.0, "per-GPU memory limit as a fraction of its memory (0: TensorFlow's choice)"
    ),
    "xla_cpu_compilation_enabled": Flag(bool, False, "allow XLA:CPU JIT (global_jit_level)"),
    "xla_gpu_compilation_enabled": Flag(bool, False, "allow XLA JIT on CPU and GPU"),
    "enable_signature_method_name_check": Flag(
        bool, False, "check that a signature's method_name fits the API called"
    ),
    "ssl_config_file": Flag(
        str, "", "text SSLConfig (PEM key, certificate, client CA, client_verify): TLS for gRPC"
    ),
    # [issue 22 hook] end
    # Our additions (docs/compatibility.md).
    "host": Flag(str, "127.0.0.1", "bind address (TF Serving binds all interfaces)"),
    "rest_api_port_retries": Flag(int, 0, "if the REST port is taken, try the next N ports"),
    "rest_api_max_body_bytes": Flag(
        int, 1 << 30, "largest request body accepted, after gunzip (413 above it)"
    ),
    "info_file": Flag(str, "", "write the server info JSON here once ready; removed on exit"),
    "parent_pid": Flag(int, 0, "exit when this process is gone"),
    "workers": Flag(
        str, "auto", "server processes sharing the port: N, or auto (one per usable core, "
        "as many as the memory holds); see server/workers.py"
    ),
    # Hardening (docs/compatibility.md, "Limits"); implemented in limits.py and guard.py.
    "owners_file": Flag(
        str, "", "with --parent_pid: also stay while a pid listed in this file lives"
    ),
    "rest_api_max_header_bytes": Flag(int, 64 * 1024, "largest request header block (431)"),
    "rest_api_header_timeout_seconds": Flag(float, 30, "time to send a request's headers (408)"),
    "rest_api_body_timeout_seconds": Flag(float, 60, "longest pause inside a request body (408)"),
    "rest_api_idle_timeout_seconds": Flag(float, 75, "close connections idle this long"),
    "rest_api_max_connections": Flag(
        int, 0, "open connections (503 beyond; 0: the descriptor limit minus a reserve)"
    ),
    "rest_api_allowed_hosts": Flag(
        str, "", "extra Host names answered when bound to loopback (comma-separated; * any)"
    ),
    "rest_api_enable_ssl": Flag(  # [issue 22 hook] server/tls.py
        bool, False, "also serve REST over HTTPS with --ssl_config_file (client_verify applies)"
    ),
}
OUR_FLAGS = ("host", "rest_api_port_retries", "rest_api_max_body_bytes", "info_file", "parent_pid",
             "workers", "owners_file", "rest_api_max_header_bytes",
             "rest_api_header_timeout_seconds", "rest_api_body_timeout_seconds",
             "rest_api_idle_timeout_seconds", "rest_api_max_connections", "rest_api_allowed_hosts",
             "rest_api_enable_ssl")  # [issue 22 hook] the last entry

# tensorflow_model_server flags this server refuses by name rather than silently ignoring.
UNSUPPORTED = {
    "use_alts_credentials": "gRPC is served without ALTS",
    "platform_config_file": "platform config files are not supported",
    "num_unload_threads": "unloads happen on the poll thread",
    "flush_filesystem_caches": "not applicable",
    "enable_profiler": "the profiler service is not served",
    "remove_unused_fields_from_bundle_metagraph": "not applicable",
    "prefer_tflite_model": "TF Lite models are not served",
    "num_tflite_pools": "TF Lite models are not served",
    "num_tflite_interpreters_per_pool": "TF Lite models are not served",
    "mixed_precision": "mixed precision is not supported",
    "thread_pool_factory_config_file": "not supported",
    "enable_serialization_as_tensor_content": "gRPC responses always use the typed fields",
}


class FlagError(ValueError):
    pass


def usage() -> str:
    lines = [
        "usage: python -m tfserve_magic serve --model_base_path=PATH [--model_name=NAME] "
        "[--rest_api_port=8501] [flags]",
        "       python -m tfserve_magic serve --model_config_file=FILE [flags]",
        "",
        "tensorflow_model_server's flags (--flag=value or --flag value):",
    ]
    for name, flag in FLAGS.items():
        if name == "host":
            lines += ["", "tfserve_magic's own flags:"]
        lines.append(f"  --{name:<46} {flag.help} (default: {flag.default!r})")
    return "\n".join(lines)


def _convert(name: str, kind: type, text: str):
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise FlagError(f"Invalid value for --{name}: {text!r} (expected true or false)")
    if kind is int:
        try:
            return int(text, 10)
        except ValueError:
            raise FlagError(f"Invalid value for --{name}: {text!r} (expected an integer)") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise FlagError(f"Invalid value for --{name}: {text!r} (expected a number)") from None
    return text


def parse_flags(argv: list[str]) -> dict:
    """``--flag=value`` and ``--flag value`` (bool flags: ``--flag`` or ``--flag=false``)."""
    values = {name: flag.default for name, flag in FLAGS.items()}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"Unexpected argument {arg!r}: every option is a --flag")
        name, sep, value = arg.lstrip("-").partition("=")
        if name in UNSUPPORTED:
            raise FlagError(
                f"--{name} is a tensorflow_model_server flag that this server does not support "
                f"({UNSUPPORTED[name]})"
            )
        flag = FLAGS.get(name)
        if flag is None:
            raise FlagError(f"Unknown flag --{name}")
        if not sep:
            if flag.kind is bool:
                values[name] = True
                continue
            if i >= len(argv):
                raise FlagError(f"Flag --{name} needs a value")
            value = argv[i]
            i += 1
        values[name] = _convert(name, flag.kind, value)
    return values


def _check(flags: dict) -> None:
    if not flags["model_base_path"] and not flags["model_config_file"]:
        raise FlagError(
            "Both --model_base_path and --model_config_file are empty: give one of them"
        )
    if flags["batching_parameters_file"] and not flags["enable_batching"]:
        raise FlagError("--batching_parameters_file is set but --enable_batching is not")
    if all(
        flags[k]
        for k in (
            "tensorflow_session_parallelism",
            "tensorflow_intra_op_parallelism",
            "tensorflow_inter_op_parallelism",
        )
    ):
        raise FlagError(
            "Setting --tensorflow_session_parallelism together with both "
            "--tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism is an error"
        )
    if flags["rest_api_port"] and flags["rest_api_port"] == flags["port"]:
        raise FlagError(
            f"--rest_api_port and --port must differ (both are {flags['port']}); "
            "TF Serving would not serve REST at all"
        )
    if not 0 <= flags["rest_api_port"] <= 65535:
        raise FlagError(f"--rest_api_port must be between 0 and 65535, not {flags['rest_api_port']}")
    for item in flags["grpc_channel_arguments"].split(","):
        if item.strip() and "=" not in item:
            raise FlagError(f"--grpc_channel_arguments: {item.strip()!r} is not key=value")
    if not -1 <= flags["port"] <= 65535:
        raise FlagError(f"--port must be between -1 and 65535, not {flags['port']}")
    if flags["rest_api_max_body_bytes"] <= 0:
        raise FlagError("--rest_api_max_body_bytes must be positive")
    from tfserve_magic.server.workers import parse_workers

    try:
        parse_workers(flags["workers"])
    except ValueError as exc:
        raise FlagError(str(exc)) from None
    for name in ("rest_api_max_header_bytes", "rest_api_header_timeout_seconds",
                 "rest_api_body_timeout_seconds", "rest_api_idle_timeout_seconds"):
        if flags[name] <= 0:
            raise FlagError(f"--{name} must be positive")
    if flags["rest_api_max_connections"] < 0:
        raise FlagError("--rest_api_max_connections must be 0 (automatic) or positive")


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


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TFStyleFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


# ---- start-up helpers ----


def _bind(host: str, port: int, retries: int, *, reuse_port: bool = False,
          check_free: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error = None
    for candidate in range(port, port + retries + 1) if port else [0]:
        if check_free and candidate and not _port_free(family, host, candidate):
            # SO_REUSEPORT would join another server's port (same user) instead of failing
            last_error = OSError(98, "Address already in use")
            log.warning("Cannot bind %s:%d: Address already in use", host, candidate)
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # --workers: every worker binds the same port (server/workers.py)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            last_error = exc
            log.warning("Cannot bind %s:%d: %s", host, candidate, exc.strerror or exc)
            continue
        sock.listen(2048)
        sock.setblocking(False)
        return sock
    tried = f"ports {port}-{port + retries}" if retries else f"port {port}"
    raise OSError(f"Could not bind the REST API to {host} ({tried}): {last_error}")


def _port_free(family, host: str, port: int) -> bool:
    """Whether a plain socket (no SO_REUSEPORT) could bind ``port``: taken by any listener."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _client_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _write_info(path: str, info: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    os.replace(tmp, path)


def _remove_info(path: str) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            owner = json.load(fh).get("pid")
    except (OSError, ValueError):
        return
    if owner == os.getpid():
        try:
            os.remove(path)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(pid: int, on_gone, owners_file: str = "") -> None:
    """Call ``on_gone`` once ``pid`` has exited (a daemon thread polling twice a second), and
    every other owner listed in ``owners_file`` (kernels reusing this server) too."""
    from tfserve_magic import owners

    was_parent = os.getppid() == pid

    def watch():
        nonlocal pid, was_parent
        while True:
            if not _pid_alive(pid) or (was_parent and os.getppid() != pid):
                others = owners.live_owners(owners_file, _pid_alive, exclude=pid)
                if others:
                    log.info("Owner %d is gone; staying for owner(s) %s", pid, others)
                    pid, was_parent = others[0], False
                    continue
                log.info("Parent process %d is gone; shutting down", pid)
                on_gone()
                return
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _configure_tensorflow(flags: dict):
    from tfserve_magic.server import _no_keras

    _no_keras.install()
    import tensorflow as tf

    from tfserve_magic.server import session_config  # [issue 22 hook]

    session_config.apply(tf, flags)  # [issue 22 hook] threads, ConfigProto file, GPU, XLA
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
    _setup_logging()
    info_file = flags["info_file"]

    def stop_during_startup(signum, frame):
        raise _Stopping()

    previous = {s: signal.signal(s, stop_during_startup) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        from tfserve_magic.server import workers

        if workers.worker_context() is None and workers.planned_count(flags) > 1:
            return workers.run_parent(
                flags, {name: flag.default for name, flag in FLAGS.items()}, argv,
                lambda: _bind(flags["host"], flags["rest_api_port"],
                              max(0, flags["rest_api_port_retries"]), reuse_port=True,
                              check_free=True),
            )
        return _run(flags, argv, previous)
    except _Stopping:
        log.info("Stopped during start-up")
        return 0
    finally:
        if info_file:
            _remove_info(info_file)


def _run(flags: dict, argv: list[str], previous_handlers: dict) -> int:
    from tfserve_magic.server import config as cfg

    if flags["parent_pid"]:
        _watch_parent(flags["parent_pid"], lambda: os.kill(os.getpid(), signal.SIGTERM),
                      flags["owners_file"])
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
        if flags["ssl_config_file"]:  # [issue 22 hook] a bad SSL config stops the start
            from tfserve_magic.server import tls

            tls.read_ssl_config(flags["ssl_config_file"])
            rest_ssl = tls.rest_ssl_options(flags)
        elif flags["rest_api_enable_ssl"]:
            raise cfg.ConfigError("--rest_api_enable_ssl needs --ssl_config_file")
        else:
            rest_ssl = {}
    except cfg.ConfigError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1

    try:  # [issue 22 hook] a bad session config file stops the start
        tf = _configure_tensorflow(flags)
    except cfg.ConfigError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1
    from tfserve_magic.server.grpc_server import GrpcStartError
    from tfserve_magic.server.metrics import ServerMetrics
    from tfserve_magic.server.models import ModelManager

    metrics = ServerMetrics()
    from tfserve_magic.server import signature_check, warmup  # [issue 22 hook]

    warmup.configure(flags, metrics, batching)  # [issue 22 hook]
    signature_check.configure(flags)  # [issue 22 hook]
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
        max_parallel=flags["num_load_threads"] or 4 * _CPUS,
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

    from tfserve_magic.server.workers import worker_context

    try:
        sock = _bind(flags["host"], flags["rest_api_port"], max(0, flags["rest_api_port_retries"]),
                     reuse_port=worker_context() is not None)
    except OSError as exc:
        log.error("Failed to start server. Error: %s", exc)
        manager.stop()
        return 1
    port = sock.getsockname()[1]
    devices = [d.name.replace("/device:", "") for d in tf.config.list_logical_devices()]
    info = {
        "format": 1,
        "pid": os.getpid(),
        "host": flags["host"],
        "port": port,
        "grpc_port": None,
        "url": _client_url(flags["host"], port),
        "backend": "python",
        "tf_version": tf.__version__,
        "devices": devices,
        "models": manager.snapshot(),
        "argv": argv,
        "parent_pid": flags["parent_pid"] or None,
        "started": time.time(),
    }
    from tfserve_magic.server import tls  # [issue 22 hook]

    info["url"] = tls.rest_url(info["url"], flags)  # [issue 22 hook] https:// with TLS
    flags = {**flags, "_rest_ssl": rest_ssl}  # [issue 22 hook] read by _serve
    try:
        _serve(flags, manager, metrics, monitoring, batching, sock, info, previous_handlers)
    except GrpcStartError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1
    finally:
        manager.stop()
        sock.close()
    log.info("Server stopped")
    return 0


def _serve(flags, manager, metrics, monitoring, batching, sock, info, previous_handlers) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    from tfserve_magic.server import limits as conn_limits
    from tfserve_magic.server import warmup  # [issue 22 hook]
    from tfserve_magic.server.app import ServingApp
    from tfserve_magic.server.guard import RequestGuard

    batcher = warmup.shared_batcher()  # [issue 22 hook] the one warm-up used (None: no batching)
    executor = ThreadPoolExecutor(
        max_workers=max(1, flags["rest_api_num_threads"]), thread_name_prefix="model-call"
    )
    from tfserve_magic.server.workers import worker_context

    worker = worker_context()
    try:
        grpc_server = _start_grpc(flags, manager, metrics, batcher, info, worker)
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
        **flags.get("_rest_ssl", {}),  # [issue 22 hook] --rest_api_enable_ssl
    )
    server = _Server(config)
    if monitoring.prometheus_enabled:
        log.info("Prometheus metrics at %s%s", info["url"], monitoring.path)
    log.info(
        "Exporting HTTP/REST API at:%s:%d ... (uvicorn, %s, %s)",
        flags["host"], info["port"], http, loop_name,
    )
    info_file = flags["info_file"]
    server.on_started = (lambda: _write_info(info_file, info)) if info_file else None
    channel = _worker_channel(worker, manager, metrics)
    if worker is not None:
        from tfserve_magic.server.workers import write_ready

        server.on_started = lambda: write_ready(worker, info)
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


def _start_grpc(flags, manager, metrics, batcher, info, worker=None):
    """Open the gRPC port (after the initial load, like TF Serving) and note it in the info.

    An explicit ``--port`` that cannot be bound stops the start; the default 8500 being taken
    (another server on this machine) only logs a warning and serves REST (docs/compatibility.md).
    Under ``--workers`` every worker binds the port the parent reserved (SO_REUSEPORT); the
    Unix socket, which cannot be shared, is served by the first worker.
    """
    from tfserve_magic.server.grpc_server import GrpcStartError, start_grpc

    explicit = _port_given(info["argv"])
    if worker is not None and worker.index != 0:
        flags = {**flags, "grpc_socket_path": ""}
    try:
        server, port = start_grpc(flags, manager, metrics, batcher, reuse_port=worker is not None)
    except GrpcStartError as exc:
        if explicit or flags["grpc_socket_path"]:
            raise
        log.warning("%s; serving REST only (pass --port=0 for a free gRPC port)", exc)
        return None
    info["grpc_port"] = port
    if flags["grpc_socket_path"]:
        info["grpc_socket_path"] = os.path.abspath(flags["grpc_socket_path"])
    return server


def _port_given(argv: list[str]) -> bool:
    """Whether ``--port`` (gRPC) was given on the command line rather than defaulted."""
    return any(a.lstrip("-").split("=")[0] == "port" for a in argv)


def _worker_channel(context, manager, metrics):
    """In a ``--workers`` child: open the peer channel so status and metrics speak for every
    worker (server/workers.py). Returns the channel, or None outside a worker."""
    from tfserve_magic.server.workers import PeerChannel

    if context is None:
        return None
    channel = PeerChannel(context, manager, metrics)
    channel.start()
    channel.install()
    return channel


try:
    import uvicorn as _uvicorn

    _ServerBase = _uvicorn.Server
except ImportError:  # pragma: no cover - uvicorn is a dependency
    _ServerBase = object


class _Server(_ServerBase):
    """uvicorn's Server without re-raising the stop signal after shutdown (we exit cleanly)."""

    on_started = None

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
        if self.started and self.on_started is not None:
            self.on_started()
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
