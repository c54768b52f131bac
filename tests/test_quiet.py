"""quiet_tensorflow(): TensorFlow's C++ start-up lines go to a log file, not to stderr (which a
Jupyter kernel forwards to the notebook as red boxes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
import tfserve_magic as tfm
path = tfm.quiet_tensorflow()
import keras, tensorflow as tf
keras.Sequential([keras.layers.Dense(2)])(tf.zeros((1, 3)))
print(path)
print(tfm.quiet_tensorflow())  # already imported: too late, says so with None
sys.stderr.write("python stderr still works\\n")
"""


def _run(tmp_path, script, **env):
    environment = {**os.environ, "TFSERVE_MAGIC_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    environment.update(env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_tensorflow_start_up_lines_go_to_the_log_file(tmp_path):
    done = _run(tmp_path, SCRIPT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    log = Path(lines[0])
    assert log.parent == tmp_path and log.name == "tensorflow-startup.log"
    assert lines[1] == "None"
    assert done.stderr == "python stderr still works\n"  # nothing from TensorFlow
    # what TensorFlow would have printed (here: absl's and the CUDA probe's lines) is kept
    loud = _run(tmp_path, "import tensorflow as tf; tf.config.list_physical_devices()")
    if loud.stderr.strip():
        assert loud.stderr.strip().splitlines()[0] in log.read_text()
