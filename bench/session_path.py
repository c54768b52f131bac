"""Session path vs TF2 path: the same SavedModel (the benchmark MLP) loaded both ways.

SavedModels the TF2 object-graph load cannot revive are served from a TF1 session
(server/session_model.py). This measures what that costs, on one model both loaders can load:

- model call: one process loads model A with each loader and times ``Signature.run`` on
  [1,28,28,1] and [100,28,28,1] inputs (rounds interleaved, median wall time per call);
- HTTP: two servers on model A, one forced onto the session path with
  ``TFSERVE_MAGIC_LOADER=session``, driven alternately by the Python load generator.

Target: the session path is at most 10 % slower. ``python -m bench.session_path [--quick]``
runs it alone and rewrites its section of docs/benchmarks.md; ``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (1, 100)
TARGET_RATIO = 1.10  # session time / TF2 time
BEGIN, END = "<!-- session-path:begin -->", "<!-- session-path:end -->"


# ---- model calls (child process: the harness never imports TensorFlow) ----


def _call_times(saved_model: str, rounds: int, budget_s: float) -> dict:
    from tfserve_magic.server import _no_keras

    _no_keras.install()
    from tfserve_magic.server.models import Servable, _signature_specs, read_meta_graph
    from tfserve_magic.server.session_model import SessionModel

    tf2 = Servable("MLP", 1, saved_model, ["serve"])
    meta = read_meta_graph(saved_model, ["serve"])
    session = SessionModel(saved_model, ["serve"], meta, _signature_specs)
    paths = {"tf2": tf2.signature(""), "session": session.signatures["serving_default"]}
    (name,) = paths["tf2"].specs
    rng = np.random.default_rng(0)
    out = {}
    for n in SIZES:
        x = {name: rng.random((n, 28, 28, 1), dtype=np.float32)}
        ref = paths["tf2"].run(x)
        got = paths["session"].run(x)
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, atol=1e-7)
        samples = {key: [] for key in paths}
        for round_index in range(rounds):
            order = list(paths) if round_index % 2 == 0 else list(paths)[::-1]
            for key in order:
                run = paths[key].run
                for _ in range(20):
                    run(x)
                calls, started = 0, time.perf_counter()
                while time.perf_counter() - started < budget_s:
                    run(x)
                    calls += 1
                samples[key].append((time.perf_counter() - started) / calls)
        out[str(n)] = {key: statistics.median(v) * 1e6 for key, v in samples.items()}
    session.close()
    return out


def measure_calls(saved_model: Path, quick: bool) -> dict:
    from bench.peers import REPO, tf_env

    rounds, budget = (3, 0.3) if quick else (7, 1.0)
    done = subprocess.run(
        [sys.executable, "-m", "bench.session_path", "--calls", str(saved_model),
         "--rounds", str(rounds), "--budget", str(budget)],
        cwd=REPO, env=tf_env(), capture_output=True, text=True, timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"model-call timing failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- HTTP ----


def measure_http(assets, workdir: Path, seconds: float, rounds: int, log=print) -> dict:
    from bench import load
    from bench.peers import start_peer, wait_ready

    peers = {}
    try:
        for key, loader in (("tf2", "auto"), ("session", "session")):
            previous = os.environ.get("TFSERVE_MAGIC_LOADER")
            os.environ["TFSERVE_MAGIC_LOADER"] = loader  # start_peer copies os.environ
            try:
                peers[key] = start_peer("ours", assets.versions["A"], assets.base_path,
                                        workdir, tag=f"_{key}")
            finally:
                if previous is None:
                    os.environ.pop("TFSERVE_MAGIC_LOADER", None)
                else:
                    os.environ["TFSERVE_MAGIC_LOADER"] = previous
        for peer in peers.values():
            wait_ready(peer, assets.body_bytes(1))
        if "TF1 session" not in peers["session"].log_tail(200):
            raise RuntimeError("the forced server did not load with the session loader")
        out = {}
        for n in SIZES:
            body = assets.body_bytes(n)
            check = load.prediction_checker(assets.expected[("A", n)])
            for concurrency in (1, 8):
                cell = {key: [] for key in peers}
                for peer in peers.values():  # warm-up
                    load.run_python(peer.url, body, concurrency, 0.5, check)
                for round_index in range(rounds):
                    order = list(peers) if round_index % 2 == 0 else list(peers)[::-1]
                    for key in order:
                        result = load.run_python(peers[key].url, body, concurrency, seconds,
                                                 check)
                        if result.errors:
                            raise RuntimeError(f"{key}: {result.errors} wrong answers")
                        cell[key].append(result.per_second)
                out[f"{n}@{concurrency}"] = {k: statistics.median(v) for k, v in cell.items()}
                log(f"  session path HTTP {n} img c={concurrency}: "
                    + ", ".join(f"{k} {v:.0f} req/s" for k, v in out[f"{n}@{concurrency}"].items()))
        return out
    finally:
        for peer in peers.values():
            peer.stop()


def run(assets, workdir: Path, seconds: float, quick: bool = False, log=print) -> dict:
    """Both measurements; ``ok`` says whether the session path met the 10 % target."""
    log("Session path vs TF2 path: model calls ...")
    calls = measure_calls(assets.versions["A"], quick)
    for n, times in calls.items():
        log(f"  {n} img: TF2 {times['tf2']:.1f} us, session {times['session']:.1f} us per call")
    log("Session path vs TF2 path: HTTP ...")
    http = measure_http(assets, workdir, seconds, 1 if quick else 3, log=log)
    ratios = [t["session"] / t["tf2"] for t in calls.values()]
    ratios += [t["tf2"] / t["session"] for t in http.values()]
    return {"calls_us": calls, "http_per_second": http, "worst_ratio": max(ratios),
            "ok": max(ratios) <= TARGET_RATIO, "quick": quick,
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "cpus": os.cpu_count()}


# ---- docs ----


def markdown(result: dict) -> str:
    if "error" in result:
        return f"## Session path vs TF2 path\n\nNot measured: {result['error'][:300]}\n"
    lines = [
        "## Session path vs TF2 path",
        "",
        "SavedModels the TF2 object-graph load cannot revive (Keras 2 exports with their "
        "optimizer, TF1 graphs) are served from a TF1 session, as TF Serving does "
        "(docs/compatibility.md). Here the benchmark MLP is loaded both ways "
        "(`python -m bench.session_path`"
        + (", `--quick`" if result.get("quick") else "") + "). Target: the session path at "
        f"most {round((TARGET_RATIO - 1) * 100)} % slower; worst ratio measured: "
        f"**{result['worst_ratio']:.2f}** ({'met' if result['ok'] else 'missed'})."
        + (f" {result['cpus']} CPUs, load average {result['load_average'][0]:g} at the end "
           "(rounds alternate the paths, so both see the same load)."
           if result.get("load_average") else ""),
        "",
        "| images | TF2 call (us) | session call (us) | session / TF2 |",
        "|---:|---:|---:|---:|",
    ]
    for n, t in result["calls_us"].items():
        lines.append(f"| {n} | {t['tf2']:.1f} | {t['session']:.1f} | "
                     f"{t['session'] / t['tf2']:.2f} |")
    lines += ["", "| HTTP images @ concurrency | TF2 (req/s) | session (req/s) | TF2 / session |",
              "|---|---:|---:|---:|"]
    for cell, t in result["http_per_second"].items():
        lines.append(f"| {cell} | {t['tf2']:.0f} | {t['session']:.0f} | "
                     f"{t['tf2'] / t['session']:.2f} |")
    return "\n".join(lines) + "\n"


def write_section(result: dict, md_path: Path) -> None:
    """Put (or replace) this section in docs/benchmarks.md between its markers."""
    text = md_path.read_text() if md_path.exists() else ""
    section = f"{BEGIN}\n{markdown(result)}{END}\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    md_path.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.session_path", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", metavar="SAVED_MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=7, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help="seconds per HTTP measurement")
    args = parser.parse_args(argv)
    if args.calls:  # the child that times the model calls
        print(json.dumps(_call_times(args.calls, args.rounds, args.budget)))
        return 0
    from bench.env import REPO
    from bench.model import prepare_assets

    build = REPO / "build" / "bench"
    assets = prepare_assets(build)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    result = run(assets, build / "session_path", seconds, quick=args.quick)
    (build / "session_path.json").write_text(json.dumps(result, indent=1))
    write_section(result, REPO / "docs" / "benchmarks.md")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
