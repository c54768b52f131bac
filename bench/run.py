"""``make bench``: run every peer under the same load, then write docs/benchmarks.{md,png}.

Rounds alternate the peers (the order rotates each round) over every body size and concurrency,
and the report uses each cell's median over rounds. ``--quick`` is a smoke run of a minute or two.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import decode_report, grpc_load, load, report, timings
from bench.model import BODY_SIZES, BenchAssets, prepare_assets
from bench.peers import (
    BATCHING_FILE,
    PEERS,
    REPO,
    CeilingPeer,
    RunningPeer,
    ours_key,
    start_peer,
    tf_env,
    wait_ready,
)
from bench.sweep import sweep

# --only: the parts of a run, each skipped unless named
PARTS = ("decode", "startup", "http", "grpc", "hot-swap", "session-path", "sweep", "tail",
         "warmup")
OTHER_PEERS = ("flask", "fastapi", "kserve", "mlserver", "tfs", "ceiling")
SAMPLE_CHECKS = 3  # responses per wrk measurement whose values the Python client checks


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 short round")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per measurement (5, quick 2)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated (default 1,8,32)")
    parser.add_argument("--bodies", default="1,100", help="images per request (default 1,100)")
    parser.add_argument(
        "--peers", default="flask,fastapi,kserve,mlserver,ours,ours_batching,tfs,ceiling",
        help="comma-separated subset (`none`: our server only); `ours` is our server with each "
             "--workers value; tfs is skipped when tensorflow_model_server is not on PATH; "
             "kserve and mlserver are pip-installed into build/bench/venvs/ on first use",
    )
    parser.add_argument("--workers", default="1,2,auto",
                        help="our server's --workers values to measure (default 1,2,auto)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--profile", choices=["auto", "always", "never"],
                        help="py-spy our server: when a target is missed (auto; the default, "
                             "except with --quick: never), always, never")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timing")
    parser.add_argument("--no-hot-swap", action="store_true", help="skip the hot-swap timing")
    parser.add_argument("--no-decode", action="store_true", help="skip the decode-speed run")
    parser.add_argument("--no-session-path", action="store_true",
                        help="skip the session-path vs TF2-path run (bench/session_path.py)")
    parser.add_argument("--no-grpc", action="store_true", help="skip gRPC vs REST on ours")
    parser.add_argument("--no-warmup-bench", action="store_true",
                        help="skip the first request after start/hot swap with and without "
                             "warm-up records (bench/warmup_first_request.py)")
    parser.add_argument("--batching-sweep", choices=["auto", "on", "off"], default="auto",
                        help="try a few batching settings at 1 image, c=32 (auto: not with "
                             "--quick)")
    parser.add_argument("--tail", choices=["auto", "on", "off"], default="auto",
                        help="where the p99 at 1 image, c=32 goes (bench/tail.py; needs wrk; "
                             "auto: on)")
    parser.add_argument("--only", metavar="PARTS",
                        help="comma-separated parts to run, every other part skipped: "
                             + ", ".join(PARTS) + " (http: the peers' throughput table; e.g. "
                             "`--only decode` or `--quick --only http --peers mlserver,ours "
                             "--workers auto --bodies 100 --concurrency 8`)")
    parser.add_argument("--from-results", type=Path, metavar="JSON",
                        help="measure nothing: rewrite the docs from a saved results.json")
    parser.add_argument("--build-dir", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--docs-dir", type=Path, default=REPO / "docs",
                        help="where benchmarks.md and benchmarks.png are written")
    args = parser.parse_args(argv)
    _apply_only(parser, args)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.warmup = 0.5 if args.quick else 1.5
    args.repeats = 1 if args.quick else 3
    args.profile = args.profile or ("never" if args.quick else "auto")
    if args.batching_sweep == "auto":
        args.batching_sweep = "off" if args.quick else "on"
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.bodies = [int(n) for n in args.bodies.split(",")]
    unknown = set(args.bodies) - set(BODY_SIZES)
    if unknown:
        parser.error(f"--bodies: only {BODY_SIZES} are prepared, not {sorted(unknown)}")
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    if wanted == ["none"]:
        wanted = ["ours"]
    args.peers = []
    for key in wanted:
        if key == "ours":
            for value in args.workers.split(","):
                try:
                    args.peers.append(ours_key(_workers_value(value)))
                except ValueError as exc:
                    parser.error(f"--workers: {exc}")
        elif key not in PEERS:
            parser.error(f"--peers: unknown {key!r}; known: {', '.join(PEERS)}, none")
        else:
            args.peers.append(key)
    args.peers = list(dict.fromkeys(args.peers))
    if "tfs" in args.peers and not shutil.which("tensorflow_model_server"):
        args.peers.remove("tfs")
    if not args.http:  # --only without http: no peer is started
        args.peers = []
    if args.generator == "auto":
        args.generator = "wrk" if load.wrk_path() else "python"
    elif args.generator == "wrk" and not load.wrk_path():
        parser.error("--generator wrk: wrk is not installed (apt-get install wrk)")
    return args


def _apply_only(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--only PARTS: the --no-* / off settings of every part not named."""
    args.http = True
    if not args.only:
        return
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    args.no_decode = "decode" not in parts
    args.no_startup = "startup" not in parts
    args.no_hot_swap = "hot-swap" not in parts
    args.no_session_path = "session-path" not in parts
    args.no_warmup_bench = "warmup" not in parts
    args.no_grpc = "grpc" not in parts
    args.batching_sweep = "on" if "sweep" in parts else "off"
    args.tail = "auto" if "tail" in parts else "off"
    args.http = "http" in parts or "grpc" in parts or "sweep" in parts
    if not args.http:
        args.profile = "never"


