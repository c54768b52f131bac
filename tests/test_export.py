"""export_model on real, briefly trained Keras models and tf.Modules, reloaded with TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tests.helpers.export_models import (  # noqa: E402
    Calculator,
    UndecoratedSubclassed,
    build_tutorial_subclassed,
)
from tfserve_magic.export import (  # noqa: E402
    ExportError,
    ExportResult,
    export_model,
    parse_input_signature,
)

ROOT = Path(__file__).resolve().parents[1]


def load_signature(path: Path, name: str = "serving_default"):
    return tf.saved_model.load(str(path)).signatures[name]


def signature_names(result: ExportResult) -> dict:
    return {
        name: (sorted(sig["inputs"]), sorted(sig["outputs"]))
        for name, sig in result.signatures.items()
    }


def numbered(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.isdigit()) if base.exists() else []


def leftovers(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


# --------------------------------------------------------------------------- model builders


def build_multi_io(mnist):
    """Two named inputs plus an unnamed one, dict outputs; trained a few steps."""
    image = keras.Input((28, 28, 1), name="image")
    extra = keras.Input((3,), name="extra")
    unnamed = keras.Input((2,))
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra, unnamed])
    hidden = keras.layers.Dense(16, activation="relu")(flat)
    model = keras.Model(
        [image, extra, unnamed],
        {
            "digit": keras.layers.Dense(10, activation="softmax")(hidden),
            "score": keras.layers.Dense(1)(hidden),
        },
    )
    model.compile(optimizer="adam", loss={"digit": "sparse_categorical_crossentropy", "score": "mse"})
    n = 64
    x = [mnist.x_train[:n], np.ones((n, 3), "float32"), np.zeros((n, 2), "float32")]
    model.fit(x, {"digit": mnist.y_train[:n], "score": np.ones((n, 1))}, batch_size=16, verbose=0)
    return model


class CallableModule(tf.Module):
    def __init__(self):
        super().__init__()
        self.weight = tf.Variable([[1.0], [2.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def __call__(self, x):
        return tf.matmul(x, self.weight)


# --------------------------------------------------------------------------- the tutorial flows


def test_sequential_without_input_fit_with_batch_50_serves_batch_10(trained_mlp, mlp_export, mnist):
    assert trained_mlp.inputs[0].shape[0] == 50  # the trap: Keras recorded fit's batch size
    assert numbered(mlp_export) == ["1"]
    signature = load_signature(mlp_export / "1")
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["inputs"]
    assert inputs["inputs"].shape.as_list() == [None, 28, 28, 1]
    batch = mnist.x_test[:10]
    served = signature(inputs=tf.constant(batch))["output_0"].numpy()
    assert served.shape == (10, 10)
    np.testing.assert_allclose(served, trained_mlp.predict(batch, verbose=0), atol=1e-5)
    # it learned something: the exported model classifies better than chance
    accuracy = np.mean(
        signature(inputs=tf.constant(mnist.x_test))["output_0"].numpy().argmax(1) == mnist.y_test
    )
    assert accuracy > 0.5


def test_subclassed_decorated_call_exported_as_call(mnist, tmp_path):
    model = build_tutorial_subclassed(mnist)
    result = export_model(model, tmp_path / "sub", signatures={"call": "call"}, sample=mnist.x_test[:5])
    assert set(result.signatures) == {"serving_default", "call"}
    assert signature_names(result)["call"] == (["x"], ["output_0"])
    assert result.signatures["call"]["inputs"]["x"] == ("float32", (None, 28, 28, 1))
    batch = mnist.x_test[:7]
    expected = model(batch).numpy()
    for name in ("call", "serving_default"):
        served = load_signature(result.path, name)(x=tf.constant(batch))["output_0"].numpy()
        np.testing.assert_allclose(served, expected, atol=1e-5)


# --------------------------------------------------------------------------- model kinds


def test_sequential_with_input_layer(mnist, tmp_path):
    model = keras.Sequential(
        [keras.Input((28, 28, 1), name="pixels"), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile(optimizer="sgd", loss="mse")
    model.fit(mnist.x_train[:40], np.zeros((40, 10)), batch_size=40, verbose=0)
    result = export_model(model, tmp_path / "seq")
    assert signature_names(result) == {"serving_default": (["pixels"], ["output_0"])}
    assert result.signatures["serving_default"]["inputs"]["pixels"][1] == (None, 28, 28, 1)


def test_functional_multi_input_multi_output_keeps_names(mnist, tmp_path):
    model = build_multi_io(mnist)
    sample = {
        "image": mnist.x_test[:4],
        "extra": np.random.RandomState(0).rand(4, 3).astype("float32"),
        "inputs": np.ones((4, 2), "float32"),
    }
    result = export_model(model, tmp_path / "multi", sample=sample)
    assert signature_names(result) == {
        "serving_default": (["extra", "image", "inputs"], ["digit", "score"])
    }
    assert result.signatures["serving_default"]["outputs"]["score"] == ("float32", (None, 1))
    served = load_signature(result.path)(**{k: tf.constant(v) for k, v in sample.items()})
    live = model([sample["image"], sample["extra"], sample["inputs"]])
    for key in ("digit", "score"):
        np.testing.assert_allclose(served[key].numpy(), live[key].numpy(), atol=1e-5)


@pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict")
def test_functional_dict_inputs_keep_their_keys(tmp_path):
    inputs = {"age": keras.Input((1,), name="age_in"), "tags": keras.Input((4,), dtype="int32")}
    merged = keras.layers.Concatenate()([inputs["age"], keras.ops.cast(inputs["tags"], "float32")])
    model = keras.Model(inputs, keras.layers.Dense(2)(merged))
    result = export_model(model, tmp_path / "dict")
    sig = result.signatures["serving_default"]
    assert sig["inputs"] == {"age": ("float32", (None, 1)), "tags": ("int32", (None, 4))}
    assert list(sig["outputs"]) == ["output_0"]


def test_subclassed_undecorated_built_by_fit(mnist, tmp_path):
    model = UndecoratedSubclassed()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(mnist.x_train[:100], mnist.y_train[:100], batch_size=50, verbose=0)
    result = export_model(model, tmp_path / "sub", sample=mnist.x_test[:3])
    assert result.signatures["serving_default"]["inputs"] == {
        "images": ("float32", (None, 28, 28, 1))
    }
    served = load_signature(result.path)(images=tf.constant(mnist.x_test[:11]))["output_0"]
    np.testing.assert_allclose(served.numpy(), model(mnist.x_test[:11]).numpy(), atol=1e-5)


def test_subclassed_unbuilt_needs_an_input_signature(tmp_path):
    with pytest.raises(ExportError, match=r"not built.*--input-signature"):
        export_model(UndecoratedSubclassed(), tmp_path / "unbuilt")
    assert leftovers(tmp_path / "unbuilt") == []
    unbuilt_sequential = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ExportError, match="model.fit"):
        export_model(unbuilt_sequential, tmp_path / "unbuilt")


def test_subclassed_with_given_input_signature(tmp_path):
    model = UndecoratedSubclassed()
    spec = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="pixels")
    result = export_model(model, tmp_path / "given", input_signature=[spec])
    assert model.built
    assert signature_names(result) == {"serving_default": (["pixels"], ["output_0"])}
    text = export_model(model, tmp_path / "given", input_signature="float32[None,28,28,1]")
    assert text.version == 2
    assert signature_names(text) == {"serving_default": (["images"], ["output_0"])}


class TwoArguments(keras.Model):
    def __init__(self):
        super().__init__()
        self.left = keras.layers.Dense(2)
        self.right = keras.layers.Dense(2)

    def call(self, a, b, training=None):
        return self.left(a) + self.right(b)


def test_subclassed_with_two_call_arguments(tmp_path):
    model = TwoArguments()
    a, b = np.ones((4, 3), "float32"), np.ones((4, 5), "float32")
    model(a, b)
    # Keras records only the first argument's shape: the error names what to pass
    with pytest.raises(ExportError, match=r"a, b.*--input-signature 'float32\[None,3\]; "):
        export_model(model, tmp_path / "two")
    result = export_model(model, tmp_path / "two", input_signature="float32[None,3]; float32[None,5]",
                          sample=[a, b])
    assert result.signatures["serving_default"]["inputs"] == {
        "a": ("float32", (None, 3)),
        "b": ("float32", (None, 5)),
    }
    out = load_signature(result.path)(a=tf.constant(a[:2]), b=tf.constant(b[:2]))["output_0"]
    np.testing.assert_allclose(out.numpy(), model(a[:2], b[:2]).numpy(), atol=1e-5)


def test_string_input_with_lookup_table_and_a_bare_layer(tmp_path):
    word = keras.Input((1,), dtype="string", name="word")
    one_hot = keras.layers.StringLookup(vocabulary=["cat", "dog"], output_mode="one_hot")(word)
    model = keras.Model(word, keras.layers.Dense(2)(one_hot))
    result = export_model(model, tmp_path / "words", sample=np.array([["dog"], ["emu"]]))
    assert result.signatures["serving_default"]["inputs"] == {"word": ("string", (None, 1))}
    served = load_signature(result.path)(word=tf.constant([["cat"], ["dog"]]))["output_0"]
    np.testing.assert_allclose(
        served.numpy(), model(tf.constant([["cat"], ["dog"]])).numpy(), atol=1e-5
    )
    layer = keras.layers.Dense(3)
    layer(np.ones((2, 4), "float32"))
    assert signature_names(export_model(layer, tmp_path / "layer")) == {
        "serving_default": (["inputs"], ["output_0"])
    }


def test_tf_module_with_several_named_signatures(tmp_path):
    module = Calculator()
    result = export_model(module, tmp_path / "calc", signatures={"affine": "affine", "stats": "stats"})
    assert list(result.signatures)[0] == "serving_default"
    assert signature_names(result) == {
        "serving_default": (["offset", "x"], ["output_0"]),
        "affine": (["offset", "x"], ["output_0"]),
        "stats": (["values"], ["count", "total"]),
    }
    loaded = tf.saved_model.load(str(result.path))
    out = loaded.signatures["affine"](x=tf.constant([1.0, 2.0]), offset=tf.constant([0.5, 0.5]))
    np.testing.assert_allclose(out["output_0"].numpy(), [3.5, 6.5])
    stats = loaded.signatures["stats"](values=tf.constant([[1.0, 2.0]]))
    np.testing.assert_allclose(stats["total"].numpy(), [9.0])


def test_tf_module_call_is_the_default_signature(tmp_path):
    result = export_model(CallableModule(), tmp_path / "callable")
    assert signature_names(result) == {"serving_default": (["x"], ["output_0"])}
    out = load_signature(result.path)(x=tf.constant([[1.0, 1.0]]))["output_0"].numpy()
    np.testing.assert_allclose(out, [[3.0]])


def test_nothing_to_serve_says_how_to_fix(tmp_path):
    with pytest.raises(ExportError, match=r"several tf.function methods.*--signature"):
        export_model(Calculator(), tmp_path / "x")
    with pytest.raises(ExportError, match=r"nothing to serve.*--signature NAME=METHOD"):
        export_model(tf.Module(), tmp_path / "x")
    with pytest.raises(ExportError, match="nothing to serve"):
        export_model(np.zeros(3), tmp_path / "x")
    with pytest.raises(ExportError, match="has no attribute 'nope'"):
        export_model(Calculator(), tmp_path / "x", signatures={"a": "nope"})
    assert leftovers(tmp_path / "x") == []


def test_fixed_batch_dimension_is_refused(trained_mlp, tmp_path):
    with pytest.raises(ExportError, match=r"fixed batch dimension 50.*None, 28, 28, 1"):
        export_model(trained_mlp, tmp_path / "fixed", input_signature="float32[50,28,28,1]")
    assert leftovers(tmp_path / "fixed") == []


@pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("tf_keras") is None,
    reason="tf_keras is not installed",
)
def test_tf_keras_sequential(mnist, tmp_path):
    import tf_keras

    model = tf_keras.Sequential(
        [tf_keras.layers.Flatten(), tf_keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(mnist.x_train[:100], mnist.y_train[:100], batch_size=50, verbose=0)
    result = export_model(model, tmp_path / "tfk", sample=mnist.x_test[:3])
    assert signature_names(result) == {"serving_default": (["inputs"], ["output_0"])}
    served = load_signature(result.path)(inputs=tf.constant(mnist.x_test[:10]))["output_0"]
    np.testing.assert_allclose(served.numpy(), model(mnist.x_test[:10]).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- versions, atomicity


def test_versions_are_numbered_and_never_overwritten(trained_mlp, mnist, tmp_path):
    base = tmp_path / "versions"
    assert export_model(trained_mlp, base).version == 1
    assert export_model(trained_mlp, base).version == 2
    assert export_model(trained_mlp, base, version=7).version == 7
    assert export_model(trained_mlp, base).version == 8
    with pytest.raises(ExportError, match=r"version 7 already exists.*--overwrite"):
        export_model(trained_mlp, base, version=7)
    assert numbered(base) == ["1", "2", "7", "8"]
    assert leftovers(base) == numbered(base)

    other = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    result = export_model(other, base, version=7, overwrite=True)
    assert result.path == base / "7"
    out = load_signature(base / "7")(inputs=tf.constant(mnist.x_test[:2]))["output_0"]
    assert out.shape == (2, 4)
    assert leftovers(base) == ["1", "2", "7", "8"]
    with pytest.raises(ExportError, match="positive integer"):
        export_model(trained_mlp, base, version=0)
    with pytest.raises(ExportError, match="itself a SavedModel"):
        export_model(trained_mlp, base / "1")


class NoisyModel(keras.Model):
    """Adds fresh noise on every call, even in inference: a reloaded copy cannot match it."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x) + tf.random.uniform(tf.shape(x)[:1])[:, None]


