"""Inputs as people hold them, turned into what a signature takes (no TensorFlow).

``prepare_inputs(x, metadata)`` takes a numpy array, a list (of numbers, of strings), a dict of
arrays, a pandas ``DataFrame`` or a list of dicts, and returns the ``instances`` for
``Client.predict``: named inputs as a dict name -> array (columns matched to the signature's
inputs by name; strings kept as strings, numbers in the input's dtype, ``[N]`` columns shaped
``[N, 1]`` when the input wants that), one input as an array (a plain list of sentences for a
``[-1, 1]`` string input becomes ``[N, 1]``; a DataFrame of numeric columns feeding one
``[-1, C]`` input becomes its ``[N, C]`` matrix). Problems are ValueErrors that name the
missing or extra column. pandas is imported only when a DataFrame is given.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "prepare_inputs", "signature_inputs", "describe_inputs", "is_named", "count", "take",
    "describe_instance", "named_columns", "is_frame", "as_text",
]

# TensorFlow dtype enum names (raw metadata JSON) -> numpy names; "string" has no numpy twin.
_TF_DTYPES = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16",
              "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64",
              "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_UINT32": "uint32",
              "DT_UINT64": "uint64", "DT_BOOL": "bool", "DT_STRING": "string"}


# ---------------------------------------------------------------------------------- metadata
def signature_inputs(metadata, signature_name: str | None = None):
    """``{name: (dtype, shape)}`` of a signature's inputs from ``Client.metadata()`` (parsed)
    or TF Serving's raw metadata JSON; shapes are tuples with None for unknown sizes (None for
    unknown rank). None when ``metadata`` is None. ValueError for an unknown signature."""
    if metadata is None:
        return None
    name = signature_name or "serving_default"
    if isinstance(metadata, Mapping) and "metadata" in metadata:  # raw JSON
        defs = metadata["metadata"]["signature_def"]["signature_def"]
        if name not in defs:
            raise ValueError(f"no signature {name!r}: the model has "
                             f"{', '.join(k for k in defs if not k.startswith('__'))}")
        return {key: _raw_info(info) for key, info in (defs[name].get("inputs") or {}).items()}
    if name not in metadata:
        raise ValueError(f"no signature {name!r}: the model has {', '.join(metadata)}")
    return dict(metadata[name]["inputs"])


def describe_inputs(specs) -> str:
    """``age float32[-1,1], sex string[-1,1]`` for messages."""
    def shape(dims):
        return "[?]" if dims is None else "[" + ",".join(
            "-1" if d is None else str(d) for d in dims) + "]"

    return ", ".join(f"{name} {dtype}{shape(dims)}" for name, (dtype, dims) in specs.items())


def _raw_info(info: Mapping):
    dtype = _TF_DTYPES.get(info.get("dtype", ""), str(info.get("dtype", "")).lower())
    shape = info.get("tensor_shape") or {}
    if shape.get("unknown_rank"):
        return dtype, None
    dims = (int(d.get("size", -1)) for d in shape.get("dim") or [])
    return dtype, tuple(None if d < 0 else d for d in dims)


# ---------------------------------------------------------------------------------- prepare
def prepare_inputs(x, metadata=None, signature_name: str | None = None):
    """``x`` as the ``instances`` of a predict request for the signature (see the module
    docstring); without ``metadata`` only the form changes (DataFrame and list of dicts to a
    dict of arrays). Returns a dict name -> array, an array, or ``x`` as it was."""
    specs = signature_inputs(metadata, signature_name)
    named = named_columns(x)
    if specs is None:
        return named if named is not None else x
    if named is not None and len(specs) == 1 and not set(named) & set(specs) and is_frame(x):
        return _matrix(x, *next(iter(specs.items())))  # numeric columns -> one [N, C] input
    if named is not None:
        return _named(named, specs)
    if len(specs) != 1:
        raise ValueError(f"the signature takes named inputs {describe_inputs(specs)}: pass a "
                         "dict of arrays, a DataFrame or a list of dicts with those names")
    name, (dtype, shape) = next(iter(specs.items()))
    return _column(name, x, dtype, shape)


def is_named(x) -> bool:
    """Named inputs: a DataFrame, a dict of arrays or a list of dicts."""
    return is_frame(x) or isinstance(x, Mapping) or (
        isinstance(x, (list, tuple)) and bool(x) and all(isinstance(r, Mapping) for r in x))


def is_frame(x) -> bool:
    """A pandas DataFrame (pandas itself is not imported)."""
    return type(x).__name__ == "DataFrame" and hasattr(x, "columns")


def named_columns(x) -> dict | None:
    """A DataFrame, a dict of arrays or a list of dicts as one dict name -> values; else None."""
    if is_frame(x):
        return {str(c): x[c].to_numpy() for c in x.columns}
    if isinstance(x, Mapping):
        return {str(k): v for k, v in x.items()}
    if isinstance(x, (list, tuple)) and x and all(isinstance(r, Mapping) for r in x):
        keys = list(x[0])
        for i, row in enumerate(x):
            if set(row) != set(keys):
                odd = sorted(set(row) ^ set(keys))
                raise ValueError(f"row {i} has other keys than row 0 (differing: "
                                 f"{', '.join(map(str, odd))}): every row needs the same names")
        return {str(k): [row[k] for row in x] for k in keys}
    return None


def _named(named: dict, specs: dict) -> dict:
    missing = [k for k in specs if k not in named]
    extra = [k for k in named if k not in specs]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing column{'s' * (len(missing) > 1)} "
                            f"{', '.join(map(repr, missing))}")
        if extra:
            problems.append(f"extra column{'s' * (len(extra) > 1)} "
                            f"{', '.join(map(repr, extra))} (not an input of the signature)")
        raise ValueError(f"{'; '.join(problems)}: the signature's inputs are "
                         f"{describe_inputs(specs)}")
    columns = {k: _column(k, named[k], *specs[k]) for k in specs}
    sizes = {k: len(v) for k, v in columns.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the columns have different lengths: {sizes}")
    return columns


def _column(name: str, values, dtype: str, shape) -> np.ndarray:
    """One input's values as an array of its dtype and rank (strings stay strings)."""
    if dtype == "string":
        array = _strings(name, values)
    else:
        array = np.asarray(values)
        if array.dtype.kind in "USO":
            flat = [as_text(v) for v in array.reshape(-1)]
            stray = next((v for v in flat if not _is_number_text(v)), flat[0] if flat else "")
            raise ValueError(f"input {name!r} takes {dtype} numbers, got strings "
                             f"(e.g. {stray!r})")
        try:
            array = array.astype(dtype) if array.dtype != np.dtype(dtype) else array
        except (TypeError, ValueError) as exc:
            raise ValueError(f"input {name!r}: cannot make {dtype} of it ({exc})") from None
    if array.ndim == 0:
        raise ValueError(f"input {name!r} needs one value per instance (a batch dimension)")
    if shape is not None:
        if len(shape) == array.ndim + 1 and shape[-1] == 1:
            array = array[..., None]  # [N] for a [-1, 1] input: one value per row
        elif len(shape) == array.ndim - 1 and array.shape[-1] == 1:
            array = array[..., 0]  # [N, 1] for a [-1] input
    return array


