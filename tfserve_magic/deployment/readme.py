"""The README.md written next to each recipe: exact commands, smoke test, what changes."""

from __future__ import annotations

from tfserve_magic.deployment.preflight import Preflight
from tfserve_magic.deployment.sources import Plan
from tfserve_magic.deployment.targets import (
    GRPC_PORT,
    REST_PORT,
    Options,
    base_image,
    k8s_name,
    model_lines,
)


def _head(plan: Plan, preflight: Preflight, opts: Options, what: str) -> list[str]:
    lines = [
        f"# {opts.name} on TensorFlow Serving ({what})",
        "",
        f"Written by `tfserve deploy` from {plan.origin}.",
        "",
        "Models:",
        "",
        *model_lines(plan),
        "",
        f"Image: `{base_image(opts, preflight)}` (the tag follows the TensorFlow version that "
        "wrote the model; see tfserve_magic's docs/deploy.md).",
        "",
        "Preflight:",
        "",
        "```",
        preflight.report(),
        "```",
        "",
    ]
    return lines


def _smoke(plan: Plan, url: str, has_body: bool) -> list[str]:
    first = plan.models[0].name
    lines = ["Smoke test (status, then one predict of zeros):", "", "```sh",
             f"./smoke_test.sh {url}", "```", "", "or by hand:", "", "```sh",
             f"curl {url}/v1/models/{first}"]
    if has_body:
        lines.append("curl -X POST -H 'Content-Type: application/json' "
                     f"-d @smoke_request.json {url}/v1/models/{first}:predict")
    lines += ["```", ""]
    return lines


_CLIENTS = [
    "Clients do not change: the REST API (`/v1/models/NAME[:predict|:classify|:regress]`,",
    "status, metadata, labels) and the gRPC API are TF Serving's, which is what",
    "`tfserve_magic.Client`, `%%predict`, `curl` or `tensorflow-serving-api` already spoke to.",
    "Only the address changes.",
    "",
]


def docker_readme(plan, preflight, opts, image, has_body) -> str:
    gpus = "--gpus all " if opts.gpu else ""
    lines = _head(plan, preflight, opts, "Docker")
    lines += [
        "## Build and run", "", "```sh",
        f"docker build -t {image} .",
        f"docker run --rm {gpus}-p {GRPC_PORT}:{GRPC_PORT} -p {REST_PORT}:{REST_PORT} {image}",
        "```", "",
        "or `docker compose up --build` (compose.yaml).", "",
        *_smoke(plan, f"http://localhost:{REST_PORT}", has_body),
        *_CLIENTS,
    ]
    if opts.gpu:
        lines += ["`--gpus all` needs the NVIDIA Container Toolkit on the host.", ""]
    return "\n".join(lines)


def kubernetes_readme(plan, preflight, opts, image, has_body) -> str:
    name = k8s_name(opts.name)
    lines = _head(plan, preflight, opts, "Kubernetes")
    if opts.storage_uri:
        lines += [
            "## Upload the models", "",
            f"The pods pull `models/` from `{opts.storage_uri}` (stock image, no build):", "",
            "```sh", _upload(opts.storage_uri), "```", "",
        ]
        if not opts.storage_uri.startswith("pvc://"):
            lines += ["The init container is KServe's storage-initializer; give it credentials "
                      "the usual way (workload identity, or GOOGLE_APPLICATION_CREDENTIALS / "
                      "AWS_* environment variables from a Secret).", ""]
    else:
        lines += [
            "## Build and push the image", "",
            "The model is baked into the image (Dockerfile); push it where the cluster pulls from:",
            "", "```sh", f"docker build -t {image} .", f"docker push {image}", "```", "",
            f"(`{image}` is the name in kubernetes.yaml; pass `--image REGISTRY/NAME:TAG` to "
            "tfserve deploy to write another.)", "",
        ]
    lines += [
        "## Deploy", "", "```sh", "kubectl apply -f kubernetes.yaml",
        f"kubectl rollout status deployment/{name}",
        f"kubectl port-forward service/{name} {REST_PORT}:{REST_PORT} {GRPC_PORT}:{GRPC_PORT}",
        "```", "",
        f"Readiness and liveness probes call `GET /v1/models/{plan.models[0].name}`; memory "
        "requests come from the model's measured resident memory (docs/deploy.md).", "",
        *_smoke(plan, f"http://localhost:{REST_PORT}", has_body),
        *_CLIENTS,
    ]
    return "\n".join(lines)


def kserve_readme(plan, preflight, opts, objects, has_body) -> str:
    lines = _head(plan, preflight, opts, "KServe")
    lines += ["## Upload the models", "",
              f"Each InferenceService reads its model's numbered versions from "
              f"`{opts.storage_uri.rstrip('/')}/<MODEL>`:", "",
              "```sh", _upload(opts.storage_uri), "```", "",
              "## Deploy", "", "```sh", "kubectl apply -f inferenceservice.yaml"]
    for obj in objects:
        lines.append(f"kubectl wait --for=condition=Ready inferenceservice/{obj['metadata']['name']}")
    lines += ["```", "", "## Call it", "",
              "KServe's V1 protocol for TensorFlow is TF Serving's REST API, served by TF "
              "Serving itself. The model name in the URL is the InferenceService's name:", ""]
    for obj in objects:
        isvc = obj["metadata"]["name"]
        model = obj["metadata"]["annotations"]["tfserve-magic/model-name"]
        lines += ["```sh",
                  f"HOST=$(kubectl get inferenceservice {isvc} -o jsonpath='{{.status.url}}' "
                  "| cut -d/ -f3)",
                  f"curl -H \"Host: $HOST\" http://$INGRESS_HOST:$INGRESS_PORT/v1/models/{isvc}"]
        if has_body and model == plan.models[0].name:
            lines.append(f"curl -H \"Host: $HOST\" -H 'Content-Type: application/json' "
                         f"-d @smoke_request.json "
                         f"http://$INGRESS_HOST:$INGRESS_PORT/v1/models/{isvc}:predict")
        lines += ["```", ""]
        if isvc != model:
            lines += [f"Model `{model}` is served as `{isvc}` (Kubernetes names are lowercase): "
                      f"clients use `/v1/models/{isvc}`, e.g. "
                      f"`tfserve_magic.Client('http://HOST', model='{isvc}')`.", ""]
    lines += ["Everything else in the request and response is unchanged.", ""]
    return "\n".join(lines)


def _upload(uri: str) -> str:
    uri = uri.rstrip("/")
    if uri.startswith("gs://"):
        return f"gsutil -m cp -r models/* {uri}/"
    if uri.startswith("s3://"):
        return f"aws s3 cp --recursive models {uri}"
    claim, _, sub = uri[len("pvc://"):].partition("/")
    return (f"# copy models/* into the volume of PersistentVolumeClaim {claim}"
            + (f", folder {sub}" if sub else "") + ", e.g. with `kubectl cp` through a pod "
            "that mounts it")
