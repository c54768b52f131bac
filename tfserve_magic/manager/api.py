"""The manager's functions: start (or reuse), stop, list, status and logs of this user's servers.

``start_result`` holds start's options and their defaults (one place); ``start`` takes the same
options and raises ``StartError`` where ``start_result`` returns a failure.
"""

from __future__ import annotations

import inspect
import os
import threading
import urllib.error
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from tfserve_magic import gpu as gpu_policy
from tfserve_magic.manager import logfiles, results
from tfserve_magic.manager.control import NameLock, adopt, orphaned, terminate, terminate_all
from tfserve_magic.manager.handle import ServerHandle
from tfserve_magic.manager.launch import Request, key_difference, launch, same_start
from tfserve_magic.manager.rest import model_status
from tfserve_magic.manager.results import GpuMemoryWarning, Launched, Reused, StartError
from tfserve_magic.manager.spec import MODEL_SERVER_BINARY, NAME_RE, resolve
from tfserve_magic.manager.state import (
    failures,
    handle_for,
    live_records,
    log_path,
    record_for,
    remove_files,
)
from tfserve_magic.manager.views import ServerTable
from tfserve_magic.records import ServerRecord
from tfserve_magic.registry import all_records, state_dir
from tfserve_magic.server.resources import check_headroom

DEFAULT_PORT_RETRIES = 100
_lock = threading.Lock()


def default_workers() -> str:
    """``%tfserve start``'s worker count: one process in a small container or machine (Binder:
    1-2 GB, a core or two, whatever the host has), else ``auto`` (one per usable core, as many
    as the free memory holds). Reads the container's cgroup limits (server/resources.py)."""
    from tfserve_magic.server.sizing import default_workers_text

    return default_workers_text()[0]


def start_result(
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
) -> Launched | Reused | results.Failed | results.TimedOut:
    """``start`` as a typed result (Launched, Reused, Failed, TimedOut) instead of raising.

    Invalid arguments still raise ``StartError`` (and an unknown option ``TypeError``).
    """
    request = _request(port, port_retries, host, grpc_port, gpu, poll, detach, timeout,
                       extra_args, workers)
    progress = progress or (lambda text: None)
    key_options = {
        "port": request.port, "port_retries": request.port_retries, "host": request.host,
        "grpc_port": request.grpc_port,
        # normalised, so the magic's defaults and the function's defaults give the same key
        "gpu": gpu_policy.parse_request(gpu), "gpu_env": request.gpu_plan.env,
        "poll": 1.0 if poll is None else float(poll),  # TF Serving's default poll interval
        "detach": request.detach, "extra_args": list(request.extra_args),
        "workers": request.workers,
    }
    spec = resolve(name, None if base_path is None else os.fspath(base_path),
                   None if config is None else os.fspath(config), backend or "auto", key_options)
    if spec.backend != "python" and request.host not in ("127.0.0.1", "0.0.0.0", "localhost"):
        raise StartError(f"{MODEL_SERVER_BINARY} binds every interface; --host {request.host} "
                         "needs --backend python")
    with _lock, NameLock(spec.name):
        existing = next((r for r in live_records() if r.name == spec.name), None)
        if existing is not None:
            reused = _reuse_or_stop(existing, spec, restart, progress)
            if reused is not None:
                return reused
        for warning in request.gpu_plan.warnings:
            warnings.warn(warning, GpuMemoryWarning, stacklevel=3)
        shortage = check_headroom()  # rather than let the out-of-memory killer pick the kernel
        if shortage:
            raise StartError(shortage)
        return launch(spec, request, progress)


def _request(port, port_retries, host, grpc_port, gpu, poll, detach, timeout, extra_args,
             workers) -> Request:
    """start's options checked and normalised (StartError says what is wrong)."""
    from tfserve_magic.server.sizing import parse_workers

    port, port_retries, timeout = int(port), int(port_retries), float(timeout)
    workers = str(workers or default_workers()).strip().lower()
    try:
        parse_workers(workers)
    except ValueError as exc:
        raise StartError(str(exc)) from None
    if not 0 <= port <= 65535 or (grpc_port is not None and not 0 < grpc_port <= 65535):
        raise StartError("ports must be between 1 and 65535 (0: any free REST port)")
    if timeout <= 0:
        raise StartError("the start timeout must be positive")
    try:
        gpu_plan = gpu_policy.plan(gpu)
    except ValueError as exc:
        raise StartError(str(exc)) from None
    return Request(
        port=port, port_retries=port_retries, host=host or "127.0.0.1", grpc_port=grpc_port,
        gpu="auto" if gpu is None else str(gpu), gpu_plan=gpu_plan, poll=poll,
        detach=bool(detach), timeout=timeout, extra_args=tuple(str(a) for a in extra_args),
        workers=workers,
    )


