"""Every demo notebook, Run All in JupyterLab in headless Chromium, checked as a person sees it.

Asserts per notebook: no error output and nothing on stderr; every widget renders (no "Loading
widget...", no "Error displaying widget"); no widget wider than a 900 px output area; no broken
image; and the widgets work after Run All: the explorer's matrix cells filter its gallery, the
compare filter changes the gallery, a mouse-drawn "1" and "7" get predictions on the drawing pad
(04 keeps its server for it, also in Notebook 7), and the widgets come back after a page
reload. Screenshots go to build/screenshots/ (docs/img/ holds a few of them).

The notebooks run with TFSERVE_MAGIC_HEADLESS=1 (small data, one epoch) and the offline MNIST
fallback. Skipped, with the reason, where chromium/chromedriver, selenium or jupyterlab are
missing; ``.ci/run`` installs them so CI always runs this set.
"""

from __future__ import annotations

import re
import time

import nbformat
import pytest

from tests.browser.jupyterlab import (
    JS_SAVE,
    REPO,
    JupyterLab,
    chrome,
)
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
from tfserve_magic._nbrun import inject_parameters

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1500)]

NOTEBOOKS = ["01_quickstart.ipynb", "02_custom_models.ipynb", "03_versions.ipynb",
             "04_draw_digit.ipynb", "05_any_client.ipynb", "06_beyond_images.ipynb"]
# notebooks whose widgets are used after Run All get their parameters overridden like this
PARAMETERS = {"04_draw_digit.ipynb": {"KEEP_SERVING": True}}

# strokes in pad pixels (280x280): a "1" and a "7" as a person draws them
ONE = [[(145, 45), (140, 140), (136, 235)]]
SEVEN = [[(70, 60), (140, 58), (210, 60), (170, 140), (125, 235)]]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def lab(chromium_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-root")
    scratch = tmp_path_factory.mktemp("lab-scratch")
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
        if name in PARAMETERS:
            inject_parameters(nb, PARAMETERS[name])
        nbformat.write(nb, root / name)
    registry = scratch / "registry"
    registry.mkdir()
    server = JupyterLab(root, scratch, {
        "TFSERVE_MAGIC_HEADLESS": "1", "TFSERVE_MAGIC_OFFLINE": "1",
        "TFSERVE_MAGIC_HOME": str(registry)})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chromium_paths, tmp_path_factory):
    driver = chrome(*chromium_paths, tmp_path_factory.mktemp("chromium-profile"))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


