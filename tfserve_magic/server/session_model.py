"""Serve a SavedModel the way TensorFlow Serving does: a TF1 session over its MetaGraphDef.

``tf.saved_model.load`` rebuilds a model's Python object graph, which some SavedModels that
``tensorflow_model_server`` serves cannot survive: Keras 2 models saved with their optimizer
(reviving it needs Keras 2), TF1 graphs whose signatures record no shapes, and reference-typed
variables (TF2 functions cannot hold ``float_ref``). TF Serving never revives objects: it imports
the MetaGraphDef for the requested tags into a session, restores the variables, runs the
asset/init ops, and then runs each SignatureDef by tensor name. This module does the same with
``tf.compat.v1``, in a Graph and Session of its own per loaded version (no global graph state).

Each signature runs through a session *callable* built once from ``CallableOptions`` (the C++
``MakeCallable`` path TF Serving's ``Session::Run`` also takes): feeds are not shape-checked in
Python, so an input of shape ``[3]`` for a ``[None, 1]`` placeholder behaves as in TF Serving,
and a call skips ``Session.run``'s per-call feed/fetch bookkeeping (the speed of the TF2 path).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from tfserve_magic.server.status import from_tf_error, invalid

# The keys TF1 SavedModels keep their init ops under (tf.saved_model.constants; spelled out
# so the module does not reach into TensorFlow's private constants module).
_INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
_MAIN_OP_KEY = "saved_model_main_op"
_LEGACY_INIT_OP_KEY = "legacy_init_op"
_TABLE_INITIALIZERS = "table_initializer"

log = logging.getLogger("tfserve_magic.server")


class _LoaderNoise(logging.Filter):
    """Drops TensorFlow's Python warnings that only concern the loader we chose against: the
    object-graph attempt's "Unable to create a python object for variable ... reference
    variable" (once per variable and signature) and the TF1 loader's deprecation notice."""

    _PHRASES = ("because it is a reference variable", "loader_impl) is deprecated")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in self._PHRASES)


def quiet_loader_warnings() -> None:
    """Install the filter on TensorFlow's logger (idempotent)."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _LoaderNoise) for f in logger.filters):
        logger.addFilter(_LoaderNoise())


class SessionSignature:
    """One SignatureDef run by tensor name in a session (the interface of servable.Signature)."""

    def __init__(self, name: str, signature_def, model: SessionModel, specs: dict):
        self.name = name
        self.method_name = signature_def.method_name
        self.debug_string = str(signature_def)
        self.seconds_per_element: float | None = None  # measured cost; app.py reads it
        self.specs = specs
        self.output_names = list(signature_def.outputs.keys())
        # The dtype each input placeholder really has (SignatureDefs may declare it loosely:
        # TF Serving's half_plus_three says DT_FLOAT for a serialized tf.Example).
        graph = model.graph
        self.graph_dtypes = {
            key: _dtype_of(graph.get_tensor_by_name(info.name).dtype)
            for key, info in signature_def.inputs.items()
        }
        self._input_order = list(signature_def.inputs.keys())
        options = config_pb2.CallableOptions()
        options.feed.extend(signature_def.inputs[k].name for k in self._input_order)
        options.fetch.extend(signature_def.outputs[k].name for k in self.output_names)
        self._session = model.session
        self._callable = model.session._make_callable_from_options(options)

    def run(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature; TF errors become ServingErrors with TF Serving's codes."""
        missing = [k for k in self._input_order if k not in tensors]
        if missing or len(tensors) != len(self._input_order):
            extra = sorted(set(tensors) - set(self._input_order))
            raise invalid(
                f"Input keys do not match the signature {self.name}: missing {missing}, "
                f"unexpected {extra}"
            )
        try:
            results = self._callable(*(tensors[k] for k in self._input_order))
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc).split("\n\n")[0]) from None
        return {name: np.asarray(value) for name, value in zip(self.output_names, results)}


class SessionModel:
    """A SavedModel's MetaGraphDef imported into its own Graph and Session, variables restored
    and init ops run; ``signatures`` holds one SessionSignature per servable SignatureDef."""

    def __init__(self, path: str, tags: list[str], meta_graph, specs_for):
        self.graph = tf.Graph()
        # The server's --tensorflow_*_parallelism flags (set on tf.config.threading) apply to
        # sessions too, as in TF Serving (0: TensorFlow's default).
        config = config_pb2.ConfigProto(
            allow_soft_placement=True,
            intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
            inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        )
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        try:
            with self.graph.as_default():
                # Imports the graph, restores variables, fills asset paths and runs
                # __saved_model_init_op / main_op / legacy_init_op, as TF Serving's loader.
                tf.compat.v1.saved_model.loader.load(self.session, tags, path)
                if not _has_init_op(meta_graph):
                    # No init op recorded: tables would stay empty; TF1 exports that relied on
                    # tf.tables_initializer() at serving time still answer.
                    tables = self.graph.get_collection(_TABLE_INITIALIZERS)
                    if tables:
                        self.session.run(tables)
            self.signatures = {}
            for name, signature_def in meta_graph.signature_def.items():
                if name == _INIT_OP_SIGNATURE_KEY:
                    continue
                try:
                    self.signatures[name] = SessionSignature(
                        name, signature_def, self, specs_for(signature_def)
                    )
                except (KeyError, ValueError, tf.errors.OpError) as exc:
                    # e.g. sparse/composite TensorInfo (no tensor name): the other signatures
                    # still serve; this one answers "not found", as it cannot be fed by name.
                    log.warning("Signature %s of %s cannot be served by tensor name: %s",
                                name, path, " ".join(str(exc).split())[:300])
        except BaseException:
            self.session.close()
            raise
        self.graph.finalize()  # nothing may add ops once serving starts (thread safety)

    def close(self) -> None:
        """Free the session now (tools and tests). The server never calls it: an unloaded
        version's session is freed by ``Session.__del__`` once the last request or queued
        batch holding one of its signatures is done (signatures keep the session alive)."""
        self.session.close()


def _has_init_op(meta_graph) -> bool:
    if _INIT_OP_SIGNATURE_KEY in meta_graph.signature_def:
        return True
    return any(
        key in meta_graph.collection_def and _collection_size(meta_graph.collection_def[key])
        for key in (_MAIN_OP_KEY, _LEGACY_INIT_OP_KEY)
    )


def _collection_size(collection: meta_graph_pb2.CollectionDef) -> int:
    kind = collection.WhichOneof("kind")
    return len(getattr(collection, kind).value) if kind else 0


def _dtype_of(dtype: tf.DType):
    if dtype.base_dtype == tf.string:
        return "string"
    try:
        return np.dtype(dtype.base_dtype.as_numpy_dtype)
    except (TypeError, ValueError):
        return np.dtype(object)
