"""The recipes: Dockerfile + compose, Kubernetes objects, KServe InferenceService, READMEs.

Every function here is pure: it takes the plan, the preflight and the options and returns
``{relative path: text}``; ``deploy()`` checks and writes them. YAML is written with PyYAML
from plain dicts, so quoting is never hand-made.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass

import yaml

from tfserve_magic.deployment.preflight import Preflight
from tfserve_magic.deployment.sources import DeployError, ModelSource, Plan

TARGETS = ("docker", "kubernetes", "kserve")
MODELS_DIR = "/models"  # the image's MODEL_BASE_PATH
CONFIG_NAME = "models.config"
BATCHING_NAME = "batching.config"
MONITORING_NAME = "monitoring.config"
GRPC_PORT, REST_PORT = 8500, 8501
# KServe's own downloader (gs://, s3://, https://), the image its controller uses for storageUri.
STORAGE_INITIALIZER = "kserve/storage-initializer:v0.20.0"
STORAGE_SCHEMES = ("gs://", "s3://", "pvc://")
MIB = 1024 * 1024


@dataclass
class Options:
    target: str
    name: str
    replicas: int = 1
    max_replicas: int | None = None
    gpu: bool = False
    storage_uri: str | None = None
    image: str | None = None  # the name given to the built image
    base_image: str | None = None  # FROM, instead of tensorflow/serving:<tag>
    monitoring: bool = False


def k8s_name(text: str) -> str:
    """A DNS-1035 label (Service and InferenceService names): lowercase, '-', starts with a letter."""
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"m-{slug}".rstrip("-")
    return slug[:63].rstrip("-")


def memory_mib(rss_delta_bytes: int) -> int:
    """Memory request: 256 MiB for the server itself + twice the measured model RSS (64 MiB steps)."""
    mib = 256 + 2 * math.ceil(max(0, rss_delta_bytes) / MIB)
    return int(math.ceil(mib / 64) * 64)


def resources(preflight: Preflight, gpu: bool) -> dict:
    """Requests sized from the probe's measured RSS; the memory limit is twice the request.

    No CPU limit: a CPU limit throttles a latency-bound server; the request alone schedules it
    and lets the HorizontalPodAutoscaler compute utilisation.
    """
    mem = memory_mib(preflight.rss_delta_bytes)
    result = {"requests": {"cpu": "1", "memory": f"{mem}Mi"},
              "limits": {"memory": f"{2 * mem}Mi"}}
    if gpu:
        result["limits"]["nvidia.com/gpu"] = "1"
    return result


def needs_model_config(plan: Plan) -> bool:
    return len(plan.models) > 1 or any(m.labels or len(m.versions) > 1 for m in plan.models)


def model_config_text(plan: Plan, root: str = MODELS_DIR) -> str:
    """A ``ModelServerConfig`` serving exactly the copied versions, with their labels."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for model in plan.models:
        entry = config.model_config_list.config.add(
            name=model.name, base_path=f"{root}/{model.name}", model_platform="tensorflow")
        if len(model.versions) > 1 or model.labels:
            entry.model_version_policy.specific.versions.extend(model.versions)
        for label, version in sorted(model.labels.items()):
            entry.version_labels[label] = version
    return text_format.MessageToString(config)


def default_batching_text() -> str:
    """TF Serving's suggested starting point for CPU serving (its batching guide)."""
    return ("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n"
            "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 4 }\n")


def monitoring_text() -> str:
    return 'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'


def server_args(plan: Plan, has_batching_file: bool, has_monitoring: bool) -> list[str]:
    """Flags added to the image's entrypoint (``tensorflow_model_server --port=8500 ...``)."""
    args = []
    if needs_model_config(plan):
        args.append(f"--model_config_file={MODELS_DIR}/{CONFIG_NAME}")
    if plan.enable_batching:
        args.append("--enable_batching=true")
        if has_batching_file:
            args.append(f"--batching_parameters_file={MODELS_DIR}/{BATCHING_NAME}")
    if has_monitoring:
        args.append(f"--monitoring_config_file={MODELS_DIR}/{MONITORING_NAME}")
    return args


def container_command(plan: Plan, args: list[str]) -> list[str]:
    """The full command line the stock image runs (its tf_serving_entrypoint.sh + our flags)."""
    first = plan.models[0].name
    return ["tensorflow_model_server", f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}",
            f"--model_name={first}", f"--model_base_path={MODELS_DIR}/{first}", *args]


