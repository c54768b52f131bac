"""Classify/regress bodies -> serialized tf.Example protos (MakeExampleFromJsonObject)."""

from __future__ import annotations

import math
from typing import NamedTuple

from tfserve_magic.server._rapidjson import JObj, as_bytes, json_type_name
from tfserve_magic.server.codec.b64 import _is_b64, b64decode_absl
from tfserve_magic.server.codec.errors import _MISSING, CodecError, _Reparse
from tfserve_magic.server.codec.parse import (
    _NEG_INF,
    _POS_INF,
    _check_top,
    _doc_error,
    _exact_parse_or_raise,
    _parse_document,
)


class ExamplesBody(NamedTuple):
    """A parsed classify/regress request: serialized tf.Example protos (context merged)."""

    signature_name: str
    serialized: list


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
        raise _doc_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    if not isinstance(examples, list):
        raise _doc_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _doc_error(doc, "'examples' value is an empty array")
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
