"""``tfserve deploy``: write what runs the same model folder on real TensorFlow Serving.

``deploy(...)`` (also ``tfserve deploy`` and ``%tfserve deploy``) reads what to deploy (a base
path, a model config, or a running server), runs the preflight (``preflight.py``: image tag,
add-on ops, batch dimensions, loadability), then writes a Docker, Kubernetes or KServe recipe
into ``out``. Nothing is written when anything is wrong, and files this command did not write
are never overwritten without ``force``. No IPython here; TensorFlow only in the preflight's
subprocess.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tfserve_magic.deployment.preflight import Finding, Preflight, check
from tfserve_magic.deployment.sources import (
    DeployError,
    Plan,
    from_base_path,
    from_config,
    from_server,
)
from tfserve_magic.deployment.tags import SERVING_RELEASES, choose_tag
from tfserve_magic.server.process import write_atomic

__all__ = ["deploy", "DeployError", "DeployResult", "Preflight", "Finding", "choose_tag",
           "SERVING_RELEASES", "add_arguments", "deploy_from_args"]

MANIFEST = ".tfserve-deploy.json"


@dataclass
class DeployResult:
    """What was written where, the preflight's findings and the next command to run."""

    target: str
    out: Path
    files: list[str]
    preflight: Preflight
    image: str
    container_command: list[str] = field(default_factory=list)  # docker/kubernetes
    next_steps: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        shown = sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in self.files})
        lines = [f"Wrote the {self.target} recipe to {self.out}: {', '.join(shown)}",
                 self.preflight.report(), "", "Next (see README.md there):"]
        lines += [f"  {step}" for step in self.next_steps]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"


def _plan(name, base_path, config) -> Plan:
    if config is not None:
        if base_path is not None:
            raise DeployError("give either BASE_PATH or a model config file, not both")
        return from_config(config)
    if not name:
        raise DeployError("deploy needs a NAME (and a BASE_PATH unless NAME is a running server)")
    if base_path is None:
        return from_server(name)
    return from_base_path(name, base_path)


def _read_config_file(path: Path, parse, what: str) -> str:
    from tfserve_magic.server.config import ConfigError

    try:
        parse(str(path))
        return path.read_text(encoding="utf-8")
    except ConfigError as exc:
        raise DeployError(str(exc)) from None
    except OSError as exc:
        raise DeployError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _validate_options(target, out, replicas, max_replicas, storage_uri) -> None:
    from tfserve_magic.deployment.targets import STORAGE_SCHEMES, TARGETS

    if target not in TARGETS:
        raise DeployError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    if not out:
        raise DeployError("give the output folder (--out DIR)")
    if replicas < 1:
        raise DeployError(f"--replicas must be at least 1, not {replicas}")
    if max_replicas is not None and max_replicas < replicas:
        raise DeployError(f"--max-replicas ({max_replicas}) is below --replicas ({replicas})")
    if storage_uri and not storage_uri.startswith(STORAGE_SCHEMES):
        raise DeployError(f"--storage-uri must start with {', '.join(STORAGE_SCHEMES)}; "
                          f"got {storage_uri!r}")
    if storage_uri and target == "docker":
        raise DeployError("--storage-uri is for kubernetes and kserve; docker bakes the model in")
    if target == "kserve" and not storage_uri:
        raise DeployError(
            "kserve reads models from storage: upload the models and pass --storage-uri "
            "(gs://BUCKET/PATH, s3://BUCKET/PATH or pvc://CLAIM/PATH); the recipe's models/ "
            "folder is what to upload")


