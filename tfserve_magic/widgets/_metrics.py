"""The few numbers the views show, in one place (plain numpy).

TODO(merge): use scoring.X -- each function names the ``scoring`` function it stands for, so
the views switch to the shared module by changing this file only.
"""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """MAE, RMSE and R² of one target (R² is nan when the truth is constant).

    TODO(merge): use scoring.regression_metrics
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels for {len(y_pred)} predictions")
    error = y_pred - y_true
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = 1.0 - float(np.sum(error**2)) / total if total > 0 else float("nan")
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error**2))),
            "r2": r2, "n": int(len(y_true))}


def precision_recall_f1(truth, predicted) -> dict[str, float]:
    """Precision, recall and F1 of boolean predictions (0 where undefined), with the counts.

    TODO(merge): use scoring.precision_recall_f1
    """
    truth = np.asarray(truth, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    tp = int(np.sum(truth & predicted))
    fp = int(np.sum(~truth & predicted))
    fn = int(np.sum(truth & ~predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "support": int(truth.sum())}


def precision_recall_curve(truth, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, precision, recall) at every distinct score, highest threshold first.

    TODO(merge): use scoring.precision_recall_curve
    """
    truth = np.asarray(truth, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie
    tp = np.cumsum(truth)[last]
    fp = (last + 1) - tp
    positives = max(int(truth.sum()), 1)
    return scores[last], tp / np.maximum(tp + fp, 1), tp / positives


def per_label(truth, active) -> list[dict[str, float]]:
    """``precision_recall_f1`` of each column of multi-hot ``truth`` against ``active``.

    TODO(merge): use scoring.per_label
    """
    truth, active = np.asarray(truth, dtype=bool), np.asarray(active, dtype=bool)
    if truth.shape != active.shape:
        raise ValueError(f"multi-label labels must be shaped {active.shape} (0/1 per label), "
                         f"got {truth.shape}")
    return [precision_recall_f1(truth[:, k], active[:, k]) for k in range(truth.shape[1])]
