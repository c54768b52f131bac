"""VersionCompare: the same inputs through two versions (or models, or servers), side by side.

The check before moving a label from ``stable`` to ``canary``, for every task kind: which
version errs less (accuracy for classifiers, MAE/RMSE/R² for regressions, per-label F1 for
multi-label models), the examples where they disagree most (a gallery of images, or rows of
sentences / features; largest difference first for regressions), and each one's latency.
``summary_html()`` is the same as static HTML, for saved notebooks.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

import numpy as np

from tfserve_magic import inputs as _inputs
from tfserve_magic.outputs import Reading, class_ids_of, read_outputs
from tfserve_magic.scoring import metrics as score
from tfserve_magic.widgets._common import (
    StatusLine,
    class_name,
    client_name,
    guarded,
    image_view,
    png_bytes,
    predict_kwargs,
    resolve_client,
)
from tfserve_magic.widgets._gallery import Gallery
from tfserve_magic.widgets._static import StaticSummary
from tfserve_magic.widgets.latency import LatencyView

# "MODEL@N", "MODEL@latest" or "MODEL:LABEL": another model on the same server
_OTHER_MODEL = re.compile(
    r"^(?P<model>[A-Za-z0-9_.\-]+)(?:@(?P<version>\d+|latest)|:(?P<label>[^:/]+))$"
)

# which disagreements the gallery shows (regressions: the largest differences, or where one
# side is closer to the truth)
SHOW_CHOICES = (
    ("all disagreements", "all"),
    ("A right, B wrong", "a_right"),
    ("B right, A wrong", "b_right"),
    ("both wrong", "both_wrong"),
)
REGRESSION_CHOICES = (
    ("largest differences", "all"),
    ("A closer to the truth", "a_right"),
    ("B closer to the truth", "b_right"),
)
WIDTH_PX = 880  # fits a 900 px output area


@dataclass
class Target:
    """One side of the comparison: which client, and which version/label of its model."""

    client: object
    version: int | None = None
    label: str | None = None
    text: str = "latest"

    def predict(self, x, signature_name=None):
        return self.client.predict(
            instances=x, **predict_kwargs(self.version, self.label, signature_name)
        )


def _model_root_url(client) -> str | None:
    """``http://host:port`` of a client's server, when the client says where it points."""
    for attr in ("base_url", "server_url", "url"):
        value = getattr(client, attr, None)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value.split("/v1/", 1)[0].rstrip("/")
    return None


def resolve_target(spec, base_client, *, timeout: float = 30.0) -> Target:
    """Read ``a``/``b``: a version int, ``"N"``, ``"latest"``, a label, ``"MODEL@N"``,
    ``"MODEL:LABEL"`` (another model on the same server), a URL, or another client."""
    if spec is None:
        return Target(base_client)
    if hasattr(spec, "predict") and not isinstance(spec, str):
        return Target(spec, text=client_name(spec))
    if isinstance(spec, (bool, float)):
        raise ValueError(f"cannot compare against {spec!r}: give a version, label or client")
    if isinstance(spec, (int, np.integer)):
        if spec < 1:
            raise ValueError(f"versions are positive integers, got {spec}")
        return Target(base_client, version=int(spec), text=f"v{int(spec)}")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"cannot compare against {spec!r}: give a version, label or client")
    spec = spec.strip()
    if spec == "latest":
        return Target(base_client)
    if spec.isdigit():
        return resolve_target(int(spec), base_client, timeout=timeout)
    if spec.startswith(("http://", "https://")):
        return Target(resolve_client(spec, timeout=timeout), text=spec)
    match = _OTHER_MODEL.match(spec)
    if match:
        model = match["model"]
        root = _model_root_url(base_client)
        other = resolve_client(root, model, timeout=timeout) if root else resolve_client(
            model, timeout=timeout)
        version = match["version"]
        if match["label"]:
            return Target(other, label=match["label"], text=spec)
        if version and version != "latest":
            return Target(other, version=int(version), text=spec)
        return Target(other, text=spec)
    return Target(base_client, label=spec, text=f"label {spec}")


