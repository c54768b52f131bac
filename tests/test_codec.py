"""Unit tests of the server's JSON codec against TF Serving's REST rules (reference 1.2, 2, 3).

No server here: bodies go through parse_predict/decode_predict/encode_* directly. Messages are
compared in full because they are the contract clients see.
"""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from tfserve_magic.server import _fastjson, codec, simd_decode
from tfserve_magic.server._rapidjson import JObj, debug_string, dtoa, parse
from tfserve_magic.server.codec import CodecError, InputSpec, floats

F32 = {"x": InputSpec("x", np.dtype("float32"), (-1, 1))}


def spec(**dtypes):
    return {name: InputSpec(name, dt if dt == "string" else np.dtype(dt), None)
            for name, dt in dtypes.items()}


def decode(body, specs=F32):
    if isinstance(body, str):
        body = body.encode()
    request = codec.parse_predict(body)
    tensors, row = codec.decode_predict(request, specs)
    return tensors, row, request


def error(body, specs=F32):
    with pytest.raises(CodecError) as info:
        decode(body, specs)
    return info.value


def message(body, specs=F32):
    return str(error(body, specs))


@pytest.fixture
def without_simd(monkeypatch):
    """The tiers before the SIMD one (issue 23), which would take these bodies first; its own
    tests (tests/test_simd_decode.py) compare it with them."""
    monkeypatch.setattr(simd_decode, "ENABLED", False)


def slow_body(body: str) -> bytes:
    """The same document with a newline inside its payload, which the byte scanner refuses."""
    return body.replace("[", "[\n", 1).encode()


# -- 1.2 JSON parsing ---------------------------------------------------------------------


def test_empty_body():
    exc = error(b"")
    assert (str(exc), exc.status) == ("JSON Parse error: The document is empty", 400)


@pytest.mark.parametrize(
    "body, expected",
    [
        ("   ", "The document is empty. at offset: 3"),
        ('{"instances": [x]}', "Invalid value. at offset: 15"),
        ('{"instances": [1.]}', "Miss fraction part in number. at offset: 17"),
        ('{"instances": [1e]}', "Miss exponent in number. at offset: 17"),
        ('{"instances": [-]}', "Invalid value. at offset: 16"),
        ('{"instances": [1,]}', "Invalid value. at offset: 17"),
        ('{"instances": [1 2]}', "Missing a comma or ']' after an array element. at offset: 17"),
        ('{"a":1 "b":2}', "Missing a comma or '}' after an object member. at offset: 7"),
        ('{"a":1,}', "Missing a name for object member. at offset: 7"),
        ('{"a" 1}', "Missing a colon after a name of object member. at offset: 5"),
        ('{"instances": [1]', "Missing a comma or '}' after an object member. at offset: 17"),
        ('{"instances": tru}', "Invalid value. at offset: 17"),
        ('{"instances": [Infinit]}', "Invalid value. at offset: 22"),
        ('{"a": "abc', "Missing a closing quotation mark in string. at offset: 10"),
        ('{"a": "\\x"}', "Invalid escape character in string. at offset: 7"),
        ('{"a": "\\u12G4"}', "Incorrect hex digit after \\u escape in string. at offset: 7"),
        ('{"a": "\\ud800"}', "The surrogate pair in string is invalid. at offset: 7"),
        ('{"a": [1e400]}', "Number too big to be stored in double. at offset: 7"),
        ("{,}", "Missing a name for object member. at offset: 1"),
    ],
)
def test_parse_errors_match_rapidjson(body, expected):
    exc = error(body)
    assert str(exc) == "JSON Parse error: " + expected
    assert exc.status == 400


def test_control_character_in_string():
    assert message(b'{"a": "\x01"}') == (
        "JSON Parse error: Invalid escape character in string. at offset: 7"
    )


def test_anything_after_the_first_value_is_ignored():
    tensors, row, _ = decode('{"instances": [1.0]} garbage {')
    assert row and tensors["x"].tolist() == [1.0]


def test_nan_and_infinity_tokens_are_numbers():
    for body in (
        '{"instances": [NaN, Infinity, -Infinity, Inf, -Inf, -NaN]}',
        slow_body('{"instances": [NaN, Infinity, -Infinity, Inf, -Inf, -NaN]}').decode(),
    ):
        x = decode(body)[0]["x"]
        assert np.isnan(x[[0, 5]]).all()
        assert x[1:5].tolist() == [math.inf, -math.inf, math.inf, -math.inf]


def test_top_level_must_be_an_object():
    assert message("[1, 2]") == "JSON Value: [1, 2] Is not object"
    assert message('"x"') == 'JSON Value: "x" Is not object'


def test_first_duplicate_key_wins():
    tensors = decode('{"instances": [1.0], "instances": [2.0, 3.0]}')[0]
    assert tensors["x"].tolist() == [1.0]
    request = codec.parse_predict(b'{"signature_name": "a", "signature_name": "b", "inputs": [1]}')
    assert request.signature_name == "a"


