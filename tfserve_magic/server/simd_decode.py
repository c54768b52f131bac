"""The SIMD tier: numeric predict bodies parsed by simdjson straight into numpy (issue 23).

Two ways to the same answers. Where the package was built with a C++ compiler, the compiled
half (`_simdnest.cpp`, built by setup.py from pysimdjson's copy of simdjson) parses the body,
proves every nest rectangular and copies its numbers out in one walk of simdjson's tape, with
the GIL let go. Elsewhere pysimdjson does it from Python, as follows.

For ``{"instances": [[...]]}`` and ``{"inputs": [...]}`` / ``{"inputs": {"a": [...], ...}}``
bodies (optionally with a string ``signature_name``) whose tensors are rectangular nests of
numbers and whose signature dtypes are numeric. pysimdjson parses the body (SIMD, in C) and
``Array.as_buffer`` flattens each nest into a C array of doubles or 64-bit integers, so no
Python number is ever made. What simdjson does not check is proved on the raw bytes:

- **Shape**, against the dense shape inferred from the first elements, one of two ways:
  ``bytes.translate`` keeps only ``[ ] { } , : "`` of the body (one C pass) and that skeleton
  must equal the shape's. With a valid document and numbers as the only leaves, equal skeletons
  prove the nest is rectangular, every number sits at the innermost level and nothing else is
  in the body (an empty innermost ``[]`` reads like ``[5]``, so the number count must also be
  the shape's product). When the nest has few arrays for its bytes (``[N, 784]``), simdjson's
  array sizes are checked instead, one call per array, plus a numpy count of ``[`` in the body
  (`_proved_by_sizes`).
- **Types**: ``as_buffer`` refuses strings, objects, ``true``/``false``/``null``; ``of_type='i'``
  refuses decimals (TF Serving's "not of expected type" for integer dtypes); integer ranges are
  checked with numpy min/max.
- **Grammar**: simdjson accepts strict JSON only, a subset of what RapidJSON accepts, and reads
  numbers with correct rounding like the exact tiers. ``NaN``/``Infinity``, numbers beyond a
  double, integers beyond 64 bits, trailing bytes, invalid UTF-8 are simdjson errors.

Whatever is not proved (escapes anywhere, duplicate or unknown keys, named rows, strings, b64,
bools, empty or ragged nests, out-of-range integers, non-numeric dtypes, a parse error) gives
None and the exact tiers of codec.py answer, with TF Serving's values and error texts. Without
the ``simdjson`` module (no wheel) the tier is off and everything works as before.
docs/codec.md has the measurements.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from typing import NamedTuple, Optional

import numpy as np

try:
    import simdjson
except ImportError:  # no wheel for this platform: the pure-Python tiers do everything
    simdjson = None
try:
    from tfserve_magic.server import _simdnest
except ImportError:  # built without a C++ compiler: pysimdjson proves the shapes instead
    _simdnest = None

__all__ = ["COMPILED", "ENABLED", "SimdBody", "decode", "decode_numeric", "parse"]

# TFSERVE_MAGIC_SIMD_DECODE=0 turns the tier off (diagnostics, the bench's "before" column);
# TFSERVE_MAGIC_SIMD_COMPILED=0 keeps it on pysimdjson alone (the bench's middle column).
ENABLED = simdjson is not None and os.environ.get("TFSERVE_MAGIC_SIMD_DECODE", "1") != "0"
COMPILED = _simdnest is not None and os.environ.get("TFSERVE_MAGIC_SIMD_COMPILED", "1") != "0"

MAX_RANK = 64  # numpy's limit on dimensions (codec.MAX_DIMS): deeper goes to the exact tiers
_KEPT = b'[]{},:"'
_DROP = bytes(c for c in range(256) if c not in _KEPT)
# Bodies up to this size reuse a per-thread parser (its buffers grow to the largest document);
# larger ones get a parser of their own, freed afterwards.
_REUSE_BYTES = 16 << 20
# Skeletons up to about this size are cached (64 of them at most); larger ones are joined
# from their (cached) items each time.
_CACHED_SKELETON_BYTES = 256 << 10
# The shape is proved from array sizes (a Python call per array) when the nests have at most
# one array below their top per this many body bytes, else by the skeleton (one C pass, about
# a nanosecond per byte).
_BYTES_PER_ARRAY = 256
_INT32 = (-(2**31), 2**31 - 1)
# dtype name -> (as_buffer type, accepted range or None): TF Serving's AddValueToTensor rules.
_DTYPES = {
    "float32": ("d", None),
    "float64": ("d", None),
    "int8": ("i", _INT32),
    "int16": ("i", _INT32),
    "int32": ("i", _INT32),
    "uint8": ("i", _INT32),
    "int64": ("i", None),
    "uint32": ("i", (0, 2**32 - 1)),
    "uint64": ("u", None),
}
_BUFFER_DTYPES = {"d": np.float64, "i": np.int64, "u": np.uint64}

_local = threading.local()


class _Nest(NamedTuple):
    """One tensor's simdjson array and its proved dense shape."""

    array: object
    shape: tuple


