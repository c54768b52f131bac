"""Text-proto configuration files: ModelServerConfig, BatchingParameters, MonitoringConfig.

ModelServerConfig comes from the ``tensorflow-serving-api`` package. That package does not ship
``session_bundle_config.proto`` or ``monitoring_config.proto``, so their messages are declared
here with the same package, names and field types; text files written for TF Serving parse
unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the problem."""


@dataclass
class ModelSpec:
    """One model to serve: where its versions live and which of them to load."""

    name: str
    base_path: str
    policy: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1  # for "latest"
    versions: frozenset = frozenset()  # for "specific"
    labels: dict = field(default_factory=dict)  # label -> version


@dataclass
class BatchingConfig:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 0  # 0: number of CPU cores
    allowed_batch_sizes: tuple = ()


@dataclass
class MonitoringSettings:
    prometheus_enabled: bool = False
    path: str = "/monitoring/prometheus/metrics"


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"Cannot read {what} {path}: {exc.strerror or exc}") from None


def _parse_text(text: str, message, path: str, what: str):
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        # TF Serving's own words first (scripts grep for them), then which file and where.
        raise ConfigError(
            f"Error parsing text-format {message.DESCRIPTOR.full_name}: invalid {what} {path}: "
            f"{exc}"
        ) from None
    return message


def model_spec_from_flags(name: str, base_path: str) -> ModelSpec:
    return ModelSpec(name=name, base_path=base_path)


def parse_model_config(path: str) -> list[ModelSpec]:
    """Read a text ``ModelServerConfig`` the way tensorflow_model_server checks it."""
    from tensorflow_serving.config import model_server_config_pb2

    config = _parse_text(
        _read(path, "model config file"),
        model_server_config_pb2.ModelServerConfig(),
        path,
        "model config file",
    )
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError("ModelServer does not yet support custom model config.")
    return specs_from_config(config, path)


def specs_from_config(config, path: str = "config") -> list[ModelSpec]:
    """The ModelSpecs of a ``ModelServerConfig`` message (its ``model_config_list``)."""
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for cfg in config.model_config_list.config:
        if not cfg.name:
            raise ConfigError(f"{path}: every model config needs a name")
        if cfg.name in seen:
            raise ConfigError(f"Illegal to list model {cfg.name} multiple times in config list")
        seen.add(cfg.name)
        if cfg.model_platform and cfg.model_platform != "tensorflow":
            raise ConfigError(
                f"Model {cfg.name}: model_platform {cfg.model_platform!r} is not supported; "
                "this server serves TensorFlow SavedModels (model_platform: \"tensorflow\")"
            )
        if not cfg.base_path:
            raise ConfigError(f"Model {cfg.name}: base_path is empty")
        if not os.path.isabs(cfg.base_path):
            raise ConfigError(
                f"Expected model {cfg.name} to have an absolute path or URI; "
                f"got base_path()={cfg.base_path}"
            )
        spec = ModelSpec(name=cfg.name, base_path=cfg.base_path)
        which = cfg.model_version_policy.WhichOneof("policy_choice")
        if which == "all":
            spec.policy = "all"
        elif which == "specific":
            spec.policy = "specific"
            spec.versions = frozenset(int(v) for v in cfg.model_version_policy.specific.versions)
            if not spec.versions:
                raise ConfigError(f"Model {cfg.name}: specific version policy lists no versions")
        elif which == "latest":
            spec.num_versions = max(1, int(cfg.model_version_policy.latest.num_versions))
        spec.labels = {str(k): int(v) for k, v in cfg.version_labels.items()}
        specs.append(spec)
    return specs


