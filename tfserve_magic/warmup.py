"""Write TF Serving warm-up records from notebook data: ``tfm.write_warmup(version_dir, X)``.

TF Serving (and this server) replays ``<version>/assets.extra/tf_serving_warmup_requests``
before a version serves: a TFRecord file of ``tensorflow.serving.PredictionLog`` records, each a
``predict_log.request`` (a ``PredictRequest`` with ``model_spec.signature_name`` and its inputs
as ``TensorProto``). The inputs are converted to the dtypes the version's signature declares and
checked against its shapes here, so a file written by this function replays without error.
Export layer: imports TensorFlow (lazily), never IPython or the server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REQUESTS_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving refuses to load a version with more


class WarmupError(ValueError):
    """Warm-up data that does not fit the version's signature; the message says why."""


def write_warmup(
    version_dir,
    X: Any,
    *,
    signature: str | None = "serving_default",
    n: int = 10,
    batch_size: int = 1,
    model_name: str = "",
    tags: tuple = ("serve",),
) -> Path:
    """Write up to ``n`` warm-up requests of ``batch_size`` rows of ``X`` for ``signature``.

    ``X``: an array (one-input signatures) or ``{input name: array}``; with ``signature=None``,
    ``{signature name: such data}`` writes records for each listed signature. Rows are taken
    from the start of ``X``. Replaces an existing file; returns its path.
    """
    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").exists():
        raise WarmupError(f"{version_dir} is not a SavedModel version folder (no saved_model.pb)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise WarmupError(f"n must be a positive integer, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WarmupError(f"batch_size must be a positive integer, got {batch_size!r}")
    defs = _signature_defs(version_dir, tags)
    if signature is None:
        if not isinstance(X, dict) or not X:
            raise WarmupError("with signature=None, X must be {signature name: inputs}")
        per_signature = dict(X)
    else:
        per_signature = {signature: X}
    records = []
    for name, data in per_signature.items():
        if name not in defs:
            raise WarmupError(f"signature {name!r} not found; the version has {sorted(defs)}")
        records += _requests(name, defs[name], data, n, batch_size, model_name)
    if len(records) > MAX_RECORDS:
        raise WarmupError(f"{len(records)} warm-up records: TF Serving loads at most "
                          f"{MAX_RECORDS}; pass a smaller n")
    return _write(version_dir / REQUESTS_FILE, records)


def write_export_warmup(version_dir, warmup, *, n: int = 10) -> Path:
    """``export_model(..., warmup=X)``: the exporter's call after writing a version.

    ``X`` is data for ``serving_default``, or ``{signature name: data}`` when every key names
    one of the version's signatures and not all of them are ``serving_default``'s inputs.
    """
    if isinstance(warmup, dict) and warmup:
        defs = _signature_defs(Path(version_dir), ("serve",))
        default_inputs = set(defs["serving_default"].inputs) if "serving_default" in defs else set()
        keys = {str(k) for k in warmup}
        if keys <= set(defs) and not keys <= default_inputs:
            return write_warmup(version_dir, warmup, signature=None, n=n)
    return write_warmup(version_dir, warmup, n=n)


def _signature_defs(version_dir: Path, tags) -> dict:
    from tensorflow.python.saved_model import loader_impl

    saved_model = loader_impl.parse_saved_model(str(version_dir))
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return dict(meta_graph.signature_def)
    raise WarmupError(f"{version_dir} has no MetaGraphDef tagged {sorted(tags)}")


def _inputs_by_name(signature_def, data) -> dict:
    expected = sorted(signature_def.inputs)
    if isinstance(data, dict):
        given = {str(k): v for k, v in data.items()}
    elif len(expected) == 1:
        given = {expected[0]: data}
    else:
        raise WarmupError(f"the signature takes {len(expected)} inputs {expected}: pass X as "
                          "{input name: array}")
    if sorted(given) != expected:
        raise WarmupError(f"the signature's inputs are {expected}, X has {sorted(given)}")
    return given


def _requests(sig_name: str, signature_def, data, n: int, batch_size: int, model_name: str):
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    arrays = {}
    for name, value in _inputs_by_name(signature_def, data).items():
        info = signature_def.inputs[name]
        dtype = tf.dtypes.as_dtype(info.dtype)
        try:
            array = np.asarray(value, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
        except (TypeError, ValueError) as exc:
            raise WarmupError(f"input {name!r} cannot be {dtype.name}: {exc}") from None
        _check_shape(name, array, info.tensor_shape)
        arrays[name] = array
    rows = min(len(a) for a in arrays.values())
    if rows == 0:
        raise WarmupError(f"X holds no rows for signature {sig_name!r}")
    records = []
    for start in range(0, min(rows, n * batch_size), batch_size):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = sig_name
        for name, array in arrays.items():
            dtype = tf.dtypes.as_dtype(signature_def.inputs[name].dtype)
            request.inputs[name].CopyFrom(
                tf.make_tensor_proto(array[start:start + batch_size], dtype=dtype))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def _check_shape(name: str, array, shape) -> None:
    if shape.unknown_rank:
        if array.ndim == 0:
            raise WarmupError(f"input {name!r} needs a batch dimension (rows first)")
        return
    dims = [d.size for d in shape.dim]
    if not dims:
        raise WarmupError(f"input {name!r} is a scalar: warm-up rows cannot be batched")
    if array.ndim != len(dims) or any(want >= 0 and want != got
                                      for want, got in zip(dims[1:], array.shape[1:])):
        wanted = "[" + ", ".join("None" if d < 0 else str(d) for d in dims) + "]"
        raise WarmupError(f"input {name!r} has shape {list(array.shape)}; the signature takes "
                          f"{wanted} (rows first)")


def _write(path: Path, records: list[bytes]) -> Path:
    import tensorflow as tf

    from tfserve_magic.server.process import atomic_target

    with atomic_target(path, mode=None) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in records:
            writer.write(record)
    return path
