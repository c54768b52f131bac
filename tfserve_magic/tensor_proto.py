"""numpy <-> ``tensorflow.TensorProto`` with TensorFlow's own rules, without importing TensorFlow.

Shared by the gRPC server (decoding requests, encoding responses as TF Serving does) and the gRPC
client (the reverse). Decoding follows ``Tensor::FromProto``: the element count comes from
``tensor_shape`` alone (no shape = a scalar); a non-empty ``tensor_content`` wins and is read
with ``np.frombuffer`` (no copy, no per-element Python work); otherwise the typed ``*_val``
field is converted in C by numpy, a short list repeats its last value, a long one is cut, an
empty one gives zeros. Encoding follows ``AsProtoField``: every element in the typed field and
an empty ``tensor_content`` (the official example clients read ``float_val`` directly); the
client encodes requests with ``tensor_content`` instead, as ``tf.make_tensor_proto`` does.
"""

from __future__ import annotations

import numpy as np

from tfserve_magic import _protos

try:  # TensorFlow's own bfloat16 type, a small package TensorFlow depends on
    from ml_dtypes import bfloat16 as _BFLOAT16
except ImportError:  # pragma: no cover - without it DT_BFLOAT16 is refused
    _BFLOAT16 = None

_types = _protos.load("tensorflow.core.framework.types_pb2")
_tensor = _protos.load("tensorflow.core.framework.tensor_pb2")
TensorProto = _tensor.TensorProto

# DataType -> (numpy dtype, typed field, TF's short type name)
_BY_DT: dict[int, tuple] = {
    _types.DT_FLOAT: (np.dtype(np.float32), "float_val", "float"),
    _types.DT_DOUBLE: (np.dtype(np.float64), "double_val", "double"),
    _types.DT_INT32: (np.dtype(np.int32), "int_val", "int32"),
    _types.DT_INT16: (np.dtype(np.int16), "int_val", "int16"),
    _types.DT_INT8: (np.dtype(np.int8), "int_val", "int8"),
    _types.DT_UINT8: (np.dtype(np.uint8), "int_val", "uint8"),
    _types.DT_UINT16: (np.dtype(np.uint16), "int_val", "uint16"),
    _types.DT_INT64: (np.dtype(np.int64), "int64_val", "int64"),
    _types.DT_UINT32: (np.dtype(np.uint32), "uint32_val", "uint32"),
    _types.DT_UINT64: (np.dtype(np.uint64), "uint64_val", "uint64"),
    _types.DT_BOOL: (np.dtype(np.bool_), "bool_val", "bool"),
    _types.DT_STRING: (np.dtype(object), "string_val", "string"),
    _types.DT_HALF: (np.dtype(np.float16), "half_val", "half"),
    _types.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val", "complex64"),
    _types.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val", "complex128"),
}
if _BFLOAT16 is not None:
    _BY_DT[_types.DT_BFLOAT16] = (np.dtype(_BFLOAT16), "half_val", "bfloat16")

_DT_BY_NUMPY = {info[0]: dt for dt, info in _BY_DT.items() if dt != _types.DT_STRING}


class TensorProtoError(ValueError):
    """The proto cannot become a tensor (``Tensor::FromProto`` would fail)."""


def dtype_enum(dtype) -> int:
    """The DataType enum of a numpy dtype (object/bytes/str arrays are DT_STRING)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return _types.DT_STRING
    try:
        return _DT_BY_NUMPY[dtype]
    except KeyError:
        raise TensorProtoError(f"No TensorFlow dtype for numpy dtype {dtype}") from None


def tf_type_name(dtype) -> str:
    """TensorFlow's short name of a numpy dtype or "string" (``float``, ``int32`` ...)."""
    if isinstance(dtype, str):
        return dtype
    return _BY_DT[dtype_enum(dtype)][2]


def dtype_name(enum: int) -> str:
    """``DT_FLOAT`` for the enum value; the number itself when unknown."""
    try:
        return _types.DataType.Name(enum)
    except ValueError:
        return str(enum)


def to_numpy(proto) -> np.ndarray:
    """Decode a TensorProto exactly as ``Tensor::FromProto`` would, or raise TensorProtoError."""
    info = _BY_DT.get(proto.dtype)
    if info is None:
        raise TensorProtoError(f"unsupported dtype {dtype_name(proto.dtype)}")
    dtype, field, _ = info
    shape_proto = proto.tensor_shape
    if shape_proto.unknown_rank:
        raise TensorProtoError("unknown rank")
    shape = tuple(d.size for d in shape_proto.dim)
    if any(d < 0 for d in shape):
        raise TensorProtoError("negative dimension")
    count = 1
    for d in shape:
        count *= d
    content = proto.tensor_content
    if content and field != "string_val":
        if len(content) != count * dtype.itemsize:
            raise TensorProtoError("tensor_content has the wrong length")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    if field == "string_val":
        array = np.empty(count, dtype=object)
        n = len(values)
        if n >= count:
            array[:] = list(values[:count]) if n > count else list(values)
        elif n:
            array[:n] = list(values)
            array[n:] = values[n - 1]
        else:
            array[:] = b""
        return array.reshape(shape)
    per_element = 2 if field in ("scomplex_val", "dcomplex_val") else 1
    n = len(values) // per_element
    if n == 0 or count == 0:
        return np.zeros(shape, dtype=dtype)
    if field == "half_val":
        raw = np.fromiter(values, dtype=np.int64, count=len(values)).astype(np.uint16)
        flat = raw.view(dtype)
    elif per_element == 2:
        real = np.float32 if field == "scomplex_val" else np.float64
        flat = np.fromiter(values, dtype=real, count=len(values))[: 2 * n].view(dtype)
    elif dtype.kind in "iu" and dtype.itemsize < 4:  # int_val holds int32s: wrap like a C cast
        flat = np.fromiter(values, dtype=np.int64, count=n).astype(dtype)
    else:
        flat = np.fromiter(values, dtype=dtype, count=n)
    if n >= count:
        flat = flat[:count]
    else:
        flat = np.concatenate([flat, np.full(count - n, flat[-1], dtype=dtype)])
    return flat.reshape(shape)


def fill(proto, array, *, content: bool = False):
    """Write ``array`` into ``proto`` (a TensorProto, e.g. ``response.outputs["y"]``).

    ``content=False`` is TF Serving's response form (typed fields); ``content=True`` is
    ``tf.make_tensor_proto``'s request form (raw bytes in ``tensor_content``; strings stay in
    ``string_val``).
    """
    array = np.asarray(array)
    enum = dtype_enum(array.dtype)
    proto.dtype = enum
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    dtype, field, _ = _BY_DT[enum]
    if field == "string_val":
        flat = array.ravel()
        if array.dtype.kind == "U" or (flat.size and isinstance(flat[0], str)):
            proto.string_val.extend(
                [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in flat.tolist()]
            )
        else:
            proto.string_val.extend(flat.tolist())
        return proto
    if array.dtype != dtype:
        array = array.astype(dtype)
    if content:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
        return proto
    flat = array.ravel()
    if field == "half_val":
        getattr(proto, field).extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif field in ("scomplex_val", "dcomplex_val"):
        real = np.float32 if field == "scomplex_val" else np.float64
        getattr(proto, field).extend(flat.view(real).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def from_numpy(array, *, content: bool = False):
    """A new TensorProto holding ``array`` (see ``fill``)."""
    return fill(TensorProto(), array, content=content)
