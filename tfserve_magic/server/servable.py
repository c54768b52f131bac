"""One loaded SavedModel version: its meta graph, the loader that serves it, its signatures.

Reads the MetaGraphDef for the serving tags, loads the version with the TF2 object-graph loader
or, where that cannot revive it, a TF1 session (as TF Serving does), and keeps each signature's
input specs for the codec and its JSON form for the metadata API. Version policy and polling
are the manager's job (server/models.py).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from tfserve_magic.server.status import from_tf_error, invalid

log = logging.getLogger("tfserve_magic.server")


class Signature:
    """One callable signature of a loaded SavedModel, with its input specs for the codec."""

    def __init__(self, name: str, function, signature_def):
        self.name = name
        self.function = function
        self.method_name = signature_def.method_name if signature_def is not None else ""
        # The proto's text form: TF Serving quotes it (DebugString) in classify/regress errors.
        self.debug_string = str(signature_def) if signature_def is not None else ""
        self.seconds_per_element: float | None = None  # measured cost; app.py reads it
        self.specs: dict[str, tuple] = {}
        self.output_names: list[str] = []
        if signature_def is not None:
            self.specs = _signature_specs(signature_def)
            self.output_names = list(signature_def.outputs.keys())
        else:  # no proto entry (should not happen): fall back to the function's own spec
            for key, spec in function.structured_input_signature[1].items():
                dtype = "string" if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype)
                shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
                self.specs[key] = (key, dtype, shape)
            self.output_names = list(function.structured_outputs.keys())

        # What the graph really takes (classify/regress check this, not the declared dtype).
        self.graph_dtypes = {key: spec[1] for key, spec in self.specs.items()}
        self._flat_order = _flat_input_order(function)
        if self._flat_order is not None and set(self._flat_order) != set(self.specs):
            self._flat_order = None  # the proto and the function disagree: use keywords
        self._direct = _direct_call(function) if self._flat_order is not None else None

    def run(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature; TF errors become ServingErrors with TF Serving's codes."""
        try:
            order = self._flat_order
            if order is not None and len(tensors) == len(order):
                # The flat call skips re-binding keyword arguments on every request (about
                # 40% of a small call); dtypes are still checked by the function itself.
                flat = [tf.constant(tensors[name]) for name in order]
                if self._direct is not None:
                    atomic, captures, positions = self._direct
                    results = atomic.call_flat(*flat, *captures)
                    outputs = {name: results[i] for name, i in positions.items()}
                else:
                    outputs = self.function._call_flat(flat, self.function.captured_inputs)
            else:
                kwargs = {name: tf.constant(value) for name, value in tensors.items()}
                outputs = self.function(**kwargs)
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc).split("\n\n")[0]) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}


class Servable:
    """One loaded version of a model."""

    def __init__(self, model_name: str, version: int, path: str, tags: list[str]):
        self.model_name = model_name
        self.version = version
        self.path = path
        meta_graph = read_meta_graph(path, tags)
        self.loader, self.loaded, self.signatures = _load_servable(path, tags, meta_graph)
        defs = meta_graph.signature_def
        self.signature_def_json = {name: _signature_def_json(sd) for name, sd in defs.items()}

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or "serving_default")
        if sig is None:
            raise invalid(
                f'Serving signature name: "{name or "serving_default"}" not found in signature def'
            )
        return sig

    def example_signature(self, name: str, api: str) -> Signature:
        """The signature of a classify/regress call, checked as TF Serving checks it before
        any run (``GetClassificationSignatureDef`` / ``GetRegressionSignatureDef``)."""
        key = name or "serving_default"
        sig = self.signatures.get(key)
        if sig is None:
            raise invalid(f"No signature was found with the name: {key}")
        outputs = set(sig.output_names)
        what = "classification" if api == "classify" else "regression"
        if len(sig.specs) != 1:
            raise invalid("Expected one input Tensor.")
        if api == "classify" and len(outputs) not in (1, 2):
            raise invalid(f"Expected one or two output Tensors, found {len(outputs)}")
        if api == "regress" and len(outputs) != 1:
            raise invalid("Expected one output Tensor.")
        if "inputs" not in sig.specs:
            raise invalid(f"No {what} inputs found in SignatureDef: {sig.debug_string}")
        if api == "classify" and not outputs & {"classes", "scores"}:
            raise invalid(
                'Expected classification signature outputs to contain at least one of "classes"'
                f' or "scores". Signature was: {sig.debug_string}'
            )
        if api == "regress" and "outputs" not in outputs:
            raise invalid(f"No regression outputs found in SignatureDef: {sig.debug_string}")
        if sig.graph_dtypes["inputs"] != "string":  # the placeholder's own dtype, not the def's
            raise invalid(f"Expected {what} input Tensor of DT_STRING in SignatureDef")
        return sig

    def metadata_json(self) -> dict:
        return {
            "model_spec": {
                "name": self.model_name,
                "signature_name": "",
                "version": str(self.version),
            },
            "metadata": {"signature_def": {"signature_def": self.signature_def_json}},
        }


