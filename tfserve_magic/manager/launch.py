"""Launching a server process and waiting until it serves, and the rules that decide whether a
running server answers a new start request (reuse) or what differs from it (in words)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfserve_magic import gpu as gpu_policy
from tfserve_magic import owners
from tfserve_magic.manager import logfiles
from tfserve_magic.manager.control import register_atexit, terminate
from tfserve_magic.manager.rest import live_models, requires_client_certificate
from tfserve_magic.manager.results import Failed, Launched, StartError, TimedOut
from tfserve_magic.manager.spec import MODEL_SERVER_BINARY, Spec
from tfserve_magic.manager.state import handle_for, log_path, owners_path, remove_files, save
from tfserve_magic.records import ServerRecord, read_info
from tfserve_magic.registry import info_path
from tfserve_magic.server.process import children, write_atomic

# Environment variables a kernel may carry that must not leak into the child's interpreter.
_ENV_DENYLIST = ("PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONHOME")
# The folder that holds the tfserve_magic package the kernel runs (the child runs the same).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class Request:
    """A checked start request: the options ``start`` was given, normalised."""

    port: int
    port_retries: int
    host: str
    grpc_port: int | None
    gpu: str  # as asked ("auto", "none", "0,1")
    gpu_plan: gpu_policy.GpuPlan
    poll: float | None
    detach: bool
    timeout: float
    extra_args: tuple
    workers: str


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
        parts = [_PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def _command(spec: Spec, request: Request, info_file: Path, owners_file: Path):
    """(argv, pid-recycling guard, REST port for the binary, its gRPC port)."""
    models_flags = (
        [f"--model_config_file={spec.served_config}"]
        if spec.served_config
        else [f"--model_name={spec.name}", f"--model_base_path={spec.base_path}"]
    )
    grpc_port = request.grpc_port
    if spec.backend == "python":
        argv = [sys.executable, "-m", "tfserve_magic", "serve", *models_flags,
                f"--rest_api_port={request.port}", f"--rest_api_port_retries={request.port_retries}",
                f"--host={request.host}", f"--info_file={info_file}",
                f"--workers={request.workers}",
                f"--port={grpc_port if grpc_port is not None else 0}"]  # 0: a free port
        if not request.detach:
            argv += [f"--parent_pid={os.getpid()}", f"--owners_file={owners_file}"]
        expect = ["tfserve_magic"]
        rest_port = None
    else:
        rest_port = _free_port(request.port, request.port_retries)
        grpc_port = grpc_port if grpc_port is not None else _free_port(0, 0)
        argv = [spec.binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}", *models_flags]
        if not request.detach:  # the real binary cannot watch the kernel: a small supervisor does
            argv = [sys.executable, "-m", "tfserve_magic.manager", "supervise",
                    str(os.getpid()), f"--owners_file={owners_file}", "--", *argv]
        expect = [os.path.basename(spec.binary or MODEL_SERVER_BINARY), "tfserve_magic"]
    if request.poll is not None:
        argv.append(f"--file_system_poll_wait_seconds={_seconds_flag(request.poll, spec.backend)}")
    if not any(a.split("=", 1)[0] == "--monitoring_config_file" for a in request.extra_args):
        # servers started from a notebook serve their Prometheus metrics (%tfserve monitor)
        argv.append(f"--monitoring_config_file={_monitoring_config(info_file)}")
    return argv + list(request.extra_args), expect, rest_port, grpc_port


MONITORING_CONFIG = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'


def _monitoring_config(info_file: Path) -> Path:
    """A MonitoringConfig that turns on TF Serving's Prometheus endpoint, beside the info file."""
    path = info_file.with_name(info_file.name.replace(".info.json", "") + ".monitoring.pbtxt")
    write_atomic(path, MONITORING_CONFIG)
    return path


