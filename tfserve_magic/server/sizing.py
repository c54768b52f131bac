"""How many worker processes a ``--workers N|auto`` server runs.

Python runs one core's worth of model calls per process, so ``auto`` asks for one worker per
usable core, as many as the free memory holds once the first worker is loaded. Only the
standard library: the manager (no TensorFlow) and ``bench/device_check.py`` (which loads this
file on its own) use it too.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

log = logging.getLogger("tfserve_magic.server")

MEMORY_RESERVE = 0.10  # of the available memory, left free when --workers=auto counts workers


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
    """Whether the kernel spreads connections over sockets sharing a port (SO_REUSEPORT).

    macOS has SO_REUSEPORT but does not spread connections; Windows has none."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _proc_kib(path: str, key: str) -> int | None:
    """The ``key:  N kB`` line of a /proc file, in bytes; None where there is none."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """MemAvailable in bytes (Linux), else None."""
    return _proc_kib("/proc/meminfo", "MemAvailable:")


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident memory of ``pid`` (default: this process) from /proc, else None."""
    return _proc_kib(f"/proc/{pid or 'self'}/status", "VmRSS:")


def auto_count(cpus: int, available: int | None, worker_rss: int | None) -> int:
    """``auto``: one worker per usable core, as many as the free memory holds.

    ``available`` is measured once the first worker is loaded, so it already excludes that
    worker; RSS counts shared library pages in full, so the cap errs on the safe side.
    """
    if available is None or not worker_rss:
        return cpus
    fits = 1 + int(available * (1 - MEMORY_RESERVE)) // worker_rss
    return max(1, min(cpus, fits))


def planned_count(workers: str = "1") -> int:
    """How many workers ``--workers`` asks for before anything is loaded (``auto``: usable
    cores); 1 where the kernel cannot share a port between them."""
    count = parse_workers(workers)
    if count is None:
        count = usable_cpus()
    if count > 1 and not reuse_port_supported():
        log.warning("--workers=%s needs SO_REUSEPORT (Linux); serving with one process", workers)
        return 1
    return count