def _workers_value(text: str) -> str:
    from tfserve_magic.server.sizing import parse_workers

    count = parse_workers(text)
    return "auto" if count is None else str(count)


def http_keys(peers) -> list:
    """The HTTP peers among ``peers``, in the report's order."""
    return [k for k in PEERS if k in peers and k != "ceiling"]


def measure_http(peer: RunningPeer, assets: BenchAssets, n_images: int, concurrency: int,
                 seconds: float, generator: str) -> dict:
    body_file = peer.body_file(assets.bodies[n_images])
    body = body_file.read_bytes()
    check = load.prediction_checker(assets.expected[("A", n_images)], protocol=peer.protocol)
    cpu_before, wall_before = peer.cpu_seconds(), time.perf_counter()
    if generator == "wrk":
        wrong = load.check_sample(peer.url, body, check, SAMPLE_CHECKS)
        cpu_before, wall_before = peer.cpu_seconds(), time.perf_counter()
        marker = "outputs" if peer.protocol == "v2" else "predictions"
        result = load.run_wrk(peer.url, body_file, concurrency, seconds, marker)
        result.errors += wrong
        result.checked += SAMPLE_CHECKS
    else:
        result = load.run_python(peer.url, body, concurrency, seconds, check)
    row = result.to_dict()
    # How many cores the server kept busy (all its processes): the workers' whole point.
    row["server_cores"] = (peer.cpu_seconds() - cpu_before) / (time.perf_counter() - wall_before)
    return row


def _generator_for(args, assets: BenchAssets, peer: RunningPeer, n_images: int) -> str:
    """wrk, except for slow peers: wrk drops the requests still in flight at its deadline, and
    when a few requests take seconds each that is much of the count. The Python client lets
    them finish and counts them; at these rates it costs the shared cores next to nothing."""
    if args.generator != "wrk":
        return args.generator
    check = load.prediction_checker(assets.expected[("A", n_images)], protocol=peer.protocol)
    body = peer.body_file(assets.bodies[n_images]).read_bytes()
    one_by_one = load.run_python(peer.url, body, 1, 60.0, check, max_requests=3)
    return "python" if one_by_one.per_second < load.SLOW_PEER_PER_SECOND else "wrk"


