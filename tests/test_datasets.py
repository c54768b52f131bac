"""The demo datasets: their offline fallbacks (what CI uses) and the online paths, without
network (Keras' loaders and downloads are replaced by stand-ins holding the real file formats)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from tfserve_magic import datasets
from tfserve_magic.datasets import _source, imdb, mnist, tables

ONLINE_CACHES = (mnist._keras_mnist, imdb._keras_imdb, tables._uci_auto_mpg, tables._tf_titanic)


def _clear_online_caches():
    for cached in ONLINE_CACHES:
        cached.cache_clear()


@pytest.fixture
def fresh_datasets(monkeypatch):
    """The loaders with their one-time notices and online caches reset, no network reachable."""
    monkeypatch.setattr(_source, "_announced", set())
    _clear_online_caches()

    def no_network(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")
    monkeypatch.delenv(datasets.OFFLINE_ENV, raising=False)
    yield datasets
    _clear_online_caches()


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
    upscaled = mnist._to_mnist_frame(digits.images[:5] / 16.0)
    # shrinking the 20x20 digit back to 8x8 by block averaging stays close to the original
    digit = upscaled[:, 4:24, 4:24, 0]
    rows = mnist._resize_matrix(20, 8)
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
    assert not _source.network_reachable()
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
    monkeypatch.setattr(_source, "network_reachable", lambda host: True)

    def broken_download():
        raise OSError("connection reset (test)")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", broken_download)
    assert fresh_datasets.load_mnist(n_train=3).source == datasets.FALLBACK_SOURCE


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match="positive integer"):
        datasets.load_mnist(n_train=bad)


# ------------------------------------------------------------------------ IMDB (text)
def _is_text_column(values) -> bool:
    return values.dtype == object and all(isinstance(v, str) for v in values)


def test_imdb_fallback_is_raw_text_with_balanced_labels(fresh_datasets):
    data = fresh_datasets.load_imdb()
    assert data.source == "generated reviews (offline fallback)" and data.is_fallback
    assert data.x_train.shape == (4000,) and data.x_test.shape == (1000,)
    assert _is_text_column(data.x_train) and _is_text_column(data.x_test)
    assert data.y_train.dtype == np.int64 and set(np.unique(data.y_train)) == {0, 1}
    everything = np.concatenate([data.y_train, data.y_test])
    assert everything.mean() == 0.5  # exactly half positive over both splits
    assert 0.45 < data.y_train.mean() < 0.55 and 0.45 < data.y_test.mean() < 0.55
    assert data.class_names == ("negative", "positive")
    lengths = [len(review.split()) for review in data.x_train]
    assert min(lengths) >= 8 and max(lengths) < 80
    assert len(set(data.x_train)) > 0.99 * len(data.x_train)  # not a handful of repeats


def test_imdb_fallback_is_learnable_but_not_decided_by_one_word(fresh_datasets):
    """A bag-of-words model learns the sentiment well, not perfectly (mixed reviews), and
    reviews of either label hold words of the other sentiment."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    data = fresh_datasets.load_imdb()
    words = CountVectorizer().fit(data.x_train)
    model = LogisticRegression(max_iter=1000).fit(words.transform(data.x_train), data.y_train)
    accuracy = model.score(words.transform(data.x_test), data.y_test)
    assert 0.9 < accuracy < 1.0

    def holds(review, vocabulary):
        return any(word.strip(".,") in vocabulary for word in review.lower().split())

    positives = data.x_train[data.y_train == 1]
    negatives = data.x_train[data.y_train == 0]
    assert np.mean([holds(r, imdb.NEGATIVE) for r in positives]) > 0.3
    assert np.mean([holds(r, imdb.POSITIVE) for r in negatives]) > 0.3