class _Flat(NamedTuple):
    """One tensor from the compiled half: its numbers already copied out, in order.

    `kind` says which integer reads are allowed, as as_buffer would: "i" (every number an
    integer within int64), "u" (every number a non-negative integer within uint64).
    """

    shape: tuple
    doubles: bytearray
    ints: Optional[bytearray]
    kind: str


class SimdBody:
    """A predict body whose structure is proved; the tensors come in `decode` (dtype known).

    Holds simdjson proxies (so its parser) until decoded; `decode` lets them go.
    """

    __slots__ = ("signature_name", "row", "plain", "named")

    def __init__(self, signature_name: str, row: bool, plain, named):
        self.signature_name = signature_name
        self.row = row  # "instances" (row format) or "inputs" (columnar)
        self.plain = plain  # one unnamed tensor: a _Nest or a _Flat
        self.named: Optional[dict] = named  # columnar {"inputs": {name: nest}}


def _parser(size: int):
    """This thread's parser, or a new one for a huge body (freed with its document)."""
    if size > _REUSE_BYTES:
        return simdjson.Parser()
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def _parse_json(body: bytes):
    parser = _parser(len(body))
    try:
        return parser.parse(body)
    except RuntimeError as exc:
        if "re-use a parser" not in str(exc):
            raise
        return simdjson.Parser().parse(body)  # an earlier SimdBody still holds this one


def _dense_shape(array) -> Optional[tuple]:
    """The shape from the first elements, if it ends in a number and has no zero dims."""
    shape = []
    value = array
    while isinstance(value, simdjson.Array):
        size = len(value)
        if size == 0 or len(shape) == MAX_RANK:
            return None
        shape.append(size)
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return tuple(shape)


def _skeleton(shape: tuple) -> bytes:
    """What translate keeps of a dense nest of numbers: "[[,],[,]]" for (2, 2)."""
    if 2 * math.prod(shape) <= _CACHED_SKELETON_BYTES:
        return _cached_skeleton(shape)
    if len(shape) == 1:
        return b"[" + b"," * (shape[0] - 1) + b"]"
    return b"[" + b",".join([_skeleton(shape[1:])] * shape[0]) + b"]"


@functools.lru_cache(maxsize=64)
def _cached_skeleton(shape: tuple) -> bytes:
    if len(shape) == 1:
        return b"[" + b"," * (shape[0] - 1) + b"]"
    return b"[" + b",".join([_skeleton(shape[1:])] * shape[0]) + b"]"


def _nest(value, skeleton: list) -> Optional[_Nest]:
    if not isinstance(value, simdjson.Array):
        return None
    shape = _dense_shape(value)
    if shape is None:
        return None
    skeleton.append(shape)  # built by _skeleton only if the skeleton proof is chosen
    return _Nest(value, shape)


