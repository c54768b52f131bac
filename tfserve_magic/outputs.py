"""The one rule for reading a model's outputs: which task, which classes, which scores.

``%%predict`` (``predict_view``), its result objects and every widget read outputs through
``read_outputs``, so one model is read one way everywhere. The task is inferred from the
outputs and, when given, the true labels, and ``Reading.reason`` says why in words; ``task=``
overrides it. Plain numpy: no TensorFlow, no IPython.

Tasks: ``multiclass`` (scores, probabilities or logits per class, or class ids), ``binary`` (one
sigmoid column or two columns), ``multilabel`` (K independent sigmoids), ``regression`` (one or
several targets); ``None`` when the outputs are plain values (strings, several unnamed outputs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "TASKS", "Reading", "read_outputs", "require_classifier", "class_labels",
    "labels_per_instance", "is_probabilities", "softmax", "as_probabilities", "class_ids_of",
]

TASKS = ("multiclass", "binary", "multilabel", "regression")
# Output names a classifier's scores usually carry, most specific first (an exact name wins).
SCORE_NAMES = ("probabilities", "probs", "scores", "predictions", "logits", "output_0")
_CLASSIFIER_NAME = re.compile(r"prob|score|softmax|sigmoid|logistic|logit|class", re.IGNORECASE)
_TOL = 1e-3


@dataclass(frozen=True, eq=False)
class Reading:
    """How a model's outputs read, per instance.

    - ``task``: one of ``TASKS``, or None (plain values: nothing to compare with labels)
    - ``reason``: why, in one sentence (shown to the user)
    - ``output``: the named output read (None: the model's only output)
    - ``class_ids``: ``[N]`` int64 predicted class (multiclass, binary), else None
    - ``scores``: ``[N, C]`` float per class as the model gave them (binary from one sigmoid
      column: ``[1 - p, p]``; multilabel: ``[N, K]``), None for class-id outputs
    - ``score_kind``: "probabilities" (rows sum to 1), "sigmoid" (independent 0..1 values),
      "logits" (anything else), or None
    - ``class_names``: names of the score columns (TF Serving classify's ``classes``), or None
    - ``active``: multilabel ``[N, K]`` bool (probability >= ``threshold``), else None
    - ``values``: regression targets ``[N]`` or ``[N, T]``, else None
    """

    task: str | None
    reason: str
    output: str | None = None
    class_ids: np.ndarray | None = None
    scores: np.ndarray | None = None
    score_kind: str | None = None
    class_names: tuple[str, ...] | None = None
    active: np.ndarray | None = None
    values: np.ndarray | None = None
    threshold: float = 0.5

    @property
    def is_classifier(self) -> bool:
        """One class per instance (multiclass or binary)."""
        return self.task in ("multiclass", "binary")

    @property
    def n_classes(self) -> int:
        """Score columns, or classes named, or the largest class id + 1 (0 if none)."""
        if self.scores is not None:
            return int(self.scores.shape[1])
        if self.class_names is not None:
            return len(self.class_names)
        if self.class_ids is not None and len(self.class_ids):
            return int(self.class_ids.max()) + 1
        return 0

    @property
    def probabilities(self) -> np.ndarray | None:
        """``[N, C]`` probabilities: the scores when they are, softmax of logits, sigmoid of
        multilabel logits; None without scores."""
        if self.scores is None:
            return None
        if self.score_kind in ("probabilities", "sigmoid"):
            return self.scores.astype(np.float32)
        if self.task == "multilabel":
            return _sigmoid(self.scores)
        return softmax(self.scores)

    def predicted(self) -> np.ndarray | None:
        """The predicted class per instance as the model names it (names, else ids)."""
        if self.class_ids is None:
            return None
        if self.class_names is not None:
            return np.asarray(self.class_names, dtype=object)[self.class_ids]
        return self.class_ids

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(class ids ``[N, k]``, their scores ``[N, k]``), best first; None without scores."""
        if self.scores is None:
            return None
        order = np.argsort(-self.scores, axis=1, kind="stable")[:, : max(1, int(k))]
        return order, np.take_along_axis(self.scores, order, axis=1)

    def correct(self, labels) -> np.ndarray | None:
        """Per instance, whether the prediction equals the label (None: nothing to compare).

        ``labels``: class ids, one-hot rows or class names (classifiers), multi-hot rows
        (multilabel). Raises ValueError when there is not one label per instance.
        """
        if self.is_classifier:
            truth = labels_per_instance(labels, len(self.class_ids))
            if self.class_names is not None and truth.dtype.kind in "USO":
                names = np.asarray([_text(v) for v in truth], dtype=object)
                return np.asarray(self.predicted() == names, dtype=bool)
            if self.class_names is not None and all(n.lstrip("-").isdigit()
                                                    for n in self.class_names):
                ids = np.asarray([int(n) for n in self.class_names])[self.class_ids]
                return np.asarray(ids == truth, dtype=bool)
            return np.asarray(self.class_ids == truth, dtype=bool)
        if self.task == "multilabel":
            truth = np.asarray(labels)
            if truth.shape != self.active.shape:
                raise ValueError(f"multi-label labels must be shaped {self.active.shape} "
                                 f"(0/1 per label), got {truth.shape}")
            return (truth.astype(bool) == self.active).all(axis=1)
        return None


# ---------------------------------------------------------------------------------- the rule
def read_outputs(outputs, labels=None, *, task: str | None = None,
                 output: str | None = None, class_names=None) -> Reading:
    """Read ``outputs`` (an array, a dict name -> array, or a client ``Prediction``).

    ``labels``: the true labels, when known; only their kind is read (binary ids, one-hot,
    multi-hot, numbers, or names of ``class_names``), so their count need not match. ``task``:
    one of ``TASKS`` to override the inference (ValueError when the outputs cannot be read so).
    ``output``: the named output to read (default: the one that looks like a prediction).
    ``class_names``: names of the classes (of the labels, for multi-label models), in the order
    of the score columns / class ids; ValueError when their count does not fit the outputs.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    names = _names(class_names)
    reading = _read(outputs, labels, task, output, names)
    return reading if names is None else _named(reading, names)


def _read(outputs, labels, task, output, names) -> Reading:
    if not isinstance(outputs, np.ndarray) and hasattr(outputs, "latency_s"):
        outputs = getattr(outputs, "outputs", outputs)  # a client Prediction
    if names is not None and labels is not None and np.asarray(labels).dtype.kind in "USO":
        labels = _ids_of_names(labels, names)  # read their kind as the ids they stand for
    label_kind = _label_kind(labels)
    if isinstance(outputs, Mapping):
        named = {str(k): outputs[k] for k in outputs}
        if output is not None:
            if output not in named:
                raise ValueError(f"no output named {output!r}: the outputs are "
                                 f"{', '.join(named) or '(none)'}")
            return _read_array(np.asarray(named[output]), label_kind, task, output)
        classify = _classify_form(named)
        if classify is not None:
            return classify
        chosen = _choose_output(named, label_kind, task)
        if chosen is None:
            if task is not None:
                raise ValueError(f"cannot read the outputs {', '.join(named)} as {task}: name "
                                 "the one to read with output=")
            return Reading(None, f"{len(named)} outputs ({', '.join(named)}), none named or "
                                 "shaped like a prediction: shown as values")
        return _read_array(np.asarray(named[chosen]), label_kind, task, chosen)
    return _read_array(np.asarray(outputs), label_kind, task, None)


def _names(class_names) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise ValueError(f"class_names must be a list of names, not the string {class_names!r}")
    names = tuple(_text(n) for n in np.asarray(class_names, dtype=object).reshape(-1))
    if len(set(names)) != len(names):
        raise ValueError(f"class_names repeat a name: {list(names)}")
    return names


def _ids_of_names(labels, names: tuple[str, ...]) -> np.ndarray:
    """Class names as the class ids they stand for (ValueError naming an unknown one)."""
    index = {n: i for i, n in enumerate(names)}
    texts = [_text(v) for v in np.asarray(labels, dtype=object).reshape(-1)]
    unknown = sorted({t for t in texts if t not in index})
    if unknown:
        raise ValueError(f"labels {', '.join(map(repr, unknown[:5]))} are not among the class "
                         f"names {', '.join(names)}")
    return np.asarray([index[t] for t in texts], dtype=np.int64)


def _named(reading: Reading, names: tuple[str, ...]) -> Reading:
    """The reading with ``names`` for its classes (or labels), checked against the outputs."""
    if reading.task in (None, "regression"):
        return reading
    if reading.scores is not None:
        count = int(reading.scores.shape[1])
        if len(names) != count:
            raise ValueError(f"{len(names)} class names for {count} "
                             f"{'labels' if reading.task == 'multilabel' else 'classes'} in "
                             f"the outputs ({reading.reason})")
    elif len(reading.class_ids) and int(reading.class_ids.max()) >= len(names):
        raise ValueError(f"{len(names)} class names, but the model predicts class id "
                         f"{int(reading.class_ids.max())}")
    return replace(reading, class_names=names)


def class_ids_of(reading: Reading, labels) -> np.ndarray:
    """True labels as class ids in the reading's column order: ids, one-hot rows, or names
    (of ``reading.class_names``; classify answers' numeric names map to their ids)."""
    truth = np.asarray(labels)
    if truth.ndim == 2 and truth.shape[1] > 1:
        truth = truth.argmax(axis=1)
    truth = truth.reshape(-1)
    names = reading.class_names
    if truth.dtype.kind in "USO":
        if names is None:
            raise ValueError("the labels are names but the model's classes have none: pass "
                             "class_names= (or --class-names) in the order of its outputs")
        return _ids_of_names(truth, names)
    ids = class_labels(truth)
    if names is not None and all(n.lstrip("-").isdigit() for n in names):
        column = {int(n): j for j, n in enumerate(names)}  # numeric names: the labels' values
        return np.asarray([column.get(int(v), -1) for v in ids], dtype=np.int64)
    return ids


def require_classifier(reading: Reading, what: str = "these widgets") -> Reading:
    """The reading, if it names one class per instance; else ValueError saying why not."""
    if reading.is_classifier:
        return reading
    if reading.task == "regression":
        raise ValueError(f"{reading.reason}: that is a regression, not a classifier; {what} "
                         "need class scores [N, classes] or one sigmoid probability (use "
                         "%predict or Client.predict for regressions)")
    kind = "a multi-label model" if reading.task == "multilabel" else "not a classifier"
    raise ValueError(f"{reading.reason}: {kind}; {what} need one class per instance")


def _read_array(array: np.ndarray, label_kind: str | None, task: str | None,
                name: str | None) -> Reading:
    """The task of one output array (see the module docstring), or the reading ``task`` asks."""
    inferred = _infer(array, label_kind) if task is None else (task, f"task={task!r} given")
    kind, reason = inferred
    if kind is None:
        return Reading(None, reason, output=name)
    try:
        return _READERS[kind](array, reason, name)
    except _Unreadable as exc:
        raise ValueError(f"cannot read {_describe(array, name)} as {kind}: {exc}") from None


def _infer(a: np.ndarray, labels: str | None) -> tuple[str | None, str]:
    what = _describe(a, None)
    if a.dtype.kind not in "iuf" or a.ndim == 0 or a.ndim > 2:
        return None, f"{what}: not class scores, class ids or numbers per instance"
    if a.dtype.kind in "iu":
        if a.ndim == 1 or a.shape[1] == 1:
            if labels == "binary" and np.isin(a, (0, 1)).all():
                return "binary", "integer class ids 0/1 and binary labels"
            return "multiclass", "integer outputs, one per instance: class ids"
        return None, f"{what}: several integers per instance"
    if a.ndim == 1 or a.shape[1] == 1:
        in_unit = bool(a.size) and bool(np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1)
        if labels == "binary" and in_unit:
            return "binary", "one number per instance within 0..1 and binary labels: a sigmoid"
        hint = ("" if not in_unit else
                " (within 0..1: pass binary labels or task='binary' to read a sigmoid)")
        reason = "one number per instance" + (", not all within 0..1" if not in_unit else "")
        return "regression", reason + hint
    if labels == "values":
        return "regression", f"{a.shape[1]} numbers per instance and numeric (non-class) labels"
    if labels == "multi-hot":
        return "multilabel", f"{a.shape[1]} columns and multi-hot labels"
    if is_probabilities(a):
        if a.shape[1] == 2:
            return "binary", "two columns summing to 1: probabilities of two classes"
        return "multiclass", f"{a.shape[1]} columns summing to 1: class probabilities"
    independent = bool(np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1)
    if independent and labels not in ("ids", "binary", "one-hot") and a.shape[1] > 2:
        return "multilabel", (f"{a.shape[1]} columns within 0..1 whose rows do not sum to 1: "
                              "independent sigmoids (pass class-id labels or task='multiclass' "
                              "to read one class)")
    scale = "within 0..1" if independent else "not probabilities"
    if a.shape[1] == 2:
        return "binary", f"two columns, {scale}: scores of two classes"
    return "multiclass", f"{a.shape[1]} columns, {scale}: class scores (logits)"


class _Unreadable(Exception):
    pass


def _class_reading(task: str, scores: np.ndarray, reason: str, name, names=None) -> Reading:
    scores = np.asarray(scores)
    if is_probabilities(scores):
        kind = "probabilities"
    elif scores.size and np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1:
        kind = "sigmoid"
    else:
        kind = "logits"
    ids = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1).astype(np.int64)
    return Reading(task, reason, output=name, class_ids=ids, scores=scores, score_kind=kind,
                   class_names=names)


def _as_ids(a: np.ndarray, task: str, reason: str, name) -> Reading | None:
    if a.dtype.kind in "iu" and (a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)):
        return Reading(task, reason, output=name, class_ids=a.reshape(-1).astype(np.int64))
    return None


def _multiclass(a, reason, name):
    ids = _as_ids(a, "multiclass", reason, name)
    if ids is not None:
        return ids
    if a.dtype.kind != "f" or a.ndim != 2 or a.shape[1] < 2:
        raise _Unreadable("multiclass needs scores [N, classes >= 2] or integer class ids")
    return _class_reading("multiclass", a, reason, name)


def _binary(a, reason, name):
    ids = _as_ids(a, "binary", reason, name)
    if ids is not None:
        return ids
    if a.dtype.kind != "f" or a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] > 2):
        raise _Unreadable("binary needs one sigmoid column, two columns, or class ids 0/1")
    if a.ndim == 2 and a.shape[1] == 2:
        return _class_reading("binary", a, reason, name)
    p = a.reshape(-1).astype(np.float64)
    if p.size and (p.min() < 0 or p.max() > 1):  # a logit: the sigmoid makes it a probability
        p = 1.0 / (1.0 + np.exp(-p))
    scores = np.stack([1.0 - p, p], axis=1).astype(np.float32)
    return _class_reading("binary", scores, reason, name)


