"""The memory and CPU this process really has: a container's cgroup limits, else the host's.

Notebooks mostly run in containers (Binder, JupyterHub on Kubernetes, ``docker run --memory
--cpus``), where ``/proc/meminfo`` and the affinity mask describe the host: 16 visible cores and
60 GB in a container of 2 GB and one CPU. The limits live in the process's own cgroup:
``memory.max``/``memory.current``/``cpu.max`` (cgroup v2) or ``memory.limit_in_bytes``/
``memory.usage_in_bytes``/``cpu.cfs_quota_us`` (v1). Which cgroup and where it is mounted come
from ``/proc/self/cgroup`` and ``/proc/self/mountinfo``; a limit set on an enclosing cgroup
counts too, so the folders from the process's cgroup up to the mount root are all read.

Standard library only: the manager (no TensorFlow) and the server both use it. Every reader
takes a root folder, so the tests run them on fixture trees (tests/data/cgroup/).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
# Above this a limit is "no limit": v1 writes 2**63 rounded down to a page, v2 writes "max".
UNLIMITED = 2**60
# One more server process's memory before it is started, for the headroom check and ``auto``'s
# first count. Measured here (TF 2.15, CPU): a server serving the MNIST MLP
# (tests/fixtures/models.py) has 565 MiB resident, of which 196 MiB is its own (RssAnon) and
# the rest TensorFlow's shared libraries, in memory already once the notebook imported
# TensorFlow; its own memory cgroup was charged 241 MiB at most under 100-image requests from
# one client, 286 MiB from four (tests/test_container_limits.py measures it again). Once a
# worker is loaded its measured RSS replaces this estimate (server/workers.py).
WORKER_MEMORY_ESTIMATE = 300 * MIB


@dataclass(frozen=True)
class Mount:
    """One cgroup hierarchy mounted in this process's view (a line of mountinfo)."""

    point: str  # where it is mounted, e.g. /sys/fs/cgroup/memory
    root: str  # the cgroup shown at ``point`` (a container usually sees its own as "/")
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: the mount's controllers; v2: empty (all of them)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts in a ``/proc/self/mountinfo`` text (proc(5))."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            mounts.append(Mount(point, root, 2, frozenset()))
        elif tail[0] == "cgroup":
            mounts.append(Mount(point, root, 1, frozenset(tail[2].split(","))))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes a space as \\040 (and tab, newline, backslash likewise)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` -> {controller: cgroup path}; the v2 hierarchy's key is ""."""
    paths = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for name in controllers.split(","):
            if name:
                paths[name.removeprefix("name=")] = path
    return paths


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller's files are for this process: its cgroup folder and the enclosing
    ones up to the mount point (the nearest first)."""

    version: int
    folders: tuple[Path, ...]

    def label(self, root: Path) -> str:
        shown = "/" + str(self.folders[0].relative_to(root)) if self.folders else "?"
        return f"cgroup v{self.version} {shown}"


def find_hierarchy(controller: str, root: str | os.PathLike = "/") -> Hierarchy | None:
    """The folders holding ``controller``'s files (v1 mount for it, else the v2 one), or None
    where neither is mounted or readable."""
    root = Path(root)
    try:
        mounts = parse_mountinfo((root / "proc/self/mountinfo").read_text())
        paths = parse_proc_cgroup((root / "proc/self/cgroup").read_text())
    except OSError:
        return None
    v1 = [m for m in mounts if m.version == 1 and controller in m.controllers]
    v2 = [m for m in mounts if m.version == 2]
    for mount, path in [(m, paths.get(controller)) for m in v1] + [(m, paths.get("")) for m in v2]:
        if path is None:
            continue
        top = root / mount.point.lstrip("/")
        if mount.version == 2 and not (top / "cgroup.controllers").exists():
            continue
        folders = _folders(top, mount.root, path)
        if mount.version == 2 and controller not in _v2_controllers(folders[0]):
            continue
        return Hierarchy(mount.version, folders)
    return None


def _folders(top: Path, mount_root: str, path: str) -> tuple[Path, ...]:
    """The process's cgroup folder under ``top`` and its parents up to ``top``. A cgroup that
    is not visible (outside the mounted part, or its folder missing) falls back to ``top``."""
    base = mount_root.rstrip("/")
    if path == mount_root or path.startswith(base + "/"):
        relative = path[len(base):].strip("/")
    else:
        relative = ""
    leaf = top / relative if relative else top
    if ".." in Path(relative).parts or not leaf.is_dir():
        leaf = top
    folders = [leaf]
    while folders[-1] != top:
        folders.append(folders[-1].parent)
    return tuple(folders)


def _v2_controllers(folder: Path) -> set[str]:
    text = _read(folder / "cgroup.controllers")
    return set(text.split()) if text else set()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    """A limit file's value; None for none, "max", -1 or unreadable."""
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def _stat(folder: Path, key: str) -> int:
    """A ``memory.stat`` counter (0 where missing)."""
    for line in (_read(folder / "memory.stat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def meminfo(root: str | os.PathLike = "/") -> dict[str, int]:
    """``/proc/meminfo`` in bytes: {"MemTotal": ..., "MemAvailable": ...}."""
    values = {}
    for line in (_read(Path(root) / "proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def read_memory(hierarchy: Hierarchy, host_total: int | None) -> tuple[int | None, int | None,
                                                                        Path | None]:
    """(limit, in use, folder of the limit) from a memory hierarchy; the smallest limit of the
    process's cgroup and the enclosing ones wins. In use is the working set (usage less the
    inactive file cache the kernel drops before it kills anything), as ``docker stats`` shows.
    None for the limit where there is none ("max", a huge number, more than the host has)."""
    v1 = hierarchy.version == 1
    best: tuple[int, int | None, Path] | None = None
    leaf = hierarchy.folders[0]
    for folder in hierarchy.folders:
        limit = _limit(_read(folder / ("memory.limit_in_bytes" if v1 else "memory.max")),
                       host_total)
        if limit is not None and (best is None or limit < best[0]):
            best = (limit, _working_set(folder, v1), folder)
    # v1 also gives the smallest limit above, even of a cgroup outside this view
    enclosing = _limit(str(_stat(leaf, "hierarchical_memory_limit")), host_total) if v1 else None
    if enclosing and (best is None or enclosing < best[0]):
        best = (enclosing, _working_set(leaf, v1), leaf)
    return best or (None, _working_set(leaf, v1), None)


def _limit(text: str | None, host_total: int | None) -> int | None:
    value = _number(text)
    if value is None or value >= UNLIMITED or (host_total and value > host_total):
        return None
    return value


def _working_set(folder: Path, v1: bool) -> int | None:
    usage = _number(_read(folder / ("memory.usage_in_bytes" if v1 else "memory.current")))
    if usage is None:
        return None
    inactive = _stat(folder, "total_inactive_file" if v1 else "inactive_file")
    return max(0, usage - inactive)


def read_cpu_quota(hierarchy: Hierarchy) -> tuple[float | None, Path | None]:
    """(cores, folder) of the smallest CPU quota in the hierarchy; (None, None) for none."""
    best: tuple[float, Path] | None = None
    for folder in hierarchy.folders:
        if hierarchy.version == 1:
            quota = _number(_read(folder / "cpu.cfs_quota_us"))
            period = _number(_read(folder / "cpu.cfs_period_us"))
        else:
            text = (_read(folder / "cpu.max") or "max").split()
            quota = _number(text[0])
            period = _number(text[1]) if len(text) > 1 else 100_000
        if quota is None or not period:
            continue
        cores = quota / period
        if best is None or cores < best[0]:
            best = (cores, folder)
    return best or (None, None)


def affinity_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """What this process may use. ``memory_limit`` None: no container limit (the host's
    memory counts); ``cpu_quota`` None: no quota (the affinity cores count)."""

    memory_limit: int | None
    memory_used: int | None  # the limited cgroup's working set (else the process's cgroup's)
    memory_available: int | None  # the host's MemAvailable
    memory_total: int | None  # the host's MemTotal
    cpu_quota: float | None  # cores (1.5: 150 ms of CPU time per 100 ms)
    affinity_cores: int
    usable_cores: int  # min(affinity cores, ceil(quota))
    memory_source: str = "host /proc/meminfo"
    cpu_source: str = "affinity mask"

    @property
    def source(self) -> str:
        return f"memory: {self.memory_source}; cpu: {self.cpu_source}"

    @property
    def memory_free(self) -> int | None:
        """What one more process may still take: limit less in use in a container (what the
        notebook, its kernel and other servers in it use is counted), else MemAvailable."""
        if self.memory_limit is not None:
            return max(0, self.memory_limit - (self.memory_used or 0))
        return self.memory_available

    @property
    def memory_size(self) -> int | None:
        """The container's limit, else the host's memory."""
        return self.memory_limit if self.memory_limit is not None else self.memory_total

    @property
    def cpu_limited(self) -> bool:
        """Whether a quota leaves fewer cores than the process sees (TensorFlow and ``auto``
        would otherwise size their pools from the visible cores)."""
        return self.cpu_quota is not None and self.usable_cores < self.affinity_cores

    def describe(self) -> str:
        """One line for logs: which limits were read and from where."""
        if self.memory_limit is not None:
            memory = (f"memory {mib(self.memory_limit)} ({self.memory_source}), "
                      f"{mib(self.memory_used)} in use")
        else:
            memory = f"memory not limited ({mib(self.memory_available)} available on the host)"
        if self.cpu_quota is not None:
            cpu = (f"cpu quota {self.cpu_quota:.1f} core(s) ({self.cpu_source}) of "
                   f"{self.affinity_cores} visible -> {self.usable_cores} usable")
        else:
            cpu = f"no cpu quota, {self.affinity_cores} core(s)"
        return f"{memory}; {cpu}"


def mib(value: int | None) -> str:
    """Bytes as "123 MiB" for messages ("?" when unknown)."""
    return "?" if value is None else f"{value / MIB:.0f} MiB"


def read_limits(root: str | os.PathLike = "/", affinity: int | None = None) -> Limits:
    """This process's limits, read from ``root`` (a fixture tree in the tests); ``affinity``
    overrides the affinity mask's core count."""
    root = Path(root)
    host = meminfo(root)
    total = host.get("MemTotal")
    cores = affinity if affinity is not None else affinity_cores()
    limit = used = quota = None
    memory_source, cpu_source = "host /proc/meminfo", "affinity mask"
    memory = find_hierarchy("memory", root)
    if memory is not None:
        limit, used, folder = read_memory(memory, total)
        if folder is not None:
            memory_source = Hierarchy(memory.version, (folder,)).label(root)
    cpu = find_hierarchy("cpu", root)
    if cpu is not None:
        quota, folder = read_cpu_quota(cpu)
        if folder is not None:
            cpu_source = Hierarchy(cpu.version, (folder,)).label(root)
    usable = cores if quota is None else max(1, min(cores, math.ceil(quota - 1e-9)))
    return Limits(limit, used, host.get("MemAvailable"), total, quota, cores, usable,
                  memory_source, cpu_source)


def check_headroom(need_bytes: int | None = None, limits: Limits | None = None) -> str | None:
    """None when one more server process of ``need_bytes`` (default: WORKER_MEMORY_ESTIMATE)
    fits in the free memory; else why not, with the numbers, so a start can refuse rather than
    let the out-of-memory killer pick a process (in a container, maybe the notebook's kernel)."""
    need = need_bytes or WORKER_MEMORY_ESTIMATE
    limits = limits or read_limits()
    free = limits.memory_free
    if free is None or free >= need:
        return None
    if limits.memory_limit is not None:
        where = (f"the container's memory limit is {mib(limits.memory_limit)} "
                 f"({limits.memory_source}), {mib(limits.memory_used)} in use, "
                 f"{mib(free)} free")
    else:
        where = f"the machine has {mib(free)} available (MemAvailable)"
    return (f"not enough memory for one more server process: {where}; one server needs "
            f"about {mib(need)}. Stop another server or free memory in the notebook (or ask "
            f"for a larger container), then start again.")
