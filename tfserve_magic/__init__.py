"""tfserve_magic: export, serve and check TensorFlow models from a notebook.

Importing this package is cheap: TensorFlow, requests and ipywidgets are imported only when
the attribute that needs them is first used, so ``%load_ext tfserve_magic`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (resolved lazily by __getattr__)
_LAZY = {
    "export_model": "tfserve_magic.export",
    "ExportResult": "tfserve_magic.export",
    "ExportError": "tfserve_magic.export",
    "start": "tfserve_magic.manager",
    "stop": "tfserve_magic.manager",
    "servers": "tfserve_magic.manager",
    "status": "tfserve_magic.manager",
    "logs": "tfserve_magic.manager",
    "ServerHandle": "tfserve_magic.manager",
    "StartError": "tfserve_magic.manager",
    "Client": "tfserve_magic.client",
    "RestClient": "tfserve_magic.client",
    "GrpcClient": "tfserve_magic.client",
    "ServingError": "tfserve_magic.client",
    "Prediction": "tfserve_magic.client",
    "ModelMetadata": "tfserve_magic.client",
    "quiet_tensorflow": "tfserve_magic.quiet",
    "deploy": "tfserve_magic.deployment",
    "DeployError": "tfserve_magic.deployment",
    "write_warmup": "tfserve_magic.warmup",  # [issue 22 hook]
    "WarmupError": "tfserve_magic.warmup",  # [issue 22 hook]
}
_SUBMODULES = {"datasets", "widgets", "export", "manager", "client", "magics", "server", "deployment"}

__all__ = sorted(_LAZY) + ["load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"tfserve_magic.{name}")
    raise AttributeError(f"module 'tfserve_magic' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


def load_ipython_extension(ipython) -> None:
    """``%load_ext tfserve_magic``: register ``%tfserve`` and ``%%predict``."""
    from tfserve_magic.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext``/``%reload_ext`` support."""
    from tfserve_magic.magics import unload_ipython_extension as _unload

    _unload(ipython)
