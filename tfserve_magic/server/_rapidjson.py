"""RapidJSON 1.1.0 behaviour that TF Serving's REST errors expose, reproduced in Python.

TF Serving parses requests with RapidJSON (iterative mode, NaN/Inf tokens allowed, stop after
the first value) and prints pieces of the request into its error messages with a 256-byte
PrettyWriter. Clients see both, so this module reproduces them:

- `parse(data)`: a re-implementation of the iterative reader's observable grammar, its quirks (``-NaN``, ``Inf``,
  ``NaN.5``) and its error messages and offsets. It is the slow, always-correct tier of the codec:
  the codec first tries faster parsers and comes here for whatever they cannot vouch for.
- `debug_string(value)`: the truncated pretty print used inside error messages.
- `dtoa(v)`: RapidJSON's shortest double printing (``1e30``, ``0.001``, ``12.0``).
- `escape_json_bytes(b)`: RapidJSON's string escaping (raw bytes, no UTF-8 validation).

DOM: objects are `JObj` (all pairs kept in order; lookups return the first, as RapidJSON's
FindMember does), arrays are lists, strings are `str` (from the json module tier) or `bytes`
(from this parser), numbers are `int` inside RapidJSON's int64/uint64 range and `float` otherwise.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "JObj",
    "JsonParseError",
    "debug_string",
    "dtoa",
    "escape_json_bytes",
    "json_type_name",
    "parse",
]

_MISSING = object()


class JObj:
    """A JSON object that keeps every member in order (duplicates included)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs=None):
        self.pairs = list(pairs) if pairs is not None else []

    def find(self, key, default=None):
        """First member named `key` (RapidJSON's FindMember), else `default`."""
        for name, value in self.pairs:
            if name == key:
                return value
        return default

    def __contains__(self, key):
        return self.find(key, _MISSING) is not _MISSING

    def __len__(self):
        return len(self.pairs)

    def __eq__(self, other):
        return isinstance(other, JObj) and self.pairs == other.pairs

    __hash__ = None

    def __repr__(self):
        return f"JObj({self.pairs!r})"


class JsonParseError(ValueError):
    """A RapidJSON parse error: `.reason` is RapidJSON's English text, `.offset` its offset."""

    def __init__(self, reason: str, offset: int):
        super().__init__(f"{reason} at offset: {offset}")
        self.reason = reason
        self.offset = offset


# RapidJSON's GetParseError_En texts.
E_EMPTY = "The document is empty."
E_NOT_SINGULAR = "The document root must not be followed by other values."
E_VALUE_INVALID = "Invalid value."
E_OBJ_MISS_NAME = "Missing a name for object member."
E_OBJ_MISS_COLON = "Missing a colon after a name of object member."
E_OBJ_MISS_COMMA = "Missing a comma or '}' after an object member."
E_ARR_MISS_COMMA = "Missing a comma or ']' after an array element."
E_HEX = "Incorrect hex digit after \\u escape in string."
E_SURROGATE = "The surrogate pair in string is invalid."
E_ESCAPE = "Invalid escape character in string."
E_MISS_QUOTE = "Missing a closing quotation mark in string."
E_NUM_TOO_BIG = "Number too big to be stored in double."
E_MISS_FRACTION = "Miss fraction part in number."
E_MISS_EXPONENT = "Miss exponent in number."

# Iterative parser states.
(
    S_START,
    S_FINISH,
    S_ERROR,
    S_OBJ_INIT,
    S_MEMBER_KEY,
    S_KV_DELIM,
    S_MEMBER_VALUE,
    S_MEMBER_DELIM,
    S_OBJ_FINISH,
    S_ARR_INIT,
    S_ELEMENT,
    S_ELEM_DELIM,
    S_ARR_FINISH,
    S_VALUE,
) = range(14)

# Tokens.
T_LB, T_RB, T_LC, T_RC, T_COMMA, T_COLON, T_STRING, T_FALSE, T_TRUE, T_NULL, T_NUMBER = range(11)
_TOKEN = [T_NUMBER] * 256
for _ch, _tok in (
    ("[", T_LB),
    ("]", T_RB),
    ("{", T_LC),
    ("}", T_RC),
    (",", T_COMMA),
    (":", T_COLON),
    ('"', T_STRING),
    ("f", T_FALSE),
    ("t", T_TRUE),
    ("n", T_NULL),
):
    _TOKEN[ord(_ch)] = _tok

