"""No import circles: the module graph of tfserve_magic/, read with ``ast``.

Every ``import``/``from ... import`` counts, also inside functions and ``if TYPE_CHECKING``.
``from package import name`` points at ``package.name`` when that is a module, else at
``package``; importing ``a.b.c`` points at ``a.b.c`` only (not at its parent packages).

The assertion covers the client modules for now (other parts of the package still have
circles being removed); widen ``SCOPE`` to every module once those are gone.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "tfserve_magic"

CLIENT_MODULES = (
    "tfserve_magic.client",  # and its submodules
    "tfserve_magic.grpc_client",
    "tfserve_magic.results",
    "tfserve_magic.wire_json",
    "tfserve_magic.tensor_proto",
    "tfserve_magic._protos",
    "tfserve_magic.registry",
)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package folder ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def in_scope(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in CLIENT_MODULES)


def test_the_client_modules_are_in_no_import_circle():
    graph = import_graph(PACKAGE_ROOT)
    assert "tfserve_magic.client.base" in graph and "tfserve_magic.results" in graph
    assert "tfserve_magic.client.base" in graph["tfserve_magic.client.rest"]
    touching = [part for part in cycles(graph) if any(in_scope(m) for m in part)]
    assert touching == []


def test_the_client_imports_no_layer_above_it():
    graph = import_graph(PACKAGE_ROOT)
    above = ("tfserve_magic.manager", "tfserve_magic.magics", "tfserve_magic.predict_magic",
             "tfserve_magic.predict_view", "tfserve_magic.widgets", "tfserve_magic.server",
             "tfserve_magic.export")
    for module, imported in graph.items():
        if in_scope(module):
            assert not [m for m in imported if m.startswith(above)], module


def test_a_function_level_circle_is_found(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg.sub import b\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (root / "c.py").write_text("def g():\n    from pkg import a\n")
    (root / "d.py").write_text("import pkg.a\nfrom . import c\n")
    graph = import_graph(root)
    assert graph["pkg.d"] == {"pkg.a", "pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
