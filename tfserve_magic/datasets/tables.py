"""Tables for TensorFlow's regression (Auto MPG) and structured-data (Titanic) tutorials.

Online, the tutorials' own files are read (downloaded once, then cached by Keras):

- ``load_auto_mpg()``: the UCI Auto MPG file, rows with a missing horsepower dropped, ``Origin``
  one-hot encoded as ``Europe``/``Japan``/``USA`` (as the tutorial does with ``get_dummies``), a
  seeded 80/20 split; features float32 [N, 9] in ``feature_names`` order, target ``MPG``.
- ``load_titanic()``: TensorFlow's ``titanic/train.csv`` and ``eval.csv`` (627 and 264 rows);
  a dict of named columns (numbers as float32, words as strings) and the 0/1 ``survived``.

Offline (or with ``TFSERVE_MAGIC_OFFLINE=1``) each uses a synthetic table with the same columns,
sizes and value ranges, generated from a fixed seed (the same on every machine) and reported in
``.source`` as ``"synthetic ... (offline fallback)"``. They are not the real cars or passengers:
in the synthetic Auto MPG, MPG falls with weight (non-linearly) and horsepower and rises with the
model year, plus noise; in the synthetic Titanic, women, first class and children survive more
often, drawn from a logistic model (about 40% survive, as on the real ship).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass

import numpy as np

from tfserve_magic.datasets import _source
from tfserve_magic.datasets._source import Dataset

AUTO_MPG_SOURCE = "uci auto-mpg"
AUTO_MPG_FALLBACK_SOURCE = "synthetic auto-mpg (offline fallback)"
TITANIC_SOURCE = "tf-datasets titanic"
TITANIC_FALLBACK_SOURCE = "synthetic titanic (offline fallback)"

_AUTO_MPG_URL = "http://archive.ics.uci.edu/ml/machine-learning-databases/auto-mpg/auto-mpg.data"
_AUTO_MPG_HOST = ("archive.ics.uci.edu", 80)
_AUTO_MPG_FILE = "auto-mpg.data"
AUTO_MPG_FEATURES = (
    "Cylinders", "Displacement", "Horsepower", "Weight", "Acceleration", "Model Year",
    "Europe", "Japan", "USA",
)
_ORIGINS = {1: "USA", 2: "Europe", 3: "Japan"}

_TITANIC_URL = "https://storage.googleapis.com/tf-datasets/titanic/{split}.csv"
_TITANIC_HOST = ("storage.googleapis.com", 443)
_TITANIC_FILES = {"train": "titanic_train.csv", "eval": "titanic_eval.csv"}
TITANIC_NUMERIC = ("age", "n_siblings_spouses", "parch", "fare")
TITANIC_STRINGS = ("sex", "class", "deck", "embark_town", "alone")
TITANIC_COLUMNS = ("sex", "age", "n_siblings_spouses", "parch", "fare", "class", "deck",
                   "embark_town", "alone")  # the CSV's order, without the target

_TEST_FRACTION = 0.2
_SEED = 0


@dataclass(frozen=True, repr=False)
class RegressionData(Dataset):
    """Features float32 [N, F] (columns named by ``feature_names``) and a float32 target [N]."""

    feature_names: tuple = AUTO_MPG_FEATURES
    target_name: str = "MPG"


@dataclass(frozen=True, repr=False)
class TableData(Dataset):
    """Named columns (dict name -> 1-D array: float32 numbers, object strings) and int64 0/1
    labels."""

    target_name: str = "survived"
    class_names: tuple = ("died", "survived")


# ----------------------------------------------------------------------------- Auto MPG
def load_auto_mpg(n_train: int | None = None, n_test: int | None = None) -> RegressionData:
    """Auto MPG (or its synthetic offline stand-in), optionally only the first rows."""
    return _source.load("Auto MPG", n_train, n_test, online=_uci_auto_mpg,
                        fallback=_synthetic_auto_mpg, cached_files=(_AUTO_MPG_FILE,),
                        host=_AUTO_MPG_HOST,
                        instead="a synthetic table with its columns")


@functools.lru_cache(maxsize=1)
def _uci_auto_mpg() -> RegressionData | None:
    try:
        import keras

        path = keras.utils.get_file(_AUTO_MPG_FILE, _AUTO_MPG_URL)
        with open(path) as f:
            rows = [_auto_mpg_row(line) for line in f if line.strip()]
    except Exception:  # download failed half-way, proxy, corrupt cache: use the fallback
        return None
    table = np.array([row for row in rows if row is not None], dtype=np.float32)
    return _split_regression(table[:, 1:], table[:, 0], AUTO_MPG_SOURCE)


def _auto_mpg_row(line: str) -> list[float] | None:
    """``18.0 8 307.0 130.0 3504. 12.0 70 1\\t"car name"`` -> MPG, 6 numbers, one-hot origin;
    None when a value is missing (``?``), as the tutorial's ``dropna``."""
    values = line.split("\t", 1)[0].split()
    if len(values) != 8 or "?" in values:
        return None
    *numbers, origin = values
    place = _ORIGINS[int(float(origin))]
    return [float(v) for v in numbers] + [float(place == p) for p in ("Europe", "Japan", "USA")]


