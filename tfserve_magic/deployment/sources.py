"""What to deploy: models, versions and labels, and the batching/monitoring files.

Three origins give the same ``Plan``: a base path (one model, its newest version, as TF
Serving's default ``latest`` policy serves), a model config file (its policies and labels), or
a running server of this user (what it serves now, with its batching and monitoring flags).
No TensorFlow here: config files are read with ``server/config.py``'s protobuf parsers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


class DeployError(ValueError):
    """A deploy that cannot be done; the message says why and how to fix it."""


@dataclass
class ModelSource:
    """One model: where its versions are, which of them go into the image, and its labels."""

    name: str
    base_path: Path
    versions: list[int]
    labels: dict[str, int] = field(default_factory=dict)

    def version_path(self, version: int) -> Path:
        """The version's folder as named on disk (TF Serving also reads "00000123" as 123)."""
        return version_dirs(self.base_path).get(version, self.base_path / str(version))


@dataclass
class Plan:
    models: list[ModelSource]
    origin: str
    enable_batching: bool = False
    batching_file: Path | None = None
    monitoring_file: Path | None = None


_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def version_dirs(base: Path) -> dict[int, Path]:
    """version number -> folder; with "1" and "001" both present, the plain one wins."""
    found: dict[int, Path] = {}
    for path in sorted(base.iterdir(), key=lambda p: (len(p.name), p.name), reverse=True):
        if path.is_dir() and path.name.isdigit():
            found[int(path.name)] = path
    return found


def numeric_versions(base: Path) -> list[int]:
    return sorted(version_dirs(base))


def _check_name(name: str) -> None:
    if not name or not _MODEL_NAME_RE.match(name):
        raise DeployError(
            f"model name {name!r} must be letters, digits, '_', '.' or '-' (at most 100), "
            "as it becomes part of /v1/models/NAME and of file names"
        )


def _base_dir(base_path, name: str) -> Path:
    base = Path(base_path).expanduser().absolute()
    if not base.is_dir():
        raise DeployError(f"base path {base} of model {name} does not exist (or is not a folder)")
    return base


def _no_versions(base: Path) -> DeployError:
    from tfserve_magic.manager.spec import no_versions_message

    return DeployError(no_versions_message(base))


def from_base_path(name: str, base_path) -> Plan:
    """One model, its newest version (TF Serving's default policy serves only that one)."""
    _check_name(name)
    base = _base_dir(base_path, name)
    versions = numeric_versions(base)
    if not versions:
        raise _no_versions(base)
    return Plan([ModelSource(name, base, [versions[-1]])], origin=f"base path {base}")


def _versions_for(spec, available: list[int] | None = None) -> list[int]:
    base = Path(spec.base_path)
    on_disk = numeric_versions(base)
    if not on_disk:
        raise _no_versions(base)
    if available:  # a running server: what it serves now
        versions = sorted(v for v in available if v in on_disk)
    elif spec.policy == "all":
        versions = on_disk
    elif spec.policy == "specific":
        missing = sorted(set(spec.versions) - set(on_disk))
        if missing:
            raise DeployError(
                f"model {spec.name}: the config asks for versions {missing}, which are not in "
                f"{base} (it has {on_disk})"
            )
        versions = sorted(spec.versions)
    else:
        versions = on_disk[-spec.num_versions:]
    labelled = set(spec.labels.values())
    if labelled - set(versions):
        extra = sorted(labelled - set(versions))
        if set(extra) - set(on_disk):
            raise DeployError(
                f"model {spec.name}: labels point at versions {extra} that are not in {base}"
            )
        versions = sorted(set(versions) | set(extra))
    return versions


def from_config(path, *, available: dict[str, list[int]] | None = None) -> Plan:
    """Every model of a text ``ModelServerConfig`` with the versions its policies serve."""
    from tfserve_magic.server.config import ConfigError, parse_model_config

    config = Path(path).expanduser().absolute()
    if not config.is_file():
        raise DeployError(f"model config file not found: {config}")
    try:
        specs = parse_model_config(str(config))
    except ConfigError as exc:
        raise DeployError(str(exc)) from None
    if not specs:
        raise DeployError(f"{config} names no model (model_config_list {{ config {{ ... }} }})")
    models = []
    for spec in specs:
        _check_name(spec.name)
        base = _base_dir(spec.base_path, spec.name)
        spec.base_path = str(base)
        versions = _versions_for(spec, (available or {}).get(spec.name))
        models.append(ModelSource(spec.name, base, versions, dict(spec.labels)))
    return Plan(models, origin=f"model config {config}")


def _flag_values(argv: list[str]) -> dict[str, str]:
    """``--flag=value`` / ``--flag value`` / ``--flag`` of a server command line."""
    values: dict[str, str] = {}
    words = list(argv)
    for i, word in enumerate(words):
        if not word.startswith("--") or word == "--":
            continue
        name, sep, value = word[2:].partition("=")
        if not sep:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            value = "true" if not nxt or nxt.startswith("--") else nxt
        values[name] = value
    return values


def _true(text: str | None) -> bool:
    return (text or "").lower() in ("true", "1", "yes")


def from_server(name: str) -> Plan:
    """What the running server ``name`` serves now, with its batching and monitoring files."""
    from tfserve_magic import manager

    handle = manager.find(name)
    if handle is None:
        running = ", ".join(h.name for h in manager.servers()) or "none"
        raise DeployError(
            f"no running server named {name!r} (running: {running}); give a BASE_PATH "
            "(`deploy NAME BASE_PATH ...`) or start it first"
        )
    try:
        record = manager.running_record(name)
    except LookupError as exc:
        raise DeployError(str(exc)) from None
    argv = [str(a) for a in record.argv]
    flags = _flag_values(argv)
    available: dict[str, list[int]] = {}
    try:
        for model, entries in manager.status(name).items():
            available[model] = sorted(
                int(e["version"]) for e in entries if e.get("state") == "AVAILABLE"
            )
    except (LookupError, RuntimeError, ValueError, KeyError):
        available = {m: list(v) for m, v in handle.models.items()}
    config_file = flags.get("model_config_file") or handle.config
    if config_file:
        plan = from_config(config_file, available=available)
    else:
        base = handle.base_path or flags.get("model_base_path")
        model = flags.get("model_name") or handle.name
        if not base:
            raise DeployError(f"server {name} records no base path; give BASE_PATH")
        plan = from_base_path(model, base)
        live = [v for v in available.get(model, []) if v in numeric_versions(plan.models[0].base_path)]
        if live:
            plan.models[0].versions = live
    plan.origin = f"running server {name} ({plan.origin})"
    plan.enable_batching = _true(flags.get("enable_batching"))
    if flags.get("batching_parameters_file"):
        plan.batching_file = Path(flags["batching_parameters_file"])
    monitoring = flags.get("monitoring_config_file")
    if monitoring and not _notebook_default(Path(monitoring)):
        plan.monitoring_file = Path(monitoring)
    return plan


def _notebook_default(path: Path) -> bool:
    """The metrics config the manager gives every server started from a notebook (for
    %tfserve monitor): not the user's choice, so a recipe does not carry it."""
    from tfserve_magic.registry import state_dir

    return path.name.endswith(".monitoring.pbtxt") and path.parent == state_dir()
