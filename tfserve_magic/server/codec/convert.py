"""One JSON value -> one tensor, following json_tensor.cc's FillTensorProto.

numpy's own list conversion is used where it provably gives the same tensor; otherwise the value
is walked in document order so the first error TF Serving would report is the one raised.
"""

from __future__ import annotations

import math

import numpy as np
import orjson

from tfserve_magic.server._rapidjson import JObj, as_bytes, debug_string, json_type_name
from tfserve_magic.server.codec.b64 import _decode_b64_object
from tfserve_magic.server.codec.dtypes import _DType
from tfserve_magic.server.codec.errors import CodecError, _Reparse, _Status
from tfserve_magic.server.codec.parse import _NEG_INF, _POS_INF

# numpy's limit on dimensions (TF allows 254; such tensors cannot be built here).
MAX_DIMS = 64
# Above this, values are checked for strings before np.array converts them (see _fast_convert).
_LARGE_BODY_BYTES = 1 << 20


class _Context:
    """What the converters need to know about the document's origin."""

    __slots__ = ("from_json_tier", "_body", "_bools", "large")

    def __init__(self, path: str, body: bytes):
        self.from_json_tier = path != "exact"  # json/orjson: an inf may be an overflow
        self._body = body
        self._bools = None
        self.large = len(body) > _LARGE_BODY_BYTES

    @property
    def may_have_bools(self) -> bool:
        """Whether `true`/`false` occur anywhere (searched once, only when asked)."""
        if self._bools is None:
            self._bools = b"true" in self._body or b"false" in self._body
        return self._bools


def _dense_shape(val) -> list:
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _shape_str(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _convert(val, info: _DType, ctx: _Context) -> np.ndarray:
    """One whole tensor (columnar value): fast when plain, else the exact walk."""
    tensor = _fast_convert(val, info, ctx)
    if tensor is not None:
        return tensor
    shape = _dense_shape(val)
    return _build(_fill_exact(val, shape, info, ctx), tuple(shape), info)


def _fast_convert(val, info: _DType, ctx: _Context) -> np.ndarray | None:
    """numpy's own list conversion when it provably matches the exact walk, else None."""
    if info.kind not in ("float", "int", "bool") or not isinstance(val, list):
        return None
    if info.kind != "bool" and ctx.may_have_bools:
        return None  # np.array would quietly turn true/false into numbers
    if ctx.large and not _only_numbers(val):
        return None  # np.array would build a string array first: seconds, holding the GIL
    try:
        arr = np.array(val)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.shape != tuple(_dense_shape(val)):
        return None
    if info.kind == "bool":
        return arr if arr.dtype == np.bool_ else None
    if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and info.kind == "int"):
        return None
    if arr.dtype.kind == "f":
        if ctx.from_json_tier and arr.size and not np.isfinite(arr).all():
            if _has_overflow(val):
                raise _Reparse()
        with np.errstate(over="ignore", invalid="ignore"):
            return arr.astype(info.np)
    if info.kind == "int":
        if arr.size and (int(arr.min()) < info.lo or int(arr.max()) > info.hi):
            return None
        return arr.astype(info.np)
    with np.errstate(over="ignore"):
        return arr.astype(np.float64).astype(info.np)  # RapidJSON: int -> double -> float


def _only_numbers(val) -> bool:
    """Whether a nest holds nothing but numbers (and bools): one C pass through orjson."""
    try:
        return b'"' not in orjson.dumps(val)
    except (TypeError, orjson.JSONEncodeError):  # bytes, JObj, integers beyond 64 bits
        return False


def _has_overflow(val) -> bool:
    """True if a float infinity came from an overflowing literal (json tier), not "Infinity"."""
    stack = [val]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif type(v) is float and math.isinf(v) and v is not _POS_INF and v is not _NEG_INF:
            return True
    return False


def _fill_exact(val, shape: list, info: _DType, ctx: _Context) -> list:
    """FillTensorProto: walk in document order, raising the first _Status TF would."""
    rank = len(shape)
    out = []
    leaf = _leaf_converter(info, ctx)

    def walk(v, level):
        if not isinstance(v, list):
            if level != rank:
                raise _Status(
                    f"JSON Value: {debug_string(v)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            if isinstance(v, JObj):
                if info.kind != "string":
                    raise _type_error(v, info)
                out.append(_decode_b64_object(v))
            else:
                out.append(leaf(v))
            return
        if level >= rank:
            raise _Status(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(v) != shape[level]:
            raise _Status(
                f"Encountered list at unexpected size: {len(v)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        for x in v:
            walk(x, level + 1)

    try:
        walk(val, 0)
    except RecursionError:
        raise _Status("JSON value is nested too deeply") from None
    return out


def _type_error(v, info: _DType) -> _Status:
    return _Status(
        f"JSON Value: {debug_string(v)} Type: {json_type_name(v)} is not of expected type: "
        f"{info.tf_name}"
    )


def _leaf_converter(info: _DType, ctx: _Context):
    kind = info.kind

    def is_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if kind == "float":

        def leaf(v):
            if not is_number(v):
                raise _type_error(v, info)
            if isinstance(v, float):
                if ctx.from_json_tier and math.isinf(v) and v is not _POS_INF and v is not _NEG_INF:
                    raise _Reparse()
                return v
            try:
                return float(v)
            except OverflowError:
                raise _Reparse() from None

    elif kind == "int":
        lo, hi = info.lo, info.hi

        def leaf(v):
            if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**308:
                    raise _Reparse()
                raise _type_error(v, info)
            return v

    elif kind == "bool":

        def leaf(v):
            if not isinstance(v, bool):
                raise _type_error(v, info)
            return v

    elif kind == "string":

        def leaf(v):
            if not isinstance(v, (str, bytes)):
                raise _type_error(v, info)
            return as_bytes(v)

    else:

        def leaf(v):
            raise _Status(
                f"Conversion of JSON Value: {debug_string(v)} to type: {info.tf_name}",
                "UNIMPLEMENTED",
            )

    return leaf


def _build(flat: list, shape: tuple, info: _DType) -> np.ndarray:
    if len(shape) > MAX_DIMS:
        raise CodecError(
            f"Tensors with more than {MAX_DIMS} dimensions are not supported by this server "
            f"(got {len(shape)})"
        )
    if info.kind == "string":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    if info.np is None:
        return np.empty(shape, dtype=object)
    if info.kind == "float":
        with np.errstate(over="ignore"):
            return np.array(flat, dtype=np.float64).astype(info.np).reshape(shape)
    if info.kind == "int":
        wide = np.uint64 if info.np.name == "uint64" else np.int64
        return np.array(flat, dtype=wide).astype(info.np).reshape(shape)
    return np.array(flat, dtype=info.np).reshape(shape)
