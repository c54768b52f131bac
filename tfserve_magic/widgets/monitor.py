"""ServerMonitor: a live look at a server from its own Prometheus metrics.

Requests per second, latency p50/p99, errors by status and request batch sizes per model,
read from the server's metrics endpoint (TF Serving's names, see ``server/metrics.py``) every
``interval`` seconds by a background thread that stops when the widget is closed (or ``stop()``).
Rates and latency quantiles are over the last interval (since the server started until a second
reading exists, and whenever no request came in between). TF Serving's metrics carry the model
name, not the version, so the rows are per model.
"""

from __future__ import annotations

import html
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tfserve_magic.widgets._common import StatusLine
from tfserve_magic.widgets._static import StaticSummary

DEFAULT_PATH = "/monitoring/prometheus/metrics"
REQUESTS = ":tensorflow:serving:request_count"
LATENCY = ":tensorflow:serving:request_latency"  # microseconds
EXAMPLES = ":tensorflow:serving:request_example_counts"
BATCHES = ":tensorflow:serving:batching_session:processed_batch_size"
# ours (server/metrics.py): the same per model *version*; absent on other servers
VERSION_REQUESTS = ":tfserve_magic:request_count"
VERSION_LATENCY = ":tfserve_magic:request_latency"
HISTORY = 120  # readings kept for the requests-per-second plot

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format -> sample name -> [(labels, value)] (comments skipped)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        found = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                 for k, v in _LABEL.findall(labels or "")}
        try:
            samples.setdefault(name, []).append((found, float(value)))
        except ValueError:
            continue
    return samples


@dataclass
class Reading:
    """One scrape: when, and its samples."""

    t: float
    samples: dict = field(default_factory=dict)

    def by_model(self, name: str, key: str = "model_name") -> dict[str, list]:
        out: dict[str, list] = {}
        for labels, value in self.samples.get(name, []):
            out.setdefault(labels.get(key, ""), []).append((labels, value))
        return out


INFERENCE_APIS = ("predict", "classify", "regress", "multiinference")


def _buckets(reading: Reading, name: str, key: str,
             apis: tuple[str, ...] | None = None) -> dict[str, dict[float, float]]:
    """Per model (``key`` label), cumulative bucket counts by upper bound, summed over the
    other labels; ``apis``: only samples whose ``API`` label is one of them (metadata and
    status calls would pull the latency of inference down)."""
    out: dict[str, dict[float, float]] = {}
    for labels, value in reading.samples.get(name + "_bucket", []):
        if apis is not None and labels.get("API", "").lower() not in apis:
            continue
        bound = float("inf") if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
        per = out.setdefault(labels.get(key, ""), {})
        per[bound] = per.get(bound, 0.0) + value
    return out


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram (linear within a bucket, as Prometheus'
    ``histogram_quantile``); None without observations."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    counts = np.asarray([buckets[b] for b in bounds], dtype=np.float64)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    k = int(np.searchsorted(counts, rank, side="left"))
    k = min(k, len(bounds) - 1)
    upper = bounds[k]
    lower = bounds[k - 1] if k > 0 else 0.0
    if upper == float("inf"):
        return lower
    below = counts[k - 1] if k > 0 else 0.0
    inside = counts[k] - below
    return lower + (upper - lower) * ((rank - below) / inside if inside > 0 else 1.0)