def measure_ceiling(peer: CeilingPeer, assets: BenchAssets, n_images: int, seconds: float) -> dict:
    raw = peer.measure(assets.bodies[n_images], seconds)
    check = load.prediction_checker(assets.expected[("A", n_images)])
    ok = check(raw["response"].encode())
    return {
        "requests": raw["requests"], "seconds": raw["seconds"], "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"], "errors": 0 if ok else 1, "checked": 1, "generator": "loop",
        "per_second": raw["requests"] / raw["seconds"],
    }


def run_rounds(args, assets: BenchAssets, peers: dict) -> list:
    """Every (round, body, concurrency, peer) measurement, peers alternating between rounds."""
    rows = []
    keys = http_keys(peers)
    generators = {}  # (peer, images) -> the load generator its cells use
    for key in keys:  # warm-up: first calls, thread pools, caches; not recorded
        for n_images in args.bodies:
            generators[key, n_images] = _generator_for(args, assets, peers[key], n_images)
            measure_http(peers[key], assets, n_images, 8, args.warmup, "python")
    for round_index in range(args.rounds):
        for n_images in args.bodies:
            if "ceiling" in peers:
                row = measure_ceiling(peers["ceiling"], assets, n_images, args.seconds)
                rows.append(_row("ceiling", round_index, n_images, 1, row, peers["ceiling"]))
            for c_index, concurrency in enumerate(args.concurrency):
                shift = (round_index + c_index) % max(1, len(keys))
                for key in keys[shift:] + keys[:shift]:
                    peer = peers[key]
                    try:
                        row = measure_http(peer, assets, n_images, concurrency, args.seconds,
                                           generators[key, n_images])
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        log(f"  {key}: measurement failed: {exc}")
                        row = {"requests": 0, "seconds": args.seconds, "p50_ms": float("nan"),
                               "p99_ms": float("nan"), "errors": 1, "checked": 0,
                               "generator": args.generator, "per_second": 0.0}
                    rows.append(_row(key, round_index, n_images, concurrency, row, peer))
    return rows


def _row(key, round_index, n_images, concurrency, row, peer) -> dict:
    row.update({"peer": key, "round": round_index, "n_images": n_images,
                "concurrency": concurrency, "rss_mb": peer.rss_mb()})
    log(f"  r{round_index} {key:<14} {n_images:>3} img c={concurrency:<3} "
        f"{row['per_second']:9.1f} req/s  p50 {row['p50_ms']:8.2f} ms  "
        f"p99 {row['p99_ms']:8.2f} ms  errors {row['errors']}")
    return row


def summarise(rows: list) -> list:
    """Median over rounds for every (peer, body, concurrency) cell."""
    cells: dict = {}
    for row in rows:
        cells.setdefault((row["peer"], row["n_images"], row["concurrency"]), []).append(row)
    summary = []
    for (key, n_images, concurrency), cell in cells.items():
        per_second = statistics.median(r["per_second"] for r in cell)
        summary.append({
            "peer": key, "n_images": n_images, "concurrency": concurrency,
            "per_second": per_second, "images_per_second": per_second * n_images,
            "p50_ms": statistics.median(r["p50_ms"] for r in cell),
            "p99_ms": statistics.median(r["p99_ms"] for r in cell),
            "rss_mb": max(r["rss_mb"] for r in cell),
            "server_cores": statistics.median(r.get("server_cores", float("nan")) for r in cell),
            "errors": sum(r["errors"] for r in cell),
            "checked": sum(r["checked"] for r in cell),
            "requests": sum(r["requests"] for r in cell),
            "rounds": len(cell),
            "spread": [min(r["per_second"] for r in cell), max(r["per_second"] for r in cell)],
        })
    return summary


