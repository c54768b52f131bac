"""PredictionExplorer: a served model's predictions beside the ground truth, for every task.

Classifiers (multiclass, binary; images, sentences, named columns or plain values): a paged
gallery with "pred 7 / true 7" captions (thumbnails for images, the sentences themselves, or a
row of feature names and values), filters (only errors, one true class, one predicted class),
overall and per-class accuracy, and one confusion matrix (a heat map of buttons, rows true,
columns predicted, per-class accuracy at the end of each row) whose cells select what the
gallery shows. Binary classifiers add a threshold slider with precision, recall and F1 and the
precision/recall trade-off (``ThresholdPanel``). Regressions and multi-label models get their
own views (``RegressionView``, ``MultilabelView``). Sized for a 900 px output area (JupyterLab
with its sidebar open); the display carries a static HTML summary for saved notebooks.
"""

from __future__ import annotations

import html

import numpy as np

from tfserve_magic.inputs import prepare_inputs
from tfserve_magic.outputs import TASKS, class_labels, read_outputs
from tfserve_magic.widgets._common import (
    StatusLine,
    class_name,
    client_name,
    guarded,
    predict_kwargs,
    resolve_client,
    target_text,
)
from tfserve_magic.widgets._data import Examples
from tfserve_magic.widgets._gallery import Gallery
from tfserve_magic.widgets._static import StaticSummary
from tfserve_magic.widgets.latency import LatencyView

ANY = -1  # filter value meaning "every class"
MAX_CELL_BUTTONS = 20  # above this many classes the matrix is selected with the dropdowns only
CELL = 32  # px per matrix cell: counts up to 4 digits stay readable at 11 px


def cell_colors(share: float, *, correct: bool, empty: bool) -> tuple[str, str]:
    """Background and text colour of a matrix cell: blue for the diagonal, red off it, the
    shade growing with the cell's share of its row (so rare classes read as well as common)."""
    if empty:
        return "#ffffff", "#bbbbbb"
    base = (31, 119, 180) if correct else (214, 39, 40)
    strength = 0.15 + 0.85 * min(max(share, 0.0), 1.0)
    rgb = [round(255 - (255 - c) * strength) for c in base]
    text = "#ffffff" if strength > 0.55 else "#222222"
    return "#{:02x}{:02x}{:02x}".format(*rgb), text


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


