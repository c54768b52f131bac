"""Fixtures of the browser tests."""

from __future__ import annotations

import pytest

from tests.browser.jupyterlab import find_chromium


@pytest.fixture(scope="module")
def chromium_paths():
    browser, driver, why = find_chromium()
    if why:
        pytest.skip(why)
    for module in ("selenium", "jupyterlab"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install "
                                           f"'tfserve-magic[test]')")
    return browser, driver