def _multilabel(a, reason, name):
    if a.dtype.kind != "f" or a.ndim != 2:
        raise _Unreadable("multilabel needs one score per label, shaped [N, labels]")
    in_unit = a.size and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    kind = "sigmoid" if in_unit or not a.size else "logits"
    probs = a if kind == "sigmoid" else _sigmoid(a)
    return Reading("multilabel", reason, output=name, scores=a, score_kind=kind,
                   active=np.asarray(probs >= 0.5, dtype=bool))


def _regression(a, reason, name):
    if a.dtype.kind not in "iuf" or a.ndim not in (1, 2):
        raise _Unreadable("regression needs numbers shaped [N] or [N, targets]")
    values = a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a
    return Reading("regression", reason, output=name, values=values)


_READERS = {"multiclass": _multiclass, "binary": _binary, "multilabel": _multilabel,
            "regression": _regression}


# ---------------------------------------------------------------------------------- named outputs
def _classify_form(named: dict) -> Reading | None:
    """TF Serving's classify answer: ``classes`` (names, [N, k]) beside ``scores`` ([N, k])."""
    if set(named) != {"classes", "scores"}:
        return None
    classes, scores = np.asarray(named["classes"]), np.asarray(named["scores"], dtype=np.float64)
    if classes.shape != scores.shape or classes.ndim != 2 or classes.dtype.kind not in "USO":
        return None
    rows = [[_text(c) for c in row] for row in classes]
    vocabulary = list(dict.fromkeys(c for row in rows for c in row))
    if all(row == rows[0] for row in rows):
        table = scores
    else:  # rows list their classes in different orders (top-k): one column per name
        table = np.full((len(rows), len(vocabulary)), np.nan)
        column = {c: j for j, c in enumerate(vocabulary)}
        for i, row in enumerate(rows):
            for c, s in zip(row, scores[i]):
                table[i, column[c]] = s
    names = tuple(rows[0]) if table is scores and rows else tuple(vocabulary)
    task = "binary" if len(names) == 2 else "multiclass"
    reason = f"classify answer: {len(names)} named classes with scores"
    return _class_reading(task, table.astype(np.float32), reason, "scores", names)


