"""Write a notebook model as the next numbered SavedModel version, the layout TF Serving reads.

``export_model`` builds every signature itself (a ``tf.function`` with an explicit input
signature whose batch dimension is ``None``), so input and output names follow one documented
rule (docs/export.md) instead of Keras' per-process tensor counters. The version is written into
a hidden temporary folder beside the versions, loaded back and compared with the live model,
and only then renamed to its number: a failed export leaves no numbered folder behind.

TensorFlow is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import logging
import os
import re
import shlex
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfserve_magic._text import html_table, text_table

DEFAULT_SIGNATURE = "serving_default"
PROBE_BATCH_SIZES = (1, 3)
FLOAT_TOLERANCE = 1e-5
# Keras 3 names unnamed inputs keras_tensor, keras_tensor_17, ... (a process-wide counter).
_AUTO_KERAS3 = re.compile(r"^keras_tensor(_\d+)?$")
# Keras 2 (tf_keras): input_1, input_2, ... and Sequential's "<first layer>_input".
_AUTO_KERAS2 = re.compile(r"^input_\d+$|_input$")
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")
_UNKNOWN_DIM_PROBE_SIZE = 2  # size of unknown non-batch dimensions in zero probes
_NON_TENSOR_PARAMS = {"training", "mask"}


class ExportError(ValueError):
    """An export that cannot be done or did not verify; the message says how to fix it."""


class ServedVersionWarning(UserWarning):
    """An export replaced a version that a running server has loaded (it keeps the old one)."""


# --------------------------------------------------------------------------- result


@dataclass
class ExportResult:
    """What was written: the version folder, its signatures and how to serve it."""

    path: Path
    version: int
    base_path: Path
    model_name: str
    # signature name -> {"inputs": {name: (dtype, shape)}, "outputs": {name: (dtype, shape)}}
    signatures: dict[str, dict[str, dict[str, tuple[str, tuple]]]]
    verified: bool = False
    # signature name -> largest |live - loaded| over the probe batches (float outputs)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    probe: str = ""
    # e.g. "version 1 ... is being served by MLP ..." (also issued as a ServedVersionWarning)
    warnings: list[str] = field(default_factory=list)

    @property
    def server_command(self) -> str:
        """The ``tensorflow_model_server`` command line that serves this base path."""
        return (
            "tensorflow_model_server --rest_api_port=8501"
            f" --model_name={shlex.quote(self.model_name)}"
            f" --model_base_path={shlex.quote(str(self.base_path))}"
        )

    @property
    def magic_command(self) -> str:
        return f"%tfserve start {shlex.quote(self.model_name)} {shlex.quote(str(self.base_path))}"

    def _rows(self) -> list[list[str]]:
        rows = []
        for sig_name, sig in self.signatures.items():
            for kind in ("inputs", "outputs"):
                for name, (dtype, shape) in sig[kind].items():
                    rows.append([sig_name, kind[:-1], name, dtype, _shape_text(shape)])
        return rows

    def _verdict(self) -> str:
        if not self.verified:
            return "not verified (verify=False)"
        worst = max(self.max_abs_diff.values(), default=0.0)
        return f"verified: reloaded and compared on {self.probe}, max abs diff {worst:.3g}"

    def __repr__(self) -> str:
        headers = ["signature", "", "name", "dtype", "shape"]
        return "\n".join(
            [
                f"Exported version {self.version} to {self.path}",
                self._verdict(),
                "",
                text_table(headers, self._rows()),
                "",
                "Serve it with:",
                f"  {self.server_command}",
                f"  or: {self.magic_command}",
                *(f"Warning: {w}" for w in self.warnings),
            ]
        )

    def _repr_html_(self) -> str:
        import html

        headers = ["signature", "", "name", "dtype", "shape"]
        return (
            f"<div><b>Exported version {self.version}</b> to <code>{html.escape(str(self.path))}"
            f"</code><br><small>{html.escape(self._verdict())}</small>"
            f"{html_table(headers, self._rows())}"
            f"<div>Serve it with:</div><pre>{html.escape(self.server_command)}\n"
            f"{html.escape(self.magic_command)}</pre>"
            + "".join(f"<div><b>Warning:</b> {html.escape(w)}</div>" for w in self.warnings)
            + "</div>"
        )


def _shape_text(shape: tuple | None) -> str:
    if shape is None:
        return "unknown"
    return str(tuple(shape))


# --------------------------------------------------------------------------- input signatures

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


# --------------------------------------------------------------------------- endpoints


@dataclass
class _Endpoint:
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


def _is_keras3(obj) -> bool:
    try:
        import keras
    except ImportError:
        return False
    return keras.__version__.startswith("3") and isinstance(obj, keras.layers.Layer)


def _is_keras_model(obj) -> bool:
    """Keras 3 or Keras 2 (``tf_keras``), by duck typing."""
    if _is_keras3(obj):
        return True
    keras_bases = any(
        cls.__module__.split(".")[0] in ("tf_keras", "keras") for cls in type(obj).__mro__
    )
    return keras_bases and hasattr(obj, "built") and hasattr(obj, "call")


def _keras_inferred_structure(model) -> list | None:
    """Input specs from how a built Keras model was built, batch dimension set free."""
    import tensorflow as tf

    keras2 = not _is_keras3(model)

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


def _build_endpoints(obj, signatures, input_signature) -> list[_Endpoint]:
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

    endpoints: list[_Endpoint] = []
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
    zeros = [tf.nest.map_structure(lambda s: _zeros(s, 1), arg) for arg in structure]
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


def _default_endpoint(obj, user, keras_model, others: list[_Endpoint]) -> _Endpoint:
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


def _endpoint_for(obj, name: str, method, user, keras_model: bool) -> _Endpoint:
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
    return _Endpoint(name, call, structure, names, flat)


def _spec_text(spec) -> str:
    """A TensorSpec in the text form --input-signature reads, e.g. float32[None,28,28,1]."""
    if spec.shape.rank is None:
        return f"{spec.dtype.name}[None]"
    dims = ",".join("None" if d is None else str(d) for d in spec.shape.as_list())
    return f"{spec.dtype.name}[{dims}]"


def _check_batch_dims(endpoint: _Endpoint) -> None:
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


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _quiet():
    """Hide TF/Keras chatter such as 'Assets written to' while saving."""
    loggers = [logging.getLogger(n) for n in ("tensorflow", "absl")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write(obj, endpoints: list[_Endpoint], path: Path) -> None:
    import tensorflow as tf

    if _is_keras3(obj):
        import keras

        archive = keras.export.ExportArchive()
        archive.track(obj)
        for endpoint in endpoints:
            archive.add_endpoint(endpoint.name, endpoint.run, input_signature=endpoint.flat_specs)
        archive.write_out(str(path), verbose=False)
        return
    root = tf.Module()
    root.served = obj
    functions = {}
    for i, endpoint in enumerate(endpoints):
        function = tf.function(endpoint.run, input_signature=endpoint.flat_specs)
        setattr(root, f"signature_{i}", function)
        functions[endpoint.name] = function
    tf.saved_model.save(root, str(path), signatures=functions)


def _spec_summary(spec) -> tuple[str, tuple | None]:
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return spec.dtype.name, shape


def _describe_saved(loaded) -> dict:
    described = {}
    for sig_name, function in loaded.signatures.items():
        _, kwargs = function.structured_input_signature
        outputs = function.structured_outputs
        described[sig_name] = {
            "inputs": {k: _spec_summary(kwargs[k]) for k in sorted(kwargs)},
            "outputs": {k: _spec_summary(outputs[k]) for k in sorted(outputs)},
        }
    return dict(sorted(described.items(), key=lambda kv: kv[0] != DEFAULT_SIGNATURE))


# --------------------------------------------------------------------------- verification


def _zeros(spec, batch: int):
    import numpy as np
    import tensorflow as tf

    dims = spec.shape.as_list() if spec.shape.rank is not None else [None]
    dims = [batch if i == 0 else (d if d is not None else _UNKNOWN_DIM_PROBE_SIZE)
            for i, d in enumerate(dims)]
    if spec.dtype == tf.string:
        return tf.constant(np.full(dims, b"", dtype=object))
    return tf.zeros(dims, dtype=spec.dtype)


def _sample_arrays(sample, endpoint: _Endpoint) -> dict | None:
    """The user's sample as {input name: array}, or None if it does not fit this endpoint."""
    import numpy as np

    names = endpoint.input_names
    if isinstance(sample, Mapping):
        if set(sample) >= set(names):
            return {n: np.asarray(sample[n]) for n in names}
        return None
    if isinstance(sample, (list, tuple)) and len(names) > 1 and len(sample) == len(names):
        return {n: np.asarray(v) for n, v in zip(names, sample)}
    if len(names) == 1:
        return {names[0]: np.asarray(sample)}
    return None