@functools.lru_cache(maxsize=1)
def _synthetic_auto_mpg(n: int = 392) -> RegressionData:
    rng = np.random.RandomState(_SEED)
    origin = rng.choice(["USA", "Europe", "Japan"], size=n, p=[0.625, 0.174, 0.201])
    cylinders = np.where(
        origin == "USA", rng.choice([4, 6, 8], size=n, p=[0.3, 0.35, 0.35]),
        rng.choice([4, 4, 4, 6], size=n),
    )
    displacement = np.clip(cylinders * rng.normal(38, 6, n), 68, 455)
    horsepower = np.clip(0.3 * displacement + 35 + rng.normal(0, 10, n), 46, 230)
    weight = np.clip(1400 + 7 * displacement + rng.normal(0, 200, n), 1600, 5140)
    acceleration = np.clip(20 - 0.035 * horsepower + rng.normal(0, 1.5, n), 8, 25)
    year = rng.randint(70, 83, n)
    mpg = (
        85 * np.exp(-0.00045 * weight) - 0.03 * (horsepower - 100) + 0.75 * (year - 76)
        + 1.0 * (origin == "Europe") + 1.2 * (origin == "Japan") + rng.normal(0, 2.5, n)
    )
    features = np.column_stack(
        [cylinders, displacement.round(), horsepower.round(), weight.round(),
         acceleration.round(1), year]
        + [(origin == place) for place in ("Europe", "Japan", "USA")]
    ).astype(np.float32)
    return _split_regression(features, np.clip(mpg, 9, 47).round(1), AUTO_MPG_FALLBACK_SOURCE)


def _split_regression(x: np.ndarray, y: np.ndarray, source: str) -> RegressionData:
    order = np.random.RandomState(_SEED).permutation(len(x))
    n_test = int(round(len(x) * _TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    y = np.asarray(y, np.float32)
    return RegressionData(x[train], y[train], x[test], y[test], source)


# ----------------------------------------------------------------------------- Titanic
def load_titanic(n_train: int | None = None, n_test: int | None = None) -> TableData:
    """Titanic passengers (or the synthetic offline stand-in), optionally only the first rows."""
    return _source.load("Titanic", n_train, n_test, online=_tf_titanic,
                        fallback=_synthetic_titanic, host=_TITANIC_HOST,
                        cached_files=tuple(_TITANIC_FILES.values()),
                        instead="a synthetic table with its columns")


@functools.lru_cache(maxsize=1)
def _tf_titanic() -> TableData | None:
    try:
        import keras

        splits = []
        for split, name in _TITANIC_FILES.items():
            path = keras.utils.get_file(name, _TITANIC_URL.format(split=split))
            with open(path, newline="") as f:
                splits.append(_titanic_columns(list(csv.DictReader(f))))
    except Exception:  # download failed half-way, proxy, corrupt cache: use the fallback
        return None
    (x_train, y_train), (x_test, y_test) = splits
    return TableData(x_train, y_train, x_test, y_test, TITANIC_SOURCE)


def _titanic_columns(rows: list[dict]) -> tuple[dict, np.ndarray]:
    x = {}
    for name in TITANIC_COLUMNS:
        values = [row[name] for row in rows]
        x[name] = (np.array(values, dtype=np.float32) if name in TITANIC_NUMERIC
                   else _source.strings(values))
    return x, np.array([int(row["survived"]) for row in rows], dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _synthetic_titanic(n_train: int = 627, n_test: int = 264) -> TableData:
    rng = np.random.RandomState(_SEED)
    n = n_train + n_test
    travel = rng.choice(["First", "Second", "Third"], size=n, p=[0.24, 0.21, 0.55])
    by_class = {"First": 0, "Second": 1, "Third": 2}
    level = np.array([by_class[c] for c in travel])
    female = rng.rand(n) < np.array([0.44, 0.41, 0.29])[level]
    age = np.clip(rng.normal(np.array([38, 30, 25])[level], 13), 1, 80).round()
    siblings = np.clip(rng.poisson(np.array([0.4, 0.4, 0.7])[level]), 0, 8)
    parch = np.clip(rng.poisson(0.4, n), 0, 6)
    fare = np.exp(rng.normal(np.log(np.array([60, 20, 10]))[level], 0.5))
    fare = (fare * (1 + 0.3 * (siblings + parch))).round(4)
    known_deck = rng.rand(n) < np.array([0.85, 0.2, 0.05])[level]
    decks = (("A", "B", "C", "D", "E"), ("D", "E", "F"), ("E", "F", "G"))
    pick = rng.randint(0, 60, n)  # 60: as likely any of 5 or of 3 decks
    deck = np.where(known_deck, [decks[c][i % len(decks[c])] for c, i in zip(level, pick)],
                    "unknown")
    embark = rng.choice(["Southampton", "Cherbourg", "Queenstown", "unknown"], size=n,
                        p=[0.72, 0.19, 0.087, 0.003])
    logit = (-1.7 + 2.6 * female + np.array([1.3, 0.5, -0.6])[level] - 0.025 * (age - 30)
             - 0.25 * np.maximum(siblings + parch - 2, 0) + 0.5 * (age < 10))
    survived = (rng.rand(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    x = {
        "sex": _source.strings(np.where(female, "female", "male")),
        "age": age.astype(np.float32),
        "n_siblings_spouses": siblings.astype(np.float32),
        "parch": parch.astype(np.float32),
        "fare": fare.astype(np.float32),
        "class": _source.strings(travel),
        "deck": _source.strings(deck),
        "embark_town": _source.strings(embark),
        "alone": _source.strings(np.where(siblings + parch == 0, "y", "n")),
    }
    train, test = _source.head(x, n_train), {k: v[n_train:] for k, v in x.items()}
    return TableData(train, survived[:n_train], test, survived[n_train:],
                     TITANIC_FALLBACK_SOURCE)