def test_verification_mismatch_fails_and_leaves_no_version(tmp_path):
    model = NoisyModel()
    model(np.ones((1, 3), "float32"))
    base = tmp_path / "noisy"
    with pytest.raises(ExportError, match=r"differs from the live model.*--no-verify"):
        export_model(model, base)
    assert leftovers(base) == []
    assert export_model(model, base, verify=False).version == 1  # the user's explicit choice


def test_failure_while_writing_leaves_no_numbered_folder(trained_mlp, tmp_path, monkeypatch):
    import tfserve_magic.export as export_module

    real_write = export_module.write_savedmodel

    def write_then_crash(obj, endpoints, path):
        real_write(obj, endpoints, path)  # a complete SavedModel in the temporary folder
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(export_module, "write_savedmodel", write_then_crash)
    base = tmp_path / "crash"
    with pytest.raises(ExportError, match="disk full"):
        export_model(trained_mlp, base)
    assert leftovers(base) == []


def test_sample_forms_and_a_sample_that_does_not_fit(trained_mlp, mnist, tmp_path):
    base = tmp_path / "samples"
    one_image = mnist.x_test[0]  # no batch dimension: added
    assert export_model(trained_mlp, base, sample=one_image).verified
    assert export_model(trained_mlp, base, sample=mnist.x_test[:2].tolist()).verified
    assert export_model(trained_mlp, base, sample={"inputs": mnist.x_test[:5]}).verified
    with pytest.raises(ExportError, match=r"sample does not fit.*inputs float32"):
        export_model(trained_mlp, base, sample=np.zeros((2, 5)))
    assert numbered(base) == ["1", "2", "3"]


