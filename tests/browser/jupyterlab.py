"""Drive JupyterLab in headless Chromium (selenium + the system's chromium/chromedriver).

A real JupyterLab server on 127.0.0.1 (token, free port) whose ``python3`` kernel is this
interpreter with this checkout on ``PYTHONPATH``; a real browser that opens a notebook, runs it
with Run All and reads what a person would see. Nothing here is faked: the widgets' front ends
are the ones JupyterLab loads from the installed packages.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WINDOW = (1400, 1100)  # JupyterLab with its file browser open: about a 1,000 px notebook
OUTPUT_AREA_PX = 900  # the widest a widget may be (the budget for the output area)

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
)


def find_chromium() -> tuple[str | None, str | None, str]:
    """Paths of chromium and chromedriver, and why not when one is missing."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver))
                               if p is None)
        return None, None, (f"{missing} not found: install Debian's chromium and "
                            "chromium-driver (apt-get install chromium chromium-driver)")
    return browser, driver, ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


class JupyterLab:
    """A JupyterLab server in ``root`` (notebooks live there), stopped by ``stop()``."""

    def __init__(self, root: Path, scratch: Path, env: dict[str, str]):
        self.root, self.scratch = root, scratch
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        kernels = scratch / "jupyter-path" / "kernels" / "python3"
        # the notebooks ask for "python3": make it this interpreter (first on JUPYTER_PATH)
        _write_json(kernels / "kernel.json", {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"})
        settings = scratch / "lab-settings"
        # no news/update toasts over the screenshots; every cell in the DOM (no windowing)
        _write_json(settings / "@jupyterlab" / "apputils-extension" /
                    "notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False})
        _write_json(settings / "@jupyterlab" / "notebook-extension" /
                    "tracker.jupyterlab-settings", {"windowingMode": "none"})
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                               if p]),
            "JUPYTER_PATH": str(scratch / "jupyter-path"),
            "JUPYTER_CONFIG_DIR": str(scratch / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(scratch / "jupyter-runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "lab-workspaces"),
            "IPYTHONDIR": str(scratch / "ipython"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **env,
        }
        self.log_path = scratch / "jupyterlab.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False",
             # Notebook 7 (when installed) is served by the same server at /notebooks/...
             "--JupyterNotebookApp.expose_app_in_browser=True",
             "--LanguageServerManager.autodetect=False"]
            + (["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
            env=self.env, cwd=root, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(90.0)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("JupyterLab exited:\n" + self.log_tail())
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {seconds:.0f} s:\n"
                           + self.log_tail())

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def shutdown_kernels(self) -> None:
        """End every session's kernel (its model servers stop with it)."""
        for session in self.api("/api/sessions") or []:
            try:
                self.api(f"/api/sessions/{session['id']}", method="DELETE")
            except OSError:
                pass

    def stop(self) -> None:
        try:
            self.shutdown_kernels()
        except OSError:
            pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()


def chrome(browser: str, driver: str, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:  # a headless page has no focus: JupyterLab would then track no current notebook
        session.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})
    except Exception:  # noqa: BLE001 - older drivers: the probes find the notebook anyway
        pass
    return session


# ------------------------------------------------------------------ in-page probes (JavaScript)
# The notebook's model (outputs, execution counts) is read through the app JupyterLab exposes
# for tests (--LabApp.expose_app_in_browser); what is *seen* is read from the DOM.
# The open notebook panel: the shell's current widget or, when the headless page has no focus
# (JupyterLab then tracks no widget as current), the notebook in the main area.
JS_NOTEBOOK = """
const app = window.jupyterapp;
const nb = app && (app.shell.currentWidget
  || Array.from(app.shell.widgets('main')).find((w) => w.sessionContext && w.content));
"""

JS_READY = JS_NOTEBOOK + """
if (!nb || !nb.content || !nb.context || !nb.context.isReady) return false;
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
"""

JS_RUN_ALL = "window.jupyterapp.commands.execute('notebook:run-all-cells'); return true;"

JS_SAVE = JS_NOTEBOOK + "return nb.context.save().then(() => true);"

JS_STATE = JS_NOTEBOOK + """
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
const cells = [];
nb.content.widgets.forEach((cell, index) => {
  if (cell.model.type !== 'code') return;
  cells.push({index, count: cell.model.executionCount,
              source: cell.model.sharedModel.getSource().slice(0, 80),
              outputs: cell.model.outputs.toJSON()});
});
return {kernel: kernel ? kernel.status : 'none', cells};
"""

JS_SEEN = JS_NOTEBOOK + """
const root = nb.node;
const text = root.innerText;
const WIDGET = 'application/vnd.jupyter.widget-view+json';
const views = [];
nb.content.widgets.forEach((cell) => {
  if (cell.model.type !== 'code') return;
  const children = cell.node.querySelectorAll('.jp-OutputArea-child');
  cell.model.outputs.toJSON().forEach((out, j) => {
    if (out.data && out.data[WIDGET] && children[j]) {
      views.push(children[j].querySelector('.jp-OutputArea-output'));
    }
  });
});
const extent = (el) => {
  const left = el.getBoundingClientRect().left;
  let right = left;
  for (const node of el.querySelectorAll('*')) {
    const r = node.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) right = Math.max(right, r.right);
  }
  return Math.round(right - left);
};
const visible = (el) => el.offsetParent !== null && el.getBoundingClientRect().width > 0;
const broken = [...root.querySelectorAll('img')].filter(
  (img) => visible(img) && (!img.complete || img.naturalWidth === 0)).length;
const rendered = views.filter((v) => v && !v.innerText.includes('Loading widget') &&
  v.firstElementChild && v.firstElementChild.getBoundingClientRect().height > 10);
return {
  loading: text.includes('Loading widget...'),
  errors: (text.match(/Error displaying widget[^\\n]*/g) || []),
  views: views.length,
  rendered: rendered.length,
  widths: views.filter(Boolean).map(extent),
  scrolls: views.filter((v) => v && v.scrollWidth > v.clientWidth + 1).length,
  broken,
  area: (root.querySelector('.jp-OutputArea-output') || root).getBoundingClientRect().width,
};
"""
