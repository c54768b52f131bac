"""The one rule for reading a model's outputs (``tfserve_magic.outputs``), with numpy only:
every task kind inferred from the outputs and the labels, the reason given, ``task=`` overrides,
and ``%%predict``'s view and the widgets reading one model the same way."""

from __future__ import annotations

import numpy as np
import pytest

from tfserve_magic.client import Prediction
from tfserve_magic.outputs import (
    Reading,
    as_probabilities,
    class_labels,
    read_outputs,
    require_classifier,
    softmax,
)
from tfserve_magic.predict_view import PredictionResult


def _probs(rng, n, c):
    raw = rng.random((n, c))
    return (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)


def test_binary_from_one_sigmoid_column_needs_binary_labels_or_task():
    p = np.array([[0.9], [0.2], [0.4]], np.float32)
    reading = read_outputs(p, labels=[1, 0, 1])
    assert reading.task == "binary" and "sigmoid" in reading.reason
    assert reading.class_ids.tolist() == [1, 0, 0]
    np.testing.assert_allclose(reading.scores[:, 1], p[:, 0])
    np.testing.assert_allclose(reading.scores.sum(axis=1), 1.0)
    assert reading.score_kind == "probabilities" and reading.n_classes == 2
    # without labels one number per instance is a regression, and the reason says how to ask
    alone = read_outputs(p)
    assert alone.task == "regression" and "task='binary'" in alone.reason
    np.testing.assert_array_equal(alone.values, p[:, 0])
    assert read_outputs(p, task="binary").class_ids.tolist() == [1, 0, 0]
    # a logit column under task='binary' goes through the sigmoid
    logit = read_outputs(np.array([[2.0], [-3.0]], np.float32), task="binary")
    assert logit.class_ids.tolist() == [1, 0]
    assert logit.scores[0, 1] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)


def test_binary_from_two_softmax_columns_and_two_logit_columns():
    two = np.array([[0.2, 0.8], [0.7, 0.3]], np.float32)
    reading = read_outputs(two)
    assert reading.task == "binary" and reading.score_kind == "probabilities"
    assert reading.class_ids.tolist() == [1, 0] and "two columns summing to 1" in reading.reason
    logits = read_outputs(np.array([[2.0, -1.0], [-0.5, 0.5]], np.float32))
    assert logits.task == "binary" and logits.score_kind == "logits"
    assert logits.class_ids.tolist() == [0, 1]
    np.testing.assert_allclose(logits.probabilities, softmax([[2.0, -1.0], [-0.5, 0.5]]))


def test_multiclass_probabilities_logits_and_class_ids():
    rng = np.random.default_rng(0)
    probs = _probs(rng, 50, 10)
    reading = read_outputs(probs, labels=rng.integers(0, 10, 50))
    assert reading.task == "multiclass" and reading.score_kind == "probabilities"
    assert reading.class_ids.tolist() == probs.argmax(axis=1).tolist()
    assert reading.n_classes == 10 and "class probabilities" in reading.reason
    ids, scores = reading.top(3)
    assert ids.shape == (50, 3) and (scores[:, 0] == probs.max(axis=1)).all()

    logits = rng.normal(size=(20, 5)).astype(np.float32) * 4
    as_logits = read_outputs(logits)
    assert as_logits.task == "multiclass" and as_logits.score_kind == "logits"
    assert as_logits.class_ids.tolist() == logits.argmax(axis=1).tolist()
    np.testing.assert_allclose(as_logits.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert as_logits.probabilities.argmax(axis=1).tolist() == logits.argmax(axis=1).tolist()

    for ids_out in (np.array([3, 1, 2]), np.array([[3], [1], [2]], np.int64)):
        classes = read_outputs(ids_out)
        assert classes.task == "multiclass" and classes.scores is None
        assert classes.class_ids.tolist() == [3, 1, 2] and classes.n_classes == 4
        assert "class ids" in classes.reason and classes.top(2) is None
    assert read_outputs(np.array([1, 0, 1]), labels=[0, 1, 1]).task == "binary"


def test_named_classes_and_scores_as_tf_serving_classify_gives():
    classes = np.array([["cat", "dog", "eel"]] * 3)
    scores = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], np.float32)
    reading = read_outputs({"classes": classes, "scores": scores})
    assert reading.task == "multiclass" and reading.class_names == ("cat", "dog", "eel")
    assert reading.predicted().tolist() == ["dog", "cat", "eel"]
    assert "classify" in reading.reason and reading.output == "scores"
    assert reading.correct(["dog", "eel", "eel"]).tolist() == [True, False, True]
    assert reading.correct(np.array([b"dog", b"cat", b"cat"])).tolist() == [True, True, False]
    # rows listing their classes in other orders (a top-k answer) map to one column per name
    mixed = read_outputs({"classes": np.array([[b"1", b"0"], [b"0", b"1"]]),
                          "scores": np.array([[0.9, 0.1], [0.8, 0.2]], np.float32)})
    assert mixed.task == "binary" and mixed.class_names == ("1", "0")
    assert mixed.predicted().tolist() == ["1", "0"]
    assert mixed.correct([1, 1]).tolist() == [True, False]  # digit names compare with ids
    view = PredictionResult(Prediction({"classes": classes, "scores": scores}, latency_s=0.0),
                            labels=["dog", "eel", "eel"], top_k=2)
    assert view.predicted_classes.tolist() == ["dog", "cat", "eel"] and view.mismatches == [1]
    assert "dog (0.700), eel (0.200)" in repr(view)


