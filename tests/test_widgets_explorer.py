"""PredictionExplorer against the real server and the trained MNIST MLP (headless)."""

from __future__ import annotations

import numpy as np
import pytest

from tfserve_magic.client import Client
from tfserve_magic.widgets import PredictionExplorer
from tfserve_magic.widgets.explorer import ANY

N = 240
PAGE = 24


@pytest.fixture(scope="module")
def client(mlp_server):
    with Client(mlp_server.url, "MLP", timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def data(mnist):
    return mnist.x_test[:N], mnist.y_test[:N]


@pytest.fixture(scope="module")
def direct(client, data):
    """The predictions computed directly, without the widget."""
    return np.asarray(client.predict(instances=data[0])).argmax(axis=1)


@pytest.fixture
def explorer(client, data):
    widget = PredictionExplorer(client, *data, page_size=PAGE)
    widget.raise_errors = True
    return widget


def test_predictions_accuracy_and_confusion_matrix_equal_a_direct_computation(
    explorer, data, direct
):
    from sklearn.metrics import confusion_matrix

    y = data[1]
    assert explorer.status.kind == "ok", explorer.status.value
    assert np.array_equal(explorer.y_pred, direct)
    assert explorer.accuracy() == pytest.approx(np.mean(direct == y))
    assert explorer.accuracy() > 0.5  # the model learned something: errors are the minority
    counts = explorer.confusion_matrix()
    assert np.array_equal(counts, confusion_matrix(y, direct, labels=range(10)))
    for k, acc in explorer.per_class_accuracy().items():
        assert acc == pytest.approx(np.mean(direct[y == k] == k))
    # what the user sees
    correct = int(np.sum(direct == y))
    assert f"accuracy {correct / N:.2%}</b> ({correct}/{N})" in explorer.summary.value
    # one matrix: a heat map of buttons (the counts), per-class accuracy at the end of each row
    for (t, p), button in explorer.cell_buttons.items():
        assert button.description == str(counts[t, p])
        if counts[t, p] == 0:
            assert button.style.button_color == "#ffffff"
    assert explorer.cell_buttons[(1, 1)].style.button_color.startswith("#")
    assert explorer.cell_buttons[(1, 1)].style.button_color != "#ffffff"
    for k, cell in explorer.recall_cells.items():
        row = counts[k].sum()
        assert (f"{counts[k, k] / row:.0%}" if row else "–") in cell.value
    assert f"accuracy {correct / N:.1%}" in explorer.matrix_title.value
    assert not hasattr(explorer, "matrix_image")  # no second, unreadable matrix picture
    assert explorer.latency.summary()["predict"]["count"] == 1


def test_gallery_pages_through_all_inputs_with_captions(explorer, data, direct):
    y = data[1]
    gallery = explorer.gallery
    assert gallery.n_pages == -(-N // PAGE)
    seen = []
    for page in range(gallery.n_pages):
        assert gallery.page == page
        indices = explorer.page_indices()
        seen.extend(indices.tolist())
        for slot, i in enumerate(indices):
            tile, image, caption = gallery.tiles[slot]
            assert f"pred {direct[i]} / true {y[i]}" in caption.value
            assert ("✗" in caption.value) == (direct[i] != y[i])
            assert tile.layout.display != "none"
            assert bytes(image.value).startswith(b"\x89PNG")
        explorer.next_page()
    assert seen == list(range(N))
    explorer.next_page()  # past the end: stays on the last page
    assert gallery.page == gallery.n_pages - 1
    explorer.prev_page()
    assert gallery.page == gallery.n_pages - 2
    gallery.prev_button.click()
    assert gallery.page_box.value == gallery.n_pages - 2  # 1-based widget value


def test_filters_select_errors_and_classes(explorer, data, direct):
    y = data[1]
    errors = np.flatnonzero(direct != y)
    assert len(errors) > 0
    explorer.next_page()
    explorer.errors_only.value = True  # what ticking the box does
    assert explorer.visible_indices().tolist() == errors.tolist()
    assert explorer.gallery.page == 0  # a new filter starts at page 1
    shown = explorer.page_indices()
    assert shown.tolist() == errors[:PAGE].tolist()
    assert all("✗" in explorer.gallery.tiles[s][2].value for s in range(len(shown)))
    hidden = explorer.gallery.tiles[len(shown):]
    assert all(tile.layout.display == "none" for tile, _, _ in hidden)
    assert "only errors" in explorer.summary.value

    explorer.set_filter(errors_only=False, true_class=3)
    assert explorer.visible_indices().tolist() == np.flatnonzero(y == 3).tolist()
    explorer.set_filter(true_class=ANY, pred_class=5)
    assert explorer.visible_indices().tolist() == np.flatnonzero(direct == 5).tolist()
    explorer.show_all_button.click()
    assert len(explorer.visible_indices()) == N
    with pytest.raises(ValueError, match="class 12"):
        explorer.set_filter(true_class=12)


def test_confusion_matrix_cells_select_what_the_gallery_shows(explorer, data, direct):
    y = data[1]
    counts = explorer.confusion_matrix()
    t, p = np.unravel_index(np.argmax(counts - np.diag(np.diag(counts))), counts.shape)
    explorer.select_cell(int(t), int(p))
    expected = np.flatnonzero((y == t) & (direct == p))
    assert len(expected) == counts[t, p] > 0
    assert explorer.visible_indices().tolist() == expected.tolist()
    assert (explorer.true_class.value, explorer.pred_class.value) == (t, p)
    # clicking a cell's button does the same
    explorer.cell_buttons[(2, 2)].click()
    assert explorer.visible_indices().tolist() == np.flatnonzero((y == 2) & (direct == 2)).tolist()
    assert f"showing {counts[2, 2]} of {N}" in explorer.summary.value
    framed = [k for k, b in explorer.cell_buttons.items() if "#ff7f0e" in b.layout.border]
    assert framed == [(2, 2)]  # the chosen cell is outlined


def test_class_names_label_captions_and_filters(client, data, direct):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    widget = PredictionExplorer(client, data[0][:30], data[1][:30], class_names=names)
    first = widget.gallery.tiles[0][2].value
    assert f"pred {names[direct[0]]} / true {names[data[1][0]]}" in first
    assert ("7: seven", 7) in widget.true_class.options
    widget.select_cell(7, 7)
    assert "true seven, pred seven" in widget.summary.value


def test_errors_show_in_the_status_line(mlp_server, data):
    widget = PredictionExplorer(mlp_server.url + "/v1/models/MLP", *data, version=7, timeout=10)
    assert widget.status.kind == "error"
    assert widget.status.value.startswith('<span style="color:#c62828">Error: HTTP 404')
    assert widget.y_pred is None
    widget.run_button.click()  # the click handler reports again rather than raising
    assert "Error: HTTP 404" in widget.status.value
    with pytest.raises(ValueError, match="4 labels for 2 inputs"):
        PredictionExplorer(mlp_server.url + "/v1/models/MLP", data[0][:2], data[1][:4])


def test_a_saved_notebook_gets_the_numbers_matrix_and_first_errors(explorer, data, direct):
    y = data[1]
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live view stays first
    page = bundle["text/html"]
    correct = int(np.sum(direct == y))
    assert f"accuracy {correct / N:.2%}</b> ({correct}/{N})" in page
    assert "Confusion matrix" in page and "first errors" in page
    wrong = np.flatnonzero(direct != y)[:8]
    assert page.count("data:image/png;base64") == len(wrong)  # each error's thumbnail
    assert f"pred {direct[wrong[0]]} / true {y[wrong[0]]}" in page
    assert "accuracy" in bundle["text/plain"] and "<" not in bundle["text/plain"]


def test_labels_given_as_class_names(client, data, direct):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    as_names = [names[k] for k in data[1][:30]]
    widget = PredictionExplorer(client, data[0][:30], as_names, class_names=names)
    assert widget.status.kind == "ok", widget.status.text
    assert widget.y.tolist() == data[1][:30].tolist()
    wrong = PredictionExplorer(client, data[0][:3], ["zero", "ten", "one"], class_names=names)
    assert wrong.status.kind == "error" and "'ten'" in wrong.status.text
