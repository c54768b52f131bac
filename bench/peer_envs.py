"""Virtualenvs for the peers that pin their own web stack (KServe, MLServer).

KServe and MLServer each pin FastAPI/uvicorn/pydantic versions that differ from ours, so each
gets a virtualenv under ``build/bench/venvs/<name>`` that the bench creates itself with pip.
TensorFlow is not installed again: a ``.pth`` file appends the harness's own site-packages
*after* the venv's, so the peer's pinned packages win and TensorFlow (and anything the peer
does not pin) comes from the one already installed. If that mix does not import, TensorFlow is
installed into the venv as well. A venv is reused while its requirements stay the same.

``python -m bench.peer_envs [kserve mlserver]`` prepares them ahead of a run.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

from bench.env import REPO, tf_env

VENV_ROOT = REPO / "build" / "bench" / "venvs"

# name -> (pip requirements, the import that must work afterwards)
ENVS: dict[str, tuple[list[str], str]] = {
    "kserve": (["kserve==0.21.0"], "import kserve, tensorflow"),
    # MLServer 1.7's inference workers call asyncio.get_event_loop() at start, which uvloop
    # 0.22+ refuses outside a running loop: the worker dies and the model never loads.
    "mlserver": (["mlserver==1.7.1", "uvloop<0.22"], "import mlserver, tensorflow"),
}


def python_of(name: str, root: Path = VENV_ROOT) -> Path:
    return root / name / "bin" / "python"


def _marker(name: str, root: Path) -> Path:
    return root / name / ".bench-requirements.json"


def is_ready(name: str, root: Path = VENV_ROOT) -> bool:
    marker = _marker(name, root)
    try:
        return json.loads(marker.read_text()) == ENVS[name][0] and python_of(name, root).exists()
    except (OSError, ValueError):
        return False


def _shared_site_packages() -> list[str]:
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths += site.getsitepackages()
    return list(dict.fromkeys(p for p in paths if Path(p).is_dir()))


def _venv_site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )
    return Path(out.stdout.strip())


def ensure(name: str, root: Path = VENV_ROOT, log=print) -> Path:
    """Create (or reuse) the venv for peer ``name``; return its python."""
    requirements, check = ENVS[name]
    python = python_of(name, root)
    if is_ready(name, root):
        return python
    venv = root / name
    log(f"Installing {' '.join(requirements)} into {venv} (once; pip from PyPI) ...")
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    with open(venv / "pip.log", "a") as pip_log:  # pip's chatter stays out of the bench log
        subprocess.run([*pip, *requirements], check=True, stdout=pip_log, stderr=pip_log)
    shared = _shared_site_packages()
    (_venv_site_packages(python) / "zz_bench_shared_tf.pth").write_text("\n".join(shared) + "\n")
    env = tf_env()
    env.pop("PYTHONPATH", None)
    probe = subprocess.run([str(python), "-c", check], env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        log(f"{name}: the shared TensorFlow does not import next to {requirements[0]} "
            f"({probe.stderr.strip().splitlines()[-1:]}); installing TensorFlow into the venv")
        from importlib import metadata

        subprocess.run([*pip, f"tensorflow=={metadata.version('tensorflow')}"], check=True)
        subprocess.run([str(python), "-c", check], env=env, check=True)
    _marker(name, root).write_text(json.dumps(requirements))
    return python


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(ENVS)
    for name in names:
        print(ensure(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