def test_imdb_fallback_is_deterministic_and_sliced(fresh_datasets):
    first = fresh_datasets.load_imdb(n_train=50, n_test=10)
    imdb._generated_reviews.cache_clear()
    again = fresh_datasets.load_imdb(n_train=50, n_test=10)
    assert first.x_train.shape == (50,) and first.y_test.shape == (10,)
    assert list(first.x_train) == list(again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)


def test_imdb_online_decodes_keras_word_ids(fresh_datasets, monkeypatch, tmp_path):
    keras = pytest.importorskip("keras")
    cache = tmp_path / "datasets"
    cache.mkdir()
    for name in ("imdb.npz", "imdb_word_index.json"):
        (cache / name).write_bytes(b"")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Keras' layout: 1 starts a review, 2 is out of vocabulary, word ids are index + 3
    train = ([[1, 4, 5, 6, 7], [1, 4, 2, 8]], np.array([1, 0]))
    test = ([[1, 7, 5]], np.array([1]))
    index = {"the": 1, "movie": 2, "was": 3, "great": 4, "dull": 5}
    monkeypatch.setattr(keras.datasets.imdb, "load_data", lambda: (train, test))
    monkeypatch.setattr(keras.datasets.imdb, "get_word_index", lambda: index)
    data = fresh_datasets.load_imdb()
    assert data.source == "imdb" and not data.is_fallback
    assert list(data.x_train) == ["the movie was great", "the dull"]
    assert list(data.x_test) == ["great movie"] and _is_text_column(data.x_train)
    assert data.y_train.dtype == np.int64 and data.y_train.tolist() == [1, 0]


# ------------------------------------------------------------------------ Auto MPG (regression)
def test_auto_mpg_fallback_has_the_tutorials_columns(fresh_datasets):
    data = fresh_datasets.load_auto_mpg()
    assert data.source == "synthetic auto-mpg (offline fallback)" and data.is_fallback
    assert data.x_train.shape == (314, 9) and data.x_test.shape == (78, 9)  # 392 rows, 80/20
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.float32
    assert data.feature_names == ("Cylinders", "Displacement", "Horsepower", "Weight",
                                  "Acceleration", "Model Year", "Europe", "Japan", "USA")
    assert data.target_name == "MPG"
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    np.testing.assert_array_equal(x[:, 6:].sum(axis=1), 1.0)  # one origin per car
    column = dict(zip(data.feature_names, x.T))
    assert set(np.unique(column["Cylinders"])) <= {3, 4, 5, 6, 8}
    assert 1600 <= column["Weight"].min() and column["Weight"].max() <= 5140
    assert set(np.unique(column["Model Year"])) == set(range(70, 83))
    assert 9 <= y.min() and y.max() <= 47 and 20 < y.mean() < 28
    assert np.corrcoef(column["Weight"], y)[0, 1] < -0.7  # heavier cars use more fuel


def test_auto_mpg_fallback_is_learnable_and_deterministic(fresh_datasets):
    from sklearn.linear_model import LinearRegression

    data = fresh_datasets.load_auto_mpg()
    fit = LinearRegression().fit(data.x_train, data.y_train)
    assert fit.score(data.x_test, data.y_test) > 0.7  # R² of a linear model
    tables._synthetic_auto_mpg.cache_clear()
    again = fresh_datasets.load_auto_mpg(n_train=10, n_test=5)
    np.testing.assert_array_equal(again.x_train, data.x_train[:10])
    np.testing.assert_array_equal(again.y_test, data.y_test[:5])


AUTO_MPG_LINES = """\
18.0   8   307.0      130.0      3504.      12.0   70  1\t"chevrolet chevelle malibu"
25.0   4   98.00      ?          2046.      19.0   71  1\t"ford pinto"
26.0   4   97.00      46.00      1835.      20.5   70  2\t"volkswagen 1131 deluxe sedan"
24.0   4   113.0      95.00      2372.      15.0   70  3\t"toyota corona mark ii"
15.0   8   350.0      165.0      3693.      11.5   70  1\t"buick skylark 320"
31.0   4   71.00      65.00      1773.      19.0   71  3\t"toyota corolla 1200"
"""


