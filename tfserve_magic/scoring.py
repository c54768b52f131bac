"""The numbers that say how right a model is, per task kind (numpy only).

``metrics(prediction, labels)`` reads the outputs with the one rule (``tfserve_magic.outputs``)
and returns the result that fits the task: ``ClassifierMetrics`` (accuracy, per-class precision,
recall, F1, support, confusion matrix), ``BinaryMetrics`` (the same at a threshold, plus the
precision/recall curve), ``RegressionMetrics`` (MAE, RMSE, R² per target and overall, worst
rows) or ``MultilabelMetrics`` (per-label precision, recall, F1, exact match). Each has a
``__repr__`` and ``_repr_html_``, so ``%%predict --labels`` and notebooks show the same numbers.
The pieces they are built from (``precision_recall_f1``, ``precision_recall_curve``,
``regression_metrics``) are public, so the widgets compute their numbers here too.

Conventions: a ratio with a zero denominator (precision with no predicted positive, recall of a
class with no example) is 0.0; R² of a constant target is nan.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from tfserve_magic._text import html_table, text_table
from tfserve_magic.outputs import Reading, class_ids_of, labels_per_instance, read_outputs

__all__ = [
    "metrics", "ClassifierMetrics", "BinaryMetrics", "RegressionMetrics", "MultilabelMetrics",
    "PRCurve", "precision_recall_curve", "headline_error", "Scores", "precision_recall_f1",
    "regression_metrics",
]

WORST_ROWS = 10


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class ClassifierMetrics:
    """One class per instance. Per-class arrays are indexed by class id (``class_names``)."""

    task: str
    n: int
    accuracy: float
    n_correct: int
    class_names: tuple[str, ...]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true instances per class
    confusion: np.ndarray  # [C, C]: rows true class, columns predicted class
    reason: str = ""

    @property
    def error(self) -> float:
        """The share of wrong predictions (what a version comparison ranks by)."""
        return 1.0 - self.accuracy

    def summary(self) -> str:
        return f"accuracy {self.accuracy:.1%} ({self.n_correct}/{self.n})"

    def _table(self):
        return _score_table("class", self.class_names, self)

    def _lines(self) -> list[str]:
        return [self.summary()]

    def __repr__(self) -> str:
        return "\n".join([*self._lines(), text_table(*self._table())])

    def _repr_html_(self) -> str:
        lines = "".join(f"<div>{html.escape(line)}</div>" for line in self._lines())
        return f"<div class='tfserve-metrics'>{lines}{html_table(*self._table())}</div>"


@dataclass(frozen=True, eq=False)
class PRCurve:
    """Precision and recall of the positive class at each distinct score, highest first."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass(frozen=True, eq=False)
class Scores:
    """Precision, recall and F1 of boolean predictions, with the counts they come from:
    numbers for one column, arrays (one entry per column) for ``[N, K]`` predictions."""

    precision: float | np.ndarray
    recall: float | np.ndarray
    f1: float | np.ndarray
    tp: int | np.ndarray
    fp: int | np.ndarray
    fn: int | np.ndarray
    support: int | np.ndarray  # true positives + missed: the truly positive instances


@dataclass(frozen=True, eq=False, repr=False)
class BinaryMetrics(ClassifierMetrics):
    """A binary classifier at ``threshold`` on the positive class's (id 1) probability.

    ``precision_at``/``recall_at``/``f1_at`` are the positive class's; the per-class arrays and
    accuracy are those of the thresholded predictions; ``curve`` is None without scores.
    """

    threshold: float = 0.5
    precision_at: float = 0.0
    recall_at: float = 0.0
    f1_at: float = 0.0
    curve: PRCurve | None = None

    def _lines(self) -> list[str]:
        positive = self.class_names[1]
        return [f"{self.summary()} at threshold {self.threshold:g} | positive {positive}: "
                f"precision {self.precision_at:.3f}, recall {self.recall_at:.3f}, "
                f"F1 {self.f1_at:.3f}"]


