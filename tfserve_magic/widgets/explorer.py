"""PredictionExplorer: a served classifier's predictions beside the ground truth.

A paged gallery with "pred 7 / true 7" captions, filters (only errors, one true class, one
predicted class), overall and per-class accuracy, and a confusion matrix whose cells select what
the gallery shows. Inputs that are not images are listed in a table instead.
"""

from __future__ import annotations

import html

import numpy as np

from tfserve_magic.widgets._common import (
    StatusLine,
    as_labels,
    class_name,
    class_scores,
    client_name,
    figure_png,
    guarded,
    image_view,
    predict_kwargs,
    resolve_client,
    target_text,
)
from tfserve_magic.widgets._gallery import Gallery
from tfserve_magic.widgets.latency import LatencyView

ANY = -1  # filter value meaning "every class"
MAX_CELL_BUTTONS = 20  # above this many classes the matrix is selected with the dropdowns only


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts ``[true, pred]`` (rows: true class, columns: predicted class)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0
                        or max(y_true.max(), y_pred.max()) >= n_classes):
        raise ValueError(f"class ids must lie in 0..{n_classes - 1}")
    counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


class PredictionExplorer:
    """Explore a served classifier's predictions on ``x`` against the labels ``y``.

    ``client``: a ``Client``, a server/model name, or a URL (``model=`` then names the model).
    The predict request is sent on construction (errors land in the status line); ``run()``
    sends it again. Heavy work is in plain methods: ``run``, ``set_filter``, ``select_cell``,
    ``visible_indices``, ``confusion_matrix``, ``per_class_accuracy``.
    """

    def __init__(self, client, x, y, *, model=None, version=None, label=None,
                 signature_name=None, class_names=None, page_size: int = 24, columns: int = 8,
                 timeout: float = 30.0, latency: LatencyView | None = None, run: bool = True):
        import ipywidgets as w

        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        self.x = np.asarray(x)
        if self.x.ndim == 0 or len(self.x) == 0:
            raise ValueError("x must hold at least one input")
        self.y = as_labels(y, len(self.x))
        self.client = resolve_client(client, model, timeout=timeout)
        self.version, self.label, self.signature_name = version, label, signature_name
        self.class_names = list(class_names) if class_names is not None else None
        self.raise_errors = False
        self.y_pred: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self.n_classes = 0
        self._scores_are_probs = False
        self._holding = False

        self.status = StatusLine()
        self.latency = latency if latency is not None else LatencyView(title="predict latency")
        self.header = w.HTML(value=self._header_html())
        self.run_button = w.Button(description="Predict again", icon="refresh")
        self.run_button.on_click(lambda _: self._on_run())
        self.errors_only = w.Checkbox(value=False, description="only errors", indent=False,
                                      layout=w.Layout(width="110px"))
        self.true_class = w.Dropdown(options=[("any", ANY)], value=ANY, description="true",
                                     layout=w.Layout(width="170px"))
        self.pred_class = w.Dropdown(options=[("any", ANY)], value=ANY, description="pred",
                                     layout=w.Layout(width="170px"))
        self.show_all_button = w.Button(description="show all", layout=w.Layout(width="90px"))
        self.show_all_button.on_click(lambda _: self._on_show_all())
        for control in (self.errors_only, self.true_class, self.pred_class):
            control.observe(self._on_filter, "value")
        self.summary = w.HTML(value="")
        self.per_class = w.HTML(value="")
        self.matrix_image = w.Image(format="png", layout=w.Layout(width="320px"))
        self.cell_grid = w.GridBox([])
        self.cell_buttons: dict[tuple[int, int], w.Button] = {}

        images = image_view(self.x)
        self.gallery = Gallery(self.x, images, page_size, self._caption, columns=columns)
        controls = w.HBox([self.errors_only, self.true_class, self.pred_class,
                           self.show_all_button, self.run_button])
        right = w.VBox([self.matrix_image, self.cell_grid, self.per_class])
        self.widget = w.VBox([
            self.header, self.status.widget, controls, self.summary,
            w.HBox([self.gallery.widget, right]), self.latency.widget,
        ])
        if run:
            self._on_run()

    # ------------------------------------------------------------------ work
    def run(self) -> None:
        """Send the inputs to the model and refresh every view (raises on failure)."""
        self.status.info(f"predicting {len(self.x)} inputs ...")
        prediction = self.client.predict(
            instances=self.x, **predict_kwargs(self.version, self.label, self.signature_name)
        )
        self.latency.record(getattr(prediction, "latency_s", None), series="predict")
        y_pred, scores = class_scores(prediction)
        if len(y_pred) != len(self.x):
            raise ValueError(f"the model returned {len(y_pred)} predictions for {len(self.x)} "
                             "inputs")
        n = max(int(self.y.max()), int(y_pred.max())) + 1
        if scores is not None:
            n = max(n, scores.shape[1])
        if self.class_names is not None:
            n = max(n, len(self.class_names))
        self.y_pred, self.scores, self.n_classes = y_pred, scores, n
        self._scores_are_probs = scores is not None and bool(
            np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)
        )
        self._build_class_controls()
        self.refresh()
        latency = getattr(prediction, "latency_s", None)
        took = f" in {latency * 1e3:.0f} ms" if latency is not None else ""
        self.status.ok(f"{len(self.x)} predictions{took}; accuracy {self.accuracy():.2%}")

    def _require_predictions(self) -> np.ndarray:
        if self.y_pred is None:
            raise RuntimeError("no predictions yet: run() failed or was not called")
        return self.y_pred

    def accuracy(self) -> float:
        return float(np.mean(self._require_predictions() == self.y))

    def confusion_matrix(self) -> np.ndarray:
        return confusion_matrix(self.y, self._require_predictions(), self.n_classes)

    def per_class_accuracy(self) -> dict[int, float]:
        """true class -> fraction predicted correctly (recall), for classes present in y."""
        y_pred = self._require_predictions()
        return {int(k): float(np.mean(y_pred[self.y == k] == k)) for k in np.unique(self.y)}

    def visible_indices(self) -> np.ndarray:
        """Indices of the inputs the current filters let through, in input order."""
        y_pred = self._require_predictions()
        keep = np.ones(len(self.y), bool)
        if self.errors_only.value:
            keep &= y_pred != self.y
        if self.true_class.value != ANY:
            keep &= self.y == self.true_class.value
        if self.pred_class.value != ANY:
            keep &= y_pred == self.pred_class.value
        return np.flatnonzero(keep)

    def page_indices(self) -> np.ndarray:
        return self.gallery.page_indices()

    def next_page(self) -> None:
        self.gallery.next_page()

    def prev_page(self) -> None:
        self.gallery.prev_page()

    def set_filter(self, *, errors_only=None, true_class=None, pred_class=None) -> None:
        """Change filters (``ANY``/-1 clears a class filter); the gallery restarts at page 1."""
        self._require_predictions()
        self._holding = True
        try:
            if errors_only is not None:
                self.errors_only.value = bool(errors_only)
            if true_class is not None:
                self.true_class.value = self._class_value(true_class)
            if pred_class is not None:
                self.pred_class.value = self._class_value(pred_class)
        finally:
            self._holding = False
        self.refresh()

    def select_cell(self, true_class: int, pred_class: int) -> None:
        """Show the inputs of one confusion-matrix cell (what clicking the cell does)."""
        self.set_filter(errors_only=False, true_class=true_class, pred_class=pred_class)

    def clear_filters(self) -> None:
        self.set_filter(errors_only=False, true_class=ANY, pred_class=ANY)

    def _class_value(self, k) -> int:
        k = int(k)
        if k != ANY and not 0 <= k < self.n_classes:
            raise ValueError(f"class {k} is not in 0..{self.n_classes - 1}")
        return k

    # ------------------------------------------------------------------ view
    def refresh(self) -> None:
        """Re-render summary, gallery and matrix from the current widget values."""
        visible = self.visible_indices()
        self.gallery.set_items(visible)
        self.summary.value = self._summary_html(visible)
        self._render_matrix()
        self.per_class.value = self._per_class_html()

    def _caption(self, i: int) -> tuple[str, bool, str]:
        pred, true = int(self.y_pred[i]), int(self.y[i])
        text = (f"pred {class_name(self.class_names, pred)} / "
                f"true {class_name(self.class_names, true)}")
        extra = f"#{i}"
        if self.scores is not None:
            extra += f" · {self.scores[i, pred]:.0%}" if self._scores_are_probs else ""
        return text, pred != true, extra

    def _header_html(self) -> str:
        return (f"<b>Prediction explorer</b> · {html.escape(client_name(self.client))} "
                f"({target_text(self.version, self.label)}) · {len(self.x)} inputs")

    def _summary_html(self, visible) -> str:
        correct = int(np.sum(self.y_pred == self.y))
        filters = []
        if self.errors_only.value:
            filters.append("only errors")
        if self.true_class.value != ANY:
            filters.append(f"true {class_name(self.class_names, self.true_class.value)}")
        if self.pred_class.value != ANY:
            filters.append(f"pred {class_name(self.class_names, self.pred_class.value)}")
        where = f" ({', '.join(filters)})" if filters else ""
        return (f"<b>accuracy {correct / len(self.y):.2%}</b> ({correct}/{len(self.y)}) · "
                f"showing {len(visible)} of {len(self.y)}{html.escape(where)}")

    def _per_class_html(self) -> str:
        counts = self.confusion_matrix()
        cells = []
        for k in range(self.n_classes):
            total = int(counts[k].sum())
            if total == 0:
                continue
            acc = counts[k, k] / total
            color = "#1a7f37" if acc >= 0.9 else ("#b26a00" if acc >= 0.7 else "#c62828")
            cells.append(f"<tr><td>{html.escape(class_name(self.class_names, k))}</td>"
                         f"<td>{total}</td><td style='color:{color}'>{acc:.1%}</td></tr>")
        return ('<table style="font-size:11px"><tr><th>class</th><th>n</th><th>accuracy</th>'
                "</tr>" + "".join(cells) + "</table>")

    def _build_class_controls(self) -> None:
        import ipywidgets as w

        options = [("any", ANY)] + [(f"{k}: {self.class_names[k]}" if self.class_names else str(k),
                                     k) for k in range(self.n_classes)]
        self._holding = True
        try:
            for dropdown in (self.true_class, self.pred_class):
                keep = dropdown.value if dropdown.value in dict(options).values() else ANY
                dropdown.options = options
                dropdown.value = keep
        finally:
            self._holding = False
        self.cell_buttons = {}
        if self.n_classes > MAX_CELL_BUTTONS:
            self.cell_grid.children = [w.HTML("<small>choose a cell with the true/pred "
                                              "dropdowns</small>")]
            return
        children = [w.HTML("<small>true \\ pred</small>")]
        children += [w.HTML(f"<small><b>{k}</b></small>") for k in range(self.n_classes)]
        for t in range(self.n_classes):
            children.append(w.HTML(f"<small><b>{t}</b></small>"))
            for p in range(self.n_classes):
                button = w.Button(description="0", layout=w.Layout(width="34px", height="22px",
                                                                   padding="0"))
                button.on_click(lambda _, t=t, p=p: self._on_cell(t, p))
                self.cell_buttons[(t, p)] = button
                children.append(button)
        self.cell_grid.children = children
        self.cell_grid.layout = w.Layout(grid_template_columns=f"repeat({self.n_classes + 1}, "
                                                               "auto)", grid_gap="1px")

    def _render_matrix(self) -> None:
        counts = self.confusion_matrix()
        for (t, p), button in self.cell_buttons.items():
            count = int(counts[t, p])
            button.description = str(count)
            button.tooltip = f"true {t}, predicted {p}: {count}"
            button.button_style = ("success" if t == p and count else
                                   "danger" if count else "")
        self.matrix_image.value = self._matrix_png(counts)

    def _matrix_png(self, counts: np.ndarray) -> bytes:
        from matplotlib.figure import Figure

        n = self.n_classes
        side = min(2.0 + 0.35 * n, 8.0)
        fig = Figure(figsize=(side, side), dpi=80)
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(np.log1p(counts), cmap="Blues")
        if n <= 20:
            peak = counts.max() if counts.size else 0
            for t in range(n):
                for p in range(n):
                    if counts[t, p]:
                        dark = np.log1p(counts[t, p]) > 0.6 * np.log1p(peak)
                        ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=7,
                                color="white" if dark else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = range(n) if n <= 20 else range(0, n, max(1, n // 10))
        ax.set_xticks(list(ticks))
        ax.set_yticks(list(ticks))
        ax.tick_params(labelsize=7)
        t_sel, p_sel = self.true_class.value, self.pred_class.value
        if t_sel != ANY or p_sel != ANY:
            from matplotlib.patches import Rectangle

            x0, w_ = (p_sel - 0.5, 1) if p_sel != ANY else (-0.5, n)
            y0, h_ = (t_sel - 0.5, 1) if t_sel != ANY else (-0.5, n)
            ax.add_patch(Rectangle((x0, y0), w_, h_, fill=False, ec="#ff7f0e", lw=2))
        ax.set_title(f"confusion matrix (accuracy {np.trace(counts) / counts.sum():.1%})",
                     fontsize=9)
        fig.tight_layout()
        return figure_png(fig)

    # ------------------------------------------------------------------ handlers
    @guarded
    def _on_run(self) -> None:
        self.run()

    @guarded
    def _on_filter(self, change) -> None:
        if not self._holding and self.y_pred is not None:
            self.refresh()

    @guarded
    def _on_cell(self, true_class: int, pred_class: int) -> None:
        self.select_cell(true_class, pred_class)

    @guarded
    def _on_show_all(self) -> None:
        self.clear_filters()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