def _choose_output(named: dict, label_kind, task) -> str | None:
    """Of several outputs, the one holding the prediction: an exact score name, else the one
    holding probabilities, else one named like a classifier's; None if none qualifies."""
    candidates = []
    for name, value in named.items():
        array = np.asarray(value)
        if array.dtype.kind not in "iuf" or array.ndim not in (1, 2):
            continue
        kind, _ = _infer(array, label_kind) if task is None else (task, "")
        if kind is None or (kind == "regression" and task is None):
            continue
        probable = array.ndim == 2 and array.dtype.kind == "f" and is_probabilities(array)
        named_like = bool(_CLASSIFIER_NAME.search(name))
        exact = SCORE_NAMES.index(name) if name in SCORE_NAMES else len(SCORE_NAMES)
        if probable or named_like or exact < len(SCORE_NAMES):
            candidates.append((not probable, exact, not named_like, array.ndim != 2, name))
    return min(candidates)[-1] if candidates else None


# ---------------------------------------------------------------------------------- labels
def _label_kind(labels) -> str | None:
    """'binary', 'ids', 'one-hot', 'multi-hot', 'values', 'names' or None (no labels)."""
    if labels is None:
        return None
    a = np.asarray(labels)
    if a.dtype.kind in "USO":
        return "names"
    if a.dtype.kind not in "biuf" or a.size == 0:
        return None
    integral = a.dtype.kind in "biu" or bool(np.all(np.mod(a, 1) == 0))
    if not integral:
        return "values"
    if a.ndim == 2 and a.shape[1] > 1:
        if np.isin(a, (0, 1)).all():
            return "one-hot" if np.all(a.sum(axis=1) == 1) else "multi-hot"
        return "values"
    return "binary" if np.isin(a, (0, 1)).all() else "ids"


