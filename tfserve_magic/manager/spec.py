"""What a start request means: the server name, its models (a base path or a model config file),
the backend that runs them, and the key a later start compares to reuse the server."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tfserve_magic.manager.results import StartError
from tfserve_magic.registry import state_dir

MODEL_SERVER_VAR = "TFSERVE_MAGIC_MODEL_SERVER"
MODEL_SERVER_BINARY = "tensorflow_model_server"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass
class Spec:
    """A resolved start request: what runs, and the key that decides reuse."""

    name: str
    base_path: str | None
    config: str | None
    models: list[str]
    backend: str
    binary: str | None
    key: dict = field(default_factory=dict)
    served_config: str | None = None  # what the server reads: ``config`` with absolute paths


def numeric_versions(base: Path) -> list[int]:
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def parse_config(path: Path):
    """The ``ModelServerConfig`` in ``path``, parsed with tensorflow-serving-api's protos.

    They are plain protobuf modules (no TensorFlow import), so a typo is reported here with the
    parser's line and column instead of as a server that dies at start-up.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        return text_format.Parse(
            path.read_text(errors="replace"), model_server_config_pb2.ModelServerConfig()
        )
    except text_format.ParseError as exc:
        raise StartError(f"{path} is not a valid TF Serving model config: {exc}") from None


def absolute_base_paths(config) -> bool:
    """Resolve each relative ``base_path`` against the working folder; True if any changed."""
    changed = False
    for model in config.model_config_list.config:
        path = Path(model.base_path).expanduser()
        if model.base_path and not path.is_absolute():
            model.base_path = str(Path.cwd() / path)
            changed = True
    return changed


def resolve_backend(backend: str) -> tuple[str, str | None]:
    """``auto``/``python``/``tensorflow_model_server`` -> (backend, path of the binary)."""
    if backend not in ("auto", "python", MODEL_SERVER_BINARY):
        raise StartError(f"--backend must be auto, python or {MODEL_SERVER_BINARY}, not {backend!r}")
    if backend == "python":
        return "python", None
    named = os.environ.get(MODEL_SERVER_VAR)
    binary = shutil.which(named) if named else shutil.which(MODEL_SERVER_BINARY)
    if named and not binary:
        raise StartError(f"{MODEL_SERVER_VAR}={named!r} is not an executable file")
    if binary:
        return MODEL_SERVER_BINARY, os.path.abspath(binary)
    if backend == "auto":
        return "python", None
    raise StartError(
        f"{MODEL_SERVER_BINARY} is not on PATH; install it, set {MODEL_SERVER_VAR} to its path, "
        "or use --backend python (the embedded server)"
    )


def _from_config(name, config):
    config_path = Path(config).expanduser()
    config_path = config_path if config_path.is_absolute() else Path.cwd() / config_path
    if not config_path.is_file():
        raise StartError(f"model config file not found: {config_path}")
    text = config_path.read_text(errors="replace")
    parsed = parse_config(config_path)
    models = [model.name for model in parsed.model_config_list.config]
    if not models:
        raise StartError(
            f"{config_path} names no model (expected model_config_list {{ config {{ name: ... }} }})"
        )
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", config_path.stem)
    served_config = str(config_path)
    if NAME_RE.fullmatch(name) and absolute_base_paths(parsed):  # TF Serving needs them
        from google.protobuf import text_format

        resolved = state_dir() / f"{name}.config"
        resolved.write_text(text_format.MessageToString(parsed))
        served_config = str(resolved)
    extra_key = {"config_sha256": hashlib.sha256(text.encode()).hexdigest()}
    return name, models, str(config_path), served_config, extra_key


def _check_base_path(base_path) -> str:
    base_dir = Path(base_path).expanduser()
    base_dir = base_dir if base_dir.is_absolute() else Path.cwd() / base_dir
    if not base_dir.is_dir():
        raise StartError(f"base path {base_dir} does not exist (or is not a folder)")
    if not numeric_versions(base_dir):
        raise StartError(no_versions_message(base_dir))
    return str(base_dir)


def no_versions_message(base: Path) -> str:
    """Why a folder without numbered version subfolders cannot be served, and the fix
    (start and deploy say the same)."""
    hint = ""
    if (base / "saved_model.pb").exists():
        hint = f"; it is itself a SavedModel: give its parent, or move it to {base}/1"
    return (f"{base} holds no model versions: TF Serving expects numbered subfolders such as "
            f"{base}/1/saved_model.pb (`%tfserve export` writes them){hint}")


def resolve(name, base_path, config, backend, key_options) -> Spec:
    """Check a start request and say what it runs (StartError with the fix when it is wrong)."""
    if config is not None:
        if base_path is not None:
            raise StartError("give either BASE_PATH or --config, not both")
        name, models, config_abs, served_config, extra_key = _from_config(name, config)
        base = None
    else:
        if not name or base_path is None:
            raise StartError("start needs a NAME and a BASE_PATH (or a model config file)")
        base = _check_base_path(base_path)
        models, config_abs, served_config, extra_key = [name], None, None, {}
    if not NAME_RE.fullmatch(name):
        raise StartError(
            f"server name {name!r} must be letters, digits, '_', '.' or '-' (at most 100)"
        )
    kind, binary = resolve_backend(backend)
    key = {"name": name, "base_path": base, "config": config_abs, "backend": kind,
           "binary": binary, **key_options, **extra_key}
    return Spec(name, base, config_abs, models, kind, binary, key, served_config)
