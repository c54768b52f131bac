"""The peers: how each one is started, found ready, measured for memory and stopped.

Every peer is its own process serving the same SavedModel at ``/v1/models/MLP:predict``, except
the in-process ceiling, which runs the same work in a loop and answers over a pipe.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import psutil

from bench.env import REPO, tf_env
from bench.model import MODEL_NAME

BATCHING_FILE = Path(__file__).with_name("batching.pbtxt")
PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"


@dataclass(frozen=True)
class PeerSpec:
    key: str
    label: str
    short: str  # for chart legends


PEERS = {
    "flask": PeerSpec("flask", "Flask, tutorial style (threaded dev server)", "Flask"),
    "fastapi": PeerSpec("fastapi", "FastAPI + pydantic body model (uvicorn)", "FastAPI"),
    "kserve": PeerSpec("kserve", "KServe 0.21 model server (kserve.Model, V1)", "KServe"),
    "mlserver": PeerSpec("mlserver", "MLServer 1.7 (custom runtime, V2)", "MLServer"),
    "ours": PeerSpec("ours", "tfserve_magic serve --workers=1", "ours"),
    "ours_w2": PeerSpec("ours_w2", "tfserve_magic serve --workers=2", "ours x2"),
    "ours_wauto": PeerSpec("ours_wauto", "tfserve_magic serve --workers=auto", "ours auto"),
    "ours_batching": PeerSpec(
        "ours_batching", "tfserve_magic serve --enable_batching (1 worker)", "ours + batching"
    ),
    "tfs": PeerSpec("tfs", "tensorflow_model_server (TF Serving)", "TF Serving"),
    "ceiling": PeerSpec("ceiling", "in-process loop, no HTTP (ceiling)", "in-process ceiling"),
}


def ours_key(workers: str) -> str:
    """The peer key of our server with ``--workers=workers`` (registered on first use)."""
    workers = str(workers).strip().lower()
    key = "ours" if workers == "1" else f"ours_w{workers}"
    if key not in PEERS:
        PEERS[key] = PeerSpec(key, f"tfserve_magic serve --workers={workers}", f"ours x{workers}")
    return key


def workers_of(key: str) -> str:
    return "1" if key in ("ours", "ours_batching") else key[len("ours_w"):]


def v2_body(v1_body: bytes) -> bytes:
    """The same images as one V2 (Open Inference Protocol) FP32 tensor, for MLServer."""
    import numpy as np
    import orjson

    x = np.asarray(orjson.loads(v1_body)["instances"], dtype=np.float32)
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32",
              "data": x.reshape(-1).tolist()}
    return orjson.dumps({"inputs": [tensor]})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ours_command(base_path: Path, info_file: Path, *extra: str, port: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tfserve_magic",
        "serve",
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={base_path}",
        f"--rest_api_port={port}",
        "--port=0",  # a free gRPC port (bench/grpc_load.py reads it from the info file)
        f"--info_file={info_file}",
        f"--parent_pid={os.getpid()}",  # gone with the harness, however it ends
        *extra,
        *([] if any(e.startswith("--workers") for e in extra) else ["--workers=1"]),
    ]


@dataclass
class RunningPeer:
    """A started peer process; ``url`` is its predict URL once ready."""

    spec: PeerSpec
    process: subprocess.Popen
    log_path: Path
    url: str = ""
    info_file: Optional[Path] = None
    started_at: float = field(default_factory=time.perf_counter)
    protocol: str = "v1"  # "v2": MLServer's bodies and answers (see body_file)
    workdir: Optional[Path] = None

    def body_file(self, v1_file: Path) -> Path:
        """The body this peer is sent for the images in ``v1_file`` (V1 JSON)."""
        if self.protocol == "v1":
            return v1_file
        converted = (self.workdir or v1_file.parent) / f"{self.protocol}-{v1_file.name}"
        if not converted.exists():
            converted.write_bytes(v2_body(v1_file.read_bytes()))
        return converted

    def cpu_seconds(self) -> float:
        """CPU time used so far by the serving process and its children (all workers)."""
        try:
            root = psutil.Process(self.pid)
            total = 0.0
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
            return total
        except psutil.Error:
            return float("nan")

    @property
    def pid(self) -> int:
        """The process doing the serving (ours: from the info file, in case of a wrapper)."""
        if self.info_file is not None and self.info_file.exists():
            return int(json.loads(self.info_file.read_text())["pid"])
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident memory of the serving process and its children."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
        except psutil.Error:
            return float("nan")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


class CeilingPeer(RunningPeer):
    """The in-process loop: measured by sending it orders over its stdin."""

    def measure(self, body_file: Path, seconds: float) -> dict:
        order = json.dumps({"body": str(body_file), "seconds": seconds})
        self.process.stdin.write(order + "\n")
        self.process.stdin.flush()
        return _read_result(self.process, timeout=seconds + 120)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
        super().stop(timeout)


def _read_result(process: subprocess.Popen, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"ceiling process exited ({process.poll()})")
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH ") :])
    raise RuntimeError("ceiling process did not answer in time")


def start_peer(
    key: str,
    saved_model: Path,
    base_path: Path,
    workdir: Path,
    batching_file: Path = BATCHING_FILE,
    tag: str = "",
) -> RunningPeer:
    """Launch peer ``key`` (not waiting for it): see ``wait_ready``."""
    spec = PEERS[key]
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{key}{tag}.log"
    env = tf_env()
    port = free_port()
    info_file = None
    protocol = "v1"
    if key == "ceiling":
        command = [sys.executable, "-m", "bench.ceiling", str(saved_model)]
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, start_new_session=True,
            )
        return CeilingPeer(spec, process, log_path)
    if key == "flask":
        command = [sys.executable, "-m", "bench.flask_peer", str(saved_model), str(port)]
    elif key == "fastapi":
        env["BENCH_SAVED_MODEL"] = str(saved_model)
        command = [sys.executable, "-m", "uvicorn", "bench.fastapi_peer:app"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
    elif key in ("kserve", "mlserver"):
        from bench import peer_envs

        python = str(peer_envs.ensure(key))
        if key == "kserve":
            command = [python, str(REPO / "bench" / "kserve_peer.py"), str(saved_model), str(port)]
        else:
            command = [python, "-m", "bench.mlserver_peer", str(saved_model.resolve()), str(port),
                       str(workdir / f"mlserver{tag}")]
            protocol = "v2"
    elif key.startswith("ours"):
        info_file = workdir / f"{key}{tag}.info.json"
        info_file.unlink(missing_ok=True)
        extra = [f"--workers={workers_of(key)}"]
        if key == "ours_batching":
            extra += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        command = ours_command(base_path, info_file, *extra)
    elif key == "tfs":
        command = [shutil.which("tensorflow_model_server") or "tensorflow_model_server"]
        command += [f"--port={free_port()}", f"--rest_api_port={port}"]
        command += [f"--model_name={MODEL_NAME}", f"--model_base_path={base_path}"]
    else:
        raise KeyError(f"unknown peer {key!r}; known: {', '.join(PEERS)}")
    with open(log_path, "w") as log:
        process = subprocess.Popen(  # MLServer writes a .metrics folder into its cwd
            command, cwd=workdir if key == "mlserver" else REPO, env=env, stdout=log,
            stderr=log, start_new_session=True,
        )
    peer = RunningPeer(spec, process, log_path, info_file=info_file, protocol=protocol,
                       workdir=workdir)
    if info_file is None:
        path = f"/v2/models/{MODEL_NAME}/infer" if protocol == "v2" else PREDICT_PATH
        peer.url = f"http://127.0.0.1:{port}{path}"
    return peer


def wait_ready(peer: RunningPeer, probe_body: bytes, timeout: float = 180.0) -> float:
    """Block until ``peer`` answers a predict with 200; return seconds since it was launched."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if peer.process.poll() is not None:
            raise RuntimeError(
                f"{peer.spec.label} exited with {peer.process.returncode}:\n{peer.log_tail()}"
            )
        if isinstance(peer, CeilingPeer):
            _read_result(peer.process, timeout)
            return time.perf_counter() - peer.started_at
        if not peer.url and peer.info_file is not None and peer.info_file.exists():
            info = json.loads(peer.info_file.read_text())
            peer.url = f"{info['url'].rstrip('/')}{PREDICT_PATH}"
        status, answer = _predict(peer.url, probe_body) if peer.url else (None, b"")
        if status == 200:
            return time.perf_counter() - peer.started_at
        # TF Serving and MLServer bind their port before the model is loaded.
        if status is not None and not (peer.spec.key in ("tfs", "mlserver")
                                       and status in (400, 404, 503)):
            raise RuntimeError(
                f"{peer.spec.label} answered the first predict with HTTP {status}: "
                f"{answer[:500].decode(errors='replace')}"
            )
        time.sleep(0.1)
    raise RuntimeError(f"{peer.spec.label} not ready after {timeout:.0f} s:\n{peer.log_tail()}")


def _predict(url: str, body: bytes) -> tuple[Optional[int], bytes]:
    """(HTTP status, body) of one predict, or (None, b"") when nothing answers yet."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, b""