# --------------------------------------------------------------------------- names, result


MLP_SCRIPT = textwrap.dedent(
    """
    import json, sys, keras
    from tfserve_magic.export import export_model
    keras.utils.set_random_seed(1)
    for _ in range(int(sys.argv[2])):  # advance Keras' name counters
        keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(keras.ops.zeros((8, 28, 28, 1)), keras.ops.zeros((8, 10)), batch_size=4, verbose=0)
    result = export_model(model, sys.argv[1])
    print(json.dumps({k: [sorted(v["inputs"]), sorted(v["outputs"])]
                      for k, v in result.signatures.items()}))
    """
)


def test_names_are_deterministic_in_the_same_and_a_fresh_process(tmp_path):
    def same_architecture():
        model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.zeros((8, 28, 28, 1)), np.zeros((8, 10)), batch_size=4, verbose=0)
        return model

    first = export_model(same_architecture(), tmp_path / "a")
    second = export_model(same_architecture(), tmp_path / "a")
    assert first.signatures == second.signatures
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    fresh = subprocess.run(
        [sys.executable, "-c", MLP_SCRIPT, str(tmp_path / "b"), "3"],
        capture_output=True, text=True, env=env, timeout=240, check=True,
    )
    names = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert names == {k: [list(v[0]), list(v[1])] for k, v in signature_names(first).items()}


