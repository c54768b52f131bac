"""What the browser tests do with a notebook page: open it, Run All, read its state, take
screenshots (shared by test_notebooks_in_browser.py and test_views_in_browser.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.browser.jupyterlab import (
    JS_READY,
    JS_RUN_ALL,
    JS_SEEN,
    JS_STATE,
    OUTPUT_AREA_PX,
    REPO,
)

SCREENSHOTS = REPO / "build" / "screenshots"
RUN_TIMEOUT_S = 420  # one notebook's Run All


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")


def open_notebook(driver, lab, name: str, reset: bool = True, app: str = "lab/tree") -> None:
    """Open ``name`` in JupyterLab (``app="lab/tree"``) or Notebook 7 (``app="notebooks"``)."""
    query = f"?token={lab.token}" + ("&reset" if reset and app == "lab/tree" else "")
    driver.get(f"{lab.url}/{app}/{name}{query}")
    wait_for(lambda: driver.execute_script(JS_READY), 180, f"{name} to open with an idle kernel")


def run_all(driver, name: str) -> dict:
    """Run All, wait until every code cell ran (or one failed); return the notebook's state."""
    driver.execute_script(JS_RUN_ALL)
    time.sleep(2)

    def done():
        state = driver.execute_script(JS_STATE)
        failed = any(o.get("output_type") == "error" for c in state["cells"] for o in c["outputs"])
        finished = state["kernel"] == "idle" and all(c["count"] for c in state["cells"])
        return state if failed or finished else None

    return wait_for(done, RUN_TIMEOUT_S, f"Run All of {name}", interval=2)


def problems(state: dict) -> list[str]:
    """Error outputs and stderr text, each with the cell it came from."""
    found = []
    for cell in state["cells"]:
        for out in cell["outputs"]:
            if out.get("output_type") == "error":
                found.append(f"cell {cell['index']} ({cell['source']!r}): error "
                             f"{out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                found.append(f"cell {cell['index']} ({cell['source']!r}): stderr {text[:300]!r}")
    return found


def widgets_seen(driver, expected: int, what: str) -> dict:
    def settled():
        seen = driver.execute_script(JS_SEEN)
        if seen["errors"]:
            return seen
        return seen if not seen["loading"] and seen["rendered"] >= expected else None

    return wait_for(settled, 90, f"{expected} widget(s) to render in {what}")


def widget_outputs(state: dict) -> int:
    return sum("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in state["cells"] for o in c["outputs"])


def check_seen(seen: dict, name: str) -> None:
    assert not seen["errors"], f"{name}: {seen['errors']}"
    assert not seen["loading"], f"{name}: a widget stays at 'Loading widget...'"
    assert seen["rendered"] == seen["views"], f"{name}: {seen}"
    too_wide = [w for w in seen["widths"] if w > OUTPUT_AREA_PX]
    assert not too_wide, f"{name}: widgets wider than {OUTPUT_AREA_PX} px: {seen['widths']}"
    assert seen["scrolls"] == 0, f"{name}: an output scrolls sideways"
    assert seen["broken"] == 0, f"{name}: {seen['broken']} broken image(s)"


def shoot(element, path: Path) -> None:
    element.parent.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)
    time.sleep(0.5)
    element.screenshot(str(path))


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)
