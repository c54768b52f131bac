"""MNIST for demos and tests, prepared the way the classic TF Serving tutorials prepare it.

``load_mnist()`` uses Keras' MNIST (downloaded once, then cached by Keras) when it is cached or
the network is reachable. Otherwise, and always when ``TFSERVE_MAGIC_OFFLINE=1``, it falls back
to scikit-learn's bundled 8x8 handwritten digits, scaled up to MNIST's 28x28 layout (a 20x20
digit centred in a 28x28 frame), says so once, and reports the source in ``.source``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tfserve_magic.datasets import _source
from tfserve_magic.datasets._source import Dataset

MNIST_SOURCE = "mnist"
FALLBACK_SOURCE = "sklearn-digits (offline fallback)"
_MNIST_HOST = ("storage.googleapis.com", 443)  # where keras.datasets.mnist downloads from
_DIGIT_SIZE = 20  # MNIST digits fill a 20x20 box centred in the 28x28 image
_IMAGE_SIZE = 28
_FALLBACK_TEST_FRACTION = 1 / 6  # MNIST's 60k/10k split
_SPLIT_SEED = 0


@dataclass(frozen=True, repr=False)
class MnistData(Dataset):
    """Images float32 [N, 28, 28, 1] in 0..1 and int64 labels, plus where they came from."""


def load_mnist(n_train: int | None = None, n_test: int | None = None) -> MnistData:
    """MNIST (or the offline fallback), optionally only the first ``n_train``/``n_test`` rows."""
    return _source.load("MNIST", n_train, n_test, online=_keras_mnist, fallback=_digits_fallback,
                        cached_files=("mnist.npz",), host=_MNIST_HOST,
                        instead="scikit-learn's bundled digits scaled to 28x28")


@functools.lru_cache(maxsize=1)
def _keras_mnist() -> MnistData | None:
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception:  # download failed half-way, proxy, corrupt cache: use the fallback
        return None
    return MnistData(
        _prepare(x_train, 255.0), y_train.astype(np.int64),
        _prepare(x_test, 255.0), y_test.astype(np.int64),
        MNIST_SOURCE,
    )


def _prepare(images: np.ndarray, scale: float) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,28,28,1] in 0..1, as the tutorials do."""
    return (images.astype(np.float32) / scale)[..., None]


@functools.lru_cache(maxsize=1)
def _digits_fallback() -> MnistData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise RuntimeError(
            "MNIST is not reachable (offline) and the fallback needs scikit-learn: "
            "pip install scikit-learn"
        ) from None
    digits = load_digits()
    images = _to_mnist_frame(digits.images.astype(np.float32) / 16.0)
    labels = digits.target.astype(np.int64)
    order = np.random.RandomState(_SPLIT_SEED).permutation(len(images))
    n_test = int(round(len(images) * _FALLBACK_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return MnistData(images[train], labels[train], images[test], labels[test], FALLBACK_SOURCE)


def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] bilinear interpolation weights (pixel centres aligned, edges clamped)."""
    centres = (np.arange(dst) + 0.5) * src / dst - 0.5
    centres = np.clip(centres, 0, src - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, src - 1)
    frac = centres - low
    weights = np.zeros((dst, src), dtype=np.float32)
    weights[np.arange(dst), low] += 1 - frac
    weights[np.arange(dst), high] += frac
    return weights


def _to_mnist_frame(images: np.ndarray) -> np.ndarray:
    """[N, 8, 8] in 0..1 -> [N, 28, 28, 1]: upscaled to 20x20 and centred, like MNIST."""
    n, height, width = images.shape
    rows = _resize_matrix(height, _DIGIT_SIZE)
    cols = _resize_matrix(width, _DIGIT_SIZE)
    scaled = np.einsum("ij,njk,lk->nil", rows, images, cols)
    frame = np.zeros((n, _IMAGE_SIZE, _IMAGE_SIZE), dtype=np.float32)
    offset = (_IMAGE_SIZE - _DIGIT_SIZE) // 2
    frame[:, offset : offset + _DIGIT_SIZE, offset : offset + _DIGIT_SIZE] = scaled
    return np.clip(frame, 0.0, 1.0)[..., None]