_E = S_ERROR
_SINK = [_E] * 11
_VALUE_ROW = [S_ARR_INIT, _E, S_OBJ_INIT, _E, _E, _E] + [S_VALUE] * 5
_PREDICT = {
    S_START: _VALUE_ROW,
    S_FINISH: _SINK,
    S_ERROR: _SINK,
    S_OBJ_INIT: [_E, _E, _E, S_OBJ_FINISH, _E, _E, S_MEMBER_KEY, _E, _E, _E, _E],
    S_MEMBER_KEY: [_E, _E, _E, _E, _E, S_KV_DELIM, _E, _E, _E, _E, _E],
    S_KV_DELIM: [S_ARR_INIT, _E, S_OBJ_INIT, _E, _E, _E] + [S_MEMBER_VALUE] * 5,
    S_MEMBER_VALUE: [_E, _E, _E, S_OBJ_FINISH, S_MEMBER_DELIM, _E, _E, _E, _E, _E, _E],
    S_MEMBER_DELIM: [_E, _E, _E, S_OBJ_FINISH, _E, _E, S_MEMBER_KEY, _E, _E, _E, _E],
    S_OBJ_FINISH: _SINK,
    S_ARR_INIT: [S_ARR_INIT, S_ARR_FINISH, S_OBJ_INIT, _E, _E, _E] + [S_ELEMENT] * 5,
    S_ELEMENT: [_E, S_ARR_FINISH, _E, _E, S_ELEM_DELIM, _E, _E, _E, _E, _E, _E],
    S_ELEM_DELIM: [S_ARR_INIT, S_ARR_FINISH, S_OBJ_INIT, _E, _E, _E] + [S_ELEMENT] * 5,
    S_ARR_FINISH: _SINK,
    S_VALUE: _SINK,
}
_HANDLE_ERROR = {
    S_START: E_EMPTY,
    S_FINISH: E_NOT_SINGULAR,
    S_OBJ_INIT: E_OBJ_MISS_NAME,
    S_MEMBER_DELIM: E_OBJ_MISS_NAME,
    S_MEMBER_KEY: E_OBJ_MISS_COLON,
    S_MEMBER_VALUE: E_OBJ_MISS_COMMA,
    S_KV_DELIM: E_VALUE_INVALID,
    S_ARR_INIT: E_VALUE_INVALID,
    S_ELEM_DELIM: E_VALUE_INVALID,
    S_ELEMENT: E_ARR_MISS_COMMA,
}

_WS_RE = re.compile(rb"[ \n\r\t]*")
_PLAIN_RE = re.compile(rb'[^"\\\x00-\x1f]*')
_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_POW10 = [float(f"1e{k}") for k in range(309)]


