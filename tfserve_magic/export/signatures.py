"""The signatures an export writes: the input specs (given as text, TensorSpecs or read from a
built Keras model), the names of inputs and outputs (docs/export.md's rule) and the callables
behind them. TensorFlow and Keras are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .result import ExportError

DEFAULT_SIGNATURE = "serving_default"
# Keras 3 names unnamed inputs keras_tensor, keras_tensor_17, ... (a process-wide counter).
_AUTO_KERAS3 = re.compile(r"^keras_tensor(_\d+)?$")
# Keras 2 (tf_keras): input_1, input_2, ... and Sequential's "<first layer>_input".
_AUTO_KERAS2 = re.compile(r"^input_\d+$|_input$")
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")
_UNKNOWN_DIM_PROBE_SIZE = 2  # size of unknown non-batch dimensions in zero probes
_NON_TENSOR_PARAMS = {"training", "mask"}

_SPEC_TEXT = re.compile(r"^\s*(?:(?P<name>[A-Za-z0-9_.\-/]+)\s*:\s*)?(?P<dtype>[a-z0-9_]+)\s*"
                        r"\[(?P<dims>[^\]]*)\]\s*$")


def parse_input_signature(text: str) -> list:
    """``'float32[None,28,28,1]'`` or ``'a:float32[None,3]; b:int64[None]'`` -> TensorSpecs."""
    import tensorflow as tf

    specs = []
    for part in [p for p in text.split(";") if p.strip()]:
        match = _SPEC_TEXT.match(part)
        if not match:
            raise ExportError(
                f"cannot read the input signature {part.strip()!r}: write DTYPE[DIMS] such as "
                "'float32[None,28,28,1]', optionally NAME:DTYPE[DIMS], several separated by ';'"
            )
        try:
            dtype = tf.dtypes.as_dtype(match["dtype"])
        except TypeError:
            raise ExportError(f"unknown dtype {match['dtype']!r} in {part.strip()!r}") from None
        dims = []
        for dim in [d.strip() for d in match["dims"].split(",") if d.strip()]:
            if dim.lower() in ("none", "-1", "?"):
                dims.append(None)
            elif dim.isdigit():
                dims.append(int(dim))
            else:
                raise ExportError(f"bad dimension {dim!r} in {part.strip()!r} (use an int or None)")
        specs.append(tf.TensorSpec(dims, dtype, name=match["name"]))
    if not specs:
        raise ExportError("the input signature is empty; e.g. 'float32[None,28,28,1]'")
    return specs


def _as_spec(value: Any, where: str):
    """A TensorSpec from a TensorSpec, keras.InputSpec, KerasTensor or tensor."""
    import tensorflow as tf

    if isinstance(value, tf.TensorSpec):
        return value
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        raise ExportError(
            f"{where}: expected tf.TensorSpec(shape, dtype), got {type(value).__name__}"
        )
    name = getattr(value, "name", None)
    return tf.TensorSpec(tuple(shape), tf.dtypes.as_dtype(dtype), name=name)


def _user_signature(value: Any) -> list:
    """Normalise the ``input_signature`` argument to a list (one entry per structure)."""
    if isinstance(value, str):
        return parse_input_signature(value)
    if isinstance(value, Mapping):
        return [{k: _as_spec(v, f"input_signature[{k!r}]") for k, v in value.items()}]
    if isinstance(value, (list, tuple)):
        if not value:
            raise ExportError("input_signature is empty; e.g. [tf.TensorSpec([None, 3])]")
        return [_spec_structure(v, "input_signature") for v in value]
    return [_as_spec(value, "input_signature")]


def _spec_structure(value: Any, where: str):
    if isinstance(value, Mapping):
        return {k: _spec_structure(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_spec_structure(v, where) for v in value]
    return _as_spec(value, where)


# ---- endpoints: what each signature calls, with which named inputs


@dataclass
class Endpoint:
    """One signature to write: a live callable and the named flat specs that feed it."""

    name: str
    call: Callable  # takes the packed positional arguments
    structure: list  # one entry per positional argument: spec, or list/dict of specs
    input_names: list[str]
    flat_specs: list = field(default_factory=list)

    def run(self, *flat):
        """Call the live model with flat tensors; return outputs as a dict of named tensors."""
        import tensorflow as tf

        args = tf.nest.pack_sequence_as(self.structure, list(flat))
        return _name_outputs(self.call(*args))


def _name_outputs(out) -> dict:
    """Dict outputs keep their keys; a tensor is output_0; lists/tuples are output_0, 1, ..."""
    import tensorflow as tf

    if isinstance(out, Mapping):
        named = {}
        for key, value in out.items():
            key = _clean_key(str(key))
            leaves = tf.nest.flatten(value)
            if len(leaves) == 1:
                named[key] = leaves[0]
            else:
                named.update({f"{key}_{i}": leaf for i, leaf in enumerate(leaves)})
        return named
    return {f"output_{i}": leaf for i, leaf in enumerate(tf.nest.flatten(out))}


def _clean_key(name: str) -> str:
    cleaned = _KEY_CHARS.sub("_", name)
    if not cleaned or not cleaned[0].isalnum():
        cleaned = "x" + cleaned
    return cleaned


def _explicit_name(spec_or_tensor, keras2: bool = False) -> str | None:
    """The name a user gave an input, or None for names Keras generated (a counter)."""
    name = getattr(spec_or_tensor, "name", None)
    if not name or not isinstance(name, str):
        return None
    name = name.split(":")[0]
    if _AUTO_KERAS3.match(name) or (keras2 and _AUTO_KERAS2.search(name)):
        return None
    return name


def _assign_names(structure: list, params: Sequence[str]):
    """Flat named TensorSpecs and their names, following docs/export.md's naming rule.

    A leaf is named by its dict key, else the name the user gave it, else the parameter it is
    passed in (``inputs`` for Keras' own call). Repeats get ``_1``, ``_2``, ... suffixes.
    """
    import tensorflow as tf

    bases = []
    for position, arg in enumerate(structure):
        param = params[position] if position < len(params) else f"inputs_{position}"
        if isinstance(arg, Mapping):
            for key in sorted(arg):  # tf.nest flattens dicts in sorted key order
                for leaf in tf.nest.flatten(arg[key]):
                    bases.append((leaf, str(key)))
        else:
            for leaf in tf.nest.flatten(arg):
                bases.append((leaf, _explicit_name(leaf) or param))
    names, specs, taken = [], [], set()
    for leaf, base in bases:
        base = _clean_key(base)
        name, n = base, 0
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names.append(name)
        specs.append(tf.TensorSpec(leaf.shape, leaf.dtype, name=name))
    return names, specs


def _positional_params(fn, required_only: bool = False) -> list[str]:
    """Names of the tensor parameters of ``fn`` (not self, training, mask)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name
        for p in parameters
        if p.kind in kinds
        and p.name != "self"
        and p.name not in _NON_TENSOR_PARAMS
        and not (required_only and p.default is not inspect.Parameter.empty)
    ]


