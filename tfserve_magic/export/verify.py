"""Load the written SavedModel back and compare every signature with the live model on probe
batches (the user's sample when it fits, zeros otherwise)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .result import ExportError, shape_text
from .savedmodel import quiet
from .signatures import DEFAULT_SIGNATURE, Endpoint, zero_batch

PROBE_BATCH_SIZES = (1, 3)
FLOAT_TOLERANCE = 1e-5


def _sample_arrays(sample, endpoint: Endpoint) -> dict | None:
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


def _fit_sample(sample, endpoint: Endpoint) -> dict | None:
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


def _probe_batches(sample, endpoint: Endpoint) -> list[dict] | None:
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
        {n: zero_batch(s, batch) for n, s in zip(endpoint.input_names, endpoint.flat_specs)}
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


def compare_with_live(path: Path, endpoints: list[Endpoint], sample) -> dict[str, float]:
    """Load the SavedModel back and run every signature against the live model."""
    import tensorflow as tf

    with quiet():
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
                    f"{n} {s.dtype.name}{shape_text(tuple(s.shape.as_list()))}"
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