def _reuse_or_stop(existing: ServerRecord, spec, restart: bool, progress) -> Reused | None:
    """Reuse the running server ``existing`` if it answers the request as asked; else stop it
    (restart, not answering, or its owner gone), or say why not (other options: StartError)."""
    handle = handle_for(existing, refresh=True)
    same = same_start(existing.key, spec.key, handle.port)
    gone_owner = orphaned(existing)
    if gone_owner:  # its kernel is gone: it is about to exit, never reuse it
        same, restart = True, True
    if same and not restart and handle.healthy and all(handle.models.values()):
        handle.reused = True
        adopt(existing)  # it is ours too now
        return Reused(handle)
    if not same and not restart:
        raise StartError(
            f"a server named {spec.name!r} is already running (pid {existing.pid}, "
            f"{existing.config or existing.base_path}) with other start options: "
            f"{key_difference(existing.key, spec.key)}; pass --restart (restart=True) to "
            f"replace it, or stop it with %tfserve stop {spec.name}"
        )
    why = ("its owner is gone; restarting" if gone_owner else
           "restarting" if restart else "not answering; restarting")
    progress(f"{spec.name} (pid {existing.pid}) {why} ...")
    terminate(existing, timeout=10.0)
    remove_files(existing)
    return None


def start(name, base_path=None, **options) -> ServerHandle:
    """Start a server for ``name`` at ``base_path`` (or ``config``), or reuse an identical one.

    Returns once every model has an AVAILABLE version. ``port`` is the first REST port tried
    (the next ``port_retries`` ports are tried when it is taken; 0 lets the system choose).
    ``workers`` (python backend): server processes sharing the port, N or "auto" (default:
    ``default_workers()``). Raises ``StartError`` with the reason and the tail of the server's log.
    The options and their defaults are ``start_result``'s.
    """
    result = start_result(name, base_path, **options)
    if isinstance(result, (Launched, Reused)):
        return result.handle
    raise StartError(result.reason, result.log_tail, log_path=result.log_path)


start.__signature__ = inspect.signature(start_result).replace(return_annotation=ServerHandle)


def servers() -> ServerTable:
    """Every live server of this user (models and versions asked from each); stale records pruned."""
    handles = [handle_for(r, refresh=True) for r in live_records()]
    return ServerTable(handles, failed=failures())


def running_record(name: str) -> ServerRecord:
    """The manager's record of the running server ``name`` (its command line, options ...);
    LookupError lists what runs."""
    return record_for(name)


def find_model(model_name: str) -> tuple[str, str] | None:
    """``(url, model)`` of a live server serving ``model_name`` (or named so), else None."""
    handles = [handle_for(r) for r in live_records()]
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
    handle = handle_for(record_for(name))
    if not handle.url:
        raise RuntimeError(f"{name} (pid {handle.pid}) is still starting")
    result = {}
    for model in handle.models:
        try:
            result[model] = model_status(handle.url, model, timeout=5.0)
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
    for record in all_records():
        if record.name == name:
            path = Path(record.log_path)
    if path is None or not path.is_file():
        if not NAME_RE.fullmatch(name):
            raise LookupError(f"no server named {name!r}")
        path = log_path(name)
    if not path.is_file():
        raise LookupError(f"no log for a server named {name!r} in {state_dir()}")
    return logfiles.tail(path, n)


def stop(name: str | None = None, *, all: bool = False, timeout: float = 10.0) -> list[ServerHandle]:
    """Stop server ``name`` (or every server of this user): SIGTERM, wait, SIGKILL; drop records."""
    if all:
        records = live_records()
    elif name:
        records = [record_for(name)]
    else:
        raise ValueError("stop needs a server name or all=True")
    stopped = [handle_for(record) for record in records]
    terminate_all(records, timeout)
    return stopped
