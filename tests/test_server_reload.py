"""Versions and hot reload: polling, policies, failed loads, config-file reload, labels."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import requests

from tests.fixtures.server import server_command, server_env, start_server
from tests.helpers.serving import publish, states, wait_for


@pytest.fixture(scope="module")
def reloading(server_test_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("reload")
    base = work / "half"
    base.mkdir()
    publish(server_test_models["half"] / "1", base, 1)
    (base / "not-a-version").mkdir()  # a non-numeric folder is ignored
    server = start_server(base, "--file_system_poll_wait_seconds=1", model_name="half",
                          workdir=work)
    yield server, base
    server.stop()


def test_hot_reload_under_load_loses_no_request(reloading, server_test_models):
    server, base = reloading
    assert states(server, "half") == {"1": ("AVAILABLE", "OK")}
    results, failures, stop = [], [], threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(f"{server.url}/v1/models/half:predict",
                                        json={"instances": [2.0]}, timeout=30)
                if response.status_code != 200:
                    failures.append((response.status_code, response.text))
                else:
                    results.append(response.json()["predictions"][0])

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(results) > 10, "requests to version 1")
        publish(server_test_models["half"] / "2", base, 2)
        wait_for(lambda: results and results[-1] == 4.0, "version 2 to serve")
        wait_for(lambda: len(results) > 20 and results[-10:] == [4.0] * 10, "steady version 2")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert set(results) == {3.0, 4.0}
    first_v2 = results.index(4.0)
    assert 3.0 not in results[first_v2 + 20:], "old version still answering after the swap"
    wait_for(lambda: states(server, "half") == {"2": ("AVAILABLE", "OK"), "1": ("END", "OK")},
             "version 1 to be unloaded")
    pinned = requests.post(f"{server.url}/v1/models/half/versions/1:predict",
                           json={"instances": [2.0]})
    assert pinned.status_code == 404
    assert "Unloading servable version {name: half version: 1}" in server.log()


def test_failed_version_shows_end_and_previous_keeps_serving(reloading, server_test_models):
    server, base = reloading
    wait_for(lambda: states(server, "half").get("2") == ("AVAILABLE", "OK"), "version 2")
    broken = base / "tmp-broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    broken.rename(base / "3")
    wait_for(lambda: states(server, "half").get("3", ("",))[0] == "END", "version 3 to fail")
    body = requests.get(f"{server.url}/v1/models/half/versions/3").json()
    status = body["model_version_status"][0]["status"]
    assert status["error_code"] != "OK" and status["error_message"]
    response = requests.post(f"{server.url}/v1/models/half:predict", json={"instances": [2.0]})
    assert response.json() == {"predictions": [4.0]}
    assert states(server, "half")["2"] == ("AVAILABLE", "OK")
    # Replacing the broken folder (remove, then publish a good export) retries the version.
    shutil.rmtree(base / "3")
    time.sleep(1.5)  # let one poll see it gone
    publish(server_test_models["half"] / "1", base, 3)
    wait_for(lambda: states(server, "half").get("3") == ("AVAILABLE", "OK"), "version 3 retry")
    wait_for(lambda: requests.post(f"{server.url}/v1/models/half:predict",
                                   json={"instances": [2.0]}).json() == {"predictions": [3.0]},
             "the re-exported version 3 to serve")


def test_config_file_reload_policies_and_labels(server_test_models, tmp_path):
    config = tmp_path / "models.config"

    def write(text):
        tmp = tmp_path / "models.config.tmp"
        tmp.write_text(text)
        tmp.rename(config)

    half, strings = server_test_models["half"], server_test_models["strings"]
    write(f"""
model_config_list {{
  config {{
    name: "half" base_path: "{half}"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}""")
    server = start_server(None, "--model_config_file_poll_wait_seconds=1",
                          config_file=config, workdir=tmp_path)
    try:
        assert states(server, "half") == {"1": ("AVAILABLE", "OK")}
        stable = requests.post(f"{server.url}/v1/models/half/labels/stable:predict",
                               json={"instances": [2.0]})
        assert stable.json() == {"predictions": [3.0]}
        assert requests.get(f"{server.url}/v1/models/strings").status_code == 404
        write(f"""
model_config_list {{
  config {{
    name: "half" base_path: "{half}"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "strings" base_path: "{strings}" }}
}}""")
        wait_for(lambda: requests.get(f"{server.url}/v1/models/strings").status_code == 200,
                 "the added model")
        wait_for(lambda: requests.post(f"{server.url}/v1/models/half/labels/canary:predict",
                                       json={"instances": [2.0]}).status_code == 200,
                 "the canary label")
        canary = requests.post(f"{server.url}/v1/models/half/labels/canary:predict",
                               json={"instances": [2.0]})
        assert canary.json() == {"predictions": [4.0]}
        assert states(server, "half") == {"2": ("AVAILABLE", "OK"), "1": ("AVAILABLE", "OK")}
        write(f"""
model_config_list {{
  config {{ name: "strings" base_path: "{strings}" }}
}}""")
        wait_for(lambda: requests.post(f"{server.url}/v1/models/half:predict",
                                       json={"instances": [2.0]}).status_code == 404,
                 "the removed model to be unloaded")
        # A broken config on reload is logged and the current one kept.
        write("model_config_list { config { name: ")
        wait_for(lambda: "Config reload failed" in server.log(), "the reload error")
        assert requests.get(f"{server.url}/v1/models/strings").status_code == 200
    finally:
        assert server.stop() == 0


def test_labels_need_available_versions_unless_allowed(server_test_models, tmp_path):
    config = tmp_path / "labels.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "half" base_path: "{server_test_models['half']}"
    version_labels {{ key: "old" value: 1 }}
  }}
}}""")
    result = subprocess.run(server_command(None, config_file=config), capture_output=True,
                            text=True, timeout=90, env=server_env())
    assert result.returncode == 1
    assert "which is not currently available for inference" in result.stderr
    server = start_server(None, "--allow_version_labels_for_unavailable_models",
                          config_file=config, workdir=tmp_path)
    try:
        response = requests.post(f"{server.url}/v1/models/half/labels/old:predict",
                                  json={"instances": [1.0]})
        assert response.status_code == 404
        assert response.json()["error"] == "Servable not found for request: Specific(half, 1)"
    finally:
        server.stop()
