"""The demo notebooks run top to bottom headless, say what they should, and stop their servers.

Each notebook runs in a fresh kernel of this interpreter (``tfserve_magic._nbrun``, which
``make demo`` uses too) with ``TFSERVE_MAGIC_HEADLESS=1`` (tiny data, one epoch) and the offline
MNIST fallback, in its own temp folder and server registry. The runner fails on any cell error
and on any model server from the notebook still running after its last cell.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tfserve_magic import demo
from tfserve_magic._nbrun import NotebookRunError, ServersLeftError, run_notebook

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOK_NAMES = [
    "01_quickstart.ipynb",
    "02_custom_models.ipynb",
    "03_versions.ipynb",
    "04_draw_digit.ipynb",
    "05_any_client.ipynb",
    "06_beyond_images.ipynb",
]

# Text each executed notebook must show: proof that the interesting cells did their job.
EXPECTED_OUTPUT = {
    "01_quickstart.ipynb": ["served accuracy", "Stopped MLP"],
    "02_custom_models.ipynb": [
        "call:",
        "signature 'call' expects inputs",
        "predicted:",
        "Stopped Custom",
        "Stopped Multi",
    ],
    "03_versions.ipynb": [
        "requests answered by version 2",
        "stable  (version 1)",
        "canary  (version 2)",
        "Stopped Digits",
    ],
    "04_draw_digit.ipynb": ["a '1': the model says", "a '7': the model says", "Stopped MLP"],
    "05_any_client.ipynb": ["requests:", "signatures:", "grpc:", "tfm gRPC client:", "docker run",
                            "Stopped MLP"],
    "06_beyond_images.ipynb": [
        "Text: served accuracy",
        "Text: exported versions 1 and 2",
        "MPG: served MAE",
        "MPG: exported versions 1 and 2",
        "Titanic: served accuracy",
        "Titanic: exported versions 1 and 2",
        "Text     version 2: accuracy",
        "MPG      version 2: MAE",
        "Titanic  version 2: accuracy",
        "Stopped Beyond",
    ],
}

# What a second Run All in the same folder must show: the exports are the next versions
# (3 and 4), and every later cell uses those, not 1 and 2.
EXPECTED_ON_SECOND_RUN = {
    "03_versions.ipynb": [
        "requests answered by version 4",
        "stable  (version 3)",
        "canary  (version 4)",
        "Stopped Digits",
    ],
    "06_beyond_images.ipynb": [
        "Text: exported versions 3 and 4",
        "MPG: exported versions 3 and 4",
        "Titanic: exported versions 3 and 4",
        "Text     version 4: accuracy",
        "MPG      version 4: MAE",
        "Titanic  version 4: accuracy",
        "Stopped Beyond",
    ],
}


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _all_text(nb) -> str:
    """Every stream and text/plain output of an executed notebook, joined."""
    parts = []
    for cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(str(out["data"].get("text/plain", "")))
    return "\n".join(parts)


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "registry"
    home.mkdir()
    return {"TFSERVE_MAGIC_OFFLINE": "1", "TFSERVE_MAGIC_HOME": str(home)}


# ------------------------------------------------------------------------ static checks (fast)
def test_the_six_notebooks_exist():
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert found == NOTEBOOK_NAMES


def test_notebooks_match_their_generator():
    script = NOTEBOOK_DIR / "build_notebooks.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_shape(name):
    """Valid nbformat 4, no stored outputs, a parameters cell, and a last cell that stops."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = _code_cells(nb)
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs are stored"
    parameters = [c for c in code if "parameters" in _tags(c)]
    assert len(parameters) == 1, "exactly one cell tagged 'parameters'"
    assert "TFSERVE_MAGIC_HEADLESS" in parameters[0].source
    assert "EPOCHS" in parameters[0].source
    # the last code cell stops the server; a notebook whose widget is used after Run All (04)
    # stops it only in unattended runs and otherwise says how to stop it
    assert "%tfserve stop" in code[-1].source, "the last code cell must stop the server"
    if "KEEP_SERVING" in code[-1].source:
        assert "KEEP_SERVING = not HEADLESS" in parameters[0].source


# ------------------------------------------------------------------------ the runner itself
def _write_notebook(path: Path, *sources: str, parameters: str = "N = 1") -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def test_runner_uses_this_python_injects_parameters_and_runs_in_its_workdir(tmp_path):
    path = _write_notebook(
        tmp_path / "params.ipynb",
        "import os, sys\nfacts = dict(n=N, python=sys.executable, cwd=os.getcwd(),"
        " headless=os.environ.get('TFSERVE_MAGIC_HEADLESS'))",
    )
    workdir = tmp_path / "work"
    run = run_notebook(
        path,
        parameters={"N": 7},
        workdir=workdir,
        probe="import json; print(json.dumps(facts))",
        output_path=tmp_path / "out.ipynb",
    )
    facts = json.loads(run.probe_output)
    assert facts == {"n": 7, "python": sys.executable, "cwd": str(workdir), "headless": "1"}
    written = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "injected-parameters" in _tags(written.cells[1])
    assert len(written.cells) == 3, "the probe cell must not be written"


