"""`tfserve deploy`: recipes for real TF Serving (Docker, Kubernetes, KServe) and the preflight.

Real parts: real SavedModels (the tutorial MLP, tf.Module models, hand-written graphs with an
add-on op), the real preflight subprocess, our own server serving the generated models.config
with the container's flags. Kubernetes objects are checked with the official `kubernetes`
client's models, InferenceServices with KServe's published CRD schema (tests/data). Docker
itself is not available here: the docker test is opt-in (TFSERVE_DOCKER_TESTS=1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

import tfserve_magic as tfm
from tfserve_magic.deployment import DeployError, deploy
from tfserve_magic.deployment import preflight as preflight_mod
from tfserve_magic.deployment.tags import SERVING_RELEASES, choose_tag

DATA = Path(__file__).parent / "data"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# ----------------------------------------------------------------------------- helpers
def _tf_version():
    import tensorflow as tf

    return tf.__version__


def _expected_tag(version: str, gpu=False) -> str:
    major, minor = (int(p) for p in version.split(".")[:2])
    known = SERVING_RELEASES.get((major, minor)) or SERVING_RELEASES[max(SERVING_RELEASES)]
    return known + ("-gpu" if gpu else "")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


_K8S_TYPES = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
}


def _check_k8s(obj: dict) -> None:
    """Deserialize with the official client's models and require a lossless round trip.

    The models raise on a missing required field; a misspelled or unknown field would be
    dropped, and a wrong type converted, so the round trip must give back the same object.
    """
    from kubernetes import client

    api = client.ApiClient()
    model = api._ApiClient__deserialize(obj, _K8S_TYPES[obj["kind"]])
    assert api.sanitize_for_serialization(model) == obj


def _strict(schema):
    """KServe's structural schema with unknown fields rejected (like kubectl --validate=strict)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _check_isvc(obj: dict) -> None:
    import jsonschema

    doc = json.loads((DATA / "kserve" / "inferenceservice_v1beta1.schema.json").read_text())
    assert obj["apiVersion"] == f"{doc['group']}/{doc['version']}"
    assert obj["kind"] == doc["kind"]
    jsonschema.validate(obj, _strict(doc["openAPIV3Schema"]))
    assert DNS_1035.match(obj["metadata"]["name"])


def _container_flags(result, out: Path, scratch: Path) -> list[str]:
    """The container's tensorflow_model_server flags with /models remapped to out/models (in
    the model config's base paths too, through a remapped copy); ports are left to the test
    server, which picks free loopback ports."""
    models = out / "models"
    flags = []
    for flag in result.container_command[1:]:
        if flag.startswith(("--port=", "--rest_api_port=")):
            continue
        if flag.startswith("--model_config_file="):
            text = (models / "models.config").read_text()
            remapped = scratch / "models.remapped.config"
            remapped.write_text(text.replace('base_path: "/models/', f'base_path: "{models}/'))
            flags.append(f"--model_config_file={remapped}")
            continue
        flags.append(flag.replace("=/models/", f"={models}/"))
    return flags


# ----------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    """alpha v1 (y = x + 1), v2 (y = x + 2); beta v1 (y = 2x); fixed (batch exactly 2)."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("deploy-models")

    class Affine(tf.Module):
        def __init__(self, scale, offset, batch=None):
            super().__init__()
            self.scale = tf.Variable(scale)
            self.offset = tf.Variable(offset)
            spec = tf.TensorSpec([batch, 3], tf.float32, name="x")
            self.serve = tf.function(self._serve, input_signature=[spec])

        def _serve(self, x):
            return {"y": x * self.scale + self.offset}

    for name, version, scale, offset, batch in [
        ("alpha", 1, 1.0, 1.0, None), ("alpha", 2, 1.0, 2.0, None),
        ("beta", 1, 2.0, 0.0, None), ("fixed", 1, 1.0, 0.0, 2),
    ]:
        module = Affine(scale, offset, batch)
        tf.saved_model.save(module, str(root / name / str(version)),
                            signatures={"serving_default": module.serve})
    config = root / "models.config"
    config.write_text(
        f"""model_config_list {{
  config {{
    name: "alpha"
    base_path: "{root / 'alpha'}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "beta"
    base_path: "{root / 'beta'}"
    model_platform: "tensorflow"
  }}
}}
"""
    )
    return root


