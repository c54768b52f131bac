"""The explorer of every task kind and the server monitor, in JupyterLab and Notebook 7.

A notebook written here (the models are trained and exported by the test, so the kernel imports
no TensorFlow) starts a server with its metrics endpoint from the notebook, shows the text,
regression, tabular and multi-label explorers and the monitor, and is Run All in headless
Chromium: every widget renders within 900 px without errors, a regression row click shows its
input, the binary threshold slider moves precision/recall, the monitor refreshes by itself.
Screenshots: build/screenshots/views_*.png (docs/img/ holds copies).
"""

from __future__ import annotations

import json
import time

import nbformat
import numpy as np
import pytest

from tests.browser.jupyterlab import JupyterLab, chrome
from tests.browser.pages import (
    SCREENSHOTS,
    check_seen,
    css,
    open_notebook,
    problems,
    run_all,
    shoot,
    wait_for,
    widget_outputs,
    widgets_seen,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def browser(chromium_paths, tmp_path_factory):
    """Headless Chromium whose page counts as focused: JupyterLab's current widget follows
    focus, and a headless window has none (recent Chromium), so nothing would ever be
    "current" (``Emulation.setFocusEmulationEnabled``)."""
    driver = chrome(*chromium_paths, tmp_path_factory.mktemp("chromium-profile"))
    driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})
    driver.set_script_timeout(60)
    yield driver
    driver.quit()

NAME = "views.ipynb"
CELLS = [
    "import json, numpy as np\n"
    "from tfserve_magic.client import Client\n"
    "from tfserve_magic.widgets import PredictionExplorer\n"
    "texts = json.load(open('texts.json'))\n"
    "d = {k: v for k, v in np.load('data.npz').items()}\n"
    "labels, x_reg, y_reg, x_ml, y_ml = (d[k] for k in ('labels', 'x_reg', 'y_reg', 'x_ml', "
    "'y_ml'))\n"
    "tab_x = {k: d['tab_' + k] for k in ('age', 'fare', 'sex')}\n"
    "tab_y = d['tab_y']\n"
    "%load_ext tfserve_magic",
    "server = %tfserve start views --config models.config -- "
    "--monitoring_config_file=monitoring.config\nurl = server.url",
    "%tfserve explore {url}/v1/models/text texts labels",
    "%tfserve explore {url}/v1/models/reg x_reg y_reg",
    "%tfserve explore {url}/v1/models/tab tab_x tab_y",
    "PredictionExplorer(f'{url}/v1/models/ml', x_ml, y_ml, "
    "class_names=['sports', 'politics', 'science'])",
    "for n in (1, 4, 16):\n"
    "    Client(url, 'reg').predict(instances=x_reg[:n])\n"
    "%tfserve monitor {url} --interval 1",
]


@pytest.fixture(scope="module")
def lab(chromium_paths, tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tests.helpers import task_models as tm
    from tfserve_magic.export import export_model

    root = tmp_path_factory.mktemp("views-root")
    scratch = tmp_path_factory.mktemp("views-scratch")
    data = {}
    for name, build in (("text", tm.text_classifier), ("reg", tm.regression_model),
                        ("tab", tm.tabular_model), ("ml", tm.multilabel_model)):
        model, x, y = build()
        export_model(model, root / "models" / name)
        data[name] = (x, y)
    (root / "texts.json").write_text(json.dumps(data["text"][0]))
    np.savez(root / "data.npz", labels=data["text"][1], x_reg=data["reg"][0],
             y_reg=data["reg"][1], x_ml=data["ml"][0], y_ml=data["ml"][1], tab_y=data["tab"][1],
             **{f"tab_{k}": v for k, v in data["tab"][0].items()})
    (root / "models.config").write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / "models" / n}" '
        'model_platform: "tensorflow" }\n' for n in data) + "}\n")
    (root / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                       "language": "python"}
    nbformat.write(notebook, root / NAME)
    registry = scratch / "registry"
    registry.mkdir()
    server = JupyterLab(root, scratch, {"TFSERVE_MAGIC_HOME": str(registry)})
    yield server
    server.stop()


def run_and_check(driver, lab, app: str, where: str) -> None:
    open_notebook(driver, lab, NAME, app=app)
    state = run_all(driver, NAME)
    found = problems(state)
    assert not found, f"{where}: errors or stderr after Run All:\n" + "\n".join(found)
    expected = widget_outputs(state)
    assert expected == 5, state
    check_seen(widgets_seen(driver, expected, where), where)


def test_views_and_monitor_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    run_and_check(browser, lab, "lab/tree", "JupyterLab")
    explorers = css(browser, ".tfserve-explorer")
    assert len(explorers) == 4
    text, reg, tab, ml = explorers

    # text: the sentences in the gallery, the whole text on hover, the threshold slider
    sentences = text.find_elements("css selector", ".tfserve-text")
    assert sentences and all(s.get_attribute("title") for s in sentences)
    numbers = text.find_element("css selector", ".tfserve-threshold")
    before = numbers.text
    handle = numbers.find_element("css selector", ".noUi-handle, .ui-slider-handle")
    ActionChains(browser).drag_and_drop_by_offset(handle, -25, 0).perform()
    wait_for(lambda: numbers.text != before, 30, "the threshold to change precision/recall")
    shoot(text, SCREENSHOTS / "views_text.png")

    # regression: a click on a worst-error row shows that input
    row = reg.find_elements("css selector", ".tfserve-row-button")[0]
    index = row.text.strip()
    row.click()
    detail = wait_for(lambda: [e for e in reg.find_elements("css selector", ".tfserve-detail")
                               if f"input {index}" in e.text], 30, "the clicked row's input")
    assert "true" in detail[0].text and "error" in detail[0].text
    shoot(reg, SCREENSHOTS / "views_regression.png")

    # tabular: feature names and values per example
    rows = tab.find_elements("css selector", ".tfserve-features")
    assert rows and all("age" in r.text and "fare" in r.text for r in rows)
    shoot(tab, SCREENSHOTS / "views_tabular.png")

    table = ml.find_element("css selector", ".tfserve-label-table")
    assert all(name in table.text for name in ("sports", "politics", "science"))
    shoot(ml, SCREENSHOTS / "views_multilabel.png")

    # the monitor refreshes by itself: 3 + requests the explorers sent
    monitor = css(browser, ".tfserve-monitor")[0]
    table = monitor.find_element("css selector", ".tfserve-monitor-table")
    assert "reg" in table.text and "req/s" in table.text
    status = monitor.find_element("css selector", ".tfserve-status")
    first = status.text
    wait_for(lambda: status.text != first and "read at" in status.text, 30,
             "the monitor to refresh")
    wait_for(lambda: monitor.find_elements("css selector", "img"), 30, "the req/s plot")
    shoot(monitor, SCREENSHOTS / "views_monitor.png")
    lab.shutdown_kernels()


def test_views_in_notebook_7(lab, browser):
    pytest.importorskip("notebook", reason="Notebook 7 is not installed (pip install notebook)")
    run_and_check(browser, lab, "notebooks", "Notebook 7")
    reg = css(browser, ".tfserve-regression")[0]
    reg.find_elements("css selector", ".tfserve-row-button")[1].click()
    wait_for(lambda: reg.find_elements("css selector", ".tfserve-detail"), 30, "a row's input")
    time.sleep(0.5)
    shoot(css(browser, ".tfserve-explorer")[1], SCREENSHOTS / "views_regression_notebook7.png")
    lab.shutdown_kernels()