def _fit_sample(sample, endpoint: _Endpoint) -> dict | None:
    """The sample's arrays cast to the signature's dtypes, each with a batch dimension."""
    import tensorflow as tf

    arrays = _sample_arrays(sample, endpoint)
    if arrays is None:
        return None
    fitted = {}
    for name, spec in zip(endpoint.input_names, endpoint.flat_specs):
        array = arrays[name]
        rank = spec.shape.rank
        if rank is not None and array.ndim == rank - 1:
            array = array[None, ...]
        if array.ndim == 0 or len(array) == 0:
            return None
        if rank is not None and (
            array.ndim != rank or not spec.shape[1:].is_compatible_with(array.shape[1:])
        ):
            return None
        try:
            if spec.dtype != tf.string:
                array = array.astype(spec.dtype.as_numpy_dtype)
        except (TypeError, ValueError):
            return None
        fitted[name] = array
    return fitted


def _probe_batches(sample, endpoint: _Endpoint) -> list[dict] | None:
    """Probe inputs at PROBE_BATCH_SIZES, from the sample when it fits, else zeros."""
    import numpy as np
    import tensorflow as tf

    fitted = _fit_sample(sample, endpoint) if sample is not None else None
    if fitted is not None:
        return [
            {n: tf.constant(np.take(a, np.arange(batch) % len(a), axis=0))
             for n, a in fitted.items()}
            for batch in PROBE_BATCH_SIZES
        ]
    if sample is not None and endpoint.name == DEFAULT_SIGNATURE:
        return None  # the sample was meant for the default signature: say it does not fit
    return [
        {n: _zeros(s, batch) for n, s in zip(endpoint.input_names, endpoint.flat_specs)}
        for batch in PROBE_BATCH_SIZES
    ]


