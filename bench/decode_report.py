"""Issue 23 in ``make bench``: the SIMD decode table and the MLServer ratios at 100 images.

`run` measures in a child process (``python -m bench.decode_simd --json``, about a minute);
`targets` and `markdown_section` turn its rows, and the HTTP ratios report.py computes from the
same run, into verdicts and the "SIMD decode" section of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.env import REPO, tf_env

COLUMNS = ("exact", "ours py", "ours", "simdjson", "orjson V2")  # bench/decode_simd.py's columns
JSON_MARKER = "DECODE_SIMD_JSON "  # the line of bench/decode_simd.py --json that run reads

DECODE_TARGET = 2.5  # exact tiers / ours, 100 MNIST-like images
MLSERVER_TARGETS = {8: 2.0, 1: 1.5, 32: 1.5}  # concurrency -> ours / MLServer, 100 images
COLUMN_TITLES = {
    "exact": "exact tiers ms",
    "ours py": "ours, pysimdjson alone ms",
    "ours": "ours (SIMD tier as served) ms",
    "simdjson": "simdjson only ms",
    "orjson V2": "orjson V2 + asarray ms",
}


def run(budget: float = 0.5, sizes: str = "1,10,100,1000", timeout: float = 900.0) -> dict:
    """The decode table as ``{"returncode", "output", "data"}`` (data: decode_simd's rows)."""
    command = [sys.executable, "-m", "bench.decode_simd", "--json", "--budget", str(budget),
               "--sizes", sizes]
    try:
        done = subprocess.run(command, cwd=REPO, env=tf_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "output": f"timed out after {timeout:g} s", "data": None}
    result = {"returncode": done.returncode, "data": None,
              "output": done.stdout[-4000:] + done.stderr[-2000:]}
    for line in done.stdout.splitlines():
        if line.startswith(JSON_MARKER):
            result["data"] = json.loads(line[len(JSON_MARKER):])
    return result


def decode_ratio(results: dict, values: str = "mnist", n_images: int = 100) -> float | None:
    """exact / ours CPU time for one body of the decode table, if measured."""
    data = (results.get("decode_simd") or {}).get("data") or {}
    for row in data.get("rows", []):
        if (row["values"], row["n_images"]) == (values, n_images) and row["ms"]["ours"] > 0:
            return row["ms"]["exact"] / row["ms"]["ours"]
    return None


def _verdict(name: str, needed: float, value: float | None) -> dict:
    return {
        "name": name, "needed": f">= {needed:g}x", "value": value, "threshold": needed,
        "measured": "n/a" if value is None else f"{value:.2f}x",
        "status": "n/a" if value is None else ("pass" if value >= needed else "miss"),
    }


def targets(results: dict, mlserver_ratios: dict, who: str) -> list:
    """Issue 23's targets; `mlserver_ratios` maps concurrency -> ours/MLServer at 100 images."""
    out = [_verdict("SIMD decode vs the exact tiers, 100 MNIST-like images (CPU time)",
                    DECODE_TARGET, decode_ratio(results))]
    for concurrency, needed in MLSERVER_TARGETS.items():
        out.append(_verdict(f"{who} vs MLServer, 100 images, c={concurrency} (issue 23)",
                            needed, mlserver_ratios.get(concurrency)))
    return out


def markdown_section(results: dict, mlserver_ratios: dict, who: str) -> str:
    lines = ["## SIMD decode (issue 23)", "", *_decode_lines(results.get("decode_simd")), ""]
    measured = {c: r for c, r in sorted(mlserver_ratios.items()) if r is not None}
    if measured:
        lines.append(f"{who} vs MLServer at 100 images (requests per second, same run): "
                     + ", ".join(f"c={c}: {r:.2f}x" for c, r in measured.items()) + ".")
    else:
        lines.append("MLServer at 100 images was not measured in this run.")
    lines.append("")
    return "\n".join(lines)


def _decode_lines(decode: dict | None) -> list:
    if decode is None:
        return ["The decode table was not measured in this run (`--no-decode`)."]
    data = decode.get("data")
    if not data:
        return ["The decode run failed:", "", "```",
                decode.get("output", "").strip() or "(no output)", "```"]
    # results written before the "ours py" column (bench.run --from-results) lack it
    columns = [c for c in COLUMNS if all(c in row["ms"] for row in data["rows"])]
    lines = [
        "Body to numpy array only (no HTTP, no model), from `python -m bench.decode_simd`: "
        "CPU ms per call, best of 5 rounds (so other processes count less), "
        f"{data['cpus']} CPUs, load average {data['load_average']:.1f} at its start; the "
        f"compiled decoder was {'built' if data.get('compiled', True) else 'NOT built'}. "
        "Bodies are "
        "`json.dumps({\"signature_name\": ..., \"instances\": x.tolist()})` of float32 "
        "[N, 28, 28, 1] images, MNIST-like (about 80% zeros) or dense random; orjson V2 is "
        "MLServer's path (the same values as one flat V2 tensor, `orjson.loads` + "
        "`np.asarray`). Every column's tensor is checked to be the same.",
        "",
        "| values | images | bytes | " + " | ".join(COLUMN_TITLES[c] for c in columns)
        + " | exact / ours | ours / simdjson | V2 / ours |",
        "|---|---:|---:|" + "---:|" * (len(columns) + 3),
    ]
    for row in data["rows"]:
        ms = row["ms"]
        cells = " | ".join(f"{ms[c]:.3f}" for c in columns)
        lines.append(f"| {row['values']} | {row['n_images']:,} | {row['bytes']:,} | {cells} | "
                     f"{ms['exact'] / ms['ours']:.2f}x | {ms['ours'] / ms['simdjson']:.2f}x | "
                     f"{ms['orjson V2'] / ms['ours']:.2f}x |")
    return lines
