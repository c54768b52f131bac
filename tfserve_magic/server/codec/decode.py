"""Predict request -> input tensors: the tier choice, then the row and columnar formats.

decode_predict is the one place that picks a decode tier (see its docstring); the row
("instances") and columnar ("inputs") layouts follow TF Serving's FillTensorMapFromInstancesList
and FillTensorMapFromInputsMap, with their messages.
"""

from __future__ import annotations

from tfserve_magic.server import simd_decode
from tfserve_magic.server._rapidjson import JObj, debug_string
from tfserve_magic.server.codec.b64 import _is_b64
from tfserve_magic.server.codec.convert import (
    MAX_DIMS,
    _build,
    _Context,
    _convert,
    _dense_shape,
    _fast_convert,
    _fill_exact,
    _shape_str,
)
from tfserve_magic.server.codec.dtypes import _dtype_info
from tfserve_magic.server.codec.errors import _MISSING, CodecError, _Reparse, _Status
from tfserve_magic.server.codec.parse import (
    PredictBody,
    _doc_error,
    _document,
    _exact_parse_or_raise,
)


def decode_predict(req: PredictBody, specs: dict) -> tuple[dict, bool]:
    """Steps 4-5: the input tensors and whether the request used the row format.

    The decode tiers are chosen here and only here, fastest first: the SIMD tier
    (`simd_decode`, numeric bodies it can prove), the `_fastjson` payload
    (`_decode_fast`), then the parsed document (`_decode_dom`), parsed again by the exact tier
    when a faster parse may disagree with RapidJSON. `req.decoded_by` records which answered.
    """
    if not specs:
        raise CodecError(
            f"Failed to get input map for signature: {req.signature_name or 'DEFAULT'}"
        )
    if req.simd is not None:  # SIMD tier (simd_decode.py); None falls through to the others
        decoded, req.simd = simd_decode.decode(req.simd, specs), None
        if decoded is not None:
            req.decoded_by = "simd"
            return decoded
    inputs = {name: _dtype_info(spec[1]) for name, spec in specs.items()}
    result = _decode_fast(req, inputs)
    if result is not None:
        req.decoded_by = "fast"
        return result
    try:
        result = _decode_dom(req, inputs)
    except _Reparse:
        req.doc, req.path = _exact_parse_or_raise(req.body), "exact"
        result = _decode_dom(req, inputs)
    req.decoded_by = "dom"
    return result


def _decode_fast(req: PredictBody, inputs: dict) -> tuple[dict, bool] | None:
    """The `_fastjson` tier: one numeric input from a payload scanned as bytes, or None."""
    if req.fast is not None and len(inputs) == 1 and len(req.fast.shape) <= MAX_DIMS:
        (name, info), = inputs.items()
        if info.kind in ("float", "int"):
            tensor = req.fast.to_array(info.np)
            if tensor is not None:
                return {name: tensor}, req.key == "instances"
    return None


def _decode_dom(req: PredictBody, inputs: dict) -> tuple[dict, bool]:
    doc = _document(req)
    ctx = _Context(req.path, req.body)
    instances = doc.find("instances", _MISSING)
    columns = doc.find("inputs", _MISSING)
    if instances is not _MISSING:
        if columns is not _MISSING:
            raise _doc_error(
                doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                "to exist "
            )
        if not isinstance(instances, list):
            raise _doc_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _doc_error(doc, "No values in 'instances' array")
        return _decode_rows(instances, inputs, ctx), True
    if columns is not _MISSING:
        return _decode_columns(columns, inputs, ctx), False
    raise CodecError("Missing 'inputs' or 'instances' key")


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