def test_signature_name():
    assert codec.parse_predict(b'{"instances": [1]}').signature_name == ""
    for body in (
        b'{"signature_name": "serving_default", "instances": [[1.0]]}',
        b'{"instances": [[1.0]], "signature_name": "serving_default"}',
        b'{"signature_name": "serving_default", "instances": [{"x": [1.0]}]}',
    ):
        assert codec.parse_predict(body).signature_name == "serving_default"
    exc = error('{"signature_name": 3, "instances": [1]}')
    assert str(exc) == (
        'JSON Value: {\n    "signature_name": 3,\n    "instances": [1]\n} not formatted '
        "correctly. 'signature_name' key must be a string value."
    )


def test_parse_errors_come_before_any_model_lookup():
    with pytest.raises(CodecError, match="JSON Parse error"):
        codec.parse_predict(b'{"instances": [1,,2]}')


def test_utf8_bom_is_skipped():
    assert decode(b'\xef\xbb\xbf{"instances": [2.0]}')[0]["x"].tolist() == [2.0]
    # RapidJSON skips the BOM bytes but still counts them in offsets.
    assert message(b"\xef\xbb\xbf{,}") == (
        "JSON Parse error: Missing a name for object member. at offset: 4"
    )


def test_nul_byte_ends_the_document():
    assert message(b'{"instances": [1]\x00}') == (
        "JSON Parse error: Missing a comma or '}' after an object member. at offset: 17"
    )
    assert decode(b'{"instances": [1]}\x00{')[0]["x"].tolist() == [1.0]


# -- 2.1 / 2.2 / 2.3 forms ----------------------------------------------------------------


def test_instances_and_inputs_keys():
    assert message('{"instances": [1], "inputs": [1]}') == (
        'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly '
        "expecting only one of 'inputs' or 'instances' keys to exist "
    )
    assert message('{"x": 1}') == "Missing 'inputs' or 'instances' key"
    assert message('{"instances": 1}') == (
        "JSON Value: {\n    \"instances\": 1\n} Expecting 'instances' to be an list/array"
    )
    assert message('{"instances": []}') == (
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"
    )


def test_no_inputs_in_signature():
    assert message('{"instances": [1]}', {}) == "Failed to get input map for signature: DEFAULT"


def test_half_plus_two_examples_from_the_reference():
    specs = spec(x="float32")
    for body, expected in (
        ('{"instances": [1.0, 2.0, 5.0]}', b'{"predictions":[2.5,3.0,4.5]}'),
        ('{"inputs": [3.0, 4.0]}', b'{"outputs":[3.5,4.0]}'),
        ('{"instances": [[1.0, 2.0], [3.0, 4.0]]}', b'{"predictions":[[2.5,3.0],[3.5,4.0]]}'),
    ):
        tensors, row, _ = decode(body, specs)
        y = tensors["x"] * np.float32(0.5) + np.float32(2)
        assert codec.encode_predict({"y": y}, row) == expected
        assert json.loads(expected) == json.loads(codec.encode_predict({"y": y}, row))


@pytest.mark.usefixtures("without_simd")
def test_row_plain_list_stacks_elements():
    tensors, row, request = decode('{"instances": [[1, 2], [3, 4], [5, 6]]}')
    assert row and request.decoded_by == "fast"
    assert tensors["x"].shape == (3, 2) and tensors["x"].dtype == np.float32
    scalars = decode('{"instances": [1, 2, 3]}')[0]["x"]
    assert scalars.shape == (3,)


def test_row_plain_list_needs_a_single_input():
    assert message('{"instances": [1]}', spec(a="float32", b="float32")) == (
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"
    )


def test_row_named_objects():
    specs = spec(a="float32", b="int64")
    tensors, row, _ = decode('{"instances": [{"a": [1, 2], "b": 3}, {"b": 4, "a": [5, 6]}]}', specs)
    assert row
    assert tensors["a"].tolist() == [[1, 2], [5, 6]] and tensors["a"].dtype == np.float32
    assert tensors["b"].tolist() == [3, 4] and tensors["b"].dtype == np.int64
    single = decode('{"instances": [{"x": 1.0}, {"x": 2.0}]}')[0]
    assert single["x"].tolist() == [1.0, 2.0]


def test_row_named_object_errors():
    specs = spec(a="float32", b="float32")
    assert message('{"instances": [{"a": 1, "b": 2, "c": 3}]}', specs) == (
        "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: c"
    )
    assert message('{"instances": [{"a": 1, "b": 2}, {"b": 1}]}', specs) == (
        "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"b\": 1\n} "
        "keys must be equal to: a,b"
    )
    assert message('{"instances": [{"a": 1, "b": 2}, [1]]}', specs) == (
        "Expecting object but got list at item 1 of input list"
    )
    assert message('{"instances": [[1], {"x": [1]}]}') == (
        "Expecting value/list but got object at item 1 of input list"
    )


