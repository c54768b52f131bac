"""Process plumbing shared by the server, the workers' parent, the registry and the manager.

One home for the facts that used to be copied: whether a pid still runs, how a file is written
so that a reader never sees half of it, which address a local client dials for a server bound
to some host, how a server binds its port, and how it notices that its parent (owner) is gone.
No TensorFlow, no IPython, no other tfserve_magic module: the manager and the client import
this too, and ``records.py`` builds on it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("tfserve_magic.server")

# Popen objects of children started by this process, so liveness checks reap them (no zombie
# looks alive); the manager fills it.
children: dict = {}


def pid_alive(pid: int, expect: Iterable[str] = ()) -> bool:
    """True if ``pid`` runs (not a zombie) and, where /proc tells, its command line holds one of
    ``expect`` (guards against a recycled pid)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    proc = children.get(pid)
    if proc is not None:
        return proc.poll() is None
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields and fields[0] in ("Z", "X"):
            return False
        expect = [e for e in expect if e]
        if not expect:
            return True
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return True
    return any(e in cmdline for e in expect)


def _pid_alive_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    code = ctypes.c_ulong()
    kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
    kernel32.CloseHandle(handle)
    return code.value == 259  # STILL_ACTIVE


@contextlib.contextmanager
def atomic_target(path, mode: int | None = 0o600):
    """A temporary path beside ``path`` to write by any means (TensorFlow's writers too);
    renamed onto ``path`` when the block ends, removed if it fails, so a reader sees the old
    file or the new one, never a part. ``mode``: the file's permissions (None: the umask's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomic(path, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_target``); creates the folder."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_target(path, mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)


def write_json_atomic(path, data, mode: int = 0o600) -> None:
    """``write_atomic`` of ``data`` as indented JSON."""
    write_atomic(path, json.dumps(data, indent=1), mode)


def read_json(path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, partial or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


_ANY_V4 = ("", "0.0.0.0")
_ANY_V6 = ("::", "[::]")


def connect_host(host: str) -> str:
    """The address a local client dials for a server bound to ``host``, URL-ready (IPv6 in
    brackets). A server bound to every IPv6 address is dialled on ``::1``: a socket bound to
    ``::`` may be IPv6-only, so 127.0.0.1 is not sure to reach it."""
    host = host or ""
    if host in _ANY_V4:
        return "127.0.0.1"
    if host in _ANY_V6:
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def client_url(host: str, port: int, scheme: str = "http") -> str:
    """``scheme://HOST:PORT`` a local client uses for a server bound to ``host``."""
    return f"{scheme}://{connect_host(host)}:{port}"


def port_free(host: str, port: int) -> bool:
    """Whether a plain socket (no SO_REUSEPORT) could bind ``port``: False if any listener
    holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def bind(host: str, port: int, retries: int = 0, *, reuse_port: bool = False,
         check_free: bool = False) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host`` at ``port`` or one of the ``retries``
    ports after it (``port`` 0: a free port). OSError naming the ports tried when none binds.

    ``reuse_port`` sets SO_REUSEPORT (the workers of one server share the port);
    ``check_free`` first checks with a plain socket, since SO_REUSEPORT alone would join
    another server's port (same user) instead of failing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error = None
    for candidate in range(port, port + retries + 1) if port else [0]:
        if check_free and candidate and not port_free(host, candidate):
            last_error = OSError(errno.EADDRINUSE, "Address already in use")
            log.warning("Cannot bind %s:%d: Address already in use", host, candidate)
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host.strip("[]"), candidate))
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


def watch_parent(pid: int, on_gone: Callable[[], None],
                 other_owners: Callable[[int], list[int]] | None = None) -> threading.Thread:
    """Call ``on_gone`` once ``pid`` has exited (a daemon thread polling twice a second).

    ``other_owners(gone_pid)`` lists the other live owners of a shared server (the
    ``--owners_file``, see owners.py): while one lives the watch moves on to it instead.
    A child of ``pid`` also notices being re-parented, which a recycled pid cannot hide."""
    was_parent = os.getppid() == pid

    def watch():
        nonlocal pid, was_parent
        while True:
            if not pid_alive(pid) or (was_parent and os.getppid() != pid):
                others = other_owners(pid) if other_owners is not None else []
                if others:
                    log.info("Owner %d is gone; staying for owner(s) %s", pid, others)
                    pid, was_parent = others[0], False
                    continue
                log.info("Parent process %d is gone; shutting down", pid)
                on_gone()
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
