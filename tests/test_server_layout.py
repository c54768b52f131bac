"""The serving side's house plan: no import circles (function-level imports count), no module
over 700 lines, and the process plumbing in one place (issue 19). Reads the source; no TF."""

from __future__ import annotations

import ast
from pathlib import Path

import tfserve_magic

PACKAGE = Path(tfserve_magic.__file__).parent
SERVER_SIDE = ("tfserve_magic.server", "tfserve_magic.records", "tfserve_magic.owners")
# The serving process's entry and plumbing (other modules are split by their own issues).
PROCESS_SIDE = [f"tfserve_magic.server.{m}" for m in
                ("main", "flags", "process", "sizing", "peers", "workers")]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every tfserve_magic module ``path`` imports, at any level of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            if all(s in modules for s in subs):
                found.update(subs)  # from package import module
            elif node.module in modules:
                found.add(node.module)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_server_side_has_no_import_circle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    server_side = [group for group in _cycles(graph)
                   if any(m.startswith(SERVER_SIDE) for m in group)]
    assert server_side == []
    assert "tfserve_magic.server.main" not in set().union(
        *(graph[m] for m in graph if m != "tfserve_magic.server.main"
          and m.startswith("tfserve_magic.server"))
    )  # the entry point is imported by the CLI only


def test_no_process_module_over_700_lines():
    modules = _modules()
    sizes = {name: len(modules[name].read_text(encoding="utf-8").splitlines())
             for name in PROCESS_SIDE}
    assert {name: n for name, n in sizes.items() if n > 700} == {}


def test_process_plumbing_has_one_home():
    """pid checks, atomic writes and connect addresses live in server/process.py only."""
    copies = []
    for name, path in _modules().items():
        if not name.startswith("tfserve_magic.server") or name.endswith(".process"):
            continue
        text = path.read_text(encoding="utf-8")
        for marker in ("os.kill(pid, 0)", "os.replace(", '"::1"', "def _bind("):
            if marker in text:
                copies.append((name, marker))
    assert copies == []