def test_result_shows_path_signatures_and_server_command(trained_mlp, tmp_path):
    base = tmp_path / "digits"
    result = export_model(trained_mlp, base)
    text, markup = repr(result), result._repr_html_()
    assert result.server_command == (
        f"tensorflow_model_server --rest_api_port=8501 --model_name=digits "
        f"--model_base_path={base}"
    )
    for shown in (str(base / "1"), "serving_default", "inputs", "output_0", "(None, 28, 28, 1)",
                  "(None, 10)", "float32", result.server_command, "version 1", "verified"):
        assert shown in text
    assert "<table>" in markup and "output_0" in markup and "tensorflow_model_server" in markup
    assert result.signatures["serving_default"] == {
        "inputs": {"inputs": ("float32", (None, 28, 28, 1))},
        "outputs": {"output_0": ("float32", (None, 10))},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("float32[None,28,28,1]", [(None, "float32", [None, 28, 28, 1])]),
        ("a:int64[None] ; b:string[-1, 2]", [("a", "int64", [None]), ("b", "string", [None, 2])]),
        ("float16[?]", [(None, "float16", [None])]),
    ],
)
def test_parse_input_signature(text, expected):
    specs = parse_input_signature(text)
    assert [(s.name, s.dtype.name, s.shape.as_list()) for s in specs] == expected


@pytest.mark.parametrize("text", ["", "float32", "floaty[None]", "float32[None,x]", "a b:f[1]"])
def test_parse_input_signature_errors(text):
    with pytest.raises(ExportError):
        parse_input_signature(text)


def test_an_input_named_like_a_keyword_gets_a_plain_error_and_leaves_nothing(tmp_path):
    """The Titanic tutorial's `class` column: TensorFlow cannot name a signature parameter so;
    the error says which input and how to fix it, and no version folder is left."""
    first = keras.Input(shape=(1,), name="class")
    age = keras.Input(shape=(1,), name="age")
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([first, age]))
    model = keras.Model({"class": first, "age": age}, out)
    with pytest.raises(ExportError, match=r"the input name 'class' is a Python keyword.*"
                                          r"rename that keras.Input"):
        export_model(model, tmp_path / "titanic")
    assert [p.name for p in (tmp_path / "titanic").iterdir()] == []
