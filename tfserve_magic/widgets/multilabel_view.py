"""MultilabelView: a multi-label model (K independent sigmoids) beside multi-hot truth.

Per-label precision, recall and F1 at one threshold (a slider), and the examples of one label
in a gallery: all that carry it (true or predicted), the ones missed, or the false alarms.
"""

from __future__ import annotations

import html
from dataclasses import asdict

import numpy as np

from tfserve_magic import scoring
from tfserve_magic.widgets._gallery import Gallery

WHICH = (("true or predicted", "any"), ("missed (true, not predicted)", "missed"),
         ("false alarms (predicted, not true)", "false"), ("right", "right"))


class MultilabelView:
    """``labels``: multi-hot ``[N, K]``; ``reading``: the multilabel ``Reading``;
    ``label_names``: one name per column (default: 0..K-1)."""

    def __init__(self, examples, labels, reading, *, label_names=None, threshold: float = 0.5,
                 page_size: int = 12):
        import ipywidgets as w

        self.probabilities = np.asarray(reading.probabilities, dtype=np.float64)
        truth = np.asarray(labels)
        if truth.shape != self.probabilities.shape or not np.isin(truth, (0, 1)).all():
            raise ValueError(f"multi-label labels must be 0/1 shaped "
                             f"{list(self.probabilities.shape)} (one column per label), got "
                             f"{truth.dtype}{list(truth.shape)}")
        self.truth = truth.astype(bool)
        k = self.probabilities.shape[1]
        names = list(label_names) if label_names is not None else [str(j) for j in range(k)]
        if len(names) != k:
            raise ValueError(f"{len(names)} label names for {k} labels")
        self.names, self.examples = [str(n) for n in names], examples

        self.slider = w.FloatSlider(value=float(threshold), min=0.0, max=1.0, step=0.01,
                                    description="threshold", continuous_update=False,
                                    readout_format=".2f", layout=w.Layout(width="330px"))
        self.table = w.HTML(value="")
        self.label_pick = w.Dropdown(options=[(n, j) for j, n in enumerate(self.names)],
                                     value=0, description="label",
                                     layout=w.Layout(width="220px"),
                                     style={"description_width": "40px"})
        self.which = w.Dropdown(options=list(WHICH), value="any", description="show",
                                layout=w.Layout(width="300px"),
                                style={"description_width": "40px"})
        self.gallery = Gallery(examples.array if examples.columns is None else examples.columns,
                               examples.images, page_size, self._caption, columns=6,
                               describe=examples.cell_html)
        for control in (self.slider, self.label_pick, self.which):
            control.observe(lambda _: self.render(), "value")
        self.widget = w.VBox([self.slider, self.table,
                              w.HBox([self.label_pick, self.which]), self.gallery.widget])
        self.widget.add_class("tfserve-multilabel")
        self.table.add_class("tfserve-label-table")
        self.render()

    @property
    def threshold(self) -> float:
        return float(self.slider.value)

    def active(self) -> np.ndarray:
        """``[N, K]`` predicted labels at the threshold."""
        return self.probabilities >= self.threshold

    def per_label(self) -> dict[str, dict[str, float]]:
        """label name -> precision, recall, F1, support (and tp/fp/fn) at the threshold."""
        active = self.active()
        return {name: asdict(scoring.precision_recall_f1(self.truth[:, k], active[:, k]))
                for k, name in enumerate(self.names)}

    def exact_match(self) -> float:
        """Share of examples whose whole label set is right."""
        return float(np.mean((self.active() == self.truth).all(axis=1)))

    def headline(self) -> str:
        return (f"threshold {self.threshold:.2f}: all labels right on {self.exact_match():.1%}; "
                f"{len(self.names)} labels")

    def visible_indices(self) -> np.ndarray:
        """The examples of the chosen label, filtered by ``which``."""
        j, which = self.label_pick.value, self.which.value
        truth, active = self.truth[:, j], self.active()[:, j]
        keep = {"any": truth | active, "missed": truth & ~active,
                "false": ~truth & active, "right": truth & active}[which]
        return np.flatnonzero(keep)

    def _names(self, row) -> str:
        return ",".join(n for n, on in zip(self.names, row) if on) or "–"

    def _caption(self, i: int) -> tuple:
        pred, true = self.active()[i], self.truth[i]
        j = self.label_pick.value
        return (f"pred {self._names(pred)} / true {self._names(true)}", bool(pred[j] != true[j]),
                f"input #{i} · {self.names[j]} {self.probabilities[i, j]:.0%}")

    def _table_html(self) -> str:
        rows = []
        for name, m in self.per_label().items():
            rows.append(f"<tr><td><b>{html.escape(name)}</b></td><td>{m['precision']:.1%}</td>"
                        f"<td>{m['recall']:.1%}</td><td>{m['f1']:.3f}</td>"
                        f"<td>{m['support']}</td><td>{m['tp'] + m['fp']}</td></tr>")
        return (f"<div><b>{html.escape(self.headline())}</b></div>"
                "<table style='font-size:12px;text-align:right' cellpadding='4'><tr><th>label</th>"
                "<th>precision</th><th>recall</th><th>F1</th><th>true</th><th>predicted</th>"
                f"</tr>{''.join(rows)}</table>")

    def render(self) -> None:
        self.table.value = self._table_html()
        self.gallery.set_items(self.visible_indices())

    def summary_html(self) -> str:
        return self._table_html()