def test_repeated_input_name_in_an_instance_is_checked_and_first_used():
    tensors = decode('{"instances": [{"x": 1, "x": 2}, {"x": 3}]}')[0]
    assert tensors["x"].tolist() == [1.0, 3.0]
    assert message('{"instances": [{"x": 1, "x": [2]}]}') == (
        "Failed to process element: 0 key: x of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting shape [] but got: [1]"
    )


def test_b64_object_counts_as_a_value_and_mixes_with_strings():
    tensors = decode('{"instances": ["abc", {"b64": "aGk="}]}', spec(x="string"))[0]
    assert tensors["x"].dtype == object and tensors["x"].tolist() == [b"abc", b"hi"]
    col = decode('{"inputs": {"b64": "AAE="}}', spec(x="string"))[0]
    assert col["x"].shape == () and col["x"].item() == b"\x00\x01"


def test_b64_errors():
    strings = spec(x="string")
    assert message('{"instances": [{"b64": "a-k="}]}', strings) == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Unable to base64 decode"
    )
    assert message('{"inputs": [{"b64": 1}]}', strings) == (
        'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'
    )
    # Unpadded and whitespace-broken base64 is fine for absl::Base64Unescape.
    ok = decode('{"inputs": [{"b64": "aGk"}, {"b64": "aG k="}]}', strings)[0]
    assert ok["x"].tolist() == [b"hi", b"hi"]


def test_strings_are_raw_utf8_bytes():
    tensors = decode('{"inputs": ["h\\u00e9", "\\ud83d\\ude00", "a\\nb"]}', spec(x="string"))[0]
    assert tensors["x"].tolist() == ["hé".encode(), "😀".encode(), b"a\nb"]
    raw = decode(b'{"inputs": ["\xff\xfe"]}', spec(x="string"))[0]
    assert raw["x"].tolist() == [b"\xff\xfe"]  # not UTF-8 checked, like RapidJSON


def test_columnar_forms():
    assert decode('{"inputs": 2.0}')[0]["x"].shape == ()
    empty = decode('{"inputs": []}')[0]["x"]
    assert empty.shape == (0,) and empty.dtype == np.float32
    tensors, row, _ = decode('{"inputs": {"x": [[1, 2]], "ignored": "extra"}}')
    assert not row and tensors["x"].tolist() == [[1.0, 2.0]]
    specs = spec(a="float32", b="int32")
    different = decode('{"inputs": {"a": [1, 2, 3], "b": [[7]]}}', specs)[0]
    assert different["a"].shape == (3,) and different["b"].shape == (1, 1)
    assert message('{"inputs": {"a": [1]}}', specs) == "Missing named input: b in 'inputs' object."
    assert message('{"inputs": [1]}', specs) == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors "
        "required as per tensorinfo_map"
    )


