"""The owners of a shared server: the pids (kernels) using it, one per line in a small file.

A server started by kernel A and reused by kernel B belongs to both. The manager adds each
user's pid to the server's owners file; the server (``--owners_file``, next to
``--parent_pid``) and the manager's exit hook read it, so the server stops only when its last
owner is gone. Used by the manager and ``server/main.py`` (no TensorFlow, no IPython).
"""

from __future__ import annotations

from collections.abc import Callable

from tfserve_magic.server.process import write_atomic


def read(path) -> list[int]:
    """The pids listed in ``path`` (empty when it is missing or unreadable), in order."""
    if not path:
        return []
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read()
    except (OSError, ValueError):
        return []
    pids = []
    for word in text.split():
        if word.isdigit() and int(word) not in pids:
            pids.append(int(word))
    return pids


def write(path, pids) -> None:
    """Replace the list atomically (callers hold the manager's per-name lock)."""
    write_atomic(path, "".join(f"{pid}\n" for pid in dict.fromkeys(pids)))


def add(path, pid: int) -> list[int]:
    pids = read(path)
    if pid not in pids:
        pids.append(pid)
        write(path, pids)
    return pids


def remove(path, pid: int) -> list[int]:
    """Drop ``pid``; returns the pids left."""
    pids = read(path)
    if pid in pids:
        pids.remove(pid)
        write(path, pids)
    return pids


def live_owners(path, alive: Callable[[int], bool], exclude: int = 0) -> list[int]:
    """The listed pids that still run (``exclude`` left out)."""
    return [pid for pid in read(path) if pid != exclude and alive(pid)]