def deploy(name: str | None = None, base_path=None, *, target: str, out, config=None,
           replicas: int = 1, max_replicas: int | None = None, gpu: bool = False,
           storage_uri: str | None = None, image_tag: str | None = None,
           image: str | None = None, base_image: str | None = None, batching=None,
           monitoring: bool = False, force: bool = False) -> DeployResult:
    """Check the model(s) and write a Docker / Kubernetes / KServe recipe into ``out``.

    ``name`` + ``base_path``: one model (its newest version); ``config``: a model config file;
    ``name`` alone: the running server ``name`` (its models, versions, labels, batching and
    monitoring). ``batching``: True (TF Serving's suggested starting parameters) or a
    BatchingParameters file. Raises ``DeployError`` (nothing written) when it cannot be done.
    """
    from tfserve_magic.deployment import readme, targets
    from tfserve_magic.server.config import parse_batching_parameters, parse_monitoring_config

    _validate_options(target, out, replicas, max_replicas, storage_uri)
    plan = _plan(name, base_path, config)
    name = name or Path(str(config)).stem
    texts: dict[str, str] = {}
    if batching:
        plan.enable_batching = True
        if batching is not True:
            plan.batching_file = Path(batching).expanduser()
    if plan.batching_file:
        texts[f"models/{targets.BATCHING_NAME}"] = _read_config_file(
            plan.batching_file, parse_batching_parameters, "batching parameters file")
    elif batching is True:
        texts[f"models/{targets.BATCHING_NAME}"] = targets.default_batching_text()
    if plan.monitoring_file:
        texts[f"models/{targets.MONITORING_NAME}"] = _read_config_file(
            plan.monitoring_file, parse_monitoring_config, "monitoring config file")
    elif monitoring:
        texts[f"models/{targets.MONITORING_NAME}"] = targets.monitoring_text()

    preflight = check(plan, gpu=gpu, image_tag=image_tag, base_image=base_image)
    if not preflight.ok:
        raise DeployError("the preflight refused this deploy (nothing was written):\n"
                          + preflight.report())

    opts = targets.Options(target=target, name=name, replicas=replicas,
                           max_replicas=max_replicas, gpu=gpu, storage_uri=storage_uri,
                           image=image, base_image=base_image, monitoring=monitoring)
    args = targets.server_args(plan, f"models/{targets.BATCHING_NAME}" in texts,
                               f"models/{targets.MONITORING_NAME}" in texts)
    if targets.needs_model_config(plan):
        texts[f"models/{targets.CONFIG_NAME}"] = targets.model_config_text(plan)
    body = targets.smoke_body(preflight.signatures.get(plan.models[0].name, {}))
    if body is not None:
        texts["smoke_request.json"] = json.dumps(body) + "\n"
    built = targets.built_image(opts, plan)
    command = targets.container_command(plan, args)
    if target == "docker":
        texts["Dockerfile"] = targets.dockerfile(plan, preflight, opts, args)
        texts[".dockerignore"] = "*\n!models\n"
        texts["compose.yaml"] = targets.compose(plan, opts, built)
        texts["README.md"] = readme.docker_readme(plan, preflight, opts, built, body is not None)
        steps = [f"docker build -t {built} {out}",
                 f"docker run --rm {'--gpus all ' if gpu else ''}-p 8500:8500 -p 8501:8501 {built}",
                 f"{out}/smoke_test.sh"]
        image_name = built
    elif target == "kubernetes":
        if not storage_uri:
            texts["Dockerfile"] = targets.dockerfile(plan, preflight, opts, args)
            texts[".dockerignore"] = "*\n!models\n"
        objects = targets.kubernetes_objects(plan, preflight, opts, args, built)
        texts["kubernetes.yaml"] = targets.yaml_documents(objects)
        texts["README.md"] = readme.kubernetes_readme(plan, preflight, opts, built,
                                                      body is not None)
        image_name = objects[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        steps = ([] if storage_uri else [f"docker build -t {built} {out} && docker push {built}"])
        steps += [f"kubectl apply -f {out}/kubernetes.yaml"]
    else:
        preflight.findings += _kserve_limits(plan, bool(texts.get(f"models/{targets.BATCHING_NAME}")))
        objects = targets.kserve_objects(plan, preflight, opts)
        texts["inferenceservice.yaml"] = targets.yaml_documents(objects)
        texts["README.md"] = readme.kserve_readme(plan, preflight, opts, objects, body is not None)
        image_name = base_image or preflight.tag.image
        command = []
        steps = [f"upload {out}/models/* to {storage_uri}",
                 f"kubectl apply -f {out}/inferenceservice.yaml"]
    texts["smoke_test.sh"] = targets.smoke_script(plan, body is not None)
    copies = {f"models/{m.name}/{m.version_path(v).name}": m.version_path(v)
              for m in plan.models for v in m.versions}
    files = _write(Path(out).expanduser(), texts, copies, target, force)
    return DeployResult(target, Path(out).expanduser().absolute(), files, preflight, image_name,
                        command, steps)


def _kserve_limits(plan: Plan, batching_file: bool) -> list[Finding]:
    """What KServe's TensorFlow runtime (one model, newest version, its own flags) drops."""
    found = []
    for model in plan.models:
        if model.labels or len(model.versions) > 1:
            found.append(Finding(
                "warning", f"{model.name}: KServe's TensorFlow runtime serves the newest version "
                "only; versions and labels other than that are not carried",
                "use --target kubernetes to keep them"))
    if batching_file:
        found.append(Finding("warning", "KServe gets --enable_batching only; the batching "
                             "parameters file is not carried (TF Serving's defaults apply)"))
    return found


# ----------------------------------------------------------------------------- writing
def _tree_files(src: Path, rel: str) -> list[str]:
    return sorted(f"{rel}/{p.relative_to(src).as_posix()}" for p in src.rglob("*") if p.is_file())


def _old_manifest(out: Path) -> tuple[set[str], set[str]]:
    """(files, copied version folders) an earlier run wrote into ``out``."""
    try:
        data = json.loads((out / MANIFEST).read_text())
        return {str(f) for f in data.get("files", [])}, {str(t) for t in data.get("trees", [])}
    except (OSError, ValueError, AttributeError):
        return set(), set()


def _prune_empty(folder: Path, out: Path) -> None:
    while folder != out and out in folder.parents and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _write(out: Path, texts: dict[str, str], copies: dict[str, Path], target: str,
           force: bool) -> list[str]:
    """Write ``texts`` and copy ``copies`` into ``out``; refuse to clobber files not ours."""
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} exists and is not a folder")
    resolved = out.resolve()
    for src in copies.values():
        if resolved == src.resolve() or src.resolve() in resolved.parents:
            raise DeployError(f"--out {out} is inside the model version {src}; choose a folder "
                              "outside the SavedModel")
    mine, my_trees = _old_manifest(out)
    new_files = set(texts)
    for rel, src in copies.items():
        new_files.update(_tree_files(src, rel))
    conflicts = []
    for rel in sorted(new_files | set(copies)):
        path = out / rel
        if rel in copies:  # a version folder: every file already there must be ours
            if path.exists():
                conflicts += [f for f in _tree_files(path, rel) if f not in mine]
            continue
        if path.is_dir() or (path.exists() and rel not in mine):
            conflicts.append(rel)
    if conflicts and not force:
        shown = ", ".join(conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5
                                           else "")
        raise DeployError(f"{out} already holds files that tfserve deploy did not write: {shown}; "
                          "choose another --out or pass --force to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    for rel in sorted(mine - new_files):  # ours from an earlier run, no longer part of it
        stale = out / rel
        if stale.is_file():
            stale.unlink()
            _prune_empty(stale.parent, out)
    for rel in sorted(my_trees - set(copies)):  # version folders of an earlier run
        stale = out / rel
        if stale.is_dir() and all(f in mine for f in _tree_files(stale, rel)):
            shutil.rmtree(stale)
            _prune_empty(stale.parent, out)
    for rel, src in copies.items():
        dest = out / rel
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest)
    for rel, text in texts.items():
        path = out / rel
        if path.is_dir():
            shutil.rmtree(path)
        write_atomic(path, text, mode=0o755 if rel.endswith(".sh") else 0o644)
    files = sorted(new_files)
    (out / MANIFEST).write_text(json.dumps({"format": 1, "target": target, "files": files,
                                            "trees": sorted(copies)},
                                           indent=1) + "\n")
    return files