def _minus(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    if not before:
        return now
    return {b: v - before.get(b, 0.0) for b, v in now.items()}


def model_stats(now: Reading, before: Reading | None) -> dict[str, dict]:
    """Per model: requests (all APIs), rps, errors by status, latency p50/p99 (ms) of
    predict/classify/regress, mean and p50 examples per classify/regress request, over the
    interval since ``before`` (or since the start)."""
    stats: dict[str, dict] = {}
    counts_now = now.by_model(REQUESTS)
    counts_before = before.by_model(REQUESTS) if before is not None else {}
    dt = (now.t - before.t) if before is not None else None
    latency_now = _buckets(now, LATENCY, "model_name", INFERENCE_APIS)
    latency_before = (_buckets(before, LATENCY, "model_name", INFERENCE_APIS)
                      if before is not None else {})
    examples_now = _buckets(now, EXAMPLES, "model_name")
    models = sorted(set(counts_now) | set(latency_now) | set(examples_now))
    for model in models:
        by_status: dict[str, float] = {}
        for labels, value in counts_now.get(model, []):
            by_status[labels.get("status", "?")] = value
        total = sum(by_status.values())
        before_total = sum(v for _, v in counts_before.get(model, []))
        rps = (total - before_total) / dt if dt and dt > 0 else None
        window = _minus(latency_now.get(model, {}), latency_before.get(model))
        if not window or max(window.values(), default=0) <= 0:  # nothing new: since the start
            window = latency_now.get(model, {})
        p50, p99 = quantile(window, 0.5), quantile(window, 0.99)
        sizes = examples_now.get(model, {})
        size_sum = sum(v for labels, v in now.samples.get(EXAMPLES + "_sum", [])
                       if labels.get("model_name") == model)
        size_count = sum(v for labels, v in now.samples.get(EXAMPLES + "_count", [])
                         if labels.get("model_name") == model)
        stats[model] = {
            "requests": total,
            "rps": rps,
            "errors": {s: v for s, v in by_status.items() if s != "OK" and v},
            "p50_ms": None if p50 is None else p50 / 1e3,
            "p99_ms": None if p99 is None else p99 / 1e3,
            "examples_mean": size_sum / size_count if size_count else None,
            "examples_p50": quantile(sizes, 0.5),
        }
    return stats


def version_stats(now: Reading, before: Reading | None) -> dict[tuple[str, str], dict]:
    """Per (model, version): requests, rps, errors by status and latency p50/p99 (ms) over the
    interval since ``before``, from our per-version metrics ("" version: the request failed
    before a version was chosen). Empty for a server without them (the real TF Serving)."""
    def key(labels):
        return labels.get("model_name", ""), labels.get("version", "")

    counts: dict = {}
    for labels, value in now.samples.get(VERSION_REQUESTS, []):
        counts.setdefault(key(labels), {})[labels.get("status", "?")] = value
    before_totals: dict = {}
    for labels, value in (before.samples.get(VERSION_REQUESTS, []) if before else []):
        before_totals[key(labels)] = before_totals.get(key(labels), 0.0) + value
    latency_now: dict = {}
    latency_before: dict = {}
    for reading, into in ((now, latency_now), (before, latency_before)):
        for labels, value in (reading.samples.get(VERSION_LATENCY + "_bucket", [])
                              if reading else []):
            if labels.get("API", "").lower() not in INFERENCE_APIS:
                continue
            bound = float("inf") if labels.get("le") == "+Inf" else float(labels["le"])
            per = into.setdefault(key(labels), {})
            per[bound] = per.get(bound, 0.0) + value
    dt = (now.t - before.t) if before is not None else None
    stats = {}
    for k in sorted(counts):
        total = sum(counts[k].values())
        window = _minus(latency_now.get(k, {}), latency_before.get(k))
        if not window or max(window.values(), default=0) <= 0:
            window = latency_now.get(k, {})
        p50, p99 = quantile(window, 0.5), quantile(window, 0.99)
        stats[k] = {
            "requests": total,
            "rps": (total - before_totals.get(k, 0.0)) / dt if dt and dt > 0 else None,
            "errors": {st: v for st, v in counts[k].items() if st != "OK" and v},
            "p50_ms": None if p50 is None else p50 / 1e3,
            "p99_ms": None if p99 is None else p99 / 1e3,
        }
    return stats


def batch_stats(now: Reading) -> dict[str, dict]:
    """Server-side batching (``--enable_batching``): per thread pool, batches and mean size."""
    out = {}
    sums = {labels.get("thread_pool_name", ""): v
            for labels, v in now.samples.get(BATCHES + "_sum", [])}
    for labels, count in now.samples.get(BATCHES + "_count", []):
        pool = labels.get("thread_pool_name", "")
        out[pool] = {"batches": count, "mean": sums.get(pool, 0.0) / count if count else None}
    return out


def _ms(value) -> str:
    return "–" if value is None else f"{value:.1f} ms"


class ServerMonitor(StaticSummary):
    """Watch a server's metrics. ``source``: a server/model name, a URL (``http://HOST:PORT``)
    or a client; ``path``: the metrics endpoint (``prometheus_config.path``). ``fetch(url)``
    -> text replaces the HTTP GET (tests). ``start=False``: no thread, call ``refresh()``."""

    static_title = "Server monitor"

    def __init__(self, source, *, path: str = DEFAULT_PATH, interval: float = 2.0,
                 timeout: float = 5.0, start: bool = True, fetch=None, restart=None):
        import ipywidgets as w

        if interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        self.base_url = _base_url(source)
        self.path = path if path.startswith("/") else "/" + path
        self.interval, self.timeout = float(interval), float(timeout)
        self._fetch = fetch
        self.restart = restart
        self.readings: list[Reading] = []
        self.rps_history: dict[str, list[tuple[float, float]]] = {}
        self.stats: dict[str, dict] = {}
        self.versions: dict[tuple[str, str], dict] = {}  # (model, version) -> the same numbers
        self.batches: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.status = StatusLine()
        self.header = w.HTML(f"<b>Server monitor</b> · {html.escape(self.url)}")
        self.table = w.HTML(value="<i style='color:#777'>no reading yet</i>")
        self.plot = w.Image(format="png", layout=w.Layout(width="480px", display="none"))
        self.stop_button = w.Button(description="Stop", icon="stop",
                                    layout=w.Layout(width="auto", margin="0 0 0 auto"))
        self.stop_button.on_click(lambda _: self.stop())
        top = w.HBox([self.header, self.stop_button], layout=w.Layout(align_items="center"))
        self.widget = w.VBox([top, self.status.widget, self.table, self.plot],
                             layout=w.Layout(max_width="880px"))
        self.widget.add_class("tfserve-monitor")
        self.table.add_class("tfserve-monitor-table")
        self.widget.observe(self._on_comm, "comm")  # closed (by Python or the page): stop
        self.refresh_safely()
        if start and self.status.kind != "error":
            self.start()

    @property
    def url(self) -> str:
        return self.base_url + self.path

    # ------------------------------------------------------------------ work
    def read(self) -> Reading:
        """One scrape of the metrics endpoint."""
        if self._fetch is not None:
            text = self._fetch(self.url)
        else:
            import requests

            try:
                response = requests.get(self.url, timeout=self.timeout)
            except requests.RequestException as exc:
                raise ConnectionError(f"cannot read {self.url}: {type(exc).__name__}") from None
            if response.status_code == 404:
                raise LookupError(
                    f"{self.url} answered 404: the server has no Prometheus endpoint there. "
                    "Start it with --monitoring_config_file=FILE holding "
                    "'prometheus_config { enable: true }' (or pass path= for another path)")
            response.raise_for_status()
            text = response.text
        return Reading(time.time(), parse_prometheus(text))

    def refresh(self) -> dict[str, dict]:
        """Scrape once and update the numbers (raises on failure)."""
        reading = self.read()
        before = self.readings[-1] if self.readings else None
        self.readings = [*self.readings[-1:], reading]
        self.stats = model_stats(reading, before)
        self.versions = version_stats(reading, before)
        self.batches = batch_stats(reading)
        for model, s in self.stats.items():
            if s["rps"] is not None:
                history = self.rps_history.setdefault(model, [])
                history.append((reading.t, s["rps"]))
                del history[:-HISTORY]
        self.table.value = self._table_html()
        self._render_plot()
        stamp = time.strftime("%H:%M:%S", time.localtime(reading.t))
        running = self._thread is not None and self._thread.is_alive()
        self.status.ok(f"read at {stamp}" + (f", every {self.interval:g} s" if running else
                                             " (stopped)" if self.readings else ""))
        return self.stats

    def refresh_safely(self) -> bool:
        try:
            self.refresh()
            return True
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            self.status.error(exc)
            return False

    def start(self) -> None:
        """Refresh every ``interval`` seconds in a background thread until ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tfserve-monitor", daemon=True)
        self._thread.start()
        self.stop_button.disabled = False

    def stop(self) -> None:
        """Stop refreshing (the numbers stay)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + self.interval + 1)
        self.stop_button.disabled = True
        if self.status.kind == "ok":
            self.status.ok(self.status.text.split(", every")[0] + " (stopped)")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self.stop()
        self.widget.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.widget.comm is None:  # the widget was closed
                return
            self.refresh_safely()

    def _on_comm(self, change) -> None:
        if change["new"] is None:
            self._stop.set()

    # ------------------------------------------------------------------ view
    def _table_html(self) -> str:
        if not self.stats:
            return "<i style='color:#777'>no requests yet</i>"
        rows = []
        sizes_known = any(s["examples_mean"] is not None for s in self.stats.values())
        for model, s in self.stats.items():
            errors = ", ".join(f"{html.escape(k)} {int(v)}" for k, v in s["errors"].items())
            rps = "–" if s["rps"] is None else f"{s['rps']:.1f}"
            size = "–" if s["examples_mean"] is None else (
                f"{s['examples_mean']:.1f} (p50 {s['examples_p50']:.0f})"
                if s["examples_p50"] is not None else f"{s['examples_mean']:.1f}")
            rows.append(f"<tr><td><b>{html.escape(model)}</b></td><td>{int(s['requests'])}</td>"
                        f"<td>{rps}</td><td>{_ms(s['p50_ms'])}</td><td>{_ms(s['p99_ms'])}</td>"
                        f"<td style='color:{'#c62828' if errors else '#555'}'>"
                        f"{errors or 'none'}</td>"
                        + (f"<td>{size}</td>" if sizes_known else "") + "</tr>")
            for (name, version), v in self.versions.items():
                if name != model:
                    continue
                verrors = ", ".join(f"{html.escape(k)} {int(n)}" for k, n in v["errors"].items())
                vrps = "–" if v["rps"] is None else f"{v['rps']:.1f}"
                which = f"version {html.escape(version)}" if version else "no version chosen"
                rows.append(f"<tr style='color:#555'><td style='padding-left:14px'>{which}</td>"
                            f"<td>{int(v['requests'])}</td><td>{vrps}</td>"
                            f"<td>{_ms(v['p50_ms'])}</td><td>{_ms(v['p99_ms'])}</td>"
                            f"<td>{verrors or 'none'}</td>"
                            + ("<td></td>" if sizes_known else "") + "</tr>")
        batching = "".join(
            f"<div style='font-size:12px;color:#555'>server batching ({html.escape(pool)}): "
            f"{int(b['batches'])} batches, mean size {b['mean']:.1f}</div>"
            for pool, b in self.batches.items() if b["mean"] is not None)
        # The counts differ by design: TF Serving's per-model counter takes every request
        # (status and metadata too), ours per version only the inference calls.
        versions_note = (
            "<div style='font-size:12px;color:#555'>model rows: every request (status and "
            "metadata included); version rows: predict, classify and regress only</div>"
            if any(name in self.stats for name, _ in self.versions) else "")
        return ("<table style='font-size:12px;text-align:right;border-collapse:collapse' "
                "cellpadding='3'><tr><th style='text-align:left'>model</th><th>requests</th>"
                "<th>req/s</th><th>p50</th><th>p99</th><th>errors by status</th>"
                + ("<th>examples per request</th>" if sizes_known else "")
                + f"</tr>{''.join(rows)}</table>{versions_note}{batching}")

    def _plot_png(self) -> bytes | None:
        series = {m: h for m, h in self.rps_history.items() if len(h) >= 2}
        if not series:
            return None
        from matplotlib.figure import Figure

        from tfserve_magic.widgets._common import figure_png

        fig = Figure(figsize=(9.6, 3.0), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        start = min(h[0][0] for h in series.values())
        for model, history in series.items():
            t, r = zip(*history)
            ax.plot(np.asarray(t) - start, r, lw=2, label=model)
        ax.set_xlabel("seconds", fontsize=14)
        ax.set_ylabel("requests / s", fontsize=14)
        ax.tick_params(labelsize=12)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=12, frameon=False, loc="upper left")
        fig.tight_layout(pad=0.4)
        return figure_png(fig)

    def _render_plot(self) -> None:
        png = self._plot_png()
        self.plot.value = png or b""
        self.plot.layout.display = "" if png else "none"

    def summary_html(self) -> str:
        from tfserve_magic.widgets.plots import data_uri

        png = self._plot_png()
        picture = f"<img src='{data_uri(png)}' width='480' alt='requests per second'>" if png else ""
        return f"<b>Server monitor</b> · {html.escape(self.url)}<br>{self._table_html()}{picture}"


def _base_url(source) -> str:
    """``http://HOST:PORT`` of a URL, a client, a server handle or a server/model name."""
    for attr in ("base_url", "url"):
        value = getattr(source, attr, None)
        if isinstance(value, str) and value.startswith("http") and not isinstance(source, str):
            return re.sub(r"(https?://[^/]+).*", r"\1", value)
    if not isinstance(source, str) or not source.strip():
        raise TypeError("a monitor needs a server/model name, a URL or a client")
    text = source.strip()
    if re.match(r"^[\w.-]+:\d+(/|$)", text):
        text = "http://" + text
    if re.match(r"^https?://", text, re.IGNORECASE):
        return re.sub(r"(https?://[^/]+).*", r"\1", text)
    from tfserve_magic import registry

    return registry.lookup(text).url.rstrip("/")  # a server or model name the manager knows
