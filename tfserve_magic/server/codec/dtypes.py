"""Signature input specs and how each dtype converts from JSON (AddValueToTensor's rules)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np


class InputSpec(NamedTuple):
    """One signature input: `dtype` is a numpy dtype or "string" (DT_STRING)."""

    name: str
    dtype: Any
    shape: Optional[tuple] = None


_TF_NAMES = {
    "float32": "float",
    "float64": "double",
    "float16": "half",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "complex64": "complex64",
    "complex128": "complex128",
}
# JSON -> tensor support (AddValueToTensor): kind and accepted integer range.
_INT_RANGE = {
    "int8": (-(2**31), 2**31 - 1),
    "int16": (-(2**31), 2**31 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint8": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


class _DType:
    """How one signature dtype converts: kind in float/int/bool/string/unsupported."""

    __slots__ = ("np", "tf_name", "kind", "lo", "hi")

    def __init__(self, dtype):
        self.lo = self.hi = None
        if isinstance(dtype, str) and dtype in ("string", "DT_STRING"):
            self.np, self.tf_name, self.kind = None, "string", "string"
            return
        if hasattr(dtype, "as_numpy_dtype") and hasattr(dtype, "name"):  # a tf.DType
            if dtype.name == "string":
                self.np, self.tf_name, self.kind = None, "string", "string"
                return
            dtype = dtype.as_numpy_dtype
        try:
            self.np = np.dtype(dtype)
        except TypeError:
            self.np = None
        name = self.np.name if self.np is not None else str(dtype)
        self.tf_name = _TF_NAMES.get(name, name)
        if name in ("float32", "float64"):
            self.kind = "float"
        elif name in _INT_RANGE:
            self.kind = "int"
            self.lo, self.hi = _INT_RANGE[name]
        elif name == "bool":
            self.kind = "bool"
        elif self.np is not None and self.np.kind in "SO" and name != "object":
            self.np, self.tf_name, self.kind = None, "string", "string"
        else:
            self.kind = "unsupported"


_DTYPE_INFO: dict = {}


def _dtype_info(dtype) -> _DType:
    """_DType(dtype), built once per signature dtype (decode_predict runs per request)."""
    try:
        return _DTYPE_INFO[dtype]
    except KeyError:
        info = _DTYPE_INFO[dtype] = _DType(dtype)
        return info
    except TypeError:  # unhashable: build it every time
        return _DType(dtype)


def tf_dtype_name(dtype) -> str:
    """TF's DataTypeString for a numpy dtype or "string" (e.g. float32 -> "float")."""
    return _DType(dtype).tf_name
