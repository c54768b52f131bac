"""JSON <-> numpy for predict/classify/regress, with TF Serving's rules, messages and floats.

The contract is docs/contracts.md ("Codec") and the reference's sections 1.2, 2 and 3. Parsing
has four tiers, fastest first, and each one only answers when it is sure to agree with TF
Serving's RapidJSON:

1. `_fastjson`: plain numeric bodies, scanned as bytes with numpy (no Python floats).
2. orjson, for strict JSON with a single object (where duplicate keys can be ruled out).
3. The stdlib ``json`` C scanner with first-wins objects and NaN/Infinity constants.
4. `_rapidjson.parse`: an exact port of RapidJSON's reader (quirks, errors and offsets).

Tensor conversion follows ``json_tensor.cc``: the dense shape comes from the first elements,
the whole value is then walked in order so the first error TF Serving would report is the one
reported here. docs/codec.md explains the fast path and the deliberate deviations.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, NamedTuple, Optional

import numpy as np
import orjson

from tfserve_magic.server import _fastjson, simd_decode
from tfserve_magic.server._rapidjson import (
    JObj,
    JsonParseError,
    as_bytes,
    debug_string,
    escape_json_bytes,
    json_type_name,
)
from tfserve_magic.server._rapidjson import parse as exact_parse

__all__ = [
    "CodecError",
    "ExamplesBody",
    "InputSpec",
    "PredictBody",
    "decode_predict",
    "encode_classify",
    "encode_error",
    "encode_predict",
    "encode_regress",
    "format_float",
    "parse_examples",
    "parse_predict",
    "tf_dtype_name",
]


class CodecError(Exception):
    """A request/response conversion error: `.status` is the HTTP status, str(e) the message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def __reduce__(self):  # keep .status across a pickle (errors from the decode processes)
        return (type(self), (self.message, self.status))


class InputSpec(NamedTuple):
    """One signature input: `dtype` is a numpy dtype or "string" (DT_STRING)."""

    name: str
    dtype: Any
    shape: Optional[tuple] = None


class _Status(Exception):
    """An inner tensorflow::Status (code + message) before TF Serving wraps or returns it."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self):  # Status::ToString()
        return f"{self.code}: {self.message}"

    def to_codec_error(self) -> CodecError:
        return CodecError(self.message, 501 if self.code == "UNIMPLEMENTED" else 400)


class _Reparse(Exception):
    """The json tier produced something RapidJSON may refuse (overflow): ask the exact parser."""


_MISSING = object()

# -- dtypes ---------------------------------------------------------------------------------

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


# -- request bodies -------------------------------------------------------------------------


class PredictBody:
    """A parsed predict request (steps 1-2). `.path` says which tier parsed it."""

    __slots__ = ("body", "doc", "signature_name", "path", "key", "fast", "decoded_by", "simd")

    def __init__(self, body: bytes):
        self.body = body
        self.doc = None
        self.signature_name = ""
        self.path = ""  # "simd", "fast", "orjson", "json" or "exact"
        self.key = None  # fast path: "instances" or "inputs"
        self.fast = None  # fast path: a _fastjson.ListPayload or NumericPayload
        self.decoded_by = ""  # after decode_predict: "simd", "fast" or "dom"
        self.simd = None  # SIMD tier: a simd_decode.SimdBody until decode_predict


class ExamplesBody(NamedTuple):
    """A parsed classify/regress request: serialized tf.Example protos (context merged)."""

    signature_name: str
    serialized: list


_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_POS_INF = math.inf
_NEG_INF = -math.inf  # the json tier's "-Infinity" object: an overflow makes a different one
_DECODER = json.JSONDecoder(
    object_pairs_hook=JObj,
    parse_constant={"NaN": math.nan, "Infinity": _POS_INF, "-Infinity": _NEG_INF}.__getitem__,
)
_JSON_WS = " \t\n\r"


def _maybe_too_big(body: bytes) -> bool:
    """A 3+ digit positive exponent: the json module says inf where RapidJSON says "Number too
    big". False alarms only cost time; 309+ digit integers are caught when converted."""
    a = np.frombuffer(body, dtype=np.uint8)[:-4]
    at = np.flatnonzero((a | 32) == 101)  # 'e' or 'E'
    if not len(at):
        return False
    full = np.frombuffer(body, dtype=np.uint8)
    first = at + 1 + (full[at + 1] == 43)
    digits = [(full[first + k] - np.uint8(48)) < 10 for k in range(3)]
    return bool((digits[0] & digits[1] & digits[2]).any())


