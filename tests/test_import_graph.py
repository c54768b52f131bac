"""The house plan, checked from the source (issue 19): no import circle anywhere in the package,
in bench/ or in tests/ (function-level imports count), no module of tfserve_magic/ over 700
lines (the RapidJSON-exact parser excepted), layers that import only downwards, and no test
module importing another test module."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.import_graph import cycles, import_graph, module_files

REPO = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = REPO / "tfserve_magic"
MAX_LINES = 700
LONG_ALLOWED = {"tfserve_magic.server._rapidjson"}

CLIENT_MODULES = (
    "tfserve_magic.client",  # and its submodules
    "tfserve_magic.results",
    "tfserve_magic.wire_json",
    "tfserve_magic.tensor_proto",
    "tfserve_magic._protos",
    "tfserve_magic.registry",
)


def test_the_package_has_no_import_circle():
    assert cycles(import_graph(PACKAGE_ROOT)) == []


def test_bench_and_tests_have_no_import_circle():
    assert cycles(import_graph(REPO / "bench")) == []
    assert cycles(import_graph(REPO / "tests")) == []


def test_no_test_module_imports_another_test_module():
    graph = import_graph(REPO / "tests")
    bad = {m: sorted(t for t in targets if t.rpartition(".")[2].startswith("test_"))
           for m, targets in graph.items()}
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_module_over_700_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines())
             for name, path in module_files(PACKAGE_ROOT).items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES and n not in LONG_ALLOWED} == {}


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
