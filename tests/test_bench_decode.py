"""The bench pieces for issue 23: the SIMD decode table, its targets and report section,
and ``--only``.

No timing assertions: a real (tiny) decode_simd run read back, synthetic results for the
verdicts and the markdown.
"""

from __future__ import annotations

import pytest

from bench import decode_report, report
from bench.run import parse_args


def _cell(peer, n, c, rate):
    return {"peer": peer, "n_images": n, "concurrency": c, "per_second": rate,
            "images_per_second": rate * n, "p50_ms": 1.0, "p99_ms": 2.0, "rss_mb": 500.0,
            "server_cores": 1.0, "errors": 0, "checked": 3, "requests": 100, "rounds": 1,
            "spread": [rate, rate]}


def _decode_row(values, n, exact, ours):
    return {"values": values, "n_images": n, "bytes": 1000 * n,
            "ms": {"exact": exact, "ours py": ours * 1.3, "ours": ours, "simdjson": ours / 2,
                   "orjson V2": ours * 1.5}}


def _results(decode_rows):
    summary = [_cell("ours_wauto", 100, 8, 210.0), _cell("mlserver", 100, 8, 100.0),
               _cell("ours_wauto", 100, 1, 60.0), _cell("mlserver", 100, 1, 50.0)]
    return {
        "summary": summary,
        "settings": {"bodies": [100], "concurrency": [1, 8], "rounds": 1, "seconds": 1.0,
                     "peers": ["mlserver", "ours_wauto"], "generator": "python", "quick": True},
        "machine": report.machine_info("python"), "profiles": [], "data_source": "test",
        "decode_simd": {"returncode": 0, "output": "", "data": {
            "cpus": 2, "load_average": 9.5, "budget_s": 0.5, "rows": decode_rows}},
    }


def test_targets_from_the_decode_table_and_the_mlserver_cells():
    results = _results([_decode_row("mnist", 100, 10.0, 4.0), _decode_row("dense", 100, 9, 6)])
    verdicts = {t["name"]: (t["status"], t["measured"]) for t in report.evaluate_targets(results)}
    name = "SIMD decode vs the exact tiers, 100 MNIST-like images (CPU time)"
    assert verdicts[name] == ("pass", "2.50x")
    assert verdicts["ours auto vs MLServer, 100 images, c=8 (issue 23)"] == (
        "pass", "2.10x")
    assert verdicts["ours auto vs MLServer, 100 images, c=1 (issue 23)"] == (
        "miss", "1.20x")
    assert verdicts["ours auto vs MLServer, 100 images, c=32 (issue 23)"] == (
        "n/a", "n/a")
    slower = _results([_decode_row("mnist", 100, 10.0, 5.0)])
    verdicts = {t["name"]: t["status"] for t in report.evaluate_targets(slower)}
    assert verdicts[name] == "miss"
    slower["decode_simd"] = None
    verdicts = {t["name"]: t["status"] for t in report.evaluate_targets(slower)}
    assert verdicts[name] == "n/a"


def test_markdown_section(tmp_path):
    results = _results([_decode_row("mnist", 100, 10.0, 4.0)])
    results["targets"] = report.evaluate_targets(results)
    report.write_markdown(results, tmp_path / "b.md", tmp_path / "b.png")
    text = (tmp_path / "b.md").read_text()
    assert "## SIMD decode (issue 23)" in text
    assert ("| mnist | 100 | 100,000 | 10.000 | 5.200 | 4.000 | 2.000 | 6.000 | 2.50x | 2.00x | "
            "1.50x |") in text
    older = _results([_decode_row("mnist", 100, 10.0, 4.0)])  # before the "ours py" column
    del older["decode_simd"]["data"]["rows"][0]["ms"]["ours py"]
    assert "| mnist | 100 | 100,000 | 10.000 | 4.000 | 2.000 | 6.000 | 2.50x |" in \
        decode_report.markdown_section(older, {}, "ours")
    assert "vs MLServer at 100 images (requests per second, same run): c=1: 1.20x, c=8: 2.10x." \
        in text
    failed = {"decode_simd": {"returncode": 1, "output": "Traceback: boom", "data": None}}
    assert "Traceback: boom" in decode_report.markdown_section(failed, {}, "ours")
    assert "not measured in this run" in decode_report.markdown_section({}, {8: 1.7}, "ours")
    assert "c=8: 1.70x" in decode_report.markdown_section({}, {8: 1.7}, "ours")


def test_a_real_decode_run_is_read_back():
    result = decode_report.run(budget=0.01, sizes="1")
    assert result["returncode"] == 0, result["output"]
    rows = result["data"]["rows"]
    assert [(r["values"], r["n_images"]) for r in rows] == [("mnist", 1), ("dense", 1)]
    for row in rows:
        assert set(row["ms"]) == set(decode_report.COLUMNS)
        assert all(ms > 0 for ms in row["ms"].values()) and row["bytes"] > 1000


def test_only_runs_the_named_parts():
    args = parse_args(["--only", "decode", "--generator", "python"])
    assert args.peers == [] and not args.no_decode and args.profile == "never"
    assert args.no_startup and args.no_grpc and args.no_hot_swap and args.no_session_path
    assert args.tail == "off" and args.batching_sweep == "off"
    args = parse_args(["--quick", "--only", "http", "--peers", "mlserver,ours", "--workers",
                       "auto", "--bodies", "100", "--concurrency", "8", "--generator", "python"])
    assert args.peers == ["mlserver", "ours_wauto"] and args.no_decode and args.no_grpc
    assert args.bodies == [100] and args.concurrency == [8]
    args = parse_args(["--generator", "python"])
    assert not args.no_decode and args.peers and args.http
    with pytest.raises(SystemExit):
        parse_args(["--only", "decode,nope", "--generator", "python"])