# ------------------------------------------------------------------ helpers
def draw(driver, canvas, strokes) -> None:
    """Press, move in small steps and release the mouse over the pad, like a hand."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    time.sleep(0.3)
    width, height = canvas.size["width"], canvas.size["height"]
    for stroke in strokes:
        chain = ActionChains(driver, duration=10)
        x, y = stroke[0]
        chain.move_to_element_with_offset(canvas, int(x - width / 2), int(y - height / 2))
        chain.click_and_hold()
        for nx, ny in stroke[1:]:
            steps = max(1, int(max(abs(nx - x), abs(ny - y)) // 12))
            for k in range(1, steps + 1):
                tx, ty = x + (nx - x) * k / steps, y + (ny - y) * k / steps
                px, py = x + (nx - x) * (k - 1) / steps, y + (ny - y) * (k - 1) / steps
                chain.move_by_offset(int(round(tx)) - int(round(px)),
                                     int(round(ty)) - int(round(py)))
            x, y = nx, ny
        chain.release()
        chain.perform()


# elements inside a widget that show a scrollbar: overflow auto/scroll and more content than room
JS_SCROLLBARS = """
const found = [];
for (const el of [arguments[0], ...arguments[0].querySelectorAll('*')]) {
  const style = getComputedStyle(el);
  const scrolls = (value) => value === 'auto' || value === 'scroll';
  const down = scrolls(style.overflowY) && el.scrollHeight > el.clientHeight + 1;
  const across = scrolls(style.overflowX) && el.scrollWidth > el.clientWidth + 1;
  if (down || across) {
    found.push(`${el.tagName.toLowerCase()}.${[...el.classList].join('.')}: `
      + `${down ? 'vertical ' : ''}${across ? 'horizontal ' : ''}scrollbar, content `
      + `${el.scrollWidth}x${el.scrollHeight} px in ${el.clientWidth}x${el.clientHeight} px`);
  }
}
return found;
"""


def check_no_scrollbars(driver, element, what: str) -> None:
    found = driver.execute_script(JS_SCROLLBARS, element)
    assert not found, f"{what} shows scrollbars: " + "; ".join(found)


def top_class(driver, scope) -> str:
    element = scope.find_elements("css selector", ".tfserve-top")
    return element[0].text.strip() if element else ""


# ------------------------------------------------------------------ the notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_run_all_in_jupyterlab(name, lab, browser, shots):
    stem = name.split("_")[0]
    open_notebook(browser, lab, name)
    state = run_all(browser, name)
    found = problems(state)
    browser.save_screenshot(str(shots / f"{stem}_run_all.png"))
    assert not found, f"{name} shows errors or stderr after Run All:\n" + "\n".join(found)
    for cell in state["cells"]:  # each status once: "Serving MLP v1 at ..." is not repeated
        if cell["source"].lstrip().startswith("%tfserve start"):
            said = [o for o in cell["outputs"] if "Serving " in str(o.get("data", o.get("text")))]
            assert len(said) <= 1, f"{name}: {cell['source']!r} says it twice: {said}"
            if name == "04_draw_digit.ipynb":
                shoot(browser.find_elements("css selector", ".jp-Notebook .jp-Cell")[
                    cell["index"]], shots / f"{stem}_start_cell.png")
    expected = widget_outputs(state)
    seen = widgets_seen(browser, expected, name)
    check_seen(seen, name)

    if name == "01_quickstart.ipynb":
        check_explorer(browser, shots)
    elif name == "03_versions.ipynb":
        check_compare(browser, shots)
    elif name == "04_draw_digit.ipynb":
        check_drawing(browser, shots)

    if expected:  # the widgets come back after a page reload (live kernel, saved notebook)
        browser.execute_script(JS_SAVE)
        open_notebook(browser, lab, name, reset=False)
        again = widgets_seen(browser, expected, f"{name} after a reload")
        check_seen(again, f"{name} after a reload")
        assert again["rendered"] == expected
        if name == "04_draw_digit.ipynb":
            browser.save_screenshot(str(shots / f"{stem}_after_reload.png"))
    lab.shutdown_kernels()  # the kernel's model servers stop with it


def check_explorer(driver, shots) -> None:
    explorer = css(driver, ".tfserve-explorer")[0]
    shoot(explorer, shots / "01_explorer.png")
    cells = css(driver, ".tfserve-explorer .tfserve-cell")
    assert len(cells) == 100, "a 10x10 confusion matrix of buttons"
    counts = {}
    for cell in cells:
        match = re.match(r"true (\d+), predicted (\d+): (\d+)", cell.get_attribute("title"))
        counts[(int(match[1]), int(match[2]))] = (int(match[3]), cell)
        assert cell.text.strip() == match[3], "every cell shows its count"
    off = [(n, k) for k, (n, _) in counts.items() if k[0] != k[1] and n]
    t, p = max(off)[1] if off else (1, 1)
    n, button = counts[(t, p)]
    button.click()
    summary = css(driver, ".tfserve-explorer .tfserve-summary")[0]
    wait_for(lambda: f"showing {n} of" in summary.text, 20, f"the {t}->{p} cell to filter")
    assert f"true {t}, pred {p}" in summary.text
    tiles = [e for e in css(driver, ".tfserve-explorer .tfserve-tile") if e.is_displayed()]
    assert len(tiles) == min(n, 16)
    for tile in tiles:
        assert f"pred {p} / true {t}" in tile.text
    shoot(explorer, shots / "01_explorer_cell.png")


def check_compare(driver, shots) -> None:
    from selenium.webdriver.support.ui import Select

    compare = css(driver, ".tfserve-compare")[0]
    shoot(compare, shots / "03_compare.png")
    rows = [r.text for r in css(driver, ".tfserve-compare-table tr")]
    row = next(r for r in rows if r.startswith("right where they disagree"))
    a_right = int(row.split()[-2])
    pages = css(driver, ".tfserve-compare .tfserve-pages")[0]
    Select(css(driver, ".tfserve-compare-show select")[0]).select_by_visible_text(
        "A right, B wrong")
    wait_for(lambda: f"({a_right} shown)" in pages.text, 20, "the compare filter to apply")
    shoot(compare, shots / "03_compare_filtered.png")


def check_drawing(driver, shots) -> None:
    pad = css(driver, ".tfserve-draw")[0]  # the one `%tfserve draw` shows for the user
    canvas = pad.find_element("css selector", "canvas.tfserve-draw-pad")
    inner = (canvas.get_property("clientWidth"), canvas.get_property("clientHeight"))
    assert inner == (280, 280), "the pad keeps its own size (no CSS stretching)"
    clear = next(b for b in pad.find_elements("css selector", "button") if b.text == "Clear")
    shoot(pad, shots / "04_draw_ready.png")  # after Run All, before drawing: no broken image
    check_no_scrollbars(driver, pad, "the drawing pad after Run All")
    predicted = {}
    for digit, strokes in (("1", ONE), ("7", SEVEN)):
        clear.click()
        wait_for(lambda: top_class(driver, pad) == "", 20, "the pad to clear")
        draw(driver, canvas, strokes)
        text = wait_for(lambda: top_class(driver, pad), 60,
                        f"a prediction for the drawn {digit}")
        status = pad.find_element("css selector", ".tfserve-status").text
        assert "Error" not in status, status
        predicted[digit] = text.split()[0]
        shoot(pad, shots / f"04_draw_{digit}.png")
        # the result column (model input, top class, per-class bars) fits without scrolling
        check_no_scrollbars(driver, pad, f"the drawing pad with a prediction for {digit}")
    # the offline fallback model (scikit-learn's 8x8 digits, one epoch) is too weak for the
    # classes to be asserted; the prediction itself, after Run All, is what must work
    assert all(v.isdigit() for v in predicted.values()), predicted
    print(f"drawn digits predicted as {predicted}")


def test_drawing_pad_in_notebook_7(lab, browser, shots):
    """The same notebook in Notebook 7: Run All, then a mouse-drawn digit gets a prediction."""
    pytest.importorskip("notebook", reason="Notebook 7 is not installed (pip install notebook)")
    name = "04_draw_digit.ipynb"
    open_notebook(browser, lab, name, app="notebooks")
    state = run_all(browser, name)
    found = problems(state)
    assert not found, "Notebook 7 shows errors or stderr after Run All:\n" + "\n".join(found)
    check_seen(widgets_seen(browser, widget_outputs(state), name), f"{name} in Notebook 7")
    pad = css(browser, ".tfserve-draw")[0]
    canvas = pad.find_element("css selector", "canvas.tfserve-draw-pad")
    draw(browser, canvas, ONE)
    assert wait_for(lambda: top_class(browser, pad), 60, "a prediction in Notebook 7")
    shoot(pad, shots / "04_draw_notebook7.png")
    check_no_scrollbars(browser, pad, "the drawing pad in Notebook 7")
    browser.execute_script(JS_SAVE)
    lab.shutdown_kernels()
