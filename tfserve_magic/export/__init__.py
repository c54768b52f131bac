"""Write a notebook model as the next numbered SavedModel version, the layout TF Serving reads.

``export_model`` builds every signature itself (a ``tf.function`` with an explicit input
signature whose batch dimension is ``None``), so input and output names follow one documented
rule (docs/export.md) instead of Keras' per-process tensor counters. The version is written into
a hidden temporary folder beside the versions, loaded back and compared with the live model,
and only then renamed to its number: a failed export leaves no numbered folder behind.

The parts: ``signatures`` (input specs, names, the callables), ``savedmodel`` (writing and
describing), ``verify`` (the comparison with the live model), ``layout`` (versions, scratch
folders, the atomic install, a full disk) and ``result`` (ExportResult, ExportError).
TensorFlow is imported inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .layout import (
    default_model_name,
    install,
    no_space_message,
    numbered_versions,
    out_of_space,
    remove_stale_scratch,
    resolve_base,
    scratch_path,
    warn_if_served,
)
from .result import ExportError, ExportResult, ServedVersionWarning
from .savedmodel import describe_saved, quiet, write_savedmodel
from .signatures import DEFAULT_SIGNATURE, build_endpoints, check_batch_dims, parse_input_signature
from .verify import FLOAT_TOLERANCE, PROBE_BATCH_SIZES, compare_with_live

__all__ = [
    "DEFAULT_SIGNATURE",
    "FLOAT_TOLERANCE",
    "PROBE_BATCH_SIZES",
    "ExportError",
    "ExportResult",
    "ServedVersionWarning",
    "export_model",
    "parse_input_signature",
]


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


_KEYWORD_PARAMETER = re.compile(r"'(\w+)' is not a valid parameter name")


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
    warmup: Any = None,
) -> ExportResult:
    """Write ``model`` as version ``version`` (default: next free) under ``base_path``.

    ``signatures`` maps signature names to method names (or callables) of the model;
    ``serving_default`` always exists (the model's own call, or the first one listed).
    ``input_signature``: TensorSpec(s) or text such as ``'float32[None,28,28,1]'``, for models
    whose input shape is unknown. ``sample``: probe inputs for the verification (array, list of
    arrays, or dict by input name); zeros of each signature's shape otherwise.
    ``warmup``: rows for ``serving_default`` (or ``{signature: rows}``) written as TF Serving's
    ``assets.extra/tf_serving_warmup_requests`` (``tfserve_magic.warmup``) before the install.
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
    base = resolve_base(base_path)

    endpoints = build_endpoints(model, signatures, input_signature)
    for endpoint in endpoints:
        check_batch_dims(endpoint)

    existing = numbered_versions(base)
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
        if out_of_space(exc):
            raise ExportError(no_space_message(base, exc)) from None
        raise ExportError(f"cannot create BASE_PATH {base}: {exc.strerror or exc}") from None
    remove_stale_scratch(base)
    tmp = scratch_path(base)
    try:
        try:
            with quiet():
                write_savedmodel(model, endpoints, tmp)
        except ExportError:
            raise
        except Exception as exc:
            said = f"TensorFlow could not write the model: {type(exc).__name__}: {_gist(exc)}"
            bad_name = _KEYWORD_PARAMETER.search(str(exc))
            if bad_name:  # TF names signature parameters after the inputs: a keyword cannot be one
                said = (f"the input name {bad_name.group(1)!r} is a Python keyword, which a "
                        "SavedModel signature cannot take as a parameter name: rename that "
                        f"keras.Input (for example name='{bad_name.group(1)}_') and the column "
                        f"you feed it. {said}")
            if out_of_space(exc):
                said = f"{no_space_message(base, exc)}. {said}"
            raise ExportError(said) from exc
        worst = compare_with_live(tmp, endpoints, sample) if verify else {}
        import tensorflow as tf

        with quiet():
            described = describe_saved(tf.saved_model.load(str(tmp)))
        warmup_file = _write_warmup(tmp, warmup) if warmup is not None else None
        target = base / str(version)
        replacing = overwrite and target.exists()
        try:
            install(tmp, target, overwrite)
        except FileExistsError:
            raise ExportError(
                f"version {version} appeared at {target} while exporting; export again "
                "(or pass --overwrite)"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    notes = warn_if_served(base, version) if replacing else []
    probe = ("your sample" if sample is not None else "zeros") + " at batch sizes " + " and ".join(
        str(b) for b in PROBE_BATCH_SIZES
    )
    return ExportResult(
        path=target,
        version=version,
        base_path=base,
        model_name=model_name or default_model_name(base),
        signatures=described,
        verified=verify,
        max_abs_diff=worst,
        probe=probe,
        warnings=notes,
        warmup=target / warmup_file.relative_to(tmp) if warmup_file is not None else None,
    )


def _write_warmup(version_dir: Path, warmup) -> Path:
    """The warm-up records of the scratch version (installed with it, or removed with it)."""
    from tfserve_magic.warmup import WarmupError, write_export_warmup

    try:
        with quiet():
            return write_export_warmup(version_dir, warmup)
    except WarmupError as exc:
        raise ExportError(f"warm-up data (warmup=...): {exc}") from None