def test_runner_reports_the_failing_cell(tmp_path):
    path = _write_notebook(tmp_path / "bad.ipynb", "x = 1", "raise ValueError('broken on purpose')")
    with pytest.raises(NotebookRunError, match="broken on purpose"):
        run_notebook(path, output_path=tmp_path / "bad-out.ipynb")
    written = nbformat.read(tmp_path / "bad-out.ipynb", as_version=4)
    assert written.cells[-1].outputs[0]["ename"] == "ValueError"


def test_runner_fails_on_a_server_left_running(tmp_path):
    """A process that looks like a model server and outlives the last cell fails the run.

    The stand-in sleeps with ``tfserve_magic serve`` in its command line: the runner finds
    servers by that pattern among the kernel's descendants (a real one costs a TF import).
    """
    path = _write_notebook(
        tmp_path / "leaky.ipynb",
        "import subprocess, sys\n"
        "leak = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)',"
        " 'tfserve_magic serve', '--model_name=Leak'])",
    )
    with pytest.raises(ServersLeftError, match="left model servers running") as caught:
        run_notebook(path)
    for pid in caught.value.pids:
        assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(
            f"/proc/{pid}/cmdline"
        ).read_bytes(), f"the runner must kill the leftover server {pid}"


def test_kernel_process_output_goes_to_its_log_and_into_a_failures_message(tmp_path, capfd):
    """TensorFlow's C++ lines go to the kernel's fd 2, never to the notebook: they must not fill
    the terminal of `make demo`, but when a cell fails its last lines belong in the error."""
    path = _write_notebook(
        tmp_path / "crash.ipynb",
        "import os\nos.write(2, b'C++ chatter on fd 2\\n')",
        "os.write(2, b'native error before the failure\\n'); raise ValueError('cell failed')",
    )
    log = tmp_path / "kernel.log"
    with pytest.raises(NotebookRunError, match="(?s)cell failed.*native error before the failure"):
        run_notebook(path, kernel_log=log, cell_timeout=60)
    assert "C++ chatter on fd 2" in log.read_text()
    terminal = capfd.readouterr()
    assert "C++ chatter" not in terminal.out + terminal.err


def test_demo_table_puts_predictions_beside_labels():
    table = demo.format_predictions([7, 2, 1, 0], [7, 2, 1, 4])
    lines = table.splitlines()
    assert lines[0].split() == ["index", "predicted", "true", "ok"]
    assert lines[2].split() == ["0", "7", "7", "ok"]
    assert lines[5].split() == ["3", "0", "4", "WRONG"]
    with pytest.raises(ValueError, match="4 predictions for 3 labels"):
        demo.format_predictions([1, 2, 3, 4], [1, 2, 3])


def test_demo_exits_non_zero_when_the_notebook_fails(tmp_path, capsys):
    path = _write_notebook(tmp_path / "bad.ipynb", "raise RuntimeError('no model today')")
    code = demo.main(["--quick", "--notebook", str(path), "--output", str(tmp_path / "o.ipynb")])
    assert code == 1
    assert "no model today" in capsys.readouterr().err


# ------------------------------------------------------------------------ the notebooks, executed
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_runs_headless(name, tmp_path):
    quickstart = name == "01_quickstart.ipynb"
    run = run_notebook(
        NOTEBOOK_DIR / name,
        headless=True,
        workdir=tmp_path / "work",
        env=_env(tmp_path),
        cell_timeout=300,
        probe=demo.PROBE if quickstart else None,
        output_path=tmp_path / name,
    )
    text = _all_text(run.notebook)
    for expected in EXPECTED_OUTPUT[name]:
        assert expected in text, f"{name} did not print {expected!r}"
    if quickstart:
        # what `make demo` prints, from the same run
        result = json.loads(run.probe_output.strip().splitlines()[-1])
        assert len(result["predicted"]) == len(result["true"]) == 10
        assert abs(result["served_accuracy"] - result["notebook_accuracy"]) < 0.01
        assert result["served_accuracy"] > 0.3, "the served model is no better than chance"
        report = demo.summary(result)
        assert "index  predicted  true  ok" in report
        assert "inference error rate" in report


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_runs_twice_in_the_same_folder(name, tmp_path):
    """A person re-runs notebooks: a second Run All in the same folder, in a new kernel (as
    after a restart), finds the first run's versions there and must still pass. Everything
    the notebook wrote is ignored by git, so running it in notebooks/ leaves no untracked
    files."""
    work = tmp_path / "work"
    env = _env(tmp_path)
    first = run_notebook(NOTEBOOK_DIR / name, headless=True, workdir=work, env=env,
                         cell_timeout=300, output_path=tmp_path / f"first-{name}")
    for expected in EXPECTED_OUTPUT[name]:
        assert expected in _all_text(first.notebook), f"{name} did not print {expected!r}"
    second = run_notebook(NOTEBOOK_DIR / name, headless=True, workdir=work, env=env,
                          cell_timeout=300, output_path=tmp_path / f"second-{name}")
    text = _all_text(second.notebook)
    for expected in EXPECTED_ON_SECOND_RUN.get(name, EXPECTED_OUTPUT[name]):
        assert expected in text, f"{name}, run again, did not print {expected!r}"

    written = [p.name + ("/" if p.is_dir() else "") for p in sorted(work.iterdir())]
    assert written, "the notebook wrote nothing in its folder"
    paths = [f"notebooks/{entry}" for entry in written]
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    ignored = {line.strip() for line in done.stdout.splitlines()}
    assert ignored == set(paths), f"not in .gitignore: {sorted(set(paths) - ignored)}"
