"""Keep TensorFlow's C++ start-up lines out of a notebook's outputs.

Importing TensorFlow writes to the process's stderr from C++ (absl's "All log messages before
absl::InitializeLog() ...", the CUDA probe's "Could not find cuda drivers", oneDNN notes), and
``TF_CPP_MIN_LOG_LEVEL`` does not silence all of them. A Jupyter kernel forwards its stderr to
the notebook, where they show as red boxes although nothing is wrong. ``quiet_tensorflow()``
sets the log level before TensorFlow is imported, then imports it with file descriptor 2 sent to
a log file, so the lines are kept (for when something *is* wrong) but not shown.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOG_NAME = "tensorflow-startup.log"


def _log_path() -> Path:
    """Beside the servers' logs, in the manager's per-user folder (no TensorFlow import)."""
    from tfserve_magic.manager import state_dir

    return state_dir() / LOG_NAME


def quiet_tensorflow(level: int = 3) -> Path | None:
    """Import TensorFlow with its C++ start-up lines written to a log file; return its path.

    Call it first in a notebook (before ``import tensorflow`` or ``import keras``).
    ``level`` becomes ``TF_CPP_MIN_LOG_LEVEL`` unless that is already set (3: errors too).
    Returns None when TensorFlow was already imported (too late to quiet it).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(int(level)))
    if "tensorflow" in sys.modules:
        return None
    path = _log_path()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            try:
                import tensorflow as tf

                # the first device query loads the CUDA/XLA plugins, which log too
                tf.config.list_physical_devices()
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    return path
