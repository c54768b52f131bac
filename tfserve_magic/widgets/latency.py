"""LatencyView: a small live plot of request latencies fed by the other widgets."""

from __future__ import annotations

import html
import time
from collections import deque

import numpy as np

from tfserve_magic.widgets._common import figure_png

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


class LatencyView:
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
        self.image = w.Image(format="png", layout=w.Layout(width="360px"))
        self.summary_html = w.HTML(value="<i>no requests yet</i>")
        self.widget = w.VBox([self.summary_html, self.image])

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
            self.summary_html.value = "<i>no requests yet</i>"
            self.image.value = b""
            return
        parts = [
            f"{html.escape(name)}: last {s['last'] * 1e3:.1f} ms, p50 {s['p50'] * 1e3:.1f} ms, "
            f"p95 {s['p95'] * 1e3:.1f} ms (n={s['count']})"
            for name, s in stats.items()
        ]
        self.summary_html.value = "<small>" + "<br>".join(parts) + "</small>"
        self.image.value = self._plot()

    def _plot(self) -> bytes:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 1.8), dpi=80)
        ax = fig.add_subplot(1, 1, 1)
        start = self.samples[0][0]
        by_series: dict[str, tuple[list[float], list[float]]] = {}
        for t, latency_s, name in self.samples:
            ts, ls = by_series.setdefault(name, ([], []))
            ts.append(t - start)
            ls.append(latency_s * 1e3)
        for k, (name, (ts, ls)) in enumerate(by_series.items()):
            ax.plot(ts, ls, marker=".", lw=1, color=_COLORS[k % len(_COLORS)], label=name)
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("ms", fontsize=7)
        ax.set_title(self.title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        if len(by_series) > 1:
            ax.legend(fontsize=6, loc="upper left")
        fig.tight_layout()
        return figure_png(fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