def _own_signature(fn) -> list | None:
    """The input_signature of a ``tf.function`` (also when reached through a bound method)."""
    sig = getattr(fn, "input_signature", None)
    return list(sig) if sig is not None else None


def is_keras3(obj) -> bool:
    try:
        import keras
    except ImportError:
        return False
    return keras.__version__.startswith("3") and isinstance(obj, keras.layers.Layer)


def _is_keras_model(obj) -> bool:
    """Keras 3 or Keras 2 (``tf_keras``), by duck typing."""
    if is_keras3(obj):
        return True
    keras_bases = any(
        cls.__module__.split(".")[0] in ("tf_keras", "keras") for cls in type(obj).__mro__
    )
    return keras_bases and hasattr(obj, "built") and hasattr(obj, "call")


def _keras_inferred_structure(model) -> list | None:
    """Input specs from how a built Keras model was built, batch dimension set free."""
    import tensorflow as tf

    keras2 = not is_keras3(model)

    def spec(tensor_or_shape, dtype="float32"):
        shape = getattr(tensor_or_shape, "shape", tensor_or_shape)
        dims = list(shape)
        if dims:
            dims[0] = None  # the batch that built the model (fit's batch_size) is not a limit
        dtype = getattr(tensor_or_shape, "dtype", dtype)
        name = _explicit_name(tensor_or_shape, keras2)
        return tf.TensorSpec(dims, tf.dtypes.as_dtype(dtype), name=name)

    inputs = None
    with contextlib.suppress(AttributeError, ValueError):
        inputs = model.inputs  # functional, or Sequential that built its graph
    if inputs:
        struct = getattr(model, "_inputs_struct", None)
        if struct is None:
            with contextlib.suppress(AttributeError, ValueError):
                struct = model.input
        if struct is None:
            struct = inputs if len(inputs) > 1 else inputs[0]
        return [tf.nest.map_structure(spec, struct)]
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes:
        config = getattr(model, "get_build_config", lambda: None)() or {}
        shapes = {"input_shape": config["input_shape"]} if config.get("input_shape") else None
    if not shapes:
        return None
    dtype = getattr(model, "input_dtype", None) or "float32"

    def from_shape(value):
        if isinstance(value, Mapping):
            return {k: from_shape(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)) and all(
            isinstance(d, int) or d is None for d in value
        ):
            return spec(tuple(value), dtype)
        if isinstance(value, (list, tuple)):
            return [from_shape(v) for v in value]
        return spec(tuple(value), dtype)

    return [from_shape(v) for v in shapes.values()]


