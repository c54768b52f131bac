"""The benchmark's model and request bodies, trained and written once under ``build/bench/``.

Two versions of the classic MNIST MLP (Flatten, Dense 128 relu, Dense 10 softmax): ``A`` is
what every peer serves; ``B`` (A trained one more epoch) is what the hot-swap timing rolls in,
so a response tells which version answered. The bodies are what the classic TF Serving
clients send: ``json.dumps({"signature_name": ..., "instances": x.tolist()})`` of [N,28,28,1].
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.env import REPO, tf_env

BODY_SIZES = (1, 100)
MODEL_NAME = "MLP"


@dataclass
class BenchAssets:
    """Paths of the cached models and bodies, plus the outputs every response must match."""

    root: Path
    base_path: Path  # base path holding version 1 of model A (what every peer serves)
    versions: dict  # "A"/"B" -> SavedModel folder (a version folder, copied for hot swap)
    bodies: dict  # number of images -> body file
    expected: dict  # (model "A"/"B", number of images) -> float32 [N,10] predictions
    data_source: str

    def body_bytes(self, n_images: int) -> bytes:
        return self.bodies[n_images].read_bytes()


def _build_mlp():
    import keras

    return keras.Sequential(
        [
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def _export(model, sample: np.ndarray, folder: Path) -> None:
    """Write ``model`` as a SavedModel version folder with a free batch dimension."""
    from tfserve_magic import export_model

    staging = folder.parent / f"{folder.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    export_model(model, staging, version=1, sample=sample[:2])
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging / "1", folder)
    shutil.rmtree(staging, ignore_errors=True)


def _predict_saved(folder: Path, x: np.ndarray) -> np.ndarray:
    """Outputs of the exported signature itself: the reference every peer's answers must match."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(folder)).signatures["serving_default"]
    (input_name,) = fn.structured_input_signature[1].keys()
    (output,) = fn(**{input_name: tf.constant(x)}).values()
    return output.numpy().astype(np.float32)


def prepare(root: Path, log=print) -> BenchAssets:
    """Train/export/write whatever is missing under ``root`` and return the paths."""
    root = Path(root)
    models = root / "models"
    versions = {"A": models / "A", "B": models / "B"}
    base_path = models / "serve" / MODEL_NAME
    bodies = {n: root / "bodies" / f"mnist_{n}.json" for n in BODY_SIZES}
    meta_file = root / "assets.json"
    ready = meta_file.exists() and all((v / "saved_model.pb").exists() for v in versions.values())
    if not ready:
        _train_and_write(root, versions, bodies, meta_file, log)
    meta = json.loads(meta_file.read_text())
    if not (base_path / "1" / "saved_model.pb").exists():
        shutil.rmtree(base_path, ignore_errors=True)
        base_path.mkdir(parents=True)
        shutil.copytree(versions["A"], base_path / "1")
    expected = {}
    for tag in versions:
        for n in BODY_SIZES:
            expected[(tag, n)] = np.load(root / "expected" / f"{tag}_{n}.npy")
    return BenchAssets(root, base_path, versions, bodies, expected, meta["data_source"])


def _train_and_write(root: Path, versions: dict, bodies: dict, meta_file: Path, log) -> None:
    import keras

    from tfserve_magic.datasets import load_mnist

    log("Training the benchmark MLP (once; cached under build/bench/) ...")
    data = load_mnist()
    keras.utils.set_random_seed(0)
    model = _build_mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=50, verbose=0)
    _export(model, data.x_test, versions["A"])
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=50, verbose=0)
    _export(model, data.x_test, versions["B"])

    largest = max(BODY_SIZES)
    images = np.asarray(data.x_test[:largest], dtype=np.float32)
    (root / "bodies").mkdir(parents=True, exist_ok=True)
    (root / "expected").mkdir(parents=True, exist_ok=True)
    for n in BODY_SIZES:
        payload = {"signature_name": "serving_default", "instances": images[:n].tolist()}
        bodies[n].write_text(json.dumps(payload))
        for tag, folder in versions.items():
            np.save(root / "expected" / f"{tag}_{n}.npy", _predict_saved(folder, images[:n]))
    gap = np.abs(np.load(root / "expected" / "A_1.npy") - np.load(root / "expected" / "B_1.npy"))
    if gap.max() < 1e-3:
        raise RuntimeError("versions A and B answer alike; the hot-swap timing needs them apart")
    meta_file.write_text(json.dumps({"data_source": data.source}))


def prepare_assets(build_dir: Path, log=print) -> BenchAssets:
    """Train/export in a child process so the harness itself never loads TensorFlow."""
    subprocess.run(
        [sys.executable, "-c", f"import bench.model as m; m.prepare({str(build_dir)!r})"],
        cwd=REPO, env=tf_env(), check=True,
    )
    return prepare(build_dir, log=log)
