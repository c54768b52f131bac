"""server/resources.py and the sizing built on it: cgroup v1 and v2 files -> limits -> choices.

The parsers read fixture trees (tests/data/cgroup/: a root folder with proc/ and sys/fs/cgroup/
as a container or a host shows them, README there); the last tests read this machine's own.
Real cgroups with a server inside: tests/test_container_limits.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest

from tfserve_magic.server import resources, sizing
from tfserve_magic.server.resources import MIB, Limits

DATA = Path(__file__).parent / "data" / "cgroup"
HOST_TOTAL = 16384000 * 1024  # the fixtures' MemTotal
HOST_AVAILABLE = 12000000 * 1024


def _limits(tree: str, affinity: int = 8) -> Limits:
    return resources.read_limits(DATA / tree, affinity=affinity)


def test_v1_container_limits_and_quota():
    limits = _limits("v1/limited")
    assert limits.memory_limit == 450 * MIB
    assert limits.memory_used == 350 * MIB - 40 * MIB  # usage less the inactive file cache
    assert limits.memory_free == 140 * MIB
    assert limits.cpu_quota == 1.5
    assert limits.usable_cores == 2  # ceil(1.5), of 8 visible
    assert limits.cpu_limited
    # the container's cgroup is the mount root (docker without a cgroup namespace)
    assert limits.memory_source == "cgroup v1 /sys/fs/cgroup/memory"
    assert limits.cpu_source == "cgroup v1 /sys/fs/cgroup/cpu,cpuacct"
    assert limits.describe() == (
        "memory 450 MiB (cgroup v1 /sys/fs/cgroup/memory), 310 MiB in use; cpu quota 1.5 "
        "core(s) (cgroup v1 /sys/fs/cgroup/cpu,cpuacct) of 8 visible -> 2 usable"
    )


def test_v1_without_limits_means_the_host():
    limits = _limits("v1/unlimited")  # 2**63 rounded to a page, quota -1
    assert limits.memory_limit is None and limits.cpu_quota is None
    assert limits.memory_free == HOST_AVAILABLE  # MemAvailable, not limit - usage
    assert limits.memory_size == HOST_TOTAL
    assert limits.usable_cores == 8 and not limits.cpu_limited
    assert limits.describe() == (
        "memory not limited (11719 MiB available on the host); no cpu quota, 8 core(s)"
    )


def test_v1_limits_of_enclosing_cgroups_count():
    limits = _limits("v1/nested")
    # the container's own limit (32 GiB) is more than the host has: no limit; the pod's counts
    assert limits.memory_limit == 1024 * MIB
    assert limits.memory_used == 600 * MIB - 100 * MIB  # the pod's usage, not the container's
    assert limits.memory_source == "cgroup v1 /sys/fs/cgroup/memory/kubepods/pod1"
    assert limits.cpu_quota == 1.0 and limits.usable_cores == 1
    assert limits.cpu_source.endswith("/kubepods/pod1/ctr")


def test_v2_container_limits_and_quota():
    limits = _limits("v2/limited")
    assert limits.memory_limit == 2048 * MIB
    assert limits.memory_used == 1181116006 - 100 * MIB
    assert limits.cpu_quota == 1.5 and limits.usable_cores == 2
    assert limits.memory_source == limits.cpu_source == "cgroup v2 /sys/fs/cgroup"


def test_v2_max_means_no_limit_and_a_hidden_cgroup_reads_the_mount_root():
    limits = _limits("v2/max")
    assert limits.memory_limit is None and limits.cpu_quota is None
    assert limits.memory_used == 2048 * MIB  # read from the mount root
    assert limits.usable_cores == 8
    assert limits.memory_free == HOST_AVAILABLE


def test_v2_the_smallest_limit_on_the_way_up_wins():
    limits = _limits("v2/nested")
    assert limits.memory_limit == 3072 * MIB  # the parent's; the kernel's own is "max"
    assert limits.memory_used == 2048 * MIB  # the parent's usage counts against it
    assert limits.memory_source == "cgroup v2 /sys/fs/cgroup/jupyter"
    assert limits.cpu_quota == 0.5 and limits.usable_cores == 1  # the child's half a core
    assert limits.cpu_source == "cgroup v2 /sys/fs/cgroup/jupyter/kernel"


def test_fewer_visible_cores_than_the_quota():
    limits = _limits("v1/limited", affinity=1)  # cpuset of 1 core, quota 1.5
    assert limits.usable_cores == 1
    assert not limits.cpu_limited  # the quota leaves more than the process sees


def test_no_cgroup_files_at_all(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 500 kB\n")
    limits = resources.read_limits(tmp_path, affinity=3)
    assert (limits.memory_limit, limits.memory_used, limits.cpu_quota) == (None, None, None)
    assert limits.memory_free == 500 * 1024 and limits.usable_cores == 3
    assert resources.read_limits(tmp_path / "missing", affinity=2).memory_free is None


def test_mountinfo_and_proc_cgroup_parsing():
    mounts = resources.parse_mountinfo((DATA / "v1/limited/proc/self/mountinfo").read_text())
    assert [(m.point, m.root, m.version) for m in mounts] == [
        ("/sys/fs/cgroup/memory", "/docker/abc", 1),
        ("/sys/fs/cgroup/cpu,cpuacct", "/docker/abc", 1),
        ("/sys/fs/cgroup/pids", "/docker/abc", 1),
        ("/sys/fs/cgroup/unified", "/", 2),
    ]
    assert mounts[1].controllers == {"rw", "cpu", "cpuacct"}
    escaped = "40 31 0:40 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n"
    assert resources.parse_mountinfo(escaped)[0].point == "/mnt/my cgroup"
    assert resources.parse_mountinfo("garbage\n\n") == []
    paths = resources.parse_proc_cgroup("4:memory:/a\n3:cpu,cpuacct:/b\n1:name=systemd:/c\n0::/d\n")
    assert paths == {"memory": "/a", "cpu": "/b", "cpuacct": "/b", "systemd": "/c", "": "/d"}


def test_headroom_names_the_numbers():
    tight = Limits(450 * MIB, 400 * MIB, None, HOST_TOTAL, 1.0, 8, 1,
                   memory_source="cgroup v1 /sys/fs/cgroup/memory")
    message = resources.check_headroom(256 * MIB, tight)
    assert message is not None
    for text in ("450 MiB", "cgroup v1 /sys/fs/cgroup/memory", "400 MiB in use", "256 MiB"):
        assert text in message
    assert resources.check_headroom(40 * MIB, tight) is None  # 50 MiB free
    assert resources.check_headroom(None, tight) is not None  # the documented estimate
    host = Limits(None, None, 100 * MIB, HOST_TOTAL, None, 8, 8)
    assert "100 MiB available" in resources.check_headroom(200 * MIB, host)
    assert resources.check_headroom(50 * MIB, host) is None
    unknown = Limits(None, None, None, None, None, 1, 1)
    assert resources.check_headroom(10**15, unknown) is None  # nothing to judge by


def test_auto_plan_counts_cores_and_free_memory():
    gib = 2**30
    assert sizing.auto_plan(16, 64 * gib, gib // 2) == (16, "16 usable core(s)")
    count, reason = sizing.auto_plan(16, 2 * gib, gib // 2)
    assert count == 3  # 90 % of 2 GiB holds 3 of 512 MiB
    assert reason == "2048 MiB free memory holds 3 worker(s) of about 512 MiB (16 usable core(s))"
    assert sizing.auto_plan(4, 100 * MIB, gib)[0] == 1  # never fewer than one
    assert sizing.auto_plan(4, None)[0] == 4


def test_plan_and_auto_follow_the_container(monkeypatch):
    container = _limits("v1/limited")  # 2 usable cores, 140 MiB free
    monkeypatch.setattr(resources, "read_limits", lambda *a, **k: container)
    monkeypatch.setattr(sizing, "reuse_port_supported", lambda: True)
    assert sizing.usable_cpus() == 2
    assert sizing.available_memory() == 140 * MIB
    count, reason = sizing.plan("auto")
    assert count == 1 and "140 MiB free memory holds 1 worker(s)" in reason
    assert sizing.plan("3") == (3, "as given")
    # after the first worker (565 MiB resident) the parent counts again
    assert sizing.auto_count(sizing.usable_cpus(), sizing.available_memory(), 565 * MIB) == 1


@pytest.mark.parametrize(("tree", "affinity", "expected"), [
    ("v1/limited", 8, ("1", "2 usable core(s)")),  # quota 1.5 of 8 visible cores
    ("v2/nested", 8, ("1", "1 usable core(s)")),
    ("v2/max", 8, ("auto", "8 usable cores, 16000 MiB of memory (the machine's)")),
    ("v2/max", 2, ("1", "2 usable core(s)")),
])
def test_start_default_reads_the_container(tree, affinity, expected):
    assert sizing.default_workers_text(_limits(tree, affinity)) == expected


def test_start_default_is_one_in_a_small_container_on_many_cores():
    binder = dataclasses.replace(_limits("v2/limited"), cpu_quota=None, usable_cores=8)
    assert sizing.default_workers_text(binder) == ("1", "2048 MiB of memory (the container's "
                                                   "limit)")


def test_this_machine():
    limits = resources.read_limits()
    assert limits.affinity_cores == len(os.sched_getaffinity(0))
    assert 1 <= limits.usable_cores <= limits.affinity_cores
    if limits.cpu_quota is not None:
        assert limits.usable_cores == min(limits.affinity_cores, math.ceil(limits.cpu_quota))
    assert limits.memory_free and limits.memory_free > 0
    assert limits.memory_total and limits.memory_total > 0
    assert sizing.usable_cpus() == limits.usable_cores
    assert sizing.default_workers_text()[0] in ("1", "auto")
    assert "core(s)" in limits.describe()
