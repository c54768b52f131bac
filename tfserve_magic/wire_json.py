"""TF Serving's REST JSON on the wire: ``encode_json`` (numpy-aware, NaN/Infinity as bare
tokens, bytes as ``{"b64": ...}``), ``decode_json`` and ``to_array`` (a JSON tensor as numpy).

Used by the REST client and the ``%%predict`` view; orjson does the work, the token splicing
covers what orjson cannot write.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping

import numpy as np
import orjson

from tfserve_magic.results import Prediction

__all__ = ["encode_json", "decode_json", "to_array", "is_b64"]

def _json_default(obj):
    """orjson's fallback: bytes as TF Serving's b64 objects, odd arrays and tensors as lists."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "OSUV":
            return obj.tolist()
        return np.ascontiguousarray(obj)  # orjson needs C order; this also unwraps subclasses
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Prediction):
        return obj.outputs
    if hasattr(obj, "__array__"):  # tf.Tensor, jax/torch arrays
        return np.asarray(obj)
    raise TypeError(f"cannot send a value of type {type(obj).__name__} as JSON")


_TOKENS = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}


def _token(value: float) -> bytes:
    return _TOKENS["nan" if value != value else ("inf" if value > 0 else "-inf")]


def _array_with_tokens(array: np.ndarray) -> orjson.Fragment:
    """A float array holding NaN/Inf, encoded by orjson with TF Serving's tokens spliced in.

    Each kind of non-finite value is replaced by a finite sentinel the array does not hold;
    in orjson's compact output every number sits between ``[``/``,`` and ``,``/``]``, so the
    sentinel's text is replaced exactly.
    """
    array = np.ascontiguousarray(array)
    finite = np.isfinite(array)
    top = np.finfo(array.dtype).max
    values = array[finite]
    sentinels = []
    for k in range(64):  # the largest magnitudes: almost never in real data
        candidate = top / 2.0**k
        if not ((values == candidate) | (values == -candidate)).any():
            sentinels.append(candidate)
            if len(sentinels) == 3:
                break
    patched = array.copy()
    replacements = []
    for kind, sentinel in zip(("nan", "inf", "-inf"), sentinels):
        mask = np.isnan(array) if kind == "nan" else array == float(kind)
        if mask.any():
            patched[mask] = sentinel
            text = orjson.dumps(np.array([sentinel], dtype=array.dtype), option=_NUMPY)[1:-1]
            replacements.append((text, _TOKENS[kind]))
    data = orjson.dumps(patched, option=_NUMPY)
    for text, token in replacements:
        data = re.sub(rb"(?<=[\[,])" + re.escape(text) + rb"(?=[\],])", token, data)
    return orjson.Fragment(data)


def _with_tokens(obj):
    """The body with every non-finite float turned into an orjson Fragment of its token."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else orjson.Fragment(_token(obj))
    if isinstance(obj, Mapping):
        return {k: _with_tokens(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_with_tokens(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f" and obj.ndim and not np.isfinite(obj).all():
            return _array_with_tokens(obj)
        if obj.dtype.kind == "O":
            return _with_tokens(obj.tolist())
        return _with_tokens(obj.item()) if obj.ndim == 0 and obj.dtype.kind == "f" else obj
    if isinstance(obj, np.floating):
        return obj if np.isfinite(obj) else orjson.Fragment(_token(float(obj)))
    if isinstance(obj, Prediction):
        return _with_tokens(obj.outputs)
    if hasattr(obj, "__array__") and not isinstance(obj, np.generic):
        return _with_tokens(np.asarray(obj))
    return obj


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def encode_json(body) -> bytes:
    """Encode a request body; NaN and ±Infinity are written as TF Serving's bare tokens.

    orjson (fast, numpy-aware) writes ``null`` for non-finite floats, which TF Serving rejects,
    so a body whose encoding holds ``null`` is encoded again with those values spliced in as
    ``NaN``/``Infinity``/``-Infinity`` (a real None stays ``null``).
    """
    try:
        data = orjson.dumps(body, option=_NUMPY, default=_json_default)
        if b"null" in data:
            data = orjson.dumps(_with_tokens(body), option=_NUMPY, default=_json_default)
    except orjson.JSONEncodeError as exc:  # our default's message says which value
        raise TypeError(str(exc.__cause__ or exc)) from None
    return data


def decode_json(data: bytes):
    """Parse a response; TF Serving writes non-finite floats as bare NaN/Infinity tokens."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", errors="replace"))


def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _first_leaf(value):
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _decode_b64(value):
    if is_b64(value):
        return base64.b64decode(value["b64"])
    return [_decode_b64(v) for v in value] if isinstance(value, list) else value


def to_array(value, dtype: str | None = None) -> np.ndarray:
    """A JSON tensor as numpy: ``{"b64": ...}`` leaves become bytes, numbers take ``dtype``."""
    if is_b64(_first_leaf(value)):
        decoded = _decode_b64(value)
        array = np.empty(np.shape(decoded) if isinstance(decoded, list) else (), dtype=object)
        array[...] = decoded
        return array
    try:
        array = np.asarray(value)
    except ValueError:  # ragged: keep the lists
        array = np.empty(len(value), dtype=object)
        array[:] = value
        return array
    if dtype and dtype not in ("string", "bfloat16") and array.dtype.kind in "fiub":
        try:
            array = array.astype(dtype, copy=False)
        except TypeError:
            pass
    return array


