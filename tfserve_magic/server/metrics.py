"""Prometheus counters and histograms with TF Serving's metric names and text format.

Names are TF monitoring paths with every non-``[A-Za-z0-9_]`` character replaced by ``:``
(``/tensorflow/serving/request_count`` -> ``:tensorflow:serving:request_count``). One ``# TYPE``
line per metric, no ``# HELP``, histogram buckets with ``le="+Inf"`` last.

Ours, not TF Serving's (it has no workers): ``:tfserve_magic:worker_restarts``, how often a
``--workers`` server replaced each worker that died (server/workers.py).
"""

from __future__ import annotations

import bisect
import re
import threading


def prometheus_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", ":", path)


def _exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    return [scale * growth**i for i in range(count)]


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_bound(value: float) -> str:
    """A bucket bound as TF Serving's exporter writes it (``absl::StrCat``: 6 significant
    digits), so ``le="32.4"`` and not ``le="32.400000000000006"``."""
    return f"{value:.6g}"


def _format_number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, path: str, labels: tuple[str, ...]):
        self.name = prometheus_name(path)
        self.labels = labels
        self._lock = threading.Lock()

    def _label_text(self, values: tuple, extra: str = "") -> str:
        parts = [f'{k}="{_escape(v)}"' for k, v in zip(self.labels, values)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""


class Counter(_Metric):
    kind = "counter"

    def __init__(self, path: str, labels: tuple[str, ...]):
        super().__init__(path, labels)
        self.values: dict[tuple, float] = {}

    def inc(self, *label_values, by: float = 1) -> None:
        with self._lock:
            self.values[label_values] = self.values.get(label_values, 0) + by

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self.values.items())
        return [f"{self.name}{self._label_text(k)} {_format_number(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, path: str, labels: tuple[str, ...], bounds: list[float]):
        super().__init__(path, labels)
        self.bounds = bounds
        self.series: dict[tuple, list] = {}  # labels -> [bucket counts..., sum, count]

    def observe(self, value: float, *label_values) -> None:
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            row = self.series.get(label_values)
            if row is None:
                row = self.series[label_values] = [0] * (len(self.bounds) + 3)
            row[index] += 1
            row[-2] += value
            row[-1] += 1

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self.series.items())
        lines = []
        for labels, row in items:
            cumulative = 0
            for bound, count in zip(self.bounds, row):
                cumulative += count
                le = f'le="{_format_bound(bound)}"'
                lines.append(f"{self.name}_bucket{self._label_text(labels, le)} {cumulative}")
            inf_labels = self._label_text(labels, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf_labels} {row[-1]}")
            lines.append(f"{self.name}_sum{self._label_text(labels)} {_format_number(row[-2])}")
            lines.append(f"{self.name}_count{self._label_text(labels)} {row[-1]}")
        return lines


WORKER_RESTARTS = prometheus_name("/tfserve_magic/worker_restarts")


def worker_restart_lines(restarts: dict[int, int]) -> list[str]:
    """The ``:tfserve_magic:worker_restarts`` counter, one series per worker slot."""
    lines = [f"# TYPE {WORKER_RESTARTS} counter"]
    for index in sorted(restarts):
        lines.append(f'{WORKER_RESTARTS}{{worker="{index}"}} {int(restarts[index])}')
    return lines


class ServerMetrics:
    """The metrics this server records; ``render()`` is the Prometheus endpoint's body."""

    def __init__(self):
        latency_us = _exponential_buckets(10, 1.8, 33)  # TF Serving's request-latency buckets
        size_buckets = _exponential_buckets(1, 2, 15)
        self.request_count = Counter("/tensorflow/serving/request_count", ("model_name", "status"))
        self.request_latency = Histogram(
            "/tensorflow/serving/request_latency", ("model_name", "API", "entrypoint"), latency_us
        )
        self.runtime_latency = Histogram(
            "/tensorflow/serving/runtime_latency", ("model_name", "API", "runtime"), latency_us
        )
        self.example_counts = Histogram(
            "/tensorflow/serving/request_example_counts", ("model_name",), size_buckets
        )
        self.example_count_total = Counter(
            "/tensorflow/serving/request_example_count_total", ("model_name",)
        )
        self.load_attempts = Counter(
            "/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status")
        )
        self.load_latency = Counter("/tensorflow/cc/saved_model/load_latency", ("model_path",))
        self.queuing_latency = Histogram(
            "/tensorflow/serving/batching_session/queuing_latency", ("thread_pool_name",),
            latency_us,
        )
        self.input_batch_size = Histogram(
            "/tensorflow/serving/batching_session/input_batch_size", ("thread_pool_name",),
            size_buckets,
        )
        self.processed_batch_size = Histogram(
            "/tensorflow/serving/batching_session/processed_batch_size", ("thread_pool_name",),
            size_buckets,
        )
        self.padding_size = Histogram(
            "/tensorflow/serving/batching_session/padding_size", ("thread_pool_name",),
            size_buckets,
        )
        # [issue 22 hook] warm-up replay (server/warmup.py), saved_model_warmup_util.cc's names
        self.warmup_latency = Histogram(
            "/tensorflow/serving/model_warmup_latency", ("model_path", "status"), latency_us
        )
        self.warmup_records_read = Counter(
            "/tensorflow/serving/model_warmup_records_read", ("model_path", "status")
        )
        # ours (not TF Serving's, whose request metrics have no version label): requests and
        # latency per model *version*, for %tfserve monitor and a canary beside a stable version
        self.version_request_count = Counter(
            "/tfserve_magic/request_count", ("model_name", "version", "status")
        )
        self.version_request_latency = Histogram(
            "/tfserve_magic/request_latency", ("model_name", "version", "API"), latency_us
        )
        self._all = [
            self.request_count, self.request_latency, self.runtime_latency, self.example_counts,
            self.example_count_total, self.load_attempts, self.load_latency,
            self.queuing_latency, self.input_batch_size, self.processed_batch_size,
            self.padding_size,
            self.warmup_latency, self.warmup_records_read,  # [issue 22 hook]
            self.version_request_count, self.version_request_latency,  # ours, last
        ]

    def record_request(
        self, model_name: str, code: str, api: str, seconds: float, entrypoint: str = "REST",
        version: int | None = None,
    ) -> None:
        """One request; ``version``: the version that answered it (None: not known, e.g. an
        error before a version was chosen)."""
        self.request_count.inc(model_name, code)
        if code == "OK":
            self.request_latency.observe(seconds * 1e6, model_name, api, entrypoint)
        if model_name and api:
            label = "" if version is None else str(version)
            self.version_request_count.inc(model_name, label, code)
            if code == "OK":
                self.version_request_latency.observe(seconds * 1e6, model_name, label, api)

    def record_load(self, model_path: str, ok: bool, seconds: float) -> None:
        self.load_attempts.inc(model_path, "success" if ok else "fail")
        self.load_latency.inc(model_path, by=int(seconds * 1e6))

    def render(self) -> str:
        lines = []
        for metric in self._all:
            body = metric.render()
            if body:
                lines.append(f"# TYPE {metric.name} {metric.kind}")
                lines.extend(body)
        return "\n".join(lines) + "\n"
