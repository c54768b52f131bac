"""VersionCompare: the same inputs through two versions (or models, or servers), side by side.

The check before moving a label from ``stable`` to ``canary``: accuracy of each against the
labels, where they disagree (a gallery), and each one's latency.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import numpy as np

from tfserve_magic.outputs import class_labels, read_outputs, require_classifier
from tfserve_magic.widgets._common import (
    StatusLine,
    class_name,
    client_name,
    guarded,
    image_view,
    predict_kwargs,
    resolve_client,
)
from tfserve_magic.widgets._gallery import Gallery
from tfserve_magic.widgets.latency import LatencyView

# "MODEL@N", "MODEL@latest" or "MODEL:LABEL": another model on the same server
_OTHER_MODEL = re.compile(
    r"^(?P<model>[A-Za-z0-9_.\-]+)(?:@(?P<version>\d+|latest)|:(?P<label>[^:/]+))$"
)

# which disagreements the gallery shows
SHOW_CHOICES = (
    ("all disagreements", "all"),
    ("A right, B wrong", "a_right"),
    ("B right, A wrong", "b_right"),
    ("both wrong", "both_wrong"),
)


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
    """The numbers behind the widget (fractions in 0..1, latencies in seconds)."""

    n: int
    accuracy_a: float
    accuracy_b: float
    agreement: float
    disagreements: np.ndarray  # indices where A and B predict different classes
    a_right_b_wrong: np.ndarray
    b_right_a_wrong: np.ndarray
    both_wrong: np.ndarray  # disagreements where neither is right
    latency_a_s: float | None
    latency_b_s: float | None


def compare_predictions(y, pred_a, pred_b, latency_a_s=None, latency_b_s=None) -> CompareResult:
    """Accuracy of each, agreement and the disagreement index sets (plain numpy)."""
    y, pred_a, pred_b = (np.asarray(v, np.int64) for v in (y, pred_a, pred_b))
    if not (len(y) == len(pred_a) == len(pred_b)):
        raise ValueError(f"lengths differ: {len(y)} labels, {len(pred_a)} and {len(pred_b)} "
                         "predictions")
    differ = pred_a != pred_b
    a_ok, b_ok = pred_a == y, pred_b == y
    return CompareResult(
        n=len(y),
        accuracy_a=float(a_ok.mean()),
        accuracy_b=float(b_ok.mean()),
        agreement=float(1.0 - differ.mean()),
        disagreements=np.flatnonzero(differ),
        a_right_b_wrong=np.flatnonzero(differ & a_ok & ~b_ok),
        b_right_a_wrong=np.flatnonzero(differ & b_ok & ~a_ok),
        both_wrong=np.flatnonzero(differ & ~a_ok & ~b_ok),
        latency_a_s=latency_a_s,
        latency_b_s=latency_b_s,
    )


class VersionCompare:
    """Send ``x`` to A and to B, compare both with ``y``.

    ``a``/``b``: see ``resolve_target`` (``a`` defaults to the latest version). Plain methods:
    ``run()`` (returns a ``CompareResult``), ``select_disagreements(kind)``, ``shown_indices()``.
    """

    def __init__(self, client, x, y, *, b, a="latest", model=None, signature_name=None,
                 class_names=None, page_size: int = 16, columns: int = 8,
                 timeout: float = 30.0, latency: LatencyView | None = None, run: bool = True,
                 restart=None):
        import ipywidgets as w

        self.x = np.asarray(x)
        if self.x.ndim == 0 or len(self.x) == 0:
            raise ValueError("x must hold at least one input")
        self.y = class_labels(y, len(self.x))
        self.client = resolve_client(client, model, timeout=timeout)
        self.a = resolve_target(a, self.client, timeout=timeout)
        self.b = resolve_target(b, self.client, timeout=timeout)
        self.signature_name = signature_name
        self.class_names = list(class_names) if class_names is not None else None
        self.raise_errors = False
        self.restart = restart
        self.result: CompareResult | None = None
        self.pred_a: np.ndarray | None = None
        self.pred_b: np.ndarray | None = None
        self.latencies: dict[str, list[float]] = {"a": [], "b": []}
        self.error_context: str | None = None  # which side a failing request was for

        self.status = StatusLine()
        self.latency = latency if latency is not None else LatencyView(title="latency A vs B")
        self.header = w.HTML(
            value=f"<b>Version against version</b> · {html.escape(client_name(self.client))}: "
                  f"A = {html.escape(self.a.text)}, B = {html.escape(self.b.text)} · "
                  f"{len(self.x)} inputs")
        self.run_button = w.Button(description="Run again", icon="refresh",
                                   layout=w.Layout(width="auto", margin="0 0 0 12px"))
        self.run_button.on_click(lambda _: self._on_run())
        self.show_choice = w.Dropdown(options=SHOW_CHOICES, value="all", description="show",
                                      layout=w.Layout(width="230px"),
                                      style={"description_width": "40px"})
        self.show_choice.observe(self._on_show, "value")
        self.table = w.HTML(value="")
        self.gallery = Gallery(self.x, image_view(self.x), page_size, self._caption,
                               columns=columns)
        self.widget = w.VBox([
            self.header, self.status.widget, self.table,
            w.HBox([self.show_choice, self.run_button], layout=w.Layout(align_items="center")),
            self.gallery.widget, self.latency.widget,
        ], layout=w.Layout(max_width="880px"))
        self.widget.add_class("tfserve-compare")
        self.table.add_class("tfserve-compare-table")
        self.show_choice.add_class("tfserve-compare-show")
        if run:
            self._on_run()

    # ------------------------------------------------------------------ work
    def run(self) -> CompareResult:
        """Predict with A and B, compare, and refresh the views (raises on failure)."""
        self.error_context = None
        self.status.info(f"sending {len(self.x)} inputs to A and B ...")
        pred_a, latency_a = self._predict(self.a, "A")
        pred_b, latency_b = self._predict(self.b, "B")
        self.pred_a, self.pred_b = pred_a, pred_b
        self.result = compare_predictions(
            self.y, pred_a, pred_b, self._mean("a", latency_a), self._mean("b", latency_b))
        self.table.value = self._table_html()
        self._refresh_gallery()
        r = self.result
        self.status.ok(f"A {r.accuracy_a:.2%} vs B {r.accuracy_b:.2%}; "
                       f"{len(r.disagreements)} disagreements")
        return r

    def _predict(self, target: Target, side: str):
        self.error_context = f"{side} ({target.text})"
        prediction = target.predict(self.x, self.signature_name)
        latency = getattr(prediction, "latency_s", None)
        self.latency.record(latency, series=f"{side}: {target.text}")
        predicted = require_classifier(read_outputs(prediction, self.y)).class_ids
        if len(predicted) != len(self.x):
            raise ValueError(f"{len(predicted)} predictions for {len(self.x)} inputs")
        self.error_context = None
        return predicted, latency

    def _mean(self, side: str, latency) -> float | None:
        if latency is not None:
            self.latencies[side].append(float(latency))
        values = self.latencies[side]
        return float(np.mean(values)) if values else None

    def select_disagreements(self, kind: str = "all") -> None:
        """Choose which disagreements the gallery shows: all, a_right, b_right, both_wrong."""
        values = [v for _, v in SHOW_CHOICES]
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

    def _caption(self, i: int) -> tuple:
        """One line, each side coloured by its own correctness: A green only where A is right."""
        a, b, t = (class_name(self.class_names, int(v[i]))
                   for v in (self.pred_a, self.pred_b, self.y))
        a_ok, b_ok = self.pred_a[i] == self.y[i], self.pred_b[i] == self.y[i]

        def side(name, value, ok):
            color = "#1a7f37" if ok else "#c62828"
            return f'<span style="color:{color}">{name} {html.escape(value)}</span>'

        rich = (f'{side("A", a, a_ok)} · {side("B", b, b_ok)}'
                f' <span style="color:#555">/ true {html.escape(t)}</span>')
        text = f"A {a} · B {b} / true {t}"
        return text, not b_ok, f"input #{i}", rich

    def _table_html(self) -> str:
        r = self.result

        def ms(value):
            return "–" if value is None else f"{value * 1e3:.1f} ms"

        def count(side):
            return len(self.latencies[side])

        delta = (r.accuracy_b - r.accuracy_a) * 100
        verdict = ("B is better" if delta > 0 else "A is better" if delta < 0 else "same accuracy")
        rows = [
            ("", f"A: {html.escape(self.a.text)}", f"B: {html.escape(self.b.text)}"),
            ("accuracy", f"{r.accuracy_a:.2%}", f"{r.accuracy_b:.2%}"),
            ("right where they disagree", str(len(r.a_right_b_wrong)),
             str(len(r.b_right_a_wrong))),
            ("mean latency per request", f"{ms(r.latency_a_s)} (n={count('a')})",
             f"{ms(r.latency_b_s)} (n={count('b')})"),
        ]
        cell = "padding:2px 12px 2px 0;text-align:left"
        body = "".join(
            f'<tr><td style="{cell};color:#555">{a}</td><td style="{cell}">{b}</td>'
            f'<td style="{cell}">{c}</td></tr>' for a, b, c in rows)
        return (f'<table style="font-size:12px;border-collapse:collapse">{body}</table>'
                f"<div style='font-size:12px;margin:4px 0'>agreement {r.agreement:.2%}: they "
                f"disagree on {len(r.disagreements)} of {r.n} ({len(r.both_wrong)} with both "
                f"wrong) · <b>{verdict}</b> ({delta:+.2f} points)</div>")

    # ------------------------------------------------------------------ handlers
    @guarded
    def _on_run(self) -> None:
        self.run()

    @guarded
    def _on_show(self, change) -> None:
        if self.result is not None:
            self._refresh_gallery()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
