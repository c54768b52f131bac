"""``make soak``: minutes of mixed load on a ``--workers 2`` server, with hot swaps and kills.

What a notebook server lives through in a long session, on loopback only: 1- and 100-image
predicts over REST and gRPC and status calls from a few client threads (``tfserve_magic.Client``,
which retries once after a reset), a new model version copied in every ``--swap-every`` seconds
(versions A and B of the benchmark MLP in turn, so every answer must be one of the two), and a
worker SIGKILLed every ``--kill-every`` seconds (the parent replaces it). Every ``--interval`` it
prints a row: requests and failures in the interval, then resident memory and open files
(``/proc/PID/fd``) of the parent and of each worker, so a leak shows as a column that only grows.
Nothing is asserted about timings; the exit code is 1 only when the server died or stopped
answering. Bounded: ``--threads`` clients, stops by itself after ``--minutes``.

    make soak SOAK_MINUTES=5          # or: python -m bench.soak --minutes 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.env import REPO
from bench.model import MODEL_NAME, prepare_assets
from bench.peers import RunningPeer, ours_key, start_peer, wait_ready

KINDS = ("rest-1", "rest-100", "grpc-1", "grpc-100", "status")
START_TIMEOUT_S = 180.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--minutes", type=float,
                        default=float(os.environ.get("SOAK_MINUTES") or 5),
                        help="how long the load runs (default: $SOAK_MINUTES or 5)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="run this many seconds instead (short checks)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    parser.add_argument("--swap-every", type=float, default=30.0,
                        help="seconds between new model versions (default 30)")
    parser.add_argument("--kill-every", type=float, default=60.0,
                        help="seconds between worker SIGKILLs (default 60; 0: none)")
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds per report row (default 30, or a sixth of a short run)")
    parser.add_argument("--build-dir", type=Path, default=REPO / "build" / "bench",
                        help="where the benchmark model is trained once and cached")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    args.duration = args.seconds if args.seconds is not None else args.minutes * 60.0
    if args.duration <= 0 or args.threads < 1 or args.workers < 1:
        parser.error("--minutes/--seconds, --threads and --workers must be positive")
    if args.interval is None:
        args.interval = min(30.0, max(2.0, args.duration / 6))
    return args


# ---- the server (bench/peers.py starts it as it does for `make bench`) ----


def read_info(peer: RunningPeer) -> dict:
    """The server's info file as written now (the workers with their pids, states and
    restarts), or {} while it is being replaced."""
    try:
        return json.loads(peer.info_file.read_text())
    except (OSError, ValueError):
        return {}


def start_server(assets, base_path: Path, workdir: Path, workers: int) -> RunningPeer:
    peer = start_peer(ours_key(str(workers)), assets.versions["A"], base_path, workdir)
    try:
        wait_ready(peer, assets.body_bytes(1), timeout=START_TIMEOUT_S)
    except BaseException:
        peer.stop()
        raise
    return peer


def server_events(log_path: Path) -> list[str]:
    """The server log's lines about workers dying, being replaced, and the server failing."""
    pattern = re.compile(r"Worker \d+ (\(pid \d+\) (was killed|exited)|replaced)|Starting a "
                         r"replacement|Server failed|Server ready:")
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.split("] ", 1)[-1] for line in lines if pattern.search(line)]


# ---- the load ----