def _structure_from_user(user: list, params: Sequence[str]) -> list:
    """Fit the user's specs to the function's parameters (Keras' call takes one `inputs`)."""
    if len(user) == len(params) or len(params) == 0:
        return user
    if len(params) == 1:
        return [user[0] if len(user) == 1 else list(user)]
    return user


def _describe(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _unbuilt_message(model) -> str:
    return (
        f"the {type(model).__name__} model is not built yet, so its input shape is unknown. "
        "Train it (model.fit) or call it once on a batch (model(x_train[:1])) before exporting, "
        "or give the input shape: %tfserve export MODEL BASE --input-signature "
        "'float32[None,28,28,1]' (export_model(..., input_signature=...))."
    )


def build_endpoints(obj, signatures, input_signature) -> list[Endpoint]:
    """The signatures to write; serving_default first."""
    user = _user_signature(input_signature) if input_signature is not None else None
    keras_model = _is_keras_model(obj)
    if keras_model and not getattr(obj, "built", True):
        if user is None:
            raise ExportError(_unbuilt_message(obj))
        _build_keras_eagerly(obj, user)

    requested: dict[str, Any] = {}
    if signatures:
        if isinstance(signatures, str):
            signatures = [signatures]
        if isinstance(signatures, Mapping):
            requested = dict(signatures)
        else:
            requested = {str(m) if isinstance(m, str) else m.__name__: m for m in signatures}
        for key in requested:
            if not isinstance(key, str) or not key or _KEY_CHARS.search(key):
                raise ExportError(
                    f"signature name {key!r} is not valid; use letters, digits, '_', '.', '-'"
                )

    endpoints: list[Endpoint] = []
    for name, method in requested.items():
        endpoints.append(_endpoint_for(obj, name, method, user, keras_model))
    if DEFAULT_SIGNATURE not in requested:
        default = _default_endpoint(obj, user, keras_model, endpoints)
        endpoints.insert(0, default)
    else:
        endpoints.sort(key=lambda e: e.name != DEFAULT_SIGNATURE)
    return endpoints


def _build_keras_eagerly(model, user: list) -> None:
    """Build an unbuilt Keras model by calling it once on zeros of the user's signature."""
    import tensorflow as tf

    params = _positional_params(model.call) or ["inputs"]
    structure = _structure_from_user(user, params)
    zeros = [tf.nest.map_structure(lambda s: zero_batch(s, 1), arg) for arg in structure]
    try:
        model(*zeros, training=False)
    except Exception as exc:
        raise ExportError(
            f"could not build the model from the input signature {user}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _keras_call(model) -> Callable:
    def call(*args):
        return model(*args, training=False)

    return call


def _default_endpoint(obj, user, keras_model, others: list[Endpoint]) -> Endpoint:
    if keras_model:
        return _endpoint_for(obj, DEFAULT_SIGNATURE, "call", user, True)
    own_call = obj.__call__ if callable(obj) and not isinstance(obj, type) else None
    if own_call is not None and (
        _own_signature(own_call) is not None or (user is not None and not others)
    ):
        return _endpoint_for(obj, DEFAULT_SIGNATURE, "__call__", user, False)
    if others:  # the first signature listed is also the default one
        return dataclasses.replace(others[0], name=DEFAULT_SIGNATURE)
    candidates = _decorated_methods(obj)
    if len(candidates) == 1:
        return _endpoint_for(obj, DEFAULT_SIGNATURE, candidates[0], user, False)
    if candidates:
        listed = ", ".join(candidates)
        raise ExportError(
            f"{_describe(obj)} has several tf.function methods ({listed}) and no __call__; "
            f"choose what to serve: --signature serving_default={candidates[0]} "
            f"(repeat --signature NAME=METHOD for more; "
            f"export_model(..., signatures={{'serving_default': '{candidates[0]}'}}))."
        )
    raise ExportError(
        f"nothing to serve in {_describe(obj)}: export a Keras model, or a tf.Module with a "
        "method decorated @tf.function(input_signature=[tf.TensorSpec([None, ...], tf.float32)])"
        " and name it with --signature NAME=METHOD (signatures={'NAME': 'METHOD'})."
    )


def _decorated_methods(obj) -> list[str]:
    names = []
    for attr in sorted(dir(type(obj))):
        if attr.startswith("_"):
            continue
        with contextlib.suppress(Exception):
            if _own_signature(getattr(obj, attr)) is not None:
                names.append(attr)
    return names


def _endpoint_for(obj, name: str, method, user, keras_model: bool) -> Endpoint:
    """Resolve METHOD (attribute name or callable) of ``obj`` into an endpoint called NAME."""
    if callable(method) and not isinstance(method, str):
        fn, label = method, getattr(method, "__name__", repr(method))
    else:
        label = str(method)
        if not hasattr(obj, label):
            methods = ", ".join(_decorated_methods(obj)) or "none with an input_signature"
            raise ExportError(
                f"--signature {name}={label}: {_describe(obj)} has no attribute {label!r} "
                f"(tf.function methods: {methods})"
            )
        fn = getattr(obj, label)
        if not callable(fn):
            raise ExportError(f"--signature {name}={label}: {label!r} is not a method")
    through_keras_call = keras_model and label in ("call", "__call__")
    call = _keras_call(obj) if through_keras_call else fn
    params_of = obj.call if through_keras_call else fn
    params = _positional_params(params_of) or ["inputs"]
    own = _own_signature(params_of)
    if own is not None and user is None:
        structure = [_spec_structure(s, f"{label}.input_signature") for s in own]
    elif user is not None:
        structure = _structure_from_user(user, params)
    elif through_keras_call:
        structure = _keras_inferred_structure(obj)
        if structure is None:
            raise ExportError(_unbuilt_message(obj))
        required = _positional_params(params_of, required_only=True)
        if len(structure) < len(required):
            import tensorflow as tf

            known = [_spec_text(spec) for spec in tf.nest.flatten(structure)]
            example = "; ".join(known + ["float32[None,...]"] * (len(required) - len(known)))
            raise ExportError(
                f"{type(obj).__name__}.call takes {len(required)} inputs "
                f"({', '.join(required)}) but Keras recorded the shape of only the first; give "
                f"all of them, one spec per argument: --input-signature '{example}' "
                "(input_signature=[tf.TensorSpec(...), ...])."
            )
    else:
        raise ExportError(
            f"--signature {name}={label}: {label} has no input signature. Decorate it with "
            f"@tf.function(input_signature=[tf.TensorSpec([None, ...], tf.float32)]) or pass "
            "--input-signature 'float32[None,...]' (input_signature=...)."
        )
    names, flat = _assign_names(structure, params)
    return Endpoint(name, call, structure, names, flat)


def _spec_text(spec) -> str:
    """A TensorSpec in the text form --input-signature reads, e.g. float32[None,28,28,1]."""
    if spec.shape.rank is None:
        return f"{spec.dtype.name}[None]"
    dims = ",".join("None" if d is None else str(d) for d in spec.shape.as_list())
    return f"{spec.dtype.name}[{dims}]"


def check_batch_dims(endpoint: Endpoint) -> None:
    """TF Serving batches instances on dimension 0: it must exist and be free."""
    import tensorflow as tf

    for input_name, spec in zip(endpoint.input_names, endpoint.flat_specs):
        dims = spec.shape.as_list() if spec.shape.rank is not None else None
        if dims is None:
            continue
        if not dims:
            raise ExportError(
                f"signature {endpoint.name!r}: input {input_name!r} is a scalar, so it has no "
                "batch dimension for TF Serving to batch instances on; give it one, e.g. "
                "tf.TensorSpec([None], ...)"
            )
        if dims[0] is not None:
            fixed = ", ".join(["None"] + [str(d) for d in dims[1:]])
            free = _spec_text(tf.TensorSpec([None] + dims[1:], spec.dtype))
            raise ExportError(
                f"signature {endpoint.name!r}: input {input_name!r} has a fixed batch dimension "
                f"{dims[0]} (shape {tuple(dims)}), so requests with another number of instances "
                f"would fail; make it free: tf.TensorSpec([{fixed}], ...) or "
                f"--input-signature '{free}'"
            )


def zero_batch(spec, batch: int):
    """Zeros (empty strings) shaped like ``spec`` with ``batch`` rows: probes and eager builds."""
    import numpy as np
    import tensorflow as tf

    dims = spec.shape.as_list() if spec.shape.rank is not None else [None]
    dims = [batch if i == 0 else (d if d is not None else _UNKNOWN_DIM_PROBE_SIZE)
            for i, d in enumerate(dims)]
    if spec.dtype == tf.string:
        return tf.constant(np.full(dims, b"", dtype=object))
    return tf.zeros(dims, dtype=spec.dtype)
