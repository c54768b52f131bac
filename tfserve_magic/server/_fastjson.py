"""Fast path for plain numeric predict bodies: bytes -> numpy without a JSON document tree.

Handles the common request shape ``{"instances": [[...]]}`` / ``{"inputs": [...]}`` (optionally
with a string ``signature_name`` before or after) whose payload is a rectangular nest of JSON
numbers. Everything runs as a few vectorised passes over the bytes:

1. Structure: the payload minus its number characters must equal the skeleton (``[``, ``]``,
   ``,``) of the dense shape inferred from its first elements. That one comparison proves the
   brackets balance, the nest is rectangular and nothing but numbers sits in it.
2. Tokens: the edges between separator and number bytes give every token's start and end; each
   token must sit in a leaf slot (so the count equals the number of leaves).
3. Grammar: ``-`` only first, at most one ``.`` with digits on both sides, no leading zeros.
   Tokens with an exponent, ``NaN``/``Infinity`` or more than 18 digits are rare and go through
   the exact RapidJSON number parser one by one (if they are not rare, the scan gives up).
4. Values: every token's last 16 or 24 bytes, right-aligned, are turned into a 64-bit integer
   with a SWAR digit trick (8 digits per multiply chain); the decimal point is then cut out
   and the result scaled by a power of ten.

Steps 2-4 are first done more cheaply by ``_scan_with_orjson`` (bytes operations, then orjson
on the bracket-free numbers); the vectorised scan is its fallback for NaN/Infinity tokens.
Anything unusual returns None and the caller takes the slower tiers, which also produce
TF Serving's error messages. The scan never raises for bad input. docs/codec.md has the
details and the measurements.
"""

from __future__ import annotations

import re

import numpy as np
import orjson
from numpy.lib.stride_tricks import sliding_window_view

from tfserve_magic.server import _rapidjson

__all__ = ["ListPayload", "NumericPayload", "scan_predict_body"]

_WS = rb"[ \t\n\r]*"
_SIG = rb'"signature_name"' + _WS + rb":" + _WS + rb'"([^"\\\x00-\x1f]*)"'
_HEAD_RE = re.compile(
    _WS + rb"\{" + _WS + rb"(?:" + _SIG + _WS + rb"," + _WS + rb')?"(instances|inputs)"'
    + _WS + rb":" + _WS + rb"\["
)
_TAIL_RE = re.compile(rb"\]" + _WS + rb"(?:," + _WS + _SIG + _WS + rb")?\}")
_NUMBER_BYTES = b"0123456789.-+eENaInfity"
_NUMBER_BYTES_AND_SPACE = _NUMBER_BYTES + b" "
_WIDTH = 24  # bytes per token window (three 8-digit SWAR words)
_MAX_RANK = 32  # deeper nests go to the exact path (shape inference here is rank^2)
_SHORT = 16  # the window when every number has at most 15 bytes (float32 reprs, orjson)


