"""gRPC ModelService.HandleReloadConfigRequest, END versions and hot swaps under gRPC load,
against real server subprocesses; and the start-up flags of the gRPC front end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.fixtures.server import server_command, server_env, start_server

INVALID = grpc.StatusCode.INVALID_ARGUMENT
State = get_model_status_pb2.ModelVersionStatus


def _stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.info['grpc_port']}")
    return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def _predict(stub, name, x=2.0, timeout=10):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([x], np.float32)))
    response = stub.Predict(request, timeout)
    return response.model_spec.version.value, response.outputs["y"].float_val[0]


def _reload(model_stub, *configs, timeout=60, metric_names=()):
    request = model_management_pb2.ReloadConfigRequest(metric_names=list(metric_names))
    request.config.model_config_list.SetInParent()
    for name, base_path, extra in configs:
        cfg = request.config.model_config_list.config.add(name=name, base_path=str(base_path))
        cfg.model_platform = extra.pop("model_platform", "tensorflow")
        for key, value in extra.items():
            if key == "labels":
                for label, version in value.items():
                    cfg.version_labels[label] = version
            else:
                setattr(cfg, key, value)
    return model_stub.HandleReloadConfigRequest(request, timeout)


def _status(model_stub, name):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    return [(s.version, s.state, s.status.error_code)
            for s in model_stub.GetModelStatus(request, 10).model_version_status]


def test_reload_adds_and_removes_models(server_test_models, tmp_path):
    half = tmp_path / "half"
    shutil.copytree(server_test_models["half"] / "1", half / "1")
    server = start_server(half, "--file_system_poll_wait_seconds=0.2", model_name="half",
                          workdir=tmp_path)
    channel, stub, model_stub = _stubs(server)
    try:
        assert _predict(stub, "half") == (1, 3.0)
        response = _reload(
            model_stub, ("half", half, {}), ("strings", server_test_models["strings"], {}),
            metric_names=[":tensorflow:cc:saved_model:load_attempt_count", "unknown"],
        )
        assert response.status.error_code == 0 and response.status.error_message == ""
        assert [(m.name, m.int64_value_increase) for m in response.metric] == [
            (":tensorflow:cc:saved_model:load_attempt_count", 1), ("unknown", 0)]
        # New models are available when the call returns; REST sees the same change.
        assert _status(model_stub, "strings") == [(1, State.AVAILABLE, 0)]
        # Replace, not merge: "half" goes away.
        _reload(model_stub, ("strings", server_test_models["strings"], {}))
        with pytest.raises(grpc.RpcError) as info:
            _predict(stub, "half")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "Servable not found for request: Latest(half)"
        # Re-sending the current config is harmless; labels on available versions are fine.
        _reload(model_stub, ("strings", server_test_models["strings"], {"labels": {"ok": 1}}))
        _reload(model_stub, ("strings", server_test_models["strings"], {"labels": {"ok": 1}}))
    finally:
        channel.close()
        assert server.stop() == 0


def test_reload_errors(server_test_models, tmp_path):
    half = server_test_models["half"]
    server = start_server(half, model_name="half", workdir=tmp_path)
    channel, stub, model_stub = _stubs(server)

    def error(*configs, request=None):
        with pytest.raises(grpc.RpcError) as info:
            if request is not None:
                model_stub.HandleReloadConfigRequest(request, 30)
            else:
                _reload(model_stub, *configs, timeout=30)
        return info.value.code(), info.value.details()

    try:
        unsupported = (INVALID, "ServerModelConfig type not supported by "
                       "HandleReloadConfigRequest. Only ModelConfigList is currently supported")
        assert error(request=model_management_pb2.ReloadConfigRequest()) == unsupported
        custom = model_management_pb2.ReloadConfigRequest()
        custom.config.custom_model_config.type_url = "x"
        assert error(request=custom) == unsupported
        assert error(("a", half, {}), ("a", half, {})) == (
            INVALID, "Illegal to list model a multiple times in config list")
        assert error(("a", "relative/path", {})) == (
            INVALID, "Expected model a to have an absolute path or URI; got base_path()="
            "relative/path")
        assert error(("half", half, {"model_platform": "pytorch"})) == (
            INVALID, "Illegal to change a model's platform. For model half platform was "
            "tensorflow and new platform requested is pytorch")
        assert error(("half", half, {"model_platform": ""})) == (
            INVALID, "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is half")
        assert error(("half", half, {"labels": {"old": 1}})) == (
            grpc.StatusCode.FAILED_PRECONDITION, "Request to assign label to version 1 of model "
            "half, which is not currently available for inference")
        assert error(("new", half, {"model_platform": "pytorch"})) == (
            INVALID, "Model new requests unsupported platform pytorch")
        broken = tmp_path / "broken"
        (broken / "1").mkdir(parents=True)
        (broken / "1" / "saved_model.pb").write_bytes(b"not a proto")
        code, details = error(("half", half, {}), ("broken", broken, {}))
        assert code == grpc.StatusCode.UNKNOWN
        assert details.startswith("1 model(s) did not become available: {{name: broken version: 1}")
        assert _predict(stub, "half") == (2, 4.0)  # still serving
    finally:
        channel.close()
        assert server.stop() == 0


def test_end_versions_and_hot_swap_under_grpc_load(server_test_models, tmp_path):
    base = tmp_path / "half"
    shutil.copytree(server_test_models["half"] / "1", base / "1")
    server = start_server(base, "--file_system_poll_wait_seconds=0.2", model_name="half",
                          workdir=tmp_path)
    channel, stub, model_stub = _stubs(server)
    stop = threading.Event()
    failures: list[str] = []
    seen: set[int] = set()
    counts = [0]

    def load():
        with grpc.insecure_channel(f"127.0.0.1:{server.info['grpc_port']}") as own:
            own_stub = prediction_service_pb2_grpc.PredictionServiceStub(own)
            while not stop.is_set():
                try:
                    version, y = _predict(own_stub, "half")
                    seen.add(version)
                    counts[0] += 1
                    if y != {1: 3.0, 2: 4.0}[version]:
                        failures.append(f"version {version} answered {y}")
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        shutil.copytree(server_test_models["half"] / "2", base / "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _status(model_stub, "half")[-1][1] != State.END:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    try:
        assert failures == []
        assert seen == {1, 2} and counts[0] > 20
        assert _status(model_stub, "half") == [(2, State.AVAILABLE, 0), (1, State.END, 0)]
    finally:
        channel.close()
        assert server.stop() == 0


def test_explicit_port_taken_fails_start(server_test_models, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        cmd = server_command(server_test_models["half"], model_name="half")
        cmd = [c for c in cmd if c != "--port=0"] + [f"--port={port}"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                env=server_env())
    assert result.returncode == 1
    assert "Failed to BuildAndStart gRPC server" in result.stderr


def test_port_minus_one_serves_rest_only(server_test_models, tmp_path):
    import requests

    server = start_server(server_test_models["half"], "--port=-1", model_name="half",
                          workdir=tmp_path)
    try:
        assert server.info["grpc_port"] is None
        assert requests.get(f"{server.url}/v1/models/half", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0


def test_grpc_and_rest_share_the_batching_queue(server_test_models, tmp_path):
    import concurrent.futures

    import requests

    params = tmp_path / "batching.pbtxt"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 5000 }\n"
                      "num_batch_threads { value: 1 }\n")
    server = start_server(server_test_models["half"], "--enable_batching",
                          f"--batching_parameters_file={params}", model_name="half",
                          workdir=tmp_path)
    channel, stub, _ = _stubs(server)
    try:
        def grpc_call(x):
            return _predict(stub, "half", x)[1]

        def rest_call(x):
            reply = requests.post(f"{server.url}/v1/models/half:predict",
                                  json={"instances": [x]}, timeout=30)
            return reply.json()["predictions"][0]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(grpc_call if i % 2 else rest_call, float(i))
                       for i in range(32)]
            answers = [f.result() for f in futures]
        assert answers == [0.5 * i + 3.0 for i in range(32)]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros(9, np.float32)))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, 10)
        assert info.value.code() == INVALID
        assert info.value.details().startswith(
            "Task size 9 is larger than maximum input batch size 8")
    finally:
        channel.close()
        assert server.stop() == 0