def _declare_messages():
    """Build BatchingParameters and MonitoringConfig classes (same names as TF Serving's)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tfserve_magic/serving_configs.proto",
        package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    F = descriptor_pb2.FieldDescriptorProto
    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED

    def message(name, fields):
        msg = fdp.message_type.add(name=name)
        for number, (fname, ftype, label, type_name) in enumerate(fields, start=1):
            msg.field.add(name=fname, number=number, type=ftype, label=label, type_name=type_name)

    i64 = (F.TYPE_MESSAGE, optional, ".google.protobuf.Int64Value")
    message(
        "BatchingParameters",
        [
            ("max_batch_size", *i64),
            ("batch_timeout_micros", *i64),
            ("max_enqueued_batches", *i64),
            ("num_batch_threads", *i64),
            ("thread_pool_name", F.TYPE_MESSAGE, optional, ".google.protobuf.StringValue"),
            ("allowed_batch_sizes", F.TYPE_INT64, repeated, None),
            ("pad_variable_length_inputs", F.TYPE_BOOL, optional, None),
            ("enable_large_batch_splitting", F.TYPE_MESSAGE, optional,
             ".google.protobuf.BoolValue"),
            ("max_execution_batch_size", *i64),
        ],
    )
    message(
        "PrometheusConfig",
        [("enable", F.TYPE_BOOL, optional, None), ("path", F.TYPE_STRING, optional, None)],
    )
    message("SamplingConfig", [("standard_sampling_rate", F.TYPE_DOUBLE, optional, None)])
    message(
        "MonitoringConfig",
        [
            ("prometheus_config", F.TYPE_MESSAGE, optional, ".tensorflow.serving.PrometheusConfig"),
            ("sampling_config", F.TYPE_MESSAGE, optional, ".tensorflow.serving.SamplingConfig"),
        ],
    )
    for msg in fdp.message_type:
        for fld in msg.field:
            if not fld.type_name:
                fld.ClearField("type_name")
    pool.Add(fdp)
    return (
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
        ),
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
        ),
    )


_MESSAGES = None


def _messages():
    global _MESSAGES
    if _MESSAGES is None:
        _MESSAGES = _declare_messages()
    return _MESSAGES


def parse_batching_parameters(path: str | None) -> BatchingConfig:
    """Read a text ``BatchingParameters`` file; unset fields take TensorFlow's defaults."""
    result = BatchingConfig()
    if not path:
        return result
    batching_cls, _ = _messages()
    params = _parse_text(_read(path, "batching parameters file"), batching_cls(), path,
                         "batching parameters file")
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads"):
        if params.HasField(name):
            setattr(result, name, int(getattr(params, name).value))
    result.allowed_batch_sizes = tuple(int(v) for v in params.allowed_batch_sizes)
    if result.max_batch_size <= 0:
        raise ConfigError(f"{path}: max_batch_size must be positive")
    if result.max_enqueued_batches <= 0:
        raise ConfigError(f"{path}: max_enqueued_batches must be positive")
    if result.batch_timeout_micros < 0:
        raise ConfigError(f"{path}: batch_timeout_micros must not be negative")
    if result.num_batch_threads < 0:
        raise ConfigError(f"{path}: num_batch_threads must not be negative")
    if result.allowed_batch_sizes:
        sizes = result.allowed_batch_sizes
        if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] <= 0:
            raise ConfigError(f"{path}: allowed_batch_sizes must be positive and increasing")
        if sizes[-1] != result.max_batch_size:
            raise ConfigError(
                f"{path}: the last entry in allowed_batch_sizes must match max_batch_size; "
                f"last entry was {sizes[-1]}; expected {result.max_batch_size}"
            )
    if params.HasField("enable_large_batch_splitting") and params.enable_large_batch_splitting.value:
        raise ConfigError(f"{path}: enable_large_batch_splitting is not supported by this server")
    if params.pad_variable_length_inputs:
        raise ConfigError(f"{path}: pad_variable_length_inputs is not supported by this server")
    return result


def parse_monitoring_config(path: str | None) -> MonitoringSettings:
    """Read a text ``MonitoringConfig``; only ``prometheus_config`` has an effect."""
    result = MonitoringSettings()
    if not path:
        return result
    _, monitoring_cls = _messages()
    config = _parse_text(_read(path, "monitoring config file"), monitoring_cls(), path,
                         "monitoring config file")
    result.prometheus_enabled = bool(config.prometheus_config.enable)
    if config.prometheus_config.path:
        result.path = config.prometheus_config.path
        if not result.path.startswith("/"):
            raise ConfigError(f"{path}: prometheus_config.path must start with '/'")
    return result
