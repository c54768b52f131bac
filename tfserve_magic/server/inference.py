"""Protocol-neutral inference steps shared by the REST app and the gRPC servicer.

Running a signature (with the cost estimate that decides inline vs pool and the runtime-latency
metric), the classify/regress example tensor and TF Serving's post-run checks of classification
and regression outputs. Codes and texts are TF Serving's; each front end only translates them
into its own wire format.
"""

from __future__ import annotations

import time

import numpy as np

from tfserve_magic.server import signature_check  # [issue 22 hook]
from tfserve_magic.server.status import invalid


def timed_run(servable, signature, tensors: dict, *, api: str, metrics=None) -> dict:
    """Call the signature, learn its cost per element and record the runtime latency."""
    signature_check.check(signature, api)  # [issue 22 hook] --enable_signature_method_name_check
    elements = sum(int(np.size(v)) for v in tensors.values()) or 1
    started = time.perf_counter()
    result = signature.run(tensors)
    seconds = time.perf_counter() - started
    learn(signature, elements, seconds)
    if metrics is not None:
        metrics.runtime_latency.observe(seconds * 1e6, servable.model_name, api, "TF")
    return result


def learn(signature, elements: int, seconds: float) -> None:
    """Track the model's cost per input element (decides inline vs pool): two slower calls in
    a row raise the estimate at once, faster calls lower it gradually.

    Not one slower call: on a busy machine a cheap call whose thread waited for a core looks
    slow, and the calls it sent to the pool were slower still (GIL hand-offs between the loop
    and the pool), which kept them there and stretched the tail at c=32 (docs/benchmarks.md).
    """
    sample = seconds / elements
    old = signature.seconds_per_element
    previous = signature.__dict__.get("_last_sample")
    signature._last_sample = sample
    if old is None:
        signature.seconds_per_element = sample
    elif sample > old:
        if previous is not None and previous > old:
            signature.seconds_per_element = min(sample, previous)
    else:
        signature.seconds_per_element = 0.9 * old + 0.1 * sample


def batch_key(servable, signature) -> tuple:
    """The batching queue a call joins: one per model, version and signature."""
    signature_check.check(signature, "predict")  # [issue 22 hook] only predict is batched
    return (servable.model_name, servable.version, signature.name)


def example_tensor(serialized) -> np.ndarray:
    """The 1-D string tensor a classify/regress signature is fed (one tf.Example each)."""
    tensor = np.empty(len(serialized), dtype=object)
    tensor[:] = list(serialized)
    return tensor


def record_examples(metrics, model_name: str, count: int) -> None:
    if metrics is not None:
        metrics.example_counts.observe(count, model_name)
        metrics.example_count_total.inc(model_name, by=count)


def _dt_name(array: np.ndarray) -> str:
    """TensorFlow's DataType name of an output array (DT_FLOAT, DT_STRING, ...)."""
    name = array.dtype.name
    return "DT_" + {"float32": "FLOAT", "float64": "DOUBLE", "float16": "HALF",
                    "object": "STRING", "bytes": "STRING"}.get(name, name.upper())


def _shape_text(array: np.ndarray) -> str:
    """A shape as TensorShape::DebugString prints it: [2,3]."""
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def classification_outputs(outputs: dict, count: int):
    """TF Serving's PostProcessClassificationResult checks, in its order and words."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, value, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if value is None:
            continue
        if value.ndim != 2:
            raise invalid(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(value)}"
            )
        if _dt_name(value) != dtype:
            raise invalid(f"Expected {name} Tensor of {dtype}. Got: {_dt_name(value)}")
        if value.shape[0] != count:
            raise invalid(
                f"Expected {name} output batch size of {count}. Got: {value.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    return classes, scores


def regression_outputs(outputs: dict, count: int) -> np.ndarray:
    """TF Serving's PostProcessRegressionResult checks, in its order and words."""
    values = outputs["outputs"]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape_text(values)}"
        )
    if values.shape[0] != count:
        raise invalid(
            f"Input batch size did not match output batch size: {count} vs. {values.shape[0]}"
        )
    if _dt_name(values) != "DT_FLOAT":
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dt_name(values)}")
    return values.reshape(count)
