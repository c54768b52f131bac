"""What can be checked on a lent GPU machine that has no TensorFlow (run there with python3).

The lent machine has PyTorch and no network, and TensorFlow's wheel (about 600 MB) is larger
than what can be carried to it, so the server itself cannot run there. What does run:
the GPU plan (``tfserve_magic/gpu.py``: which devices a child server gets) checked against a
real driver, with PyTorch in the child standing in for TensorFlow to count the devices it
really sees, and ``--workers auto`` sized from that machine's cores and memory
(``server/sizing.py``). Both modules are loaded from their files: neither imports
TensorFlow, and the package's ``__init__`` is not needed.

Prints one JSON object; ``docs/gpu.md`` records a run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNT_IN_CHILD = (
    "import torch, json, os; print(json.dumps({'visible_env': os.environ.get("
    "'CUDA_VISIBLE_DEVICES'), 'growth': os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH'), "
    "'torch_devices': torch.cuda.device_count(), 'names': [torch.cuda.get_device_name(i) "
    "for i in range(torch.cuda.device_count())]}))"
)


def _load(name: str, relative: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _child_sees(env_changes: dict) -> dict:
    env = dict(os.environ)
    env.update(env_changes)
    done = subprocess.run([sys.executable, "-c", COUNT_IN_CHILD], env=env, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    gpu = _load("tfm_gpu", "tfserve_magic/gpu.py")
    workers = _load("tfm_sizing", "tfserve_magic/server/sizing.py")
    report = {"system_gpus": gpu._system_gpu_count(), "plans": {}}
    for request in ("auto", "none", "0"):
        plan = gpu.plan(request, environ=dict(os.environ))
        report["plans"][request] = {"env": plan.env, "label": plan.label,
                                    "warnings": plan.warnings, "child": _child_sees(plan.env)}
    try:
        gpu.plan("1", environ=dict(os.environ))
        report["plans"]["1"] = "accepted (unexpected on a one-GPU machine)"
    except ValueError as exc:
        report["plans"]["1"] = f"refused: {exc}"
    cpus = workers.usable_cpus()
    available = workers.available_memory()
    worker_rss = 600 * 2**20  # one worker with TF and a small model (measured on the 2-core box)
    report["workers_auto"] = {
        "usable_cpus": cpus, "mem_available_bytes": available,
        "assumed_worker_rss_bytes": worker_rss,
        "auto_count": workers.auto_count(cpus, available, worker_rss),
        "reuse_port": workers.reuse_port_supported(),
    }
    print(json.dumps(report, indent=1))
    ok = report["system_gpus"] and all(
        isinstance(p, dict) and "error" not in p["child"] for p in report["plans"].values()
        if isinstance(p, dict)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
