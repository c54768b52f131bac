"""Where the p99 goes: our server at 1 image, c=32, with its GC pauses and event-loop stalls.

``python -m bench.tail`` runs wrk against our server in a few configurations (default; garbage
collector off; TensorFlow on one thread; two workers) and reports, per configuration, the
client's p50/p99, the server's own request-latency quantiles (its Prometheus histogram: time
inside the app, from the request's arrival at the app to its answer), the garbage collector's
pauses and the event loop's stalls during the load. The last two come from a ``sitecustomize``
hook put on the server's ``PYTHONPATH`` (``gc.callbacks`` and a 2 ms timer on the loop); the
server itself is unchanged. docs/benchmarks.md says what the numbers showed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import urllib.request
from pathlib import Path

from bench import load
from bench.model import BODY_SIZES, prepare_assets
from bench.peers import REPO, RunningPeer, start_peer, wait_ready

HOOK = '''
import atexit, gc, json, os, time
_out = os.environ.get("BENCH_TAIL_OUT")
if _out:
    _pauses, _lags, _t = [], [], {}

    def _gc(phase, info):
        now = time.perf_counter()
        if phase == "start":
            _t["gc"] = now
        elif "gc" in _t:
            _pauses.append((time.time(), info["generation"], now - _t.pop("gc")))

    gc.callbacks.append(_gc)
    if os.environ.get("BENCH_TAIL_GC") == "off":
        _real_freeze = gc.freeze

        def _freeze():
            _real_freeze()
            gc.disable()

        gc.freeze = _freeze
    try:
        import uvloop

        _real_loop = uvloop.new_event_loop

        def _new_loop():
            loop = _real_loop()

            def probe(due, last, last_cpu):
                now, cpu = time.perf_counter(), time.thread_time()
                # (when, lateness, wall and main-thread CPU since the previous tick)
                _lags.append((time.time(), now - due, now - last, cpu - last_cpu))
                loop.call_later(0.002, probe, now + 0.002, now, cpu)

            loop.call_soon(probe, time.perf_counter(), time.perf_counter(), time.thread_time())
            return loop

        uvloop.new_event_loop = _new_loop
    except ImportError:
        pass

    def _dump():  # one file per process: with --workers, each worker writes its own
        if not (_pauses or _lags):
            return
        with open(f"{_out}.{os.getpid()}", "w") as fh:
            json.dump({"gc": _pauses, "lags": _lags}, fh)

    atexit.register(_dump)
'''

CONFIGS = {
    "default": ([], {}),
    "gc off": ([], {"BENCH_TAIL_GC": "off"}),
    "TF on 1 thread": (["--tensorflow_intra_op_parallelism=1",
                        "--tensorflow_inter_op_parallelism=1"], {}),
    "2 workers": (["--workers=2"], {}),
}


def _quantile(values: list, q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def histogram_quantiles(before: str, after: str, qs=(0.5, 0.99)) -> list:
    """Quantiles (ms) of the predict request-latency histogram's increase between two scrapes."""
    def buckets(text):
        found = {}
        pattern = re.compile(r':tensorflow:serving:request_latency_bucket\{[^}]*API="predict"'
                             r'[^}]*le="([^"]+)"\} (\d+)')
        for le, count in pattern.findall(text):
            bound = float("inf") if le == "+Inf" else float(le)
            found[bound] = found.get(bound, 0) + int(count)
        return found

    old, new = buckets(before), buckets(after)
    bounds = sorted(new)
    counts = [new[b] - old.get(b, 0) for b in bounds]
    total = counts[-1] if counts else 0
    out = []
    for q in qs:
        if not total:
            out.append(float("nan"))
            continue
        target = q * total
        out.append(next((b / 1000.0 for b, c in zip(bounds, counts) if c >= target),
                        float("inf")))
    return out


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def measure(assets, workdir: Path, name: str, seconds: float, concurrency: int) -> dict:
    flags, env_extra = CONFIGS[name]
    hook_dir = workdir / "tailhook"
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    monitoring = workdir / "monitoring.pbtxt"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    out = workdir / f"tail-{name.replace(' ', '_')}.json"
    for old in workdir.glob(out.name + ".*"):
        old.unlink()
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_TAIL_OUT", "BENCH_TAIL_GC")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir),
                                                             os.environ.get("PYTHONPATH")]))
    os.environ["BENCH_TAIL_OUT"] = str(out)
    os.environ.update(env_extra)
    try:
        import bench.peers as peers

        real = peers.ours_command
        peers.ours_command = lambda base, info, *extra, port=0: real(
            base, info, *extra, f"--monitoring_config_file={monitoring}", *flags, port=port)
        peer: RunningPeer = start_peer("ours", assets.versions["A"], assets.base_path, workdir,
                                       tag=f"-tail-{len(name)}")
        peers.ours_command = real
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        wait_ready(peer, assets.body_bytes(1))
        base = peer.url.split("/v1/")[0]
        load.run_wrk(peer.url, assets.bodies[1], concurrency, 2.0)  # warm-up
        before = _scrape(base + "/metrics")
        started = time.time()
        result = load.run_wrk(peer.url, assets.bodies[1], concurrency, seconds)
        ended = time.time()
        after = _scrape(base + "/metrics")
    finally:
        peer.stop()
    server_p50, server_p99 = histogram_quantiles(before, after)
    row = {"config": name, "per_second": result.per_second, "p50_ms": result.p50_ms,
           "p99_ms": result.p99_ms, "errors": result.errors,
           "server_p50_ms": server_p50, "server_p99_ms": server_p99}
    hook = {"gc": [], "lags": []}
    for part in workdir.glob(out.name + ".*"):
        try:
            data = json.loads(part.read_text())
        except (OSError, ValueError):
            continue
        hook["gc"] += data["gc"]
        hook["lags"] += data["lags"]
    pauses = [(gen, s) for t, gen, s in hook["gc"] if started <= t <= ended]
    ticks = [tick for tick in hook["lags"] if started <= tick[0] <= ended]
    lags = [tick[1] for tick in ticks]
    stalls = [tick for tick in ticks if tick[1] > 0.020]
    # Of the stalls' wall time, how much the loop's thread actually ran: the rest it was
    # waiting for a core (other processes, the load generator, TensorFlow's threads).
    row["stall_on_cpu_share"] = (sum(t[3] for t in stalls) / sum(t[2] for t in stalls)
                                 if stalls else float("nan"))
    row["busy_share"] = (sum(t[3] for t in ticks) / sum(t[2] for t in ticks)
                         if ticks else float("nan"))
    row["gc_collections"] = len(pauses)
    row["gc_full"] = sum(1 for gen, _ in pauses if gen == 2)
    row["gc_max_ms"] = max((s for _, s in pauses), default=0.0) * 1000
    row["gc_total_ms"] = sum(s for _, s in pauses) * 1000
    row["loop_stall_p99_ms"] = _quantile(lags, 0.99) * 1000
    row["loop_stall_max_ms"] = max(lags, default=float("nan")) * 1000
    row["loop_stalls_over_20ms"] = sum(1 for s in lags if s > 0.020)
    return row