def _named(value, skeleton: list) -> Optional[dict]:
    """Columnar named inputs: {"name": nest, ...} with plain, distinct names."""
    keys = list(value)
    if not keys or len(set(keys)) != len(keys):
        return None
    out = {}
    skeleton.append(b"{")
    for i, key in enumerate(keys):
        skeleton.append(b'"":' if i == 0 else b',"":')
        nest = _nest(value[key], skeleton)
        if nest is None:
            return None
        out[key] = nest
    skeleton.append(b"}")
    return out


def _child_arrays(shape: tuple) -> int:
    """Arrays below the top of a dense nest: the proxies `_proved_by_sizes` makes."""
    total, count = 0, 1
    for dim in shape[:-1]:
        count *= dim
        total += count
    return total


def _proved_by_sizes(body: bytes, nests: list, in_strings: int) -> bool:
    """The shape proof from simdjson's array sizes, for nests with few arrays.

    Every array above the innermost level must hold only arrays, every array at a level the
    right number of items; then the body's '[' count (less those inside the key and signature
    strings, which have no escapes) equal to the number of these arrays proves the innermost
    ones hold no arrays, so (with as_buffer's check) only numbers.
    """
    arrays = 0
    for nest in nests:
        level = [nest.array]
        for depth, dim in enumerate(nest.shape):
            if set(map(len, level)) != {dim}:
                return False
            arrays += len(level)
            if depth + 1 < len(nest.shape):
                level = [item for array in level for item in array]
                if set(map(type, level)) != {simdjson.Array}:
                    return False
    brackets = int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == 91))
    return brackets == arrays + in_strings


def _parse_compiled(body: bytes) -> Optional[SimdBody]:
    """The compiled half's parse: the same rules, the numbers copied out already."""
    parsed = _simdnest.parse(body)
    if parsed is None:
        return None
    signature_name, row, payload = parsed
    if isinstance(payload, dict):
        return SimdBody(signature_name, row, None,
                        {name: _Flat(*nest) for name, nest in payload.items()})
    return SimdBody(signature_name, row, _Flat(*payload), None)


def parse(body: bytes) -> Optional[SimdBody]:
    """Steps 1-2 for a numeric body, or None when the exact tiers must decide."""
    if not ENABLED or b"\\" in body:  # no escapes: every '"' in the bytes delimits a string
        return None
    if COMPILED:
        return _parse_compiled(body)
    try:
        doc = _parse_json(body)
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError, OverflowError):
        return None  # not strict JSON (NaN, 1e400, trailing bytes...): RapidJSON's rules decide
    except MemoryError:  # simdjson's buffers are ~14 bytes per body byte: the exact tiers try
        return None
    if not isinstance(doc, simdjson.Object):
        return None
    keys = list(doc)
    if len(set(keys)) != len(keys):
        return None  # duplicate keys: first-wins is the exact tiers' job
    signature_name, row, plain, named, payloads = "", None, None, None, 0
    skeleton = [b"{"]
    for i, key in enumerate(keys):
        skeleton.append(b'"":' if i == 0 else b',"":')
        value = doc[key]
        if key == "signature_name":
            if not isinstance(value, str):
                return None
            signature_name = value
            skeleton.append(b'""')
        elif key in ("instances", "inputs"):
            payloads += 1
            row = key == "instances"
            if not row and isinstance(value, simdjson.Object):
                named = _named(value, skeleton)
                if named is None:
                    return None
            else:
                plain = _nest(value, skeleton)
                if plain is None:
                    return None
        else:
            return None
    if payloads != 1:
        return None
    skeleton.append(b"}")
    nests = [plain] if plain is not None else list(named.values())
    if any(math.prod(nest.shape) > len(body) for nest in nests):
        return None  # a first chain posing as a tensor larger than the body could hold
    if sum(_child_arrays(nest.shape) for nest in nests) * _BYTES_PER_ARRAY <= len(body):
        # Few arrays for the bytes (e.g. [N, 784]): simdjson's array sizes prove the shape.
        in_strings = signature_name.count("[") + sum(key.count("[") for key in named or ())
        if not _proved_by_sizes(body, nests, in_strings):
            return None
    elif body.translate(None, _DROP) != b"".join(
        _skeleton(part) if isinstance(part, tuple) else part for part in skeleton
    ):  # the body's brackets, commas, colons and quotes must be exactly these
        return None
    return SimdBody(signature_name, row, plain, named)


