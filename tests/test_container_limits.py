"""A container simulated with real cgroups: the server's defaults must fit what it is given.

Where this machine lets the tests create cgroup v1 memory and cpu cgroups (root with a writable
/sys/fs/cgroup, as on the CI machine), servers run inside them the way they run in a Binder or
docker container: a wrapper writes its own pid into the cgroups, then execs the server. Sizes are
measured, not assumed: one server's peak memory under the same load first, then a limit that
holds one server but not two. Elsewhere every test here is skipped with the reason.
Parsing limits from cgroup files: tests/test_resources.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.fixtures.server import server_command, server_env
from tfserve_magic.server import resources
from tfserve_magic.server.resources import MIB

START_TIMEOUT_S = 240.0  # TensorFlow's import alone takes ~20 s under a one-core quota here
LOAD_REQUESTS = 200
LOAD_IMAGES = 100


class Cgroups:
    """A fresh v1 memory cgroup (under this process's own) and, on request, a cpu cgroup."""

    def __init__(self, name: str, cpu: bool):
        memory = resources.find_hierarchy("memory")
        cpu_tree = resources.find_hierarchy("cpu") if cpu else None
        if memory is None or memory.version != 1 or (cpu and (cpu_tree is None
                                                              or cpu_tree.version != 1)):
            pytest.skip("needs cgroup v1 memory and cpu hierarchies (this machine: "
                        f"memory {memory and memory.version}, cpu {cpu_tree and cpu_tree.version})")
        self.folders = [memory.folders[0] / name]
        if cpu_tree is not None:
            self.folders.append(cpu_tree.folders[0] / name)
        for folder in self.folders:
            try:
                folder.mkdir()
            except OSError as exc:
                self.remove()
                pytest.skip(f"cannot create a cgroup ({folder}: {exc.strerror}); needs root and "
                            "a writable cgroup hierarchy")

    @property
    def memory(self) -> Path:
        return self.folders[0]

    def set(self, relative: str, value: int | str) -> None:
        folder = self.memory if relative.startswith("memory.") else self.folders[1]
        (folder / relative).write_text(str(value))

    def read(self, relative: str) -> str:
        return (self.memory / relative).read_text()

    def oom_kills(self) -> int:
        """Processes the cgroup's out-of-memory killer ended (0 where the kernel does not say)."""
        match = re.search(r"^oom_kill (\d+)", self.read("memory.oom_control"), re.MULTILINE)
        return int(match.group(1)) if match else 0

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` started inside the cgroups: the shell joins them, then execs it."""
        joins = " && ".join(f"echo $$ > {shlex.quote(str(f / 'cgroup.procs'))}"
                            for f in self.folders)
        return ["sh", "-c", f'{joins} && exec "$@"', "sh", *command]

    def remove(self) -> None:
        """Kill what is still inside (only processes these tests started) and remove them."""
        for folder in self.folders:
            if not folder.is_dir():
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.2)


@pytest.fixture
def cgroups(request):
    made = []

    def factory(cpu: bool = False) -> Cgroups:
        group = Cgroups(f"tfserve-test-{os.getpid()}-{len(made)}-{request.node.name[:40]}", cpu)
        made.append(group)
        return group

    yield factory
    for group in made:
        group.remove()


class Served:
    """A server started inside cgroups with the CLI's own defaults (``--workers=auto``)."""

    def __init__(self, group: Cgroups, base_path: Path, workdir: Path, workers: str):
        self.info_path = workdir / "info.json"
        self.log_path = workdir / "server.log"
        command = server_command(base_path, f"--workers={workers}", model_name="MLP",
                                 info_file=self.info_path)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(group.wrap(command), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=server_env())
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.info_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the server did not start in the cgroup:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        self.info = json.loads(self.info_path.read_text())
        self.url = self.info["url"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _load(url: str, requests_count: int, clients: int = 4) -> tuple[int, int]:
    """``requests_count`` predicts of LOAD_IMAGES images from ``clients`` threads; (ok, failed)."""
    images = np.random.default_rng(0).random((LOAD_IMAGES, 28, 28, 1), dtype=np.float32)
    body = json.dumps({"instances": images.round(3).tolist()})
    endpoint = f"{url}/v1/models/MLP:predict"

    def one(_):
        try:
            answer = requests.post(endpoint, data=body, timeout=60,
                                   headers={"Content-Type": "application/json"})
            return answer.status_code == 200 and len(answer.json()["predictions"]) == LOAD_IMAGES
        except requests.RequestException:
            return False

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests_count)))
    return sum(results), results.count(False)


def _workers(info: dict) -> int:
    return len(info.get("workers") or ()) or 1


@pytest.fixture(scope="module")
def one_server_peak(mlp_export, tmp_path_factory):
    """Bytes one server (one process) serving the MLP charges to its memory cgroup at most
    under the load the tests send, measured in an unlimited cgroup."""
    group = Cgroups(f"tfserve-test-{os.getpid()}-measure", cpu=False)
    try:
        served = Served(group, mlp_export, tmp_path_factory.mktemp("measure"), workers="1")
        try:
            ok, failed = _load(served.url, 40)
            assert failed == 0
        finally:
            served.stop()
        peak = int(group.read("memory.max_usage_in_bytes"))
    finally:
        group.remove()
    assert 50 * MIB < peak < 4096 * MIB, peak
    return peak


def _one_fits_two_do_not(peak: int) -> int:
    """A limit that holds one server with room for its load but not two (page-aligned)."""
    return int(peak * 1.5) // 4096 * 4096


def test_memory_limit_alone_gives_one_worker(cgroups, one_server_peak, mlp_export, tmp_path):
    if resources.affinity_cores() < 2:
        pytest.skip("one visible core: the cores alone would choose one worker")
    group = cgroups(cpu=False)
    limit = _one_fits_two_do_not(one_server_peak)
    group.set("memory.limit_in_bytes", limit)
    served = Served(group, mlp_export, tmp_path, workers="auto")
    try:
        log = served.log()
        line = next(x for x in log.splitlines() if "container limits:" in x)
        assert f"memory {resources.mib(limit)} (cgroup v1 " in line, line
        assert "no cpu quota" in line
        # memory decided it: either before the start (the estimate) or after the first worker
        # was loaded (its measured size, server/workers.py)
        assert "free memory holds 1 worker(s)" in line or re.search(
            r"--workers=auto: .* -> 1 worker\(s\)", log), log[-3000:]
        assert _workers(served.info) == 1
        ok, failed = _load(served.url, LOAD_REQUESTS)
        assert (ok, failed) == (LOAD_REQUESTS, 0)
        assert served.process.poll() is None
        assert group.oom_kills() == 0
    finally:
        served.stop()


def test_a_small_container_with_one_cpu_serves_with_the_defaults(cgroups, one_server_peak,
                                                                  mlp_export, tmp_path):
    group = cgroups(cpu=True)
    limit = _one_fits_two_do_not(one_server_peak)
    group.set("memory.limit_in_bytes", limit)
    group.set("cpu.cfs_period_us", 100000)
    group.set("cpu.cfs_quota_us", 100000)  # one core
    served = Served(group, mlp_export, tmp_path, workers="auto")
    try:
        log = served.log()
        line = next(x for x in log.splitlines() if "container limits:" in x)
        assert f"memory {resources.mib(limit)} (cgroup v1 " in line, line
        assert "cpu quota 1.0 core(s) (cgroup v1 " in line and "-> 1 usable" in line, line
        assert "--workers=auto -> 1 worker(s)" in line, line
        if resources.affinity_cores() > 1:  # TensorFlow would size its pools from them
            assert line.endswith("TF threads 1/1"), line
        assert _workers(served.info) == 1
        ok, failed = _load(served.url, LOAD_REQUESTS)
        assert (ok, failed) == (LOAD_REQUESTS, 0)
        assert served.process.poll() is None
        assert group.oom_kills() == 0
        assert int(group.read("memory.max_usage_in_bytes")) <= limit
    finally:
        served.stop()


HEADROOM = ("from tfserve_magic.server import resources; m = resources.check_headroom(); "
            "print(m or 'fits')")


def test_headroom_inside_a_real_cgroup(cgroups):
    group = cgroups(cpu=False)
    group.set("memory.limit_in_bytes", 128 * MIB)  # less than one server needs
    command = group.wrap([sys.executable, "-c", HEADROOM])
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=server_env())
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("not enough memory for one more server process"), message
    assert "limit is 128 MiB (cgroup v1 " in message and " in use, " in message
    assert f"needs about {resources.WORKER_MEMORY_ESTIMATE // MIB} MiB" in message
    group.set("memory.limit_in_bytes", 2048 * MIB)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=server_env())
    assert done.stdout.strip() == "fits", done.stdout + done.stderr


START = ("import sys, tfserve_magic as tfm\n"
         "try:\n"
         "    tfm.start('Tight', sys.argv[1], port=0, timeout=60)\n"
         "except tfm.StartError as exc:\n"
         "    print('refused:', exc.reason)\n"
         "else:\n"
         "    tfm.stop(all=True)\n"
         "    print('started')\n")


def test_start_refuses_when_not_one_more_server_fits(cgroups, mlp_export, tmp_path):
    """`%tfserve start`'s path: the manager says so with the numbers instead of launching a
    server the out-of-memory killer would then pick among (maybe the kernel itself)."""
    group = cgroups(cpu=False)
    group.set("memory.limit_in_bytes", 128 * MIB)
    env = {**server_env(), "TFSERVE_MAGIC_HOME": str(tmp_path / "home")}
    done = subprocess.run(group.wrap([sys.executable, "-c", START, str(mlp_export)]),
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.strip()
    assert out.startswith("refused: not enough memory for one more server process"), out
    assert "limit is 128 MiB" in out and "one server needs about" in out
    assert not list((tmp_path / "home").glob("Tight*.json"))  # nothing was launched


NOTEBOOK = """
import json, sys
from tfserve_magic import demo
from tfserve_magic._nbrun import run_notebook
run = run_notebook(sys.argv[1], headless=True, workdir=sys.argv[2], env=json.loads(sys.argv[3]),
                   cell_timeout=300, probe=demo.PROBE, output_path=sys.argv[4])
print(run.probe_output.strip().splitlines()[-1])
"""
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_quickstart_notebook_in_a_2_gb_container(cgroups, tmp_path):
    """Binder's size: the kernel (which trains the model) and the server it starts share 2 GB."""
    group = cgroups(cpu=False)
    group.set("memory.limit_in_bytes", 2048 * MIB)
    (tmp_path / "registry").mkdir()
    env = {"TFSERVE_MAGIC_OFFLINE": "1", "TFSERVE_MAGIC_HOME": str(tmp_path / "registry")}
    command = group.wrap([sys.executable, "-c", NOTEBOOK,
                          str(REPO / "notebooks" / "01_quickstart.ipynb"), str(tmp_path / "work"),
                          json.dumps(env), str(tmp_path / "executed.ipynb")])
    done = subprocess.run(command, capture_output=True, text=True, timeout=840, env=server_env())
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(result["served_accuracy"] - result["notebook_accuracy"]) < 0.01
    assert group.oom_kills() == 0
    assert int(group.read("memory.max_usage_in_bytes")) <= 2048 * MIB