# ---- choosing the loader ----

_LOADER_WORDS = {"tf2": "TF2 object-graph", "session": "TF1 session (SavedModelBundle)"}


def _load_servable(path: str, tags: list[str], meta_graph):
    """("tf2" | "session", the loaded object, {name: signature}) for one version.

    The TF2 object-graph load is tried first (the faster call path). Some SavedModels that
    TF Serving serves cannot be revived as objects (Keras 2 optimizers, TF1 graphs without
    shapes, reference variables): those are served from a TF1 session over the MetaGraphDef,
    as TF Serving itself does. If neither loads, the session loader's error is raised (it is
    the loader TF Serving uses), with the object-graph error chained for the log.
    ``TFSERVE_MAGIC_LOADER=session`` skips the object-graph load (TF Serving's exact
    semantics for every model; the benchmark uses it to compare the paths).
    """
    from tfserve_magic.server.session_model import SessionModel, quiet_loader_warnings

    quiet_loader_warnings()
    tf2_error = None
    if os.environ.get("TFSERVE_MAGIC_LOADER", "auto") != "session":
        try:
            loaded = tf.saved_model.load(path, tags=tags)
            defs = meta_graph.signature_def
            signatures = {
                name: Signature(name, fn, defs[name] if name in defs else None)
                for name, fn in loaded.signatures.items()
            }
            return "tf2", loaded, signatures
        except Exception as exc:  # noqa: BLE001 - any object-graph failure tries the session
            tf2_error = exc
            log.info(
                "The TF2 object-graph loader cannot load %s (%s); loading it into a TF1 "
                "session as TensorFlow Serving does", path,
                " ".join(_load_error_message(exc, path).split()),
            )
    try:
        model = SessionModel(path, tags, meta_graph, _signature_specs)
    except Exception as session_error:
        raise session_error from tf2_error
    return "session", model, model.signatures


def loader_kind(path: str, tags=("serve",)) -> str:
    """Which loader serves the SavedModel at ``path``: "tf2" (object-graph load) or "session"
    (only the TF1-session loader); raises the load error if neither can (deploy preflight)."""
    meta_graph = read_meta_graph(path, list(tags))
    kind, loaded, _ = _load_servable(path, list(tags), meta_graph)
    if kind == "session":
        loaded.close()
    return kind


def _signature_specs(signature_def) -> dict:
    """Codec input specs from a SignatureDef's declared inputs."""
    return {
        key: (key, _numpy_dtype(info.dtype), _shape_tuple(info.tensor_shape))
        for key, info in signature_def.inputs.items()
    }


# ---- SavedModel proto helpers ----


def _flat_input_order(function) -> list[str] | None:
    """The input names in the order the signature's flat call takes them, or None.

    Found once by binding probe tensors through the function's own FunctionType, so the order
    is TensorFlow's, not a guess; any surprise (TF1 wrapped functions, a TF version without
    these hooks) falls back to the keyword call.
    """
    try:
        specs = function.structured_input_signature[1]
        probes = {}
        for name, spec in specs.items():
            shape = [] if spec.shape.rank is None else [d or 1 for d in spec.shape.as_list()]
            probes[name] = tf.zeros(shape, spec.dtype)
        flat = function.function_type.unpack_inputs(function.function_type.bind(**probes))
        by_id = {id(tensor): name for name, tensor in probes.items()}
        order = [by_id[id(tensor)] for tensor in flat]
        if sorted(order) != sorted(specs) or not hasattr(function, "_call_flat"):
            return None
        return order
    except Exception:  # noqa: BLE001 - an optimisation only
        return None