def class_labels(labels, n: int | None = None) -> np.ndarray:
    """Integer class ids ``[N]`` from ids or one-hot rows (ValueError for anything else)."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] > 1:
        array = array.argmax(axis=1)
    array = array.reshape(-1)
    if array.dtype.kind == "f":
        if not np.all(np.mod(array, 1) == 0):
            raise ValueError("labels must be class ids (integers) or one-hot rows")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"labels must be class ids (integers), got dtype {array.dtype}")
    if n is not None and len(array) != n:
        raise ValueError(f"{len(array)} labels for {n} inputs")
    return array.astype(np.int64)


def labels_per_instance(labels, n: int, *, rows: bool = False) -> np.ndarray:
    """One label per instance, as given (ids, names, numbers); one-hot rows become ids, unless
    ``rows`` (multi-hot labels, several regression targets) keeps each row."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2 and not rows:
        array = array.argmax(axis=1)
    elif array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1 and not (rows and array.ndim == 2):
        raise ValueError(f"labels must be one class per instance, got shape {array.shape}")
    if len(array) != n:
        raise ValueError(f"{len(array)} labels for {n} predictions: pass one label per instance")
    return array


# ---------------------------------------------------------------------------------- numbers
def is_probabilities(scores) -> bool:
    """Rows within 0..1 that sum to 1 (a softmax's output)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or not len(scores) or not np.isfinite(scores).all():
        return False
    in_range = scores.min() >= -1e-6 and scores.max() <= 1.0 + 1e-6
    return bool(in_range and np.allclose(scores.sum(axis=1), 1.0, atol=_TOL))


def softmax(scores) -> np.ndarray:
    """Softmax along the last axis, as float32."""
    scores = np.asarray(scores, dtype=np.float64)
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def as_probabilities(scores) -> np.ndarray:
    """The scores when they are probabilities (rows summing to 1), else their softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=-1), 1.0, atol=_TOL):
        return scores.astype(np.float32)
    return softmax(scores)


def _sigmoid(values) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(values, dtype=np.float64)))).astype(np.float32)


def _text(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _describe(a: np.ndarray, name: str | None) -> str:
    where = f"output {name!r} " if name else "the output "
    return f"{where}{a.dtype}{list(a.shape)}"
