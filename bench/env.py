"""Where the repository is and the environment a child process that loads TensorFlow gets.

Its own module so that the harness's modules (peers, peer_envs, model, ...) import it one way.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tf_env() -> dict:
    """This process's environment for a TensorFlow child: quiet logs, CPU only unless the
    caller set devices, and the repository first on PYTHONPATH."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env
