"""Datasets for demos and tests: those of TensorFlow's first tutorials, with offline fallbacks.

Each loader returns a small typed result with ``x_train``, ``y_train``, ``x_test``,
``y_test`` and ``source`` (``is_fallback`` says whether the offline stand-in was used):

- ``load_mnist()``: MNIST images, float32 [N, 28, 28, 1] in 0..1 (offline: scikit-learn's
  bundled 8x8 digits scaled to 28x28).
- ``load_imdb()``: movie reviews as raw strings with 0/1 sentiment (offline: reviews generated
  from word lists).
- ``load_auto_mpg()``: a regression, float32 features [N, 9] and the MPG target (offline: a
  synthetic table with the same columns).
- ``load_titanic()``: named mixed columns (numbers and words) and 0/1 ``survived`` (offline: a
  synthetic table with the same columns).

The tutorials' data is used when Keras has it cached or its host is reachable; otherwise, and
always with ``TFSERVE_MAGIC_OFFLINE=1``, the fallback, which is said once. Named columns are
dicts of numpy arrays (strings as object arrays): what Keras' ``fit`` takes, and what
``pandas.DataFrame(x)`` turns into the tutorials' frames where pandas is installed.
"""

from tfserve_magic.datasets._source import OFFLINE_ENV, Dataset
from tfserve_magic.datasets.imdb import TextData, load_imdb
from tfserve_magic.datasets.mnist import FALLBACK_SOURCE, MNIST_SOURCE, MnistData, load_mnist
from tfserve_magic.datasets.tables import RegressionData, TableData, load_auto_mpg, load_titanic

__all__ = [
    "FALLBACK_SOURCE",
    "MNIST_SOURCE",
    "OFFLINE_ENV",
    "Dataset",
    "MnistData",
    "RegressionData",
    "TableData",
    "TextData",
    "load_auto_mpg",
    "load_imdb",
    "load_mnist",
    "load_titanic",
]
