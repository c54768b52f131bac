"""ServerMonitor and %tfserve monitor against a real server with its Prometheus endpoint on."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from IPython.core.error import UsageError

from tfserve_magic.widgets import ServerMonitor
from tfserve_magic.widgets.monitor import model_stats, parse_prometheus, quantile


@pytest.fixture(scope="module")
def metrics_server(server_test_models, tmp_path_factory):
    from tests.fixtures.server import start_server

    work = tmp_path_factory.mktemp("monitor")
    monitoring = work / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    server = start_server(server_test_models["half"], f"--monitoring_config_file={monitoring}",
                          "--enable_batching", model_name="half", workdir=work)
    yield server
    assert server.stop() == 0


def predict(server, body):
    return requests.post(f"{server.url}/v1/models/half:predict", json=body, timeout=30)


def test_parse_and_quantiles_of_the_text_format():
    text = (
        "# TYPE :tensorflow:serving:request_count counter\n"
        ':tensorflow:serving:request_count{model_name="m",status="OK"} 10\n'
        ':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"} 2\n'
        '# TYPE :tensorflow:serving:request_latency histogram\n'
        ':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",'
        'entrypoint="REST",le="1000"} 5\n'
        ':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",'
        'entrypoint="REST",le="2000"} 10\n'
        ':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",'
        'entrypoint="REST",le="+Inf"} 10\n'
        'odd{label="a \\"quoted\\" value"} 1.5\n'
    )
    samples = parse_prometheus(text)
    assert samples["odd"] == [({"label": 'a "quoted" value'}, 1.5)]
    assert quantile({1000.0: 5, 2000.0: 10, float("inf"): 10}, 0.5) == pytest.approx(1000.0)
    assert quantile({1000.0: 5, 2000.0: 10, float("inf"): 10}, 0.75) == pytest.approx(1500.0)
    assert quantile({}, 0.5) is None
    from tfserve_magic.widgets.monitor import Reading

    stats = model_stats(Reading(1.0, samples), None)["m"]
    assert stats["requests"] == 12 and stats["errors"] == {"INVALID_ARGUMENT": 2}
    assert stats["p50_ms"] == pytest.approx(1.0) and stats["rps"] is None


def test_monitor_counts_requests_errors_latency_and_batch_sizes(metrics_server):
    monitor = ServerMonitor(metrics_server.url, start=False)
    assert monitor.status.kind == "ok", monitor.status.text
    before = monitor.stats.get("half", {"requests": 0, "errors": {}})
    sizes = [1, 3, 8, 8]
    for n in sizes:
        assert predict(metrics_server, {"instances": list(np.arange(n, dtype=float))}).ok
    bad = predict(metrics_server, {"instances": ["one"]})  # a string for a float input
    missing = requests.post(f"{metrics_server.url}/v1/models/half/versions/99:predict",
                            json={"instances": [1.0]}, timeout=30)
    assert bad.status_code == 400 and missing.status_code == 404
    time.sleep(0.05)
    stats = monitor.refresh()["half"]
    assert stats["requests"] - before["requests"] == len(sizes) + 2
    errors = stats["errors"]
    assert errors.get("INVALID_ARGUMENT", 0) - before["errors"].get("INVALID_ARGUMENT", 0) == 1
    assert errors.get("NOT_FOUND", 0) - before["errors"].get("NOT_FOUND", 0) == 1
    assert stats["rps"] is not None and stats["rps"] > 0
    assert stats["p50_ms"] is not None and 0 < stats["p50_ms"] <= stats["p99_ms"]
    # predict requests are batched by the server (--enable_batching): their sizes
    batching = monitor.batches
    assert len(batching) == 1
    pool = next(iter(batching.values()))
    assert pool["batches"] >= len(sizes) and 1 <= pool["mean"] <= max(sizes)
    assert "server batching" in monitor.table.value
    table = monitor.table.value
    assert "<b>half</b>" in table and "INVALID_ARGUMENT 1" in table and "NOT_FOUND 1" in table
    assert "INVALID_ARGUMENT 1" in monitor._repr_mimebundle_()["text/html"]
    monitor.refresh()  # two readings with rates: the requests-per-second plot
    assert bytes(monitor.plot.value).startswith(b"\x89PNG")


def test_the_background_refresh_stops_when_the_widget_is_closed(metrics_server):
    monitor = ServerMonitor(metrics_server.url, interval=0.2)
    assert monitor.running
    first = len(monitor.rps_history.get("half", []))
    deadline = time.monotonic() + 20
    while len(monitor.rps_history.get("half", [])) < first + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(monitor.rps_history["half"]) >= first + 2  # it refreshed by itself
    monitor.widget.close()  # what closing the output does: the comm goes away
    monitor._thread.join(timeout=5)
    assert not monitor.running


def test_monitor_magic_and_a_server_without_metrics(shell, metrics_server, serve,
                                                    server_test_models):
    widget = shell.run_line_magic("tfserve", f"monitor {metrics_server.url} --interval 5")
    try:
        assert isinstance(widget, ServerMonitor) and widget.running
    finally:
        widget.stop()
    assert not widget.running and "(stopped)" in widget.status.text
    plain = serve(server_test_models["half"], model_name="half")
    with pytest.raises(UsageError, match="monitoring_config_file"):
        shell.run_line_magic("tfserve", f"monitor {plain.url}")
    with pytest.raises(UsageError, match="interval"):
        shell.run_line_magic("tfserve", f"monitor {plain.url} --interval 0")


def test_a_server_started_from_the_notebook_has_its_metrics_on(shell, server_test_models,
                                                                tmp_path):
    """`%tfserve start` turns the Prometheus endpoint on (a config beside the info file), so
    `%tfserve monitor NAME` needs no flag; a deploy recipe does not carry that default."""
    import tfserve_magic as tfm
    from tfserve_magic.deployment.sources import from_server

    handle = tfm.start("Watched", server_test_models["half"], port=0, workers=1)
    try:
        for _ in range(3):
            assert requests.post(f"{handle.url}/v1/models/Watched:predict",
                                 json={"instances": [1.0, 2.0]}, timeout=30).ok
        monitor = shell.run_line_magic("tfserve", "monitor Watched --interval 60")
        assert monitor.status.kind == "ok", monitor.status.text
        monitor.close()
        widget = ServerMonitor("Watched", start=False)
        assert widget.status.kind == "ok", widget.status.text
        assert widget.refresh()["Watched"]["requests"] >= 3
        assert from_server("Watched").monitoring_file is None
    finally:
        tfm.stop("Watched")


def test_requests_are_counted_per_model_version_over_rest_and_grpc(tmp_path):
    """Our per-version metrics: a stable and a canary version side by side, each with its own
    requests, rate and latency; a request refused before a version was chosen has none."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.fixtures.server import start_server
    from tests.helpers.multi_model import CONFIG, build_multi_model
    from tfserve_magic.tensor_proto import fill

    base = build_multi_model(tmp_path / "multi")
    config = tmp_path / "models.config"
    config.write_text(CONFIG.format(base=base))
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    server = start_server(None, f"--monitoring_config_file={monitoring}", config_file=config,
                          workdir=tmp_path)
    try:
        body = {"signature_name": "scale", "instances": [1.0, 2.0]}
        for _ in range(3):
            assert requests.post(f"{server.url}/v1/models/Multi/versions/1:predict", json=body,
                                 timeout=30).ok
        for _ in range(5):
            assert requests.post(f"{server.url}/v1/models/Multi/labels/canary:predict",
                                 json=body, timeout=30).ok
        missing = requests.post(f"{server.url}/v1/models/Multi/versions/9:predict", json=body,
                                timeout=30)
        assert missing.status_code == 404
        with grpc.insecure_channel(f"127.0.0.1:{server.info['grpc_port']}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "Multi"
            request.model_spec.signature_name = "scale"
            request.model_spec.version.value = 2
            fill(request.inputs["x"], np.array([1.0], np.float32), content=True)
            assert stub.Predict(request, timeout=30).model_spec.version.value == 2
        monitor = ServerMonitor(server.url, start=False)
        assert monitor.status.kind == "ok", monitor.status.text
        versions = monitor.versions
        assert versions[("Multi", "1")]["requests"] == 3
        assert versions[("Multi", "2")]["requests"] == 6  # 5 over REST, 1 over gRPC
        assert versions[("Multi", "1")]["p50_ms"] is not None
        assert versions[("Multi", "")]["errors"] == {"NOT_FOUND": 1}
        assert monitor.stats["Multi"]["requests"] == 10
        table = monitor.table.value
        assert "version 1" in table and "version 2" in table and "no version chosen" in table
    finally:
        assert server.stop() == 0