def _word_masks(width: int) -> np.ndarray:
    """[c] -> the 8-byte words of a `width`-byte window keeping columns >= c."""
    return np.array(
        [[(0xFFFFFFFFFFFFFFFF << (8 * min(max(c - 8 * j, 0), 8))) & 0xFFFFFFFFFFFFFFFF
          for j in range(width // 8)] for c in range(width + 1)],
        dtype=np.uint64,
    )


_WORD_MASKS = {_WIDTH: _word_masks(_WIDTH), _SHORT: _word_masks(_SHORT)}
_POW10_U64 = np.array([10**k for k in range(20)], dtype=np.uint64)
_POW10_F64 = np.array([float(f"1e{k}") for k in range(23)], dtype=np.float64)
_TWO53 = 2**53
_INT_RANGES = {  # dtype -> (largest positive, largest magnitude of a negative) TF accepts
    "int8": (2**31 - 1, 2**31),
    "int16": (2**31 - 1, 2**31),
    "int32": (2**31 - 1, 2**31),
    "uint8": (2**31 - 1, 2**31),
    "int64": (2**63 - 1, 2**63),
    "uint32": (2**32 - 1, 0),
    "uint64": (2**64 - 1, 0),
}


def _swar8(words: np.ndarray) -> np.ndarray:
    """Eight digit bytes (values 0-9, most significant first) per uint64 -> their number.

    The classic SWAR parse: combine neighbouring digits into 2-, 4-, then 8-digit lanes.
    """
    v = words * np.uint64(2561)  # in place from here on: these arrays are the hot loop
    v >>= np.uint64(8)
    v &= np.uint64(0x00FF00FF00FF00FF)
    v *= np.uint64(6553601)
    v >>= np.uint64(16)
    v &= np.uint64(0x0000FFFF0000FFFF)
    v *= np.uint64(42949672960001)
    v >>= np.uint64(32)
    return v


class NumericPayload:
    """A validated numeric nest: its shape and per-token integer significands."""

    __slots__ = ("shape", "text", "starts", "ends", "mantissa", "frac_len", "neg", "has_dot",
                 "special")

    def to_array(self, dtype: np.dtype) -> np.ndarray | None:
        """The tensor for a float/int signature dtype, or None when the exact path must decide."""
        kind = dtype.kind
        if kind == "f" and dtype.itemsize in (4, 8):
            return self._floats(dtype)
        if kind in "iu" and dtype.name in _INT_RANGES:
            return self._ints(dtype)
        return None

    def _floats(self, dtype) -> np.ndarray | None:
        mantissa = self.mantissa
        values = mantissa.astype(np.float64)
        values /= np.take(_POW10_F64, self.frac_len)
        neg = self.neg & (self.has_dot | (mantissa != 0))  # "-0" is the integer 0 in RapidJSON
        np.negative(values, out=values, where=neg)
        fixups = dict(self.special)
        if dtype.itemsize == 8:  # float64 must be exact: long significands go through strtod
            for i in np.flatnonzero(mantissa > np.uint64(_TWO53)).tolist():
                if i not in fixups:
                    fixups[i] = float(self.text[self.starts[i] : self.ends[i]])
        for i, number in fixups.items():
            try:
                values[i] = float(number)
            except OverflowError:
                return None  # an integer beyond double: RapidJSON refuses it, let it say so
        with np.errstate(over="ignore"):
            return values.reshape(self.shape).astype(dtype, copy=False)

    def _ints(self, dtype) -> np.ndarray | None:
        if self.special or self.has_dot.any():
            return None
        top, bottom = _INT_RANGES[dtype.name]
        mantissa = self.mantissa
        neg = self.neg & (mantissa != 0)
        if neg.any() and (bottom == 0 or int(mantissa[neg].max()) > bottom):
            return None
        if (~neg).any() and int(mantissa[~neg].max()) > top:
            return None
        if dtype.name == "uint64":
            return mantissa.reshape(self.shape)
        values = mantissa.astype(np.int64)
        np.negative(values, out=values, where=neg)
        return values.reshape(self.shape).astype(dtype, copy=False)


def _exact_number(token: bytes):
    """RapidJSON's reading of one whole token, or None if it is not exactly one number."""
    reader = _rapidjson._Reader(token)
    try:
        value = reader.parse_number()
    except _rapidjson.JsonParseError:
        return None
    return value if reader.pos == len(token) else None


def scan_predict_body(body: bytes):
    """(signature_name or None, "instances"|"inputs", payload) or None if not plain.

    The payload (a ListPayload, or a NumericPayload when orjson cannot vouch for the numbers,
    e.g. NaN) has ``shape`` and ``to_array(dtype)``."""
    head = _HEAD_RE.match(body)
    if head is None:
        return None
    end = len(body.rstrip(b" \t\n\r"))
    if end == 0 or body[end - 1] != 0x7D:  # trailing bytes after "}" are legal but unusual
        return None
    close = body.rfind(b"]", head.end(), end)
    if close < 0:
        return None
    tail = _TAIL_RE.fullmatch(body, close, end)
    if tail is None:
        return None
    if head.group(1) is not None and tail.group(1) is not None:
        return None  # duplicate key: let the exact path apply first-wins
    sig = head.group(1) if head.group(1) is not None else tail.group(1)
    text = body[head.end() - 1 : close + 1]
    payload = _scan_with_orjson(text)
    if payload is None:
        payload = _scan_full(text)
    if payload is None:
        return None
    name = None if sig is None else sig.decode("utf-8", "surrogateescape")
    return name, head.group(2).decode(), payload


def _scan_full(text: bytes):
    try:
        return _scan_payload(text)
    except (IndexError, ValueError):  # a shape the scan did not foresee: the exact path decides
        return None


class ListPayload:
    """A validated numeric nest: its shape and the numbers as orjson read them.

    Same interface and answers as NumericPayload; anything it is unsure about (a float for an
    integer dtype, an integer beyond int64) is handed to the full scan of the same text.
    """

    __slots__ = ("shape", "text", "values")

    def to_array(self, dtype: np.dtype) -> np.ndarray | None:
        kind = dtype.kind
        if kind == "f" and dtype.itemsize in (4, 8):
            values = np.array(self.values, dtype=np.float64).reshape(self.shape)
            if dtype.itemsize == 8:
                return values
            with np.errstate(over="ignore"):  # decimal -> double -> float, as RapidJSON
                return values.astype(dtype)
        if kind in "iu" and dtype.name in _INT_RANGES:
            try:
                values = np.array(self.values)
            except OverflowError:
                values = None
            if values is not None and values.dtype.kind == "i":  # integer literals, int64
                top, bottom = _INT_RANGES[dtype.name]
                if int(values.min()) >= -bottom and int(values.max()) <= top:
                    return values.reshape(self.shape).astype(dtype, copy=False)
        full = _scan_full(self.text)
        return None if full is None else full.to_array(dtype)


_LETTERS = b"eENaInfity"
_NUMBER_TO_ZERO = bytes.maketrans(_NUMBER_BYTES, b"0" * len(_NUMBER_BYTES))


def _scan_with_orjson(text: bytes) -> ListPayload | None:
    """The numbers of a payload with a few bytes operations and orjson, or None.

    Tried first: for one MNIST image it is 2.5x the vectorised scan (which is bound by numpy's
    per-call overhead, about 40 calls), and for 100 images still 1.3-3x (orjson reads a flat,
    bracket-free list of numbers much faster than nested lists). The skeleton comparison proves
    the nest is dense and holds only number characters; then no number may touch a bracket from
    outside its leaf slot (``]1``, ``1[``), a space may only follow a comma, and orjson must read
    the bracket-free text as exactly one JSON number per leaf (so ``1-2``, ``01``, ``1.``,
    ``NaN``, ``1e400`` or an empty slot refuse). None sends the text to the full scan.
    """
    dense = _dense_skeleton(text)
    if dense is None:
        return None
    shape, skel, leaves, spaced = dense
    if len(text) - len(text.translate(None, _LETTERS)) > max(64, leaves // 16):
        return None  # mostly exponents or NaN/Infinity: as the full scan, leave it to orjson
    a = np.frombuffer(text.translate(_NUMBER_TO_ZERO), dtype=np.uint8)
    before, after = a[:-1], a[1:]
    misplaced = ((before == 93) & (after == 48)) | ((before == 48) & (after == 91))
    if spaced:
        misplaced |= (after == 32) & (before != 44)
    if misplaced.any():
        return None
    try:
        values = orjson.loads(b"[" + text.translate(None, b"[] ") + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(values) != leaves:
        return None
    result = ListPayload()
    result.shape = shape
    result.text = text
    result.values = values
    return result


def _dense_skeleton(text: bytes):
    """``(shape, skeleton, leaves, spaced)`` when the brackets form a dense nest, else None.

    The skeleton is the text without number characters (and without spaces: json.dumps writes
    ", "; any other whitespace is refused by the callers); it must equal the skeleton of the
    shape inferred from the first elements, which proves the nest is rectangular.
    """
    spaced = b" " in text
    skel = text.translate(None, _NUMBER_BYTES_AND_SPACE if spaced else _NUMBER_BYTES)
    inferred = _infer_shape(skel)
    if inferred is None or inferred[1] != skel:
        return None
    shape = inferred[0]
    leaves = 1
    for d in shape:
        leaves *= d
    return shape, skel, leaves, spaced


def _infer_shape(skel: bytes):
    """Dense shape from the skeleton's first elements, or None; caller compares skeletons."""
    size = len(skel)
    rank = size - len(skel.lstrip(b"["))
    if rank == 0 or rank == size or rank > _MAX_RANK:
        return None
    first_close = skel.find(b"]")
    dims = [first_close - rank + 1]
    inner = b"[" + b"," * (dims[0] - 1) + b"]"
    for level in range(rank - 2, -1, -1):
        if level == 0:
            last = size - 1
        else:
            run = skel.find(b"]" * (rank - level), level)
            if run < 0:
                return None
            last = run + rank - level - 1
        count, rest = divmod(last - level, len(inner) + 1)
        if rest or count < 1:
            return None
        dims.insert(0, count)
        inner = b"[" + b",".join([inner] * count) + b"]"
    return (tuple(dims), inner)


def _scan_payload(payload: bytes) -> NumericPayload | None:
    text = payload
    dense = _dense_skeleton(text)
    if dense is None:
        return None
    shape, skel, leaves, spaced = dense
    a = np.frombuffer(text, dtype=np.uint8)
    special_limit = max(64, leaves // 16)  # tokens read one by one; beyond it json is faster
    letter_bytes = np.count_nonzero(a > 57) - 2 * skel.count(b"[")  # '[' and ']' are > 57 too
    if letter_bytes > special_limit:
        return None  # mostly exponents or NaN/Infinity
    sep = (a == 44) | ((a | 6) == 95)  # ',' or '[' / ']' (the skeleton check excluded '\\^_YZ')
    if spaced:
        space = a == 32
        if (space[1:] & (a[:-1] != 44)).any():
            return None  # a space anywhere but right after a comma
        sep |= space
    # Token starts, token ends and decimal points, merged in order: start [dot] end per token.
    marks = np.flatnonzero((sep[1:] != sep[:-1]) | (a[1:] == 46)) + 1
    kinds = sep[marks].view(np.int8) * np.int8(2) + (a[marks] == 46).view(np.int8)
    if len(kinds) < 2 or kinds[0] != 0 or kinds[-1] != 2:
        return None
    step = kinds[1:] * np.int8(3) + kinds[:-1]  # next * 3 + previous, 0..8
    # Allowed: start->dot (3), start->end (6), dot->end (7), end->start (2): exactly the
    # values with bit 1 set.
    if not (step & np.int8(2)).all():
        return None
    starts = marks[kinds == 0]
    end_at = np.flatnonzero(kinds == 2)
    ends = marks[end_at]
    if len(starts) != leaves:
        return None
    if (a[starts - 1] == 93).any() or (a[ends] == 91).any():
        return None  # a number outside a leaf slot, e.g. "[1]2" or "1[2]"
    before_end = marks[end_at - 1]  # the token's '.' if it has one, else its start
    has_dot = kinds[end_at - 1] == 1
    digit_around = ((a[before_end - 1] - np.uint8(48)) < 10) & (
        (a[before_end + 1] - np.uint8(48)) < 10
    )
    if (has_dot & ~digit_around).any():
        return None  # ".5", "1.", "-.5"
    frac_len = np.where(has_dot, ends - before_end - 1, 0)

    if b"-" in text:  # '-' only first in a number (or in an exponent) and never alone
        minus = np.flatnonzero(a == 45)
        before = a[minus - 1]
        after = a[minus + 1]
        if not (sep[minus - 1] | ((before | 32) == 101)).all():
            return None  # "1-2", "--1"
        if (sep[minus + 1] | (after == 46) | (after == 45) | (after == 43)).any():
            return None  # "-", "-.5"
    neg = a[starts] == 45
    first = starts + neg  # a digit or letter now, and never the payload's last byte
    if ((a[first] == 48) & ((a[first + 1] - np.uint8(48)) < 10)).any():
        return None  # "01", "-01"

    lengths = ends - starts
    # Tokens read one by one by the exact number reader: letters or '+' (exponents, NaN,
    # Infinity) and numbers too long for the uint64 arithmetic below.
    special = (lengths > _WIDTH - 1) | (frac_len > 18)
    if letter_bytes or b"+" in text:
        odd = np.flatnonzero(((a > 57) & ((a | 6) != 95)) | (a == 43))
        special[np.searchsorted(ends, odd, side="right")] = True
    if np.count_nonzero(special) > special_limit:
        return None
    frac_len = np.minimum(frac_len, 18)

    # Digit values (anything else zeroed), every token right-aligned in a 16- or 24-byte window.
    width = _SHORT if int(lengths.max()) < _SHORT else _WIDTH
    values = a - np.uint8(48)
    values *= values < 10
    padded = np.zeros(len(a) + width, dtype=np.uint8)
    padded[width:] = values
    windows = sliding_window_view(padded, width)[ends]
    words = windows.view("<u8")
    # Keep only the token's own bytes: columns >= width - length, per 8-byte word a shift.
    words &= np.take(_WORD_MASKS[width], width - np.minimum(lengths, width), axis=0)
    words = _swar8(words)
    if width == _SHORT:  # at most 15 digits: no overflow possible
        with_dot = words[:, 0] * np.uint64(10**8)
        with_dot += words[:, 1]
    else:
        top = words[:, 0]
        too_long = top >= 1000  # more than 19 digits (counting the cut-out '.')
        if too_long.any():
            special |= too_long
            top = np.where(too_long, np.uint64(0), top)
        with_dot = top * np.uint64(10**16)
        with_dot += words[:, 1] * np.uint64(10**8)
        with_dot += words[:, 2]
    cut = np.take(_POW10_U64, frac_len + has_dot)
    high = with_dot // cut
    with_dot -= high * cut  # the digits after the point
    high *= np.take(_POW10_U64, frac_len)
    mantissa = high
    mantissa += with_dot

    result = NumericPayload()
    result.shape = shape
    result.text = text
    result.starts = starts
    result.ends = ends
    result.mantissa = mantissa
    result.frac_len = frac_len
    result.neg = neg
    result.has_dot = has_dot
    special_at = np.flatnonzero(special)
    if len(special_at) > special_limit:
        return None
    result.special = {}
    for i in special_at.tolist():  # RapidJSON's own reading of each odd token
        number = _exact_number(text[starts[i] : ends[i]])
        if number is None:
            return None
        result.special[i] = number
    return result
