"""Small real Keras models of every task kind, as TensorFlow's first tutorials train them.

- text: strings [-1, 1] -> TextVectorization -> Embedding -> one sigmoid (the IMDB tutorial)
- regression: numeric columns -> Normalization -> Dense(1) (the Auto MPG tutorial)
- tabular: named inputs {"age", "fare", "sex"} -> one sigmoid (the structured-data tutorials)
- multilabel: 6 numbers -> 3 independent sigmoids

Each builder trains for a few epochs on data it generates (no download) and returns
``(model, x, y)``; import after ``pytest.importorskip("tensorflow")``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

GOOD = ["great", "wonderful", "loved", "excellent", "fun", "best", "moving", "brilliant"]
BAD = ["awful", "boring", "hated", "worst", "dull", "bad", "terrible", "waste"]
FILL = ["the", "movie", "film", "was", "plot", "actors", "and", "a", "it", "story", "really"]


def sentences(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Short reviews whose sentiment is in their words (plus noise words), labels 0/1."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        positive = int(rng.random() < 0.5)
        words = list(rng.choice(FILL, size=int(rng.integers(4, 30))))
        mood = GOOD if positive else BAD
        other = BAD if positive else GOOD
        for _ in range(int(rng.integers(1, 4))):
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(mood)))
        if rng.random() < 0.25:  # a mixed review: some are wrong on purpose
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(other)))
        texts.append(" ".join(words))
        labels.append(positive)
    return texts, np.asarray(labels, np.int64)


def text_classifier(n: int = 400, epochs: int = 8):
    texts, labels = sentences(n)
    vectorize = keras.layers.TextVectorization(max_tokens=200, output_sequence_length=32)
    vectorize.adapt(tf.constant(texts))
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    x = vectorize(inputs)
    x = keras.layers.Embedding(200, 8)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="positive")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    model.fit(tf.constant(texts)[:, None], tf.constant(labels), epochs=epochs, batch_size=32, verbose=0)
    return model, texts, labels


def regression_data(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.uniform(1, 8, n), rng.uniform(50, 250, n), rng.uniform(1500, 5000, n)],
                 axis=1).astype(np.float32)  # cylinders, horsepower, weight
    y = 45.0 - 1.2 * x[:, 0] - 0.05 * x[:, 1] - 0.003 * x[:, 2] + rng.normal(0, 1.5, n)
    return x, y.astype(np.float32)


def regression_model(n: int = 400, epochs: int = 60):
    x, y = regression_data(n)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential([keras.Input((3,)), norm, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model, x, y


def tabular_data(n: int, seed: int = 2):
    rng = np.random.default_rng(seed)
    age = rng.uniform(1, 80, n).astype(np.float32)
    fare = rng.uniform(5, 250, n).astype(np.float32)
    sex = rng.integers(0, 2, n).astype(np.float32)  # 1: female
    logit = 2.5 * sex - 0.03 * age + 0.01 * fare - 0.5 + rng.normal(0, 0.7, n)
    y = (logit > 0).astype(np.int64)
    return {"age": age, "fare": fare, "sex": sex}, y


def tabular_model(n: int = 400, epochs: int = 30):
    data, y = tabular_data(n)
    inputs = {k: keras.Input(shape=(1,), name=k) for k in data}
    norms = []
    for k, tensor in inputs.items():
        layer = keras.layers.Normalization()
        layer.adapt(data[k].reshape(-1, 1))
        norms.append(layer(tensor))
    x = keras.layers.Concatenate()(norms)
    x = keras.layers.Dense(8, activation="relu")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="survived")(x)
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    model.fit({k: v.reshape(-1, 1) for k, v in data.items()}, y, epochs=epochs, batch_size=32,
              verbose=0)
    return model, data, y


LABELS = ("sports", "politics", "science")


def multilabel_data(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 6)).astype(np.float32)
    y = np.stack([x[:, 0] + x[:, 1] > 0, x[:, 2] > 0.3, x[:, 3] - x[:, 4] > 0.5],
                 axis=1).astype(np.int64)
    return x, y


def multilabel_model(n: int = 400, epochs: int = 30):
    x, y = multilabel_data(n)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model, x, y