def _strings(name: str, values) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise ValueError(f"input {name!r} needs a list of strings (one per instance), not one "
                         "string")
    array = np.asarray(values, dtype=object)
    flat = array.reshape(-1)
    for value in flat:
        if not isinstance(value, (str, bytes, np.str_, np.bytes_)):
            raise ValueError(f"input {name!r} takes strings, got {type(value).__name__} "
                             f"{value!r}")
    return np.asarray([as_text(v) if isinstance(v, np.str_) else v for v in flat],
                      dtype=object).reshape(array.shape)


def _matrix(frame, name: str, spec) -> np.ndarray:
    dtype, shape = spec
    width = len(frame.columns)
    if shape is not None and (len(shape) != 2 or shape[1] not in (None, width)):
        raise ValueError(f"the signature's one input {name!r} is shaped "
                         f"{list(shape)}, and the DataFrame has {width} columns named "
                         f"{', '.join(map(str, frame.columns))}: name the columns after the "
                         "signature's inputs or give the input's matrix")
    if dtype == "string":
        return _strings(name, frame.to_numpy())
    return _column(name, frame.to_numpy(), dtype, shape)


# ---------------------------------------------------------------------------------- access
def count(x) -> int:
    """How many instances ``x`` holds, in any of the forms above."""
    named = named_columns(x)
    if named is not None:
        return len(next(iter(named.values()))) if named else 0
    return len(x) if isinstance(x, (list, tuple)) else int(np.shape(x)[0])


def take(x, indices):
    """The instances at ``indices`` (a slice, an int array or a count n for the first n), in
    the form ``x`` has (a DataFrame stays a DataFrame, a dict a dict)."""
    if isinstance(indices, (int, np.integer)):
        indices = slice(0, int(indices))
    if is_frame(x):
        return x.iloc[indices]
    if isinstance(x, Mapping):
        return {k: take(v, indices) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if isinstance(indices, slice):
            return x[indices]
        return [x[int(i)] for i in np.asarray(indices).reshape(-1)]
    return np.asarray(x)[indices]


def describe_instance(x, i: int, width: int = 80) -> str:
    """Instance ``i`` in one line: a sentence, ``age=22, sex=male``, or numbers abridged."""
    named = named_columns(x)
    if named is not None:
        text = ", ".join(f"{k}={_short(v[i])}" for k, v in named.items())
    elif isinstance(x, (list, tuple)):
        text = _short(x[i])
    else:
        text = _short(np.asarray(x)[i])
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(value) -> str:
    array = np.asarray(value, dtype=object) if isinstance(value, (list, tuple)) else value
    if isinstance(array, np.ndarray) and array.ndim and array.size == 1:
        array = array.reshape(-1)[0]
    if isinstance(array, np.ndarray):
        if array.dtype.kind == "f":
            return np.array2string(array, threshold=8, edgeitems=3, precision=4)
        return np.array2string(array, threshold=8, edgeitems=3)
    if isinstance(array, (float, np.floating)):
        return f"{float(array):.4g}"
    return as_text(array)


def as_text(value) -> str:
    """A value as text: bytes decoded as UTF-8, numpy scalars as their Python value."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _is_number_text(text) -> bool:
    """Whether a string in a mixed list was a number before numpy made every item a string."""
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