@dataclass(frozen=True, eq=False)
class RegressionMetrics:
    """Errors of a regression; ``*_per_target`` arrays have one entry per target.

    ``mae``/``rmse`` over all targets and instances, ``r2`` the mean of the targets' R²;
    ``worst``: the indices of the largest absolute errors (mean over targets), largest first.
    """

    n: int
    mae: float
    rmse: float
    r2: float
    target_names: tuple[str, ...]
    mae_per_target: np.ndarray
    rmse_per_target: np.ndarray
    r2_per_target: np.ndarray
    predicted: np.ndarray  # [N, T]
    true: np.ndarray  # [N, T]
    abs_error: np.ndarray  # [N], mean over targets
    worst: np.ndarray
    inputs: object = field(default=None, repr=False)  # shown beside the worst rows
    reason: str = ""
    task: str = "regression"

    @property
    def error(self) -> float:
        return self.mae

    def summary(self) -> str:
        return f"MAE {self.mae:.4g}, RMSE {self.rmse:.4g}, R² {self.r2:.4g} (n={self.n})"

    def _per_target(self):
        headers = ["target", "MAE", "RMSE", "R²"]
        rows = [[t, f"{a:.4g}", f"{b:.4g}", f"{c:.4g}"] for t, a, b, c in zip(
            self.target_names, self.mae_per_target, self.rmse_per_target, self.r2_per_target)]
        return headers, rows

    def _worst(self):
        from tfserve_magic.inputs import describe_instance

        headers = ["#", "predicted", "true", "|error|"]
        if self.inputs is not None:
            headers.append("input")
        rows = []
        for i in self.worst:
            row = [int(i), _values(self.predicted[i]), _values(self.true[i]),
                   f"{self.abs_error[i]:.4g}"]
            if self.inputs is not None:
                row.append(describe_instance(self.inputs, int(i)))
            rows.append(row)
        return headers, rows

    def __repr__(self) -> str:
        parts = [self.summary()]
        if len(self.target_names) > 1:
            parts.append(text_table(*self._per_target()))
        parts += [f"worst {len(self.worst)} rows:", text_table(*self._worst())]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        parts = [f"<div>{html.escape(self.summary())}</div>"]
        if len(self.target_names) > 1:
            parts.append(html_table(*self._per_target()))
        parts.append(html_table(*self._worst(), caption=f"worst {len(self.worst)} rows"))
        return f"<div class='tfserve-metrics'>{''.join(parts)}</div>"


@dataclass(frozen=True, eq=False)
class MultilabelMetrics:
    """K independent labels at ``threshold``; per-label arrays are indexed by label.

    ``exact_match``: share of instances whose every label is right; ``micro_*`` pool all
    labels' counts; ``macro_f1`` is the mean of the labels' F1.
    """

    n: int
    threshold: float
    label_names: tuple[str, ...]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true instances per label
    exact_match: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    reason: str = ""
    task: str = "multilabel"

    @property
    def error(self) -> float:
        return 1.0 - self.macro_f1

    def summary(self) -> str:
        return (f"exact match {self.exact_match:.1%} | macro F1 {self.macro_f1:.3f}, micro "
                f"precision {self.micro_precision:.3f}, recall {self.micro_recall:.3f}, F1 "
                f"{self.micro_f1:.3f} at threshold {self.threshold:g} (n={self.n})")

    def _table(self):
        return _score_table("label", self.label_names, self)

    def __repr__(self) -> str:
        return "\n".join([self.summary(), text_table(*self._table())])

    def _repr_html_(self) -> str:
        return (f"<div class='tfserve-metrics'><div>{html.escape(self.summary())}</div>"
                f"{html_table(*self._table())}</div>")