# Deeper documents are refused before any tier parses them: a valid request is at most about
# 257 levels deep (TensorShape's 254 dimensions, the batch list, the object, a b64 object), and
# the exact tier (pure Python) would otherwise spend seconds on megabytes of "[[[[".
MAX_DEPTH = 300
# numpy's limit on dimensions (TF allows 254; such tensors cannot be built here).
MAX_DIMS = 64
_STRUCTURE_ONLY = bytes(c for c in range(256) if c not in b'[]{}"')  # bytes.translate's delete
_STRUCTURAL = np.frombuffer(b'[]{}"', dtype=np.uint8)
_DEPTH_CHUNK = 1 << 20
# Above this, values are checked for strings before np.array converts them (see _fast_convert).
_LARGE_BODY_BYTES = 1 << 20


def _check_depth(body: bytes) -> None:
    """Raise CodecError if `body` nests arrays/objects deeper than MAX_DEPTH (strings ignored).

    ``bytes.translate`` keeps only brackets and quotes (one C pass); numpy does the rest.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return
    text = body
    if b"\\" in text:  # neutralise escapes so only real string delimiters stay quotes
        text = text.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    depth, in_string = 0, 0
    for start in range(0, len(text), _DEPTH_CHUNK):  # 1 MiB at a time: early exit, small arrays
        piece = text[start:start + _DEPTH_CHUNK]
        kept = np.frombuffer(piece.translate(None, _STRUCTURE_ONLY), dtype=np.uint8)
        if not len(kept):
            continue
        quotes = np.cumsum(kept == 34, dtype=np.int32) + in_string  # a quote toggles strings
        step = ((kept == 91) | (kept == 123)).astype(np.int32) - ((kept == 93) | (kept == 125))
        levels = np.cumsum(step * ((quotes & 1) == 0), dtype=np.int32) + depth
        if levels.max() > MAX_DEPTH:
            nth = int(np.argmax(levels > MAX_DEPTH))
            structural = np.isin(np.frombuffer(piece, dtype=np.uint8), _STRUCTURAL)
            offset = start + int(np.flatnonzero(structural)[nth])
            raise CodecError(
                f"JSON Parse error: The document nests arrays and objects more than {MAX_DEPTH} "
                f"levels deep (tensors have at most 254 dimensions) at offset: {offset}"
            )
        depth, in_string = int(levels[-1]), int(quotes[-1]) & 1


def _parse_document(body: bytes):
    """Parse like RapidJSON; returns (doc, tier). Raises CodecError for parse errors."""
    if not body:
        raise CodecError("JSON Parse error: The document is empty")
    _check_depth(body)
    # orjson is strict (no NaN, nothing after the value, valid UTF-8, no lone surrogates, no
    # overflow) but keeps the last duplicate key. With one object and no escapes, every ':' is
    # a member separator or inside a string, so as many ':' as members proves no duplicates.
    if body.count(b"{") == 1 and b"\\" not in body:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = _MISSING
        if isinstance(doc, dict) and body.count(b":") == len(doc):
            return JObj(list(doc.items())), "orjson"
    if not (b"\\u" in body and _SURROGATE_ESCAPE_RE.search(body)):
        text = body.decode("utf-8", "surrogateescape")
        start = len(text) - len(text.lstrip(_JSON_WS))
        try:
            doc = _DECODER.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            doc = _MISSING  # not plain JSON (or an error): the exact parser decides and explains
        if doc is not _MISSING and not _maybe_too_big(body):
            return doc, "json"
    try:
        return exact_parse(body), "exact"
    except JsonParseError as exc:
        raise CodecError(f"JSON Parse error: {exc.reason} at offset: {exc.offset}") from None


def _check_top(doc) -> str:
    """Steps after the parse shared by all POST APIs: object top level, signature_name type."""
    if not isinstance(doc, JObj):
        raise CodecError(f"JSON Value: {debug_string(doc)} Is not object")
    sig = doc.find("signature_name", _MISSING)
    if sig is _MISSING:
        return ""
    if not isinstance(sig, (str, bytes)):
        raise CodecError(
            f"JSON Value: {debug_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return as_bytes(sig).decode("utf-8", "surrogateescape")


def parse_predict(body: bytes) -> PredictBody:
    """Steps 1-2: parse the JSON and check `signature_name`; the tensors come later."""
    body = bytes(body)
    req = PredictBody(body)
    if not body:
        raise CodecError("JSON Parse error: The document is empty")
    # -- SIMD tier (simd_decode.py, issue 23): structure proved here, tensors in decode_predict
    req.simd = simd_decode.parse(body)
    if req.simd is not None:
        req.signature_name, req.path = req.simd.signature_name, "simd"
        return req
    # -- end SIMD tier
    scanned = _fastjson.scan_predict_body(body)
    if scanned is not None:
        sig, req.key, req.fast = scanned
        req.signature_name = sig or ""
        req.path = "fast"
        return req
    req.doc, req.path = _parse_document(body)
    req.signature_name = _check_top(req.doc)
    return req


def _document(req: PredictBody):
    if req.doc is None:
        req.doc, req.path = _parse_document(req.body)
    return req.doc


def decode_predict(req: PredictBody, specs: dict) -> tuple[dict, bool]:
    """Steps 4-5: the input tensors and whether the request used the row format."""
    if not specs:
        raise CodecError(
            f"Failed to get input map for signature: {req.signature_name or 'DEFAULT'}"
        )
    # -- SIMD tier (simd_decode.py, issue 23): None falls through to the exact tiers
    if req.simd is not None:
        decoded, req.simd = simd_decode.decode(req.simd, specs), None
        if decoded is not None:
            req.decoded_by = "simd"
            return decoded
    # -- end SIMD tier
    inputs = {name: _dtype_info(spec[1]) for name, spec in specs.items()}
    if req.fast is not None and len(inputs) == 1 and len(req.fast.shape) <= MAX_DIMS:
        (name, info), = inputs.items()
        if info.kind in ("float", "int"):
            tensor = req.fast.to_array(info.np)
            if tensor is not None:
                req.decoded_by = "fast"
                return {name: tensor}, req.key == "instances"
    try:
        result = _decode_dom(req, inputs)
    except _Reparse:
        req.doc, req.path = _exact_parse_or_raise(req.body), "exact"
        result = _decode_dom(req, inputs)
    req.decoded_by = "dom"
    return result


def _exact_parse_or_raise(body: bytes):
    """The exact tier's document; its parse errors as TF Serving words them."""
    try:
        return exact_parse(body)
    except JsonParseError as exc:
        raise CodecError(f"JSON Parse error: {exc.reason} at offset: {exc.offset}") from None


