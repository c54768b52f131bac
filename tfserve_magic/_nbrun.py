"""Run a demo notebook headless in a fresh kernel: shared by the tests and ``make demo``.

papermill and nbmake each miss something we need together: the kernel must be *this*
interpreter (not whichever ``python3`` kernelspec comes first on the Jupyter path), small
parameters are injected after the cell tagged ``parameters``, and, after the last cell and
while the kernel still lives, we check that the notebook stopped every server it started
(once the kernel exits the manager's own cleanup would hide a missing ``%tfserve stop``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVER_PATTERNS = ("tfserve_magic serve", "tfserve serve", "tensorflow_model_server")
HEADLESS_ENV = "TFSERVE_MAGIC_HEADLESS"
KERNEL_NAME = "tfserve-nbrun"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookRunError(RuntimeError):
    """A notebook cell failed, or the notebook left a model server running."""


class ServersLeftError(NotebookRunError):
    """The notebook ended with model servers still running (it must stop what it starts)."""

    def __init__(self, message: str, pids: list[int]):
        super().__init__(message)
        self.pids = pids


@dataclass
class NotebookRun:
    """An executed notebook, with what the probe code printed and how long the run took."""

    notebook: object  # nbformat.NotebookNode
    probe_output: str = ""
    seconds: float = 0.0
    workdir: Path | None = None
    cell_seconds: list[float] = field(default_factory=list)


def inject_parameters(nb, parameters: Mapping[str, object]) -> None:
    """Insert a cell tagged ``injected-parameters`` right after the ``parameters`` cell.

    Values are written with ``repr``, so only literals (numbers, strings, bools, None, lists)
    make sense here, as with papermill.
    """
    import nbformat

    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    index = tagged[0] if tagged else None
    if index is None:
        raise NotebookRunError("the notebook has no cell tagged 'parameters' to override")
    lines = ["# Parameters injected by tfserve_magic._nbrun"]
    for name, value in parameters.items():
        if not str(name).isidentifier():
            raise NotebookRunError(f"parameter name {name!r} is not a Python identifier")
        lines.append(f"{name} = {value!r}")
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def _kernelspec_dir(root: Path) -> Path:
    """A kernelspec whose argv is this interpreter, so the kernel sees this environment."""
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root / "kernels"


def _proc_cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _proc_parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # the command name may hold spaces and parentheses: the fields follow the last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


def _is_server(cmdline: str) -> bool:
    return any(pattern in cmdline for pattern in SERVER_PATTERNS)


def servers_of(kernel_pid: int, workdir: Path) -> list[int]:
    """Model-server processes that belong to this run.

    A server belongs to the run when it descends from the kernel, names the kernel as its
    ``--parent_pid``, or serves a path inside the run's working directory. Other people's
    servers on the same machine (parallel test runs) are left out.
    """
    if not Path("/proc").is_dir():  # not Linux: no cheap process table; trust the notebook
        return []
    mine = []
    marker = str(workdir).rstrip("/") + "/"  # paths *inside* the folder
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        cmdline = _proc_cmdline(pid)
        if not _is_server(cmdline):
            continue
        if f"--parent_pid={kernel_pid}" in cmdline or marker in cmdline:
            mine.append(pid)
            continue
        parent, seen = _proc_parent(pid), 0
        while parent > 1 and seen < 64:
            if parent == kernel_pid:
                mine.append(pid)
                break
            parent, seen = _proc_parent(parent), seen + 1
    return sorted(mine)


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and _proc_cmdline(pid)]
    return alive


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_notebook(
    path: str | os.PathLike,
    *,
    parameters: Mapping[str, object] | None = None,
    headless: bool = True,
    workdir: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    cell_timeout: float = 600.0,
    probe: str | None = None,
    output_path: str | os.PathLike | None = None,
    check_servers: bool = True,
    kernel_log: str | os.PathLike | None = None,
) -> NotebookRun:
    """Execute the notebook at ``path`` top to bottom in a new kernel running this Python.

    - ``headless`` sets ``TFSERVE_MAGIC_HEADLESS=1`` in the kernel (the parameters cells read it
      and pick tiny data and one epoch); ``parameters`` are injected after the parameters cell.
    - The kernel runs in ``workdir`` (a fresh temp folder when None, removed afterwards), so the
      notebook's relative paths (``./saved``) never touch the repository.
    - ``probe`` is code run after the last cell in the same kernel; what it prints is returned
      (the demo reads the predictions this way). It is not kept in the written notebook.
    - ``output_path`` receives the executed notebook (also when a cell failed, for debugging).
    - ``kernel_log`` receives what the kernel process itself writes to its stdout/stderr
      (TensorFlow's C++ start-up lines, which never reach the notebook): kept out of the
      terminal; its tail is added to a failure's message. Default: a file in the scratch folder.

    Raises ``NotebookRunError`` naming the failing cell, and ``ServersLeftError`` when a model
    server started by the notebook still runs after its last cell (the servers are then killed).
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    source = Path(path)
    nb = nbformat.read(source, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)

    scratch = Path(tempfile.mkdtemp(prefix="tfserve-nbrun-"))
    run_dir = Path(workdir).resolve() if workdir is not None else scratch / "work"
    run_dir.mkdir(parents=True, exist_ok=True)
    kernel_env = dict(os.environ)
    kernel_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    kernel_env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    kernel_env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if headless:
        kernel_env[HEADLESS_ENV] = "1"
    kernel_env.update(env or {})

    specs = KernelSpecManager(kernel_dirs=[str(_kernelspec_dir(scratch))])
    # IPC sockets in the scratch folder: local only, and no "TCP without encryption" warning
    km = KernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=specs,
        transport="ipc",
        ip=str(scratch / "kernel-ipc"),
    )
    log_path = Path(kernel_log) if kernel_log is not None else scratch / "kernel.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    client = NotebookClient(
        nb,
        km=km,
        kernel_name=KERNEL_NAME,
        timeout=cell_timeout,
        resources={"metadata": {"path": str(run_dir)}},
    )
    result = NotebookRun(notebook=nb, workdir=run_dir if workdir is not None else None)
    started = time.monotonic()
    left: list[int] = []
    failure: BaseException | None = None
    try:
        with client.setup_kernel(cleanup_kc=True, env=kernel_env, cwd=str(run_dir),
                                 stdout=log_file, stderr=log_file):
            kernel_pid = km.provisioner.pid if km.provisioner is not None else 0
            client.wait_for_reply(client.kc.kernel_info())
            try:
                for index, cell in enumerate(list(nb.cells)):
                    cell_started = time.monotonic()
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                    result.cell_seconds.append(time.monotonic() - cell_started)
                if probe:
                    result.probe_output = _run_probe(client, nb, probe)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                failure = exc
            if check_servers and kernel_pid:
                # %tfserve stop returns when the server has exited; allow a moment for races
                left = _wait_gone(servers_of(kernel_pid, run_dir), 5.0)
            client.set_widgets_metadata()
    finally:
        log_file.close()
        kernel_tail = _tail_text(log_path, 15) if failure is not None else ""
        result.seconds = time.monotonic() - started
        if output_path is not None:
            out = Path(output_path)
            out.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out)
        if left:
            _kill(left)
        shutil.rmtree(scratch, ignore_errors=True)

    if failure is not None:
        message = _ANSI.sub("", str(failure))
        if kernel_tail:
            message += f"\n\nThe kernel process's own output (last lines):\n{kernel_tail}"
        raise NotebookRunError(f"{source.name}: a cell failed:\n{message}") from None
    if left:
        raise ServersLeftError(
            f"{source.name} left model servers running (pids {left}); "
            "every notebook must end with %tfserve stop",
            left,
        )
    return result


def _tail_text(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _run_probe(client, nb, code: str) -> str:
    import nbformat

    cell = nbformat.v4.new_code_cell(code)
    nb.cells.append(cell)
    try:
        client.execute_cell(cell, len(nb.cells) - 1, store_history=False)
    finally:
        nb.cells.pop()
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
