"""Parse tiers for request bodies: refuse too-deep documents, then parse like RapidJSON.

Tiers, fastest first, each answering only when it is sure to agree with TF Serving's RapidJSON:
`_fastjson` (plain numeric predict bodies), orjson (one object, no escapes), the stdlib json
scanner (first-wins objects, NaN/Infinity; numbers too big for RapidJSON are sent on) and the
exact port `_rapidjson.parse`, which also words every parse error.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import orjson

from tfserve_magic.server import _fastjson, simd_decode
from tfserve_magic.server._rapidjson import JObj, JsonParseError, as_bytes, debug_string
from tfserve_magic.server._rapidjson import parse as exact_parse
from tfserve_magic.server.codec.errors import _MISSING, CodecError


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


# 257 levels deep (TensorShape's 254 dimensions, the batch list, the object, a b64 object), and
# the exact tier (pure Python) would otherwise spend seconds on megabytes of "[[[[".
MAX_DEPTH = 300
_STRUCTURE_ONLY = bytes(c for c in range(256) if c not in b'[]{}"')  # bytes.translate's delete
_STRUCTURAL = np.frombuffer(b'[]{}"', dtype=np.uint8)
_DEPTH_CHUNK = 1 << 20


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


def _doc_error(doc, words: str) -> CodecError:
    """TF Serving's "JSON Value: <the document> <words>" error for a malformed request."""
    return CodecError(f"JSON Value: {debug_string(doc)} {words}")


def _check_top(doc) -> str:
    """Steps after the parse shared by all POST APIs: object top level, signature_name type."""
    if not isinstance(doc, JObj):
        raise _doc_error(doc, "Is not object")
    sig = doc.find("signature_name", _MISSING)
    if sig is _MISSING:
        return ""
    if not isinstance(sig, (str, bytes)):
        raise _doc_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return as_bytes(sig).decode("utf-8", "surrogateescape")


def parse_predict(body: bytes) -> PredictBody:
    """Steps 1-2: parse the JSON and check `signature_name`; the tensors come later."""
    body = bytes(body)
    req = PredictBody(body)
    if not body:
        raise CodecError("JSON Parse error: The document is empty")
    # SIMD tier (simd_decode.py): the structure is proved here, the tensors in decode_predict
    if _by_simd(req):
        return req
    scanned = _fastjson.scan_predict_body(body)
    if scanned is not None:
        sig, req.key, req.fast = scanned
        req.signature_name = sig or ""
        req.path = "fast"
        return req
    req.doc, req.path = _parse_document(body)
    req.signature_name = _check_top(req.doc)
    return req


def _by_simd(req: PredictBody) -> bool:
    req.simd = simd_decode.parse(req.body)
    if req.simd is None:
        return False
    req.signature_name, req.path = req.simd.signature_name, "simd"
    return True


def parse_predict_gil_free(body: bytes) -> PredictBody | None:
    """`parse_predict` when the compiled SIMD decoder proves the body, else None.

    That decoder parses without the GIL, so app.py keeps such bodies in-process (on a decode
    thread) rather than sending them to a helper process, whose round trip then costs more.
    """
    if not simd_decode.COMPILED:
        return None
    req = PredictBody(bytes(body))
    return req if _by_simd(req) else None


def _document(req: PredictBody):
    if req.doc is None:
        req.doc, req.path = _parse_document(req.body)
    return req.doc


def _exact_parse_or_raise(body: bytes):
    """The exact tier's document; its parse errors as TF Serving words them."""
    try:
        return exact_parse(body)
    except JsonParseError as exc:
        raise CodecError(f"JSON Parse error: {exc.reason} at offset: {exc.offset}") from None