@dataclass
class CompareResult:
    """The numbers behind the widget (fractions in 0..1, latencies in seconds).

    ``disagreements``: where A and B differ, the largest difference first (classifiers: another
    class, ranked by how far the probabilities differ; multi-label: another set of labels;
    regressions: every instance, by ``|A - B|``). ``a_right_b_wrong``/``b_right_a_wrong``:
    those where only one side is right (regressions: where that side is closer to the truth);
    ``both_wrong``: disagreements where neither is (empty for regressions). ``accuracy_*``:
    classifiers' accuracy, multi-label exact match, None for regressions. ``metrics_a``/
    ``metrics_b``: ``tfserve_magic.scoring`` results; ``error_a``/``error_b`` the number ranked
    (lower is better, see ``error_name``).
    """

    n: int
    accuracy_a: float | None
    accuracy_b: float | None
    agreement: float | None
    disagreements: np.ndarray
    a_right_b_wrong: np.ndarray
    b_right_a_wrong: np.ndarray
    both_wrong: np.ndarray
    latency_a_s: float | None
    latency_b_s: float | None
    task: str = "multiclass"
    metrics_a: object = None
    metrics_b: object = None
    difference: np.ndarray | None = None  # per instance: how far A and B are apart

    @property
    def error_name(self) -> str:
        return {"regression": "MAE", "multilabel": "1 - macro F1"}.get(self.task, "error rate")

    @property
    def error_a(self) -> float:
        return _error(self.metrics_a, self.accuracy_a)

    @property
    def error_b(self) -> float:
        return _error(self.metrics_b, self.accuracy_b)

    @property
    def better(self) -> str | None:
        """"A" or "B", whichever errs less; None when they err alike."""
        a, b = self.error_a, self.error_b
        if np.isclose(a, b, rtol=1e-9, atol=1e-12):
            return None
        return "A" if a < b else "B"


def _error(result, accuracy) -> float:
    return float(result.error) if result is not None else 1.0 - float(accuracy)


def compare_predictions(y, pred_a, pred_b, latency_a_s=None, latency_b_s=None) -> CompareResult:
    """Class ids of A and B against labels ``y``: accuracy of each, agreement and the
    disagreement index sets (plain numpy)."""
    y, pred_a, pred_b = (np.asarray(v, np.int64) for v in (y, pred_a, pred_b))
    if not (len(y) == len(pred_a) == len(pred_b)):
        raise ValueError(f"lengths differ: {len(y)} labels, {len(pred_a)} and {len(pred_b)} "
                         "predictions")
    return _split(pred_a == y, pred_b == y, (pred_a != pred_b).astype(np.float64),
                  latency_a_s, latency_b_s)


def _split(a_ok, b_ok, difference, latency_a_s, latency_b_s, **extra) -> CompareResult:
    """The index sets from per-instance correctness and difference (0: they agree)."""
    differ = difference > 0
    order = np.argsort(-difference, kind="stable")
    ranked = order[differ[order]]

    def where(mask):
        return ranked[mask[ranked]]

    return CompareResult(
        n=len(a_ok), accuracy_a=float(a_ok.mean()), accuracy_b=float(b_ok.mean()),
        agreement=float(1.0 - differ.mean()), disagreements=ranked,
        a_right_b_wrong=where(a_ok & ~b_ok), b_right_a_wrong=where(b_ok & ~a_ok),
        both_wrong=where(~a_ok & ~b_ok), latency_a_s=latency_a_s, latency_b_s=latency_b_s,
        difference=difference, **extra)


def compare_readings(reading_a: Reading, reading_b: Reading, labels, *, threshold: float = 0.5,
                     latency_a_s=None, latency_b_s=None) -> CompareResult:
    """A and B (read by ``tfserve_magic.outputs``) against ``labels``, for their task."""
    if reading_a.task != reading_b.task:
        raise ValueError(f"A reads as {reading_a.task} ({reading_a.reason}) but B as "
                         f"{reading_b.task} ({reading_b.reason}): pass task=")
    task = reading_a.task
    metrics_a = score(reading_a, labels, threshold=threshold)
    metrics_b = score(reading_b, labels, threshold=threshold)
    extra = {"task": task, "metrics_a": metrics_a, "metrics_b": metrics_b}
    if task == "regression":
        a, b, true = metrics_a.predicted, metrics_b.predicted, metrics_a.true
        difference = np.abs(a - b).mean(axis=1)
        err_a, err_b = np.abs(a - true).mean(axis=1), np.abs(b - true).mean(axis=1)
        order = np.argsort(-difference, kind="stable")
        return CompareResult(
            n=len(a), accuracy_a=None, accuracy_b=None, agreement=None, disagreements=order,
            a_right_b_wrong=order[(err_a < err_b)[order]],
            b_right_a_wrong=order[(err_b < err_a)[order]], both_wrong=np.zeros(0, np.int64),
            latency_a_s=latency_a_s, latency_b_s=latency_b_s, difference=difference, **extra)
    if task == "multilabel":
        truth = np.asarray(labels).astype(bool)
        pa, pb = reading_a.probabilities, reading_b.probabilities
        active_a, active_b = pa >= threshold, pb >= threshold
        # labels that differ first, then how far the probabilities are apart
        difference = (active_a != active_b).sum(axis=1) + np.abs(pa - pb).mean(axis=1) * (
            (active_a != active_b).any(axis=1))
        return _split((active_a == truth).all(axis=1), (active_b == truth).all(axis=1),
                      difference, latency_a_s, latency_b_s, **extra)
    truth = class_ids_of(reading_a, labels)
    ids_a, ids_b = _class_ids(reading_a, threshold), _class_ids(reading_b, threshold)
    pa, pb = reading_a.probabilities, reading_b.probabilities
    differ = ids_a != ids_b
    if pa is not None and pb is not None and pa.shape == pb.shape:
        gap = 0.5 * np.abs(pa - pb).sum(axis=1)  # total variation: 0..1
        difference = np.where(differ, 1.0 + gap, 0.0)
    else:
        difference = differ.astype(np.float64)
    return _split(ids_a == truth, ids_b == truth, difference, latency_a_s, latency_b_s, **extra)