def test_auto_mpg_online_reads_the_uci_file(fresh_datasets, monkeypatch, tmp_path):
    keras = pytest.importorskip("keras")
    path = tmp_path / "auto-mpg.data"
    path.write_text(AUTO_MPG_LINES)
    monkeypatch.setattr(_source, "network_reachable", lambda host: True)
    monkeypatch.setattr(keras.utils, "get_file", lambda name, origin: str(path))
    data = fresh_datasets.load_auto_mpg()
    assert data.source == "uci auto-mpg" and not data.is_fallback
    assert len(data.x_train) + len(data.x_test) == 5  # the row with "?" is dropped
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    rows = {float(mpg): tuple(features) for mpg, features in zip(y, x)}
    assert sorted(rows) == [15.0, 18.0, 24.0, 26.0, 31.0]
    assert rows[26.0] == (4, 97, 46, 1835, 20.5, 70, 1, 0, 0)  # Europe
    assert rows[24.0][6:] == (0, 1, 0)  # Japan
    assert rows[18.0][6:] == (0, 0, 1)  # USA


# ------------------------------------------------------------------------ Titanic (tabular)
def test_titanic_fallback_has_the_tutorials_columns(fresh_datasets):
    data = fresh_datasets.load_titanic()
    assert data.source == "synthetic titanic (offline fallback)" and data.is_fallback
    assert list(data.x_train) == ["sex", "age", "n_siblings_spouses", "parch", "fare", "class",
                                  "deck", "embark_town", "alone"]
    assert list(data.x_test) == list(data.x_train)
    for x, y, n in ((data.x_train, data.y_train, 627), (data.x_test, data.y_test, 264)):
        assert all(len(column) == n for column in x.values()) and y.shape == (n,)
        assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
        for name in ("age", "n_siblings_spouses", "parch", "fare"):
            assert x[name].dtype == np.float32 and x[name].min() >= 0
        for name in ("sex", "class", "deck", "embark_town", "alone"):
            assert _is_text_column(x[name]), name
    x = {name: np.concatenate([data.x_train[name], data.x_test[name]]) for name in data.x_train}
    y = np.concatenate([data.y_train, data.y_test])
    assert set(x["sex"]) == {"male", "female"} and set(x["class"]) == {"First", "Second", "Third"}
    assert set(x["deck"]) <= {"unknown", "A", "B", "C", "D", "E", "F", "G"}
    alone = (x["n_siblings_spouses"] + x["parch"]) == 0
    np.testing.assert_array_equal(x["alone"] == "y", alone)
    assert 0.3 < y.mean() < 0.5  # about 38% survived the real ship
    women, men = y[x["sex"] == "female"].mean(), y[x["sex"] == "male"].mean()
    assert women - men > 0.3
    assert data.class_names == ("died", "survived") and data.target_name == "survived"


def test_titanic_fallback_is_learnable_and_deterministic(fresh_datasets):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    data = fresh_datasets.load_titanic()
    words = ["sex", "class", "deck", "embark_town", "alone"]
    numbers = ["age", "n_siblings_spouses", "parch", "fare"]
    encoder = OneHotEncoder(handle_unknown="ignore").fit(
        np.column_stack([data.x_train[w] for w in words]))

    def features(x):
        one_hot = encoder.transform(np.column_stack([x[w] for w in words])).toarray()
        return np.column_stack([one_hot] + [x[n] / 100 for n in numbers])

    model = LogisticRegression(max_iter=1000).fit(features(data.x_train), data.y_train)
    assert model.score(features(data.x_test), data.y_test) > 0.7
    tables._synthetic_titanic.cache_clear()
    again = fresh_datasets.load_titanic(n_train=20, n_test=7)
    assert list(again.x_train["sex"]) == list(data.x_train["sex"][:20])
    np.testing.assert_array_equal(again.x_test["fare"], data.x_test["fare"][:7])
    np.testing.assert_array_equal(again.y_test, data.y_test[:7])