# ----------------------------------------------------------------------------- smoke request
_ZERO = {"DT_STRING": "", "DT_BOOL": False}
_FLOATS = {"DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16"}


def _zeros(shape: list[int], value):
    if not shape:
        return value
    return [_zeros(shape[1:], value) for _ in range(shape[0])]


def smoke_body(signatures: dict, limit: int = 100_000) -> dict | None:
    """A columnar predict body of zeros for ``serving_default`` (batch 1), or None."""
    sig = signatures.get("serving_default")
    if not sig or not sig.get("inputs"):
        return None
    inputs = {}
    for name, spec in sorted(sig["inputs"].items()):
        shape = spec["shape"]
        if shape is None:
            return None
        dims = [1 if d < 0 else d for d in shape]
        if math.prod(dims) > limit:
            return None
        dtype = spec["dtype"]
        value = _ZERO.get(dtype, 0.0 if dtype in _FLOATS else 0)
        inputs[name] = _zeros(dims, value)
    return {"inputs": inputs if len(inputs) > 1 else next(iter(inputs.values()))}


def smoke_script(plan: Plan, has_body: bool) -> str:
    first = plan.models[0].name
    lines = [
        "#!/bin/sh",
        "# Written by `tfserve deploy`: checks a TF Serving REST endpoint (default localhost:8501).",
        "# Usage: ./smoke_test.sh [http://HOST:PORT]",
        "set -eu",
        'cd "$(dirname "$0")"',
        'URL="${1:-http://localhost:8501}"',
    ]
    for model in plan.models:
        lines.append(f'curl -fsS "$URL/v1/models/{model.name}"')
        for label in sorted(model.labels):
            lines.append(f'curl -fsS "$URL/v1/models/{model.name}/labels/{label}"')
    if has_body:
        lines.append("curl -fsS -X POST -H 'Content-Type: application/json' "
                     f'-d @smoke_request.json "$URL/v1/models/{first}:predict"')
    lines.append('echo "smoke test passed"')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- docker
def built_image(opts: Options, plan: Plan) -> str:
    if opts.image:
        return opts.image
    newest = max(max(m.versions) for m in plan.models)
    return f"tfserve-{k8s_name(opts.name)}:v{newest}"


def base_image(opts: Options, preflight: Preflight) -> str:
    return opts.base_image or preflight.tag.image


def dockerfile(plan: Plan, preflight: Preflight, opts: Options, args: list[str]) -> str:
    first = plan.models[0].name
    served = ", ".join(f"{m.name} v{','.join(map(str, m.versions))}" for m in plan.models)
    lines = [
        "# Written by `tfserve deploy` (tfserve_magic): TensorFlow Serving with the model",
        f"# versions baked in ({served}).",
        "# The tag follows the TensorFlow version that wrote the SavedModel (docs/deploy.md).",
        f"FROM {base_image(opts, preflight)}",
        f"COPY models/ {MODELS_DIR}/",
        f"ENV MODEL_NAME={first}",
    ]
    if args:
        lines.append("# Flags appended to the image's tensorflow_model_server command line")
        lines.append("CMD " + json.dumps(args))
    return "\n".join(lines) + "\n"


