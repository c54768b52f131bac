"""What a request gives back, whichever protocol carried it: ``Prediction``, ``ModelMetadata``
and ``ServingError``, plus ``describe_value`` (the short text of what was sent, for hints).

Shared by the REST and gRPC clients, the ``%%predict`` view and the widgets; no transport here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["Prediction", "ModelMetadata", "ServingError", "describe_value", "TF_DTYPES"]

# TensorFlow DataType enum names (metadata) -> numpy dtype names; "string" has no numpy twin.
TF_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
    "DT_BOOL": "bool",
    "DT_STRING": "string",
    "DT_COMPLEX64": "complex64",
    "DT_COMPLEX128": "complex128",
}


class ServingError(Exception):
    """A request the server refused (``status_code``, its ``message``) or could not be reached.

    ``hint`` says what the signature expects (from the metadata call) when the message is about
    input names, dtypes or shapes; ``str(error)`` shows all of it.
    """

    def __init__(self, status_code: int | None, message: str, hint: str | None = None, url=None,
                 code: str | None = None):
        super().__init__(status_code, message, hint, url)
        self.status_code = status_code
        self.message = message
        self.hint = hint
        self.url = url
        self.code = code  # the gRPC status name (INVALID_ARGUMENT ...) for gRPC calls

    def __str__(self) -> str:
        where = f" from {self.url}" if self.url else ""
        head = f"HTTP {self.status_code}{where}" if self.status_code else f"Request failed{where}"
        if self.code is not None and self.status_code:
            head = f"gRPC {self.code}{where}"
        text = f"{head}: {self.message}"
        return f"{text}\n{self.hint}" if self.hint else text



class Prediction(NDArrayOperatorsMixin):
    """What ``Client.predict`` returns: the outputs plus how long the request took.

    It behaves like the output array (``np.asarray(p)``, ``p[0]``, ``p.argmax(1)``, ``p == y``)
    or, for a signature with several outputs, like the dict of arrays (``p["scores"]``).

    - ``outputs``: the numpy array, or dict name -> array for several outputs
    - ``latency_s``: round-trip seconds, summed over chunks; ``latencies_s`` per request
    - ``raw``: the parsed response JSON (a list of them when the batch was sent in chunks)
    - ``request_body``: what was sent: a dict holding the caller's data, or the exact bytes
    - ``row``: True for the row (``instances``) format, False for columnar (``inputs``)
    """

    def __init__(
        self,
        outputs,
        *,
        latency_s: float,
        latencies_s: Sequence[float] = (),
        raw=None,
        request_body=None,
        url: str | None = None,
        row: bool = True,
    ):
        self.outputs = outputs
        self.latency_s = latency_s
        self.latencies_s = list(latencies_s) or [latency_s]
        self.raw = raw
        self.request_body = request_body
        self.url = url
        self.row = row

    @property
    def n_requests(self) -> int:
        return len(self.latencies_s)

    def _array(self) -> np.ndarray:
        if isinstance(self.outputs, dict):
            names = ", ".join(self.outputs)
            first = next(iter(self.outputs))
            raise TypeError(f"this signature has several outputs ({names}): pick one: p[{first!r}]")
        return self.outputs

    def __array__(self, dtype=None, copy=None):
        array = self._array()
        if dtype is not None:
            return array.astype(dtype, copy=bool(copy))
        return array.copy() if copy else array

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(x._array() if isinstance(x, Prediction) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getitem__(self, key):
        return self.outputs[key]

    def __len__(self) -> int:
        return len(self.outputs)

    def __iter__(self):
        return iter(self.outputs)

    def __getattr__(self, name: str):
        # Only reached for names Prediction lacks: shape, dtype, argmax, keys, items, ...
        if name.startswith("__") or "outputs" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["outputs"], name)

    def reading(self, labels=None, *, task=None, class_names=None):
        """How the outputs read (task, classes, scores): ``outputs.read_outputs``, the rule
        ``%%predict`` and the widgets use."""
        from tfserve_magic.outputs import read_outputs

        return read_outputs(self.outputs, labels, task=task, class_names=class_names)

    def metrics(self, labels, task=None, threshold: float = 0.5, **options):
        """The numbers that fit the task against the true ``labels``: accuracy and the
        per-class table, P/R/F1 at ``threshold`` for binary, MAE/RMSE/R² for regressions,
        per-label scores for multi-label (``scoring.metrics``)."""
        from tfserve_magic.scoring import metrics

        return metrics(self, labels, task, threshold, **options)

    def __repr__(self) -> str:
        requests_text = f", {self.n_requests} requests" if self.n_requests > 1 else ""
        head = f"Prediction({self.latency_s * 1000:.1f} ms{requests_text})"
        if isinstance(self.outputs, dict):
            parts = [f"{k}: {_summary(v)}" for k, v in self.outputs.items()]
            return head + "\n" + "\n".join(parts)
        return f"{head}\n{np.array2string(self.outputs, threshold=50, edgeitems=3)}"


def _summary(value) -> str:
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    return f"{array.dtype}{list(array.shape)} {np.array2string(array, threshold=20, edgeitems=2)}"


def _shape_text(shape) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


class ModelMetadata(dict):
    """Signature name -> ``{"inputs": {name: (dtype, shape)}, "outputs": {...}, "method_name"}``.

    Dtypes are numpy names ("float32", "string"); shapes are tuples with None for unknown
    dimensions, or None for unknown rank. ``raw`` holds the server's JSON, ``version`` the
    version that answered.
    """

    def __init__(self, raw: dict):
        super().__init__()
        self.raw = raw
        spec = raw.get("model_spec") or {}
        self.model_name = spec.get("name")
        self.version = int(spec["version"]) if str(spec.get("version", "")).isdigit() else None
        defs = ((raw.get("metadata") or {}).get("signature_def") or {}).get("signature_def") or {}
        for name, sig in sorted(defs.items()):
            if name.startswith("__"):  # __saved_model_init_op is no signature a client can call
                continue
            self[name] = {
                "inputs": _tensor_infos(sig.get("inputs")),
                "outputs": _tensor_infos(sig.get("outputs")),
                "method_name": sig.get("method_name", ""),
            }

    def describe(self, signature_name: str | None = None) -> str:
        """One line per tensor, e.g. ``inputs: images float32[-1,28,28,1]``."""
        name = signature_name or "serving_default"
        sig = self[name]

        def tensors(group):
            return ", ".join(f"{k} {d}{_shape_text(s)}" for k, (d, s) in sig[group].items())

        inputs, outputs = tensors("inputs"), tensors("outputs")
        return f"signature {name!r} expects inputs: {inputs}; outputs: {outputs}"

    def __repr__(self) -> str:
        lines = [f"ModelMetadata({self.model_name!r}, version {self.version})"]
        lines += [f"  {self.describe(name)}" for name in self]
        return "\n".join(lines)


def _tensor_infos(infos: dict | None) -> dict[str, tuple[str, tuple | None]]:
    return {name: _tensor_info(info) for name, info in sorted((infos or {}).items())}


def _tensor_info(info: dict) -> tuple[str, tuple | None]:
    dtype = TF_DTYPES.get(info.get("dtype", ""), str(info.get("dtype", "")).lower())
    shape_info = info.get("tensor_shape") or {}
    if shape_info.get("unknown_rank"):
        return dtype, None
    dims = tuple(int(d.get("size", -1)) for d in shape_info.get("dim") or [])
    return dtype, tuple(None if d < 0 else d for d in dims)


def describe_value(value) -> str:
    """What was sent, e.g. ``float64[2,784]`` or ``list[3] of int``."""
    if isinstance(value, np.ndarray):
        kind = {"U": "str", "S": "bytes"}.get(value.dtype.kind, str(value.dtype))
        return f"{kind}{_shape_text(value.shape)}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {describe_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        shape, inner, row = [], value, value
        while isinstance(inner, (list, tuple)) and inner:
            shape.append(len(inner))
            row, inner = inner, inner[0]
        # the innermost row's element types: a stray string among numbers shows as "int, str"
        leaves = [inner] if row is value and not value else list(row[:100])
        names = dict.fromkeys(
            "dict" if isinstance(v, Mapping) else type(v).__name__ for v in leaves
        )
        return f"list{_shape_text(shape)} of {', '.join(names)}"
    if hasattr(value, "__array__"):
        return describe_value(np.asarray(value))
    return type(value).__name__


