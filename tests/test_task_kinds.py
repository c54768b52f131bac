"""Every task kind end to end: tiny real Keras models (a binary text classifier taking raw
strings through TextVectorization, a regression on numeric columns, a named-input tabular
classifier, a multi-label model with K sigmoids), exported with ``export_model``, served by the
real server and driven through ``%%predict``, ``PredictionResult.metrics``, ``scoring.metrics``
and ``VersionCompare``; every number checked against numpy on the Keras model's own outputs."""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.error import UsageError

from tfserve_magic.client import Client
from tfserve_magic.inputs import prepare_inputs
from tfserve_magic.predict_view import PredictionResult
from tfserve_magic.scoring import metrics
from tfserve_magic.widgets import VersionCompare

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")

GOOD = ["good", "great", "fun", "superb", "moving"]
BAD = ["bad", "awful", "boring", "dull", "weak"]
FILLER = ["the", "film", "plot", "was", "and", "actors", "story"]


def _sentences(rng, n):
    words, labels = [], []
    for _ in range(n):
        positive = rng.random() < 0.5
        mood = GOOD if positive else BAD
        other = BAD if positive else GOOD
        chosen = list(rng.choice(mood, 2)) + list(rng.choice(FILLER, 3))
        if rng.random() < 0.2:  # some mixed reviews: the model cannot be always right
            chosen.append(str(rng.choice(other)))
        rng.shuffle(chosen)
        words.append(" ".join(chosen))
        labels.append(int(positive))
    return words, np.array(labels)


def _text_model(sentences, labels, epochs, seed):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    vectorize = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=6)
    vectorize.adapt(sentences)
    text = keras.Input(shape=(1,), dtype="string", name="text")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(40, 8)(vectorize(text)))
    model = keras.Model(text, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    data = tf.data.Dataset.from_tensor_slices((np.array(sentences)[:, None], labels)).batch(32)
    model.fit(data, epochs=epochs, verbose=0)
    return model


def _regression_model(x, y, epochs, seed):
    import keras

    keras.utils.set_random_seed(seed)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential([keras.Input(shape=(3,)), norm, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


def _tabular_model(columns, y):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = {"age": keras.Input(shape=(1,), name="age"),
              "fare": keras.Input(shape=(1,), name="fare"),
              "sex": keras.Input(shape=(1,), name="sex", dtype="string")}
    sex = keras.layers.StringLookup(vocabulary=["male", "female"], output_mode="one_hot")
    joined = keras.layers.Concatenate()([
        inputs["age"] / 50.0, inputs["fare"] / 100.0, keras.layers.Flatten()(sex(inputs["sex"]))])
    hidden = keras.layers.Dense(8, activation="relu")(joined)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    features = {"age": columns["age"][:, None].astype(np.float32),
                "fare": columns["fare"][:, None].astype(np.float32),
                "sex": columns["sex"].astype(str)[:, None]}
    model.fit(tf.data.Dataset.from_tensor_slices((features, y)).batch(32), epochs=8, verbose=0)
    return model


def _multilabel_model(x, y, epochs, seed):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, "sigmoid")])
    model.compile(keras.optimizers.Adam(0.1), "binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """Four models (TEXT, REG and MULTI in versions 1 and 2, TAB in version 1) on one server
    started as "Kinds"; the data and each version's Keras outputs for the checks."""
    import tensorflow as tf

    import tfserve_magic as tfm
    from tfserve_magic.export import export_model

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("kinds")
    data, expected = {}, {}

    sentences, labels = _sentences(rng, 240)
    data["TEXT"] = (sentences[200:], labels[200:])
    for version, epochs in ((1, 1), (2, 6)):
        model = _text_model(sentences[:200], labels[:200], epochs, seed=version)
        export_model(model, root / "TEXT", version=version)
        expected["TEXT", version] = model.predict(tf.constant(sentences[200:])[:, None],
                                                  verbose=0)

    x = rng.normal(size=(240, 3)).astype(np.float32) * [1.0, 5.0, 2.0] + [4.0, 100.0, 70.0]
    y = (2.0 * x[:, 0] - 0.2 * x[:, 1] + 0.5 * x[:, 2] + rng.normal(size=240)).astype(
        np.float32)
    frame = pd.DataFrame(x[200:], columns=["cylinders", "horsepower", "year"])
    data["REG"] = (frame, y[200:])
    for version, epochs in ((1, 2), (2, 30)):
        model = _regression_model(x[:200], y[:200], epochs, seed=version)
        export_model(model, root / "REG", version=version)
        expected["REG", version] = model.predict(x[200:], verbose=0)

    columns = {"age": rng.integers(1, 70, 240).astype(np.float32),
               "fare": rng.uniform(5, 120, 240).astype(np.float32),
               "sex": rng.choice(np.array(["male", "female"], dtype=object), 240)}
    classes = np.where(columns["fare"] > 80, 0, np.where(columns["sex"] == "female", 1, 2))
    model = _tabular_model({k: v[:200] for k, v in columns.items()}, classes[:200])
    export_model(model, root / "TAB", version=1)
    test_columns = {k: v[200:] for k, v in columns.items()}
    data["TAB"] = (pd.DataFrame(test_columns), classes[200:])
    expected["TAB", 1] = model.predict(
        {k: tf.constant(v.astype(str) if k == "sex" else v)[:, None]
         for k, v in test_columns.items()}, verbose=0)

    features = rng.normal(size=(240, 4)).astype(np.float32)
    multi = (features[:, :3] + 0.3 * features[:, 3:] > 0).astype(np.int64)
    data["MULTI"] = (features[200:], multi[200:])
    for version, epochs in ((1, 1), (2, 20)):
        model = _multilabel_model(features[:200], multi[:200], epochs, seed=version)
        export_model(model, root / "MULTI", version=version)
        expected["MULTI", version] = model.predict(features[200:], verbose=0)

    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow"'
        " model_version_policy { all {} } }\n" for name in ("TEXT", "REG", "TAB", "MULTI"))
        + "}\n")
    handle = tfm.start("Kinds", config=config, port=0, gpu="none", timeout=180)
    handle.data, handle.expected = data, expected
    yield handle
    tfm.stop("Kinds")