@dataclass
class Tally:
    """Requests and failures per kind; the interval's counts are taken and reset by ``take``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    total_done: Counter = field(default_factory=Counter)
    total_failed: Counter = field(default_factory=Counter)
    errors: list = field(default_factory=list)

    def add(self, kind: str, error: str | None) -> None:
        with self.lock:
            self.done[kind] += 1
            self.total_done[kind] += 1
            if error is not None:
                self.failed[kind] += 1
                self.total_failed[kind] += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{kind}: {error}")

    def take(self) -> tuple[int, int]:
        with self.lock:
            counts = sum(self.done.values()), sum(self.failed.values())
            self.done.clear()
            self.failed.clear()
        return counts


def load_thread(index: int, info: dict, inputs: dict, expected: dict, tally: Tally,
                stop: threading.Event) -> None:
    """One client: the kinds in turn (shifted per thread), each answer checked."""
    from tfserve_magic.client import Client

    rest = Client(info["url"], model=MODEL_NAME)
    grpc = Client(f"127.0.0.1:{info['grpc_port']}", model=MODEL_NAME, protocol="grpc")
    kinds = itertools.islice(itertools.cycle(KINDS), index, None)
    for kind in kinds:
        if stop.is_set():
            return
        error = None
        try:
            if kind == "status":  # (during a swap no version may be AVAILABLE on every
                rest.status()       # worker at once: not a failure)
            else:
                protocol, n = kind.split("-")
                client = rest if protocol == "rest" else grpc
                answer = client.predict(inputs[int(n)])
                outputs = answer.outputs
                got = np.asarray(next(iter(outputs.values())) if isinstance(outputs, dict)
                                 else outputs, dtype=np.float32)
                if not any(got.shape == want.shape and np.allclose(got, want, atol=1e-4)
                           for want in expected[int(n)]):
                    error = "an answer that is neither version A's nor B's"
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        tally.add(kind, error)


def still_answers(info: dict, x: np.ndarray) -> bool:
    """Whether a plain predict (no retry) succeeds once the load has stopped."""
    from tfserve_magic.client import Client

    try:
        Client(info["url"], model=MODEL_NAME, retries=0).predict(x)
    except Exception:  # noqa: BLE001 - any failure means no
        return False
    return True


# ---- the disturbances ----


class Disturber:
    """Copies a new version in every ``swap_every`` s and SIGKILLs a worker every
    ``kill_every`` s (alternating workers), from the thread that calls ``tick``; the first of
    each comes sooner in a run shorter than three swaps or two kills."""

    def __init__(self, server: RunningPeer, base_path: Path, versions: dict, args):
        self.server = server
        self.base_path = base_path
        self.versions = versions
        self.swap_every = args.swap_every
        self.kill_every = args.kill_every
        self.start = time.monotonic()
        # a short run still sees a swap and a kill
        self.next_swap = self.start + min(self.swap_every, args.duration / 3)
        self.next_kill = (self.start + min(self.kill_every, args.duration / 2)
                          if self.kill_every > 0 else float("inf"))
        self.version = 1
        self.swaps = 0
        self.kills: list[int] = []

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.next_swap:
            self.next_swap += self.swap_every
            self._swap()
        if now >= self.next_kill:
            self.next_kill += self.kill_every
            self._kill()

    def _swap(self) -> None:
        self.version += 1
        tag = "B" if self.version % 2 == 0 else "A"
        staging = self.base_path.parent / f".staging-{self.version}"
        shutil.copytree(self.versions[tag], staging)
        staging.rename(self.base_path / str(self.version))  # appears whole, as an export does
        self.swaps += 1
        for old in self.base_path.iterdir():  # keep the folder small: the last three
            if old.name.isdigit() and int(old.name) < self.version - 2:
                shutil.rmtree(old, ignore_errors=True)

    def _kill(self) -> None:
        workers = [w for w in read_info(self.server).get("workers", [])
                   if w.get("state", "ready") == "ready"]
        if not workers:
            return
        victim = workers[len(self.kills) % len(workers)]
        try:
            os.kill(victim["pid"], signal.SIGKILL)
            self.kills.append(victim["pid"])
        except ProcessLookupError:
            pass


# ---- measuring ----


def process_sample(pid: int) -> tuple[int | None, int | None]:
    """(resident MiB, open files) of ``pid`` from /proc; None where it cannot be read."""
    rss = fds = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        pass
    return rss, fds


def sample_row(elapsed: float, server: RunningPeer, tally: Tally, disturber: Disturber
               ) -> dict:
    requests_, failures = tally.take()
    info = read_info(server)
    row = {"t_s": round(elapsed), "requests": requests_, "failures": failures,
           "version": disturber.version, "kills": len(disturber.kills),
           "restarts": info.get("restarts", 0),
           "parent": process_sample(server.process.pid), "workers": []}
    for worker in info.get("workers", []):
        row["workers"].append({"index": worker["index"], "pid": worker["pid"],
                               "state": worker.get("state", "ready"),
                               "sample": process_sample(worker["pid"])})
    return row


def _cell(sample) -> str:
    rss, fds = sample
    return f"{'?' if rss is None else rss:>5} MiB {'?' if fds is None else fds:>4} fd"


def _worker_cell(worker: dict) -> str:
    state = "" if worker["state"] == "ready" else f" ({worker['state']})"
    return f"w{worker['index']} {worker['pid']:>7} {_cell(worker['sample'])}{state}"


def format_row(row: dict) -> str:
    workers = "  ".join(_worker_cell(w) for w in row["workers"])
    return (f"{row['t_s']:>6} {row['requests']:>8} {row['failures']:>8} {row['version']:>4} "
            f"{row['kills']:>5} {row['restarts']:>8}  parent {_cell(row['parent'])}  {workers}")


HEADER = (f"{'t (s)':>6} {'requests':>8} {'failures':>8} {'ver':>4} {'kills':>5} "
          f"{'restarts':>8}  memory and open files of the parent and each worker")


# ---- the run ----


def soak(args, log=print) -> int:
    assets = prepare_assets(args.build_dir, log=log)
    inputs, expected = {}, {}
    for n in (1, 100):
        body = json.loads(assets.body_bytes(n))
        inputs[n] = np.asarray(body["instances"], dtype=np.float32)
        expected[n] = [assets.expected[(tag, n)] for tag in ("A", "B")]
    workdir = Path(tempfile.mkdtemp(prefix="tfserve-soak-"))
    base_path = workdir / MODEL_NAME
    shutil.copytree(assets.versions["A"], base_path / "1")
    log(f"Soak: {args.duration:.0f} s, {args.threads} client threads, {args.workers} workers, "
        f"a new version every {args.swap_every:.0f} s, a worker killed every "
        f"{args.kill_every:.0f} s; the server's log in {workdir}")
    server = start_server(assets, base_path, workdir, args.workers)
    tally, stop = Tally(), threading.Event()
    disturber = Disturber(server, base_path, assets.versions, args)
    info = read_info(server)
    threads = [threading.Thread(target=load_thread, name=f"soak-{i}", daemon=True,
                                args=(i, info, inputs, expected, tally, stop))
               for i in range(args.threads)]
    rows = []
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        log(HEADER)
        next_row = started + args.interval
        while time.monotonic() - started < args.duration and server.process.poll() is None:
            disturber.tick()
            if time.monotonic() >= next_row:
                next_row += args.interval
                rows.append(sample_row(time.monotonic() - started, server, tally, disturber))
                log(format_row(rows[-1]))
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        rows.append(sample_row(time.monotonic() - started, server, tally, disturber))
        log(format_row(rows[-1]))
        alive = server.process.poll() is None
        answers = alive and still_answers(info, inputs[1])
        server.stop(timeout=30)
        code = server.process.returncode
    total = sum(tally.total_done.values())
    failed = sum(tally.total_failed.values())
    log(f"\n{total} requests, {failed} failed; {disturber.swaps} new versions, "
        f"{len(disturber.kills)} workers killed, {rows[-1]['restarts']} restarts; the server "
        f"{'stopped cleanly' if alive and code == 0 else f'DIED (exit code {code})'}")
    for kind in KINDS:
        log(f"  {kind:<9} {tally.total_done[kind]:>8} requests {tally.total_failed[kind]:>6} "
            "failed")
    for error in tally.errors:
        log(f"  failure: {error}")
    for line in server_events(server.log_path):
        log(f"  server: {line}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "requests": dict(tally.total_done),
                                         "failed": dict(tally.total_failed),
                                         "errors": tally.errors, "server_exit": code}, indent=1))
    if not answers:
        log("the server did not answer a last predict after the load")
    if alive and code == 0 and answers:
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    log(f"kept {workdir} (the server log is there)")
    return 1


def main(argv=None) -> int:
    return soak(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
