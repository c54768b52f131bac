"""VersionCompare (and the explorer's table view) against one real server holding two trained
MNIST versions with labels, plus a tabular model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.fixtures.server import start_server
from tfserve_magic.client import Client
from tfserve_magic.widgets import DrawDigit, PredictionExplorer, VersionCompare

N = 200


@pytest.fixture(scope="module")
def two_version_server(mlp_export, mnist, tmp_path_factory):
    """MLP v1 (the shared trained MLP) and v2 (a differently trained, weaker linear model),
    labelled stable=1 and canary=2, and TAB, a classifier of 4 numeric features."""
    import keras

    from tfserve_magic.export import export_model

    root = tmp_path_factory.mktemp("widgets-compare")
    base = root / "MLP"
    shutil.copytree(mlp_export / "1", base / "1")
    keras.utils.set_random_seed(1)
    linear = keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    linear.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    linear.fit(mnist.x_train[:200], mnist.y_train[:200], batch_size=50, epochs=1, verbose=0)
    assert export_model(linear, base, version=2).version == 2

    rng = np.random.default_rng(0)
    x_tab = rng.normal(size=(400, 4)).astype(np.float32)
    y_tab = (x_tab[:, 0] > 0).astype(np.int64) + (x_tab[:, 1] > 0.5)
    tabular = keras.Sequential(
        [keras.Input(shape=(4,)), keras.layers.Dense(3, activation="softmax")]
    )
    tabular.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    tabular.fit(x_tab, y_tab, batch_size=50, epochs=3, verbose=0)
    export_model(tabular, root / "TAB")

    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "MLP" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { all {} }\n"
        '    version_labels { key: "stable" value: 1 }\n'
        '    version_labels { key: "canary" value: 2 } }\n'
        f'  config {{ name: "TAB" base_path: "{root / "TAB"}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    server = start_server(config_file=config, workdir=root)
    server.tabular = (x_tab[:60], y_tab[:60])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(two_version_server):
    with Client(two_version_server.url, "MLP", timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def data(mnist):
    return mnist.x_test[:N], mnist.y_test[:N]


@pytest.fixture(scope="module")
def probabilities(client, data):
    """Each version's probabilities, asked for directly."""
    return {v: np.asarray(client.predict(instances=data[0], version=v)) for v in (1, 2)}


@pytest.fixture(scope="module")
def direct(probabilities):
    """Each version's predicted classes."""
    return {v: p.argmax(axis=1) for v, p in probabilities.items()}


def _check_numbers(widget, y, pred_a, pred_b):
    r = widget.result
    assert r.n == N and r.task == "multiclass"
    assert r.accuracy_a == pytest.approx(np.mean(pred_a == y))
    assert r.accuracy_b == pytest.approx(np.mean(pred_b == y))
    assert r.agreement == pytest.approx(np.mean(pred_a == pred_b))
    # the disagreements, those where the probabilities differ most first
    assert sorted(r.disagreements.tolist()) == np.flatnonzero(pred_a != pred_b).tolist()
    pa, pb = widget.reading_a.probabilities, widget.reading_b.probabilities
    gap = 0.5 * np.abs(pa - pb).sum(axis=1)[r.disagreements]
    assert np.all(np.diff(gap) <= 1e-6)
    assert sorted(r.a_right_b_wrong.tolist()) == np.flatnonzero(
        (pred_a == y) & (pred_b != y)).tolist()
    assert sorted(r.b_right_a_wrong.tolist()) == np.flatnonzero(
        (pred_b == y) & (pred_a != y)).tolist()
    assert r.error_a == pytest.approx(1 - np.mean(pred_a == y))
    assert r.better == ("A" if np.mean(pred_a == y) > np.mean(pred_b == y) else "B")
    assert r.latency_a_s > 0 and r.latency_b_s > 0


def test_two_versions_numbers_equal_a_direct_computation(client, data, direct):
    widget = VersionCompare(client, *data, a=1, b=2)
    assert widget.status.kind == "ok", widget.status.value
    y = data[1]
    _check_numbers(widget, y, direct[1], direct[2])
    assert len(widget.result.disagreements) > 0  # differently trained: they do disagree
    assert widget.result.accuracy_a != widget.result.accuracy_b
    table = widget.table.value
    assert f"{widget.result.accuracy_a:.2%}" in table and f"{widget.result.accuracy_b:.2%}" in table
    assert f"they disagree on {len(widget.result.disagreements)} of {N}" in table
    # latency of each, from the client's Prediction.latency_s
    series = widget.latency.summary()
    assert series["A: v1"]["count"] == 1 and series["B: v2"]["count"] == 1
    widget.run_button.click()  # run again: more latency samples, same numbers
    assert len(widget.latencies["a"]) == 2 and "(n=2)" in widget.table.value
    _check_numbers(widget, y, direct[1], direct[2])


