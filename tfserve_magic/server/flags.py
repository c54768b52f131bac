"""tensorflow_model_server's command line: the flag table, parsing and the start-up checks.

Two tables, printed in this order by ``usage``: the flags of tensorflow_model_server that this
server implements (same names, defaults and meaning), then tfserve_magic's own additions
(docs/compatibility.md). A TF Serving flag this server does not implement is refused by name
(``UNSUPPORTED``) rather than ignored; implementing one means moving it into ``TF_SERVING``.
The parsed flags are a plain dict ``{name: value}`` holding every flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tfserve_magic.server.sizing import parse_workers

_CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Flag:
    """One ``--name=value`` option: its type (bool, int, float or str), default and help."""

    kind: type
    default: object
    help: str


# tensorflow_model_server's flags we implement (same names and defaults).
TF_SERVING: dict[str, Flag] = {
    "port": Flag(int, 8500, "gRPC port (0 picks a free port, -1 serves no gRPC over TCP)"),
    "grpc_socket_path": Flag(str, "", "also serve gRPC on this Unix socket"),
    "grpc_max_threads": Flag(int, 4 * _CPUS, "threads of the gRPC server"),
    "grpc_channel_arguments": Flag(str, "", "gRPC server options: key=value,key=value"),
    "enable_grpc_healthcheck_service": Flag(bool, False, "serve grpc.health.v1.Health"),
    "rest_api_port": Flag(
        int, 0, "HTTP/REST port; 0 picks a free port (TF Serving: 0 disables REST)"
    ),
    "rest_api_num_threads": Flag(int, 4 * _CPUS, "threads for model calls too slow to run inline"),
    "rest_api_timeout_in_ms": Flag(int, 30000, "timeout of predict/classify/regress (504)"),
    "rest_api_enable_cors_support": Flag(bool, False, "add CORS headers to every /v1 response"),
    "model_name": Flag(str, "default", "model name (single-model mode)"),
    "model_base_path": Flag(str, "", "folder holding numeric version folders (single model)"),
    "model_config_file": Flag(str, "", "text ModelServerConfig; overrides the two flags above"),
    "model_config_file_poll_wait_seconds": Flag(
        float, 0, "re-read --model_config_file every N seconds (0: once; fractions allowed)"
    ),
    "file_system_poll_wait_seconds": Flag(
        float, 1, "poll base paths every N seconds (0: once, <0: never; fractions allowed)"
    ),
    "allow_version_labels_for_unavailable_models": Flag(
        bool, False, "allow new labels to point at versions that are not loaded yet"
    ),
    "enable_batching": Flag(bool, False, "merge concurrent predict requests into batches"),
    "batching_parameters_file": Flag(str, "", "text BatchingParameters (needs --enable_batching)"),
    "monitoring_config_file": Flag(str, "", "text MonitoringConfig (Prometheus endpoint)"),
    "tensorflow_session_parallelism": Flag(int, 0, "intra- and inter-op threads (0: auto)"),
    "tensorflow_intra_op_parallelism": Flag(int, 0, "intra-op threads (0: auto)"),
    "tensorflow_inter_op_parallelism": Flag(int, 0, "inter-op threads (0: auto)"),
    "saved_model_tags": Flag(str, "serve", "comma-separated MetaGraphDef tag set to load"),
    "max_num_load_retries": Flag(
        int, 0, "retries of a failed version load (TF Serving: 5; see docs/compatibility.md)"
    ),
    "load_retry_interval_micros": Flag(int, 60_000_000, "wait between load retries"),
    "num_load_threads": Flag(int, 0, "models loaded in parallel at start-up (0: 4 x usable cores)"),
    # TLS (server/tls.py)
    "ssl_config_file": Flag(
        str, "", "text SSLConfig (PEM key, certificate, custom_ca, client_verify) for gRPC"
    ),
    "version": Flag(bool, False, "print the versions and exit"),
    # Issue 22: TF Serving's session and warm-up flags (server/warmup.py,
    # server/session_config.py, server/signature_check.py, server/batching_per_model.py).
    "enable_model_warmup": Flag(
        bool, True, "replay <version>/assets.extra/tf_serving_warmup_requests at load"
    ),
    "num_request_iterations_for_warmup": Flag(
        int, 0, "times each warm-up record is replayed (used only if > 0; otherwise once)"
    ),
    "enable_per_model_batching_parameters": Flag(
        bool, False, "with --enable_batching: batch a version by its batching_params.pbtxt "
        "(versions without one are not batched)"
    ),
    "tensorflow_session_config_file": Flag(
        str, "", "text ConfigProto (threads, soft placement, GPU options); thread and GPU "
        "fraction flags override it"
    ),
    "per_process_gpu_memory_fraction": Flag(
        float, 0.0, "per-GPU memory limit as a fraction of its memory (0: TensorFlow's choice)"
    ),
    "xla_cpu_compilation_enabled": Flag(bool, False, "allow XLA:CPU JIT (global_jit_level)"),
    "xla_gpu_compilation_enabled": Flag(bool, False, "allow XLA JIT on CPU and GPU"),
    "enable_signature_method_name_check": Flag(
        bool, False, "check that a signature's method_name fits the API called"
    ),
}

# tfserve_magic's additions (docs/compatibility.md).
OURS: dict[str, Flag] = {
    "host": Flag(str, "127.0.0.1", "bind address (TF Serving binds all interfaces)"),
    "rest_api_port_retries": Flag(int, 0, "if the REST port is taken, try the next N ports"),
    "rest_api_max_body_bytes": Flag(
        int, 1 << 30, "largest request body accepted, after gunzip (413 above it)"
    ),
    "info_file": Flag(str, "", "write the server info JSON here once ready; removed on exit"),
    "parent_pid": Flag(int, 0, "exit when this process is gone"),
    "workers": Flag(
        str, "auto", "server processes sharing the port: N, or auto (one per usable core, "
        "as many as the memory holds); see server/workers.py"
    ),
    # Hardening (docs/compatibility.md, "Limits"); implemented in limits.py and guard.py.
    "owners_file": Flag(
        str, "", "with --parent_pid: also stay while a pid listed in this file lives"
    ),
    "rest_api_max_header_bytes": Flag(int, 64 * 1024, "largest request header block (431)"),
    "rest_api_header_timeout_seconds": Flag(float, 30, "time to send a request's headers (408)"),
    "rest_api_body_timeout_seconds": Flag(float, 60, "longest pause inside a request body (408)"),
    "rest_api_idle_timeout_seconds": Flag(float, 75, "close connections idle this long"),
    "rest_api_max_connections": Flag(
        int, 0, "open connections (503 beyond; 0: the descriptor limit minus a reserve)"
    ),
    "rest_api_allowed_hosts": Flag(
        str, "", "extra Host names answered when bound to loopback (comma-separated; * any)"
    ),
    # TLS for REST (server/tls.py; TF Serving serves REST without TLS)
    "rest_api_ssl": Flag(
        bool, False, "serve REST over HTTPS with --ssl_config_file (and its client_verify)"
    ),
}
FLAGS: dict[str, Flag] = {**TF_SERVING, **OURS}

# tensorflow_model_server flags this server refuses by name rather than silently ignoring.
UNSUPPORTED = {
    "use_alts_credentials": "gRPC is served without ALTS",
    "platform_config_file": "platform config files are not supported",
    "num_unload_threads": "unloads happen on the poll thread",
    "flush_filesystem_caches": "not applicable",
    "enable_profiler": "the profiler service is not served",
    "remove_unused_fields_from_bundle_metagraph": "not applicable",
    "prefer_tflite_model": "TF Lite models are not served",
    "num_tflite_pools": "TF Lite models are not served",
    "num_tflite_interpreters_per_pool": "TF Lite models are not served",
    "mixed_precision": "mixed precision is not supported",
    "thread_pool_factory_config_file": "not supported",
    "enable_serialization_as_tensor_content": "gRPC responses always use the typed fields",
}


class FlagError(ValueError):
    """A flag that is unknown, unsupported, mistyped or at odds with another (exit code 2)."""


def usage() -> str:
    lines = [
        "usage: python -m tfserve_magic serve --model_base_path=PATH [--model_name=NAME] "
        "[--rest_api_port=8501] [flags]",
        "       python -m tfserve_magic serve --model_config_file=FILE [flags]",
        "",
        "tensorflow_model_server's flags (--flag=value or --flag value):",
    ]
    lines += _flag_lines(TF_SERVING)
    lines += ["", "tfserve_magic's own flags:"]
    lines += _flag_lines(OURS)
    return "\n".join(lines)


def _flag_lines(table: dict[str, Flag]) -> list[str]:
    return [f"  --{name:<46} {flag.help} (default: {flag.default!r})"
            for name, flag in table.items()]


def defaults() -> dict:
    """Every flag at its default value."""
    return {name: flag.default for name, flag in FLAGS.items()}


def _convert(name: str, kind: type, text: str):
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise FlagError(f"Invalid value for --{name}: {text!r} (expected true or false)")
    if kind is int:
        try:
            return int(text, 10)
        except ValueError:
            raise FlagError(f"Invalid value for --{name}: {text!r} (expected an integer)") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise FlagError(f"Invalid value for --{name}: {text!r} (expected a number)") from None
    return text


def parse_flags(argv: list[str]) -> dict:
    """``--flag=value`` and ``--flag value`` (bool flags: ``--flag`` or ``--flag=false``)."""
    values = defaults()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"Unexpected argument {arg!r}: every option is a --flag")
        name, sep, value = arg.lstrip("-").partition("=")
        if name in UNSUPPORTED:
            raise FlagError(
                f"--{name} is a tensorflow_model_server flag that this server does not support "
                f"({UNSUPPORTED[name]})"
            )
        flag = FLAGS.get(name)
        if flag is None:
            raise FlagError(f"Unknown flag --{name}")
        if not sep:
            if flag.kind is bool:
                values[name] = True
                continue
            if i >= len(argv):
                raise FlagError(f"Flag --{name} needs a value")
            value = argv[i]
            i += 1
        values[name] = _convert(name, flag.kind, value)
    return values


def check(flags: dict) -> None:
    """The start-up checks TF Serving makes on the parsed flags, and ours (FlagError)."""
    if not flags["model_base_path"] and not flags["model_config_file"]:
        raise FlagError(
            "Both --model_base_path and --model_config_file are empty: give one of them"
        )
    if flags["batching_parameters_file"] and not flags["enable_batching"]:
        raise FlagError("--batching_parameters_file is set but --enable_batching is not")
    if all(
        flags[k]
        for k in (
            "tensorflow_session_parallelism",
            "tensorflow_intra_op_parallelism",
            "tensorflow_inter_op_parallelism",
        )
    ):
        raise FlagError(
            "Setting --tensorflow_session_parallelism together with both "
            "--tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism is an error"
        )
    if flags["rest_api_port"] and flags["rest_api_port"] == flags["port"]:
        raise FlagError(
            f"--rest_api_port and --port must differ (both are {flags['port']}); "
            "TF Serving would not serve REST at all"
        )
    if not 0 <= flags["rest_api_port"] <= 65535:
        raise FlagError(f"--rest_api_port must be between 0 and 65535, not {flags['rest_api_port']}")
    for item in flags["grpc_channel_arguments"].split(","):
        if item.strip() and "=" not in item:
            raise FlagError(f"--grpc_channel_arguments: {item.strip()!r} is not key=value")
    if not -1 <= flags["port"] <= 65535:
        raise FlagError(f"--port must be between -1 and 65535, not {flags['port']}")
    if flags["rest_api_max_body_bytes"] <= 0:
        raise FlagError("--rest_api_max_body_bytes must be positive")
    try:
        parse_workers(flags["workers"])
    except ValueError as exc:
        raise FlagError(str(exc)) from None
    for name in ("rest_api_max_header_bytes", "rest_api_header_timeout_seconds",
                 "rest_api_body_timeout_seconds", "rest_api_idle_timeout_seconds"):
        if flags[name] <= 0:
            raise FlagError(f"--{name} must be positive")
    if flags["rest_api_ssl"] and not flags["ssl_config_file"]:
        raise FlagError("--rest_api_ssl needs --ssl_config_file (its key and certificate)")
    if flags["rest_api_max_connections"] < 0:
        raise FlagError("--rest_api_max_connections must be 0 (automatic) or positive")


def given(argv: list[str], name: str) -> bool:
    """Whether ``--name`` was given on the command line ``argv`` rather than defaulted."""
    return any(a.lstrip("-").split("=")[0] == name for a in argv if a.startswith("-"))


# The process options a --workers parent owns: a worker gets its own values for these.
PARENT_OWNED = ("workers", "info_file", "parent_pid", "owners_file", "rest_api_port",
                "rest_api_port_retries", "port")


def worker_flags(flags: dict, *, port: int, parent: int, count: int,
                 grpc_port: int = -1) -> list[str]:
    """The command line of one of ``count`` workers: the parent's flags that differ from the
    defaults, with the ports and process options the parent owns replaced."""
    table = defaults()
    args = []
    for name, value in flags.items():
        if name in PARENT_OWNED or value == table.get(name):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        args.append(f"--{name}={value}")
    args += [f"--rest_api_port={port}", f"--port={grpc_port}", "--workers=1",
             f"--parent_pid={parent}"]
    # TensorFlow's thread pools keep their defaults in every worker: splitting the cores
    # between the workers' pools (1 intra-op thread each on 2 cores) measured 35 % slower at
    # 100 images, c=8 (docs/benchmarks.md).
    # TF Serving's --rest_api_num_threads is the server's total: split it over the workers.
    if "rest_api_num_threads" in flags:
        threads = max(1, flags["rest_api_num_threads"] // count)
        args = [a for a in args if not a.startswith("--rest_api_num_threads=")]
        args.append(f"--rest_api_num_threads={threads}")
    return args
