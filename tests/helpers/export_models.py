"""Keras models and tf.Modules exported by more than one test module (they import TensorFlow
and Keras: import this after ``pytest.importorskip``)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def build_tutorial_subclassed(mnist, steps: int = 4):
    """The classic subclassed model with @tf.function(input_signature) on call, built so that
    training works on Keras 3 (sublayers built eagerly before the first traced call)."""

    class TutorialModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.d1 = keras.layers.Dense(32, activation="relu")
            self.d2 = keras.layers.Dense(10, activation="softmax")

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
        def call(self, x):
            return self.d2(self.d1(self.flatten(x)))

    model = TutorialModel()
    model.flatten.build((None, 28, 28, 1))
    model.d1.build((None, 784))
    model.d2.build((None, 32))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    model.fit(mnist.x_train[: 32 * steps], mnist.y_train[: 32 * steps], batch_size=32, verbose=0)
    # the training really changed the weights (it silently does not when built the wrong way)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    return model


class UndecoratedSubclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10, activation="softmax")

    def call(self, images):
        return self.dense(self.flatten(images))


class Calculator(tf.Module):
    """A tf.Module with two served methods and one variable."""

    def __init__(self):
        super().__init__()
        self.scale = tf.Variable(3.0)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.float32, name="offset"),
        ]
    )
    def affine(self, x, b):
        return x * self.scale + b

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def stats(self, values):
        return {"total": tf.reduce_sum(values, axis=1) * self.scale, "count": tf.shape(values)[1:]}
