"""ThresholdPanel: a binary classifier's threshold, with precision, recall, F1 and the
precision/recall trade-off (a matplotlib PNG with the current threshold marked)."""

from __future__ import annotations

import html
from dataclasses import asdict

import numpy as np

from tfserve_magic import scoring
from tfserve_magic.widgets.plots import PLOT_PX, data_uri, precision_recall


class ThresholdPanel:
    """``truth``: bool per example (positive class); ``probability``: the model's probability of
    the positive class. ``on_change(predicted)`` runs after the threshold moves."""

    def __init__(self, truth, probability, *, threshold: float = 0.5, on_change=None):
        import ipywidgets as w

        self.truth = np.asarray(truth, dtype=bool).reshape(-1)
        self.probability = np.asarray(probability, dtype=np.float64).reshape(-1)
        if self.truth.shape != self.probability.shape:
            raise ValueError(f"{len(self.truth)} labels for {len(self.probability)} predictions")
        self.on_change = on_change
        curve = scoring.precision_recall_curve(self.truth, self.probability)
        self.thresholds, self.precisions, self.recalls = (curve.thresholds, curve.precision,
                                                          curve.recall)
        self.slider = w.FloatSlider(value=float(threshold), min=0.0, max=1.0, step=0.01,
                                    description="threshold", continuous_update=False,
                                    readout_format=".2f", layout=w.Layout(width="330px"))
        self.numbers = w.HTML(value="")
        self.curve = w.Image(format="png", layout=w.Layout(width=f"{PLOT_PX[0] * 3 // 4}px"))
        self.slider.observe(lambda _: self._moved(), "value")
        left = w.VBox([self.slider, self.numbers], layout=w.Layout(flex="1 1 330px"))
        self.widget = w.HBox([left, self.curve],
                             layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.widget.add_class("tfserve-threshold")
        self.render()

    @property
    def threshold(self) -> float:
        return float(self.slider.value)

    def set_threshold(self, value: float) -> None:
        """What moving the slider does (the explorer's matrix and gallery follow)."""
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"the threshold must lie in 0..1, not {value}")
        self.slider.value = float(value)

    def predicted(self) -> np.ndarray:
        """Positive where the probability reaches the threshold."""
        return self.probability >= self.threshold

    def metrics(self) -> dict[str, float]:
        """Precision, recall, F1 (and tp/fp/fn) at the current threshold."""
        return asdict(scoring.precision_recall_f1(self.truth, self.predicted()))

    def headline(self) -> str:
        m = self.metrics()
        return (f"threshold {self.threshold:.2f}: precision {m['precision']:.1%}, "
                f"recall {m['recall']:.1%}, F1 {m['f1']:.3f}")

    def _moved(self) -> None:
        self.render()
        if self.on_change is not None:
            self.on_change(self.predicted())

    def render(self) -> None:
        m = self.metrics()
        self.numbers.value = (
            f"<div style='font-size:13px;line-height:1.6'><b>{html.escape(self.headline())}"
            f"</b><br><span style='color:#555'>{m['tp']} true positives, {m['fp']} false "
            f"alarms, {m['fn']} missed of {m['support']} positives; move the threshold to "
            "trade precision for recall</span></div>")
        self.curve.value = self._png()

    def _png(self) -> bytes:
        m = self.metrics()
        return precision_recall(self.recalls, self.precisions, at=(m["recall"], m["precision"]),
                                threshold=self.threshold)

    def summary_html(self) -> str:
        return (f"<div><b>{html.escape(self.headline())}</b></div>"
                f"<img src='{data_uri(self._png())}' width='{PLOT_PX[0] * 3 // 4}' "
                "alt='precision/recall trade-off'>")
