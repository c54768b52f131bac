"""Stopping servers and keeping two processes from racing: per-name locks, signals, and the
exit hook that stops what this process started (unless detached or still used by another)."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time

from tfserve_magic import owners
from tfserve_magic.manager.state import remove_files
from tfserve_magic.records import ServerRecord
from tfserve_magic.registry import all_records, state_dir
from tfserve_magic.server.process import children, pid_alive

_atexit_registered = False


class NameLock:
    """An exclusive per-name file lock, so two kernels do not start the same server twice."""

    def __init__(self, name: str):
        self.path = state_dir() / f".{name}.lock"
        self.fh = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no cross-process lock
            return self
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()  # closing releases the lock


def _wait_gone(record: ServerRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while record.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def send_signal(pid: int, signum: int, group: bool) -> None:
    """Signal ``pid`` (its whole process group when ``group`` and it leads one); a process
    already gone is no error."""
    try:
        if group and hasattr(os, "killpg") and os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(record: ServerRecord, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL the server's process group."""
    if record.alive():
        send_signal(record.pid, signal.SIGTERM, group=False)
        if not _wait_gone(record, timeout):
            send_signal(record.pid, getattr(signal, "SIGKILL", signal.SIGTERM), group=True)
            _wait_gone(record, 5.0)
    proc = children.pop(record.pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass


def terminate_all(records: list[ServerRecord], timeout: float) -> None:
    """Stop several servers at once (SIGTERM to all first, so their shutdowns overlap) and
    remove their files."""
    for record in records:
        if record.alive():
            send_signal(record.pid, signal.SIGTERM, group=False)
    for record in records:
        terminate(record, timeout)
        remove_files(record)


def orphaned(record: ServerRecord) -> bool:
    """A server whose owner (a kernel, restarted or killed) is gone but which has not exited yet.

    It watches its owner's pid and stops within a second or so; reusing it in that second (a
    quick "Restart & Run All") would hand the new kernel a server that dies under it.
    """
    owner = record.owner_pid
    if not owner or record.detach or owner == os.getpid() or pid_alive(owner):
        return False
    return not owners.live_owners(record.owners_path, pid_alive, exclude=owner)


def adopt(record: ServerRecord) -> None:
    """This process uses a server another started: it stops only after both have exited."""
    if record.owners_path and not record.detach:
        owners.add(record.owners_path, os.getpid())
        register_atexit()


def _stop_owned_at_exit() -> None:
    """atexit: stop the servers this process started (unless detached)."""
    me = os.getpid()
    try:
        records = all_records()
    except OSError:
        return
    last = []
    for record in records:
        if record.detach:
            continue
        path = record.owners_path
        if record.owner_pid != me and me not in owners.read(path):
            continue
        if path:
            with NameLock(record.name):  # not while another process adds itself
                others = [p for p in owners.remove(path, me) if p != me and pid_alive(p)]
            if others:
                continue  # another live process uses it; it stops when the last one exits
        last.append(record)
    terminate_all(last, timeout=5.0)


def register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_owned_at_exit)
        _atexit_registered = True