def test_multilabel_from_independent_sigmoids_multi_hot_labels_or_task():
    rng = np.random.default_rng(1)
    sig = rng.random((30, 4)).astype(np.float32)
    reading = read_outputs(sig)
    assert reading.task == "multilabel" and "independent sigmoids" in reading.reason
    assert reading.class_ids is None and reading.score_kind == "sigmoid"
    np.testing.assert_array_equal(reading.active, sig >= 0.5)
    truth = (sig >= 0.5).astype(int)
    truth[3] = 1 - truth[3]
    assert reading.correct(truth).tolist() == [i != 3 for i in range(30)]
    # multi-hot labels say multilabel even for logits; class-id labels say multiclass
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    multi_hot = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1]] * 2)
    from_labels = read_outputs(logits, labels=multi_hot)
    assert from_labels.task == "multilabel" and from_labels.score_kind == "logits"
    np.testing.assert_array_equal(from_labels.active, logits >= 0)
    assert read_outputs(sig, labels=rng.integers(0, 4, 30)).task == "multiclass"
    assert read_outputs(sig, task="multiclass").class_ids.tolist() == sig.argmax(1).tolist()
    with pytest.raises(ValueError, match="multi-label model"):
        require_classifier(reading)


def test_regression_with_one_and_several_targets():
    one = np.array([[10.5], [12.25], [9.0]], np.float32)
    reading = read_outputs(one, labels=[10.0, 12.0, 9.5])
    assert reading.task == "regression" and reading.class_ids is None
    np.testing.assert_array_equal(reading.values, one[:, 0])
    assert "not all within 0..1" in reading.reason
    assert read_outputs(np.array([1.5, 2.5])).task == "regression"
    with pytest.raises(ValueError, match="regression, not a classifier"):
        require_classifier(reading)
    # several targets: told by numeric labels, or by task=
    several = np.array([[1.5, 20.0, -3.0], [2.5, 30.0, -4.0]], np.float32)
    assert read_outputs(several).task == "multiclass"  # alone, columns read as class scores
    targets = read_outputs(several, labels=np.array([[1.4, 21.0, -3.1], [2.6, 29.5, -3.9]]))
    assert targets.task == "regression" and targets.values.shape == (2, 3)
    assert "numeric" in targets.reason
    forced = read_outputs(several, task="regression")
    assert forced.task == "regression" and forced.reason == "task='regression' given"
    view = PredictionResult(Prediction(one, latency_s=0.0), labels=[10.0, 12.0, 9.5])
    assert view.task == "regression" and view.kind is None and view.accuracy is None
    rows = np.array([[1.4, 21.0, -3.1], [2.6, 29.5, -3.9]])
    shown = PredictionResult(Prediction(several, latency_s=0.0), labels=rows, task="regression")
    assert shown.labels.shape == (2, 3) and "21" in repr(shown)  # the targets, not an argmax


def test_values_named_outputs_overrides_and_refusals():
    values = read_outputs({"sum": np.array([1.5, 2.5]), "twice": np.ones((2, 40))})
    assert values.task is None and "sum, twice" in values.reason
    assert read_outputs(np.zeros((2, 3, 4))).task is None
    assert read_outputs(np.array(["a", "b"])).task is None
    named = {"logits": np.array([[5.0, -1.0, 0.0]]), "embedding": np.zeros((1, 8))}
    picked = read_outputs(named)
    assert picked.output == "logits" and picked.class_ids.tolist() == [0]
    # an estimator's outputs: the probabilities win over logits and class ids
    estimator = {"class_ids": np.array([[2], [0]]), "logits": np.array([[0.0, 1.0, 3.0]] * 2),
                 "probabilities": np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])}
    chosen = read_outputs(estimator)
    assert chosen.output == "probabilities" and chosen.class_ids.tolist() == [2, 0]
    assert read_outputs(estimator, output="class_ids").class_ids.tolist() == [2, 0]
    with pytest.raises(ValueError, match="no output named 'nope'"):
        read_outputs(estimator, output="nope")
    with pytest.raises(ValueError, match="task must be one of"):
        read_outputs(np.zeros((2, 3)), task="ranking")
    with pytest.raises(ValueError, match="cannot read the output float64\\[2\\] as multilabel"):
        read_outputs(np.zeros(2), task="multilabel")
    with pytest.raises(ValueError, match="binary needs"):
        read_outputs(np.zeros((2, 3)), task="binary")
    with pytest.raises(ValueError, match="not a classifier"):
        require_classifier(values)
    assert isinstance(read_outputs(Prediction(np.array([1, 2]), latency_s=0.0)), Reading)


def test_labels_and_probability_helpers():
    assert np.allclose(as_probabilities([0.2, 0.8]), [0.2, 0.8])
    logits = as_probabilities(np.array([[2.0, -1.0, 0.0]]))
    assert logits.sum() == pytest.approx(1.0) and logits.argmax() == 0
    assert class_labels(np.eye(3)[[2, 0, 1]]).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="3 labels for 2 inputs"):
        class_labels([1, 2, 3], 2)
    with pytest.raises(ValueError, match="class ids"):
        class_labels([0.5, 1.0])
