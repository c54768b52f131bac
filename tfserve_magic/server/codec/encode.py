"""Output tensors -> response bodies: predict (row/columnar), classify, regress and errors."""

from __future__ import annotations

import base64

import numpy as np

from tfserve_magic.server._rapidjson import as_bytes, escape_json_bytes
from tfserve_magic.server.codec.dtypes import tf_dtype_name
from tfserve_magic.server.codec.errors import CodecError
from tfserve_magic.server.codec.floats import _format_floats


def _raw(value) -> bytes:
    """A string tensor element's bytes (TF gives bytes; str is accepted as UTF-8)."""
    return bytes(value) if isinstance(value, (bytes, np.bytes_)) else as_bytes(str(value))


def _json_string(value) -> str:
    """A string tensor element as RapidJSON writes it (raw bytes, escaped)."""
    return escape_json_bytes(_raw(value)).decode("utf-8", "surrogateescape")


def _leaf_texts(arr: np.ndarray, name: str) -> list:
    """JSON texts of every element of `arr`, in C order (AddSingleValueAndAdvance)."""
    kind = arr.dtype.kind
    if arr.dtype in (np.float32, np.float64):
        return _format_floats(arr)
    if kind == "b":
        return ["true" if v else "false" for v in arr.ravel().tolist()]
    if kind in "iu" and arr.dtype.name != "uint16":  # TF Serving has no case for uint16
        return [str(v) for v in arr.ravel().tolist()]
    if kind in "SU" or (kind == "O" and _all_strings(arr)):
        if name.endswith("_bytes"):
            return [
                '{"b64":"' + base64.b64encode(_raw(v)).decode("ascii") + '"}'
                for v in arr.ravel().tolist()
            ]
        return [_json_string(v) for v in arr.ravel().tolist()]
    raise CodecError(f"Failed to write JSON value for tensor type: {tf_dtype_name(arr.dtype)}")


def _all_strings(arr: np.ndarray) -> bool:
    return all(isinstance(v, (bytes, np.bytes_, str)) for v in arr.ravel().tolist())


def _nest(texts: list, shape: tuple, levels: int) -> list:
    """Group flat texts into JSON arrays for the innermost `levels` dims (no zero dims)."""
    items = texts
    for dim in reversed(shape[len(shape) - levels :]):
        items = ["[" + ",".join(items[i : i + dim]) + "]" for i in range(0, len(items), dim)]
    return items


def _nest_empty(shape: tuple, levels: int) -> list:
    """Like _nest for a tensor with a zero-sized dim (no leaves at all)."""
    outer = shape[: len(shape) - levels]
    inner = shape[len(shape) - levels :]

    def text(dims):
        if not dims:
            return ""  # unreachable: a zero dim exists in `inner`
        if dims[0] == 0:
            return "[]"
        return "[" + ",".join([text(dims[1:])] * dims[0]) + "]"

    count = 1
    for d in outer:
        count *= d
    return [text(inner)] * count


def _tensor_text(arr: np.ndarray, name: str) -> str:
    shape = arr.shape
    if arr.size == 0:
        return _nest_empty(shape, len(shape))[0] if shape else "[]"
    texts = _leaf_texts(arr, name)
    return _nest(texts, shape, len(shape))[0]


def _item_texts(arr: np.ndarray, name: str) -> list:
    """Per-batch-item texts (row format): dims 1.. grouped, dim 0 left as the list."""
    shape = arr.shape
    if arr.size == 0:
        return _nest_empty(shape, len(shape) - 1) if shape[0] else []
    return _nest(_leaf_texts(arr, name), shape, len(shape) - 1)


def _key(name: str) -> str:
    return escape_json_bytes(name.encode("utf-8", "surrogateescape")).decode(
        "utf-8", "surrogateescape"
    )


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def encode_predict(outputs: dict, row: bool) -> bytes:
    """Step 7: `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar)."""
    if not outputs:
        raise CodecError("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    if row:
        batch = -1
        for name in names:
            arr = arrays[name]
            if arr.ndim == 0:
                raise CodecError(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and arr.shape[0] != batch:
                raise CodecError(
                    f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} "
                    f"expecting: {batch}"
                )
            batch = arr.shape[0]
        if len(names) == 1:
            items = _item_texts(arrays[names[0]], names[0])
        else:
            per_output = [(_key(n), _item_texts(arrays[n], n)) for n in names]
            items = [
                "{" + ",".join(f"{key}:{texts[i]}" for key, texts in per_output) + "}"
                for i in range(batch)
            ]
        return _encode('{"predictions":[' + ",".join(items) + "]}")
    if len(names) == 1:
        return _encode('{"outputs":' + _tensor_text(arrays[names[0]], names[0]) + "}")
    body = ",".join(f"{_key(n)}:{_tensor_text(arrays[n], n)}" for n in names)
    return _encode('{"outputs":{' + body + "}}")


def encode_classify(classes, scores) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`; a missing output gives "" / 0.0."""
    if classes is None and scores is None:
        raise CodecError("Cannot convert empty ClassificationResults to JSON")
    ref = np.asarray(classes if classes is not None else scores)
    if ref.ndim == 1:
        ref = ref.reshape(-1, 1)
    batch, k = ref.shape[0], (ref.shape[1] if ref.ndim > 1 else 1)
    if batch == 0:
        raise CodecError("Cannot convert empty ClassificationResults to JSON")
    if classes is not None:
        labels = np.asarray(classes, dtype=object).reshape(batch, -1)
        label_texts = [[_json_string(v) for v in row] for row in labels.tolist()]
    else:
        label_texts = [['""'] * k for _ in range(batch)]
    if scores is not None:
        score_arr = np.asarray(scores, dtype=np.float32).reshape(batch, -1)
        score_texts = np.array(_format_floats(score_arr), dtype=object).reshape(score_arr.shape)
        score_texts = score_texts.tolist()
    else:
        score_texts = [["0.0"] * len(row) for row in label_texts]
    rows = []
    for labels_row, scores_row in zip(label_texts, score_texts):
        if len(labels_row) != len(scores_row):
            raise CodecError(
                f"Classes and scores disagree: {len(labels_row)} labels but "
                f"{len(scores_row)} scores per example"
            )
        rows.append("[" + ",".join(f"[{lab},{sc}]" for lab, sc in zip(labels_row, scores_row))
                    + "]")
    return _encode('{"results":[' + ",".join(rows) + "]}")


def encode_regress(values) -> bytes:
    """`{"results": [v0, v1, ...]}` from a [batch] or [batch, 1] output."""
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.size == 0:
        raise CodecError("Cannot convert empty RegressionResults to JSON")
    return _encode('{"results":[' + ",".join(_format_floats(arr)) + "]}")


def encode_error(message: str) -> bytes:
    """`{"error": message}` (the message is written byte for byte, JSON-escaped)."""
    return b'{"error":' + escape_json_bytes(_encode(str(message))) + b"}"
