"""Small matplotlib pictures for the views, as PNG bytes (Agg, no pyplot, no CDN).

Each is drawn at twice its size on screen (``PLOT_PX``) so text stays sharp.
"""

from __future__ import annotations

import numpy as np

from tfserve_magic.widgets._common import figure_png

PLOT_PX = (420, 300)  # two side by side fit a 900 px output area
_DPI = 100


def _figure(size=PLOT_PX):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * 2 / _DPI, size[1] * 2 / _DPI), dpi=_DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.tick_params(labelsize=16)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def predicted_vs_true(y_true, y_pred, *, highlight: int | None = None,
                      title: str = "predicted against true") -> bytes:
    """Each example a dot (true on x, predicted on y) beside the y = x line; ``highlight``
    circles one example."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    fig, ax = _figure()
    finite = np.isfinite(y_true) & np.isfinite(y_pred)
    both = np.r_[y_true[finite], y_pred[finite]]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#888", lw=1.5, ls="--",
            label="y = x")
    ax.scatter(y_true, y_pred, s=22, alpha=0.6, color="#1f77b4", edgecolors="none")
    if highlight is not None and 0 <= highlight < len(y_true):
        ax.scatter([y_true[highlight]], [y_pred[highlight]], s=260, facecolors="none",
                   edgecolors="#ff7f0e", linewidths=3, label=f"#{highlight}")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("true", fontsize=18)
    ax.set_ylabel("predicted", fontsize=18)
    ax.set_title(title, fontsize=18)
    ax.legend(fontsize=14, loc="upper left", frameon=False)
    fig.tight_layout(pad=0.5)
    return figure_png(fig)


def residual_histogram(residuals, *, title: str = "residuals (predicted − true)") -> bytes:
    """How the errors spread, with the zero line."""
    residuals = np.asarray(residuals, dtype=np.float64)
    residuals = residuals[np.isfinite(residuals)]
    fig, ax = _figure()
    bins = int(np.clip(np.sqrt(max(len(residuals), 1)) * 2, 10, 50))
    ax.hist(residuals, bins=bins, color="#1f77b4", alpha=0.8)
    ax.axvline(0.0, color="#888", lw=1.5, ls="--")
    ax.set_xlabel("error", fontsize=18)
    ax.set_ylabel("examples", fontsize=18)
    ax.set_title(title, fontsize=18)
    fig.tight_layout(pad=0.5)
    return figure_png(fig)


def precision_recall(recall, precision, *, at: tuple[float, float] | None = None,
                     threshold: float | None = None) -> bytes:
    """The precision/recall trade-off over every threshold; ``at`` (recall, precision) marks
    the current threshold."""
    fig, ax = _figure()
    ax.plot(np.r_[0.0, recall], np.r_[1.0, precision], color="#1f77b4", lw=2.5,
            drawstyle="steps-post")
    if at is not None:
        label = f"threshold {threshold:.2f}" if threshold is not None else None
        ax.scatter([at[0]], [at[1]], s=160, color="#ff7f0e", zorder=3, label=label)
        if label:
            ax.legend(fontsize=14, loc="lower left", frameon=False)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall", fontsize=18)
    ax.set_ylabel("precision", fontsize=18)
    ax.set_title("precision / recall trade-off", fontsize=18)
    fig.tight_layout(pad=0.5)
    return figure_png(fig)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI for static HTML (saved notebooks)."""
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
