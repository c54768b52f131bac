"""In-process tests of the server's parts that need no model: config files, metrics text,
the batch scheduler, TF error mapping and the app's last-resort 500."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tfserve_magic.server import config as cfg
from tfserve_magic.server.batching import BatchScheduler
from tfserve_magic.server.metrics import ServerMetrics, prometheus_name
from tfserve_magic.server.status import ServingError, from_tf_error

# ---- config files ----


def test_model_config_policies_and_labels(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("""
model_config_list {
  config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 versions: 3 } }
           version_labels { key: "stable" value: 1 } }
  config { name: "b" base_path: "/m/b" model_version_policy { latest { num_versions: 0 } } }
  config { name: "c" base_path: "/m/c" model_version_policy { all {} } }
}""")
    a, b, c = cfg.parse_model_config(str(path))
    assert (a.policy, a.versions, a.labels) == ("specific", frozenset({1, 3}), {"stable": 1})
    assert (b.policy, b.num_versions) == ("latest", 1)  # 0 counts as 1
    assert c.policy == "all"


@pytest.mark.parametrize(
    "text, words",
    [
        ('model_config_list { config { name: "a" base_path: "rel" } }', "absolute path"),
        ('model_config_list { config { name: "a" base_path: "/x" } config { name: "a" '
         'base_path: "/y" } }', "multiple times"),
        ('model_config_list { config { name: "a" base_path: "/x" model_platform: "onnx" } }',
         "not supported"),
        ("custom_model_config {}", "custom model config"),
        ("model_config_list { config { nam",
         "Error parsing text-format tensorflow.serving.ModelServerConfig: invalid model config"),
    ],
)
def test_model_config_errors(tmp_path, text, words):
    path = tmp_path / "bad.config"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError, match=words):
        cfg.parse_model_config(str(path))


def test_batching_and_monitoring_files(tmp_path):
    params = tmp_path / "b.config"
    params.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 4\n"
                      "allowed_batch_sizes: 16\nthread_pool_name { value: \"x\" }\n")
    parsed = cfg.parse_batching_parameters(str(params))
    assert parsed.max_batch_size == 16 and parsed.allowed_batch_sizes == (4, 16)
    assert parsed.max_enqueued_batches == 10 and parsed.batch_timeout_micros == 0
    assert cfg.parse_batching_parameters(None).max_batch_size == 1000
    params.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n")
    with pytest.raises(cfg.ConfigError, match="must match max_batch_size"):
        cfg.parse_batching_parameters(str(params))
    monitoring = tmp_path / "m.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    settings = cfg.parse_monitoring_config(str(monitoring))
    assert settings.prometheus_enabled and settings.path == "/monitoring/prometheus/metrics"
    with pytest.raises(cfg.ConfigError, match="Cannot read"):
        cfg.parse_monitoring_config(str(tmp_path / "missing"))


# ---- metrics ----


def test_prometheus_text_format():
    assert prometheus_name("/tensorflow/serving/request_count") == (
        ":tensorflow:serving:request_count"
    )
    metrics = ServerMetrics()
    metrics.record_request('we"ird', "OK", "predict", 0.002)
    metrics.record_request("m", "NOT_FOUND", "", 0.001)
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="we\\"ird",status="OK"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in text
    lines = [line for line in text.splitlines() if "request_latency" in line]
    assert lines[0] == "# TYPE :tensorflow:serving:request_latency histogram"
    buckets = [line for line in lines if "_bucket" in line]
    assert buckets[-1].endswith('le="+Inf"} 1')
    # Bounds are written as TF Serving's exporter writes them (6 significant digits).
    bounds = [line.split('le="')[1].split('"')[0] for line in buckets[:6]]
    assert bounds == ["10", "18", "32.4", "58.32", "104.976", "188.957"]
    assert any(line.endswith("_count{model_name=\"we\\\"ird\",API=\"predict\","
                             "entrypoint=\"REST\"} 1") for line in lines)
    assert "NOT_FOUND" not in "".join(lines)  # latency is recorded for successes only


# ---- batch scheduler (a numpy "model") ----


class _Doubler:
    """Stands in for a Signature: doubles its input and records each batch it saw."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.batches = []

    def run(self, tensors):
        self.batches.append(len(tensors["x"]))
        time.sleep(self.delay)
        return {"y": tensors["x"] * 2}


def _scheduler(**overrides):
    params = cfg.BatchingConfig(**{"max_batch_size": 8, "num_batch_threads": 1, **overrides})
    return BatchScheduler(params)