def _direct_call(function):
    """(the traced function, its captured tensors, {output name: flat position}) to call
    without ConcreteFunction's wrapping, or None.

    A loaded signature's flat call re-reads its captured variable handles, checks for
    gradient tapes and re-packs the outputs on every request (about 30 us of a 100 us MLP
    call); the handles of a loaded version never change and the server records no gradients,
    so the call can go to the traced function (``call_flat``: flat tensors in and out) with
    the handles read once and the output positions worked out once, by packing the positions
    themselves through the function's own FunctionType. Anything unexpected keeps the regular
    flat call.
    """
    try:
        atomic = function._inference_function
        captures = list(function.captured_inputs)
        if not callable(getattr(atomic, "call_flat", None)):
            return None
        if not all(isinstance(c, tf.Tensor) for c in captures):
            return None  # e.g. distributed variables, resolved per call by the loader
        count = len(atomic.function_type.flat_outputs)
        positions = atomic.function_type.pack_output(list(range(count)))
        if not isinstance(positions, dict) or sorted(positions.values()) != list(range(count)):
            return None
        if not all(isinstance(name, str) for name in positions):
            return None
        return atomic, captures, positions
    except Exception:  # noqa: BLE001 - an optimisation only
        return None


def read_meta_graph(path: str, tags: list[str]):
    """The MetaGraphDef whose tag set equals ``tags`` (from saved_model.pb or .pbtxt)."""
    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    if os.path.exists(pb):
        with open(pb, "rb") as fh:
            saved_model.ParseFromString(fh.read())
    elif os.path.exists(pbtxt):
        from google.protobuf import text_format

        with open(pbtxt, encoding="utf-8") as fh:
            text_format.Parse(fh.read(), saved_model)
    else:
        raise FileNotFoundError(
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            f"{path} (a version folder must hold saved_model.pb directly)"
        )
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    available = [",".join(mg.meta_info_def.tags) for mg in saved_model.meta_graphs]
    raise LookupError(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}."
        f" Tag sets in the SavedModel: {available}. Use --saved_model_tags to pick one."
    )


def _load_error_message(exc: BaseException, path: str) -> str:
    if isinstance(exc, tf.errors.OpError):
        return from_tf_error(exc).message
    text = str(exc).strip() or type(exc).__name__
    return text.split("\n\n")[0]


def _load_error_code(exc: BaseException) -> str:
    if isinstance(exc, tf.errors.OpError):
        return from_tf_error(exc).code
    if isinstance(exc, (FileNotFoundError, LookupError)):
        return "NOT_FOUND"
    return "UNKNOWN"


def _numpy_dtype(enum: int):
    if enum == types_pb2.DT_STRING:
        return "string"
    try:
        return np.dtype(tf.dtypes.as_dtype(enum).as_numpy_dtype)
    except (TypeError, ValueError):
        return np.dtype(object)


def _shape_tuple(shape) -> tuple | None:
    if shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


def _tensor_info_json(info) -> dict:
    shape = info.tensor_shape
    return {
        "dtype": types_pb2.DataType.Name(info.dtype),
        "tensor_shape": {
            "dim": [{"size": str(d.size), "name": d.name} for d in shape.dim],
            "unknown_rank": bool(shape.unknown_rank),
        },
        "name": info.name,
    }


def _signature_def_json(signature_def) -> dict:
    defaults = {}
    if hasattr(signature_def, "defaults"):
        from google.protobuf import json_format

        defaults = {
            key: json_format.MessageToDict(value, preserving_proto_field_name=True)
            for key, value in signature_def.defaults.items()
        }
    return {
        "inputs": {k: _tensor_info_json(v) for k, v in signature_def.inputs.items()},
        "outputs": {k: _tensor_info_json(v) for k, v in signature_def.outputs.items()},
        "method_name": signature_def.method_name,
        "defaults": defaults,
    }
