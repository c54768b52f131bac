"""RegressionView: a served regression's predictions beside the truth.

MAE, RMSE and R², a predicted-against-true plot with the y = x line, a residual histogram, and
the worst errors as rows with their inputs. The rows are the click target: clicking one shows
that input in full and circles its dot in the plot (the plots are static matplotlib PNGs, so
they need no JavaScript and read the same in a saved notebook).
"""

from __future__ import annotations

import html

import numpy as np

from tfserve_magic import scoring
from tfserve_magic.widgets.plots import PLOT_PX, data_uri, predicted_vs_true, residual_histogram

WORST = 8  # rows of worst errors
MAX_WIDTH_PX = 880  # inside a 900 px output area, like the other views


class RegressionView:
    """``examples``: ``Examples``; ``labels``: true values ``[N]`` or ``[N, targets]``;
    ``reading``: the regression ``Reading``. With several targets, ``target`` picks one."""

    def __init__(self, examples, labels, reading, *, worst: int = WORST):
        import ipywidgets as w

        values = np.asarray(reading.values, dtype=np.float64)
        truth = np.asarray(labels)
        if truth.dtype.kind not in "biuf":
            raise ValueError(f"a regression needs numeric labels, got {truth.dtype}")
        truth = truth.astype(np.float64)
        if truth.ndim == 2 and truth.shape[1] == 1:
            truth = truth[:, 0]
        if truth.shape != values.shape:
            raise ValueError(f"labels shaped {list(truth.shape)} for predictions shaped "
                             f"{list(values.shape)}: pass one true value per output")
        self.examples, self.truth_all, self.values_all = examples, truth, values
        self.n_targets = 1 if values.ndim == 1 else values.shape[1]
        self.worst = int(worst)
        self.selected: int | None = None

        self.target = w.Dropdown(options=[(f"target {t}", t) for t in range(self.n_targets)],
                                 value=0, description="target",
                                 layout=w.Layout(width="180px",
                                                 display="" if self.n_targets > 1 else "none"))
        self.target.observe(lambda _: self._on_target(), "value")
        self.numbers = w.HTML(value="")
        self.scatter = w.Image(format="png", layout=w.Layout(width=f"{PLOT_PX[0]}px"))
        self.histogram = w.Image(format="png", layout=w.Layout(width=f"{PLOT_PX[0]}px"))
        self.rows = w.VBox([])
        self.detail = w.HTML(value="<i style='color:#777'>click a row to see its input</i>")
        self.row_buttons: dict[int, w.Button] = {}
        plots = w.HBox([self.scatter, self.histogram],
                       layout=w.Layout(flex_flow="row wrap", gap="8px"))
        self.widget = w.VBox([
            w.HBox([self.numbers, self.target], layout=w.Layout(align_items="center")),
            plots, w.HTML("<b>Worst errors</b> <small style='color:#555'>· click a row to see "
                          "its input and its dot</small>"), self.rows, self.detail,
        ], layout=w.Layout(max_width=f"{MAX_WIDTH_PX}px", overflow="hidden"))
        self.widget.add_class("tfserve-regression")
        self.scatter.add_class("tfserve-scatter")
        self.render()

    # ------------------------------------------------------------------ numbers
    @property
    def truth(self) -> np.ndarray:
        return self.truth_all if self.n_targets == 1 else self.truth_all[:, self.target.value]

    @property
    def values(self) -> np.ndarray:
        return self.values_all if self.n_targets == 1 else self.values_all[:, self.target.value]

    def metrics(self) -> dict[str, float]:
        """MAE, RMSE, R² (and n) of the shown target."""
        m = scoring.regression_metrics(self.truth, self.values, worst=0)
        return {"mae": m.mae, "rmse": m.rmse, "r2": m.r2, "n": m.n}

    def residuals(self) -> np.ndarray:
        return self.values - self.truth

    def worst_indices(self) -> np.ndarray:
        """The examples with the largest absolute error, worst first."""
        return np.argsort(-np.abs(self.residuals()), kind="stable")[: self.worst]

    def headline(self) -> str:
        m = self.metrics()
        r2 = "n/a" if np.isnan(m["r2"]) else f"{m['r2']:.3f}"
        return f"MAE {m['mae']:.4g}, RMSE {m['rmse']:.4g}, R² {r2}"

    # ------------------------------------------------------------------ view
    def select(self, i: int) -> None:
        """Show example ``i`` in full and circle its dot (what clicking its row does)."""
        i = int(i)
        if not 0 <= i < len(self.truth):
            raise ValueError(f"example {i} is not in 0..{len(self.truth) - 1}")
        self.selected = i
        error = self.values[i] - self.truth[i]
        self.detail.value = (
            f"<div class='tfserve-detail' style='border-left:3px solid #ff7f0e;padding-left:8px'>"
            f"<b>input #{i}</b> · true {self.truth[i]:.4g} · predicted {self.values[i]:.4g} · "
            f"error {error:+.4g}<br>{self.examples.detail_html(i)}</div>")
        for k, button in self.row_buttons.items():
            button.button_style = "warning" if k == i else ""
        self.scatter.value = predicted_vs_true(self.truth, self.values, highlight=i)

    def render(self) -> None:
        import ipywidgets as w

        self.numbers.value = f"<b style='font-size:14px'>{html.escape(self.headline())}</b>" + (
            f" <small style='color:#555'>· {len(self.truth)} examples</small>")
        self.scatter.value = predicted_vs_true(self.truth, self.values, highlight=self.selected)
        self.histogram.value = residual_histogram(self.residuals())
        rows, self.row_buttons = [], {}
        for i in self.worst_indices():
            i = int(i)
            button = w.Button(description=f"#{i}", layout=w.Layout(width="64px"),
                              tooltip=f"show input #{i}")
            button.on_click(lambda _, i=i: self.select(i))
            button.add_class("tfserve-row-button")
            self.row_buttons[i] = button
            # min_width 0: a flex item may shrink below its text, so a long row of named
            # inputs is cut at the output area's edge instead of widening the widget
            text = w.HTML(self._row_text(i), layout=w.Layout(flex="1 1 auto", overflow="hidden",
                                                             min_width="0"))
            rows.append(w.HBox([button, text], layout=w.Layout(align_items="center",
                                                               width="100%")))
        self.rows.children = rows

    def _row_text(self, i: int) -> str:
        error = self.values[i] - self.truth[i]
        return (f"<span style='font-size:12px;white-space:nowrap'>true {self.truth[i]:.4g} · "
                f"pred {self.values[i]:.4g} · <b style='color:#c62828'>error {error:+.4g}</b> · "
                f"</span>{self.examples.cell_html(i)}")

    def _on_target(self) -> None:
        self.selected = None
        self.render()

    def summary_html(self) -> str:
        """The numbers, both plots and the worst rows, as static HTML."""
        rows = "".join(f"<tr><td>#{int(i)}</td><td>{self._row_text(int(i))}</td></tr>"
                       for i in self.worst_indices())
        return (f"<div><b>{html.escape(self.headline())}</b> · {len(self.truth)} examples</div>"
                f"<img src='{data_uri(predicted_vs_true(self.truth, self.values))}' "
                f"width='{PLOT_PX[0]}' alt='predicted against true'>"
                f"<img src='{data_uri(residual_histogram(self.residuals()))}' "
                f"width='{PLOT_PX[0]}' alt='residual histogram'>"
                f"<table style='font-size:12px'><caption style='text-align:left'><b>Worst "
                f"errors</b></caption>{rows}</table>")
