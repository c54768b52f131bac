"""The bench pieces for issue 13: our server with several --workers, KServe and MLServer peers.

No TensorFlow, no timing assertions: argument handling, V2 bodies and answers, the report's
targets, ratios and columns from synthetic results.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import load, peer_envs, report
from bench.peers import PEERS, RunningPeer, ours_command, ours_key, v2_body, workers_of
from bench.run import http_keys, parse_args


def test_peers_none_runs_only_our_server_with_each_workers_value():
    args = parse_args(["--peers", "none", "--generator", "python"])
    assert args.peers == ["ours", "ours_w2", "ours_wauto"]
    args = parse_args(["--peers", "none", "--workers", "auto", "--generator", "python"])
    assert args.peers == ["ours_wauto"]
    args = parse_args(["--peers", "kserve,ours", "--workers", "1,4", "--generator", "python"])
    assert args.peers == ["kserve", "ours", "ours_w4"] and "ours_w4" in PEERS
    assert workers_of("ours_w4") == "4" and workers_of("ours") == "1"
    assert workers_of("ours_batching") == "1"


def test_default_peers_include_kserve_and_mlserver():
    args = parse_args(["--generator", "python"])
    for key in ("flask", "fastapi", "kserve", "mlserver", "ours", "ours_w2", "ours_wauto",
                "ours_batching", "ceiling"):
        assert key in args.peers


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--workers", "x"], ["--peers", "nope"]])
def test_bad_peer_arguments_are_refused(bad):
    with pytest.raises(SystemExit):
        parse_args([*bad, "--generator", "python"])


def test_http_keys_keep_the_report_order():
    assert http_keys({"ceiling": 1, "ours_w2": 1, "kserve": 1, "ours": 1}) == [
        "kserve", "ours", "ours_w2"]
    assert ours_key("1") == "ours" and ours_key("auto") == "ours_wauto"


def test_ours_command_runs_one_worker_unless_told(tmp_path):
    command = ours_command(tmp_path, tmp_path / "info.json")
    assert "--workers=1" in command
    command = ours_command(tmp_path, tmp_path / "info.json", "--workers=2")
    assert "--workers=2" in command and "--workers=1" not in command


def test_v2_body_and_checker():
    x = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28, 1) / 1000
    v1 = json.dumps({"instances": x.tolist()}).encode()
    body = json.loads(v2_body(v1))
    [tensor] = body["inputs"]
    assert tensor["shape"] == [2, 28, 28, 1] and tensor["datatype"] == "FP32"
    assert np.allclose(np.asarray(tensor["data"], dtype=np.float32), x.reshape(-1))
    expected = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    check = load.prediction_checker(expected, protocol="v2")
    answer = {"outputs": [{"name": "predictions", "shape": [2, 2], "datatype": "FP32",
                           "data": expected.reshape(-1).tolist()}]}
    assert check(json.dumps(answer).encode())
    answer["outputs"][0]["data"] = [0.0, 1.0, 0.5, 0.5]
    assert not check(json.dumps(answer).encode())
    assert not check(json.dumps({"predictions": expected.tolist()}).encode())
    assert not check(b'{"outputs": []}')
    assert load.prediction_checker(expected)(json.dumps({"predictions": expected.tolist()})
                                             .encode())


def test_running_peer_converts_bodies_for_v2(tmp_path):
    v1_file = tmp_path / "mnist_1.json"
    v1_file.write_text(json.dumps({"instances": np.zeros((1, 28, 28, 1)).tolist()}))
    v1_peer = RunningPeer(PEERS["ours"], None, tmp_path / "log")
    assert v1_peer.body_file(v1_file) == v1_file
    v2_peer = RunningPeer(PEERS["mlserver"], None, tmp_path / "log", protocol="v2",
                          workdir=tmp_path / "w")
    (tmp_path / "w").mkdir()
    converted = v2_peer.body_file(v1_file)
    assert converted.parent == tmp_path / "w"
    assert json.loads(converted.read_text())["inputs"][0]["shape"] == [1, 28, 28, 1]


def test_peer_envs_pin_the_peers_and_share_tensorflow(tmp_path):
    assert peer_envs.ENVS["kserve"][0] == ["kserve==0.21.0"]
    assert "mlserver==1.7.1" in peer_envs.ENVS["mlserver"][0]
    assert not peer_envs.is_ready("kserve", tmp_path)
    (tmp_path / "kserve" / "bin").mkdir(parents=True)
    (tmp_path / "kserve" / "bin" / "python").write_text("")
    (tmp_path / "kserve" / ".bench-requirements.json").write_text(
        json.dumps(peer_envs.ENVS["kserve"][0]))
    assert peer_envs.is_ready("kserve", tmp_path)
    (tmp_path / "kserve" / ".bench-requirements.json").write_text('["kserve==0.1"]')
    assert not peer_envs.is_ready("kserve", tmp_path)  # other pins: installed again
    shared = peer_envs._shared_site_packages()
    assert shared and all(__import__("os").path.isdir(p) for p in shared)


def _cell(peer, n, c, rate, p50=1.0, p99=2.0):
    return {"peer": peer, "n_images": n, "concurrency": c, "per_second": rate,
            "images_per_second": rate * n, "p50_ms": p50, "p99_ms": p99, "rss_mb": 500.0,
            "server_cores": 1.0, "errors": 0, "checked": 3, "requests": 100, "rounds": 1,
            "spread": [rate, rate]}


def _results(summary, peers):
    return {
        "summary": summary,
        "settings": {"bodies": [1, 100], "concurrency": [8, 32], "rounds": 1, "seconds": 1.0,
                     "peers": peers, "generator": "python", "quick": True},
        "machine": report.machine_info("python"),
        "profiles": [], "data_source": "test",
    }


def test_issue_13_targets_and_report():
    summary = [
        _cell("ours", 1, 8, 1000.0), _cell("ours", 1, 32, 1000.0, p50=10.0, p99=50.0),
        _cell("ours", 100, 8, 70.0),
        _cell("ours_w2", 1, 8, 1800.0), _cell("ours_w2", 1, 32, 1800.0),
        _cell("ours_w2", 100, 8, 100.0),
        _cell("kserve", 1, 8, 400.0), _cell("kserve", 100, 8, 5.0),
        _cell("mlserver", 1, 8, 500.0), _cell("mlserver", 100, 8, 75.0),
    ]
    results = _results(summary, ["kserve", "mlserver", "ours", "ours_w2"])
    targets = report.evaluate_targets(results)
    verdicts = {t["name"]: (t["status"], t["measured"]) for t in targets}
    assert verdicts["2 workers vs 1, 1 image, c=32"] == ("pass", "1.80x")
    assert verdicts["2 workers vs 1, 100 images, c=8"][0] == "miss"  # 1.43x
    assert verdicts["ours x2 vs KServe, 1 image, c=8"] == ("pass", "4.50x")
    assert verdicts["ours x2 vs KServe, 100 images, c=8"] == ("pass", "20.00x")
    assert verdicts["ours x2 vs MLServer, 100 images, c=8"][0] == "miss"  # 1.33x
    p99 = verdicts["p99 / p50, ours (1 worker, no batching), 1 image, c=32"]
    assert p99[0] == "miss" and p99[1].startswith("5.00x")
    assert not any(t.get("profile") for t in targets if "workers" in t["name"])
    results["targets"] = targets
    markdown = report._results_section(results, report.Path("benchmarks.png"))
    assert "server cores" in markdown and "| 1 | 8 | **ours x2** | 1,800.0 |" in markdown
    ratios = report._ratios_section(results)
    assert "ours x2 / ours" in ratios and "ours / KServe" in ratios
    assert "ours x2 / MLServer" in ratios
    setup = report._setup_section(results)
    assert "kserve.Model" in setup and "V2 bodies" in setup


def test_report_reads_results_with_other_worker_counts(tmp_path):
    summary = [_cell("ours", 1, 8, 100.0), _cell("ours_w6", 1, 8, 500.0)]
    results = _results(summary, ["ours", "ours_w6"])
    results["targets"] = report.evaluate_targets(results)
    PEERS.pop("ours_w6", None)  # a results.json from another run: the key is registered again
    report.write_chart(results, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert "ours x6 / ours" in report._ratios_section(results)


def test_tail_and_workers_sections():
    from bench.tail import format_table, histogram_quantiles

    row = {"config": "default", "per_second": 1000.0, "p50_ms": 20.0, "p99_ms": 90.0,
           "errors": 0, "server_p50_ms": 0.6, "server_p99_ms": 2.0, "gc_collections": 30,
           "gc_full": 0, "gc_max_ms": 0.5, "gc_total_ms": 9.0, "loop_stall_p99_ms": 40.0,
           "loop_stall_max_ms": 70.0, "loop_stalls_over_20ms": 12, "busy_share": 0.5,
           "stall_on_cpu_share": 0.2}
    assert "| default | 1,000 | 20.0 | 90.0 | 4.50x |" in format_table([row])
    results = _results([_cell("ours", 1, 32, 1000.0), _cell("ours_w2", 1, 32, 1800.0)],
                       ["ours", "ours_w2"])
    results["tail"] = [row]
    text = report._tail_section(results)
    assert "on a CPU only 20% of the time" in text and "30 in the measurement, 0 full" in text
    results["machine"]["cores"] = 4  # the server got 1 core of 4: the ratios say so
    workers = report._workers_section(results)
    assert "| 1 | 32 | 2 | 1,800.0 |" in workers
    assert "never got more than 1.00 of the machine's 4 cores" in workers
    assert report._tail_section({"tail": {"error": "boom"}}) == ""
    before = ':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",' \
             'entrypoint="REST",le="%s"} %d\n'
    old = before % ("1000", 0) + before % ("10000", 0) + before % ("+Inf", 0)
    new = before % ("1000", 50) + before % ("10000", 99) + before % ("+Inf", 100)
    assert histogram_quantiles(old, new) == [1.0, 10.0]