_DECODE_ROW = re.compile(
    r"^(?P<n>\d+) image\(s\), (?P<style>\S+)\s+(?P<bytes>\d+)\s+(?P<base>[\d.]+)ns\s+"
    r"(?P<ours>[\d.]+)ns\s+(?P<speedup>[\d.]+)x"
)


def run_decode_speed() -> dict | None:
    """The codec's own decode benchmark (bench/decode_speed.py, the codec's file), parsed."""
    if not Path(__file__).with_name("decode_speed.py").exists():
        return None
    done = subprocess.run(
        [sys.executable, "-m", "bench.decode_speed"],
        cwd=REPO, env=tf_env(), capture_output=True, text=True, timeout=600,
    )
    result = {"returncode": done.returncode, "output": done.stdout[-4000:] + done.stderr[-2000:]}
    rows = []
    for line in done.stdout.splitlines():
        match = _DECODE_ROW.match(line.strip())
        if match:
            rows.append({
                "n_images": int(match["n"]), "style": match["style"], "bytes": int(match["bytes"]),
                "baseline_ms": float(match["base"]) / 1e6, "ours_ms": float(match["ours"]) / 1e6,
            })
    if done.returncode == 0 and rows:
        data = {"rows": rows}
        classic = [r for r in rows if r["n_images"] == 100 and r["style"] == "json.dumps"]
        if classic:  # what the classic clients send, like the served bodies
            data["speedup_100"] = classic[0]["baseline_ms"] / classic[0]["ours_ms"]
        result["data"] = data
    return result