# -- ragged rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ('{"instances": [[1, 2, 3, 4], [1, 2, 3]]}',
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting tensor size: 4 but got: 3"),
        ('{"instances": [[1, 2], [[1, 2]]]}',
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting shape [2] but got: [1,2]"),
        ('{"instances": [1, [1]]}',
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting shape [] but got: [1]"),
        ('{"instances": [[[1, 2], [3]]]}',
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ('{"instances": [[[1], 2]]}',
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ('{"instances": [[1, [2]]]}',
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Encountered list at unexpected level: 1 expected < 1"),
        ('{"inputs": [[1, 2], [3]]}',
         "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ('{"inputs": [[1], 2]}',
         "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ],
)
def test_ragged_errors(body, expected):
    exc = error(body)
    assert (str(exc), exc.status) == (expected, 400)


def test_empty_list_is_a_zero_dimension():
    assert decode('{"inputs": [[]]}')[0]["x"].shape == (1, 0)
    assert decode('{"instances": [[], []]}')[0]["x"].shape == (2, 0)


# -- 2.4 type rules -------------------------------------------------------------------------


def type_error(value: str, jtype: str, dtype: str, row=True) -> str:
    inner = f"JSON Value: {value} Type: {jtype} is not of expected type: {dtype}"
    if not row:
        return inner
    return f"Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: {inner}"


def test_ints_are_accepted_for_floats():
    x = decode('{"instances": [1435774380, 2, -3]}', spec(x="float32"))[0]["x"]
    assert x.tolist() == [1435774336.0, 2.0, -3.0]
    d = decode('{"instances": [1435774380, 0.1]}', spec(x="float64"))[0]["x"]
    assert d.tolist() == [1435774380.0, 0.1]


def test_floats_out_of_range_become_inf_or_zero():
    x = decode('{"inputs": [1e39, -1e39, 1e-50]}', spec(x="float32"))[0]["x"]
    assert x.tolist() == [math.inf, -math.inf, 0.0]


def test_decimals_are_rejected_for_ints():
    assert message('{"instances": [1.0]}', spec(x="int32")) == type_error("1.0", "Number", "int32")
    assert message('{"instances": [5.0]}', spec(x="int64")) == type_error("5.0", "Number", "int64")
    assert message('{"inputs": [1e2]}', spec(x="int64")) == type_error(
        "100.0", "Number", "int64", row=False
    )


def test_int32_range_and_narrow_types():
    big = message('{"instances": [2147483648]}', spec(x="int32"))
    assert big == type_error("2147483648", "Number", "int32")
    ok = decode('{"instances": [2147483647, -2147483648]}', spec(x="int32"))[0]["x"]
    assert ok.tolist() == [2147483647, -2147483648]
    # int8/int16/uint8 only get the int32 check; the value is narrowed when the tensor is built.
    narrowed = decode('{"instances": [300, -1]}', spec(x="uint8"))[0]["x"]
    assert narrowed.dtype == np.uint8 and narrowed.tolist() == [44, 255]
    assert message('{"instances": [3000000000]}', spec(x="int16")) == type_error(
        "3000000000", "Number", "int16"
    )


def test_int64_and_unsigned_rules():
    assert decode('{"inputs": [9223372036854775807]}', spec(x="int64"))[0]["x"].tolist() == [
        9223372036854775807
    ]
    assert message('{"inputs": [9223372036854775808]}', spec(x="int64")) == type_error(
        "9223372036854775808", "Number", "int64", row=False
    )
    assert message('{"inputs": [-1]}', spec(x="uint32")) == type_error(
        "-1", "Number", "uint32", row=False
    )
    assert message('{"inputs": [4294967296]}', spec(x="uint32")) == type_error(
        "4294967296", "Number", "uint32", row=False
    )
    u64 = decode('{"inputs": [18446744073709551615, -0]}', spec(x="uint64"))[0]["x"]
    assert u64.dtype == np.uint64 and u64.tolist() == [18446744073709551615, 0]
    too_big = message('{"inputs": [18446744073709551616]}', spec(x="uint64"))
    assert too_big == type_error("18446744073709552000.0", "Number", "uint64", row=False)


def test_bool_only_true_false():
    ok = decode('{"instances": [true, false]}', spec(x="bool"))[0]["x"]
    assert ok.dtype == np.bool_ and ok.tolist() == [True, False]
    assert message('{"instances": [1]}', spec(x="bool")) == type_error("1", "Number", "bool")
    assert message('{"instances": [true]}') == type_error("true", "True", "float")
    assert message('{"instances": [1.0, false]}') == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: false Type: False is not of expected type: float"
    )


def test_null_strings_and_objects_rejected_for_numbers():
    assert message('{"instances": [null]}') == type_error("null", "Null", "float")
    assert message('{"instances": ["1"]}') == type_error('"1"', "String", "float")
    assert message('{"inputs": [{"b64": "aGk="}]}') == (
        'JSON Value: {\n    "b64": "aGk="\n} Type: Object is not of expected type: float'
    )
    assert message('{"instances": [3]}', spec(x="string")) == type_error("3", "Number", "string")


def test_unsupported_dtypes_are_501_in_columns_and_400_in_rows():
    for dtype, name in ((np.float16, "half"), (np.complex64, "complex64"), (np.uint16, "uint16")):
        specs = {"x": InputSpec("x", np.dtype(dtype), None)}
        exc = error('{"inputs": [1.0]}', specs)
        assert (str(exc), exc.status) == (f"Conversion of JSON Value: 1.0 to type: {name}", 501)
        exc = error('{"instances": [1.0]}', specs)
        assert exc.status == 400 and str(exc) == (
            "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
            f"Conversion of JSON Value: 1.0 to type: {name}"
        )


def test_bfloat16_name():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    specs = {"x": InputSpec("x", np.dtype(ml_dtypes.bfloat16), None)}
    assert message('{"inputs": [1]}', specs) == "Conversion of JSON Value: 1 to type: bfloat16"


def test_debug_print_is_truncated_like_tf_serving():
    long_value = debug_string(JObj([("instances", list(range(1000)))]))
    assert 256 <= len(long_value) < 300 and long_value.startswith('{\n    "instances": [0, 1, 2')
    assert debug_string(JObj([("a", [1.5, 1e30, 1e-7, -0.0, 12.0])])) == (
        '{\n    "a": [1.5, 1e30, 1e-7, -0.0, 12.0]\n}'
    )
    assert debug_string([1, math.nan, 2]) == "[1, "  # RapidJSON's writer stops at NaN


def test_dtoa_matches_rapidjson_prettify():
    cases = {0.1: "0.1", 100.0: "100.0", 1e21: "1e21", 1e20: "100000000000000000000.0",
             1.5e-7: "1.5e-7", 0.001234: "0.001234", 123456.789: "123456.789", -2.5: "-2.5"}
    for value, text in cases.items():
        assert dtoa(value) == text


def test_rapidjson_quirks():
    assert parse(b'{"a": NaN.5}').find("a") == 0.5  # RapidJSON 1.1.0 keeps reading after NaN
    assert math.isnan(parse(b"[-NaN]")[0])
    assert parse(b'{"a": -0}').find("a") == 0 and isinstance(parse(b"[-0]")[0], int)
    assert isinstance(parse(b"[18446744073709551616]")[0], float)


# -- 2.5 responses --------------------------------------------------------------------------


def test_predictions_and_outputs_keys():
    y = np.array([[1.0], [2.0]], np.float32)
    assert codec.encode_predict({"y": y}, True) == b'{"predictions":[[1.0],[2.0]]}'
    assert codec.encode_predict({"y": y}, False) == b'{"outputs":[[1.0],[2.0]]}'


def test_several_outputs():
    outputs = {"b": np.array([[1, 2], [3, 4]], np.int64), "a": np.array([0.5, 1.5], np.float32)}
    row = json.loads(codec.encode_predict(outputs, True))
    assert row == {"predictions": [{"a": 0.5, "b": [1, 2]}, {"a": 1.5, "b": [3, 4]}]}
    col = json.loads(codec.encode_predict(outputs, False))
    assert col == {"outputs": {"a": [0.5, 1.5], "b": [[1, 2], [3, 4]]}}
    different = {"a": np.zeros(3, np.float32), "b": np.zeros((1, 2), np.float32)}
    assert json.loads(codec.encode_predict(different, False))["outputs"]["a"] == [0.0] * 3


def test_row_format_output_checks():
    with pytest.raises(CodecError) as info:
        codec.encode_predict({"sum": np.array(6.0, np.float32)}, True)
    assert str(info.value) == "Tensor name: sum has no shape information "
    with pytest.raises(CodecError) as info:
        codec.encode_predict({"a": np.zeros(2), "b": np.zeros(3)}, True)
    assert str(info.value) == "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    assert codec.encode_predict({"sum": np.array(6.0, np.float32)}, False) == b'{"outputs":6.0}'
    assert codec.encode_predict({"y": np.zeros((0, 10), np.float32)}, True) == (
        b'{"predictions":[]}'
    )
    assert codec.encode_predict({"y": np.zeros((2, 0), np.float32)}, False) == (
        b'{"outputs":[[],[]]}'
    )


def test_value_encodings():
    outputs = {
        "i": np.array([-1, 2**40], np.int64),
        "u": np.array([2**64 - 1, 0], np.uint64),
        "flag": np.array([True, False]),
        "text": np.array([b'say "hi"\n', b"\xc3\xa9"], dtype=object),
        "png_bytes": np.array([b"\x00\xff", b""], dtype=object),
    }
    body = codec.encode_predict(outputs, False)
    assert json.loads(body) == {
        "outputs": {
            "flag": [True, False],
            "i": [-1, 2**40],
            "png_bytes": [{"b64": "AP8="}, {"b64": ""}],
            "text": ['say "hi"\n', "é"],
            "u": [2**64 - 1, 0],
        }
    }
    assert b'"say \\"hi\\"\\n"' in body


def test_unsupported_output_dtype():
    with pytest.raises(CodecError) as info:
        codec.encode_predict({"h": np.ones(2, np.float16)}, True)
    assert (str(info.value), info.value.status) == (
        "Failed to write JSON value for tensor type: half", 400
    )


@pytest.mark.parametrize(
    "value, dtype, text",
    [
        (4, np.float32, "4.0"),
        (0.5, np.float32, "0.5"),
        (0.1, np.float32, "0.1"),
        (1 / 3, np.float32, "0.333333343"),
        (9000000, np.float32, "9e+06"),
        (0.00003, np.float32, "3e-05"),
        (-0.0, np.float32, "-0.0"),
        (100000, np.float32, "100000.0"),
        (16777217, np.float32, "16777216.0"),
        (0.1, np.float64, "0.1"),
        (0.1 + 0.2, np.float64, "0.30000000000000004"),
        (1 / 3, np.float64, "0.33333333333333331"),
        (2.5, np.float64, "2.5"),
        (math.nan, np.float32, "NaN"),
        (math.inf, np.float64, "Infinity"),
        (-math.inf, np.float32, "-Infinity"),
    ],
)
def test_format_float(value, dtype, text):
    assert codec.format_float(value, dtype) == text
    encoded = codec.encode_predict({"y": np.array([value], dtype)}, False)
    assert encoded == b'{"outputs":[' + text.encode() + b"]}"


def test_format_floats_vectorised_agrees_with_scalar():
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        values = np.concatenate([
            rng.standard_normal(300) * 10.0 ** rng.integers(-12, 12, 300),
            rng.integers(-10**6, 10**6, 100), [0.0, -0.0, 1e-45, 3.4e38],
        ]).astype(dtype)
        encoded = codec.encode_predict({"y": values}, False).decode()
        assert encoded == '{"outputs":[' + ",".join(
            codec.format_float(v, dtype) for v in values
        ) + "]}"
        assert np.array_equal(np.array(json.loads(encoded)["outputs"], dtype), values)


def test_format_floats_on_every_kind_of_float32():
    """Random bit patterns: subnormals, huge values, NaNs, near-ties of the %.6g rounding."""
    rng = np.random.default_rng(11)
    values = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([values, (rng.random(5000) * 1e6).round(1).astype(np.float32)])
    with np.errstate(all="ignore"):
        texts = floats._format_floats(values)
    assert texts == [codec.format_float(v, np.float32) for v in values.tolist()]


def test_error_body():
    assert codec.encode_error('bad "x"\n') == b'{"error":"bad \\"x\\"\\n"}'
    assert json.loads(codec.encode_error("é")) == {"error": "é"}


# -- 3 classify / regress -------------------------------------------------------------------


def examples(body: str):
    from tensorflow.core.example import example_pb2

    parsed = codec.parse_examples(body.encode(), "classify")
    out = []
    for raw in parsed.serialized:
        example = example_pb2.Example()
        example.ParseFromString(raw)
        out.append(example)
    return parsed, out


def feature_values(example, name):
    feature = example.features.feature[name]
    kind = feature.WhichOneof("kind")
    return kind, list(getattr(feature, kind).value) if kind else []


def test_examples_build_features_and_merge_context():
    parsed, (first, second) = examples(
        '{"signature_name": "s", "context": {"ctx": "shared", "x": 1},'
        ' "examples": [{"x": 4, "f": [1.5, 2e0], "t": true, "b": {"b64": "aGk="}}, {"s": "é"}]}'
    )
    assert parsed.signature_name == "s"
    assert feature_values(first, "x") == ("int64_list", [4])  # the example overrides context
    assert feature_values(first, "f") == ("float_list", [1.5, 2.0])
    assert feature_values(first, "t") == ("int64_list", [1])
    assert feature_values(first, "b") == ("bytes_list", [b"hi"])
    assert feature_values(first, "ctx") == ("bytes_list", [b"shared"])
    assert feature_values(second, "s") == ("bytes_list", ["é".encode()])
    assert feature_values(second, "x") == ("int64_list", [1])  # context merged into each


@pytest.mark.parametrize(
    "body, expected",
    [
        ('{"x": 1}', "When method is classify, key 'examples' is expected and was not found"),
        ('{"examples": {}}', "Expecting 'examples' value to be an list/array"),
        ('{"examples": []}', "'examples' value is an empty array"),
    ],
)
def test_examples_key_errors(body, expected):
    with pytest.raises(CodecError) as info:
        codec.parse_examples(body.encode(), "regress")
    printed = debug_string(parse(body.encode()))
    assert str(info.value) == f"JSON Value: {printed} {expected}"


@pytest.mark.parametrize(
    "body, expected",
    [
        ('{"examples": [[1]]}', "Example must be JSON object but got JSON Array"),
        ('{"context": 3, "examples": [{}]}', "Example must be JSON object but got JSON Number"),
        ('{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
        ('{"examples": [{"x": [[1]]}]}',
         "Feature: x has element with unexpected JSON type: Array"),
        ('{"examples": [{"x": {"a": 1}}]}',
         "Feature: x has element with unexpected JSON type: Object"),
        ('{"examples": [{"x": [1, 2.5]}]}',
         "Unexpected element type in feature: x expecting type: int64"),
        ('{"examples": [{"x": [2.5, "a"]}]}',
         "Unexpected element type in feature: x expecting type: float"),
        ('{"examples": [{"x": ["a", true]}]}',
         "Unexpected element type in feature: x expecting type: bytes"),
        ('{"examples": [{"x": 9223372036854775808}]}',
         "Feature: x has uint64_t element. Only int64_t is supported."),
        ('{"examples": [{"x": {"b64": "%%%"}}]}', "Unable to base64 decode"),
    ],
)
def test_example_errors(body, expected):
    with pytest.raises(CodecError) as info:
        codec.parse_examples(body.encode(), "classify")
    assert (str(info.value), info.value.status) == (expected, 400)


def test_encode_classify_and_regress():
    classes = np.array([[b"cat", b"dog"], [b"a", b"b"]], dtype=object)
    scores = np.array([[0.25, 0.75], [1 / 3, 0.0]], np.float32)
    assert codec.encode_classify(classes, scores) == (
        b'{"results":[[["cat",0.25],["dog",0.75]],[["a",0.333333343],["b",0.0]]]}'
    )
    assert codec.encode_classify(None, np.array([[3.0]], np.float32)) == (
        b'{"results":[[["",3.0]]]}'
    )
    assert codec.encode_regress(np.array([[3.5], [0.1]], np.float32)) == b'{"results":[3.5,0.1]}'


# -- the fast path --------------------------------------------------------------------------


def mnist_body(n: int, dumps=json.dumps, seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28, 1)).astype(np.float32) / 255
    x[rng.random(x.shape) < 0.8] = 0.0
    body = dumps({"instances": x.tolist()})
    return (body.encode() if isinstance(body, str) else body), x


@pytest.mark.parametrize("dumps", [json.dumps, orjson.dumps])
@pytest.mark.usefixtures("without_simd")
def test_mnist_bodies_take_the_fast_path(dumps):
    for n in (1, 100):
        body, x = mnist_body(n, dumps)
        specs = {"x": InputSpec("x", np.dtype("float32"), (-1, 28, 28, 1))}
        tensors, row, request = decode(body, specs)
        assert request.path == "fast" and request.decoded_by == "fast"
        assert row and tensors["x"].shape == (n, 28, 28, 1)
        assert np.array_equal(tensors["x"], x)
    sig_body = b'{"signature_name": "serving_default", ' + body[1:]
    request = codec.parse_predict(sig_body)
    assert request.path == "fast" and request.signature_name == "serving_default"


@pytest.mark.usefixtures("without_simd")
def test_pretty_and_exponent_bodies_use_orjson_and_agree():
    body, x = mnist_body(2)
    fast = decode(body)[0]["x"]
    pretty = json.dumps({"instances": x.tolist()}, indent=2).encode()
    tensors, _, request = decode(pretty)
    assert request.path == "orjson" and _same(tensors["x"], fast)
    tiny = {"instances": (x * 1e-6).tolist()}  # every number in exponent form
    tensors, _, request = decode(json.dumps(tiny).encode())
    assert request.path == "orjson"
    assert _same(tensors["x"], np.asarray(tiny["instances"], dtype=np.float32))


def test_unusual_bodies_take_the_exact_path():
    for body in (
        slow_body('{"instances": [1.0, 2.0]}'),
        b'{"instances": [1.0, 2.0], "extra": 1}',
        b'{"instances": [{"x": 1.0}]}',
        b'{"instances": [1.0, 2.0]} trailing',
    ):
        request = codec.parse_predict(body)
        assert request.path != "fast"


def _nested(texts: np.ndarray) -> str:
    if texts.ndim == 1:
        return "[" + ",".join(texts.tolist()) + "]"
    return "[" + ",".join(_nested(sub) for sub in texts) + "]"


def _write(values: np.ndarray, style: str, rng) -> str:
    """JSON text for `values` as different clients write it."""
    if style == "json":
        return json.dumps(values.tolist())
    if style == "orjson":
        return orjson.dumps(values.tolist()).decode()
    if style == "numpy":  # as tfserve_magic.Client sends arrays: float32 stays short
        return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    texts = []
    for v in values.ravel().tolist():
        choice = rng.integers(0, 5)
        if isinstance(v, int) or (choice == 0 and float(v).is_integer()):
            texts.append(str(int(v)))
        elif choice == 1:
            texts.append(f"{v:.6e}")
        elif choice == 2:
            texts.append(f"{v:.3E}")
        elif choice == 3:
            texts.append(repr(float(np.float32(v))))
        else:
            texts.append(repr(float(v)))
    return _nested(np.array(texts, dtype=object).reshape(values.shape))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.usefixtures("without_simd")
def test_fast_and_exact_paths_agree_on_random_inputs():
    rng = np.random.default_rng(1234)
    for trial in range(80):
        shape = tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(1, 5)))
        dtype = np.dtype(rng.choice(["float32", "float64", "int32", "int64", "uint8"]))
        if dtype.kind == "f":
            scale = 10.0 ** rng.integers(-8, 8)
            values = (rng.standard_normal(shape) * scale).astype(dtype)
            values[rng.random(shape) < 0.3] = 0.0
        else:
            hi = 200 if dtype == np.uint8 else 2**31 - 1
            values = rng.integers(0 if dtype == np.uint8 else -hi, hi, size=shape).astype(dtype)
        style = ("json", "orjson", "mixed", "numpy")[trial % 4]
        payload = _write(values, style, rng)
        key = "instances" if trial % 2 else "inputs"
        body = f'{{"{key}": {payload}}}'
        specs = {"x": InputSpec("x", dtype, None)}
        fast, _, request = decode(body, specs)
        exact, _, slow_request = decode(slow_body(body), specs)
        assert request.decoded_by == "fast", body[:200]
        assert slow_request.decoded_by == "dom"
        assert _same(fast["x"], exact["x"]), (trial, body[:200])
        reference = np.asarray(json.loads(payload), dtype=np.float64 if dtype.kind == "f" else None)
        assert np.array_equal(fast["x"], reference.astype(dtype)), trial


@pytest.mark.parametrize(
    "payload",
    ["[01]", "[1.2.3]", "[.5]", "[-.5]", "[1.]", "[--1]", "[1-2]", "[+1]", "[1e]", "[1,]",
     "[[1],2]", "[[1]2]", "[1[2]]", "[[1,2],[3]]", "[]", "[[], []]", "[tru]", "[1 2]", "[Nan]",
     "[Infinityx]", "[0x10]", "[1e400]"],
)
def test_fast_scanner_refuses_what_it_cannot_vouch_for(payload):
    """Invalid JSON, ragged or empty nests: the scanner leaves them to the exact path."""
    body = f'{{"inputs": {payload}}}'.encode()
    assert _fastjson.scan_predict_body(body) is None
    request = None
    try:
        request = codec.parse_predict(body)
        codec.decode_predict(request, spec(x="float64"))
    except CodecError:
        pass
    assert request is None or request.decoded_by != "fast"


def test_fast_path_special_tokens():
    body = b'{"inputs": [1e5, -2.5E-3, NaN, -Infinity, 123456789012345678901234567890, -0, 7]}'
    x = decode(body, spec(x="float64"))[0]["x"]
    assert x[[0, 1, 3, 4, 5, 6]].tolist() == [1e5, -2.5e-3, -math.inf, 1.2345678901234568e29,
                                             0.0, 7.0]
    assert math.isnan(x[2]) and math.copysign(1, x[5]) == 1.0
    assert codec.parse_predict(body).path == "fast"


@pytest.mark.usefixtures("without_simd")
def test_fast_path_int_rules_fall_back_to_exact_messages():
    assert message('{"instances": [1, 2.5]}', spec(x="int32")) == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: 2.5 Type: Number is not of expected type: int32"
    )
    assert message('{"instances": [-1]}', spec(x="uint64")) == type_error("-1", "Number", "uint64")
    tensors = decode('{"instances": [[-5, 7], [0, 2147483647]]}', spec(x="int32"))
    assert tensors[2].decoded_by == "fast" and tensors[0]["x"].tolist() == [[-5, 7], [0, 2**31 - 1]]


@pytest.mark.usefixtures("without_simd")
def test_orjson_scan_and_vectorised_scan_agree():
    """Both fast-path scanners (docs/codec.md) on the same payloads: same tensors, and the
    vectorised one still works on its own (it backs up the orjson scan)."""
    rng = np.random.default_rng(99)
    compared = 0
    for trial in range(60):
        shape = tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(1, 5)))
        dtype = np.dtype(rng.choice(["float32", "float64", "int32", "int64", "uint8"]))
        if dtype.kind == "f":
            values = (rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 8)).astype(dtype)
        else:
            values = rng.integers(0, 200, size=shape).astype(dtype)
        text = _write(values, ("json", "orjson", "mixed", "numpy")[trial % 4], rng).encode()
        by_orjson = _fastjson._scan_with_orjson(text)
        vectorised = _fastjson._scan_payload(text)
        assert isinstance(by_orjson, _fastjson.ListPayload), text[:200]
        if vectorised is None:  # it gives up on many long (19+ digit) or exponent numbers
            continue
        compared += 1
        assert _same(by_orjson.to_array(dtype), vectorised.to_array(dtype)), (trial, text[:200])
    assert compared >= 30
    # What orjson refuses or cannot type goes to the vectorised scan, with the same answers.
    for text, dtype, expected in (
        (b"[1.5, NaN]", "float64", None),
        (b"[9223372036854775808]", "uint64", [2**63]),
        (b"[[-0, 2], [3, 4]]", "float32", [[0.0, 2.0], [3.0, 4.0]]),
    ):
        payload = codec.parse_predict(b'{"inputs": ' + text + b"}").fast
        tensor = payload.to_array(np.dtype(dtype))
        if expected is not None:
            assert tensor.tolist() == expected and tensor.dtype == np.dtype(dtype)
            assert math.copysign(1.0, float(tensor.ravel()[0])) == 1.0
        else:
            assert math.isnan(tensor[1])
    for payload in ("[[1]2]", "[2[1]]", "[[1], 2[3]]", "[1 ,2]", "[[1],[]]", "[1,,2]"):
        assert _fastjson._scan_with_orjson(payload.encode()) is None, payload


def test_small_float_outputs_format_like_the_scalar_rule():
    """Few values skip the vectorised pre-check: same texts on every kind of float32."""
    rng = np.random.default_rng(12)
    values = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    doubles = rng.integers(0, 2**63, 2000, dtype=np.int64).view(np.float64)
    with np.errstate(all="ignore"):
        for chunk in np.split(values, 400):
            texts = floats._format_floats(chunk)
            assert texts == [codec.format_float(v, np.float32) for v in chunk.tolist()]
        for chunk in np.split(np.concatenate([doubles, -doubles]), 200):
            texts = floats._format_floats(chunk)
            assert texts == [codec.format_float(v, np.float64) for v in chunk.tolist()]


def test_overflowing_literal_in_json_tier_is_a_parse_error():
    body = b'{"instances": [1.0, 1e999], "note": "not fast"}'
    assert message(body) == "JSON Parse error: Number too big to be stored in double. at offset: 20"


def test_input_spec_from_plain_tuples_and_string_dtype():
    specs = {"x": ("x", "string", None)}
    assert decode('{"instances": ["a"]}', specs)[0]["x"].tolist() == [b"a"]
    assert codec.tf_dtype_name(np.float32) == "float" and codec.tf_dtype_name("string") == "string"
