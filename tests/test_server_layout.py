"""The serving side's house plan (issue 19): the entry point imported by the CLI only, and the
process plumbing in one place. Reads the source; no TF. (Circles and module sizes for the whole
package: tests/test_import_graph.py.)"""

from __future__ import annotations

from pathlib import Path

import tfserve_magic
from tests.helpers.import_graph import import_graph, module_files

PACKAGE = Path(tfserve_magic.__file__).parent


def test_the_server_entry_point_is_imported_by_no_server_module():
    graph = import_graph(PACKAGE)
    importers = [m for m, targets in graph.items()
                 if "tfserve_magic.server.main" in targets and m.startswith("tfserve_magic.server")]
    assert importers == []


def test_process_plumbing_has_one_home():
    """pid checks, atomic writes and connect addresses live in server/process.py only."""
    copies = []
    for name, path in module_files(PACKAGE).items():
        if name.endswith("server.process"):
            continue
        text = path.read_text(encoding="utf-8")
        for marker in ("os.kill(pid, 0)", "os.replace(tmp", '"::1"', "def _bind(",
                       "def pid_alive", "def connect_host"):
            if marker in text:
                copies.append((name, marker))
    assert copies == []