class _Reader:
    """One parse of one document; `pos` mirrors RapidJSON's stream position (`Tell()`)."""

    def __init__(self, data: bytes):
        self.data = data
        self.n = len(data)
        pos = 0
        # EncodedInputStream<UTF8> skips the BOM bytes one by one; offsets still count them.
        for bom in (0xEF, 0xBB, 0xBF):
            if pos < self.n and data[pos] == bom:
                pos += 1
        self.pos = pos

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < self.n else 0

    def consume(self, ch: int) -> bool:
        if self.pos < self.n and self.data[self.pos] == ch:
            self.pos += 1
            return True
        return False

    def skip_ws(self):
        self.pos = _WS_RE.match(self.data, self.pos).end()

    # -- values -------------------------------------------------------------------------------

    def parse_value(self):
        c = self.peek()
        if c == 0x6E:  # n
            return self._literal(b"ull", None)
        if c == 0x74:  # t
            return self._literal(b"rue", True)
        if c == 0x66:  # f
            return self._literal(b"alse", False)
        if c == 0x22:
            return self.parse_string()
        return self.parse_number()

    def _literal(self, rest: bytes, value):
        self.pos += 1
        for ch in rest:
            if not self.consume(ch):
                raise JsonParseError(E_VALUE_INVALID, self.pos)
        return value

    def parse_string(self) -> bytes:
        data = self.data
        self.pos += 1  # opening quote
        out = bytearray()
        while True:
            end = _PLAIN_RE.match(data, self.pos).end()
            out += data[self.pos : end]
            self.pos = end
            c = self.peek()
            if c == 0x5C:  # backslash
                escape_offset = self.pos
                self.pos += 1
                e = self.peek()
                if e in _ESCAPES:
                    self.pos += 1
                    out += _ESCAPES[e]
                elif e == 0x75:  # u
                    self.pos += 1
                    cp = self._hex4(escape_offset)
                    if 0xD800 <= cp <= 0xDBFF:
                        if not (self.consume(0x5C) and self.consume(0x75)):
                            raise JsonParseError(E_SURROGATE, escape_offset)
                        cp2 = self._hex4(escape_offset)
                        if not 0xDC00 <= cp2 <= 0xDFFF:
                            raise JsonParseError(E_SURROGATE, escape_offset)
                        cp = (((cp - 0xD800) << 10) | (cp2 - 0xDC00)) + 0x10000
                    out += chr(cp).encode("utf-8", "surrogatepass")
                else:
                    raise JsonParseError(E_ESCAPE, escape_offset)
            elif c == 0x22:
                self.pos += 1
                return bytes(out)
            elif c == 0:
                raise JsonParseError(E_MISS_QUOTE, self.pos)
            else:  # another control character
                raise JsonParseError(E_ESCAPE, self.pos)

    def _hex4(self, escape_offset: int) -> int:
        cp = 0
        for _ in range(4):
            v = _HEX.get(self.peek())
            if v is None:
                raise JsonParseError(E_HEX, escape_offset)
            cp = (cp << 4) | v
            self.pos += 1
        return cp

    def parse_number(self):
        """Port of Reader::ParseNumber (normal precision) with its offsets and quirks.

        The value of an ordinary number is Python's correctly rounded float of its text;
        RapidJSON's own normal-precision conversion can differ in the last bit.
        """
        start = self.pos
        is_digit = _is_digit
        minus = self.consume(0x2D)
        i = 0
        i64 = 0
        use64 = False
        sig_digits = 0
        d = 0.0
        nan_or_inf = False
        c = self.peek()
        if c == 0x30:
            self.pos += 1
        elif 0x31 <= c <= 0x39:
            i = c - 0x30
            self.pos += 1
            limit, last = (214748364, 0x38) if minus else (429496729, 0x35)
            while is_digit(self.peek()):
                if i >= limit and (i != limit or self.peek() > last):
                    i64 = i
                    use64 = True
                    break
                i = i * 10 + self.peek() - 0x30
                self.pos += 1
                sig_digits += 1
        elif c in (0x49, 0x4E):  # I, N
            nan_or_inf = True
            if self.consume(0x4E) and self.consume(0x61) and self.consume(0x4E):
                d = math.nan
            elif self.consume(0x49) and self.consume(0x6E) and self.consume(0x66):
                d = -math.inf if minus else math.inf
                if self.peek() == 0x69 and not all(self.consume(ch) for ch in b"inity"):
                    raise JsonParseError(E_VALUE_INVALID, self.pos)
            else:
                raise JsonParseError(E_VALUE_INVALID, self.pos)
        else:
            raise JsonParseError(E_VALUE_INVALID, self.pos)

        use_double = False
        if use64:
            limit, last = (0x0CCCCCCCCCCCCCCC, 0x38) if minus else (0x1999999999999999, 0x35)
            while is_digit(self.peek()):
                if i64 >= limit and (i64 != limit or self.peek() > last):
                    d = float(i64)
                    use_double = True
                    break
                i64 = i64 * 10 + self.peek() - 0x30
                self.pos += 1
                sig_digits += 1
        if use_double:
            while is_digit(self.peek()):
                if d >= 1.7976931348623157e307:
                    raise JsonParseError(E_NUM_TOO_BIG, start)
                d = d * 10 + (self.peek() - 0x30)
                self.pos += 1

        exp_frac = 0
        if self.consume(0x2E):
            if not is_digit(self.peek()):
                raise JsonParseError(E_MISS_FRACTION, self.pos)
            if not use_double:
                if not use64:
                    i64 = i
                while is_digit(self.peek()):
                    if i64 > 0x1FFFFFFFFFFFFF:
                        break
                    i64 = i64 * 10 + self.peek() - 0x30
                    self.pos += 1
                    exp_frac -= 1
                    if i64 != 0:
                        sig_digits += 1
                d = float(i64)
                use_double = True
            while is_digit(self.peek()):
                if sig_digits < 17:
                    d = d * 10.0 + (self.peek() - 0x30)
                    exp_frac -= 1
                    if d > 0.0:
                        sig_digits += 1
                self.pos += 1

        exp = 0
        if self.consume(0x65) or self.consume(0x45):
            if not use_double:
                d = float(i64 if use64 else i)
                use_double = True
            exp_minus = False
            if self.consume(0x2B):
                pass
            elif self.consume(0x2D):
                exp_minus = True
            if not is_digit(self.peek()):
                raise JsonParseError(E_MISS_EXPONENT, self.pos)
            exp = self.peek() - 0x30
            self.pos += 1
            if exp_minus:
                while is_digit(self.peek()):
                    exp = exp * 10 + self.peek() - 0x30
                    self.pos += 1
                    if exp >= 214748364:
                        while is_digit(self.peek()):
                            self.pos += 1
            else:
                max_exp = 308 - exp_frac
                while is_digit(self.peek()):
                    exp = exp * 10 + self.peek() - 0x30
                    self.pos += 1
                    if exp > max_exp:
                        raise JsonParseError(E_NUM_TOO_BIG, start)
            if exp_minus:
                exp = -exp

        if use_double:
            if nan_or_inf:
                # Quirk: "NaN.5" / "Inf1e2" keep parsing the tail as a fresh significand.
                d = _strtod_normal(d, exp + exp_frac)
                return -d if minus else d
            return float(self.data[start : self.pos])
        if nan_or_inf:
            return d
        value = i64 if use64 else i
        return -value if minus else value

    # -- document -----------------------------------------------------------------------------

    def parse_document(self):
        state = S_START
        stack = []  # (state to restore, container)
        container = None
        key = None
        root = None
        self.skip_ws()
        while self.peek() != 0:
            token = _TOKEN[self.peek()]
            dst = _PREDICT[state][token]
            if dst == S_ERROR:
                raise JsonParseError(_HANDLE_ERROR[state], self.pos)
            if dst in (S_OBJ_INIT, S_ARR_INIT):
                if state in (S_ARR_INIT, S_ELEM_DELIM):
                    back = S_ELEMENT
                elif state == S_KV_DELIM:
                    back = S_MEMBER_VALUE
                else:
                    back = state
                new = JObj() if dst == S_OBJ_INIT else []
                if container is None:
                    root = new
                elif isinstance(container, list):
                    container.append(new)
                else:
                    container.pairs.append((key, new))
                stack.append((back, container, key))
                container = new
                self.pos += 1
                state = dst
            elif dst == S_MEMBER_KEY:
                key = self.parse_string().decode("utf-8", "surrogateescape")
                state = dst
            elif dst == S_KV_DELIM:
                self.pos += 1
                state = dst
            elif dst == S_MEMBER_VALUE:
                container.pairs.append((key, self.parse_value()))
                state = dst
            elif dst == S_ELEMENT:
                container.append(self.parse_value())
                state = dst
            elif dst in (S_MEMBER_DELIM, S_ELEM_DELIM):
                self.pos += 1
                state = dst
            elif dst in (S_OBJ_FINISH, S_ARR_FINISH):
                if dst == S_OBJ_FINISH and state == S_MEMBER_DELIM:
                    raise JsonParseError(E_OBJ_MISS_NAME, self.pos)
                if dst == S_ARR_FINISH and state == S_ELEM_DELIM:
                    raise JsonParseError(E_VALUE_INVALID, self.pos)
                back, container, key = stack.pop()
                self.pos += 1
                state = S_FINISH if back == S_START else back
            else:  # a scalar root
                root = self.parse_value()
                state = S_FINISH
            if state == S_FINISH:
                return root  # kParseStopWhenDoneFlag: the rest is never read
            self.skip_ws()
        raise JsonParseError(_HANDLE_ERROR[state], self.pos)


