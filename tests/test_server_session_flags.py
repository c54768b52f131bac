"""TF Serving's session, XLA, method-name and per-model batching flags (issue 22): command lines
that tensorflow_model_server accepts start and serve, with TF Serving's behaviour."""

from __future__ import annotations

import shutil
import subprocess

import requests

from tests.fixtures.server import server_command, server_env, start_server
from tests.helpers.warmup import MONITORING, metric, predict

SESSION_CONFIG = """
intra_op_parallelism_threads: 2
inter_op_parallelism_threads: 2
allow_soft_placement: true
gpu_options { allow_growth: true visible_device_list: "0" }
graph_options { optimizer_options { global_jit_level: ON_1 } }
operation_timeout_in_ms: 1000
"""

HALF_PARAMS = """
max_batch_size { value: 2 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 100 }
"""


def test_session_command_line_starts_and_serves(server_test_models, tmp_path):
    session = tmp_path / "session.pbtxt"
    session.write_text(SESSION_CONFIG)
    server = start_server(
        server_test_models["half"], "--enable_model_warmup=true",
        "--num_request_iterations_for_warmup=5", "--per_process_gpu_memory_fraction=0.5",
        f"--tensorflow_session_config_file={session}", "--tensorflow_intra_op_parallelism=3",
        "--xla_cpu_compilation_enabled=true", "--enable_signature_method_name_check=true",
        model_name="half", workdir=tmp_path)
    try:
        log = server.log()
        # server.cc: the thread flags overwrite the file (an unset one with 0, TF's choice)
        assert ("Session settings: intra_op_parallelism_threads=3 inter_op_parallelism_threads=0 "
                "per_process_gpu_memory_fraction=0.5") in log
        assert "Session config fields not applied by this server: operation_timeout_in_ms" in log
        assert "XLA JIT auto-clustering on (global_jit_level 1)" in log
        assert predict(server, "half", [2.0]).json() == {"predictions": [4.0]}
        # the method-name check: TF2 signatures are all named tensorflow/serving/predict
        body = requests.post(f"{server.url}/v1/models/half:classify", timeout=30, json={
            "signature_name": "classify", "examples": [{"x": 1.0}]}).json()
        assert body == {"error": "Expected classification signature method_name to be "
                                 "tensorflow/serving/classify. Was: tensorflow/serving/predict"}
    finally:
        server.stop()


def test_method_names_are_not_checked_by_default(server_test_models, tmp_path):
    server = start_server(server_test_models["half"], "--xla_gpu_compilation_enabled",
                          model_name="half", workdir=tmp_path)
    try:
        body = requests.post(f"{server.url}/v1/models/half:classify", timeout=30, json={
            "signature_name": "classify", "examples": [{"x": 0.0}]}).json()
        assert body["results"][0][0][0] == "neg"
    finally:
        server.stop()


def _run_to_exit(tmp_path, *flags, base=None) -> tuple[int, str]:
    cmd = server_command(base, *flags, model_name="half",
                         info_file=tmp_path / "never.json")
    done = subprocess.run(cmd, env=server_env(), capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def start_fails(tmp_path, base, flag: str, text: str) -> str:
    """Start with ``--flag=<a file holding text>``; the start must fail (exit 1): its output."""
    path = tmp_path / f"{flag}.pbtxt"
    path.write_text(text)
    code, out = _run_to_exit(tmp_path, f"--{flag}={path}", base=base)
    assert code == 1, out
    return out


def test_bad_session_config_stops_the_start(server_test_models, tmp_path):
    out = start_fails(tmp_path, server_test_models["half"], "tensorflow_session_config_file",
                      "intra_op_parallelism_threads: lots\n")
    assert "Failed to start server. Error: Error parsing text-format tensorflow.ConfigProto" in out


def test_flags_that_cannot_apply_are_still_refused(tmp_path):
    code, out = _run_to_exit(tmp_path, "--use_alts_credentials=true", base=tmp_path)
    assert code == 2
    assert "--use_alts_credentials is a tensorflow_model_server flag that this server does " \
           "not support" in out


def test_per_model_batching_parameters(server_test_models, tmp_path):
    """``half`` has a batching_params.pbtxt (max_batch_size 2) and is batched; ``strings`` has
    none and is not batched; the global file's sizes are ignored."""
    half = tmp_path / "half"
    shutil.copytree(server_test_models["half"] / "2", half / "2")
    (half / "2" / "batching_params.pbtxt").write_text(HALF_PARAMS)
    strings = tmp_path / "strings"
    shutil.copytree(server_test_models["strings"] / "1", strings / "1")
    import tfserve_magic as tfm

    tfm.write_warmup(half / "2", [1.0, 2.0], n=2)  # replayed through half's batching queue
    tfm.write_warmup(strings / "1", ["a"], n=1)  # replayed unbatched
    config = tmp_path / "models.pbtxt"
    config.write_text("model_config_list {\n"
                      f'  config {{ name: "half" base_path: "{half}" }}\n'
                      f'  config {{ name: "strings" base_path: "{strings}" }}\n}}\n')
    common = tmp_path / "batching.pbtxt"
    common.write_text("max_batch_size { value: 1 }\nnum_batch_threads { value: 2 }\n")
    monitoring = tmp_path / "monitoring.pbtxt"
    monitoring.write_text(MONITORING)
    server = start_server(None, "--enable_batching", "--enable_per_model_batching_parameters",
                          f"--batching_parameters_file={common}",
                          f"--monitoring_config_file={monitoring}", config_file=config,
                          workdir=tmp_path)
    try:
        for _ in range(3):
            assert predict(server, "half", [2.0, 4.0]).json() == {"predictions": [4.0, 5.0]}
        too_big = predict(server, "half", [1.0, 2.0, 3.0])
        assert too_big.status_code == 400
        assert too_big.json() == {"error": "Task size 3 is larger than maximum input batch "
                                           "size 2"}
        for _ in range(2):  # not batched: the global max_batch_size of 1 does not apply
            assert predict(server, "strings", ["a", "bc", "d"]).json()["predictions"][1][
                "length"] == 2
        # 2 warm-up records and 3 requests of half; none of strings
        assert metric(server, ":tensorflow:serving:batching_session:input_batch_size_count") == 5
        assert "Number of warmup records read: 1." in server.log()
    finally:
        server.stop()


def test_bad_per_model_batching_parameters_fail_the_load(server_test_models, tmp_path):
    half = tmp_path / "half"
    shutil.copytree(server_test_models["half"] / "2", half / "2")
    (half / "2" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 4 }\nallowed_batch_sizes: 2\n")
    code, out = _run_to_exit(tmp_path, "--enable_batching",
                             "--enable_per_model_batching_parameters", base=half)
    assert code == 1, out
    assert "the last entry in allowed_batch_sizes must match max_batch_size" in out
