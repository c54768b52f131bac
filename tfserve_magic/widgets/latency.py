"""LatencyView: a small live plot of request latencies fed by the other widgets.

The x axis counts requests (not seconds), so one request and a thousand both read well; with
fewer than two requests there is nothing to plot and only the numbers are shown.
"""

from __future__ import annotations

import html
import time
from collections import deque

import numpy as np

from tfserve_magic.widgets._common import figure_png
from tfserve_magic.widgets._static import StaticSummary

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
PLOT_PX = (480, 150)  # the plot's size on screen (rendered at 2x for sharp text)
MARKERS_UP_TO = 60  # points per series drawn with markers; more are a plain line
_NONE_YET = "<small style='color:#777'>latency: no requests yet</small>"


class LatencyView(StaticSummary):
    """Keeps the last ``maxlen`` ``(time, latency_s, series)`` samples and plots them.

    Widgets call ``record(latency_s, series=...)`` after each request; pass one view to several
    widgets (``latency=view``) to watch them together.
    """

    def __init__(self, maxlen: int = 200, *, title: str = "request latency", render: bool = True):
        import ipywidgets as w

        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.samples: deque[tuple[float, float, str]] = deque(maxlen=int(maxlen))
        self.title = title
        self.auto_render = render
        self.image = w.Image(format="png", layout=w.Layout(width=f"{PLOT_PX[0]}px",
                                                           display="none"))
        self.summary_line = w.HTML(value=_NONE_YET)
        self.widget = w.VBox([self.summary_line, self.image],
                             layout=w.Layout(margin="6px 0 0 0"))

    # ------------------------------------------------------------------ data
    def record(self, latency_s, series: str = "requests", t: float | None = None) -> None:
        """Add one request's latency (seconds); ignores None (client without timing)."""
        if latency_s is None:
            return
        latency_s = float(latency_s)
        if not np.isfinite(latency_s) or latency_s < 0:
            raise ValueError(f"latency must be a non-negative number of seconds, got {latency_s}")
        self.samples.append((time.time() if t is None else float(t), latency_s, str(series)))
        if self.auto_render:
            self.render()

    def clear(self) -> None:
        self.samples.clear()
        self.render()

    def series(self) -> dict[str, np.ndarray]:
        """series name -> latencies in seconds, oldest first."""
        out: dict[str, list[float]] = {}
        for _, latency_s, name in self.samples:
            out.setdefault(name, []).append(latency_s)
        return {name: np.asarray(values) for name, values in out.items()}

    def summary(self) -> dict[str, dict[str, float]]:
        """series -> count, last, mean, p50, p95 (seconds)."""
        stats = {}
        for name, values in self.series().items():
            stats[name] = {
                "count": int(len(values)),
                "last": float(values[-1]),
                "mean": float(values.mean()),
                "p50": float(np.percentile(values, 50)),
                "p95": float(np.percentile(values, 95)),
            }
        return stats

    # ------------------------------------------------------------------ view
    def render(self) -> None:
        stats = self.summary()
        if not stats:
            self.summary_line.value = _NONE_YET
            self.image.value = b""
            self.image.layout.display = "none"
            return
        parts = []
        for k, (name, s) in enumerate(stats.items()):
            color = _COLORS[k % len(_COLORS)] if len(stats) > 1 else "#333"
            numbers = (f"last {s['last'] * 1e3:.1f} ms" if s["count"] == 1 else
                       f"last {s['last'] * 1e3:.1f} ms, p50 {s['p50'] * 1e3:.1f} ms, "
                       f"p95 {s['p95'] * 1e3:.1f} ms")
            parts.append(f"<span style='color:{color}'>■</span> {html.escape(name)}: {numbers} "
                         f"(n={s['count']})")
        self.summary_line.value = ("<small><b>" + html.escape(self.title) + "</b> · "
                                   + " · ".join(parts) + "</small>")
        if max(s["count"] for s in stats.values()) < 2:  # one number per series: no plot
            self.image.value = b""
            self.image.layout.display = "none"
            return
        self.image.value = self._plot()
        self.image.layout.display = ""

    def _plot(self) -> bytes:
        from matplotlib.figure import Figure

        dpi = 100
        fig = Figure(figsize=(PLOT_PX[0] * 2 / dpi, PLOT_PX[1] * 2 / dpi), dpi=dpi)
        ax = fig.add_subplot(1, 1, 1)
        by_series: dict[str, list[float]] = {}
        for _, latency_s, name in self.samples:
            by_series.setdefault(name, []).append(latency_s * 1e3)
        top = 0.0
        for k, (name, values) in enumerate(by_series.items()):
            xs = np.arange(1, len(values) + 1)
            few = len(values) <= MARKERS_UP_TO
            ax.plot(xs, values, lw=1.6 if few else 1.0, color=_COLORS[k % len(_COLORS)],
                    marker="o" if few else None, markersize=4, label=name)
            top = max(top, float(np.percentile(values, 99)) if len(values) > 20 else max(values))
        longest = max(len(v) for v in by_series.values())
        ax.set_xlim(0.5, longest + 0.5)
        ax.set_ylim(0, top * 1.2 if top > 0 else 1.0)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("request", fontsize=16)
        ax.set_ylabel("ms", fontsize=16)
        ax.tick_params(labelsize=14)
        ax.grid(alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if len(by_series) > 1:  # above the axes, never over the first points
            ax.legend(fontsize=14, loc="lower left", bbox_to_anchor=(0.0, 1.0),
                      ncol=len(by_series), frameon=False, borderaxespad=0.2)
        fig.tight_layout(pad=0.4)
        return figure_png(fig)

    static_title = "Latency"

    def summary_html(self) -> str:
        """The numbers and, with two requests or more, the plot."""
        self.render()
        picture = ""
        if bytes(self.image.value or b""):
            from tfserve_magic.widgets.plots import data_uri

            picture = (f"<br><img src='{data_uri(bytes(self.image.value))}' "
                       f"width='{PLOT_PX[0]}' alt='latency plot'>")
        return self.summary_line.value + picture
