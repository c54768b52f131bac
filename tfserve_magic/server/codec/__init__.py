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

One module per job: errors (CodecError), dtypes (input specs, dtype rules), parse (the parse
tiers), decode (tier choice, rows/columns), convert (one value -> tensor), b64 (base64),
floats (float text), encode (response bodies) and examples (classify/regress bodies). This
package re-exports the names callers use, so they import from ``server.codec`` only.
"""

from __future__ import annotations

from tfserve_magic.server.codec.convert import MAX_DIMS
from tfserve_magic.server.codec.decode import decode_predict
from tfserve_magic.server.codec.dtypes import InputSpec, tf_dtype_name
from tfserve_magic.server.codec.encode import (
    encode_classify,
    encode_error,
    encode_predict,
    encode_regress,
)
from tfserve_magic.server.codec.errors import CodecError
from tfserve_magic.server.codec.examples import ExamplesBody, parse_examples
from tfserve_magic.server.codec.floats import format_float
from tfserve_magic.server.codec.parse import (
    MAX_DEPTH,
    PredictBody,
    parse_predict,
    parse_predict_gil_free,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_DIMS",
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
    "parse_predict_gil_free",
    "tf_dtype_name",
]
