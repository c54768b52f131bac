"""Start-up and hot-swap timings.

Start-up: a bare ``python -c "import tensorflow"`` against ``%tfserve start`` (in an IPython
shell that already loaded the extension, as in a notebook) returning with the model AVAILABLE.
Hot swap: a new version folder renamed into the served base path, until an unpinned predict is
answered by the new version.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from bench.load import prediction_checker
from bench.model import MODEL_NAME, BenchAssets
from bench.peers import PEERS, REPO, RunningPeer, free_port, ours_command, tf_env, wait_ready

_MAGIC_START = textwrap.dedent(
    """
    import json, sys, time
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "tfserve_magic")
    name, base_path, port = sys.argv[1], sys.argv[2], sys.argv[3]
    began = time.perf_counter()
    handle = shell.run_line_magic("tfserve", f"start {name} {base_path} --port {port} --restart")
    elapsed = time.perf_counter() - began
    import tfserve_magic as tfm
    states = [v["state"] for v in tfm.status(name)[name]]
    shell.run_line_magic("tfserve", f"stop {name}")
    print("BENCH " + json.dumps({"seconds": elapsed, "states": states}), flush=True)
    """
)


def _wall(command: list[str], env: dict, timeout: float = 300.0) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, timeout=timeout)
    return time.perf_counter() - began


def measure_startup(assets: BenchAssets, workdir: Path, repeats: int, log=print) -> dict:
    """Median seconds of a bare TensorFlow import and of ``%tfserve start`` to AVAILABLE."""
    env = tf_env()
    env["TFSERVE_MAGIC_HOME"] = str(workdir / "registry")
    workdir.mkdir(parents=True, exist_ok=True)
    import_command = [sys.executable, "-c", "import tensorflow"]
    _wall(import_command, env)  # warm the page cache; not counted
    import_times, start_times = [], []
    for _ in range(repeats):
        import_times.append(_wall(import_command, env))
        command = [sys.executable, "-c", _MAGIC_START, "BenchStartup", str(assets.base_path)]
        done = subprocess.run(
            command + [str(free_port())], env=env, cwd=REPO, capture_output=True, text=True,
            timeout=300,
        )
        lines = [x for x in done.stdout.splitlines() if x.startswith("BENCH ")]
        if done.returncode != 0 or not lines:
            output = done.stdout[-3000:] + done.stderr[-3000:]
            raise RuntimeError(f"%tfserve start failed:\n{output}")
        result = json.loads(lines[-1][len("BENCH ") :])
        if "AVAILABLE" not in result["states"]:
            raise RuntimeError(f"%tfserve start returned before AVAILABLE: {result['states']}")
        start_times.append(result["seconds"])
        log(f"  startup: import tensorflow {import_times[-1]:.2f} s, "
            f"%tfserve start {start_times[-1]:.2f} s")
    return {
        "import_tensorflow_s": statistics.median(import_times),
        "tfserve_start_s": statistics.median(start_times),
        "import_runs_s": import_times,
        "start_runs_s": start_times,
    }


def measure_hot_swap(assets: BenchAssets, workdir: Path, repeats: int, log=print) -> dict:
    """Seconds from a version folder's rename into the base path to it answering predicts."""
    base_path = workdir / "hotswap" / MODEL_NAME
    shutil.rmtree(base_path.parent, ignore_errors=True)
    base_path.mkdir(parents=True)
    shutil.copytree(assets.versions["A"], base_path / "1")
    info_file = workdir / "hotswap.info.json"
    info_file.unlink(missing_ok=True)
    log_path = workdir / "hotswap.log"
    poll_s = 1.0
    command = ours_command(base_path, info_file, f"--file_system_poll_wait_seconds={poll_s:g}")
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO, env=tf_env(), stdout=log_file, stderr=log_file,
            start_new_session=True,
        )
    server = RunningPeer(PEERS["ours"], process, log_path, info_file=info_file)
    body = assets.body_bytes(1)
    swaps = []
    try:
        wait_ready(server, body)
        for step in range(repeats):
            version = step + 2
            tag = "B" if version % 2 == 0 else "A"
            incoming = base_path / f"incoming-{version}"
            shutil.copytree(assets.versions[tag], incoming)
            is_new = prediction_checker(assets.expected[(tag, 1)])
            appeared = time.perf_counter()
            os.rename(incoming, base_path / str(version))
            served = _poll_until_served(server.url, body, is_new, timeout=120.0)
            swaps.append(served - appeared)
            log(f"  hot swap to version {version}: {swaps[-1]:.2f} s")
            # Let the old version unload, then rename at a random point of the poll interval:
            # equal pauses would lock every later swap to the same phase of the server's poll.
            time.sleep(poll_s * 1.5 + random.uniform(0.0, poll_s))
    finally:
        server.stop()
    return {
        "seconds": statistics.median(swaps) if swaps else float("nan"),
        "runs_s": swaps,
        "poll_wait_seconds": poll_s,
    }


def _poll_until_served(url: str, body: bytes, is_new, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200 and is_new(response.read()):
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"the new version was not served within {timeout:.0f} s")
