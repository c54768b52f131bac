"""How many worker processes a ``--workers N|auto`` server runs, and ``%tfserve start``'s default.

Python runs one core's worth of model calls per process, so ``auto`` asks for one worker per
usable core, as many as the free memory holds once the first worker is loaded. Cores and memory
are the container's where it limits them (server/resources.py): a CPU quota, a memory cgroup
whose usage counts the notebook's kernel. Only the standard library: the manager (no
TensorFlow) and ``bench/device_check.py`` (which loads this file on its own) use it too.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

try:
    from tfserve_magic.server import resources
except ImportError:  # loaded from its file without the package (bench/device_check.py)
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "tfm_resources", os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources.py"))
    resources = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = resources
    _spec.loader.exec_module(resources)

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
    """The cores this process may use: its affinity mask (a container's cpuset), capped by a
    CPU quota (``docker --cpus``, Kubernetes limits) rounded up."""
    return resources.read_limits().usable_cores


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
    """Bytes one more process may take: a memory cgroup's limit less its usage (the kernel,
    the notebook and the running workers included), else MemAvailable; None where unknown."""
    return resources.read_limits().memory_free


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


def auto_plan(cpus: int, free: int | None,
              need: int = resources.WORKER_MEMORY_ESTIMATE) -> tuple[int, str]:
    """``auto`` before anything is loaded: one worker per usable core, as many as ``free``
    memory holds at ``need`` each (an estimate: once the first worker is loaded, its parent
    counts again with the worker's measured size); with the reason, for the log."""
    if free is None:
        return cpus, f"{cpus} usable core(s)"
    fits = max(1, int(free * (1 - MEMORY_RESERVE)) // need)
    if fits < cpus:
        return fits, (f"{resources.mib(free)} free memory holds {fits} worker(s) of about "
                      f"{resources.mib(need)} ({cpus} usable core(s))")
    return cpus, f"{cpus} usable core(s)"


def plan(workers: str = "1") -> tuple[int, str]:
    """How many workers ``--workers`` asks for before anything is loaded, and why; 1 where
    the kernel cannot share a port between them."""
    count = parse_workers(workers)
    reason = "as given"
    if count is None:
        count, reason = auto_plan(usable_cpus(), available_memory())
    if count > 1 and not reuse_port_supported():
        log.warning("--workers=%s needs SO_REUSEPORT (Linux); serving with one process", workers)
        return 1, "no SO_REUSEPORT"
    return count, reason


def planned_count(workers: str = "1") -> int:
    """``plan``'s count."""
    return plan(workers)[0]


# %tfserve start's default: one process where a second would not pay (Binder: 1-2 GB and a
# core or two), else auto.
SMALL_CORES = 2
SMALL_MEMORY = 4 * 2**30


def default_workers_text(limits: resources.Limits | None = None) -> tuple[str, str]:
    """``%tfserve start``'s ``--workers`` ("1" or "auto") and why, from the cores and memory
    the container (else the machine) gives: a 2 GB Binder container on a 64-core host gets 1.
    ``limits``: what to judge (default: read now)."""
    cpus = usable_cpus() if limits is None else limits.usable_cores
    limits = limits or resources.read_limits()
    size = limits.memory_size
    where = "the container's limit" if limits.memory_limit is not None else "the machine's"
    if cpus <= SMALL_CORES:
        return "1", f"{cpus} usable core(s)"
    if size is not None and size < SMALL_MEMORY:
        return "1", f"{resources.mib(size)} of memory ({where})"
    return "auto", f"{cpus} usable cores, {resources.mib(size)} of memory ({where})"


