"""Exports next to a running server (issue 16): overwriting a served version warns, and scratch
folders left by killed exports are cleaned up by later ones. Exports that run out of disk
space or quota (issue 21) say so in plain words and leave nothing behind."""

from __future__ import annotations

import errno
import os
import re
import shutil
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


# ---- a full disk or quota (issue 21)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 300 KiB tmpfs: a real device that fills up (needs root; skipped where refused)."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here to make a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a small tmpfs was refused: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def assert_said_in_plain_words_first(message: str, base, quota: bool = False) -> None:
    plain = f"cannot write the model to {base}: no space left on the device"
    assert message.startswith(plain), message
    assert re.search(r", \d+(\.\d)? (bytes|KiB|MiB|GiB) free there\. Free some space", message)
    assert ("(the disk quota is used up)" in message) == quota, message
    assert message.index(plain) < message.index("TensorFlow could not write the model")


def test_a_full_disk_says_so_first_and_leaves_nothing(tiny_models, tiny_disk):
    import keras

    from tfserve_magic.export import ExportError, export_model

    keras.utils.set_random_seed(3)
    big = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256), keras.layers.Dense(10)])
    big(np.zeros((1, 784), "float32"))  # about 800 KiB of weights for a 300 KiB disk
    base = tiny_disk / "digits"
    used = shutil.disk_usage(tiny_disk).used
    with pytest.raises(ExportError) as caught:
        export_model(big, base)
    message = str(caught.value)
    assert_said_in_plain_words_first(message, base)
    assert "No space left on device" in message  # TensorFlow's own text follows
    assert sorted(p.name for p in base.iterdir()) == []  # no version, no .tmp-export-*
    assert shutil.disk_usage(tiny_disk).used <= used  # the partial files are gone too
    # the freed space is usable: a model that fits is exported as version 1
    assert export_model(tiny_models[0], base).version == 1


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_running_out_of_space_while_writing_leaves_nothing(tiny_models, tmp_path, monkeypatch,
                                                           code):
    import tfserve_magic.export as export_package
    from tfserve_magic.export import ExportError, export_model

    if not hasattr(errno, code):
        pytest.skip(f"errno.{code} does not exist on this system")
    number = getattr(errno, code)
    real_write = export_package.write_savedmodel

    def write_then_fill_up(obj, endpoints, path):
        real_write(obj, endpoints, path)  # half a model on disk, then the device is full
        raise OSError(number, os.strerror(number), str(path / "variables"))

    monkeypatch.setattr(export_package, "write_savedmodel", write_then_fill_up)
    base = tmp_path / "tiny"
    with pytest.raises(ExportError) as caught:
        export_model(tiny_models[0], base)
    assert_said_in_plain_words_first(str(caught.value), base, quota=code == "EDQUOT")
    assert sorted(p.name for p in base.iterdir()) == []
