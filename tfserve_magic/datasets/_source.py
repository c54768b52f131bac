"""What every demo dataset shares: its typed result, and the online-or-fallback decision.

A loader uses the tutorial's own data when Keras has it cached or its host answers a quick
TCP connect; otherwise, and always when ``TFSERVE_MAGIC_OFFLINE=1``, it uses its documented
offline fallback, says so once, and reports where the data came from in ``.source``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

OFFLINE_ENV = "TFSERVE_MAGIC_OFFLINE"
FALLBACK_SUFFIX = "(offline fallback)"
_NETWORK_TIMEOUT_S = 1.5

_announced: set[str] = set()


@dataclass(frozen=True)
class Dataset:
    """Train and test inputs with their labels, plus where they came from.

    Inputs are numpy arrays, or (named inputs) a dict column name -> 1-D numpy array, which is
    what Keras' ``fit`` takes for a model with one ``keras.Input`` per column and what
    ``pandas.DataFrame(x)`` turns into the tutorials' frame.
    """

    x_train: object
    y_train: np.ndarray
    x_test: object
    y_test: np.ndarray
    source: str

    @property
    def is_fallback(self) -> bool:
        return self.source.endswith(FALLBACK_SUFFIX)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self.source!r}, "
            f"x_train={describe(self.x_train)}, x_test={describe(self.x_test)})"
        )


def describe(x) -> str:
    """``(N, 28, 28, 1)`` for an array, ``N rows x [age, sex, ...]`` for named columns."""
    if isinstance(x, dict):
        rows = len(next(iter(x.values()))) if x else 0
        return f"{rows} rows x [{', '.join(x)}]"
    return str(np.shape(x))


def check_sizes(n_train, n_test) -> None:
    for n, what in ((n_train, "n_train"), (n_test, "n_test")):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{what} must be a positive integer or None, got {n!r}")


def head(x, n: int | None):
    """The first ``n`` rows of an array or of every column of a dict (all when None)."""
    if isinstance(x, dict):
        return {name: column[:n] for name, column in x.items()}
    return x[:n]


def first_rows(data: Dataset, n_train: int | None, n_test: int | None):
    """The same dataset with only the first ``n_train``/``n_test`` rows of each split."""
    return replace(
        data,
        x_train=head(data.x_train, n_train), y_train=data.y_train[:n_train],
        x_test=head(data.x_test, n_test), y_test=data.y_test[:n_test],
    )


def offline_forced() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def keras_cached(*names: str) -> bool:
    """Whether Keras' download cache (``$KERAS_HOME/datasets``) holds all these files."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    return all((cache / name).is_file() for name in names)


def network_reachable(host: tuple[str, int] = ("storage.googleapis.com", 443)) -> bool:
    """A quick TCP connect to the download host, so an offline machine does not hang."""
    try:
        with socket.create_connection(host, timeout=_NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def try_online(cached_files: tuple[str, ...], host: tuple[str, int]) -> bool:
    """Whether to try the tutorial's data: not forced offline, and cached or reachable."""
    if offline_forced():
        return False
    return keras_cached(*cached_files) or network_reachable(host)


def load(what: str, n_train, n_test, *, online, fallback, cached_files: tuple[str, ...],
         host: tuple[str, int], instead: str):
    """The loaders' common path: ``online()`` (None when it fails) where the tutorial's data can
    be had, else ``fallback()`` (said once, as ``instead``); then the first rows asked for."""
    check_sizes(n_train, n_test)
    data = online() if try_online(cached_files, host) else None
    if data is None:
        data = fallback()
        announce_fallback(what, instead, data.source)
    return first_rows(data, n_train, n_test)


def announce_fallback(what: str, instead: str, source: str) -> None:
    """Say once per dataset and process that the offline fallback is used, and which."""
    if what in _announced:
        return
    _announced.add(what)
    print(
        f"tfserve_magic.datasets: {what} is not reachable here, using {instead} instead "
        f"(source: {source!r})."
    )


def strings(values) -> np.ndarray:
    """A 1-D object array of Python strings: what Keras' ``fit`` and pandas take for text
    (numpy's fixed-width ``<U`` strings are refused by Keras 3's data adapters)."""
    texts = [str(v) for v in values]
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out