def _is_digit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def _strtod_normal(d: float, p: int) -> float:
    def fast_path(significand, exp):
        if exp < -308:
            return 0.0
        if exp >= 0:
            return significand * _POW10[exp] if exp <= 308 else significand * math.inf
        return significand / _POW10[-exp]

    if p < -308:
        return fast_path(fast_path(d, -308), p + 308)
    return fast_path(d, p)


def parse(data: bytes):
    """Parse `data` exactly as TF Serving's RapidJSON does; raise `JsonParseError`."""
    return _Reader(bytes(data)).parse_document()


# -- printing ---------------------------------------------------------------------------------


def dtoa(v: float) -> str:
    """RapidJSON Writer's double format (finite values): shortest digits, Prettify rules."""
    if v == 0.0:
        return "-0.0" if math.copysign(1.0, v) < 0 else "0.0"
    sign = "-" if v < 0 else ""
    mant, _, e = repr(abs(v)).partition("e")
    int_part, _, frac_part = mant.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    k = int(e or 0) - len(frac_part)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + k
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    elif length == 1:
        text = digits + "e" + str(kk - 1)
    else:
        text = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + text


_ESCAPE_RE = re.compile(rb'["\\\x00-\x1f]')
_SHORT_ESCAPES = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}


def _escape_one(m):
    c = m.group()[0]
    if c == 0x22:
        return b'\\"'
    if c == 0x5C:
        return b"\\\\"
    return _SHORT_ESCAPES.get(c) or b"\\u00%02X" % c


