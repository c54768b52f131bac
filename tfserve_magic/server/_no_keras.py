"""Keep Keras out of the server process.

``import tensorflow`` eagerly imports Keras (about 1 s and ~100 MB) only to register optimizers
for Keras' own SavedModel revival, which ``tf.saved_model.load`` never needs. The finder below
lets TensorFlow *locate* the keras package (it reads its folder to build ``tf.keras``'s lazy
path) but refuses to *execute* it, so TensorFlow's ``try: import keras.src.optimizers`` falls
through. Install it before the first TensorFlow import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_BLOCKED = ("keras", "tf_keras")


class _RefusingLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError(f"{module.__name__} is not imported by the tfserve_magic model server")


class _KerasBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in _BLOCKED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            spec.loader = _RefusingLoader()
        return spec


def install() -> None:
    """Block Keras imports in this process (idempotent; a no-op if Keras is already imported)."""
    if any(name in sys.modules for name in _BLOCKED):
        return
    if not any(isinstance(f, _KerasBlocker) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasBlocker())
