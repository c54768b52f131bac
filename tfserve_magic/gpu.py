"""Which accelerator(s) a child model server gets, and the environment that gives them to it.

The kernel and the server are two TensorFlow processes. By default each would map nearly all of
every visible GPU's memory, so the server is started with ``TF_FORCE_GPU_ALLOW_GROWTH=true`` and
with ``CUDA_VISIBLE_DEVICES`` derived from what the kernel sees (docs/gpu.md).

Nothing here imports TensorFlow: the kernel's TensorFlow is only inspected when the notebook has
already imported it, and then only through calls that do not initialise the GPU.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

GROWTH_VAR = "TF_FORCE_GPU_ALLOW_GROWTH"
VISIBLE_VAR = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class KernelTF:
    """What the kernel's already-imported TensorFlow knows about its GPUs.

    ``physical``: the physical GPU count TF enumerated; ``visible``: indices (into ``physical``)
    left visible by ``tf.config.set_visible_devices``; ``initialized``: the runtime has started,
    so those GPUs' memory is already mapped; ``growth``: memory growth per visible GPU.
    """

    physical: int
    visible: tuple[int, ...]
    initialized: bool
    growth: tuple[bool, ...] = ()


@dataclass
class GpuPlan:
    """The child's environment changes, the device label shown while starting, and warnings."""

    env: dict[str, str] = field(default_factory=dict)
    label: str = "CPU"
    warnings: list[str] = field(default_factory=list)


def parse_request(gpu: str | int | None) -> str | list[int]:
    """``auto`` | ``none`` | ``N[,M]`` -> "auto", "none" or a list of ints (ValueError if bad)."""
    if gpu is None:
        return "auto"
    if isinstance(gpu, int) and not isinstance(gpu, bool):
        gpu = str(gpu)
    text = str(gpu).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text in ("none", "cpu", "-1"):
        return "none"
    if not re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        raise ValueError(f"--gpu must be auto, none, or device numbers like 0 or 0,1; got {gpu!r}")
    ids = [int(part) for part in text.split(",")]
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpu lists a device twice: {gpu!r}")
    return ids


def _entries(cuda_visible: str) -> list[str]:
    return [part.strip() for part in cuda_visible.split(",") if part.strip()]


def derive_visible_devices(
    request: str | list[int], cuda_visible: str | None, kernel_tf: KernelTF | None = None
) -> str | None:
    """The child's ``CUDA_VISIBLE_DEVICES``, or None to leave it unset (inherit every GPU).

    Device numbers in a request are the *notebook's* numbering (its ``GPU:N``), so they are
    mapped through the kernel's own ``CUDA_VISIBLE_DEVICES`` when that is set.
    """
    if request == "none":
        return ""
    entries = _entries(cuda_visible) if cuda_visible is not None else None
    if entries is not None and entries and entries[0].startswith("-"):
        entries = []  # "-1": CUDA hides every device
    if request == "auto":
        if kernel_tf is not None and len(kernel_tf.visible) < kernel_tf.physical:
            # the notebook narrowed its GPUs with tf.config.set_visible_devices: follow it
            return ",".join(_map(list(kernel_tf.visible), entries))
        if cuda_visible is None:
            return None
        return ",".join(entries)
    ids = list(request)
    if kernel_tf is not None and len(kernel_tf.visible) < kernel_tf.physical:
        if any(i >= len(kernel_tf.visible) for i in ids):
            raise ValueError(
                f"--gpu {','.join(map(str, ids))}: the notebook's TensorFlow sees only "
                f"{len(kernel_tf.visible)} GPU(s)"
            )
        ids = [kernel_tf.visible[i] for i in ids]  # notebook GPU:N -> physical index
    if entries is not None:
        missing = [i for i in ids if i >= len(entries)]
        if missing:
            shown = cuda_visible if cuda_visible else "none"
            raise ValueError(
                f"--gpu {','.join(map(str, ids))}: the notebook sees only {len(entries)} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={shown})"
            )
    return ",".join(_map(ids, entries))


def _map(ids: list[int], entries: list[str] | None) -> list[str]:
    return [entries[i] if entries is not None else str(i) for i in ids]


def label_for(visible: str | None, gpu_count: int | None) -> str:
    """"CPU", "GPU:0" or "GPU:0,1" as the child will number them (it renumbers from 0)."""
    if visible is not None:
        n = len(_entries(visible))
    elif gpu_count is not None:
        n = gpu_count
    else:
        return "default devices"
    if n == 0:
        return "CPU"
    return "GPU:" + ",".join(str(i) for i in range(n))


def memory_warning(kernel_tf: KernelTF | None, environ: dict[str, str], visible: str | None) -> str | None:
    """A warning when the kernel's TensorFlow already holds GPU memory the server would need."""
    if visible == "" or kernel_tf is None or not kernel_tf.initialized or not kernel_tf.visible:
        return None
    if environ.get(GROWTH_VAR, "").lower() == "true":
        return None
    if kernel_tf.growth and all(kernel_tf.growth):
        return None
    return (
        "The notebook's TensorFlow already holds its GPU memory (memory growth is off), so the "
        "model server may run out of GPU memory. Either restart the kernel and call "
        "tf.config.experimental.set_memory_growth(gpu, True) for each GPU before TensorFlow "
        "first uses it (or set TF_FORCE_GPU_ALLOW_GROWTH=true before the kernel starts), or "
        "start the server on the CPU with --gpu none."
    )


def kernel_tf_state() -> KernelTF | None:
    """Inspect the kernel's TensorFlow if (and only if) it is already imported."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    try:
        physical = tf.config.list_physical_devices("GPU")
        visible_devices = tf.config.get_visible_devices("GPU")
        names = [d.name for d in physical]
        visible = tuple(names.index(d.name) for d in visible_devices if d.name in names)
        growth = tuple(bool(tf.config.experimental.get_memory_growth(d)) for d in visible_devices)
        from tensorflow.python.eager import context  # private, but reading it starts nothing

        initialized = getattr(context.context(), "_context_handle", None) is not None
    except Exception:  # an old or broken TF: no information rather than a failed start
        return None
    return KernelTF(len(physical), visible, initialized, growth)


def _system_gpu_count() -> int | None:
    """NVIDIA GPUs the driver lists (Linux), without CUDA or TensorFlow; None if unknown."""
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        return sum(1 for _ in driver.iterdir())
    if sys.platform.startswith("linux"):
        return 0
    return None


def plan(gpu: str | int | None = "auto", environ: dict[str, str] | None = None) -> GpuPlan:
    """The child's GPU environment for ``--gpu`` as the kernel sees its devices now."""
    environ = dict(os.environ if environ is None else environ)
    request = parse_request(gpu)
    system_gpus = _system_gpu_count()
    hidden = environ.get(VISIBLE_VAR, None) in ("", "-1")
    # on a machine without GPUs TF has nothing to say, and asking it can log CUDA errors
    kernel_tf = None if system_gpus == 0 or hidden else kernel_tf_state()
    visible = derive_visible_devices(request, environ.get(VISIBLE_VAR), kernel_tf)
    result = GpuPlan()
    if visible is not None:
        result.env[VISIBLE_VAR] = visible
    if visible != "" and GROWTH_VAR not in environ:
        result.env[GROWTH_VAR] = "true"
    gpu_count = kernel_tf.physical if kernel_tf is not None else system_gpus
    result.label = label_for(visible, gpu_count)
    warning = memory_warning(kernel_tf, environ, visible)
    if warning:
        result.warnings.append(warning)
    return result