def _addon_model(base: Path, in_library: bool, op: str = "AddonWordpieceTokenize",
                 writer: str = "2.19.0") -> Path:
    """A SavedModel whose graph uses an op no stock TensorFlow registers (as tensorflow-text's
    ops are for a TensorFlow without tensorflow-text): written as a proto, no add-on needed.
    With ``op="Identity"`` it is a plain TF1-style graph that records ``writer``."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    meta = saved.meta_graphs.add()
    meta.meta_info_def.tags.append("serve")
    meta.meta_info_def.tensorflow_version = writer
    graph = meta.graph_def
    x = graph.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = types_pb2.DT_STRING
    if in_library:
        fn = graph.library.function.add()
        fn.signature.name = "tokenize_fn"
        fn.node_def.add(name="tok", op=op)
        graph.node.add(name="y", op="tokenize_fn", input=["x"])
    else:
        y = graph.node.add(name="y", op=op, input=["x"])
        if op == "Identity":
            y.attr["T"].type = types_pb2.DT_STRING
    sig = meta.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["text"].name = "x:0"
    sig.inputs["text"].dtype = types_pb2.DT_STRING
    sig.inputs["text"].tensor_shape.dim.add(size=-1)
    sig.outputs["ids"].name = "y:0"
    sig.outputs["ids"].dtype = types_pb2.DT_STRING if op == "Identity" else types_pb2.DT_INT64
    path = base / "1"
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(saved.SerializeToString())
    return base


# ----------------------------------------------------------------------------- image tags
@pytest.mark.parametrize(
    ("writer", "gpu", "tag", "warns"),
    [
        ("2.19.0", False, "2.19.0", False),
        ("2.19.1", True, "2.19.0-gpu", False),
        ("2.15.0", False, "2.15.1", False),  # no 2.15.0 release: the series' first
        ("2.16.2", False, "2.16.1", False),
        ("2.20.0", True, "2.20.0-gpu", False),
        ("2.21.0", False, "2.20.0", True),  # newer than any image: newest, with a warning
        ("2.22.0-dev20260101", False, "2.20.0", True),
        ("1.15.5", False, "1.15.0", False),
        ("1.4.0", False, "1.10.0", True),
        ("2.10.1", False, "2.10.0", False),
    ],
)
def test_image_tag_follows_the_tensorflow_that_wrote_the_model(writer, gpu, tag, warns):
    choice = choose_tag(writer, gpu=gpu)
    assert choice.tag == tag
    assert choice.image == f"tensorflow/serving:{tag}"
    assert bool(choice.notes) == warns


@pytest.mark.parametrize(("writer", "gpu", "tag"), [("2.15.0", False, "2.15.1"),
                                                   ("2.19.1", True, "2.19.0-gpu")])
def test_dockerfile_tag_follows_the_writer_recorded_in_the_saved_model(tmp_path, writer, gpu, tag):
    base = _addon_model(tmp_path / "echo", in_library=False, op="Identity", writer=writer)
    result = deploy("echo", base, target="docker", out=tmp_path / "out", gpu=gpu)
    assert result.preflight.ok, result.preflight.report()
    assert result.preflight.writer_versions == {"echo/1": writer}
    assert f"FROM tensorflow/serving:{tag}\n" in (tmp_path / "out" / "Dockerfile").read_text()
    assert ("--gpus all" in (tmp_path / "out" / "README.md").read_text()) == gpu


def test_image_tag_override_and_unknown_writer():
    older = choose_tag("2.19.0", override="2.17.0")
    assert older.tag == "2.17.0" and "older" in older.notes[0]
    assert choose_tag("2.19.0", override="2.20.0").notes == []
    assert "-gpu" in choose_tag("2.19.0", gpu=True, override="2.19.0").notes[0]
    unknown = choose_tag(None, fallback="2.18.1")
    assert unknown.tag == "2.18.0" and "does not record" in unknown.notes[0]
    assert choose_tag(None).tag == SERVING_RELEASES[max(SERVING_RELEASES)]


def test_release_table_has_one_released_tag_per_minor():
    for (major, minor), tag in SERVING_RELEASES.items():
        assert re.fullmatch(rf"{major}\.{minor}\.\d+", tag)


# ----------------------------------------------------------------------------- tutorial MLP
@pytest.fixture(scope="module")
def mlp_recipes(mlp_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlp-recipes")
    return {
        "docker": deploy("MLP", mlp_export, target="docker", out=root / "docker"),
        "kubernetes": deploy("MLP", mlp_export, target="kubernetes", out=root / "k8s",
                             replicas=2, max_replicas=5),
        "kserve": deploy("MLP", mlp_export, target="kserve", out=root / "kserve",
                         storage_uri="gs://bucket/models/"),
        "gpu": deploy("MLP", mlp_export, target="kubernetes", out=root / "gpu", gpu=True,
                      storage_uri="s3://bucket/models"),
    }


def test_mlp_docker_recipe(mlp_recipes, mlp_export):
    result = mlp_recipes["docker"]
    out = result.out
    tag = _expected_tag(_tf_version())
    assert result.preflight.ok and result.preflight.tag.tag == tag
    assert result.preflight.writer_versions == {"MLP/1": _tf_version()}
    dockerfile = (out / "Dockerfile").read_text()
    assert f"FROM tensorflow/serving:{tag}\n" in dockerfile
    assert "COPY models/ /models/" in dockerfile and "ENV MODEL_NAME=MLP" in dockerfile
    assert "CMD" not in dockerfile  # one model, one version, no labels: no models.config
    assert not (out / "models" / "models.config").exists()
    copied = out / "models" / "MLP" / "1"
    assert (copied / "saved_model.pb").read_bytes() == (mlp_export / "1" / "saved_model.pb").read_bytes()
    compose = yaml.safe_load((out / "compose.yaml").read_text())
    service = compose["services"]["mlp"]
    assert service["build"] == "." and service["ports"] == ["8500:8500", "8501:8501"]
    readme = (out / "README.md").read_text()
    assert f"docker build -t {result.image} ." in readme
    assert f"docker run --rm -p 8500:8500 -p 8501:8501 {result.image}" in readme
    assert "curl http://localhost:8501/v1/models/MLP" in readme
    body = json.loads((out / "smoke_request.json").read_text())
    assert len(body["inputs"]) == 1 and len(body["inputs"][0]) == 28
    assert os.access(out / "smoke_test.sh", os.X_OK)
    manifest = json.loads((out / ".tfserve-deploy.json").read_text())
    assert "Dockerfile" in manifest["files"] and "models/MLP/1/saved_model.pb" in manifest["files"]
    assert "Wrote the docker recipe" in repr(result)


def test_mlp_kubernetes_recipe_is_valid(mlp_recipes):
    result = mlp_recipes["kubernetes"]
    objects = _docs(result.out / "kubernetes.yaml")
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for obj in objects:
        _check_k8s(obj)
    deployment, service, hpa = objects
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == result.image  # baked: the image the Dockerfile builds
    assert (result.out / "Dockerfile").exists()
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v1/models/MLP", "port": "http"}
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    memory = container["resources"]["requests"]["memory"]
    assert re.fullmatch(r"\d+Mi", memory) and int(memory[:-2]) >= 256
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_mlp_gpu_variant_pulls_from_storage(mlp_recipes):
    result = mlp_recipes["gpu"]
    assert result.preflight.tag.tag == _expected_tag(_tf_version(), gpu=True)
    objects = _docs(result.out / "kubernetes.yaml")
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    for obj in objects:
        _check_k8s(obj)
    pod = objects[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"tensorflow/serving:{result.preflight.tag.tag}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (init,) = pod["initContainers"]
    assert init["args"] == ["s3://bucket/models", "/models"]
    assert not (result.out / "Dockerfile").exists()  # stock image, models from storage
    assert "aws s3 cp --recursive models s3://bucket/models" in (result.out / "README.md").read_text()


def test_mlp_kserve_recipe_matches_the_crd(mlp_recipes):
    result = mlp_recipes["kserve"]
    (isvc,) = _docs(result.out / "inferenceservice.yaml")
    _check_isvc(isvc)
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "tensorflow", "version": "2"}
    assert model["storageUri"] == "gs://bucket/models/MLP"
    assert model["runtimeVersion"] == _expected_tag(_tf_version())
    assert model["protocolVersion"] == "v1"
    assert isvc["metadata"]["name"] == "mlp"
    readme = (result.out / "README.md").read_text()
    assert "/v1/models/mlp:predict" in readme and "gsutil -m cp -r models/* gs://bucket/models/" in readme


def test_crd_schema_check_catches_mistakes():
    import jsonschema

    good = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "m"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                             "storageUri": "gs://b/m"}}}}
    _check_isvc(good)
    for bad in (
        {**good, "spec": {"predictor": {"model": {"modelFormat": {}}}}},  # name is required
        {**good, "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                                  "storageURI": "gs://b/m"}}}},  # misspelled
        {**good, "spec": {"predictor": {"minReplicas": "two"}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            _check_isvc(bad)
    with pytest.raises((ValueError, AssertionError)):
        _check_k8s({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                    "spec": {"ports": [{"name": "http", "prot": 80}]}})


# ----------------------------------------------------------------------------- several models
def test_multi_model_config_with_labels_serves_on_our_server(small_models, tmp_path, serve):
    out = tmp_path / "multi"
    result = deploy(config=small_models / "models.config", target="docker", out=out,
                    batching=True, monitoring=True)
    text = (out / "models" / "models.config").read_text()
    from tfserve_magic.server.config import parse_model_config

    specs = {s.name: s for s in parse_model_config(str(out / "models" / "models.config"))}
    assert specs["alpha"].base_path == "/models/alpha"
    assert specs["alpha"].versions == {1, 2} and specs["alpha"].labels == {"stable": 1, "canary": 2}
    assert specs["beta"].base_path == "/models/beta" and specs["beta"].policy == "latest"
    assert "tensorflow" in text
    dockerfile = (out / "Dockerfile").read_text()
    cmd = json.loads(dockerfile.split("CMD ", 1)[1].splitlines()[0])
    assert cmd == ["--model_config_file=/models/models.config", "--enable_batching=true",
                   "--batching_parameters_file=/models/batching.config",
                   "--monitoring_config_file=/models/monitoring.config"]
    assert result.container_command[:5] == [
        "tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
        "--model_name=alpha", "--model_base_path=/models/alpha"]
    assert result.container_command[5:] == cmd

    server = serve(None, *_container_flags(result, out, tmp_path))
    x = {"instances": [[1.0, 2.0, 3.0]]}
    for path, expected in [
        ("alpha/labels/stable", [2.0, 3.0, 4.0]),
        ("alpha/labels/canary", [3.0, 4.0, 5.0]),
        ("alpha", [3.0, 4.0, 5.0]),
        ("beta", [2.0, 4.0, 6.0]),
    ]:
        reply = requests.post(f"{server.url}/v1/models/{path}:predict", json=x, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["predictions"] == [expected]
    # the recipe's second port: TF Serving's gRPC API, through the official stubs
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "alpha"
    request.model_spec.version_label = "canary"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0, 3.0]], dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{server.info['grpc_port']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(request, timeout=30)
    assert tf.make_ndarray(reply.outputs["y"]).tolist() == [[3.0, 4.0, 5.0]]
    metrics = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30)
    assert metrics.status_code == 200
    smoke = subprocess.run(["sh", str(out / "smoke_test.sh"), server.url],
                           capture_output=True, text=True, timeout=60)
    if shutil.which("curl"):
        assert smoke.returncode == 0, smoke.stderr
        assert "smoke test passed" in smoke.stdout


def test_multi_model_kubernetes_and_kserve(small_models, tmp_path):
    k8s = deploy("multi", config=small_models / "models.config", target="kubernetes",
                 out=tmp_path / "k8s", storage_uri="pvc://models-claim/serving")
    objects = _docs(k8s.out / "kubernetes.yaml")
    for obj in objects:
        _check_k8s(obj)
    pod = objects[0]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"] == [{"name": "models", "persistentVolumeClaim": {
        "claimName": "models-claim", "readOnly": True}}]
    assert pod["containers"][0]["volumeMounts"][0]["subPath"] == "serving"
    assert pod["containers"][0]["args"] == ["--model_config_file=/models/models.config"]

    kserve = deploy("multi", config=small_models / "models.config", target="kserve",
                    out=tmp_path / "kserve", storage_uri="s3://b/p", replicas=2, max_replicas=4)
    isvcs = _docs(kserve.out / "inferenceservice.yaml")
    assert [i["metadata"]["name"] for i in isvcs] == ["multi-alpha", "multi-beta"]
    for isvc in isvcs:
        _check_isvc(isvc)
        assert isvc["spec"]["predictor"]["minReplicas"] == 2
        assert isvc["spec"]["predictor"]["maxReplicas"] == 4
    assert isvcs[1]["spec"]["predictor"]["model"]["storageUri"] == "s3://b/p/beta"
    dropped = [f for f in kserve.preflight.findings if "not carried" in f.text]
    assert len(dropped) == 1 and dropped[0].text.startswith("alpha:")
    assert "not carried" in (kserve.out / "README.md").read_text()


def test_gpu_compose_reserves_a_gpu():
    from tfserve_magic.deployment.sources import ModelSource, Plan
    from tfserve_magic.deployment.targets import Options, compose

    plan = Plan([ModelSource("MLP", Path("/x"), [1])], origin="test")
    service = yaml.safe_load(compose(plan, Options("docker", "MLP", gpu=True), "img"))
    devices = service["services"]["mlp"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    plain = yaml.safe_load(compose(plan, Options("docker", "MLP"), "img"))
    assert "deploy" not in plain["services"]["mlp"]


def test_deploy_is_rerunnable_and_prunes_its_own_stale_files(small_models, tmp_path):
    out = tmp_path / "again"
    deploy(config=small_models / "models.config", target="docker", out=out)
    assert (out / "models" / "alpha" / "2").is_dir()
    deploy("alpha", small_models / "alpha", target="docker", out=out)  # ours: overwritten
    assert not (out / "models" / "alpha" / "1").exists()
    assert not (out / "models" / "models.config").exists()
    assert "ENV MODEL_NAME=alpha" in (out / "Dockerfile").read_text()


# ----------------------------------------------------------------------------- preflight
@pytest.mark.parametrize("in_library", [False, True])
def test_addon_ops_are_refused_with_the_fix(tmp_path, in_library):
    base = _addon_model(tmp_path / "text", in_library)
    out = tmp_path / "out"
    with pytest.raises(DeployError) as err:
        deploy("text", base, target="docker", out=out)
    message = str(err.value)
    assert "AddonWordpieceTokenize" in message and "--base-image" in message
    assert "nothing was written" in message
    assert not out.exists()
    # with a custom image that links the op in, it is a warning and the recipe is written
    result = deploy("text", base, target="docker", out=out, base_image="me/serving-text:1")
    assert "FROM me/serving-text:1" in (out / "Dockerfile").read_text()
    assert any("AddonWordpieceTokenize" in f.text for f in result.preflight.findings)
    assert result.preflight.writer_versions == {"text/1": "2.19.0"}


def test_core_ops_are_not_flagged(small_models):
    data = preflight_mod.run_probe([str(small_models / "alpha" / "1")])
    entry = data["models"][str(small_models / "alpha" / "1")]
    assert entry["unknown_ops"] == []
    assert {"MatMul", "Mul"} & set(entry["ops"]) or "AddV2" in entry["ops"]
    assert entry["loader"] in ("tf2", "session") and entry["rss_delta_bytes"] >= 0


def test_fixed_batch_dimension_warns_and_blocks_batching(small_models, tmp_path):
    result = deploy("fixed", small_models / "fixed", target="docker", out=tmp_path / "a")
    warnings = [f for f in result.preflight.findings if "fixed first dimension 2" in f.text]
    assert warnings and warnings[0].level == "warning"
    with pytest.raises(DeployError, match="batching needs one"):
        deploy("fixed", small_models / "fixed", target="docker", out=tmp_path / "b", batching=True)
    assert not (tmp_path / "b").exists()


def test_session_only_models_are_a_note(monkeypatch, small_models):
    path = str(small_models / "beta" / "1")
    fake = {"tf_version": "2.21.0", "models": {path: {
        "tensorflow_version": "1.15.0", "ops": ["MatMul"], "unknown_ops": [],
        "signatures": {}, "loader": "session", "rss_delta_bytes": 0}}}
    monkeypatch.setattr(preflight_mod, "run_probe", lambda paths, **kw: fake)
    from tfserve_magic.deployment.sources import from_base_path

    checked = preflight_mod.check(from_base_path("beta", small_models / "beta"))
    assert checked.ok and checked.tag.tag == "1.15.0"
    (note,) = [f for f in checked.findings if "session fallback" in f.text]
    assert note.level == "note"


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_clear_errors_and_write_nothing(tmp_path, small_models):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (dict(name="m", base_path=tmp_path / "missing", target="docker"), "does not exist"),
        (dict(name="m", base_path=empty, target="docker"), "holds no model versions"),
        (dict(name="m", base_path=small_models / "beta", target="helm"), "unknown target"),
        (dict(name="m", base_path=small_models / "beta", target="kserve"), "--storage-uri"),
        (dict(name="m", base_path=small_models / "beta", target="kubernetes",
              storage_uri="ftp://x"), "must start with"),
        (dict(name="m", base_path=small_models / "beta", target="docker", replicas=0),
         "--replicas"),
        (dict(name="bad name", base_path=small_models / "beta", target="docker"), "model name"),
        (dict(name="nosuchserver", target="docker"), "no running server"),
        (dict(name="m", base_path=small_models / "beta", target="docker",
              out=small_models / "beta" / "1" / "deploy"), "inside the model version"),
        (dict(name="m", base_path=small_models / "beta", target="docker",
              batching=tmp_path / "nope.txt"), "Cannot read batching"),
    ]
    for kwargs, text in cases:
        target_out = kwargs.pop("out", out)
        with pytest.raises(DeployError, match=re.escape(text)):
            deploy(out=target_out, **kwargs)
        assert not target_out.exists(), kwargs
    bad_labels = tmp_path / "bad.config"
    bad_labels.write_text(
        f'model_config_list {{ config {{ name: "beta" base_path: "{small_models / "beta"}" '
        'version_labels { key: "stable" value: 7 } } }')
    with pytest.raises(DeployError, match="labels point at versions"):
        deploy(config=bad_labels, target="docker", out=out)
    assert not out.exists()


def test_existing_files_are_not_overwritten_without_force(tmp_path, small_models):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    with pytest.raises(DeployError, match="did not write: README.md"):
        deploy("beta", small_models / "beta", target="docker", out=out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]
    assert (out / "README.md").read_text() == "my notes\n"
    deploy("beta", small_models / "beta", target="docker", out=out, force=True)
    assert "# beta on TensorFlow Serving" in (out / "README.md").read_text()


# ----------------------------------------------------------------------------- entry points
def test_cli_and_public_api(tmp_path, small_models):
    import tfserve_magic.deployment  # noqa: F401 - the package's own name; tfm.deploy stays a function

    assert tfm.deploy("beta", small_models / "beta", target="docker", out=tmp_path / "api").out
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    batching = tmp_path / "batching.pbtxt"
    batching.write_text("max_batch_size { value: 16 }\n")
    ok = subprocess.run(
        [sys.executable, "-m", "tfserve_magic", "deploy", "--batching-file", str(batching),
         "beta", str(small_models / "beta"),
         "--target", "kubernetes", "--out", str(tmp_path / "cli"), "--replicas", "3"],
        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "Wrote the kubernetes recipe" in ok.stdout
    deployment = _docs(tmp_path / "cli" / "kubernetes.yaml")[0]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--enable_batching=true", "--batching_parameters_file=/models/batching.config"]
    assert (tmp_path / "cli" / "models" / "batching.config").read_text() == batching.read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "tfserve_magic", "deploy", "beta", str(tmp_path / "nope"),
         "--target", "docker", "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_magic_deploys_a_running_server(shell, small_models, tmp_path):
    from IPython.core.error import UsageError

    from tfserve_magic import manager

    batching = tmp_path / "batching.pbtxt"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500 }\n")
    monitoring = tmp_path / "monitoring.pbtxt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    handle = manager.start("multi", config=str(small_models / "models.config"), port=0,
                           extra_args=["--enable_batching", f"--batching_parameters_file={batching}",
                                       f"--monitoring_config_file={monitoring}"])
    try:
        result = shell.run_line_magic(
            "tfserve", f"deploy multi --target docker --out {tmp_path / 'from-server'}")
    finally:
        manager.stop(handle.name)
    out = result.out
    assert (out / "models" / "batching.config").read_text() == batching.read_text()
    assert (out / "models" / "monitoring.config").read_text() == monitoring.read_text()
    assert "--monitoring_config_file=/models/monitoring.config" in (out / "Dockerfile").read_text()
    specs = (out / "models" / "models.config").read_text()
    assert 'key: "canary"' in specs and "/models/beta" in specs
    assert sorted(p.name for p in (out / "models" / "alpha").iterdir()) == ["1", "2"]
    assert "--enable_batching=true" in (out / "Dockerfile").read_text()
    with pytest.raises(UsageError, match="no running server"):
        shell.run_line_magic("tfserve", f"deploy multi --target docker --out {tmp_path / 'x'}")
    with pytest.raises(UsageError, match="--target"):
        shell.run_line_magic("tfserve", "deploy multi --out x")


# ----------------------------------------------------------------------------- docker (opt-in)
def _docker_ok() -> bool:
    if os.environ.get("TFSERVE_DOCKER_TESTS") != "1" or not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _docker_ok(), reason="needs TFSERVE_DOCKER_TESTS=1 and a docker daemon")
def test_docker_image_builds_runs_and_passes_its_smoke_test(mlp_recipes):
    import socket
    import time

    result = mlp_recipes["docker"]
    tag = "tfserve-deploy-test:latest"
    subprocess.run(["docker", "build", "-t", tag, str(result.out)], check=True, timeout=1200)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    container = subprocess.run(["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8501", tag],
                               check=True, capture_output=True, text=True).stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/v1/models/MLP", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        smoke = subprocess.run(["sh", str(result.out / "smoke_test.sh"), url],
                               capture_output=True, text=True, timeout=60)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True)


def test_a_session_only_model_deploys_with_a_note(tmp_path):
    """With the session fallback (server.models.loader_kind) and TF Serving's own TF1 test
    model saved_model_counter (tests/data/tfserving, written by TF 1.5), the preflight notes
    that only the fallback loads it here, and the image follows its old TensorFlow."""
    from tfserve_magic.server import models

    counter = Path(__file__).parent / "data" / "tfserving" / "saved_model_counter"
    if not hasattr(models, "loader_kind") or not counter.is_dir():
        pytest.skip("needs the session fallback and tests/data/tfserving")
    result = deploy("counter", counter, target="docker", out=tmp_path / "out")
    assert any("session fallback" in f.text and f.level == "note"
               for f in result.preflight.findings)
    assert result.preflight.tag.tag.startswith("1.")
    assert (tmp_path / "out" / "models" / "counter" / "00000123" / "saved_model.pb").exists()


def test_zero_padded_version_folders_are_kept(small_models, tmp_path):
    base = tmp_path / "padded"
    shutil.copytree(small_models / "beta" / "1", base / "0007")
    result = deploy("padded", base, target="docker", out=tmp_path / "out")
    assert (result.out / "models" / "padded" / "0007" / "saved_model.pb").exists()
    assert list(result.preflight.writer_versions) == ["padded/7"]


def test_a_model_that_does_not_load_is_refused(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    base = _addon_model(tmp_path / "broken", in_library=False, op="Identity")
    pb = base / "1" / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    del saved.meta_graphs[0].graph_def.node[1].attr["T"]  # Identity without its type attr
    pb.write_bytes(saved.SerializeToString())
    with pytest.raises(DeployError, match="does not load here") as err:
        deploy("broken", base, target="docker", out=tmp_path / "out")
    assert "re-export the model" in str(err.value)
    assert not (tmp_path / "out").exists()