# ----------------------------------------------------------------------------- command line
def add_arguments(parser) -> None:
    """The options of ``tfserve deploy`` and ``%tfserve deploy`` (one definition for both)."""
    parser.add_argument("name", nargs="?", help="model name (alone: a running server's name)")
    parser.add_argument("base_path", nargs="?", help="SavedModel base path (numbered versions)")
    parser.add_argument("--target", required=True, choices=["docker", "kubernetes", "kserve"])
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--config", metavar="FILE", help="TF Serving model config (several models)")
    parser.add_argument("--replicas", type=int, default=1, help="pods (default 1)")
    parser.add_argument("--max-replicas", type=int, metavar="N",
                        help="add a HorizontalPodAutoscaler scaling up to N pods")
    parser.add_argument("--gpu", action="store_true", help="-gpu image and one nvidia.com/gpu")
    parser.add_argument("--storage-uri", metavar="URI",
                        help="gs://, s3:// or pvc:// holding the uploaded models/ folder")
    parser.add_argument("--image-tag", metavar="TAG", help="tensorflow/serving tag to use instead")
    parser.add_argument("--image", metavar="NAME:TAG", help="name of the image to build")
    parser.add_argument("--base-image", metavar="IMAGE",
                        help="FROM image instead of tensorflow/serving (e.g. with add-on ops)")
    parser.add_argument("--batching", action="store_true",
                        help="enable batching (TF Serving's suggested starting parameters)")
    parser.add_argument("--batching-file", metavar="FILE",
                        help="enable batching with this BatchingParameters file")
    parser.add_argument("--monitoring", action="store_true", help="Prometheus metrics endpoint")
    parser.add_argument("--force", action="store_true",
                        help="overwrite files in DIR that tfserve deploy did not write")


def deploy_from_args(args) -> DeployResult:
    if args.name is None and args.config is None:
        raise DeployError("deploy needs NAME [BASE_PATH], or --config FILE")
    return deploy(args.name, args.base_path, target=args.target, out=args.out,
                  config=args.config, replicas=args.replicas, max_replicas=args.max_replicas,
                  gpu=args.gpu, storage_uri=args.storage_uri, image_tag=args.image_tag,
                  image=args.image, base_image=args.base_image,
                  batching=args.batching_file or args.batching or None,
                  monitoring=args.monitoring, force=args.force)
