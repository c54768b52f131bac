"""Helpers for the warm-up tests (issue 22): TF Serving's warm-up file path, records written
with TensorFlow's own TFRecordWriter (as TF Serving's documentation does), a REST predict and
one Prometheus metric summed over its matching series."""

from __future__ import annotations

import re

import requests

MONITORING = "prometheus_config { enable: true }\n"
METRICS_PATH = "/monitoring/prometheus/metrics"


def warmup_file(version_dir):
    """``<version>/assets.extra/tf_serving_warmup_requests``."""
    return version_dir / "assets.extra" / "tf_serving_warmup_requests"


def write_records(path, records: list[bytes]) -> None:
    """Records written as TF Serving's documentation does: tf.io.TFRecordWriter."""
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def read_records(path) -> list[bytes]:
    """The records as TensorFlow's own TFRecord reader sees them (framing and CRCs checked)."""
    import tensorflow as tf

    return [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def metric_total(text: str, name: str, **labels) -> float:
    """The sum of the series of ``name`` in a Prometheus text page whose labels include
    ``labels`` (several workers or statuses add up)."""
    series = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(float(value) for label_text, value in series.findall(text)
               if all(w in label_text for w in wanted))


def metric(server, name: str, **labels) -> float:
    text = requests.get(f"{server.url}{METRICS_PATH}", timeout=10).text
    return metric_total(text, name, **labels)


def predict(server, model: str, instances, signature=None):
    body = {"instances": instances}
    if signature:
        body["signature_name"] = signature
    return requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=30)
