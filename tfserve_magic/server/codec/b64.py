"""The {"b64": ...} form of binary strings, decoded as absl::Base64Unescape decodes it."""

from __future__ import annotations

import binascii
import re

from tfserve_magic.server._rapidjson import JObj, as_bytes, debug_string
from tfserve_magic.server.codec.errors import _Status


def _is_b64(v) -> bool:
    return (
        isinstance(v, JObj)
        and len(v.pairs) == 1
        and v.pairs[0][0] == "b64"
        and isinstance(v.pairs[0][1], (str, bytes))
    )


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