def launch(spec: Spec, request: Request,
           progress: Callable[[str], None]) -> Launched | Failed | TimedOut:
    """Start the server process, record it, and wait until it serves (or fails, or times out)."""
    name = spec.name
    log_file, info_file, owners_file = log_path(name), info_path(name), owners_path(name)
    for stale in (info_file, owners_file):
        if stale.exists():
            stale.unlink()
    if not request.detach:
        owners.write(owners_file, [os.getpid()])
    argv, expect, rest_port, grpc_port = _command(spec, request, info_file, owners_file)

    logfiles.rotate(log_file)
    label = request.gpu_plan.label
    progress(f"Starting {name} on {label} ...")
    with open(log_file, "ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_child_env(request.gpu_plan.env, spec.backend), cwd=os.getcwd(),
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            return Failed(f"could not run {argv[0]}: {exc}", None, "", str(log_file))
    children[proc.pid] = proc
    record = ServerRecord(
        name=name, pid=proc.pid, owner_pid=os.getpid(), detach=request.detach,
        backend=spec.backend, key=spec.key, host=request.host, grpc_port=grpc_port,
        log_path=str(log_file),
        info_path=str(info_file) if spec.backend == "python" else None,
        owners_path=None if request.detach else str(owners_file),
        base_path=spec.base_path, config=spec.config, models=tuple(spec.models),
        devices=(label,) if label != "default devices" else (), expect=tuple(expect),
        argv=tuple(argv), started=time.time(), gpu=request.gpu, poll=request.poll,
        workers=request.workers, extra_args=request.extra_args,
        port_retries=request.port_retries, timeout=request.timeout,
    )
    save(record)
    if not request.detach:
        register_atexit()
    try:
        return _wait_ready(spec, proc, record, rest_port, request.timeout, label, progress)
    except BaseException:  # Ctrl-C (or a failing progress display) while waiting: no orphan
        terminate(record, timeout=5.0)
        remove_files(record)
        raise


def _ready_models(spec: Spec, record: ServerRecord, rest_port: int | None):
    """model -> AVAILABLE versions once every model has one, else None."""
    if spec.backend == "python":
        info = read_info(record.info_path)
        if info is None:
            return None
        if requires_client_certificate(info.tls):
            # HTTPS with client_verify and no client certificate here to ask with: the info
            # file itself says ready (written once every model's first version is AVAILABLE)
            live = {name: entry.get("versions", []) for name, entry in info.models.items()}
        else:
            live = live_models(info.connect_url, list(info.models or spec.models), timeout=2.0)
    else:
        live = live_models(f"http://127.0.0.1:{rest_port}", spec.models, timeout=1.0)
    return live if live and all(live.values()) else None


def _wait_ready(spec, proc, record: ServerRecord, rest_port, timeout, label, progress):
    """Poll until the child exits (Failed), its models are AVAILABLE (Launched), or time is up."""
    log_file = Path(record.log_path)
    t0 = time.monotonic()
    next_tick = t0 + 1.0
    while True:
        code = proc.poll()
        if code is not None:
            children.pop(proc.pid, None)
            remove_files(record)
            log_tail = logfiles.error_tail(log_file)
            return Failed(logfiles.failure_reason(spec.name, code, log_tail), code, log_tail,
                          str(log_file))
        ready = _ready_models(spec, record, rest_port)
        if ready is not None:
            if spec.backend != "python":  # the binary binds every interface, writes no info
                record = record.replace(port=rest_port, host="0.0.0.0")
            record = record.replace(state="ready")
            save(record)
            handle = handle_for(record)
            handle.models = ready
            return Launched(handle)
        now = time.monotonic()
        if now - t0 > timeout:
            log_tail = logfiles.error_tail(log_file)
            terminate(record, timeout=5.0)
            remove_files(record)
            return TimedOut(proc.pid, log_tail, str(log_file), timeout)
        if now >= next_tick:
            progress(f"Starting {spec.name} on {label} ... {int(now - t0)}s")
            next_tick = now + 1.0
        time.sleep(0.1)


# ---------------------------------------------------------------------------- reuse rules
_KEY_WORDS = {"base_path": "base path", "config": "config file", "config_sha256": "config text",
              "port_retries": "port choice (--port given or not)", "extra_args": "server flags",
              "workers": "workers", "gpu_env": "gpu", "binary": "backend"}
_SHOWN_KEYS = ("base_path", "port", "host", "gpu", "detach", "backend", "poll", "grpc_port",
               "workers")


def same_start(old, new: dict, running_port: int) -> bool:
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


def key_difference(old, new: dict) -> str:
    """What differs between a running server's start options and a new request's, in words."""
    new = json.loads(json.dumps(new))
    old = old if isinstance(old, dict) else {}
    changed = [k for k in new if k != "name" and old.get(k) != new[k]]
    words = list(dict.fromkeys(_KEY_WORDS.get(k, k.replace("_", " ")) for k in changed))
    if not words:
        return "base path or options"
    details = [f"{key} {old.get(key)!r} now {new[key]!r}"
               for key in changed[:3] if key in _SHOWN_KEYS]
    return ", ".join(words) + (f" ({'; '.join(details)})" if details else "")
