"""A served model with named inputs, several signatures, two versions and labels (the
client and %%predict tests share it)."""

from __future__ import annotations

CONFIG = """model_config_list {{
  config {{
    name: "Multi"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
"""


def build_multi_model(base_path, versions=(1, 2)):
    """Versions whose outputs scale with the version number, with four signatures:

    - ``serving_default``: named inputs ``a`` float32 [-1,2] and ``b`` int64 [-1] ->
      ``sum`` = version * (a0 + a1) + b, ``scaled`` = version * a
    - ``scale``: ``x`` float32 [-1] -> ``y`` = version * x
    - ``regress`` / ``classify``: serialized tf.Examples with a float feature ``x``
    """
    import tensorflow as tf

    class Multi(tf.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = tf.Variable(float(factor))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None], tf.int64, name="b"),
            ]
        )
        def two(self, a, b):
            total = tf.reduce_sum(a, axis=1) * self.factor + tf.cast(b, tf.float32)
            return {"sum": total, "scaled": a * self.factor}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def scale(self, x):
            return {"y": x * self.factor}

        def _feature(self, serialized):
            spec = {"x": tf.io.FixedLenFeature([], tf.float32)}
            return tf.io.parse_example(serialized, spec)["x"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self._feature(inputs) * self.factor}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            x = self._feature(inputs)
            scores = tf.stack([x, 1.0 - x], axis=1)
            classes = tf.tile(tf.constant([["yes", "no"]]), [tf.shape(x)[0], 1])
            return {"classes": classes, "scores": scores}

    for version in versions:
        module = Multi(version)
        signatures = {
            "serving_default": module.two,
            "scale": module.scale,
            "regress": module.regress,
            "classify": module.classify,
        }
        tf.saved_model.save(module, str(base_path / str(version)), signatures=signatures)
    return base_path