def _class_ids(labels, names, n: int) -> np.ndarray:
    """Class ids ``[N]`` from ids, one-hot rows, or class names (with ``names``)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "USO":
        if names is None:
            raise ValueError("the labels are names but the model's classes have none: pass "
                             "class_names= (one name per score column)")
        index = {str(name): k for k, name in enumerate(names)}
        texts = [v.decode() if isinstance(v, bytes) else str(v) for v in labels.reshape(-1)]
        unknown = sorted({t for t in texts if t not in index})
        if unknown:
            raise ValueError(f"labels {', '.join(map(repr, unknown[:5]))} are not among the "
                             f"classes {', '.join(map(str, names))}")
        return np.asarray([index[t] for t in texts], np.int64)
    return class_labels(labels, n)


class PredictionExplorer(StaticSummary):
    """Explore a served model's predictions on ``x`` against the labels ``y``.

    ``x``: an array (images, values), a list of sentences, a dict of arrays, a pandas
    ``DataFrame`` or a list of dicts (named inputs, sent by the signature's input names).
    ``task``: multiclass, binary, multilabel or regression (default: read from the outputs and
    labels, see ``tfserve_magic.outputs``). ``client``: a ``Client``, a server/model name, or a
    URL (``model=`` then names the model). The predict request is sent on construction (errors
    land in the status line); ``run()`` sends it again. Heavy work is in plain methods: ``run``,
    ``set_filter``, ``select_cell``, ``visible_indices``, ``confusion_matrix``,
    ``per_class_accuracy``; ``view`` holds the regression, multi-label or threshold view.
    """

    static_title = "Prediction explorer"

    def __init__(self, client, x, y, *, model=None, version=None, label=None,
                 signature_name=None, class_names=None, task: str | None = None,
                 page_size: int = 16, columns: int = 4, timeout: float = 30.0,
                 latency: LatencyView | None = None, run: bool = True, restart=None):
        import ipywidgets as w

        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
        self.examples = Examples(x)
        self.inputs = x  # as given: prepare_inputs shapes it for the signature
        self.x = self.examples.array if self.examples.columns is None else self.examples.columns
        self.labels = np.asarray(y)
        if self.labels.ndim == 0 or len(self.labels) != len(self.examples):
            raise ValueError(f"{self.labels.size if self.labels.ndim == 0 else len(self.labels)}"
                             f" labels for {len(self.examples)} inputs: pass one label per input")
        self.task = task
        self.reading = None
        self.view = None  # RegressionView, MultilabelView or ThresholdPanel, after run()
        self.y = np.zeros(len(self.examples), np.int64)  # class ids, once read as a classifier
        self._metadata = None
        self.client = resolve_client(client, model, timeout=timeout)
        self.version, self.label, self.signature_name = version, label, signature_name
        self.class_names = list(class_names) if class_names is not None else None
        self.raise_errors = False
        self.restart = restart
        self.y_pred: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self.n_classes = 0
        self._scores_are_probs = False
        self._holding = False

        self.status = StatusLine()
        self.latency = latency if latency is not None else LatencyView(title="predict latency")
        self.header = w.HTML(value=self._header_html())
        self.run_button = w.Button(description="Predict again", icon="refresh",
                                   layout=w.Layout(width="auto", margin="0 0 0 auto"))
        self.run_button.on_click(lambda _: self._on_run())
        self.errors_only = w.Checkbox(value=False, description="only errors", indent=False,
                                      layout=w.Layout(width="100px"))
        label_style = {"description_width": "32px"}
        self.true_class = w.Dropdown(options=[("any", ANY)], value=ANY, description="true",
                                     layout=w.Layout(width="150px"), style=label_style)
        self.pred_class = w.Dropdown(options=[("any", ANY)], value=ANY, description="pred",
                                     layout=w.Layout(width="150px"), style=label_style)
        self.show_all_button = w.Button(description="show all", layout=w.Layout(width="80px"))
        self.show_all_button.on_click(lambda _: self._on_show_all())
        for control in (self.errors_only, self.true_class, self.pred_class):
            control.observe(self._on_filter, "value")
        self.summary = w.HTML(value="")
        self.matrix_title = w.HTML(value="")
        self.cell_grid = w.GridBox([])
        self.cell_buttons: dict[tuple[int, int], w.Button] = {}
        self.recall_cells: dict[int, w.HTML] = {}

        self.gallery = Gallery(self.x, self.examples.images, page_size, self._caption,
                               columns=columns, describe=self.examples.cell_html)
        # beside the matrix (images; below it if narrow); rows of text or features take the
        # whole width below the matrix
        self.gallery.widget.layout.flex = ("1 1 360px" if self.examples.images is not None
                                           else "1 1 100%")
        self.controls = w.HBox([self.errors_only, self.true_class, self.pred_class,
                                self.show_all_button],
                               layout=w.Layout(align_items="center", flex_flow="row wrap"))
        matrix = w.VBox([self.matrix_title, self.cell_grid],
                        layout=w.Layout(flex="none", margin="0 20px 8px 0"))
        self.classifier_box = w.VBox([
            self.controls, self.summary,
            w.HBox([matrix, self.gallery.widget],
                   layout=w.Layout(flex_flow="row wrap", align_items="flex-start")),
        ])
        self.body = w.VBox([])
        top = w.HBox([self.header, self.run_button], layout=w.Layout(align_items="center"))
        self.widget = w.VBox([top, self.status.widget, self.body, self.latency.widget],
                             layout=w.Layout(max_width="880px"))
        # class names for styling and for the browser tests' selectors
        self.widget.add_class("tfserve-explorer")
        self.summary.add_class("tfserve-summary")
        self.cell_grid.add_class("tfserve-matrix")
        if run:
            self._on_run()

    # ------------------------------------------------------------------ work
    def run(self) -> None:
        """Send the inputs to the model and refresh every view (raises on failure)."""
        self.status.info(f"predicting {len(self.examples)} inputs ...")
        kwargs = predict_kwargs(self.version, self.label, self.signature_name)
        instances = prepare_inputs(self.inputs, self._signature(), self.signature_name)
        prediction = self.client.predict(instances=instances, **kwargs)
        self.latency.record(getattr(prediction, "latency_s", None), series="predict")
        try:
            reading = read_outputs(prediction, self.labels, task=self.task)
        except ValueError as exc:
            raise ValueError(f"{exc} (task={self.task!r} does not fit these outputs)") from None
        count = len(next(v for v in (reading.class_ids, reading.values, reading.active)
                         if v is not None)) if reading.task else len(self.examples)
        if count != len(self.examples):
            raise ValueError(f"the model returned {count} predictions for "
                             f"{len(self.examples)} inputs")
        self.reading = reading
        if reading.task == "regression":
            from tfserve_magic.widgets.regression_view import RegressionView

            self.view = RegressionView(self.examples, self.labels, reading)
            self.body.children = [self.view.widget]
            took = self._took(prediction)
            self.status.ok(f"{len(self.examples)} predictions{took}; {self.view.headline()}")
            return
        if reading.task == "multilabel":
            from tfserve_magic.widgets.multilabel_view import MultilabelView

            self.view = MultilabelView(self.examples, self.labels, reading,
                                       label_names=self.class_names)
            self.body.children = [self.view.widget]
            took = self._took(prediction)
            self.status.ok(f"{len(self.examples)} predictions{took}; {self.view.headline()}")
            return
        if not reading.is_classifier:
            raise ValueError(f"{reading.reason}: nothing to compare with the labels (pass "
                             "task= to say how to read the outputs)")
        self._run_classifier(reading)
        self.status.ok(f"{len(self.examples)} predictions{self._took(prediction)}; "
                       f"accuracy {self.accuracy():.2%}")

    def _run_classifier(self, reading) -> None:
        names = self.class_names or (list(reading.class_names) if reading.class_names else None)
        self.y = _class_ids(self.labels, names, len(self.examples))
        y_pred, scores = reading.class_ids, reading.scores
        n = max(int(self.y.max()), int(y_pred.max())) + 1
        if scores is not None:
            n = max(n, scores.shape[1])
        if names is not None:
            n = max(n, len(names))
        self.class_names = names
        self.y_pred, self.scores, self.n_classes = y_pred, scores, n
        self._scores_are_probs = reading.score_kind == "probabilities"
        self._build_class_controls()
        self.view = None
        children = [self.classifier_box]
        if reading.task == "binary" and reading.scores is not None:
            from tfserve_magic.widgets.threshold import ThresholdPanel

            self.view = ThresholdPanel(self.y == 1, reading.probabilities[:, 1],
                                       on_change=self._on_threshold)
            self.y_pred = self.view.predicted().astype(np.int64)
            children = [self.view.widget, self.classifier_box]
        self.body.children = children
        self.refresh()

    def _on_threshold(self, predicted) -> None:
        """The binary threshold moved: the predictions, matrix and gallery follow it."""
        self.y_pred = np.asarray(predicted, dtype=np.int64)
        self.refresh()
        self.status.ok(f"{self.view.headline()}; accuracy {self.accuracy():.2%}")

    def _signature(self):
        """The model's metadata (for input names and shapes), or None when it cannot be read."""
        if self._metadata is None and hasattr(self.client, "metadata"):
            try:
                self._metadata = self.client.metadata(
                    **predict_kwargs(self.version, self.label))
            except Exception:  # noqa: BLE001 - the request is then sent as given
                self._metadata = None
        return self._metadata

    @staticmethod
    def _took(prediction) -> str:
        latency = getattr(prediction, "latency_s", None)
        return f" in {latency * 1e3:.0f} ms" if latency is not None else ""

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

    def _caption(self, i: int) -> tuple[str, bool, str]:
        pred, true = int(self.y_pred[i]), int(self.y[i])
        text = (f"pred {class_name(self.class_names, pred)} / "
                f"true {class_name(self.class_names, true)}")
        extra = f"input #{i}"
        if self.scores is not None and self._scores_are_probs:
            extra += f" · {self.scores[i, pred]:.0%} sure"
        return text, pred != true, extra

    def _header_html(self) -> str:
        return (f"<b>Prediction explorer</b> · {html.escape(client_name(self.client))} "
                f"({target_text(self.version, self.label)}) · {len(self.examples)} inputs")

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
        self.recall_cells = {}
        if self.n_classes > MAX_CELL_BUTTONS:
            self.cell_grid.children = [w.HTML("<small>choose a cell with the true/pred "
                                              "dropdowns</small>")]
            return
        n = self.n_classes

        def label(text, **style):
            css = ";".join(f"{k.replace('_', '-')}:{v}" for k, v in style.items())
            return w.HTML(f'<div style="font-size:11px;text-align:center;{css}">{text}</div>',
                          layout=w.Layout(margin="0", align_self="center"))

        # row 1: the axis name over the predicted classes; row 2: their names
        children = [label(""), label("predicted →", color="#555"),
                    *[label("") for _ in range(n)]]
        children += [label("true ↓", color="#555", white_space="nowrap"),
                     *[label(f"<b>{html.escape(self._short(k))}</b>") for k in range(n)],
                     label("acc.", color="#555")]
        for t in range(n):
            children.append(label(f"<b>{html.escape(self._short(t))}</b>"))
            for p in range(n):
                button = w.Button(description="", layout=w.Layout(
                    width=f"{CELL}px", height=f"{CELL - 6}px", padding="0", margin="0"))
                button.style.font_size = "11px"
                button.on_click(lambda _, t=t, p=p: self._on_cell(t, p))
                button.add_class("tfserve-cell")
                self.cell_buttons[(t, p)] = button
                children.append(button)
            self.recall_cells[t] = label("")
            children.append(self.recall_cells[t])
        # the first label row spans every column but the first and last (grid placement)
        children[1].layout.grid_area = f"1 / 2 / 2 / {n + 2}"
        children = children[:2] + [children[n + 1]] + children[n + 2:]
        self.cell_grid.children = children
        self.cell_grid.layout = w.Layout(
            grid_template_columns=f"44px repeat({n}, {CELL}px) 44px",
            grid_gap="2px", width="fit-content")

    def _short(self, k: int) -> str:
        """A class's name cut to fit a matrix cell (the dropdowns hold the full names)."""
        text = class_name(self.class_names, k)
        return text if len(text) <= 4 else text[:3] + "…"

    def _render_matrix(self) -> None:
        counts = self.confusion_matrix()
        total = int(counts.sum())
        self.matrix_title.value = (
            f"<b>Confusion matrix</b> <small style='color:#555'>· accuracy "
            f"{np.trace(counts) / max(total, 1):.1%} · click a cell to see its inputs</small>")
        t_sel, p_sel = self.true_class.value, self.pred_class.value
        row_totals = counts.sum(axis=1)
        for (t, p), button in self.cell_buttons.items():
            count = int(counts[t, p])
            share = count / row_totals[t] if row_totals[t] else 0.0
            button.description = str(count)
            button.tooltip = f"true {self._name(t)}, predicted {self._name(p)}: {count}"
            background, text = cell_colors(share, correct=(t == p), empty=count == 0)
            button.style.button_color = background
            button.style.text_color = text
            button.style.font_weight = "bold" if t == p else "normal"
            picked = (t_sel == ANY or t_sel == t) and (p_sel == ANY or p_sel == p) and (
                t_sel != ANY or p_sel != ANY)
            button.layout.border = "2px solid #ff7f0e" if picked else "1px solid #ddd"
        for t, cell in self.recall_cells.items():
            if row_totals[t]:
                acc = counts[t, t] / row_totals[t]
                color = "#1a7f37" if acc >= 0.9 else ("#b26a00" if acc >= 0.7 else "#c62828")
                cell.value = (f'<div style="font-size:11px;color:{color}" title="recall of '
                              f'{html.escape(self._name(t))}">{acc:.0%}</div>')
            else:
                cell.value = '<div style="font-size:11px;color:#999">–</div>'

    def _name(self, k: int) -> str:
        return class_name(self.class_names, k)

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

    # ------------------------------------------------------------------ saved notebooks
    def summary_html(self) -> str:
        """What a saved notebook shows: the numbers, the matrix and the first errors."""
        head = self._header_html()
        if self.reading is None:
            return f"{head}<br>{html.escape(self.status.text or 'no predictions yet')}"
        if self.view is not None and not self.reading.is_classifier:
            return f"{head}<br>{self.view.summary_html()}"
        from tfserve_magic.widgets._static import matrix_html, rows_html

        parts = [head, f"<div>{self._summary_html(np.arange(len(self.y)))}</div>"]
        if self.view is not None:  # the binary threshold panel
            parts.append(self.view.summary_html())
        names = [self._name(k) for k in range(self.n_classes)]
        parts.append(matrix_html(self.confusion_matrix(), names))
        wrong = np.flatnonzero(self.y_pred != self.y)[:8]
        parts.append(rows_html(self.examples, wrong, self._caption, "first errors"))
        return "".join(parts)