def write_docs(results: dict, docs_dir: Path) -> None:
    md_path, png_path = docs_dir / "benchmarks.md", docs_dir / "benchmarks.png"
    report.write_chart(results, png_path)
    report.write_markdown(results, md_path, png_path)
    if results.get("session_path"):
        from bench.session_path import write_section

        write_section(results["session_path"], md_path)
    if results.get("warmup_first_request") and "error" not in results["warmup_first_request"]:
        from bench import warmup_first_request

        warmup_first_request.write_section(results["warmup_first_request"], md_path)
    log(f"Wrote {md_path} and {png_path}")
    for target in results["targets"]:
        log(f"  {target['status']:<5} {target['name']}: {target['measured']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_results:
        results = json.loads(args.from_results.read_text())
        results["targets"] = report.evaluate_targets(results)
        write_docs(results, args.docs_dir)
        return 0
    # SIGTERM ends the run like Ctrl-C does, so every `finally` stops the peers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    build_dir = args.build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    workdir = build_dir / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.time()
    results = {"machine": report.machine_info(args.generator), "settings": {
        "rounds": args.rounds, "seconds": args.seconds, "concurrency": args.concurrency,
        "bodies": args.bodies, "peers": args.peers, "generator": args.generator,
        "quick": args.quick, "profile": args.profile,
        "batching_parameters": BATCHING_FILE.read_text(),
    }}
    log(f"Preparing the model and bodies under {build_dir} ...")
    assets = prepare_assets(build_dir, log=log)
    results["data_source"] = assets.data_source
    if not args.no_decode:
        log("Decode speed (bench/decode_speed.py) ...")
        results["decode"] = run_decode_speed()
        log("SIMD decode table (bench/decode_simd.py, about a minute) ...")
        results["decode_simd"] = decode_report.run()
    if not args.no_startup:
        log("Start-up: bare `import tensorflow` vs `%tfserve start` to AVAILABLE ...")
        results["startup"] = _guarded(timings.measure_startup, assets, workdir / "startup",
                                      args.repeats, log=log)
    peers: dict = {}
    try:
        if args.peers:
            log(f"Starting peers: {', '.join(args.peers)} ...")
        results["ready_s"], results["failed_peers"] = {}, {}
        for key in args.peers:
            try:
                peers[key] = start_peer(key, assets.versions["A"], assets.base_path, workdir)
            except (OSError, subprocess.SubprocessError) as exc:  # e.g. pip could not install it
                log(f"  {key} left out: {exc}")
                results["failed_peers"][key] = str(exc)[:1500]
        for key in list(peers):
            try:
                probe = peers[key].body_file(assets.bodies[1]).read_bytes()
                results["ready_s"][key] = wait_ready(peers[key], probe)
            except RuntimeError as exc:  # reported, and the run goes on without it
                log(f"  {key} left out: {exc}")
                results["failed_peers"][key] = str(exc)[:1500]
                peers.pop(key).stop()
        if peers:
            log(f"Measuring: {args.rounds} round(s) x {len(args.bodies)} bodies x "
                f"{len(args.concurrency)} concurrencies x {args.seconds:g} s, via "
                f"{args.generator}")
        results["measurements"] = run_rounds(args, assets, peers)
        if "ours" in peers and not args.no_grpc:
            log("gRPC vs REST on our server (bench/grpc_load.py) ...")
            results["grpc"] = _guarded(grpc_load.measure, peers["ours"], assets, args, log=log,
                                       rest=lambda n, c: measure_http(
                                           peers["ours"], assets, n, c, args.seconds,
                                           args.generator))
        results["idle_rss_mb"] = {key: peer.rss_mb() for key, peer in peers.items()}
    finally:
        for peer in peers.values():
            peer.stop()
    results["summary"] = summarise(results["measurements"])
    if not args.no_hot_swap:
        log("Hot swap: a new version folder renamed in, until it answers ...")
        results["hot_swap"] = _guarded(timings.measure_hot_swap, assets, workdir, args.repeats,
                                       log=log)
    if not args.no_session_path:
        from bench import session_path

        results["session_path"] = _guarded(session_path.run, assets, workdir / "session",
                                           args.seconds, args.quick, log=log)
    if not args.no_warmup_bench:
        from bench import warmup_first_request

        log("First request after start and after a hot swap, with and without warm-up ...")
        results["warmup_first_request"] = _guarded(warmup_first_request.run,
                                                   1 if args.quick else 3)
    if args.batching_sweep == "on" and "ours_batching" in args.peers:
        log("Batching parameters sweep (1 image, c=32) ...")
        results["batching_sweep"] = sweep(assets, workdir / "sweep", args.seconds,
                                          args.generator, log=log)
    if args.tail != "off" and args.generator == "wrk":
        from bench.tail import run_tail

        log("Tail at 1 image, c=32: GC pauses and event-loop stalls (bench/tail.py) ...")
        results["tail"] = _guarded(run_tail, assets, workdir / "tail",
                                   4.0 if args.quick else 10.0, log=log)
    results["targets"] = report.evaluate_targets(results)
    results["profiles"] = _profiles(args, assets, workdir, results["targets"])
    results["elapsed_s"] = time.time() - started
    results["machine"]["load_average_end"] = os.getloadavg()
    (build_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    log(f"Measured in {results['elapsed_s'] / 60:.1f} min")
    write_docs(results, args.docs_dir)
    return 0


def _guarded(function, *args, **kwargs):
    """A timing that fails is reported as such instead of ending the run."""
    try:
        return function(*args, **kwargs)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(f"  failed: {exc}")
        return {"error": str(exc)[-2000:]}


def _profiles(args, assets: BenchAssets, workdir: Path, targets: list) -> list:
    from bench.profile import profile_ours, py_spy_path

    if args.profile == "never" or py_spy_path() is None:
        return []
    cases = {(t["n_images"], t["concurrency"], t.get("batching", False))
             for t in targets if t.get("profile") and (args.profile == "always"
                                                      or t["status"] == "miss")}
    profiles = []
    for n_images, concurrency, batching in sorted(cases):
        log(f"Profiling ours ({'batching, ' if batching else ''}{n_images} img, "
            f"c={concurrency}) with py-spy ...")
        summary = _guarded(profile_ours, assets, workdir, n_images, concurrency,
                           max(args.seconds, 4.0), batching=batching)
        profiles.append(summary)
    return profiles


if __name__ == "__main__":
    raise SystemExit(main())
