"""The explorer for every task kind against small real Keras models served by the real server:
a text classifier (strings [-1, 1] -> TextVectorization -> sigmoid), a regression, a tabular
model with named inputs and a multi-label model; numbers checked against numpy/scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from IPython.core.error import UsageError  # noqa: E402

from tfserve_magic.client import Client  # noqa: E402
from tfserve_magic.widgets import PredictionExplorer  # noqa: E402
from tfserve_magic.widgets.explorer import ANY  # noqa: E402

MODELS = ("text", "reg", "tab", "ml")


@pytest.fixture(scope="module")
def task_server(tmp_path_factory):
    """One server for the four models, with its Prometheus endpoint on; yields
    ``(server, {name: (x, y)})``."""
    from tests.fixtures.server import start_server
    from tests.helpers import task_models as tm
    from tfserve_magic.export import export_model

    work = tmp_path_factory.mktemp("task-models")
    data = {}
    for name, build in zip(MODELS, (tm.text_classifier, tm.regression_model, tm.tabular_model,
                                    tm.multilabel_model)):
        model, x, y = build()
        export_model(model, work / name)
        data[name] = (x, y)
    config = work / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{work / n}" model_platform: "tensorflow" }}\n'
        for n in MODELS) + "}\n")
    monitoring = work / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    server = start_server(None, f"--monitoring_config_file={monitoring}", config_file=config,
                          workdir=work)
    yield server, data
    assert server.stop() == 0


def client(task_server, name):
    return Client(task_server[0].url, name, timeout=60)


def explorer(task_server, name, x=None, y=None, **kwargs):
    data_x, data_y = task_server[1][name]
    widget = PredictionExplorer(client(task_server, name), data_x if x is None else x,
                                data_y if y is None else y, **kwargs)
    widget.raise_errors = True
    assert widget.status.kind == "ok", widget.status.text
    return widget


def direct(task_server, name, instances):
    return np.asarray(client(task_server, name).predict(instances=instances), np.float64)


# ---------------------------------------------------------------------- text (binary)
def test_text_classifier_from_a_plain_list_of_sentences(task_server):
    texts, y = task_server[1]["text"]
    assert isinstance(texts, list) and isinstance(texts[0], str)
    widget = explorer(task_server, "text")  # the signature wants [-1, 1]: reshaped from metadata
    p = direct(task_server, "text", [[t] for t in texts]).reshape(-1)
    assert widget.reading.task == "binary"
    assert np.array_equal(widget.y_pred, (p >= 0.5).astype(int))
    assert widget.accuracy() == pytest.approx(np.mean((p >= 0.5) == y))
    assert widget.accuracy() > 0.7
    from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

    assert np.array_equal(widget.confusion_matrix(), confusion_matrix(y, p >= 0.5))
    # the sentences themselves in the gallery, long ones cut with the whole text on hover
    rows = widget.gallery.grid.value
    first = widget.page_indices()[0]
    assert texts[first][:40] in rows
    long = max(range(len(texts)), key=lambda i: len(texts[i]))
    assert len(texts[long]) > 110
    cell = widget.examples.cell_html(long)
    assert "…" in cell and f'title="{texts[long]}"' in cell
    # the threshold: precision, recall, F1 and the predictions follow it
    panel = widget.view
    for threshold in (0.5, 0.2, 0.8):
        panel.set_threshold(threshold)
        predicted = p >= threshold
        m = panel.metrics()
        assert m["precision"] == pytest.approx(precision_score(y, predicted, zero_division=0))
        assert m["recall"] == pytest.approx(recall_score(y, predicted))
        assert m["f1"] == pytest.approx(f1_score(y, predicted))
        assert np.array_equal(widget.y_pred, predicted.astype(int))
        assert np.array_equal(widget.confusion_matrix(), confusion_matrix(y, predicted))
        assert f"precision {m['precision']:.1%}" in panel.numbers.value
        assert bytes(panel.curve.value).startswith(b"\x89PNG")
    widget.set_filter(errors_only=True)
    assert widget.visible_indices().tolist() == np.flatnonzero((p >= 0.8) != y).tolist()
    # saved notebooks: the numbers, the matrix and the curve as static HTML
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "Confusion matrix" in bundle["text/html"] and "data:image/png" in bundle["text/html"]
    assert f"recall {m['recall']:.1%}" in bundle["text/plain"]


# ---------------------------------------------------------------------- regression
def test_regression_metrics_plots_and_worst_rows(task_server):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    x, y = task_server[1]["reg"]
    widget = explorer(task_server, "reg")
    pred = direct(task_server, "reg", x).reshape(-1)
    view = widget.view
    assert widget.reading.task == "regression"
    m = view.metrics()
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-5)
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-5)
    assert m["r2"] == pytest.approx(r2_score(y, pred), rel=1e-5)
    assert m["r2"] > 0.5  # the model learned the relation
    assert f"MAE {m['mae']:.4g}" in view.numbers.value and "R²" in widget.status.text
    worst = np.argsort(-np.abs(pred - y), kind="stable")[:8]
    assert view.worst_indices().tolist() == worst.tolist()
    assert list(view.row_buttons) == worst.tolist()
    assert bytes(view.scatter.value).startswith(b"\x89PNG")
    assert bytes(view.histogram.value).startswith(b"\x89PNG")
    plain = bytes(view.scatter.value)
    view.row_buttons[int(worst[0])].click()  # clicking a row shows its input, circles its dot
    assert view.selected == worst[0]
    assert f"input #{worst[0]}" in view.detail.value
    assert f"{x[worst[0], 0]:.4g}" in view.detail.value
    assert bytes(view.scatter.value) != plain
    html = widget._repr_mimebundle_()["text/html"]
    assert f"MAE {m['mae']:.4g}" in html and html.count("data:image/png") == 2
    with pytest.raises(ValueError, match="example 9999"):
        view.select(9999)


# ---------------------------------------------------------------------- tabular
def test_named_inputs_as_dict_dataframe_and_list_of_dicts(task_server):
    import pandas as pd

    data, y = task_server[1]["tab"]
    by_dict = explorer(task_server, "tab")
    p = direct(task_server, "tab", {k: v.reshape(-1, 1) for k, v in data.items()}).reshape(-1)
    assert by_dict.reading.task == "binary"
    assert np.array_equal(by_dict.y_pred, (p >= 0.5).astype(int))
    frame = pd.DataFrame(data)
    by_frame = explorer(task_server, "tab", x=frame)
    assert np.array_equal(by_frame.y_pred, by_dict.y_pred)
    rows = [{k: float(v[i]) for k, v in data.items()} for i in range(40)]
    by_rows = explorer(task_server, "tab", x=rows, y=y[:40])
    assert np.array_equal(by_rows.y_pred, by_dict.y_pred[:40])
    # each example a row of feature names and values; the same filters and matrix
    cell = by_dict.examples.cell_html(3)
    for name in ("age", "fare", "sex"):
        assert f"<b>{name}</b>" in cell
    assert f"{data['age'][3]:.4g}" in cell
    assert "<b>fare</b>" in by_dict.gallery.grid.value
    by_dict.set_filter(true_class=1, pred_class=0)
    assert by_dict.visible_indices().tolist() == np.flatnonzero((y == 1) & (p < 0.5)).tolist()
    assert by_dict.cell_buttons[(1, 0)].description == str(int(np.sum((y == 1) & (p < 0.5))))
    # a missing column and an extra one are named
    missing = PredictionExplorer(client(task_server, "tab"), {"age": data["age"],
                                                              "sex": data["sex"]}, y)
    assert missing.status.kind == "error" and "'fare'" in missing.status.text
    extra = PredictionExplorer(client(task_server, "tab"), {**data, "cabin": data["age"]}, y)
    assert extra.status.kind == "error" and "'cabin'" in extra.status.text


def test_explore_magic_with_a_dict_of_arrays(task_server, shell):
    data, y = task_server[1]["tab"]
    shell.user_ns.update(tab_x=data, tab_y=y, short=y[:10])
    url = f"{task_server[0].url}/v1/models/tab"
    widget = shell.run_line_magic("tfserve", f"explore {url} tab_x tab_y -n 50")
    assert len(widget.examples) == 50 and widget.status.kind == "ok"
    with pytest.raises(UsageError, match="10 labels for"):
        shell.run_line_magic("tfserve", f"explore {url} tab_x short")
    shell.user_ns["two"] = {"age": data["age"], "sex": data["sex"]}
    with pytest.raises(UsageError, match="missing column 'fare'"):
        shell.run_line_magic("tfserve", f"explore {url} two tab_y")
    with pytest.raises(UsageError, match="multiclass"):  # a sigmoid column is no multiclass
        shell.run_line_magic("tfserve", f"explore {url} tab_x tab_y --task multiclass")


def test_explore_magic_text_and_regression(task_server, shell):
    texts, y = task_server[1]["text"]
    x_reg, y_reg = task_server[1]["reg"]
    shell.user_ns.update(texts=texts, labels=y, x_reg=x_reg, y_reg=y_reg)
    base = task_server[0].url
    widget = shell.run_line_magic("tfserve", f"explore {base}/v1/models/text texts labels")
    assert widget.reading.task == "binary" and widget.view is not None
    reg = shell.run_line_magic("tfserve", f"explore {base}/v1/models/reg x_reg y_reg -n 100")
    assert reg.reading.task == "regression" and reg.view.metrics()["n"] == 100


# ---------------------------------------------------------------------- multi-label
def test_multilabel_per_label_precision_recall_and_examples(task_server):
    from sklearn.metrics import precision_score, recall_score

    from tests.helpers.task_models import LABELS

    x, y = task_server[1]["ml"]
    widget = explorer(task_server, "ml", class_names=LABELS)
    probs = direct(task_server, "ml", x)
    view = widget.view
    assert widget.reading.task == "multilabel"
    for threshold in (0.5, 0.3):
        view.slider.value = threshold
        active = probs >= threshold
        for k, name in enumerate(LABELS):
            m = view.per_label()[name]
            assert m["precision"] == pytest.approx(
                precision_score(y[:, k], active[:, k], zero_division=0))
            assert m["recall"] == pytest.approx(recall_score(y[:, k], active[:, k]))
            assert f"{m['recall']:.1%}" in view.table.value
    view.label_pick.value = 1
    view.which.value = "missed"
    assert view.visible_indices().tolist() == np.flatnonzero(
        (y[:, 1] == 1) & (probs[:, 1] < 0.3)).tolist()
    assert "politics" in widget._repr_mimebundle_()["text/html"]
    with pytest.raises(ValueError, match="multi-label labels"):
        PredictionExplorer(client(task_server, "ml"), x, y[:, :2]).run()


def test_filters_still_reject_unknown_classes(task_server):
    widget = explorer(task_server, "text")
    with pytest.raises(ValueError, match="class 5"):
        widget.set_filter(true_class=5)
    widget.set_filter(true_class=ANY)


# ---------------------------------------------------------------------- saved notebooks
def test_a_saved_notebook_shows_the_static_summary_through_nbconvert(task_server, tmp_path):
    """Run a notebook with nbclient, save it as JupyterLab does by default (no widget state)
    and convert it with nbconvert's HTMLExporter: the numbers and pictures are in the HTML."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbconvert import HTMLExporter

    x, y = task_server[1]["reg"]
    texts, labels = task_server[1]["text"]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "labels.npy", labels)
    (tmp_path / "texts.txt").write_text("\n".join(texts))
    url = task_server[0].url
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import numpy as np\n"
            "from tfserve_magic.widgets import LatencyView, PredictionExplorer\n"
            "x, y = np.load('x.npy'), np.load('y.npy')\n"
            "texts = open('texts.txt').read().split('\\n')\n"
            "labels = np.load('labels.npy')"),
        nbformat.v4.new_code_cell(f"PredictionExplorer('{url}/v1/models/reg', x, y)"),
        nbformat.v4.new_code_cell(f"PredictionExplorer('{url}/v1/models/text', texts, labels)"),
        nbformat.v4.new_code_cell(
            "view = LatencyView()\nfor s in (0.010, 0.020, 0.015):\n"
            "    view.record(s, series='predict')\nview"),
    ]
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            store_widget_state=False,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [cell.outputs[0]["data"] for cell in notebook.cells[1:]]
    for data in outputs:  # the live view and the static summary travel together
        assert {"application/vnd.jupyter.widget-view+json", "text/html"} <= set(data)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    pred = direct(task_server, "reg", x).reshape(-1)
    mae = float(np.mean(np.abs(pred - y)))
    assert f"MAE {mae:.4g}" in html
    assert "Worst errors" in html and "Confusion matrix" in html
    assert "precision" in outputs[1]["text/plain"] and "F1" in html
    assert html.count("static snapshot") == 3
    assert html.count("data:image/png;base64") >= 5  # 2 regression plots, PR curve, latency
    assert "predict: last 15.0 ms" in html