@pytest.fixture
def ns(shell, kinds):
    names = []
    for model, (x, y) in kinds.data.items():
        key = model.lower()
        shell.user_ns[f"x_{key}"], shell.user_ns[f"y_{key}"] = x, y
        names += [f"x_{key}", f"y_{key}"]
    yield shell
    for name in (*names, "res", "names", "rows", "columns", "missing", "extra", "words"):
        shell.user_ns.pop(name, None)


def _client(kinds, model):
    return Client(kinds.url, model, timeout=60)


def test_text_classifier_takes_a_plain_list_of_sentences(ns, kinds):
    sentences, y = kinds.data["TEXT"]
    p = kinds.expected["TEXT", 2][:, 0]
    result = ns.run_cell_magic("predict", "TEXT --labels y_text --threshold 0.4 -o res",
                               "x_text")
    assert isinstance(result, PredictionResult) and result.task == "binary"
    assert "one number per instance within 0..1 and binary labels" in result.reading.reason
    np.testing.assert_allclose(result.reading.probabilities[:, 1], p, rtol=1e-5, atol=1e-6)
    m = result.evaluation
    positive = p >= 0.4
    tp = np.sum(positive & (y == 1))
    assert m.precision_at == pytest.approx(tp / positive.sum())
    assert m.recall_at == pytest.approx(tp / np.sum(y == 1))
    assert m.f1_at == pytest.approx(2 * tp / (positive.sum() + np.sum(y == 1)))
    assert m.accuracy == pytest.approx(np.mean(positive == y))
    text = repr(result)
    assert f"precision {m.precision_at:.3f}, recall {m.recall_at:.3f}" in text
    assert "read as binary" in text
    # the same numbers from Python, at another threshold
    again = result.metrics(threshold=0.7)
    assert again.precision_at == pytest.approx(np.sum((p >= 0.7) & (y == 1)) / np.sum(p >= 0.7))
    # an array of strings, names for the classes and labels given as names
    ns.user_ns["words"] = np.array(sentences)
    ns.user_ns["names"] = np.array(["neg", "pos"])[y]
    named = ns.run_cell_magic("predict", "TEXT --labels names --class-names neg,pos", "words")
    assert named.predicted_classes.tolist() == np.where(p >= 0.5, "pos", "neg").tolist()
    assert named.accuracy == pytest.approx(np.mean((p >= 0.5) == y))
    assert "positive pos" in repr(named)
    # the Python API: prepare_inputs and scoring.metrics on a Prediction
    with _client(kinds, "TEXT") as client:
        prediction = client.predict(instances=prepare_inputs(sentences, client.metadata()),
                                    version=1)
    np.testing.assert_allclose(np.asarray(prediction)[:, 0], kinds.expected["TEXT", 1][:, 0],
                               rtol=1e-5, atol=1e-6)
    assert metrics(prediction, y).accuracy == pytest.approx(
        np.mean((kinds.expected["TEXT", 1][:, 0] >= 0.5) == y))


