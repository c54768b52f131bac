"""load_mnist: the offline fallback (what CI uses) and the Keras MNIST path, without network."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from tfserve_magic import datasets


@pytest.fixture
def fresh_datasets(monkeypatch):
    """load_mnist with its one-time notice and its caches reset, and no network reachable."""
    monkeypatch.setattr(datasets, "_fallback_announced", False)
    datasets._keras_mnist.cache_clear()

    def no_network(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")
    monkeypatch.delenv(datasets.OFFLINE_ENV, raising=False)
    yield datasets
    datasets._keras_mnist.cache_clear()


def test_fallback_is_mnist_shaped(mnist):
    assert mnist.source == "sklearn-digits (offline fallback)"
    assert mnist.is_fallback
    for x, y in ((mnist.x_train, mnist.y_train), (mnist.x_test, mnist.y_test)):
        assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1)
        assert y.dtype == np.int64 and len(y) == len(x)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))
    assert len(mnist.x_train) + len(mnist.x_test) == 1797
    assert len(mnist.x_test) == 300
    # MNIST layout: a 4-pixel empty border around a 20x20 digit that has real ink in it
    border = np.concatenate(
        [mnist.x_train[:, :4].ravel(), mnist.x_train[:, -4:].ravel(),
         mnist.x_train[:, :, :4].ravel(), mnist.x_train[:, :, -4:].ravel()]
    )
    assert border.max() == 0.0
    assert mnist.x_train[:, 4:24, 4:24].mean(axis=(1, 2, 3)).min() > 0.05


def test_fallback_images_are_the_sklearn_digits_scaled_up():
    from sklearn.datasets import load_digits

    digits = load_digits()
    upscaled = datasets._to_mnist_frame(digits.images[:5] / 16.0)
    # shrinking the 20x20 digit back to 8x8 by block averaging stays close to the original
    digit = upscaled[:, 4:24, 4:24, 0]
    rows = datasets._resize_matrix(20, 8)
    back = np.einsum("ij,njk,lk->nil", rows, digit, rows)
    assert np.abs(back - digits.images[:5] / 16.0).mean() < 0.1


def test_offline_env_forces_the_fallback_without_touching_the_network(fresh_datasets, monkeypatch,
                                                                        capsys):
    def must_not_connect(*args, **kwargs):
        raise AssertionError("load_mnist tried the network although offline was forced")

    monkeypatch.setattr(socket, "create_connection", must_not_connect)
    monkeypatch.setenv(datasets.OFFLINE_ENV, "1")
    data = fresh_datasets.load_mnist(n_train=100, n_test=20)
    assert data.source == datasets.FALLBACK_SOURCE
    assert data.x_train.shape == (100, 28, 28, 1) and data.y_test.shape == (20,)
    again = fresh_datasets.load_mnist(n_train=100, n_test=20)
    np.testing.assert_array_equal(again.x_train, data.x_train)  # deterministic split
    np.testing.assert_array_equal(again.y_test, data.y_test)
    notice = capsys.readouterr().out
    assert notice.count("offline fallback") == 1  # said once, not on every call


def test_unreachable_network_falls_back(fresh_datasets):
    assert not fresh_datasets._network_reachable()
    assert fresh_datasets.load_mnist(n_test=5).source == datasets.FALLBACK_SOURCE


def test_keras_mnist_is_used_when_cached(fresh_datasets, monkeypatch, tmp_path):
    keras = pytest.importorskip("keras")
    cache = tmp_path / "datasets"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"")  # the cached file Keras would read
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    rng = np.random.RandomState(0)
    train = (rng.randint(0, 256, (6, 28, 28)).astype(np.uint8), rng.randint(0, 10, 6).astype(np.uint8))
    test = (np.full((2, 28, 28), 255, np.uint8), np.array([3, 4], np.uint8))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (train, test))
    data = fresh_datasets.load_mnist()
    assert data.source == "mnist" and not data.is_fallback
    assert data.x_train.dtype == np.float32 and data.x_train.shape == (6, 28, 28, 1)
    np.testing.assert_allclose(data.x_train[..., 0], train[0] / 255.0, atol=1e-7)
    assert data.x_test.max() == 1.0 and data.y_test.dtype == np.int64
    assert data.y_test.tolist() == [3, 4]


def test_failed_keras_download_falls_back(fresh_datasets, monkeypatch):
    keras = pytest.importorskip("keras")
    monkeypatch.setattr(datasets, "_network_reachable", lambda: True)

    def broken_download():
        raise OSError("connection reset (test)")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", broken_download)
    assert fresh_datasets.load_mnist(n_train=3).source == datasets.FALLBACK_SOURCE


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match="positive integer"):
        datasets.load_mnist(n_train=bad)