def escape_json_bytes(raw: bytes) -> bytes:
    """`raw` as a quoted JSON string the way RapidJSON's Writer writes it (no UTF-8 check)."""
    return b'"' + _ESCAPE_RE.sub(_escape_one, raw) + b'"'


def as_bytes(s) -> bytes:
    """A DOM string's raw bytes (`str` from the json tier keeps invalid UTF-8 as escapes)."""
    return s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")


class _Full(Exception):
    pass


def debug_string(value, limit: int = 256) -> str:
    """TF Serving's JsonValueToDebugString: PrettyWriter, single-line arrays, ~256 bytes."""
    out = bytearray()
    levels = []  # [in_array, value_count]

    def event(text: bytes, opens=None):
        if len(out) >= limit:
            raise _Full
        if levels:
            level = levels[-1]
            if level[0]:
                if level[1] > 0:
                    out.extend(b", ")
            else:
                if level[1] > 0:
                    out.extend(b",\n" if level[1] % 2 == 0 else b": ")
                else:
                    out.extend(b"\n")
                if level[1] % 2 == 0:
                    out.extend(b" " * (4 * len(levels)))
            level[1] += 1
        out.extend(text)
        if opens is not None:
            levels.append([opens, 0])

    def close(in_array: bool):
        if len(out) >= limit:
            raise _Full
        empty = levels.pop()[1] == 0
        if in_array:
            out.extend(b"]")
        else:
            if not empty:
                out.extend(b"\n" + b" " * (4 * len(levels)))
            out.extend(b"}")

    def walk(v):
        if v is None:
            event(b"null")
        elif v is True:
            event(b"true")
        elif v is False:
            event(b"false")
        elif isinstance(v, int) and -(2**63) <= v < 2**64:
            event(str(v).encode())
        elif isinstance(v, (int, float)):
            v = _as_double(v)
            if not math.isfinite(v):  # Writer::Double refuses NaN/Inf: the print stops here
                event(b"")
                raise _Full
            event(dtoa(v).encode())
        elif isinstance(v, (str, bytes)):
            event(escape_json_bytes(as_bytes(v)))
        elif isinstance(v, list):
            event(b"[", opens=True)
            for item in v:
                walk(item)
            close(True)
        elif isinstance(v, JObj):
            event(b"{", opens=False)
            for name, item in v.pairs:
                event(escape_json_bytes(as_bytes(name)))
                walk(item)
            close(False)
        else:  # pragma: no cover - DOM values only
            raise TypeError(f"not a JSON DOM value: {type(v).__name__}")

    try:
        walk(value)
    except _Full:
        pass
    return bytes(out).decode("utf-8", "surrogateescape")


def _as_double(v) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def json_type_name(v) -> str:
    """RapidJSON's type names used in TF Serving messages."""
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, (int, float)):
        return "Number"
    if isinstance(v, (str, bytes)):
        return "String"
    if isinstance(v, list):
        return "Array"
    return "Object"