def _class_ids(reading: Reading, threshold: float) -> np.ndarray:
    """Predicted classes; a binary model's at ``threshold`` on the positive probability."""
    if reading.task == "binary" and reading.probabilities is not None:
        return (reading.probabilities[:, 1] >= threshold).astype(np.int64)
    return reading.class_ids


class VersionCompare(StaticSummary):
    """Send ``x`` to A and to B, compare both with ``y``.

    ``x``: an array, a list of sentences, a dict of arrays, a DataFrame or a list of dicts
    (shaped for the signature by ``tfserve_magic.inputs``). ``a``/``b``: see
    ``resolve_target`` (``a`` defaults to the latest version). ``task``/``class_names``: as
    ``read_outputs`` takes them; ``threshold`` for binary and multi-label models. Plain
    methods: ``run()`` (returns a ``CompareResult``), ``select_disagreements(kind)``,
    ``shown_indices()``, ``summary_html()``.
    """

    static_title = "Version against version"

    def __init__(self, client, x, y, *, b, a="latest", model=None, signature_name=None,
                 class_names=None, task=None, threshold: float = 0.5, page_size: int = 16,
                 columns: int = 8, timeout: float = 30.0, latency: LatencyView | None = None,
                 run: bool = True, restart=None):
        import ipywidgets as w

        self.x = x if _inputs.is_named(x) or isinstance(x, list) else np.asarray(x)
        if isinstance(self.x, np.ndarray) and self.x.ndim == 0:
            raise ValueError("x must hold at least one input")
        self.n = _inputs.count(self.x)
        if self.n == 0:
            raise ValueError("x must hold at least one input")
        self.y = np.asarray(y)
        if len(self.y) != self.n:
            raise ValueError(f"{len(self.y)} labels for {self.n} inputs: pass one label per "
                             "input")
        self.client = resolve_client(client, model, timeout=timeout)
        self.a = resolve_target(a, self.client, timeout=timeout)
        self.b = resolve_target(b, self.client, timeout=timeout)
        self.signature_name = signature_name
        self.class_names = list(class_names) if class_names is not None else None
        self.task = task
        self.threshold = float(threshold)
        self.raise_errors = False
        self.restart = restart
        self.result: CompareResult | None = None
        self.reading_a: Reading | None = None
        self.reading_b: Reading | None = None
        self.latencies: dict[str, list[float]] = {"a": [], "b": []}
        self.error_context: str | None = None  # which side a failing request was for
        self._sent = None  # x as the signature takes it (prepared on the first run)

        self.status = StatusLine()
        self.latency = latency if latency is not None else LatencyView(title="latency A vs B")
        self.header = w.HTML(value=f"<b>Version against version</b> · {self._title()}")
        self.run_button = w.Button(description="Run again", icon="refresh",
                                   layout=w.Layout(width="auto", margin="0 0 0 12px"))
        self.run_button.on_click(lambda _: self._on_run())
        self.show_choice = w.Dropdown(options=SHOW_CHOICES, value="all", description="show",
                                      layout=w.Layout(width="230px"),
                                      style={"description_width": "40px"})
        self.show_choice.observe(self._on_show, "value")
        self.table = w.HTML(value="")
        images = image_view(self.x) if isinstance(self.x, np.ndarray) else None
        shown = self.x if images is not None else [
            _inputs.describe_instance(self.x, i, width=90) for i in range(self.n)]
        self.gallery = Gallery(shown, images, page_size, self._caption, columns=columns)
        self.widget = w.VBox([
            self.header, self.status.widget, self.table,
            w.HBox([self.show_choice, self.run_button], layout=w.Layout(align_items="center")),
            self.gallery.widget, self.latency.widget,
        ], layout=w.Layout(max_width=f"{WIDTH_PX}px"))
        self.widget.add_class("tfserve-compare")
        self.table.add_class("tfserve-compare-table")
        self.show_choice.add_class("tfserve-compare-show")
        if run:
            self._on_run()

    def _title(self) -> str:
        return (f"{html.escape(client_name(self.client))}: A = {html.escape(self.a.text)}, "
                f"B = {html.escape(self.b.text)} · {self.n} inputs")

    # ------------------------------------------------------------------ work
    @property
    def pred_a(self) -> np.ndarray | None:
        """A's predicted class ids (classifiers), label sets (multi-label) or values."""
        return self._predicted(self.reading_a)

    @property
    def pred_b(self) -> np.ndarray | None:
        return self._predicted(self.reading_b)

    def _predicted(self, reading):
        if reading is None:
            return None
        if reading.task == "regression":
            return reading.values
        if reading.task == "multilabel":
            return reading.probabilities >= self.threshold
        return _class_ids(reading, self.threshold)

    def run(self) -> CompareResult:
        """Predict with A and B, compare, and refresh the views (raises on failure)."""
        self.error_context = None
        self.status.info(f"sending {self.n} inputs to A and B ...")
        if self._sent is None:
            self._sent = self._prepare()
        reading_a, latency_a = self._predict(self.a, "A")
        reading_b, latency_b = self._predict(self.b, "B")
        self.reading_a, self.reading_b = reading_a, reading_b
        self.result = compare_readings(
            reading_a, reading_b, self.y, threshold=self.threshold,
            latency_a_s=self._mean("a", latency_a), latency_b_s=self._mean("b", latency_b))
        if self.result.task == "regression" and self.show_choice.options != REGRESSION_CHOICES:
            self.show_choice.options = REGRESSION_CHOICES
            self.show_choice.value = "all"
        self.table.value = self._table_html()
        self._refresh_gallery()
        self.status.ok(self._verdict())
        return self.result

    def _prepare(self):
        """x as the signature takes it, from A's metadata (as given when none is readable)."""
        metadata = None
        try:
            metadata = self.a.client.metadata(
                **predict_kwargs(self.a.version, self.a.label))
        except Exception:  # no metadata (a plain stub, an old server): send x as given
            metadata = None
        return _inputs.prepare_inputs(self.x, metadata, self.signature_name)

    def _predict(self, target: Target, side: str):
        self.error_context = f"{side} ({target.text})"
        prediction = target.predict(self._sent, self.signature_name)
        latency = getattr(prediction, "latency_s", None)
        self.latency.record(latency, series=f"{side}: {target.text}")
        reading = read_outputs(prediction, self.y, task=self.task, class_names=self.class_names)
        if reading.task is None:
            raise ValueError(f"nothing to compare: {reading.reason}")
        count = len(reading.values if reading.task == "regression" else (
            reading.class_ids if reading.class_ids is not None else reading.scores))
        if count != self.n:
            raise ValueError(f"{count} predictions for {self.n} inputs")
        self.error_context = None
        return reading, latency

    def _mean(self, side: str, latency) -> float | None:
        if latency is not None:
            self.latencies[side].append(float(latency))
        values = self.latencies[side]
        return float(np.mean(values)) if values else None

    def select_disagreements(self, kind: str = "all") -> None:
        """Choose which disagreements the gallery shows: all, a_right, b_right, both_wrong
        (regressions: all, a_right, b_right)."""
        values = [v for _, v in self.show_choice.options]
        if kind not in values:
            raise ValueError(f"show must be one of {values}")
        self.show_choice.value = kind

    def shown_indices(self) -> np.ndarray:
        if self.result is None:
            raise RuntimeError("no comparison yet: run() failed or was not called")
        return {
            "all": self.result.disagreements,
            "a_right": self.result.a_right_b_wrong,
            "b_right": self.result.b_right_a_wrong,
            "both_wrong": self.result.both_wrong,
        }[self.show_choice.value]

    # ------------------------------------------------------------------ view
    def _refresh_gallery(self) -> None:
        self.gallery.set_items(self.shown_indices())

    def _names(self, value) -> str:
        """A prediction or label as text: class name, label names, or numbers."""
        task = self.result.task if self.result is not None else None
        names = (self.reading_a.class_names if self.reading_a is not None else None) or \
            self.class_names
        if task == "regression":
            return ", ".join(f"{v:.4g}" for v in np.asarray(value, np.float64).reshape(-1))
        if task == "multilabel":
            active = np.flatnonzero(np.asarray(value).astype(bool))
            return ",".join(class_name(names, int(k)) for k in active) or "∅"
        if isinstance(value, (str, bytes, np.str_, np.bytes_)):
            return value.decode() if isinstance(value, bytes) else str(value)
        return class_name(names, int(value))

    def _sides(self, i: int):
        """(A text, B text, true text, A right, B right) of instance i."""
        r = self.result
        a, b = self.pred_a[i], self.pred_b[i]
        true = self.y[i]
        if r.task == "regression":
            truth = r.metrics_a.true[i]
            err_a, err_b = np.abs(a - truth).mean(), np.abs(b - truth).mean()
            return (self._names(a), self._names(b), self._names(truth), err_a <= err_b,
                    err_b <= err_a)
        if r.task == "multilabel":
            truth = np.asarray(true).astype(bool)
            return (self._names(a), self._names(b), self._names(truth),
                    bool((a == truth).all()), bool((b == truth).all()))
        truth = class_ids_of(self.reading_a, self.y[i: i + 1])[0]
        return self._names(a), self._names(b), self._names(true), a == truth, b == truth

    def _caption(self, i: int) -> tuple:
        """One line, each side coloured by its own correctness: A green only where A is right
        (regressions: green for the side closer to the truth)."""
        a, b, t, a_ok, b_ok = self._sides(i)

        def side(name, value, ok):
            color = "#1a7f37" if ok else "#c62828"
            return f'<span style="color:{color}">{name} {html.escape(value)}</span>'

        rich = (f'{side("A", a, a_ok)} · {side("B", b, b_ok)}'
                f' <span style="color:#555">/ true {html.escape(t)}</span>')
        text = f"A {a} · B {b} / true {t}"
        return text, not b_ok, f"input #{i}", rich

    def _rows(self) -> list[tuple[str, str, str]]:
        """(what, A, B) rows of the numbers table (escaped HTML)."""
        r = self.result

        def ms(value, side):
            value = "–" if value is None else f"{value * 1e3:.1f} ms"
            return f"{value} (n={len(self.latencies[side])})"

        rows = [("", f"A: {html.escape(self.a.text)}", f"B: {html.escape(self.b.text)}")]
        ma, mb = r.metrics_a, r.metrics_b
        if r.task == "regression":
            rows += [("MAE", f"{ma.mae:.4g}", f"{mb.mae:.4g}"),
                     ("RMSE", f"{ma.rmse:.4g}", f"{mb.rmse:.4g}"),
                     ("R²", f"{ma.r2:.4g}", f"{mb.r2:.4g}"),
                     ("closer to the truth", str(len(r.a_right_b_wrong)),
                      str(len(r.b_right_a_wrong)))]
        elif r.task == "multilabel":
            rows += [("exact match", f"{r.accuracy_a:.2%}", f"{r.accuracy_b:.2%}"),
                     ("macro F1", f"{ma.macro_f1:.3f}", f"{mb.macro_f1:.3f}")]
            rows += [(f"F1 {html.escape(name)}", f"{fa:.3f}", f"{fb:.3f}")
                     for name, fa, fb in zip(ma.label_names, ma.f1, mb.f1)]
            rows.append(("right where they disagree", str(len(r.a_right_b_wrong)),
                         str(len(r.b_right_a_wrong))))
        else:
            rows += [("accuracy", f"{r.accuracy_a:.2%}", f"{r.accuracy_b:.2%}")]
            if r.task == "binary" and ma is not None:
                rows.append((f"precision / recall @ {self.threshold:g}",
                             f"{ma.precision_at:.3f} / {ma.recall_at:.3f}",
                             f"{mb.precision_at:.3f} / {mb.recall_at:.3f}"))
            rows.append(("right where they disagree", str(len(r.a_right_b_wrong)),
                         str(len(r.b_right_a_wrong))))
        rows.append(("mean latency per request", ms(r.latency_a_s, "a"), ms(r.latency_b_s, "b")))
        return rows

    def _verdict(self) -> str:
        r = self.result
        if r.task == "regression":
            head = (f"A MAE {r.error_a:.4g} vs B MAE {r.error_b:.4g}; the largest difference "
                    f"{r.difference.max():.4g} (#{int(r.disagreements[0])})")
        elif r.task == "multilabel":
            head = (f"A macro F1 {1 - r.error_a:.3f} vs B {1 - r.error_b:.3f}; "
                    f"{len(r.disagreements)} disagreements")
        else:
            head = (f"A {r.accuracy_a:.2%} vs B {r.accuracy_b:.2%}; "
                    f"{len(r.disagreements)} disagreements")
        better = {"A": "A errs less", "B": "B errs less", None: "they err alike"}[r.better]
        return f"{head} · {better}"

    def _table_html(self) -> str:
        r = self.result
        cell = "padding:2px 12px 2px 0;text-align:left"
        body = "".join(
            f'<tr><td style="{cell};color:#555">{a}</td><td style="{cell}">{b}</td>'
            f'<td style="{cell}">{c}</td></tr>' for a, b, c in self._rows())
        better = {"A": "A is better", "B": "B is better", None: "they err alike"}[r.better]
        if r.task == "regression":
            line = (f"{r.error_name}: A {r.error_a:.4g}, B {r.error_b:.4g} · <b>{better}</b> · "
                    f"largest |A − B| {r.difference.max():.4g}")
        else:
            delta = (r.accuracy_b - r.accuracy_a) * 100
            kind = "exact match" if r.task == "multilabel" else "accuracy"
            line = (f"agreement {r.agreement:.2%}: they disagree on {len(r.disagreements)} of "
                    f"{r.n} ({len(r.both_wrong)} with both wrong) · <b>{better}</b> "
                    f"({delta:+.2f} points of {kind})")
        return (f'<table style="font-size:12px;border-collapse:collapse">{body}</table>'
                f"<div style='font-size:12px;margin:4px 0'>{line}</div>")

    def summary_html(self, rows: int = 10) -> str:
        """What the widget shows, as static HTML (numbers, verdict, the first ``rows``
        disagreements with their inputs), for a saved notebook's output."""
        title = f"<div><b>Version against version</b> · {self._title()}</div>"
        if self.result is None:
            return (f"<div class='tfserve-compare-summary' style='max-width:{WIDTH_PX}px'>"
                    f"{title}<div>{html.escape(self.status.text or 'not run')}</div></div>")
        cell = "padding:2px 8px 2px 0;text-align:left;vertical-align:middle"
        items = []
        for i in self.result.disagreements[: max(0, int(rows))]:
            i = int(i)
            a, b, t, a_ok, b_ok = self._sides(i)
            items.append(
                f"<tr><td style='{cell}'>{i}</td><td style='{cell}'>{self._input_html(i)}</td>"
                f"<td style='{cell};color:{_ok(a_ok)}'>{html.escape(a)}</td>"
                f"<td style='{cell};color:{_ok(b_ok)}'>{html.escape(b)}</td>"
                f"<td style='{cell}'>{html.escape(t)}</td></tr>")
        which = "largest differences" if self.result.task == "regression" else "disagreements"
        listed = "" if not items else (
            f"<div style='margin-top:6px'><b>{which}</b> (first {len(items)} of "
            f"{len(self.result.disagreements)})</div><table style='font-size:12px'><tr>"
            + "".join(f"<th style='{cell}'>{h}</th>" for h in ("#", "input", "A", "B", "true"))
            + "</tr>" + "".join(items) + "</table>")
        return (f"<div class='tfserve-compare-summary' style='max-width:{WIDTH_PX}px;"
                f"font-size:12px'>{title}{self._table_html()}{listed}</div>")

    def _input_html(self, i: int) -> str:
        images = self.gallery.images
        if images is not None:
            data = base64.b64encode(png_bytes(images[i], scale=2)).decode("ascii")
            return f"<img alt='input {i}' src='data:image/png;base64,{data}'>"
        return html.escape(_inputs.describe_instance(self.x, i, width=90))

    # ------------------------------------------------------------------ handlers
    @guarded
    def _on_run(self) -> None:
        self.run()

    @guarded
    def _on_show(self, change) -> None:
        if self.result is not None:
            self._refresh_gallery()




def _ok(right: bool) -> str:
    return "#1a7f37" if right else "#c62828"