class _Plan(NamedTuple):
    """How one signature dtype is read: as_buffer's type and the range TF Serving accepts."""

    dtype: np.dtype
    of_type: str
    buffer_dtype: type
    bounds: Optional[tuple]


_PLANS: dict = {}


def _plan(dtype) -> Optional[_Plan]:
    """The _Plan of a signature dtype (numpy, tf.DType or "string"), None if not numeric."""
    try:
        return _PLANS[dtype]
    except KeyError:
        pass
    except TypeError:  # unhashable: not a dtype this tier knows
        return None
    plan = None
    candidate = dtype
    if hasattr(candidate, "as_numpy_dtype") and hasattr(candidate, "name"):  # a tf.DType
        candidate = None if candidate.name == "string" else candidate.as_numpy_dtype
    if candidate is not None and not (isinstance(candidate, str) and candidate in (
            "string", "DT_STRING")):
        try:
            candidate = np.dtype(candidate)
        except TypeError:
            candidate = None
        if candidate is not None and candidate.name in _DTYPES:
            of_type, bounds = _DTYPES[candidate.name]
            plan = _Plan(candidate, of_type, _BUFFER_DTYPES[of_type], bounds)
    _PLANS[dtype] = plan
    return plan


def _flat(nest, plan: _Plan) -> Optional[np.ndarray]:
    """The nest's numbers as as_buffer reads them for the plan, or None where it refuses."""
    if isinstance(nest, _Flat):
        if plan.of_type == "d":
            return np.frombuffer(nest.doubles, dtype=np.float64)
        if nest.ints is None or plan.of_type not in nest.kind:
            return None
        return np.frombuffer(nest.ints, dtype=plan.buffer_dtype)
    try:
        buffer = nest.array.as_buffer(of_type=plan.of_type)
    except (ValueError, TypeError, RuntimeError, OverflowError):
        return None  # a non-number, a decimal for an integer dtype, a negative for uint64
    return np.frombuffer(buffer, dtype=plan.buffer_dtype)


def _tensor(nest, plan: _Plan) -> Optional[np.ndarray]:
    """The nest as the plan's dtype, or None if a value breaks TF Serving's rules for it."""
    flat = _flat(nest, plan)
    if flat is None or flat.size != math.prod(nest.shape):
        return None  # an innermost [] where a number was expected
    bounds = plan.bounds
    if bounds is not None and (int(flat.min()) < bounds[0] or int(flat.max()) > bounds[1]):
        return None
    flat = flat.reshape(nest.shape)
    if plan.of_type != "d":
        return flat.astype(plan.dtype, copy=False)  # TF's static_cast: int8/16, uint8 wrap
    if plan.dtype.itemsize == 8:
        return flat
    with np.errstate(over="ignore"):  # float32: decimal -> double -> float, as RapidJSON
        return flat.astype(plan.dtype)


def decode(body: SimdBody, specs: dict) -> Optional[tuple]:
    """Steps 4-5: ``({name: tensor}, row)`` or None (the exact tiers then decode).

    `specs` maps input names to ``(name, dtype, shape)`` as codec.decode_predict takes them.
    The body's simdjson document is released either way.
    """
    plain, named = body.plain, body.named
    body.plain = body.named = None
    if not specs:
        return None
    if plain is not None:
        if len(specs) != 1:
            return None
        pairs = [(next(iter(specs)), plain)]
    else:
        if named is None or set(named) != set(specs):
            return None
        pairs = list(named.items())
    tensors = {}
    for name, nest in pairs:
        plan = _plan(specs[name][1])
        tensor = None if plan is None else _tensor(nest, plan)
        if tensor is None:
            return None
        tensors[name] = tensor
    return tensors, body.row


def decode_numeric(body: bytes, specs: dict) -> Optional[tuple]:
    """`parse` then `decode` in one call: ``(tensors, row)`` or None."""
    parsed = parse(body)
    return None if parsed is None else decode(parsed, specs)
