"""The numbers per task kind (``tfserve_magic.scoring``) against plain numpy loops written
independently here, on random outputs of each kind; plus the version comparison's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tfserve_magic.client import Prediction
from tfserve_magic.outputs import read_outputs
from tfserve_magic.scoring import (
    BinaryMetrics,
    ClassifierMetrics,
    MultilabelMetrics,
    RegressionMetrics,
    metrics,
    precision_recall_curve,
)
from tfserve_magic.widgets.compare import compare_readings


def _safe(top, bottom):
    return top / bottom if bottom else 0.0


def _counts(truth, predicted, k):
    tp = sum(1 for t, p in zip(truth, predicted) if t == k and p == k)
    fp = sum(1 for t, p in zip(truth, predicted) if t != k and p == k)
    fn = sum(1 for t, p in zip(truth, predicted) if t == k and p != k)
    return tp, fp, fn


def test_multiclass_accuracy_and_per_class_table():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 4)).astype(np.float32)
    y = np.where(rng.random(300) < 0.6, logits.argmax(1), rng.integers(0, 4, 300))
    m = metrics(Prediction(logits, latency_s=0.0), y, class_names=["a", "b", "c", "d"])
    assert isinstance(m, ClassifierMetrics) and m.task == "multiclass"
    predicted = logits.argmax(1)
    assert m.accuracy == pytest.approx(np.mean(predicted == y))
    assert m.n_correct == int(np.sum(predicted == y)) and m.n == 300
    for k in range(4):
        tp, fp, fn = _counts(y.tolist(), predicted.tolist(), k)
        assert m.precision[k] == pytest.approx(_safe(tp, tp + fp))
        assert m.recall[k] == pytest.approx(_safe(tp, tp + fn))
        p, r = _safe(tp, tp + fp), _safe(tp, tp + fn)
        assert m.f1[k] == pytest.approx(_safe(2 * p * r, p + r))
        assert m.support[k] == np.sum(y == k)
        for j in range(4):
            assert m.confusion[k, j] == np.sum((y == k) & (predicted == j))
    text = repr(m)
    assert text.splitlines()[0] == f"accuracy {m.accuracy:.1%} ({m.n_correct}/300)"
    assert text.splitlines()[4].split()[0] == "b"  # one row per class, by name
    assert "<table>" in m._repr_html_()
    # names as labels, one-hot labels: the same numbers
    names = np.array(["a", "b", "c", "d"])[y]
    assert metrics(logits, names, class_names="abcd" and list("abcd")).accuracy == m.accuracy
    assert metrics(logits, np.eye(4)[y], task="multiclass").accuracy == m.accuracy


def test_binary_threshold_and_curve():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.35 * y + rng.random(400) * 0.65, 0, 1).astype(np.float32)[:, None]
    for threshold in (0.3, 0.5, 0.8):
        m = metrics(p, y, threshold=threshold)
        assert isinstance(m, BinaryMetrics) and m.threshold == threshold
        positive = (p[:, 0] >= threshold).astype(int)
        tp, fp, fn = _counts(y.tolist(), positive.tolist(), 1)
        precision, recall = _safe(tp, tp + fp), _safe(tp, tp + fn)
        assert m.precision_at == pytest.approx(precision)
        assert m.recall_at == pytest.approx(recall)
        assert m.f1_at == pytest.approx(_safe(2 * precision * recall, precision + recall))
        assert m.accuracy == pytest.approx(np.mean(positive == y))
        assert f"at threshold {threshold:g}" in repr(m)
    # the curve: one point per distinct score, highest first, as a loop computes it
    curve = m.curve
    distinct = np.unique(p[:, 0])[::-1]
    np.testing.assert_allclose(curve.thresholds, distinct)
    for t, cp, cr in zip(curve.thresholds, curve.precision, curve.recall):
        chosen = p[:, 0] >= t
        assert cp == pytest.approx(np.sum(chosen & (y == 1)) / np.sum(chosen))
        assert cr == pytest.approx(np.sum(chosen & (y == 1)) / np.sum(y == 1))
    assert curve.recall[-1] == 1.0
    # two probability columns read the same; names label the classes
    two = np.concatenate([1 - p, p], axis=1)
    named = metrics(two, np.array(["neg", "pos"])[y], class_names=["neg", "pos"])
    assert named.precision_at == pytest.approx(metrics(p, y).precision_at)
    assert "positive pos" in repr(named)
    ties = precision_recall_curve([1, 0, 1, 0], [0.9, 0.9, 0.2, 0.1])
    assert ties.thresholds.tolist() == [0.9, 0.2, 0.1]
    assert ties.precision.tolist() == [0.5, 2 / 3, 0.5] and ties.recall.tolist() == [0.5, 1, 1]


def test_regression_per_target_overall_and_worst_rows():
    rng = np.random.default_rng(2)
    true = rng.normal(size=(50, 2)) * [1.0, 10.0]
    predicted = (true + rng.normal(size=(50, 2))).astype(np.float32)
    m = metrics(predicted, true)
    assert isinstance(m, RegressionMetrics) and m.n == 50
    error = predicted.astype(np.float64) - true
    for t in range(2):
        assert m.mae_per_target[t] == pytest.approx(np.mean(np.abs(error[:, t])))
        assert m.rmse_per_target[t] == pytest.approx(np.sqrt(np.mean(error[:, t] ** 2)))
        total = np.sum((true[:, t] - true[:, t].mean()) ** 2)
        assert m.r2_per_target[t] == pytest.approx(1 - np.sum(error[:, t] ** 2) / total)
    assert m.mae == pytest.approx(np.mean(np.abs(error)))
    assert m.rmse == pytest.approx(np.sqrt(np.mean(error ** 2)))
    assert m.r2 == pytest.approx(np.mean(m.r2_per_target))
    row_error = np.abs(error).mean(axis=1)
    assert m.worst.tolist() == np.argsort(-row_error)[:10].tolist()
    # one target, [N, 1] outputs and [N] labels; the worst rows show their inputs
    one = metrics(predicted[:, :1], true[:, 0], task="regression", worst=3,
                  inputs={"age": np.arange(50), "city": ["x"] * 50})
    assert one.mae == pytest.approx(np.mean(np.abs(error[:, 0])))
    worst = int(np.argmax(np.abs(error[:, 0])))
    assert one.worst[0] == worst and f"age={worst}, city=x" in repr(one)
    assert one.summary().startswith(f"MAE {one.mae:.4g}, RMSE {one.rmse:.4g}")
    assert np.isnan(metrics(np.array([1.0, 2.0]), np.array([3.0, 3.0])).r2)  # constant truth
    with pytest.raises(ValueError, match="labels shaped \\[50, 1\\] for predictions shaped \\[50, 2\\]"):
        metrics(predicted, true[:, 0])


def test_multilabel_per_label_and_exact_match():
    rng = np.random.default_rng(3)
    truth = (rng.random((80, 3)) < 0.4).astype(int)
    scores = np.clip(truth * 0.5 + rng.random((80, 3)) * 0.6, 0, 1).astype(np.float32)
    m = metrics(scores, truth, threshold=0.6, class_names=["sports", "music", "art"])
    assert isinstance(m, MultilabelMetrics) and m.label_names == ("sports", "music", "art")
    active = scores >= 0.6
    f1s = []
    for k in range(3):
        tp, fp, fn = _counts(truth[:, k].tolist(), active[:, k].astype(int).tolist(), 1)
        p, r = _safe(tp, tp + fp), _safe(tp, tp + fn)
        assert m.precision[k] == pytest.approx(p) and m.recall[k] == pytest.approx(r)
        f1s.append(_safe(2 * p * r, p + r))
        assert m.f1[k] == pytest.approx(f1s[-1])
        assert m.support[k] == truth[:, k].sum()
    assert m.macro_f1 == pytest.approx(np.mean(f1s))
    assert m.exact_match == pytest.approx(np.mean((active == truth.astype(bool)).all(axis=1)))
    tp = np.sum(active & (truth == 1))
    assert m.micro_precision == pytest.approx(tp / active.sum())
    assert m.micro_recall == pytest.approx(tp / truth.sum())
    assert "sports" in repr(m) and "exact match" in m._repr_html_()
    with pytest.raises(ValueError, match="shaped \\(80, 3\\)"):
        metrics(scores, truth[:, :2])


def test_bad_labels_and_tasks_are_value_errors():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    with pytest.raises(ValueError, match="3 labels for 2 predictions"):
        metrics(probs, [0, 1, 1])
    with pytest.raises(ValueError, match="cannot read .* as multilabel"):
        metrics(np.array([1.5, 2.5]), [1.0, 2.0], task="multilabel")
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        metrics(probs, [0, 1], class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="'cat' are not among the class names"):
        metrics(probs, ["cat", "dog"], class_names=["dog", "bird"])
    with pytest.raises(ValueError, match="no metrics for these outputs"):
        metrics({"a": np.array(["x", "y"])}, [0, 1])
    with pytest.raises(ValueError, match="threshold must be within 0..1"):
        metrics(probs, [0, 1], threshold=2)
    with pytest.raises(ValueError, match="read as binary .*not regression"):
        metrics(read_outputs(probs), [0, 1], task="regression")


def test_compare_readings_for_each_kind():
    rng = np.random.default_rng(4)
    true = rng.normal(size=40)
    a, b = true + rng.normal(size=40) * 0.1, true + rng.normal(size=40)
    r = compare_readings(read_outputs(a, task="regression"), read_outputs(b, task="regression"),
                         true)
    assert r.task == "regression" and r.better == "A"
    assert r.error_a == pytest.approx(np.mean(np.abs(a - true)))
    assert r.disagreements.tolist() == np.argsort(-np.abs(a - b)).tolist()
    assert sorted(r.a_right_b_wrong.tolist()) == np.flatnonzero(
        np.abs(a - true) < np.abs(b - true)).tolist()
    truth = (rng.random((30, 3)) < 0.5).astype(int)
    sa = np.clip(truth * 0.7 + rng.random((30, 3)) * 0.3, 0, 1).astype(np.float32)
    sb = rng.random((30, 3)).astype(np.float32)
    m = compare_readings(read_outputs(sa, truth), read_outputs(sb, truth), truth)
    assert m.task == "multilabel" and m.better == "A"
    differ = ((sa >= 0.5) != (sb >= 0.5)).any(axis=1)
    assert sorted(m.disagreements.tolist()) == np.flatnonzero(differ).tolist()
    counts = ((sa >= 0.5) != (sb >= 0.5)).sum(axis=1)[m.disagreements]
    assert np.all(np.diff(counts) <= 0)  # most labels apart first
    assert m.error_b == pytest.approx(1 - m.metrics_b.macro_f1)


def test_a_client_prediction_has_the_same_metrics_and_reading():
    from tfserve_magic.results import Prediction

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=40).astype(np.float32)
    labels = rng.integers(0, 4, size=40)
    prediction = Prediction(probs, latency_s=0.01)
    assert prediction.reading().task == "multiclass"
    got = prediction.metrics(labels)
    assert got.accuracy == pytest.approx(float(np.mean(probs.argmax(1) == labels)))
    values = rng.normal(size=(30, 1)).astype(np.float32)
    truth = rng.normal(size=30)
    regression = Prediction(values, latency_s=0.01).metrics(truth, task="regression")
    assert regression.mae == pytest.approx(float(np.mean(np.abs(values[:, 0] - truth))), rel=1e-5)