TITANIC_CSV = """\
survived,sex,age,n_siblings_spouses,parch,fare,class,deck,embark_town,alone
0,male,22.0,1,0,7.25,Third,unknown,Southampton,n
1,female,38.0,1,0,71.2833,First,C,Cherbourg,n
1,female,26.0,0,0,7.925,Third,unknown,Southampton,y
"""


def test_titanic_online_reads_tensorflows_csv_files(fresh_datasets, monkeypatch, tmp_path):
    keras = pytest.importorskip("keras")
    monkeypatch.setattr(_source, "network_reachable", lambda host: True)
    files = {}
    for name, rows in (("titanic_train.csv", TITANIC_CSV),
                       ("titanic_eval.csv", TITANIC_CSV.splitlines()[0] + "\n"
                        + TITANIC_CSV.splitlines()[1] + "\n")):
        files[name] = tmp_path / name
        files[name].write_text(rows)
    asked = []

    def get_file(name, origin):
        asked.append(origin)
        return str(files[name])

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    data = fresh_datasets.load_titanic()
    assert data.source == "tf-datasets titanic" and not data.is_fallback
    assert asked == ["https://storage.googleapis.com/tf-datasets/titanic/train.csv",
                     "https://storage.googleapis.com/tf-datasets/titanic/eval.csv"]
    assert data.y_train.tolist() == [0, 1, 1] and data.y_test.tolist() == [0]
    assert list(data.x_train["sex"]) == ["male", "female", "female"]
    assert data.x_train["fare"].dtype == np.float32
    assert data.x_train["fare"][1] == np.float32(71.2833)
    assert list(data.x_train["class"]) == ["Third", "First", "Third"]
    assert list(data.x_test["alone"]) == ["n"] and _is_text_column(data.x_test["deck"])


# ------------------------------------------------------------------------ all loaders
LOADERS = ["load_imdb", "load_auto_mpg", "load_titanic"]


@pytest.mark.parametrize("loader", LOADERS)
def test_offline_env_forces_each_fallback_and_says_so_once(loader, fresh_datasets, monkeypatch,
                                                           capsys):
    def must_not_connect(*args, **kwargs):
        raise AssertionError(f"{loader} tried the network although offline was forced")

    monkeypatch.setattr(socket, "create_connection", must_not_connect)
    monkeypatch.setenv(datasets.OFFLINE_ENV, "1")
    load = getattr(fresh_datasets, loader)
    first, second = load(n_train=5, n_test=3), load(n_train=5, n_test=3)
    assert first.is_fallback and first.source.endswith("(offline fallback)")
    assert len(first.y_train) == 5 and len(second.y_test) == 3
    assert capsys.readouterr().out.count("offline fallback") == 1
    assert "(offline fallback)" in repr(first)


@pytest.mark.parametrize("loader", LOADERS)
def test_unreachable_network_gives_each_fallback(loader, fresh_datasets):
    assert getattr(fresh_datasets, loader)(n_test=2).is_fallback


@pytest.mark.parametrize("loader", ["load_auto_mpg", "load_titanic"])
def test_failed_table_download_falls_back(loader, fresh_datasets, monkeypatch):
    keras = pytest.importorskip("keras")
    monkeypatch.setattr(_source, "network_reachable", lambda host: True)

    def broken_download(name, origin):
        raise OSError(f"connection reset while fetching {origin} (test)")

    monkeypatch.setattr(keras.utils, "get_file", broken_download)
    assert getattr(fresh_datasets, loader)(n_train=3).is_fallback


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_sizes_are_rejected_by_every_loader(loader, bad):
    with pytest.raises(ValueError, match="positive integer"):
        getattr(datasets, loader)(n_test=bad)
