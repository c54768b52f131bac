"""Write the endpoints as a SavedModel and describe the signatures of one loaded back."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from .signatures import DEFAULT_SIGNATURE, Endpoint, is_keras3


@contextlib.contextmanager
def quiet():
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


def write_savedmodel(obj, endpoints: list[Endpoint], path: Path) -> None:
    """Keras 3 models through Keras' ExportArchive (it tracks their state), others through
    ``tf.saved_model.save`` with the model attached to a plain ``tf.Module``."""
    import tensorflow as tf

    if is_keras3(obj):
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


def describe_saved(loaded) -> dict:
    described = {}
    for sig_name, function in loaded.signatures.items():
        _, kwargs = function.structured_input_signature
        outputs = function.structured_outputs
        described[sig_name] = {
            "inputs": {k: _spec_summary(kwargs[k]) for k in sorted(kwargs)},
            "outputs": {k: _spec_summary(outputs[k]) for k in sorted(outputs)},
        }
    return dict(sorted(described.items(), key=lambda kv: kv[0] != DEFAULT_SIGNATURE))