def test_regression_summary_metrics_and_worst_rows_with_inputs(ns, kinds):
    frame, y = kinds.data["REG"]
    predicted = kinds.expected["REG", 2][:, 0].astype(np.float64)
    error = predicted - y
    for cell in ("x_reg", "x_reg.to_numpy()"):  # the DataFrame's columns, or the matrix
        result = ns.run_cell_magic("predict", "REG --labels y_reg", cell)
        assert result.task == "regression"
        m = result.evaluation
        assert m.mae == pytest.approx(np.mean(np.abs(error)), rel=1e-5)
        assert m.rmse == pytest.approx(np.sqrt(np.mean(error ** 2)), rel=1e-5)
        r2 = 1 - np.sum(error ** 2) / np.sum((y - y.mean()) ** 2)
        assert m.r2 == pytest.approx(r2, rel=1e-4)
        assert m.worst[0] == int(np.argmax(np.abs(error)))
    text = repr(result)
    assert f"MAE {m.mae:.4g}, RMSE {m.rmse:.4g}, R² {m.r2:.4g}" in text
    worst = int(m.worst[0])
    frame_result = ns.run_cell_magic("predict", "REG --labels y_reg", "x_reg")
    assert f"cylinders={frame.cylinders.iloc[worst]:.4g}" in repr(frame_result)
    assert "|error|" in frame_result._repr_html_()
    # a task that does not fit, labels of the wrong length: UsageErrors that say so
    with pytest.raises(UsageError, match="--task multiclass: cannot read .* as multiclass"):
        ns.run_cell_magic("predict", "REG --labels y_reg --task multiclass", "x_reg")
    with pytest.raises(UsageError, match="--labels y_reg\\[:5\\]: 5 labels for 40"):
        ns.run_cell_magic("predict", "REG --labels y_reg[:5]", "x_reg")
    with pytest.raises(UsageError, match="has 2 columns named cylinders, horsepower"):
        ns.run_cell_magic("predict", "REG", "x_reg[['cylinders', 'horsepower']]")


def test_named_inputs_from_dataframe_dict_and_rows(ns, kinds):
    frame, y = kinds.data["TAB"]
    probs = kinds.expected["TAB", 1]
    ns.user_ns["rows"] = frame.to_dict("records")
    ns.user_ns["columns"] = {k: frame[k].to_numpy() for k in frame.columns}
    ns.user_ns["names"] = ["first", "second", "third"]
    results = [ns.run_cell_magic("predict", "TAB --labels y_tab --class-names names", cell)
               for cell in ("x_tab", "rows", "columns")]
    for result in results:
        assert result.task == "multiclass"
        np.testing.assert_allclose(result.predictions, probs, rtol=1e-5, atol=1e-6)
        m = result.evaluation
        predicted = probs.argmax(1)
        assert m.accuracy == pytest.approx(np.mean(predicted == y))
        for k in range(3):
            chosen = predicted == k
            assert m.support[k] == np.sum(y == k)
            assert m.precision[k] == pytest.approx(
                np.sum(chosen & (y == k)) / chosen.sum() if chosen.sum() else 0.0)
            assert m.recall[k] == pytest.approx(np.sum(chosen & (y == k)) / np.sum(y == k))
        assert m.class_names == ("first", "second", "third")
    assert "second" in repr(results[0]).split("support")[-1]
    # a missing or an extra column is named
    ns.user_ns["missing"] = frame.drop(columns=["fare"])
    ns.user_ns["extra"] = frame.assign(survived=1)
    with pytest.raises(UsageError, match="missing column 'fare': the signature's inputs are "
                       "age float32\\[-1,1\\], fare float32\\[-1,1\\], sex string\\[-1,1\\]"):
        ns.run_cell_magic("predict", "TAB", "missing")
    with pytest.raises(UsageError, match="extra column 'survived'"):
        ns.run_cell_magic("predict", "TAB --labels y_tab", "extra")
    ns.user_ns["names"] = ["first", "second"]
    with pytest.raises(UsageError, match="--class-names names: 2 class names for 3 classes"):
        ns.run_cell_magic("predict", "TAB --labels y_tab --class-names names", "x_tab")
    with pytest.raises(UsageError, match="--class-names nope: no variable named 'nope'"):
        ns.run_cell_magic("predict", "TAB --class-names nope", "x_tab")