def compose(plan: Plan, opts: Options, image: str) -> str:
    service: dict = {"build": ".", "image": image,
                     "ports": [f"{GRPC_PORT}:{GRPC_PORT}", f"{REST_PORT}:{REST_PORT}"],
                     "restart": "unless-stopped"}
    if opts.gpu:
        service["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}}
    return _yaml({"services": {k8s_name(opts.name): service}})


# ----------------------------------------------------------------------------- kubernetes
def _labels(opts: Options) -> dict:
    return {"app.kubernetes.io/name": k8s_name(opts.name),
            "app.kubernetes.io/component": "tensorflow-serving",
            "app.kubernetes.io/managed-by": "tfserve-deploy"}


def _probe(path: str, initial: int, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "initialDelaySeconds": initial,
            "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}


def _storage(opts: Options, pod: dict, container: dict) -> None:
    """Pull the uploaded ``models/`` folder from --storage-uri into /models."""
    uri = opts.storage_uri or ""
    mount = {"name": "models", "mountPath": MODELS_DIR}
    if uri.startswith("pvc://"):
        claim, _, sub = uri[len("pvc://"):].partition("/")
        pod["volumes"] = [{"name": "models",
                           "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]
        container["volumeMounts"] = [{**mount, "readOnly": True, **({"subPath": sub} if sub else {})}]
        return
    pod["volumes"] = [{"name": "models", "emptyDir": {}}]
    container["volumeMounts"] = [{**mount, "readOnly": True}]
    pod["initContainers"] = [{
        "name": "storage-initializer",
        "image": STORAGE_INITIALIZER,
        "args": [uri.rstrip("/"), MODELS_DIR],
        "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                      "limits": {"memory": "1Gi"}},
        "volumeMounts": [mount],
    }]


def kubernetes_objects(plan: Plan, preflight: Preflight, opts: Options, args: list[str],
                       image: str) -> list[dict]:
    name = k8s_name(opts.name)
    labels = _labels(opts)
    selector = {"app.kubernetes.io/name": name}
    status_path = f"/v1/models/{plan.models[0].name}"
    container: dict = {
        "name": "tensorflow-serving",
        "image": base_image(opts, preflight) if opts.storage_uri else image,
        "args": list(args),
        "env": [{"name": "MODEL_NAME", "value": plan.models[0].name}],
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT},
                  {"name": "http", "containerPort": REST_PORT}],
        "readinessProbe": _probe(status_path, 5, 5, 3),
        "livenessProbe": _probe(status_path, 30, 15, 4),
        "resources": resources(preflight, opts.gpu),
    }
    if not container["args"]:
        del container["args"]
    pod: dict = {"containers": [container]}
    if opts.storage_uri:
        _storage(opts, pod, container)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": opts.replicas, "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": selector, "ports": [
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
            {"name": "http", "port": REST_PORT, "targetPort": "http"}]},
    }
    objects = [deployment, service]
    if opts.max_replicas:
        objects.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": labels},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": opts.replicas, "maxReplicas": opts.max_replicas,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 70}}}]},
        })
    return objects


# ----------------------------------------------------------------------------- kserve
def kserve_objects(plan: Plan, preflight: Preflight, opts: Options) -> list[dict]:
    """One InferenceService per model (KServe's TensorFlow runtime serves one model each)."""
    uri = (opts.storage_uri or "").rstrip("/")
    objects, seen = [], set()
    single = len(plan.models) == 1
    for model in plan.models:
        name = k8s_name(opts.name if single else f"{opts.name}-{model.name}")
        if name in seen:
            raise DeployError(f"two models map to the same InferenceService name {name!r}")
        seen.add(name)
        major = (preflight.tag.serving_version or (2, 0))[0]
        spec_model: dict = {
            "modelFormat": {"name": "tensorflow", "version": str(major)},
            "protocolVersion": "v1",
            "storageUri": f"{uri}/{model.name}",
            "resources": resources(preflight, opts.gpu),
        }
        if not opts.base_image:
            spec_model["runtimeVersion"] = preflight.tag.tag
        if plan.enable_batching:
            spec_model["args"] = ["--enable_batching=true"]
        predictor: dict = {"minReplicas": opts.replicas, "model": spec_model}
        if opts.max_replicas:
            predictor["maxReplicas"] = opts.max_replicas
        if opts.base_image:
            spec_model["image"] = opts.base_image
        objects.append({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "tfserve-deploy"},
                         "annotations": {"tfserve-magic/model-name": model.name}},
            "spec": {"predictor": predictor},
        })
    return objects


class _Dumper(yaml.SafeDumper):
    """Plain YAML: a dict used twice (the pod labels) is written twice, not as an &anchor."""

    def ignore_aliases(self, data) -> bool:
        return True


def _yaml(obj) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def yaml_documents(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def quote(text: str) -> str:
    return shlex.quote(text)


def model_lines(plan: Plan) -> list[str]:
    lines = []
    for model in plan.models:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(model.labels.items()))
        lines.append(f"- `{model.name}`: versions {', '.join(map(str, model.versions))}"
                     + (f" (labels {labels})" if labels else "") + f", from `{model.base_path}`")
    return lines


def describe_source(model: ModelSource) -> str:
    return f"{model.name} {model.versions}"
