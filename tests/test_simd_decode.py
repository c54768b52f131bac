"""The SIMD tier (server/simd_decode.py, issue 23) against the exact tiers it sits in front of.

Every body is decoded twice through the codec's public calls, with the tier on and off; the
answers must be the same tensors (dtype, shape, bytes), the same row flag and signature name,
or the same error text and status. The generated bodies cover random shapes and every numeric
dtype, float and integer edge values, several writers and layouts, and malformed or unusual
bodies that the tier must leave to the exact tiers.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import shutil
import sys
import threading
import time

import numpy as np
import orjson
import pytest

from tfserve_magic.server import codec, decode_pool, simd_decode
from tfserve_magic.server.codec import CodecError, InputSpec

pytestmark = pytest.mark.skipif(simd_decode.simdjson is None, reason="pysimdjson not installed")


@pytest.fixture(params=["compiled", "auto", "skeleton", "sizes"])
def proof(request, monkeypatch):
    """Each test that takes it runs with each shape proof: the compiled walk, then pysimdjson's
    usual choice and either of its proofs forced."""
    if request.param == "compiled":
        if simd_decode._simdnest is None:
            pytest.skip("the compiled decoder was not built (no C++ compiler)")
        monkeypatch.setattr(simd_decode, "COMPILED", True)
        return request.param
    monkeypatch.setattr(simd_decode, "COMPILED", False)
    forced = {"auto": simd_decode._BYTES_PER_ARRAY, "skeleton": math.inf, "sizes": 0}
    monkeypatch.setattr(simd_decode, "_BYTES_PER_ARRAY", forced[request.param])
    return request.param

NUMERIC = ["float32", "float64", "int8", "int16", "int32", "uint8", "int64", "uint32", "uint64"]
FLOAT_EDGES = [
    0.0, -0.0, 1e-45, 1.4e-45, -1e-45, 7e-46, 1.1754943508222875e-38, 3.4e38, 3.4028234663852886e38,
    3.5e38, -3.5e38, 5e-324, 1e-320, 2.2250738585072014e-308, 1.7976931348623157e308, 1e22,
    123456789.123456789, 0.1, 0.3333333432674408, 16777217.0, 9007199254740993.0, -2.5,
]
INT_EDGES = {
    "int8": [0, 1, -1, 127, 128, -129, 255, 2**31 - 1, -(2**31)],
    "int16": [0, -1, 32767, 32768, -32769, 2**31 - 1, -(2**31)],
    "int32": [0, -1, 2**31 - 1, -(2**31)],
    "uint8": [0, 1, 255, 256, -1, 2**31 - 1, -(2**31)],
    "int64": [0, -1, 2**63 - 1, -(2**63), 2**53 + 1],
    "uint32": [0, 1, 2**32 - 1, 2**31],
    "uint64": [0, 1, 2**64 - 1, 2**63, 2**63 - 1],
}
INT_OUT_OF_RANGE = {
    "int8": [2**31, -(2**31) - 1], "int16": [2**31], "int32": [2**31, -(2**31) - 1],
    "uint8": [2**31], "int64": [2**63, -(2**63) - 1], "uint32": [2**32, -1],
    "uint64": [-1, 2**64],
}


def specs_of(**dtypes):
    return {name: InputSpec(name, np.dtype(dt), None) for name, dt in dtypes.items()}


def outcome(body: bytes, specs: dict, simd: bool):
    """What the codec answers, with the SIMD tier on or off, and which converter answered."""
    saved = simd_decode.ENABLED
    simd_decode.ENABLED = simd
    try:
        request = codec.parse_predict(body)
        tensors, row = codec.decode_predict(request, specs)
    except CodecError as exc:
        return ("error", str(exc), exc.status), None
    finally:
        simd_decode.ENABLED = saved
    arrays = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(tensors.items())}
    return ("ok", arrays, row, request.signature_name), request.decoded_by


def check_same(body: bytes, specs: dict) -> str:
    """Assert both ways agree; returns the converter the SIMD-on run used."""
    fast, by = outcome(body, specs, True)
    exact, exact_by = outcome(body, specs, False)
    assert exact_by != "simd"
    assert fast == exact, body[:300]
    return by


# -- writing bodies -------------------------------------------------------------------------


def _text(value, dtype: str, rng: random.Random) -> str:
    if dtype.startswith("float"):
        choice = rng.randrange(7)
        if choice == 0:
            return json.dumps(value)
        if choice == 1:
            return orjson.dumps(float(np.float32(value))).decode() if abs(value) < 3.4e38 \
                else json.dumps(value)
        if choice == 2:
            return f"{value:.6e}"
        if choice == 3:
            return f"{value:.3E}"
        if choice == 4 and float(value).is_integer() and abs(value) < 1e20:
            return str(int(value)) if value or str(value)[0] != "-" else "-0"
        if choice == 5:
            return repr(float(value))
        return f"{value:.17g}"
    return str(int(value))


def _nest(texts: list, shape: tuple, layout: str) -> str:
    sep = {"compact": ",", "spaced": ", ", "pretty": ",\n  "}[layout]
    open_, close = ("[", "]") if layout != "pretty" else ("[\n ", "\n]")
    items = texts
    for dim in reversed(shape):
        items = [open_ + sep.join(items[i:i + dim]) + close for i in range(0, len(items), dim)]
    return items[0]


def _values(dtype: str, size: int, rng: random.Random, np_rng) -> list:
    if dtype.startswith("float"):
        out = []
        for _ in range(size):
            pick = rng.random()
            if pick < 0.3:
                out.append(rng.choice(FLOAT_EDGES) * rng.choice([1, -1]))
            elif pick < 0.5:
                out.append(0.0)
            else:
                out.append(float(np_rng.standard_normal() * 10.0 ** rng.randint(-8, 8)))
        return out
    edges = INT_EDGES[dtype]
    return [rng.choice(edges) if rng.random() < 0.4 else rng.randint(0, 100) for _ in range(size)]


def random_body(rng: random.Random, np_rng):
    """(body, specs, expect_simd): a valid numeric body in one of the forms the tier handles."""
    form = rng.choice(["instances", "inputs", "named"])
    names = ["x"] if form != "named" else rng.choice([["x"], ["a", "b"], ["b", "a", "c"]])
    dtypes = {name: rng.choice(NUMERIC) for name in names}
    batch = rng.randint(1, 4)
    layout = rng.choice(["compact", "spaced", "pretty"])
    tensors = {}
    for name in names:
        shape = (batch,) + tuple(rng.randint(1, 4) for _ in range(rng.randint(0, 3)))
        values = _values(dtypes[name], int(np.prod(shape)), rng, np_rng)
        tensors[name] = _nest([_text(v, dtypes[name], rng) for v in values], shape, layout)
    if form == "named":
        order = rng.sample(names, len(names))
        payload = "{" + ", ".join(f'"{n}": {tensors[n]}' for n in order) + "}"
    else:
        payload = tensors["x"]
    key = "instances" if form == "instances" else "inputs"
    members = [f'"{key}": {payload}']
    if rng.random() < 0.4:
        members.insert(rng.randrange(2), '"signature_name": "serving_default"')
    body = ("{" + ", ".join(members) + "}").encode()
    return body, specs_of(**dtypes)


# -- the tier agrees with the exact tiers ---------------------------------------------------


@pytest.mark.usefixtures("proof")
def test_random_numeric_bodies_agree_value_for_value():
    rng, np_rng = random.Random(2323), np.random.default_rng(2323)
    used = 0
    for _ in range(400):
        body, specs = random_body(rng, np_rng)
        used += check_same(body, specs) == "simd"
    assert used >= 250  # most have values in range: the tier really answered


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.usefixtures("proof")
def test_every_dtype_at_its_limits(dtype):
    values = FLOAT_EDGES if dtype.startswith("float") else INT_EDGES[dtype]
    body = json.dumps({"instances": [[v] for v in values]}).encode()
    assert check_same(body, specs_of(x=dtype)) == "simd"
    for bad in INT_OUT_OF_RANGE.get(dtype, []):  # the exact tiers say what is wrong
        body = json.dumps({"instances": [[1], [bad]]}).encode()
        assert check_same(body, specs_of(x=dtype)) != "simd"


def test_float_edge_values_bit_for_bit():
    body = b'{"inputs": [1e-45, 3.4e38, 3.5e38, -0.0, -0, 0, 5e-324, 1.7976931348623157e308]}'
    tensors, row = simd_decode.decode_numeric(body, specs_of(x="float32"))
    x = tensors["x"]
    assert not row and x.dtype == np.float32
    assert x.view(np.uint32).tolist() == np.array(
        [1e-45, 3.4e38, np.inf, -0.0, 0.0, 0.0, 0.0, np.inf], dtype=np.float32
    ).view(np.uint32).tolist()
    assert check_same(body, specs_of(x="float32")) == "simd"
    assert check_same(body, specs_of(x="float64")) == "simd"


@pytest.mark.usefixtures("proof")
def test_mnist_bodies_take_the_simd_tier():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 28, 28, 1)).astype(np.float32) / 255
    x[rng.random(x.shape) < 0.8] = 0.0
    specs = {"x": InputSpec("x", np.dtype("float32"), (-1, 28, 28, 1))}
    for body in (
        json.dumps({"signature_name": "serving_default", "instances": x.tolist()}).encode(),
        orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY),
        json.dumps({"inputs": x.tolist()}, indent=2).encode(),
    ):
        request = codec.parse_predict(body)
        assert request.path == "simd"
        tensors, row = codec.decode_predict(request, specs)
        assert request.decoded_by == "simd" and np.array_equal(tensors["x"], x)
        assert tensors["x"].dtype == np.float32 and row == (b'"inputs"' not in body[:40])
        assert check_same(body, specs) == "simd"


FALLBACK_BODIES = [
    b'{"instances": [[1, 2], [3]]}',  # ragged
    b'{"instances": [[1, 2], [3, 4, 5]]}',
    b'{"instances": [[1], [2, 3]]}',
    b'{"instances": [[1, [2]], [3, 4]]}',  # mixed depth
    b'{"instances": [[1, 2], 3]}',
    b'{"instances": [[[1]], [2]]}',
    b'{"instances": [[[1]], [[2]], [3]]}',
    b'{"instances": [[[1]], [5], [[[6]]]]}',  # same brackets and commas, wrong depths
    b'{"instances": [[1, 2], []]}',
    b'{"instances": [[1], []]}',  # the skeleton of [] is that of [5]: the count tells
    b'{"inputs": [[[1]], [[]], [[3]]]}',
    b'{"instances": [[]]}',
    b'{"instances": []}',
    b'{"inputs": []}',
    b'{"inputs": 5}',
    b'{"instances": [1, "2"]}',
    b'{"instances": ["a,b", "c"]}',
    b'{"instances": [true, 1]}',
    b'{"instances": [1, null]}',
    b'{"instances": [1, NaN]}',
    b'{"instances": [1, Infinity]}',
    b'{"instances": [-Infinity]}',
    b'{"instances": [1e400]}',
    b'{"instances": [-1e309]}',
    b'{"instances": [123456789012345678901234567890]}',
    b'{"instances": [1, 2]} trailing',
    b'{"instances": [1, 2]}\x00',
    b'{"instances": [1, 2], "instances": [3]}',  # duplicate key: first wins
    b'{"instances": [1], "inputs": [2]}',
    b'{"instances": [1], "extra": 1}',
    b'{"signature_name": 5, "instances": [1]}',
    b'{"signature_name": "a\\"b", "instances": [1]}',  # escape
    b'{"signature_name": "[,]", "instances": [1]}',
    b'{"instances": [{"x": 1}]}',
    b'{"instances": [{"b64": "aGk="}]}',
    b'{"inputs": {"x": [1], "y": [2]}}',  # an extra named input
    b'{"inputs": {"x": [1], "x": [2]}}',
    b'{"inputs": {"x": {"b64": "aGk="}}}',
    b'{"inputs": {}}',
    b'[1, 2]',
    b'{"instances": [1, 2]',
    b'{"instances": [01]}',
    b'{"instances": [1.]}',
    b'{"instances": [+1]}',
    b'\xef\xbb\xbf{"instances": [1, 2]}',
    b'{"instances": [1, 2\xff]}',
    b'{"instances": ' + b"[" * 65 + b"1" + b"]" * 65 + b"}",
    b'{"instances": ' + b"[" * 301 + b"1" + b"]" * 301 + b"}",
    # a first chain of 2,000 x 2,000 x 2,000 in 24 KB: refused before any tensor is allocated
    b'{"instances": [[[' + b",".join([b"1"] * 2000) + b"]" + b",[1]" * 1999 + b"]"
    + b",[[1]]" * 1999 + b"]}",
]


@pytest.mark.parametrize("body", FALLBACK_BODIES)
@pytest.mark.parametrize("dtype", ["float32", "int32", "uint64", "bool", "float16"])
@pytest.mark.usefixtures("proof")
def test_unusual_bodies_answer_as_before(body, dtype):
    specs = {"x": InputSpec("x", np.dtype(dtype), None)}
    check_same(body, specs)
    check_same(body, {**specs, "y": InputSpec("y", np.dtype("float32"), None)})


@pytest.mark.usefixtures("proof")
def test_what_the_tier_refuses():
    # A BOM (skipped by both parsers) and brackets inside the signature name are fine for the
    # sizes proof; test_unusual_bodies_answer_as_before shows the answers are the same.
    refused = [b for b in FALLBACK_BODIES if not b.startswith(b"\xef\xbb\xbf") and b"[,]" not in b]
    for body in refused:
        assert simd_decode.decode_numeric(body, specs_of(x="float32")) is None, body
    # Integer dtypes: no decimals, no out-of-range values, no negatives for unsigned.
    for body, dtype in ((b'{"inputs": [1, 2.0]}', "int32"), (b'{"inputs": [2147483648]}', "int8"),
                        (b'{"inputs": [-1]}', "uint32"), (b'{"inputs": [-1]}', "uint64"),
                        (b'{"inputs": [9223372036854775808]}', "int64")):
        assert simd_decode.decode_numeric(body, specs_of(x=dtype)) is None
    assert simd_decode.decode_numeric(b'{"inputs": [1]}', specs_of(x="bool")) is None
    assert simd_decode.decode_numeric(b'{"inputs": [1]}', {}) is None
    assert simd_decode.decode_numeric(b'{"inputs": [1]}', specs_of(a="int32", b="int32")) is None


_TOKENS = [b"[", b"]", b",", b" ", b"\n", b"-", b".", b"e", b"0", b"1", b"-0", b"1e400", b"NaN",
           b'"', b"{", b"}", b":", b"true", b"null", b"\\", b"\x00", b"\xff", b"9" * 25]


@pytest.mark.usefixtures("proof")
def test_mutated_bodies_answer_as_before():
    """Random byte mutations of valid numeric bodies: same answers (or errors) either way."""
    rng, np_rng = random.Random(23), np.random.default_rng(23)
    simd = 0
    for _ in range(600):
        body, specs = random_body(rng, np_rng)
        data = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            kind = rng.randrange(4)
            if kind == 0 and data:
                del data[at:at + rng.randint(1, 4)]
            elif kind == 1:
                data[at:at] = rng.choice(_TOKENS)
            elif kind == 2 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            else:
                end = min(len(data), at + rng.randint(1, 12))
                data[at:at] = data[at:end]
        simd += check_same(bytes(data), specs) == "simd"
    assert simd > 20  # some mutations keep the body valid and rectangular


# -- parsers, helpers, and the pure-Python path ---------------------------------------------


def test_several_bodies_parsed_before_decoding():
    """A body still waiting for decode_predict holds its parser; the next one gets another."""
    bodies = [json.dumps({"instances": [[i, i + 0.5]] * 3}).encode() for i in range(4)]
    requests = [codec.parse_predict(b) for b in bodies]
    assert all(r.path == "simd" for r in requests)
    for i, request in enumerate(requests):
        tensors, _ = codec.decode_predict(request, specs_of(x="float64"))
        assert tensors["x"].tolist() == [[i, i + 0.5]] * 3 and request.decoded_by == "simd"


def test_threads_decode_at_once():
    rng, np_rng = random.Random(5), np.random.default_rng(5)
    cases = [random_body(rng, np_rng) for _ in range(40)]
    expected = [outcome(body, specs, False)[0] for body, specs in cases]
    failures = []

    def work(offset):
        for i in range(offset, len(cases), 4):
            if outcome(*cases[i], True)[0] != expected[i]:
                failures.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_the_compiled_decoder_is_built_where_a_compiler_is():
    """setup.py builds it as optional: a failed build must show here, not only as slowness."""
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        pytest.skip("no C++ compiler on this machine: pysimdjson alone decodes")
    assert simd_decode._simdnest is not None, "tfserve_magic/server/_simdnest.cpp was not built"
    assert simd_decode.COMPILED
    body = json.dumps({"instances": [[0.5, 1.0], [3.4e38, -0.0]]}).encode()
    assert codec.parse_predict(body).path == "simd"


def test_the_compiled_decoder_lets_other_threads_run():
    """It parses without the GIL: another thread runs Python code during one large parse.

    The other thread takes timestamps (with the GIL) between short sleeps. With the GIL held
    for the whole parse, at most two fall strictly inside it (the bytecodes just before and
    after the call can hand the GIL over; measured: 1 with a GIL-holding build); let go, a
    parse of about 30 ms holds dozens.
    """
    if simd_decode._simdnest is None:
        pytest.skip("the compiled decoder was not built")
    x = np.random.default_rng(11).random((400, 28, 28, 1))
    body = json.dumps({"instances": x.tolist()}).encode()  # about 7 MB
    stamps, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.0002)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        while not stamps:
            time.sleep(0.001)
        inside = []
        for _ in range(3):  # a loaded machine may not schedule the ticker during one parse
            start = time.perf_counter()
            parsed = simd_decode._simdnest.parse(body)
            end = time.perf_counter()
            inside.append(sum(start < t < end for t in list(stamps)))
    finally:
        stop.set()
        ticker.join()
    assert parsed is not None and parsed[2][0] == (400, 28, 28, 1)
    assert max(inside) >= 5, inside


def test_decode_helper_processes_answer_the_same():
    """Large bodies are decoded in decode_pool helpers (their codec has the tier too)."""
    rng = np.random.default_rng(7)
    x = rng.random((30, 28, 28, 1)).astype(np.float32)
    body = json.dumps({"signature_name": "serving_default", "instances": x.tolist()}).encode()
    table = {"serving_default": {"x": InputSpec("x", np.dtype("float32"), (-1, 28, 28, 1))}}
    in_process = decode_pool._decode_predict(body, table)
    ragged = b'{"instances": [[1.5], [2, 3]]}'
    pool = decode_pool.DecodePool(size=1)
    try:
        kind, (signature_name, tensors, row) = pool.run("predict", body, table)
        with pytest.raises(CodecError) as info:
            pool.run("predict", ragged, table)
    finally:
        pool.close()
    assert kind == "ok" and signature_name == "serving_default" and row
    assert np.array_equal(tensors["x"], x) and tensors["x"].dtype == np.float32
    assert np.array_equal(in_process[1][1]["x"], x)
    expected = outcome(ragged, table["serving_default"], False)[0]
    assert ("error", str(info.value), info.value.status) == expected


def test_without_simdjson_the_pure_python_tiers_answer(monkeypatch):
    """No wheel for the platform: importing simdjson fails, the tier is off, answers unchanged."""
    body = json.dumps({"instances": [[0.5, 1.0], [3.4e38, -0.0]]}).encode()
    specs = specs_of(x="float32")
    expected = outcome(body, specs, True)
    monkeypatch.setitem(sys.modules, "simdjson", None)  # `import simdjson` raises ImportError
    try:
        module = importlib.reload(simd_decode)
        assert module.simdjson is None and not module.ENABLED
        assert module.parse(body) is None and module.decode_numeric(body, specs) is None
        request = codec.parse_predict(body)
        assert request.path == "fast"
        tensors, row = codec.decode_predict(request, specs)
        assert request.decoded_by == "fast"
        assert ("ok", {"x": (tensors["x"].dtype.str, (2, 2), tensors["x"].tobytes())}, row,
                "") == expected[0]
        assert str(pytest.raises(CodecError, codec.parse_predict, b"{").value).startswith(
            "JSON Parse error"
        )
    finally:
        monkeypatch.undo()
        importlib.reload(simd_decode)
    assert simd_decode.ENABLED and codec.parse_predict(body).path == "simd"