def test_batches_merge_pad_and_split():
    scheduler = _scheduler(batch_timeout_micros=50_000, allowed_batch_sizes=(4, 8))
    model = _Doubler()
    try:
        futures = [
            scheduler.submit(("m", 1, "s"), model, {"x": np.full((n, 2), n, np.float32)})
            for n in (1, 2)
        ]
        results = [f.result(10) for f in futures]
    finally:
        scheduler.stop()
    assert model.batches == [4]  # 1 + 2 rows padded up to the allowed size 4
    np.testing.assert_array_equal(results[0]["y"], np.full((1, 2), 2.0))
    np.testing.assert_array_equal(results[1]["y"], np.full((2, 2), 4.0))


def test_batch_limits():
    scheduler = _scheduler(max_batch_size=2, max_enqueued_batches=1)
    model = _Doubler(delay=0.5)
    try:
        with pytest.raises(ServingError, match="Task size 3 is larger than maximum input batch"):
            scheduler.submit(("m", 1, "s"), model, {"x": np.ones((3, 1))})
        with pytest.raises(ServingError, match="equal 0th-dimension size"):
            scheduler.submit(("m", 1, "s"), model, {"x": np.ones((1, 1)), "z": np.ones((2,))})
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(scheduler.submit(("m", 1, "s"), model, {"x": np.ones((2, 1))}))
            except ServingError as exc:
                outcomes.append(exc)
        errors = [o for o in outcomes if isinstance(o, ServingError)]
        assert errors and all(e.code == "UNAVAILABLE" and e.http_status == 503 for e in errors)
        for future in outcomes:
            if not isinstance(future, ServingError):
                assert future.result(10)["y"].shape == (2, 1)
    finally:
        scheduler.stop()


def test_mismatched_inner_shapes_run_separately():
    scheduler = _scheduler(batch_timeout_micros=50_000)
    model = _Doubler()
    try:
        a = scheduler.submit(("m", 1, "s"), model, {"x": np.ones((1, 2))})
        b = scheduler.submit(("m", 1, "s"), model, {"x": np.ones((1, 3))})
        assert a.result(10)["y"].shape == (1, 2) and b.result(10)["y"].shape == (1, 3)
    finally:
        scheduler.stop()


# ---- TF error mapping ----


def test_tf_errors_map_to_codes_without_graph_noise():
    import tensorflow as tf

    try:
        tf.linalg.matmul(tf.ones([1, 3]), tf.ones([4, 2]))
    except tf.errors.InvalidArgumentError as exc:
        error = from_tf_error(exc)
    assert error.code == "INVALID_ARGUMENT" and error.http_status == 400
    assert "Matrix size-incompatible" in error.message
    resource = from_tf_error(tf.errors.ResourceExhaustedError(None, None, "oom"))
    assert resource.code == "RESOURCE_EXHAUSTED" and resource.http_status == 429


# ---- the app's last resort ----


class _BrokenManager:
    def resolve(self, *args):
        raise RuntimeError("boom")

    def status(self, *args):
        raise KeyError("kaboom")


def _call(app, method, path, body=b""):
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_a_bug_is_a_500_with_a_message_and_no_traceback(caplog):
    import orjson

    from tfserve_magic.server.app import ServingApp

    app = ServingApp(_BrokenManager())
    status, headers, body = _call(app, "GET", "/v1/models/m")
    assert status == 500 and headers[b"content-type"] == b"application/json"
    message = orjson.loads(body)["error"]
    assert "KeyError" in message and "Traceback" not in message
    status, _, body = _call(app, "GET", "/v1/models/m/metadata")
    assert status == 500 and "boom" in orjson.loads(body)["error"]
    assert "Traceback" in caplog.text  # the traceback goes to the log


def test_thread_safety_of_counters():
    metrics = ServerMetrics()
    threads = [threading.Thread(target=lambda: [metrics.request_count.inc("m", "OK")
                                                for _ in range(1000)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.request_count.values[("m", "OK")] == 4000


def test_load_retries_then_end_with_the_error(tmp_path):
    from tfserve_magic.server.models import ModelManager

    base = tmp_path / "broken"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    (base / "tmp").mkdir()  # non-numeric: ignored
    metrics = ServerMetrics()
    manager = ModelManager([cfg.ModelSpec("broken", str(base))], tags=["serve"],
                           poll_seconds=-1, max_load_retries=2, load_retry_interval_s=0,
                           metrics=metrics)
    errors = manager.initial_load(wait_for_versions=False)
    assert len(errors) == 1 and errors[0].startswith("{name: broken version: 1} due to error:")
    (status,) = manager.status("broken")
    assert status["state"] == "END" and status["status"]["error_code"] != "OK"
    assert metrics.load_attempts.values[(str(base / "1"), "fail")] == 3
    with pytest.raises(ServingError, match=r"Latest\(broken\)"):
        manager.resolve("broken")