def test_gallery_shows_the_disagreements(client, data, direct):
    y = data[1]
    widget = VersionCompare(client, *data, a=1, b=2, page_size=8)
    widget.raise_errors = True
    disagree = widget.result.disagreements
    assert widget.gallery.items.tolist() == disagree.tolist()
    first = int(disagree[0])
    caption = widget.gallery.tiles[0][2].value
    assert f"A {direct[1][first]} · B {direct[2][first]} / true {y[first]}" in caption
    # each side is coloured by its own correctness (A is not green where A is wrong)
    for slot, i in enumerate(disagree[:8]):
        caption = widget.gallery.tiles[slot][2].value
        for side, pred in (("A", direct[1][i]), ("B", direct[2][i])):
            color = "#1a7f37" if pred == y[i] else "#c62828"
            assert f'<span style="color:{color}">{side} {pred}</span>' in caption
    page = widget.summary_html(rows=5)  # the static copy for saved notebooks
    assert page.count("data:image/png;base64,") == 5 and "A is better" in page or \
        "B is better" in page
    assert f"disagreements</b> (first 5 of {len(disagree)})" in page
    assert f"{widget.result.accuracy_a:.2%}" in page
    bundle = widget._repr_mimebundle_()  # a saved notebook shows the summary, not a placeholder
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "disagreements" in bundle["text/html"] and bundle["text/plain"]
    widget.select_disagreements("b_right")
    assert widget.gallery.items.tolist() == widget.result.b_right_a_wrong.tolist()
    widget.show_choice.value = "a_right"  # the dropdown does the same
    assert widget.gallery.items.tolist() == widget.result.a_right_b_wrong.tolist()
    with pytest.raises(ValueError, match="show must be one of"):
        widget.select_disagreements("everything")


def test_labels_urls_other_clients_and_model_at_version(two_version_server, client, data, direct):
    y = data[1]
    by_label = VersionCompare(client, *data, a="stable", b="canary")
    _check_numbers(by_label, y, direct[1], direct[2])
    assert "label stable" in by_label.header.value
    url = two_version_server.url
    other = Client(f"{url}/v1/models/MLP/versions/2", timeout=30)  # a second client
    with_client = VersionCompare(f"{url}/v1/models/MLP", *data, a="1", b=other)
    _check_numbers(with_client, y, direct[1], direct[2])
    sibling = VersionCompare(client, *data, a="MLP@1", b="MLP:canary")
    _check_numbers(sibling, y, direct[1], direct[2])
    latest = VersionCompare(client, *data, a="latest", b=1)  # latest is v2 here
    _check_numbers(latest, y, direct[2], direct[1])


def test_a_missing_version_is_reported_in_the_status_line(client, data):
    widget = VersionCompare(client, *data, a=1, b=9)
    assert widget.result is None
    assert widget.status.text.startswith("Error: B (v9): HTTP 404")
    with pytest.raises(ValueError, match="versions are positive"):
        VersionCompare(client, *data, a=0, b=1)


def test_explorer_lists_tabular_inputs_in_a_table(two_version_server):
    x, y = two_version_server.tabular
    with Client(two_version_server.url, "TAB", timeout=30) as tab:
        expected = np.asarray(tab.predict(instances=x)).argmax(axis=1)
        widget = PredictionExplorer(tab, x, y, page_size=10)
    assert widget.status.kind == "ok", widget.status.value
    assert widget.gallery.images is None and widget.gallery.tiles == []
    table = widget.gallery.grid.value
    assert table.count("<tr>") == 11  # header + one page
    assert f"pred {expected[0]} / true {y[0]}" in table
    assert f"{x[0, 0]:.4g}" in table
    assert np.array_equal(widget.confusion_matrix().sum(axis=0), np.bincount(expected, minlength=3))
    widget.errors_only.value = True
    assert widget.visible_indices().tolist() == np.flatnonzero(expected != y).tolist()


def test_magics_build_the_widgets(shell, two_version_server, data):
    url = f"{two_version_server.url}/v1/models/MLP"
    shell.user_ns.update(x_test=data[0], y_test=data[1])
    widget = shell.run_line_magic("tfserve", f"compare {url} x_test y_test --a 1 --b 2 -n 50")
    assert isinstance(widget, VersionCompare) and widget.result.n == 50
    explorer = shell.run_line_magic("tfserve", f"explore {url} x_test y_test --version 1 -n 40")
    assert isinstance(explorer, PredictionExplorer) and len(explorer.y_pred) == 40
    assert explorer.status.kind == "ok"
    drawer = shell.run_line_magic("tfserve", f"draw {url} --x x_test --y y_test")
    assert isinstance(drawer, DrawDigit) and len(drawer.images) == N
    assert drawer.input_shape == (28, 28, 1)
