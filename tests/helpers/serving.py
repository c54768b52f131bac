"""Helpers for tests that run a model server: TF Serving's test SavedModels, a model config
text proto, waiting for a condition, the states of a model's versions, publishing a version
atomically, and which loader served a model (read from the server's log)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import requests

# TF Serving's own test SavedModels (tests/data/tfserving, see its README)
DATA = Path(__file__).parents[1] / "data" / "tfserving"
HALF_PLUS_TWO = DATA / "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = DATA / "saved_model_half_plus_three"
COUNTER = DATA / "saved_model_counter"
TWO_VERSIONS = DATA / "saved_model_half_plus_two_2_versions"

POLL_TIMEOUT_S = 60.0


def wait_for(condition, what: str, timeout: float = POLL_TIMEOUT_S):
    """Poll ``condition`` until it returns something true (returned); fail the test on time-out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def states(server, model: str) -> dict[str, tuple[str, str]]:
    """{version: (state, error code)} of ``model`` from the server's status endpoint."""
    body = requests.get(f"{server.url}/v1/models/{model}", timeout=10).json()
    return {
        s["version"]: (s["state"], s["status"]["error_code"]) for s in body["model_version_status"]
    }


def publish(source, base, version: int) -> None:
    """Copy a SavedModel in under a temporary name, then rename it to its number (atomic)."""
    tmp = base / f"tmp-{version}"
    shutil.copytree(source, tmp)
    tmp.rename(base / str(version))


def model_config(entries: list[dict]) -> str:
    """A ModelServerConfig text proto for {name, base_path, [versions], [labels]} entries."""
    out = ["model_config_list {"]
    for entry in entries:
        out.append(f'  config {{ name: "{entry["name"]}" base_path: "{entry["base_path"]}" '
                   'model_platform: "tensorflow"')
        if "versions" in entry:
            versions = " ".join(f"versions: {v}" for v in entry["versions"])
            out.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        for label, version in entry.get("labels", {}).items():
            out.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def loader_of(server, model: str) -> str:
    """"tf2" or "session": the loader that served ``model``, from the server's load line."""
    match = re.search(
        r"Successfully loaded servable version \{name: " + re.escape(model)
        + r" version: \d+\} in [\d.]+ s with the (TF2|TF1)", server.log()
    )
    assert match, f"no load line for {model}"
    return {"TF2": "tf2", "TF1": "session"}[match.group(1)]
