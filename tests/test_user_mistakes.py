"""Mistakes a user makes with models that are not digit classifiers, in a real shell.

A small tabular classifier and a regression model are trained, exported and served by one real
server; the widget magics must refuse what they cannot show with a ``UsageError`` that says why,
instead of a meaningless accuracy or a widget that only fails on the first stroke.
"""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.error import UsageError

from tfserve_magic.predict_view import PredictionResult
from tfserve_magic.widgets import DrawDigit, PredictionExplorer

from .fixtures.server import start_server


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    """(x, y, url): 4 features, 2 classes; TAB (softmax classifier) and REG (one linear output
    starting at 10, trained on targets 10 + sum(x): far outside 0..1) on one server."""
    import keras

    from tfserve_magic import export_model

    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = (x.sum(axis=1) > 2).astype(np.int64)
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential(
        [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2, activation="softmax")]
    )
    classifier.compile("adam", "sparse_categorical_crossentropy")
    classifier.fit(x, y, epochs=1, verbose=0)
    offset = keras.initializers.Constant(10.0)
    regressor = keras.Sequential([keras.layers.Dense(1, bias_initializer=offset)])
    regressor.compile("adam", "mse")
    regressor.fit(x, 10 + x.sum(axis=1), epochs=1, verbose=0)
    root = tmp_path_factory.mktemp("tabular")
    export_model(classifier, root / "tab")
    export_model(regressor, root / "reg")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "TAB" base_path: "{root / "tab"}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "REG" base_path: "{root / "reg"}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    server = start_server(config_file=config, workdir=root)
    yield x, y, server.url
    server.stop()


@pytest.fixture
def user_shell(shell, tabular):
    x, y, url = tabular
    shell.user_ns.update(X=x, Y=y, np=np)
    return shell


def test_explore_of_a_regression_model_shows_regression_numbers_not_an_accuracy(user_shell,
                                                                                 tabular):
    x, _, url = tabular
    truth = np.linspace(0.0, 1.0, len(x))
    user_shell.user_ns["T"] = truth
    box = user_shell.run_line_magic("tfserve", f"explore {url}/v1/models/REG X T")
    assert box is not None
    explorer = PredictionExplorer(f"{url}/v1/models/REG", x, truth)
    assert explorer.reading.task == "regression" and explorer.status.kind != "error"


def test_explore_of_a_tabular_classifier_lists_its_predictions(user_shell, tabular):
    x, y, url = tabular
    box = user_shell.run_line_magic("tfserve", f"explore {url}/v1/models/TAB X Y")
    assert box is not None
    explorer = PredictionExplorer(f"{url}/v1/models/TAB", x, y)
    assert explorer.status.kind == "ok" and explorer.n_classes == 2
    assert 0.0 <= explorer.accuracy() <= 1.0


def test_draw_of_a_model_without_image_inputs_is_refused_up_front(user_shell, tabular):
    _, _, url = tabular
    with pytest.raises(UsageError, match=r"takes inputs shaped \[4\], not 28x28 images"):
        user_shell.run_line_magic("tfserve", f"draw {url}/v1/models/TAB")
    with pytest.raises(ValueError, match="needs a digit classifier"):
        DrawDigit(f"{url}/v1/models/TAB", use_canvas=False)


def test_float_labels_are_shown_with_the_predictions_precision(user_shell, tabular):
    x, _, url = tabular
    line = f"{url}/v1/models/REG X[:3] --labels X[:3].sum(1)"
    result = user_shell.run_line_magic("predict", line)
    assert isinstance(result, PredictionResult)
    text = repr(result)
    for target in x[:3].sum(axis=1):
        assert f"{target:.4g}" in text  # as many digits as the predictions
        assert repr(float(target)) not in text  # not 17 significant digits


def test_logs_with_a_count_below_one_is_a_usage_error(shell):
    with pytest.raises(UsageError, match="at least 1"):
        shell.run_line_magic("tfserve", "logs MLP -n 0")


def test_a_stray_string_in_the_request_is_named_in_the_error(user_shell, tabular):
    _, _, url = tabular
    with pytest.raises(UsageError, match=r"input 'inputs' takes float32 numbers, got strings "
                                         r"\(e\.g\. 'a'\)"):
        user_shell.run_line_magic("predict", f"{url}/v1/models/TAB [[1, 'a', 2, 3]]")
    with pytest.raises(UsageError, match=r"takes float32 numbers, got strings \(e\.g\. 'x'\)"):
        user_shell.run_line_magic("predict", f"{url}/v1/models/TAB np.full((2, 4), 'x')")