def _decode_dom(req: PredictBody, inputs: dict) -> tuple[dict, bool]:
    doc = _document(req)
    ctx = _Context(req.path, req.body)
    instances = doc.find("instances", _MISSING)
    columns = doc.find("inputs", _MISSING)
    if instances is not _MISSING:
        if columns is not _MISSING:
            raise CodecError(
                f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        if not isinstance(instances, list):
            raise CodecError(
                f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise CodecError(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return _decode_rows(instances, inputs, ctx), True
    if columns is not _MISSING:
        return _decode_columns(columns, inputs, ctx), False
    raise CodecError("Missing 'inputs' or 'instances' key")


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


def _is_b64(v) -> bool:
    return (
        isinstance(v, JObj)
        and len(v.pairs) == 1
        and v.pairs[0][0] == "b64"
        and isinstance(v.pairs[0][1], (str, bytes))
    )


def _is_element_object(v) -> bool:
    return isinstance(v, JObj) and not _is_b64(v)


def _decode_rows(instances: list, inputs: dict, ctx: _Context) -> dict:
    names = sorted(inputs)
    first = instances[0]
    if not isinstance(first, JObj) and len(names) > 1:
        raise CodecError(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if not _is_element_object(first):
        name = names[0]
        if not any(_is_element_object(e) for e in instances):
            tensor = _fast_convert(instances, inputs[name], ctx)
            if tensor is not None:
                return {name: tensor}
        return _rows_exact(instances, inputs, names, ctx, named=False)
    columns = _named_columns(instances, names)
    if columns is not None:
        out = {}
        for name in names:
            tensor = _fast_convert(columns[name], inputs[name], ctx)
            if tensor is None:
                break
            out[name] = tensor
        else:
            return out
    return _rows_exact(instances, inputs, names, ctx, named=True)


def _named_columns(instances: list, names: list) -> dict | None:
    """Per-input value lists when every element is an object with exactly the input keys."""
    wanted = set(names)
    columns = {name: [] for name in names}
    for elem in instances:
        if not _is_element_object(elem) or len(elem.pairs) != len(names):
            return None
        for key, value in elem.pairs:
            if key not in wanted:
                return None
            columns[key].append(value)
    if any(len(col) != len(instances) for col in columns.values()):
        return None
    return columns


def _rows_exact(instances, inputs, names, ctx, *, named: bool) -> dict:
    """FillTensorMapFromInstancesList, element by element, for the exact first error."""
    sizes, shapes, values = {}, {}, {}

    def add_item(item, name, keep=True):
        """AddInstanceItem: convert, then compare size and shape with the first element."""
        if name not in inputs:
            raise _Status(f"JSON object: does not have named input: {name}")
        shape = _dense_shape(item)
        flat = _fill_exact(item, shape, inputs[name], ctx)
        if name not in sizes:
            sizes[name], shapes[name] = len(flat), shape
            values[name] = [flat]
        elif sizes[name] != len(flat):
            raise _Status(f"Expecting tensor size: {sizes[name]} but got: {len(flat)}")
        elif shapes[name] != shape:
            raise _Status(
                f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}"
            )
        elif keep:
            values[name].append(flat)

    for index, elem in enumerate(instances):
        if named:
            if not _is_element_object(elem):
                raise CodecError(f"Expecting object but got list at item {index} of input list")
            seen = set()
            for key, value in elem.pairs:
                try:  # a repeated key is checked like any member, but its first value is used
                    add_item(value, key, keep=key not in seen)
                    seen.add(key)
                except _Status as exc:
                    raise CodecError(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {exc}"
                    ) from None
            if seen != set(names):
                raise CodecError(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(elem)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_element_object(elem):
                raise CodecError(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add_item(elem, names[0])
            except _Status as exc:
                raise CodecError(
                    f"Failed to process element: {index} of 'instances' list. Error: {exc}"
                ) from None
    out = {}
    for name, parts in values.items():
        flat = [v for part in parts for v in part]
        out[name] = _build(flat, (len(instances),) + tuple(shapes[name]), inputs[name])
    return out


def _decode_columns(columns, inputs: dict, ctx: _Context) -> dict:
    names = sorted(inputs)
    try:
        if not isinstance(columns, JObj) or _is_b64(columns):
            if len(names) > 1:
                raise CodecError(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    "tensors required as per tensorinfo_map"
                )
            return {names[0]: _convert(columns, inputs[names[0]], ctx)}
        out = {}
        for name in names:
            item = columns.find(name, _MISSING)
            if item is _MISSING:
                raise CodecError(f"Missing named input: {name} in 'inputs' object.")
            out[name] = _convert(item, inputs[name], ctx)
        return out
    except _Status as exc:
        raise exc.to_codec_error() from None


# -- JSON value -> tensor -------------------------------------------------------------------


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


_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_ABSL_SPACE = b" \t\n\v\f\r"


def b64decode_absl(data: bytes) -> bytes | None:
    """absl::Base64Unescape: standard alphabet, whitespace skipped, '=' or '.' padding optional."""
    core = _B64_CHARS.match(data).end()
    if core == len(data) or data[core:].strip(b"=") == b"":
        pads = len(data) - core
        rest = core % 4
        if rest == 1 or (pads and (core + pads) % 4) or (pads and rest == 0):
            return None
        try:
            return binascii.a2b_base64(data[:core] + b"=" * ((4 - rest) % 4))
        except binascii.Error:  # pragma: no cover - the checks above rule this out
            return None
    # Unusual input (whitespace, '.' padding): the general rule.
    chars = []
    pos = 0
    while pos < len(data):
        c = data[pos]
        if c in _ABSL_SPACE:
            pos += 1
            continue
        if c in b"=.":
            break
        if c not in _B64_ALPHABET:
            return None
        chars.append(c)
        pos += 1
    pads = 0
    for c in data[pos:]:
        if c in b"=.":
            pads += 1
        elif c not in _ABSL_SPACE:
            return None
    rest = len(chars) % 4
    if rest == 1:
        return None
    expected = {0: 0, 2: 2, 3: 1}[rest]
    if pads not in (0, expected):
        return None
    core_bytes = bytes(chars)
    return binascii.a2b_base64(core_bytes + b"=" * ((4 - rest) % 4))


def _decode_b64_object(v) -> bytes:
    if not _is_b64(v):
        raise _Status(f"JSON Value: {debug_string(v)} not formatted correctly for base64 data")
    decoded = b64decode_absl(as_bytes(v.pairs[0][1]))
    if decoded is None:
        raise _Status("Unable to base64 decode")
    return decoded


# -- tensor -> JSON -------------------------------------------------------------------------


def format_float(v, dtype=np.float32) -> str:
    """TF Serving's WriteDecimal: %.6g if it round-trips, else %.9g (float) / %.17g (double)."""
    is_double = np.dtype(dtype) == np.float64
    v = float(v) if is_double else float(np.float32(v))
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    text = f"{v:.6g}"
    back = float(text)
    if (back if is_double else float(np.float32(back))) != v:
        text = ("%.17g" if is_double else "%.9g") % v
    if "." not in text and "e" not in text:
        text += ".0"
    return text


_POW10 = np.array([float(f"1e{k}") for k in range(23)])


def _six_digits_cannot_roundtrip(v32: np.ndarray) -> np.ndarray:
    """Float32 values whose %.6g text certainly does not read back as themselves.

    Lets those be written with %.9g straight away instead of formatting, parsing and formatting
    again. Worked out in float64 with margins; anything close to a tie or a float32 rounding
    boundary is left out (False), and then the exact check decides.
    """
    v = np.abs(v32.astype(np.float64))
    usable = np.isfinite(v) & (v >= 1e-17) & (v < 1e27)  # 10**k below stays exact (|k| <= 22)
    v = np.where(usable, v, 1.0)
    e = np.floor(np.log10(v))
    for _ in range(2):  # log10 can be one off next to powers of ten
        k = (5 - e).astype(np.int64)
        t = np.where(k >= 0, v * _POW10[np.clip(k, 0, 22)], v / _POW10[np.clip(-k, 0, 22)])
        e = e + (t >= 1e6) - (t < 1e5)
    k = (5 - e).astype(np.int64)
    t = np.where(k >= 0, v * _POW10[np.clip(k, 0, 22)], v / _POW10[np.clip(-k, 0, 22)])
    usable &= (t >= 1e5 + 1e-3) & (t < 1e6 - 1e-3) & (np.abs(t - np.floor(t) - 0.5) > 1e-4)
    m = np.rint(t)  # the six significant digits %.6g prints
    d = np.where(k >= 0, m / _POW10[np.clip(k, 0, 22)], m * _POW10[np.clip(-k, 0, 22)])
    a32 = np.abs(v32).astype(np.float32)
    up = np.nextafter(a32, np.float32(np.inf)).astype(np.float64)
    down = np.nextafter(a32, np.float32(0)).astype(np.float64)
    margin = d * 1e-15
    outside = (d > (v + up) / 2 + margin) | (d < (v + down) / 2 - margin)
    return usable & outside


_SMALL_OUTPUT = 256  # up to this many values, _format_few_floats (measured crossover ~400)


def _format_few_floats(flat: np.ndarray, values: list, is_double: bool, wide: str) -> list:
    """_format_floats for a few values: every one tries %.6g, read back in one numpy call
    (the vectorised pre-check and index bookkeeping cost more than they save here)."""
    texts = [f"{v:.6g}" for v in values]
    with np.errstate(all="ignore"):
        back = np.array(texts, dtype=np.float64)
        same = (back == flat) if is_double else (back.astype(np.float32) == flat)
        same &= np.isfinite(flat)
    for i in np.flatnonzero(~same).tolist():
        v = values[i]
        if v != v:
            texts[i] = "NaN"
        elif v in (math.inf, -math.inf):
            texts[i] = "-Infinity" if v < 0 else "Infinity"
        else:
            texts[i] = wide % v
    return [t if ("." in t or "e" in t or t[-1] in "yN") else t + ".0" for t in texts]


def _format_floats(arr: np.ndarray) -> list:
    """format_float over a float32/float64 array, vectorised where it counts."""
    is_double = arr.dtype == np.float64
    flat = arr.ravel()
    values = flat.astype(np.float64).tolist()
    if not values:
        return []
    wide = "%.17g" if is_double else "%.9g"
    if len(values) <= _SMALL_OUTPUT:
        return _format_few_floats(flat, values, is_double, wide)
    if is_double:
        texts = [f"{v:.6g}" for v in values]
        check = np.ones(len(values), dtype=bool)
    else:
        with np.errstate(all="ignore"):
            check = ~_six_digits_cannot_roundtrip(flat)
        texts = [("%.6g" if c else "%.9g") % v for v, c in zip(values, check.tolist())]
    finite = np.isfinite(flat)
    tried = np.flatnonzero(check & finite)  # the %.6g texts: do they read back exactly?
    with np.errstate(all="ignore"):
        back = np.array([texts[i] for i in tried.tolist()], dtype=np.float64)
        wanted = flat[tried]
        same = (back == wanted) if is_double else (back.astype(np.float32) == wanted)
    for i in tried[~same].tolist():
        texts[i] = wide % values[i]
    for i in np.flatnonzero(~finite).tolist():
        v = values[i]
        texts[i] = "NaN" if v != v else ("-Infinity" if v < 0 else "Infinity")
    return [t if ("." in t or "e" in t or t[-1] in "yN") else t + ".0" for t in texts]


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


# -- classify / regress ---------------------------------------------------------------------


def parse_examples(body: bytes, verb: str = "classify") -> ExamplesBody:
    """Parse a classify/regress body into serialized tf.Example protos (context first)."""
    if verb not in ("classify", "regress"):
        raise ValueError(f"verb must be 'classify' or 'regress', not {verb!r}")
    body = bytes(body)
    doc, path = _parse_document(body)
    try:
        return _examples_from_doc(doc)
    except _Reparse:
        return _examples_from_doc(_exact_parse_or_raise(body))


def _examples_from_doc(doc) -> ExamplesBody:
    signature_name = _check_top(doc)
    from tensorflow.core.example import example_pb2  # the server imports TF anyway

    context = doc.find("context", _MISSING)
    context_bytes = b""
    if context is not _MISSING:
        context_bytes = _make_example(context, example_pb2).SerializeToString()
    examples = doc.find("examples", _MISSING)
    if examples is _MISSING:
        raise CodecError(
            f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    if not isinstance(examples, list):
        raise CodecError(
            f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise CodecError(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    serialized = [
        context_bytes + _make_example(e, example_pb2).SerializeToString() for e in examples
    ]
    return ExamplesBody(signature_name, serialized)


_KIND_NAMES = {None: "UNKNOWN", "bytes": "bytes", "float": "float", "int64": "int64"}


def _make_example(val, example_pb2):
    """MakeExampleFromJsonObject: scalars or flat lists -> bytes/float/int64 features."""
    if not isinstance(val, JObj):
        raise CodecError(f"Example must be JSON object but got JSON {json_type_name(val)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in val.pairs:
        kind = None
        values = []
        for v in content if isinstance(content, list) else [content]:
            kind = _feature_value(name, v, kind, values)
        try:
            feature = features[name]
        except (UnicodeEncodeError, ValueError):  # protobuf keys must be valid UTF-8
            raise CodecError(f"Feature name is not valid UTF-8: {name!r}") from None
        feature.Clear()
        if kind == "bytes":
            feature.bytes_list.value.extend(values)
        elif kind == "float":
            feature.float_list.value.extend(values)
        elif kind == "int64":
            feature.int64_list.value.extend(values)
    return example


def _feature_value(name: str, v, kind, values: list):
    def need(wanted):
        if kind is not None and kind != wanted:
            raise CodecError(
                f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}"
            )
        return wanted

    if v is None or isinstance(v, list) or (isinstance(v, JObj) and not _is_b64(v)):
        raise CodecError(
            f"Feature: {name} has element with unexpected JSON type: {json_type_name(v)}"
        )
    if isinstance(v, bool):
        kind = need("int64")
        values.append(1 if v else 0)
    elif isinstance(v, JObj):
        kind = need("bytes")
        decoded = b64decode_absl(as_bytes(v.pairs[0][1]))
        if decoded is None:
            raise CodecError("Unable to base64 decode")
        values.append(decoded)
    elif isinstance(v, (str, bytes)):
        kind = need("bytes")
        values.append(as_bytes(v))
    elif isinstance(v, float) or not -(2**63) <= v < 2**64:  # a double in RapidJSON
        kind = need("float")
        try:
            number = float(v)
        except OverflowError:
            raise _Reparse() from None
        if isinstance(v, float) and math.isinf(v) and v is not _POS_INF and v is not _NEG_INF:
            raise _Reparse()
        values.append(number)
    else:
        kind = need("int64")
        if v >= 2**63:
            raise CodecError(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        values.append(v)
    return kind
