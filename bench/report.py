"""The benchmark's outputs: machine facts, target verdicts, docs/benchmarks.md and the chart."""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
import subprocess
from pathlib import Path

import psutil

from bench import decode_report, grpc_load, load
from bench.peers import PEERS, REPO, ours_key

COLORS = {"flask": "#9e9e9e", "fastapi": "#6d8fb3", "kserve": "#3c8d5a", "mlserver": "#7a5cb0",
          "tfs": "#d9a441", "ours": "#d9534f", "ours_w2": "#e8873a", "ours_wauto": "#c9a227",
          "ours_batching": "#8e2c48", "ceiling": "#222222"}


def _spec(key: str):
    """PEERS[key], registering ``ours_wN`` keys a results file may hold."""
    if key not in PEERS and key.startswith("ours_w"):
        ours_key(key[len("ours_w"):])
    return PEERS[key]


def default_ours(results: dict) -> str:
    """Our server as the CLI runs it by default (--workers=auto), else the most workers run."""
    measured = {r["peer"] for r in results.get("summary", [])}
    for key in ("ours_wauto", "ours_w2", "ours"):
        if key in measured:
            return key
    return "ours"


def machine_info(generator: str) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("tensorflow", "numpy", "orjson", "uvicorn", "flask", "fastapi", "pydantic"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    wrk = "not installed"
    if generator == "wrk":
        probe = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk = (probe.stdout + probe.stderr).splitlines()[0].split(" Copyright")[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "wrk": wrk,
        "load_average": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
    }


# ----------------------------------------------------------------------------- targets
def _cell(results: dict, peer: str, n_images: int, concurrency: int) -> dict | None:
    for row in results.get("summary", []):
        if (row["peer"], row["n_images"], row["concurrency"]) == (peer, n_images, concurrency):
            return row
    return None


def _ratio(results, peer, other, n_images, concurrency, other_concurrency=None):
    mine = _cell(results, peer, n_images, concurrency)
    theirs = _cell(results, other, n_images, other_concurrency or concurrency)
    if not mine or not theirs or not theirs["per_second"]:
        return None
    return mine["per_second"] / theirs["per_second"]


def mlserver_ratios(results: dict) -> dict:
    """Concurrency -> our default server's req/s over MLServer's at 100 images (None: n/a)."""
    best = default_ours(results)
    return {c: _ratio(results, best, "mlserver", 100, c) for c in decode_report.MLSERVER_TARGETS}


def decode_speedup(decode: dict | None) -> float | None:
    """Our decode's speed-up over orjson + np.asarray on the 100-image body, if reported."""
    data = (decode or {}).get("data") or {}
    value = data.get("speedup_100")
    return float(value) if isinstance(value, (int, float)) else None


def evaluate_targets(results: dict) -> list:
    """The issue's targets with this run's numbers: pass, miss, or n/a (not measured)."""
    targets = []

    def ratio_target(name, peer, other, n_images, concurrency, needed, batching=False,
                     other_concurrency=None):
        value = _ratio(results, peer, other, n_images, concurrency, other_concurrency)
        targets.append({
            "name": name, "needed": f">= {needed:g}x", "value": value, "threshold": needed,
            "measured": "n/a" if value is None else f"{value:.2f}x",
            "status": "n/a" if value is None else ("pass" if value >= needed else "miss"),
            "n_images": n_images, "concurrency": concurrency, "batching": batching,
            "profile": True, "peer": peer, "other": other,
        })

    ratio_target("ours vs Flask, 1 image, c=8", "ours", "flask", 1, 8, 3.5)
    ratio_target("ours vs Flask, 100 images, c=8", "ours", "flask", 100, 8, 8.0)
    ratio_target("ours vs FastAPI, 1 image, c=8", "ours", "fastapi", 1, 8, 1.5)
    ratio_target("ours vs FastAPI, 100 images, c=8", "ours", "fastapi", 100, 8, 4.0)
    ratio_target("ours vs in-process ceiling, 100 images, c=8", "ours", "ceiling", 100, 8, 0.9,
                 other_concurrency=1)
    ratio_target("ours faster than the ceiling, 100 images, c=8 (stretch)", "ours", "ceiling",
                 100, 8, 1.0, other_concurrency=1)
    ratio_target("--enable_batching vs ours, 1 image, c=32", "ours_batching", "ours", 1, 32, 1.3,
                 batching=True)
    # issue 13: every core, and the servers users pick instead
    ratio_target("2 workers vs 1, 1 image, c=32", "ours_w2", "ours", 1, 32, 1.7)
    ratio_target("2 workers vs 1, 100 images, c=8", "ours_w2", "ours", 100, 8, 1.7)
    best = default_ours(results)
    who = _spec(best).short
    ratio_target(f"{who} vs KServe, 1 image, c=8", best, "kserve", 1, 8, 3.0)
    ratio_target(f"{who} vs KServe, 100 images, c=8", best, "kserve", 100, 8, 12.0)
    ratio_target(f"{who} vs MLServer, 100 images, c=8", best, "mlserver", 100, 8, 1.5)
    for target in targets[-5:]:
        target["profile"] = False
    tail = _cell(results, "ours", 1, 32)
    value = tail["p99_ms"] / tail["p50_ms"] if tail and tail["p50_ms"] else None
    if value is not None and math.isnan(value):
        value = None
    targets.append({
        "name": "p99 / p50, ours (1 worker, no batching), 1 image, c=32", "needed": "<= 4x",
        "value": value, "measured": "n/a" if value is None else
        f"{value:.2f}x ({tail['p99_ms']:.1f} / {tail['p50_ms']:.1f} ms)",
        "status": "n/a" if value is None else ("pass" if value <= 4.0 else "miss"),
    })

    speedup = decode_speedup(results.get("decode"))
    targets.append({
        "name": "our decode vs orjson + np.asarray, 100 images", "needed": ">= 2x",
        "value": speedup, "measured": "n/a" if speedup is None else f"{speedup:.2f}x",
        "status": "n/a" if speedup is None else ("pass" if speedup >= 2.0 else "miss"),
    })
    targets += decode_report.targets(results, mlserver_ratios(results), who)
    targets += grpc_load.targets(results)
    startup = results.get("startup") or {}
    if "tfserve_start_s" in startup:
        gap = startup["tfserve_start_s"] - startup["import_tensorflow_s"]
        targets.append({
            "name": "%tfserve start to AVAILABLE, minus bare `import tensorflow`",
            "needed": "<= 1.0 s", "value": gap, "measured": f"{gap:+.2f} s "
            f"({startup['tfserve_start_s']:.2f} s vs {startup['import_tensorflow_s']:.2f} s)",
            "status": "pass" if gap <= 1.0 else "miss",
        })
    else:
        targets.append({"name": "%tfserve start to AVAILABLE, minus bare `import tensorflow`",
                        "needed": "<= 1.0 s", "value": None, "measured": "n/a", "status": "n/a"})
    return targets


# ----------------------------------------------------------------------------- chart
def write_chart(results: dict, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["settings"]
    bodies = settings["bodies"]
    concurrencies = settings["concurrency"]
    measured = {r["peer"] for r in results["summary"]}
    for key in measured:
        _spec(key)
    peers = [p for p in PEERS if p != "ceiling" and p in measured]
    fig, axes = plt.subplots(1, len(bodies), figsize=(6.2 * len(bodies), 4.6), squeeze=False)
    width = 0.8 / max(1, len(peers))
    for ax, n_images in zip(axes[0], bodies):
        for index, peer in enumerate(peers):
            values = [(_cell(results, peer, n_images, c) or {}).get("per_second", 0.0)
                      for c in concurrencies]
            positions = [i + (index - (len(peers) - 1) / 2) * width
                         for i in range(len(concurrencies))]
            bars = ax.bar(positions, values, width, label=PEERS[peer].short,
                          color=COLORS.get(peer, "#b55d3a"))
            ax.bar_label(bars, labels=[_short_number(v) for v in values], fontsize=7,
                         padding=1)
        ceiling = _cell(results, "ceiling", n_images, 1)
        if ceiling:
            ax.axhline(ceiling["per_second"], color=COLORS["ceiling"], linestyle="--",
                       linewidth=1, label="in-process ceiling (no HTTP)")
        ax.set_xticks(range(len(concurrencies)), [f"c={c}" for c in concurrencies])
        ax.set_title(f"{n_images} image{'s' if n_images != 1 else ''} per request")
        ax.set_ylabel("requests / s (median of rounds)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].legend(fontsize=8, loc="upper left")
    machine = results["machine"]
    fig.suptitle(f"MNIST MLP over HTTP on loopback: {machine['cores']} cores, {machine['cpu']}, "
                 f"{machine['date']}", fontsize=9)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def _short_number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


# ----------------------------------------------------------------------------- markdown
def _fmt(value, digits=1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def write_markdown(results: dict, md_path: Path, png_path: Path) -> None:
    parts = [
        _header(results),
        _machine_section(results),
        _setup_section(results),
        _results_section(results, png_path),
        _ratios_section(results),
        _targets_section(results),
        _workers_section(results),
        _tail_section(results),
        _sweep_section(results),
        _decode_section(results),
        decode_report.markdown_section(results, mlserver_ratios(results),
                                       _spec(default_ours(results)).short),
        grpc_load.markdown_section(results),
        _startup_section(results),
        _hot_swap_section(results),
        _profile_section(results),
    ]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(p for p in parts if p).rstrip() + "\n")


def _header(results: dict) -> str:
    settings = results["settings"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run`, the harness in `bench/`); do not edit "
        "by hand. Every number below comes from the same run on the same machine.",
        "",
    ]
    if settings.get("quick"):
        lines += ["> **Smoke run (`--quick`)**: one short round. These numbers are noisy; run "
                  "`make bench` on a quiet machine for the real comparison.", ""]
    lines += [
        "Re-run: `make bench` (about 13 minutes on 2 cores), or `make bench BENCH_ARGS=--quick` "
        "for a smoke run of a few minutes (`.venv/bin/python -m bench.run --help` lists the "
        "options). Close other work first: the peers and the load generator share the cores. "
        "The load generator is "
        "[wrk](https://github.com/wg/wrk) when it is on `PATH` (Debian/Ubuntu: "
        "`sudo apt-get install wrk`; macOS: `brew install wrk`), else a bounded Python asyncio "
        "client. Raw numbers: `build/bench/results.json`.",
        "",
        "KServe and MLServer pin their own FastAPI/uvicorn, so the bench installs each into its "
        "own virtualenv under `build/bench/venvs/` with pip the first time (a few minutes; "
        "`python -m bench.peer_envs` does it ahead). Our server alone, e.g. on a bigger "
        "machine: `python -m bench.run --peers none --workers 1,2,4,auto` (`--workers` lists "
        "the `--workers` values measured side by side; default `1,2,auto`).",
        "",
    ]
    return "\n".join(lines)


def _machine_section(results: dict) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    load_text = ", ".join(f"{x:.2f}" for x in machine["load_average"])
    if machine.get("load_average_end"):
        end = ", ".join(f"{x:.2f}" for x in machine["load_average_end"])
        load_text += f" (at the end: {end})"
    rows = [
        ("CPU", f"{machine['cpu']}, {machine['cores']} cores"),
        ("RAM", f"{machine['ram_gib']:.1f} GiB"),
        ("OS", machine["os"]),
        ("Python", machine["python"]),
        ("TensorFlow", versions["tensorflow"]),
        ("numpy / orjson", f"{versions['numpy']} / {versions['orjson']}"),
        ("Flask / FastAPI / pydantic / uvicorn",
         f"{versions['flask']} / {versions['fastapi']} / {versions['pydantic']} / "
         f"{versions['uvicorn']}"),
        ("load generator", machine["wrk"] if results["settings"]["generator"] == "wrk"
         else "Python asyncio client (bench/load.py); wrk not installed"),
        ("load average (1, 5, 15 min) at start", load_text),
        ("date, commit", f"{machine['date']}, {machine['commit']}"),
    ]
    lines = ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def _setup_section(results: dict) -> str:
    settings = results["settings"]
    summary = results["summary"]
    checked = sum(r["checked"] for r in summary)
    errors = sum(r["errors"] for r in summary)
    lines = ["## Setup", ""]
    lines.append("Peers, each a separate process loading the same SavedModel (MNIST MLP: "
                 "Flatten, Dense 128 relu, Dense 10 softmax) and answering "
                 "`POST /v1/models/MLP:predict` on 127.0.0.1:")
    lines.append("")
    for key in settings["peers"]:
        note = _PEER_NOTES.get(key) or _PEER_NOTES["ours_w"]
        lines.append(f"- **{_spec(key).short}**: {_spec(key).label}. {note}")
    for key, message in (results.get("failed_peers") or {}).items():
        first_line = message.strip().splitlines()[0] if message.strip() else "no output"
        lines.append(f"- **{_spec(key).short} was left out of this run**: `{first_line[:300]}`")
    if "tfs" not in settings["peers"]:
        lines.append("- TF Serving (`tensorflow_model_server`) is included when it is on `PATH`; "
                     "it was not on this machine.")
    lines += [
        "",
        f"Bodies: {', '.join(str(n) for n in settings['bodies'])} images shaped [N,28,28,1] as "
        "the classic clients send them (`json.dumps({\"signature_name\": ..., \"instances\": "
        f"x.tolist()}})`), data: {results.get('data_source', 'n/a')}. "
        f"{settings['rounds']} round(s); each measurement runs {settings['seconds']:g} s, the "
        "peers' order rotates between rounds and concurrencies, and the tables show medians "
        "(RSS: the largest seen). The load generator runs on the same cores as the server.",
        "",
        f"Correctness: {checked:,} responses had their values compared with the SavedModel's own "
        "output (atol 1e-4)"
        + (" (the Python client checks every response; for wrk, 3 per measurement, and wrk "
           "itself counted every response that was not a 200 with `predictions`)"
           if settings["generator"] == "wrk" else "")
        + f"; errors: **{errors}**.",
        "",
    ]
    if settings["generator"] == "wrk":
        lines += [
            "Load generator per cell: wrk (`-t1`), except for peers slower than "
            f"{load.SLOW_PEER_PER_SECOND:g} requests/s one by one, which get the Python client: "
            "wrk drops the requests still in flight at its deadline, and with a few "
            "multi-second requests that is much of the count; the Python client lets them "
            "finish and counts them. Cells driven by it: "
            + (", ".join(_python_cells(results)) or "none") + ".",
            "",
        ]
    return "\n".join(lines)


_PEER_NOTES = {
    "flask": "Stdlib `json.loads`, `np.array` of the nested list, the signature, "
             "`jsonify(out.tolist())`; `app.run(threaded=True)` (bench/flask_peer.py).",
    "fastapi": "A pydantic `instances: List[List[List[List[float]]]]` body, an `async def` "
               "endpoint, `np.array`, the signature, a dict returned (bench/fastapi_peer.py).",
    "kserve": "A `kserve.Model` subclass loading the SavedModel (`load`/`async predict`, "
              "`np.asarray` of the instances, the signature, `.tolist()`), "
              "`kserve.ModelServer(enable_grpc=False).start([model])`, KServe's defaults "
              "otherwise (its access log and latency logging included), pinned into 127.0.0.1 "
              "(bench/kserve_peer.py; its own venv under build/bench/venvs/).",
    "mlserver": "A custom runtime (`mlserver.MLModel`, `NumpyCodec` in and out) with MLServer's "
                "default settings (one inference worker process beside the HTTP process), "
                "V2 bodies: the same images as one flat FP32 tensor at "
                "`/v2/models/MLP/infer` (bench/mlserver_peer.py; its own venv).",
    "ours": "`python -m tfserve_magic serve --model_name=MLP --model_base_path=... "
            "--workers=1`.",
    "ours_w2": "The same with `--workers=2`: two server processes sharing the port "
               "(SO_REUSEPORT).",
    "ours_wauto": "The same with `--workers=auto` (the CLI's default): one worker per usable "
                  "core, as many as the free memory holds.",
    "ours_w": "The same with that `--workers` value.",
    "ours_batching": "The same with `--enable_batching "
                     "--batching_parameters_file=bench/batching.pbtxt`.",
    "tfs": "The real TF Serving binary with `--rest_api_port`.",
    "ceiling": "One loop of orjson parse, `np.asarray`, the signature call and an orjson dump "
               "on the same bodies, no HTTP, in its own process with the model's objects "
               "frozen out of the garbage collector (bench/ceiling.py); one number per body.",
}


def _python_cells(results: dict) -> list:
    cells = sorted({(r["peer"], r["n_images"]) for r in results.get("measurements", [])
                    if r["generator"] == "python" and r["peer"] != "ceiling"})
    return [f"{PEERS[peer].short} {n} image{'s' if n != 1 else ''}" for peer, n in cells]


def _results_section(results: dict, png_path: Path) -> str:
    lines = ["## Throughput and latency", "",
             f"![requests per second per peer]({png_path.name})", "",
             "| images/request | concurrency | peer | req/s | rounds' range | images/s | p50 ms | "
             "p99 ms | RSS MiB | server cores | errors |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["summary"]:
        _spec(row["peer"])
    order = {key: i for i, key in enumerate(PEERS)}
    rows = sorted(results["summary"],
                  key=lambda r: (r["n_images"], r["concurrency"], order[r["peer"]]))
    for row in rows:
        concurrency = "loop" if row["peer"] == "ceiling" else row["concurrency"]
        low, high = row.get("spread") or (row["per_second"], row["per_second"])
        name = PEERS[row["peer"]].short
        if row["peer"].startswith("ours"):
            name = f"**{name}**"
        lines.append(
            f"| {row['n_images']} | {concurrency} | {name} | {_fmt(row['per_second'])} | "
            f"{_fmt(low)}-{_fmt(high)} | {_fmt(row['images_per_second'], 0)} | "
            f"{_fmt(row['p50_ms'], 2)} | {_fmt(row['p99_ms'], 2)} | {_fmt(row['rss_mb'], 0)} | "
            f"{_fmt(row.get('server_cores'), 2)} | {row['errors']} |"
        )
    return "\n".join(lines) + "\n"


def _ratios_section(results: dict) -> str:
    settings = results["settings"]
    others = [p for p in ("flask", "fastapi", "kserve", "mlserver", "tfs")
              if p in settings["peers"]]
    more = [p for p in settings["peers"] if p.startswith("ours_w")]
    columns = [(f"{_spec(p).short} / ours", p, "ours", None) for p in more]
    columns += [(f"ours / {PEERS[p].short}", "ours", p, None) for p in others]
    best = default_ours(results)
    if best != "ours":
        columns += [(f"{_spec(best).short} / {PEERS[p].short}", best, p, None) for p in others]
    if "ceiling" in settings["peers"]:
        columns.append(("ours / ceiling", "ours", "ceiling", 1))
    if "ours_batching" in settings["peers"]:
        columns.append(("batching / ours", "ours_batching", "ours", None))
        columns += [(f"batching / {PEERS[p].short}", "ours_batching", p, None) for p in others]
    if not columns:
        return ""
    lines = ["## Ratios (throughput, same run)", "",
             "| images/request | concurrency | " + " | ".join(c[0] for c in columns) + " |",
             "|---:|---:|" + "---:|" * len(columns)]
    for n_images in settings["bodies"]:
        for concurrency in settings["concurrency"]:
            cells = []
            for _, mine, theirs, other_c in columns:
                value = _ratio(results, mine, theirs, n_images, concurrency, other_c)
                cells.append("n/a" if value is None else f"{value:.2f}x")
            lines.append(f"| {n_images} | {concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _targets_section(results: dict) -> str:
    marks = {"pass": "pass", "miss": "**MISS**", "n/a": "not measured"}
    lines = ["## Targets (issues 8, 13 and 23)", "", "| target | needed | measured | result |",
             "|---|---|---|---|"]
    for target in results["targets"]:
        lines.append(f"| {target['name']} | {target['needed']} | {target['measured']} | "
                     f"{marks[target['status']]} |")
    hot = results.get("hot_swap") or {}
    if "seconds" in hot:
        lines.append(f"| hot swap: new version folder to serving | reported | "
                     f"{hot['seconds']:.2f} s | - |")
    return "\n".join(lines) + "\n"


def _workers_section(results: dict) -> str:
    rows = [r for r in results.get("summary", []) if r["peer"].startswith("ours")
            and r["peer"] != "ours_batching"]
    if not any(r["peer"] != "ours" for r in rows):
        return ""
    lines = ["## Workers (`--workers`)", "",
             "Our server with 1 worker, 2 workers and `auto` in the same run. \"server cores\" is "
             "the CPU time of the server's processes (parent and workers) over the measurement's "
             "wall time: a second worker can only add throughput when a second core is free, so "
             "on a machine whose cores are also busy with the load generator (and anything "
             "else) the ratio is bounded by the cores the server actually got, not by the "
             "server. Batching runs per worker (each worker batches the requests it received).",
             "", "| images/request | concurrency | workers | req/s | p50 ms | p99 ms | "
             "server cores | RSS MiB (all processes) |", "|---:|---:|---|---:|---:|---:|---:|---:|"]
    got = max((r.get("server_cores") or 0.0 for r in rows), default=0.0)
    cores = (results.get("machine") or {}).get("cores") or 0
    if cores > 1 and got < 0.75 * cores:
        lines[2:2] = [
            f"**In this run the server never got more than {got:.2f} of the machine's {cores} "
            "cores** (see the load averages under Machine: other work was running), so the "
            "worker ratios below say how busy the machine was, not what the workers can do. "
            "Re-run on a quiet machine.", ""]
    order = {key: i for i, key in enumerate(PEERS)}
    for r in sorted(rows, key=lambda r: (r["n_images"], r["concurrency"], order[r["peer"]])):
        workers = "1" if r["peer"] == "ours" else r["peer"][len("ours_w"):]
        lines.append(f"| {r['n_images']} | {r['concurrency']} | {workers} | "
                     f"{_fmt(r['per_second'])} | {_fmt(r['p50_ms'], 2)} | {_fmt(r['p99_ms'], 2)} | "
                     f"{_fmt(r.get('server_cores'), 2)} | {_fmt(r['rss_mb'], 0)} |")
    return "\n".join(lines) + "\n"


def _tail_section(results: dict) -> str:
    rows = results.get("tail")
    if not isinstance(rows, list) or not rows:
        return ""
    from bench.tail import format_table

    default = next((r for r in rows if r["config"] == "default"), rows[0])
    lines = [
        "## Where the p99 at 1 image, c=32 goes", "",
        "`python -m bench.tail` (also run by `make bench`): wrk at c=32 against our server in "
        "a few configurations; the server's garbage-collector pauses (`gc.callbacks`) and its "
        "event loop's stalls (a 2 ms timer on the loop, with the loop thread's CPU time "
        "between ticks) come from a `sitecustomize` hook, the in-app latency from the "
        "server's own Prometheus histogram (time from the request reaching the app to its "
        "answer; bucket bounds, so coarse).", "",
        format_table(rows), "",
        "What this shows:", "",
        f"- **Not the garbage collector.** After `gc.freeze()` (docs/design.md) only young "
        f"collections run: {default['gc_collections']} in the measurement, "
        f"{default['gc_full']} full, the longest {default['gc_max_ms']:.1f} ms. Turning the "
        "collector off (`gc off`) does not shorten the tail.",
        f"- **Event-loop stalls are mostly waiting for a core.** The loop's timer fired up to "
        f"{default['loop_stall_max_ms']:.0f} ms late (p99 {default['loop_stall_p99_ms']:.0f} ms). "
        "Part of that is one loop iteration serving every ready request in turn (32 requests "
        "of well under a millisecond of CPU each); the rest is waiting: during the stalls over "
        f"20 ms the loop's thread was on a CPU only {default['stall_on_cpu_share']:.0%} of the "
        f"time ({default['busy_share']:.0%} over the whole measurement), runnable while the "
        "load generator, TensorFlow's threads and other processes had the cores. No single "
        "request handler blocks the loop for long.",
        "- **Not uvicorn's back-pressure.** A 1-image answer is about 200 bytes; the transport "
        "never reaches its 64 KiB write high-water mark, and the server sets no "
        "`limit_concurrency`, so uvicorn never pauses reading; a request waits only for the "
        "requests ahead of it on the same loop.",
        "- **The median is queueing.** With one loop every request waits for the ~31 others "
        "(Little's law: p50 ~ concurrency / throughput); more workers lower it.",
        "- **Fixed: a feedback loop between the inline and pooled model calls.** The server runs "
        "a model call inline when its measured cost is small, in a thread pool otherwise "
        "(docs/design.md). One call whose thread merely waited for a core used to raise the "
        "estimate at once, sending the following calls to the pool, where GIL hand-offs with "
        "the loop made them slower still and kept them there. The estimate now needs two slower "
        "calls in a row (server/app.py `_learn`): on the busy 2-core machine the pool's "
        "threads went from 4-6 % of a core to none under this load.",
        "",
    ]
    return "\n".join(lines)


def _sweep_section(results: dict) -> str:
    rows = results.get("batching_sweep")
    if not rows:
        return ""
    used = results["settings"].get("batching_parameters", "")
    used_lines = [x.strip() for x in used.splitlines() if x.strip() and not x.startswith("#")]
    lines = ["## Batching parameters sweep", "",
             "`--enable_batching` with other `--batching_parameters_file` settings, each a "
             "fresh server, 1-image requests at c=32 (one measurement each; "
             "`max_enqueued_batches` 100). The main run uses `bench/batching.pbtxt`: "
             + ", ".join(f"`{x}`" for x in used_lines) + ".", "",
             "| max_batch_size | batch_timeout_micros | num_batch_threads | req/s | p50 ms | "
             "p99 ms | errors |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['max_batch_size']} | {row['batch_timeout_micros']} | "
                     f"{row['num_batch_threads']} | {_fmt(row['per_second'])} | "
                     f"{_fmt(row['p50_ms'], 2)} | {_fmt(row['p99_ms'], 2)} | {row['errors']} |")
    return "\n".join(lines) + "\n"


def _decode_section(results: dict) -> str:
    decode = results.get("decode")
    lines = ["## Decode speed", ""]
    if decode is None:
        lines.append("Not measured in this run (`bench/decode_speed.py` missing or "
                     "`--no-decode`).")
        return "\n".join(lines) + "\n"
    rows = (decode.get("data") or {}).get("rows")
    lines.append("JSON body to numpy array only (no HTTP, no model), from "
                 "`python -m bench.decode_speed` (MNIST-like bodies, about 80% zeros, as "
                 "`json.dumps` or orjson of `x.tolist()` writes them):")
    lines.append("")
    if not rows:
        lines += ["```", decode.get("output", "").strip() or "(no output)", "```", ""]
        return "\n".join(lines)
    lines += ["| images | written by | bytes | orjson + `np.asarray` ms | our codec ms | "
              "speed-up |", "|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['n_images']} | {row['style']} | {row['bytes']:,} | "
                     f"{row['baseline_ms']:.3f} | {row['ours_ms']:.3f} | "
                     f"{row['baseline_ms'] / row['ours_ms']:.2f}x |")
    extra = [x for x in decode.get("output", "").splitlines() if x.startswith("encode")]
    if extra:
        lines += ["", "Response side: " + "; ".join(extra) + "."]
    lines.append("")
    return "\n".join(lines)


def _startup_section(results: dict) -> str:
    startup = results.get("startup")
    if startup is None:
        return ""
    lines = ["## Start-up", ""]
    if "error" in startup:
        lines += [f"The start-up timing failed: `{startup['error'].splitlines()[-1]}`", ""]
        return "\n".join(lines)
    runs = len(startup["start_runs_s"])
    lines += [
        f"Median of {runs} run(s), wall-clock seconds:",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| bare `python -c \"import tensorflow\"` | {startup['import_tensorflow_s']:.2f} |",
        f"| `%tfserve start MLP <base_path>` to AVAILABLE (IPython shell with the extension "
        f"loaded) | {startup['tfserve_start_s']:.2f} |",
        f"| difference | {startup['tfserve_start_s'] - startup['import_tensorflow_s']:+.2f} |",
        "",
    ]
    return "\n".join(lines)


def _hot_swap_section(results: dict) -> str:
    hot = results.get("hot_swap")
    if hot is None:
        return ""
    lines = ["## Hot swap", ""]
    if "error" in hot:
        lines += [f"The hot-swap timing failed: `{hot['error'].splitlines()[-1]}`", ""]
        return "\n".join(lines)
    runs = ", ".join(f"{s:.2f}" for s in hot["runs_s"])
    lines += [
        f"From `os.rename` of a complete version folder into the served base path to the first "
        f"unpinned predict answered by the new version (its outputs differ from the old one's), "
        f"polling every 5 ms: median **{hot['seconds']:.2f} s** (runs: {runs} s). The server "
        f"looks for new versions every `--file_system_poll_wait_seconds` "
        f"({hot['poll_wait_seconds']:g} s here, TF Serving's default), so up to one interval "
        "(half of one on average; the renames happen at random points of it) is waiting for "
        "the next look; the rest is loading the SavedModel and switching to it.",
        "",
    ]
    return "\n".join(lines)


def _per_core_lines(results: dict, missed: list) -> list[str]:
    """For missed comparisons with another server: the work each did per core it got.

    On a machine whose cores the load generator shares, a ratio of throughputs says how many
    cores each server managed to take as much as how fast it is; req/s per server core
    (``server_cores``: CPU seconds of all the server's processes per second) separates the two.
    """
    lines = []
    for target in missed:
        peer, other = target.get("peer"), target.get("other")
        if not peer or not other or target.get("profile"):
            continue
        mine = _cell(results, peer, target["n_images"], target["concurrency"])
        theirs = _cell(results, other, target["n_images"], target["concurrency"])
        if not mine or not theirs or not mine.get("server_cores") or not theirs.get(
                "server_cores"):
            continue
        own = mine["per_second"] / mine["server_cores"]
        their = theirs["per_second"] / theirs["server_cores"]
        cores = (results.get("machine") or {}).get("cores")
        lines.append(
            f"- **{target['name']}** ({target['measured']}): {_spec(peer).short} did "
            f"{own:,.1f} req/s per server core ({mine['per_second']:,.1f} req/s on "
            f"{mine['server_cores']:.2f} cores), {_spec(other).short} {their:,.1f} "
            f"({theirs['per_second']:,.1f} req/s on {theirs['server_cores']:.2f} cores): "
            f"{own / their:.2f}x the work per core. What stands in the way is the cores the "
            f"server could take on this {cores}-core machine with the load generator on the "
            "same cores, not the work per request."
        )
    return lines


def _profile_section(results: dict) -> str:
    profiles = [p for p in results.get("profiles", []) if "self" in p]
    missed = [t for t in results["targets"] if t["status"] == "miss"]
    lines = ["## Where the time goes", ""]
    per_core = _per_core_lines(results, missed)
    if per_core:
        lines += per_core + [""]
    if not profiles:
        if any(t.get("profile") for t in missed):
            lines.append("Targets were missed but no profile was taken (`--profile never`, or "
                         "py-spy is not installed: `pip install py-spy`).")
        elif missed:
            lines.append("No profile was taken: the missed targets compare servers that use "
                         "different numbers of cores, which the per-core numbers above explain.")
        else:
            unmeasured = sum(t["status"] == "n/a" for t in results["targets"])
            lines.append("No measured target was missed, so no profile was taken (`--profile "
                         "always` takes one anyway)"
                         + (f"; {unmeasured} target(s) were not measured." if unmeasured else "."))
        return "\n".join(lines) + "\n"
    which = ("every throughput target's cell (`--profile always`)"
             if results["settings"].get("profile") == "always" else "the missed targets' cells")
    lines.append("py-spy samples of our server (`py-spy record --pid --gil --nonblocking`, "
                 f"attached after start-up and a warm-up), under the load of {which}. Only the "
                 "thread holding the GIL is sampled: the server is one Python process, so that "
                 "serial work is what bounds its throughput (TensorFlow's kernels and orjson run "
                 "without the GIL and are not in these shares; the native calls that hold it "
                 "count in the Python function that made them). \"GIL held\" is samples over "
                 "the sampling rate times the load's duration.")
    lines.append("")
    for profile in profiles:
        batching = " with --enable_batching" if profile["peer"] == "ours_batching" else ""
        held = (f", GIL held {profile['gil_busy']:.0%} of the time"
                if profile.get("gil_busy") is not None else "")
        lines += [f"### {profile['n_images']} image(s), c={profile['concurrency']}{batching} "
                  f"({profile['per_second']:.1f} req/s under the profiler, "
                  f"{profile['samples']:,} samples{held})", ""]
        lines += [_profile_reading(results, profile), ""]
        if profile.get("categories"):
            lines += ["| part | share of samples |", "|---|---:|"]
            lines += [f"| {name} | {share:.1f}% |" for name, _, share in profile["categories"]]
            lines.append("")
        lines += ["| function, self time (any code) | share | | our function, inclusive | share |",
                  "|---|---:|---|---|---:|"]
        ours = profile["inclusive"]
        for index, own in enumerate(profile["self"]):
            total = ours[index] if index < len(ours) else None
            right = f"`{total[0]}` | {total[2]:.1f}%" if total else " | "
            lines.append(f"| `{own[0]}` | {own[2]:.1f}% | | {right} |")
        lines.append("")
    return "\n".join(lines)


def _profile_reading(results: dict, profile: dict) -> str:
    """The profile in words: its largest parts, and what bounds this cell."""
    n_images, concurrency = profile["n_images"], profile["concurrency"]
    parts = [f"{name} {share:.0f}%" for name, _, share in profile.get("categories", [])[:3]]
    text = "Largest parts: " + ", ".join(parts) + "."
    key = profile["peer"]
    mine = _cell(results, key, n_images, concurrency)
    ceiling = _cell(results, "ceiling", n_images, 1)
    flask = _cell(results, "flask", n_images, concurrency)
    if mine and ceiling and ceiling["per_second"]:
        text += (f" In the main run this cell did {mine['per_second']:,.0f} req/s, "
                 f"{mine['per_second'] / ceiling['per_second']:.0%} of the in-process loop "
                 f"({ceiling['per_second']:,.0f} calls/s, no HTTP)")
        if flask and flask["per_second"]:
            text += (f"; the loop does {ceiling['per_second'] / flask['per_second']:.1f}x the "
                     "Flask peer")
        text += "."
    if profile.get("gil_busy") and mine and mine["per_second"]:
        per_request_ms = 1000.0 * profile["gil_busy"] / profile["per_second"]
        text += (f" Under the profiler each request held the GIL for about "
                 f"{per_request_ms:.2f} ms")
        if ceiling and ceiling["per_second"]:
            text += (f", against {1000.0 / ceiling['per_second']:.2f} ms for the loop's whole "
                     "call (parse, array, model, dump)")
        text += "."
    return text
