"""Exports next to a running server (issue 16): overwriting a served version warns, and scratch
folders left by killed exports are cleaned up by later ones."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_models():
    import keras

    def build(seed):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model(np.zeros((1, 3), "float32"))
        return model

    return build(1), build(2)


def test_overwriting_a_served_version_warns_with_the_fix(tiny_models, tmp_path):
    from tfserve_magic import manager
    from tfserve_magic.export import ServedVersionWarning, export_model

    first, second = tiny_models
    base = tmp_path / "tiny"
    export_model(first, base)
    handle = manager.start("tiny_served", base, port=0, timeout=120)
    try:
        with pytest.warns(ServedVersionWarning, match="--restart") as caught:
            result = export_model(second, base, version=1, overwrite=True)
        assert "tiny_served" in str(caught[0].message)
        assert result.warnings and "new version" in result.warnings[0]
        assert "Warning:" in repr(result)
        # The warning says what happens: the server keeps answering with the old model.
        x = np.ones((1, 3), "float32")
        served = handle.client.predict(x)
        assert np.allclose(served, first(x).numpy(), atol=1e-5)
        # A new version, or a version nobody serves, exports without the warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error", ServedVersionWarning)
            assert export_model(second, base).version == 2
            assert not export_model(second, tmp_path / "other").warnings
    finally:
        manager.stop("tiny_served")


def test_later_exports_remove_scratch_folders_of_killed_exports(tiny_models, tmp_path):
    from tfserve_magic.export import export_model

    base = tmp_path / "tiny"
    export_model(tiny_models[0], base)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    stale = [base / f".tmp-export-{dead_pid}-deadbeef", base / f".replaced-{dead_pid}-1-deadbeef"]
    for folder in stale:
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"half-written")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        busy = base / f".tmp-export-{sleeper.pid}-cafef00d"  # an export still running
        busy.mkdir()
        result = export_model(tiny_models[1], base)
        assert result.version == 2
        assert not any(folder.exists() for folder in stale)
        assert busy.exists()
    finally:
        sleeper.kill()
        sleeper.wait(10)