def _max_diff(name: str, key: str, live, served) -> float:
    import numpy as np

    live, served = np.asarray(live), np.asarray(served)
    if live.shape != served.shape:
        raise ExportError(
            f"signature {name!r} output {key!r}: the reloaded model returns shape {served.shape}, "
            f"the live model {live.shape}"
        )
    if np.issubdtype(live.dtype, np.floating) or np.issubdtype(live.dtype, np.complexfloating):
        if live.size == 0:
            return 0.0
        diff = np.abs(live.astype(np.float64) - served.astype(np.float64))
        nan_mismatch = np.isnan(live) != np.isnan(served)
        if nan_mismatch.any():
            return float("inf")
        return float(np.nanmax(diff)) if not np.isnan(diff).all() else 0.0
    return 0.0 if np.array_equal(live, served) else float("inf")


def _verify(path: Path, endpoints: list[_Endpoint], sample) -> dict[str, float]:
    """Load the SavedModel back and run every signature against the live model."""
    import tensorflow as tf

    with _quiet():
        loaded = tf.saved_model.load(str(path))
    worst: dict[str, float] = {}
    for endpoint in endpoints:
        served_fn = loaded.signatures.get(endpoint.name)
        if served_fn is None:
            raise ExportError(f"signature {endpoint.name!r} is missing from the written model")
        batches = _probe_batches(sample, endpoint)
        if batches is None:
            raise ExportError(
                f"the sample does not fit signature {endpoint.name!r}, whose inputs are "
                + ", ".join(
                    f"{n} {s.dtype.name}{_shape_text(tuple(s.shape.as_list()))}"
                    for n, s in zip(endpoint.input_names, endpoint.flat_specs)
                )
                + "; pass an array (or dict by input name) shaped like that"
            )
        worst[endpoint.name] = 0.0
        for probe in batches:
            flat = [probe[n] for n in endpoint.input_names]
            batch = int(flat[0].shape[0]) if flat else 0
            try:
                live = endpoint.run(*flat)
            except Exception as exc:
                raise ExportError(
                    f"the live model failed on a probe batch of {batch} for signature "
                    f"{endpoint.name!r}: {type(exc).__name__}: {exc}"
                ) from None
            try:
                served = served_fn(**probe)
            except Exception as exc:
                raise ExportError(
                    f"the exported signature {endpoint.name!r} failed on a probe batch of "
                    f"{batch}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                ) from None
            if set(live) != set(served):
                raise ExportError(
                    f"signature {endpoint.name!r}: outputs {sorted(served)} differ from the live "
                    f"model's {sorted(live)}"
                )
            for key in live:
                diff = _max_diff(endpoint.name, key, live[key], served[key])
                if diff > FLOAT_TOLERANCE:
                    raise ExportError(
                        f"signature {endpoint.name!r} output {key!r} differs from the live model "
                        f"by {diff:.3g} (> {FLOAT_TOLERANCE:g}) on a probe batch of {batch}; "
                        "the model may be non-deterministic in inference (dropout with "
                        "training=True, random ops); fix that or pass --no-verify"
                    )
                worst[endpoint.name] = max(worst[endpoint.name], diff)
    return worst


# --------------------------------------------------------------------------- versions


def _versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


def _default_model_name(base: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", base.name) or "model"
    return name


def _resolve_base(base_path) -> Path:
    if base_path is None or str(base_path).strip() == "":
        raise ExportError("BASE_PATH is empty; give a folder such as ./saved/mnist")
    base = Path(os.path.expanduser(str(base_path))).absolute()
    if base.exists() and not base.is_dir():
        raise ExportError(f"BASE_PATH {base} is a file; give a folder (versions go inside it)")
    if (base / "saved_model.pb").exists():
        raise ExportError(
            f"{base} is itself a SavedModel version folder; give its parent as BASE_PATH "
            f"({base.parent}) so the new model becomes the next numbered version"
        )
    return base


_SCRATCH = re.compile(r"^\.(?:tmp-export|replaced)-(\d+)-")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_scratch(base: Path) -> None:
    """Remove ``.tmp-export-PID-*`` / ``.replaced-PID-*`` folders whose writer has exited
    (an export killed half-way); folders of running exports are left alone."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _SCRATCH.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_running(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _serving(base: Path, version: int) -> list[str]:
    """Names of this user's running servers that have ``version`` of ``base`` loaded."""
    try:
        from tfserve_magic import manager

        handles = manager.servers()
    except Exception:  # noqa: BLE001 - a warning must never break an export
        return []
    names = []
    for handle in handles:
        same = handle.base_path and Path(handle.base_path).absolute() == base
        if same and any(version in versions for versions in handle.models.values()):
            names.append(handle.name)
    return names


def _warn_if_served(base: Path, version: int) -> list[str]:
    import warnings

    names = _serving(base, version)
    if not names:
        return []
    message = (
        f"version {version} of {base} is being served by {', '.join(names)}, which keeps "
        "answering with the model it loaded: a server (like TF Serving) does not reload a "
        f"version whose files change. Restart it (%tfserve start {names[0]} {base} "
        "--restart) or export a new version (leave out --version) to serve this model"
    )
    warnings.warn(message, ServedVersionWarning, stacklevel=3)
    return [message]


def _install(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the verified temporary folder to its version number (the atomic step)."""
    if target.exists():
        if not overwrite:
            raise FileExistsError(str(target))
        old = target.with_name(f".replaced-{os.getpid()}-{target.name}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(tmp, target)


# --------------------------------------------------------------------------- entry point


def _gist(exc: BaseException, limit: int = 400) -> str:
    """The lines of an error that say what went wrong (Keras puts them after a generic one)."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    text = lines[0]
    if text.startswith("Exception encountered when calling") and len(lines) > 1:
        text += " " + lines[1]  # e.g. "Input 0 of layer ... expected axis -1 ... to have value 3"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def export_model(
    model,
    base_path,
    *,
    version: int | None = None,
    overwrite: bool = False,
    signatures: Mapping[str, Any] | Sequence[str] | None = None,
    input_signature: Any = None,
    sample: Any = None,
    verify: bool = True,
    model_name: str | None = None,
) -> ExportResult:
    """Write ``model`` as version ``version`` (default: next free) under ``base_path``.

    ``signatures`` maps signature names to method names (or callables) of the model;
    ``serving_default`` always exists (the model's own call, or the first one listed).
    ``input_signature``: TensorSpec(s) or text such as ``'float32[None,28,28,1]'``, for models
    whose input shape is unknown. ``sample``: probe inputs for the verification (array, list of
    arrays, or dict by input name); zeros of each signature's shape otherwise.
    Raises ``ExportError`` with a message that says how to fix the problem.
    """
    import tensorflow  # noqa: F401  (fail here, clearly, if TensorFlow is missing)

    if model is None or isinstance(model, (str, bytes, int, float, Path)):
        raise ExportError(
            f"nothing to serve in a {type(model).__name__}: pass the model object itself "
            "(a Keras model or a tf.Module), e.g. %tfserve export model ./saved/mnist"
        )
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ExportError(f"version must be a positive integer, got {version!r}")
    base = _resolve_base(base_path)

    endpoints = _build_endpoints(model, signatures, input_signature)
    for endpoint in endpoints:
        _check_batch_dims(endpoint)

    existing = _versions(base)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    elif (base / str(version)).exists() and not overwrite:
        raise ExportError(
            f"version {version} already exists at {base / str(version)}; pass --overwrite "
            f"(overwrite=True) to replace it, or leave out --version to write version "
            f"{(existing[-1] + 1) if existing else 1}"
        )

    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create BASE_PATH {base}: {exc.strerror or exc}") from None
    _remove_stale_scratch(base)
    tmp = base / f".tmp-export-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        try:
            with _quiet():
                _write(model, endpoints, tmp)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(
                f"TensorFlow could not write the model: {type(exc).__name__}: {_gist(exc)}"
            ) from exc
        worst = _verify(tmp, endpoints, sample) if verify else {}
        import tensorflow as tf

        with _quiet():
            described = _describe_saved(tf.saved_model.load(str(tmp)))
        target = base / str(version)
        replacing = overwrite and target.exists()
        try:
            _install(tmp, target, overwrite)
        except FileExistsError:
            raise ExportError(
                f"version {version} appeared at {target} while exporting; export again "
                "(or pass --overwrite)"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    notes = _warn_if_served(base, version) if replacing else []
    probe = ("your sample" if sample is not None else "zeros") + " at batch sizes " + " and ".join(
        str(b) for b in PROBE_BATCH_SIZES
    )
    return ExportResult(
        path=target,
        version=version,
        base_path=base,
        model_name=model_name or _default_model_name(base),
        signatures=described,
        verified=verify,
        max_abs_diff=worst,
        probe=probe,
        warnings=notes,
    )
