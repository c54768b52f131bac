"""Preflight: will these SavedModels run on stock TF Serving, and on which image?

The SavedModels are read (and loaded) by ``_probe.py`` in a fresh interpreter that imports
only TensorFlow, so the notebook's own imports (tensorflow-text, Keras, ...) cannot hide an
add-on op. The answers become plain-language findings: errors refuse the deploy (with the fix),
warnings and notes are printed with the recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tfserve_magic.deployment.sources import DeployError, Plan
from tfserve_magic.deployment.tags import TagChoice, choose_tag, parse_version

PROBE_TIMEOUT_S = 600.0


@dataclass
class Finding:
    level: str  # "error" | "warning" | "note"
    text: str
    fix: str = ""

    def __str__(self) -> str:
        head = {"error": "ERROR", "warning": "warning", "note": "note"}[self.level]
        return f"{head}: {self.text}" + (f"\n    fix: {self.fix}" if self.fix else "")


@dataclass
class Preflight:
    """The findings, the chosen image tag and what the probe measured."""

    tag: TagChoice
    findings: list[Finding] = field(default_factory=list)
    writer_versions: dict[str, str | None] = field(default_factory=dict)  # "MLP/1" -> "2.21.0"
    # "MLP/1" -> records in assets.extra/tf_serving_warmup_requests (None: no such file)
    warmup_records: dict[str, int | None] = field(default_factory=dict)
    signatures: dict[str, dict] = field(default_factory=dict)  # model -> newest version's sigs
    rss_delta_bytes: int = 0
    tf_version_here: str = ""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def report(self) -> str:
        lines = [f"Preflight: image {self.tag.image}"]
        for key, version in self.writer_versions.items():
            lines.append(f"  {key}: written by TensorFlow {version or '(not recorded)'}; "
                         + _warmup_words(self.warmup_records.get(key)))
        if not self.findings:
            lines.append("  no problems found")
        lines += ["  " + str(f).replace("\n", "\n  ") for f in self.findings]
        return "\n".join(lines)


def _warmup_words(records: int | None) -> str:
    if records is None:
        return "no warm-up requests (assets.extra/tf_serving_warmup_requests)"
    return f"{records} warm-up request(s), replayed by TF Serving before it serves"


def run_probe(paths: list[str], *, load: bool = True, tags=("serve",)) -> dict:
    """Run ``_probe.py`` on ``paths`` in a fresh interpreter (CPU only) and return its JSON."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = "-1"  # the kernel may hold the GPU; loading on CPU suffices
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys([package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    )
    request = json.dumps({"paths": paths, "tags": list(tags), "load": load})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tfserve_magic.deployment._probe"], input=request,
            capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise DeployError(f"the preflight did not finish within {PROBE_TIMEOUT_S:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise DeployError(f"the preflight failed (exit code {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def _batch_problems(signatures: dict) -> list[str]:
    problems = []
    for sig_name, sig in sorted(signatures.items()):
        if sig_name.startswith("__"):
            continue
        for name, spec in sorted(sig["inputs"].items()):
            shape = spec["shape"]
            if shape is None:
                continue
            if not shape:
                problems.append(f"{sig_name}/{name} is a scalar")
            elif shape[0] != -1:
                problems.append(f"{sig_name}/{name} has a fixed first dimension {shape[0]}")
    return problems


def check(plan: Plan, *, gpu: bool = False, image_tag: str | None = None,
          base_image: str | None = None, load: bool = True) -> Preflight:
    """Probe every version of ``plan`` and turn the answers into findings."""
    paths = {f"{m.name}/{v}": str(m.version_path(v)) for m in plan.models for v in m.versions}
    data = run_probe(list(paths.values()), load=load)
    here = data.get("tf_version", "")
    findings: list[Finding] = []
    writers: dict[str, str | None] = {}
    warmups: dict[str, int | None] = {}
    signatures: dict[str, dict] = {}
    rss = 0
    for key, path in paths.items():
        entry = data["models"].get(path, {})
        model = key.split("/")[0]
        if "error" in entry:
            findings.append(Finding("error", f"{key}: {entry['error']}",
                                    "export the model with `%tfserve export` (tag 'serve')"))
            continue
        writers[key] = entry.get("tensorflow_version")
        warmup = entry.get("warmup")
        warmups[key] = warmup["records"] if warmup else None
        if warmup and "error" in warmup:
            findings.append(Finding(
                "error", f"{key}: its warm-up file assets.extra/tf_serving_warmup_requests "
                f"would fail the load in TF Serving: {warmup['error']}",
                "write it again with tfm.write_warmup(version_dir, X) or remove it"))
        signatures[model] = entry.get("signatures", {})
        unknown = entry.get("unknown_ops") or []
        if unknown:
            text = (f"{key} uses ops that are not in TensorFlow's core op registry: "
                    f"{', '.join(unknown)}. They come from an add-on library (tensorflow-text, "
                    "tensorflow-decision-forests, ...); stock TF Serving cannot load this graph")
            fix = ("build a TF Serving image with that library's ops linked in (TF Serving's "
                   "'custom ops' guide) and pass it as --base-image, or export the model "
                   "without those ops")
            findings.append(Finding("warning" if base_image else "error", text,
                                    "" if base_image else fix))
        if "load_error" in entry:
            findings.append(Finding(
                "error", f"{key} does not load here: {entry['load_error']}",
                "re-export the model: what does not load here does not load in TF Serving either"))
        if entry.get("loader") == "session":
            findings.append(Finding(
                "note", f"{key} loads here only through the session fallback (a TF1-style "
                "graph); TF Serving loads SavedModels through sessions, so it serves it "
                "natively"))
        if entry.get("loader_note"):
            findings.append(Finding("note", f"{key}: {entry['loader_note']}"))
        problems = _batch_problems(entry.get("signatures", {}))
        if problems:
            level = "error" if plan.enable_batching else "warning"
            findings.append(Finding(
                level, f"{key}: {'; '.join(problems)}: requests cannot stack instances along "
                "a free batch dimension" + (" and batching needs one" if level == "error" else
                                             " (clients must send exactly that many)"),
                "export with an input signature whose first dimension is None"))
        rss += int(entry.get("rss_delta_bytes") or 0)
    known = [v for v in writers.values() if parse_version(v)]
    newest = max(known, key=parse_version) if known else None
    tag = choose_tag(newest, gpu=gpu, override=image_tag, fallback=here)
    if base_image:
        tag.notes.append(f"--base-image {base_image}: the image tag rule is not used")
    findings += [Finding("warning", n) for n in tag.notes]
    older = sorted({v for v in known if parse_version(v) != parse_version(newest)})
    if older:
        findings.append(Finding(
            "note", f"versions were written by several TensorFlow releases ({', '.join(older)} "
            f"and {newest}); the image follows the newest"))
    return Preflight(tag, findings, writers, warmups, signatures, rss, here)
