"""TensorFlow's process settings from TF Serving's session flags.

``--tensorflow_session_config_file`` (a text ``ConfigProto``), the thread flags,
``--per_process_gpu_memory_fraction`` and ``--xla_cpu/gpu_compilation_enabled`` are what
``server.cc`` and ``main.cc`` put into the ``SessionOptions`` of every model. This server runs
TF2 functions in one process, so the same fields are mapped onto ``tf.config`` once, before any
model loads. As in ``server.cc`` the flags always overwrite the file's thread counts and GPU
memory fraction (their defaults included: 0, TensorFlow's choice). Fields with no ``tf.config``
counterpart are logged as not applied (docs/compatibility.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from tfserve_magic.server.config import ConfigError

log = logging.getLogger("tfserve_magic.server")

# ConfigProto fields mapped below; any other field set in the file is reported as not applied.
_APPLIED = {"intra_op_parallelism_threads", "inter_op_parallelism_threads",
            "allow_soft_placement", "log_device_placement", "device_count", "gpu_options",
            "graph_options"}
_GPU_APPLIED = {"allow_growth", "visible_device_list", "per_process_gpu_memory_fraction"}


def read_config(flags: dict):
    """The ConfigProto of the file (if any) with the flags written over it, as server.cc."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import config_pb2

    config = config_pb2.ConfigProto()
    path = flags.get("tensorflow_session_config_file", "")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"Cannot read session config file {path}: "
                              f"{exc.strerror or exc}") from None
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as exc:
            raise ConfigError(
                f"Error parsing text-format tensorflow.ConfigProto: invalid session config "
                f"file {path}: {exc}") from None
    fraction = float(flags.get("per_process_gpu_memory_fraction", 0) or 0)
    if fraction < 0:
        raise ConfigError(f"--per_process_gpu_memory_fraction must be >= 0, not {fraction}")
    config.gpu_options.per_process_gpu_memory_fraction = fraction
    both = flags.get("tensorflow_session_parallelism", 0)
    intra = flags.get("tensorflow_intra_op_parallelism", 0)
    inter = flags.get("tensorflow_inter_op_parallelism", 0)
    if intra > 0 or inter > 0:
        config.intra_op_parallelism_threads = max(0, intra)
        config.inter_op_parallelism_threads = max(0, inter)
    else:
        config.intra_op_parallelism_threads = max(0, both)
        config.inter_op_parallelism_threads = max(0, both)
    return config


def apply(tf, flags: dict) -> None:
    """Put the session settings into effect (before TensorFlow initialises its devices)."""
    config = read_config(flags)
    if config.intra_op_parallelism_threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.intra_op_parallelism_threads)
    if config.inter_op_parallelism_threads:
        tf.config.threading.set_inter_op_parallelism_threads(config.inter_op_parallelism_threads)
    if config.HasField("gpu_options") or config.device_count:
        _apply_gpu(tf, config)
    if config.allow_soft_placement:
        tf.config.set_soft_device_placement(True)
    if config.log_device_placement:
        tf.debugging.set_log_device_placement(True)
    _apply_xla(tf, config, flags)
    _report_unapplied(config)
    log.info("Session settings: intra_op_parallelism_threads=%d inter_op_parallelism_threads=%d "
             "per_process_gpu_memory_fraction=%g", config.intra_op_parallelism_threads,
             config.inter_op_parallelism_threads,
             config.gpu_options.per_process_gpu_memory_fraction)


def _apply_gpu(tf, config) -> None:
    gpus = tf.config.list_physical_devices("GPU")
    options = config.gpu_options
    fraction = options.per_process_gpu_memory_fraction
    if not gpus:
        if fraction or options.allow_growth or options.visible_device_list:
            log.info("No GPU is visible: the GPU options (per_process_gpu_memory_fraction=%g, "
                     "allow_growth=%s, visible_device_list=%r) have no effect", fraction,
                     options.allow_growth, options.visible_device_list)
        return
    if config.device_count.get("GPU", len(gpus)) == 0:
        tf.config.set_visible_devices([], "GPU")
        log.info("device_count { GPU: 0 }: the GPUs are hidden from TensorFlow")
        return
    if options.visible_device_list:
        try:
            wanted = [int(i) for i in options.visible_device_list.split(",")]
            chosen = [gpus[i] for i in wanted]
        except (ValueError, IndexError):
            raise ConfigError(
                f"Invalid visible_device_list {options.visible_device_list!r}: "
                f"{len(gpus)} GPU(s) are visible") from None
        tf.config.set_visible_devices(chosen, "GPU")
        gpus = chosen
    for index, gpu in enumerate(gpus):
        if fraction > 0:
            total = _gpu_total_mib(index)
            if total is None:
                log.warning("Cannot read the memory size of %s; "
                            "--per_process_gpu_memory_fraction=%g is not applied", gpu.name,
                            fraction)
                continue
            limit = int(total * min(fraction, 1.0))
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
            log.info("%s: memory limit %d MiB (%g of %d MiB)", gpu.name, limit, fraction, total)
        elif options.allow_growth:
            tf.config.experimental.set_memory_growth(gpu, True)


def _gpu_total_mib(index: int) -> int | None:
    """Total memory of the index-th visible GPU in MiB (nvidia-smi), or None."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True).stdout
        rows = [int(r) for r in out.split()]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            rows = [rows[int(i)] for i in visible.split(",") if i.strip().isdigit()]
        return rows[index]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _apply_xla(tf, config, flags: dict) -> None:
    """main.cc disables XLA compilation unless an --xla_*_compilation_enabled flag is given;
    the session's global_jit_level (ON_1/ON_2) then turns auto-clustering on."""
    allowed = flags.get("xla_cpu_compilation_enabled") or flags.get("xla_gpu_compilation_enabled")
    level = config.graph_options.optimizer_options.global_jit_level
    wants_jit = level > 0  # ON_1 = 1, ON_2 = 2 (OFF = -1, DEFAULT = 0)
    if allowed and wants_jit:
        tf.config.optimizer.set_jit("autoclustering")
        log.info("XLA JIT auto-clustering on (global_jit_level %d)", level)
    else:
        tf.config.optimizer.set_jit(False)
        if wants_jit:
            log.warning("global_jit_level is set but XLA compilation is disabled: pass "
                        "--xla_cpu_compilation_enabled or --xla_gpu_compilation_enabled")
        elif allowed:
            log.info("XLA compilation enabled (auto-clustering stays off: global_jit_level "
                     "is not ON_1/ON_2)")


def _report_unapplied(config) -> None:
    ignored = [f.name for f, _ in config.ListFields() if f.name not in _APPLIED]
    ignored += [f"gpu_options.{f.name}" for f, _ in config.gpu_options.ListFields()
                if f.name not in _GPU_APPLIED]
    ignored += [f"graph_options.{f.name}" for f, _ in config.graph_options.ListFields()
                if f.name != "optimizer_options"]
    if ignored:
        log.warning("Session config fields not applied by this server: %s",
                    ", ".join(sorted(ignored)))