def _score_table(what: str, names, scores):
    """Headers and rows of precision, recall, F1 and support per class (or label)."""
    headers = [what, "precision", "recall", "f1", "support"]
    rows = [[name, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", int(s)] for name, p, r, f, s in
            zip(names, scores.precision, scores.recall, scores.f1, scores.support)]
    return headers, rows


Metrics = ClassifierMetrics | RegressionMetrics | MultilabelMetrics


# ---------------------------------------------------------------------------------- entry
def metrics(prediction, labels, task: str | None = None, threshold: float = 0.5, *,
            class_names=None, inputs=None, worst: int = WORST_ROWS) -> Metrics:
    """The numbers of ``prediction`` against ``labels``, for its task kind.

    ``prediction``: a ``Reading``, a client ``Prediction``, a ``PredictionResult``, an array or
    a dict of outputs. ``task``/``class_names``: as ``read_outputs`` takes them. ``threshold``:
    on the positive class's probability (binary) or each label's (multi-label). ``inputs``: the
    inputs, shown beside a regression's ``worst`` rows. ValueError when the labels do not fit
    (count, kind) or the outputs have no task.
    """
    if labels is None:
        raise ValueError("metrics need the true labels")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    reading = _reading(prediction, labels, task, class_names)
    n = _count(reading)
    if reading.task == "regression":
        return _regression(reading, labels_per_instance(labels, n, rows=True), inputs, worst)
    if reading.task == "multilabel":
        return _multilabel(reading, labels, float(threshold))
    truth = class_ids_of(reading, labels_per_instance(labels, n, rows=True))
    if len(truth) != n:
        raise ValueError(f"{len(truth)} labels for {n} predictions: pass one label per instance")
    if reading.task == "binary":
        return _binary(reading, truth, float(threshold))
    return _classifier(reading, truth, reading.class_ids)


def headline_error(result: Metrics) -> float:
    """The one number a version comparison ranks by (lower is better): 1 - accuracy for
    classifiers, MAE for regressions, 1 - macro F1 for multi-label models."""
    return float(result.error)


def _reading(prediction, labels, task, class_names) -> Reading:
    if isinstance(prediction, Reading):
        if task is not None and task != prediction.task:
            raise ValueError(f"the outputs were read as {prediction.task} "
                             f"({prediction.reason}), not {task}")
        reading = prediction
    else:
        reading = getattr(prediction, "reading", None)  # a PredictionResult
        if not isinstance(reading, Reading) or task is not None or class_names is not None:
            source = getattr(prediction, "prediction", prediction)
            reading = read_outputs(source, labels, task=task, class_names=class_names)
    if reading.task is None:
        raise ValueError(f"no metrics for these outputs: {reading.reason}")
    return reading


def _count(reading: Reading) -> int:
    for value in (reading.class_ids, reading.scores, reading.values):
        if value is not None:
            return len(value)
    return 0


# ---------------------------------------------------------------------------------- classifiers
def _ratio(top, bottom) -> np.ndarray:
    top, bottom = np.asarray(top, np.float64), np.asarray(bottom, np.float64)
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def _f1(precision, recall) -> np.ndarray:
    return _ratio(2 * precision * recall, precision + recall)


def _class_names(reading: Reading, count: int) -> tuple[str, ...]:
    names = reading.class_names
    if names is not None and len(names) >= count:
        return tuple(names[:count]) if len(names) > count else tuple(names)
    return tuple(str(k) for k in range(count))


def _classifier(reading, truth, predicted, cls=ClassifierMetrics, **extra) -> ClassifierMetrics:
    if (truth < 0).any():
        raise ValueError("labels hold a class the model's classes do not name")
    count = max(reading.n_classes, 2 if reading.task == "binary" else 1,
                int(truth.max(initial=-1)) + 1, int(predicted.max(initial=-1)) + 1)
    confusion = np.bincount(truth * count + predicted, minlength=count * count).reshape(
        count, count)
    hits = np.diag(confusion)
    precision = _ratio(hits, confusion.sum(axis=0))
    recall = _ratio(hits, confusion.sum(axis=1))
    n_correct = int(hits.sum())
    return cls(reading.task, len(truth), n_correct / len(truth) if len(truth) else 0.0,
               n_correct, _class_names(reading, count), precision, recall,
               _f1(precision, recall), confusion.sum(axis=1), confusion, reading.reason, **extra)


def _binary(reading: Reading, truth: np.ndarray, threshold: float) -> BinaryMetrics:
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("binary labels must be 0/1 (or the two class names)")
    probabilities = reading.probabilities
    if probabilities is None:  # class ids: no scores to move a threshold on
        predicted, curve = reading.class_ids, None
    else:
        positive = probabilities[:, 1].astype(np.float64)
        predicted = (positive >= threshold).astype(np.int64)
        curve = precision_recall_curve(truth, positive)
    at = precision_recall_f1(truth == 1, predicted == 1)
    return _classifier(reading, truth, predicted, BinaryMetrics, threshold=threshold,
                       precision_at=at.precision, recall_at=at.recall, f1_at=at.f1, curve=curve)


def precision_recall_f1(truth, predicted) -> Scores:
    """``Scores`` of boolean ``predicted`` against boolean ``truth`` (0.0 where undefined);
    ``[N, K]`` arrays are scored per column (what a multi-label model's labels need)."""
    truth = np.asarray(truth).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    if truth.shape != predicted.shape:
        raise ValueError(f"labels shaped {list(truth.shape)} for predictions shaped "
                         f"{list(predicted.shape)}")
    tp = (truth & predicted).sum(axis=0)
    fp = (~truth & predicted).sum(axis=0)
    fn = (truth & ~predicted).sum(axis=0)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _f1(precision, recall)
    if truth.ndim == 1:
        return Scores(float(precision), float(recall), float(f1), int(tp), int(fp), int(fn),
                      int(tp + fn))
    return Scores(precision, recall, f1, tp, fp, fn, tp + fn)


def precision_recall_curve(truth, scores) -> PRCurve:
    """Precision and recall when every score >= t counts as positive, for each distinct
    score t from the highest down (the last point has recall 1 when any positive exists)."""
    truth = np.asarray(truth).reshape(-1).astype(bool)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # end of each distinct score
    tp = np.cumsum(hits)[last]
    predicted = last + 1
    return PRCurve(ranked[last], _ratio(tp, predicted), _ratio(tp, max(int(truth.sum()), 0)))


# ---------------------------------------------------------------------------------- multi-label
def _multilabel(reading: Reading, labels, threshold: float) -> MultilabelMetrics:
    truth = np.asarray(labels)
    probabilities = reading.probabilities
    if truth.shape != probabilities.shape:
        raise ValueError(f"multi-label labels must be shaped {probabilities.shape} (0/1 per "
                         f"label), got {truth.shape}")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("multi-label labels must be 0/1 per label")
    truth = truth.astype(bool)
    active = probabilities >= threshold
    s = precision_recall_f1(truth, active)
    micro_p = float(_ratio(s.tp.sum(), active.sum()))
    micro_r = float(_ratio(s.tp.sum(), truth.sum()))
    names = reading.class_names or tuple(str(k) for k in range(truth.shape[1]))
    return MultilabelMetrics(
        len(truth), threshold, tuple(names), s.precision, s.recall, s.f1, s.support,
        float((active == truth).all(axis=1).mean()) if len(truth) else 0.0,
        micro_p, micro_r, float(_f1(micro_p, micro_r)), float(s.f1.mean()), reading.reason)


# ---------------------------------------------------------------------------------- regression
def _regression(reading: Reading, labels, inputs, worst: int) -> RegressionMetrics:
    return regression_metrics(labels, reading.values, inputs=inputs, worst=worst,
                              reason=reading.reason)


def regression_metrics(labels, values, *, inputs=None, worst: int = WORST_ROWS,
                       reason: str = "") -> RegressionMetrics:
    """``RegressionMetrics`` of predicted ``values`` (``[N]`` or ``[N, T]``) against
    ``labels`` of the same shape; ValueError for labels that are no numbers or misfit."""
    predicted = np.asarray(values, np.float64)
    predicted = predicted[:, None] if predicted.ndim == 1 else predicted
    true = np.asarray(labels)
    if true.dtype.kind not in "biuf":
        raise ValueError(f"regression labels must be numbers, got dtype {true.dtype}")
    true = true.astype(np.float64)
    true = true[:, None] if true.ndim == 1 else true
    if true.shape != predicted.shape:
        raise ValueError(f"labels shaped {list(true.shape)} for predictions shaped "
                         f"{list(predicted.shape)}: one value per target and instance")
    error = predicted - true
    mae_t = np.abs(error).mean(axis=0)
    rmse_t = np.sqrt((error ** 2).mean(axis=0))
    total = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2_t = np.where(total > 0, 1.0 - (error ** 2).sum(axis=0) / total, np.nan)
    abs_error = np.abs(error).mean(axis=1)
    order = np.argsort(-abs_error, kind="stable")[: max(0, int(worst))]
    names = tuple(str(k) for k in range(true.shape[1])) if true.shape[1] > 1 else ("value",)
    return RegressionMetrics(
        len(true), float(np.abs(error).mean()), float(np.sqrt((error ** 2).mean())),
        float(np.mean(r2_t)), names, mae_t, rmse_t, r2_t, predicted, true, abs_error, order,
        inputs, reason)


def _values(row) -> str:
    row = np.asarray(row).reshape(-1)
    return ", ".join(f"{v:.4g}" for v in row)