def test_multilabel_per_label_scores(ns, kinds):
    x, y = kinds.data["MULTI"]
    scores = kinds.expected["MULTI", 2]
    result = ns.run_cell_magic("predict", "MULTI --labels y_multi --class-names a,b,c", "x_multi")
    assert result.task == "multilabel" and "multi-hot labels" in result.reading.reason
    m = result.evaluation
    active = scores >= 0.5
    for k in range(3):
        tp = np.sum(active[:, k] & (y[:, k] == 1))
        assert m.precision[k] == pytest.approx(tp / active[:, k].sum())
        assert m.recall[k] == pytest.approx(tp / y[:, k].sum())
    assert m.exact_match == pytest.approx(np.mean((active == y.astype(bool)).all(axis=1)))
    assert result.mismatches == np.flatnonzero(~(active == y.astype(bool)).all(1)).tolist()
    assert "exact match" in repr(result) and "predicted labels" in repr(result)
    with pytest.raises(UsageError, match="multi-label labels must be shaped \\(40, 3\\)"):
        ns.run_cell_magic("predict", "MULTI --labels y_multi[:, :2]", "x_multi")


def test_version_against_version_for_each_kind(shell, kinds):
    # text: a plain list of sentences; the better version errs less
    sentences, y = kinds.data["TEXT"]
    with _client(kinds, "TEXT") as client:
        text = VersionCompare(client, sentences, y, a=1, b=2)
        assert text.status.kind == "ok", text.status.value
        r = text.result
        p1, p2 = (kinds.expected["TEXT", v][:, 0] >= 0.5 for v in (1, 2))
        assert r.task == "binary"
        assert r.accuracy_a == pytest.approx(np.mean(p1 == y))
        assert r.accuracy_b == pytest.approx(np.mean(p2 == y))
        assert sorted(r.disagreements.tolist()) == np.flatnonzero(p1 != p2).tolist()
        first = int(r.disagreements[0])
        page = text.summary_html()
        assert sentences[first] in page and "tfserve-compare-summary" in page
        assert text.gallery.images is None and sentences[first] in text.gallery.grid.value

    # regression on a DataFrame: MAE of each; the largest difference first
    frame, y = kinds.data["REG"]
    a, b = (kinds.expected["REG", v][:, 0].astype(np.float64) for v in (1, 2))
    with _client(kinds, "REG") as client:
        reg = VersionCompare(client, frame, y, a=1, b=2)
    r = reg.result
    assert r.task == "regression" and reg.show_choice.options[0][0] == "largest differences"
    assert r.error_a == pytest.approx(np.mean(np.abs(a - y)), rel=1e-5)
    assert r.error_b == pytest.approx(np.mean(np.abs(b - y)), rel=1e-5)
    assert r.better == ("A" if r.error_a < r.error_b else "B")
    assert int(r.disagreements[0]) == int(np.argmax(np.abs(a - b)))
    assert f"MAE</td><td style=\"padding:2px 12px 2px 0;text-align:left\">{r.metrics_a.mae:.4g}" \
        in reg.table.value
    assert f"horsepower={frame.horsepower.iloc[int(r.disagreements[0])]:.4g}" in \
        reg.summary_html()
    reg.select_disagreements("b_right")
    assert sorted(reg.gallery.items.tolist()) == np.flatnonzero(
        np.abs(b - y) < np.abs(a - y)).tolist()

    # multi-label: per-label F1 of each side
    x, y = kinds.data["MULTI"]
    with _client(kinds, "MULTI") as client:
        multi = VersionCompare(client, x, y, a=1, b=2, class_names=["a", "b", "c"])
    r = multi.result
    f1_b = r.metrics_b.f1
    active = kinds.expected["MULTI", 2] >= 0.5
    for k in range(3):
        tp = np.sum(active[:, k] & (y[:, k] == 1))
        assert f1_b[k] == pytest.approx(2 * tp / (active[:, k].sum() + y[:, k].sum()))
    assert "F1 a" in multi.table.value and r.task == "multilabel"

    # named inputs from a DataFrame, the same version on both sides: no disagreement
    frame, y = kinds.data["TAB"]
    with _client(kinds, "TAB") as client:
        tab = VersionCompare(client, frame, y, a=1, b="latest", class_names=["p", "q", "r"])
    assert tab.result.task == "multiclass" and tab.result.better is None
    assert tab.result.accuracy_a == pytest.approx(
        np.mean(kinds.expected["TAB", 1].argmax(1) == y))
    assert len(tab.result.disagreements) == 0 and "they err alike" in tab.table.value

    # the magic: sentences straight from the namespace
    shell.user_ns.update(sentences=sentences, y_text=kinds.data["TEXT"][1])
    widget = shell.run_line_magic("tfserve", "compare TEXT sentences y_text --a 1 --b 2")
    assert isinstance(widget, VersionCompare) and widget.result.n == len(sentences)