def run_tail(assets, workdir: Path, seconds: float, concurrency: int = 32,
             configs=tuple(CONFIGS), log=print) -> list:
    """Every configuration's row (see ``measure``), one server at a time."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in configs:
        log(f"  tail: {name} (1 image, c={concurrency}, {seconds:g} s) ...")
        rows.append(measure(assets, workdir, name, seconds, concurrency))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tail", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    parser.add_argument("--build-dir", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    if not load.wrk_path():
        parser.error("needs wrk (apt-get install wrk)")
    assets = prepare_assets(args.build_dir)
    assert 1 in BODY_SIZES
    workdir = args.build_dir / "tail"
    rows = run_tail(assets, workdir, args.seconds, args.concurrency,
                    [c.strip() for c in args.configs.split(",")])
    (workdir / "tail.json").write_text(json.dumps(rows, indent=1))
    print(format_table(rows))
    return 0


def format_table(rows: list) -> str:
    lines = ["| config | req/s | p50 ms | p99 ms | p99/p50 | in-app p50 / p99 ms | "
             "GC runs (full) | GC max / total ms | loop stall p99 / max ms | stalls > 20 ms | "
             "loop thread on CPU: overall / in stalls |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        lines.append(
            f"| {r['config']} | {r['per_second']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{ratio:.2f}x | {r['server_p50_ms']:.2g} / {r['server_p99_ms']:.2g} | "
            f"{r['gc_collections']} ({r['gc_full']}) | {r['gc_max_ms']:.1f} / "
            f"{r['gc_total_ms']:.0f} | {r['loop_stall_p99_ms']:.1f} / "
            f"{r['loop_stall_max_ms']:.1f} | {r['loop_stalls_over_20ms']} | "
            f"{r['busy_share']:.0%} / {r['stall_on_cpu_share']:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
