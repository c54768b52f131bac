"""`%tfserve start` says "Serving MLP v1 at ..." once: the progress line steps aside when the
cell's last expression is the magic itself (its result, the handle, is then shown anyway)."""

from __future__ import annotations

import nbformat

from tfserve_magic._nbrun import run_notebook


def test_result_is_shown_only_for_a_bare_last_expression(tmp_path):
    nb = nbformat.v4.new_notebook()
    setup = nbformat.v4.new_code_cell(
        "from tfserve_magic.magics import _result_is_shown\n"
        "shell = get_ipython()\nseen = []\n"
        "shell.register_magic_function(lambda line: seen.append(_result_is_shown(shell)), "
        "'line', 'tfserve')")
    setup.metadata["tags"] = ["parameters"]
    nb.cells = [setup] + [nbformat.v4.new_code_cell(s) for s in (
        "%tfserve start MLP ./saved",  # shown: the handle's display says it
        "server = %tfserve start MLP ./saved",  # assigned: the progress line says it
        "%tfserve start MLP ./saved;",  # silenced with ';'
        "%tfserve start MLP ./saved\nx = 1",  # not the last statement
        "%tfserve list",  # another subcommand
    )]
    path = tmp_path / "once.ipynb"
    nbformat.write(nb, path)
    run = run_notebook(path, probe="print(seen)", check_servers=False, cell_timeout=60)
    assert run.probe_output.strip() == "[True, False, False, False, False]"

