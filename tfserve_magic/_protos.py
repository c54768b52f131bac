"""TF Serving's generated protobuf and gRPC modules, importable without importing TensorFlow.

``tensorflow_serving.apis.*_pb2`` import ``tensorflow.core.framework.*_pb2``, and importing any
``tensorflow.*`` module first runs ``tensorflow/__init__.py``: the whole of TensorFlow (seconds
and hundreds of MB) just to build a request. The ``tensorflow/core/...`` packages themselves are
empty, so when TensorFlow is not imported yet we import the generated modules under a
placeholder ``tensorflow`` package (same folder, nothing executed) and remove the placeholder
at once. The generated modules stay in ``sys.modules`` under their real names, so a later
``import tensorflow`` reuses them (same classes, same descriptor pool) and works normally.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

_lock = threading.Lock()
_cache: dict[str, types.ModuleType] = {}


def load(name: str) -> types.ModuleType:
    """``load("tensorflow_serving.apis.predict_pb2")``: the module, without importing TF."""
    module = _cache.get(name)
    if module is not None:
        return module
    with _lock:
        if "tensorflow" in sys.modules:  # TF (or our placeholder) already there: plain import
            module = importlib.import_module(name)
        else:
            spec = importlib.util.find_spec("tensorflow")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(
                    "The gRPC client needs the tensorflow-serving-api package (and the "
                    "tensorflow package it depends on, which is not imported)"
                )
            placeholder = types.ModuleType("tensorflow")
            placeholder.__path__ = list(spec.submodule_search_locations)
            sys.modules["tensorflow"] = placeholder
            try:
                module = importlib.import_module(name)
            finally:
                if sys.modules.get("tensorflow") is placeholder:
                    del sys.modules["tensorflow"]
        _cache[name] = module
        return module


def apis(name: str) -> types.ModuleType:
    """``apis("predict_pb2")`` -> ``tensorflow_serving.apis.predict_pb2``."""
    return load(f"tensorflow_serving.apis.{name}")
