"""TLS: ``--ssl_config_file`` (TF Serving's SSLConfig) on gRPC, and our HTTPS for REST.

Certificates are made with the ``openssl`` command line in a temporary folder: a CA, a server
certificate for 127.0.0.1/localhost signed by it, a client certificate signed by it, and an
unrelated second CA with a client certificate of its own. Real servers answer real requests
from TF Serving's official gRPC stubs, ``requests``, curl and our clients.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import grpc
import numpy as np
import pytest
import requests

from tests.fixtures.server import server_env, start_server
from tests.helpers.snippets import response_of, run_snippet
from tfserve_magic.client import Client, ServingError, TlsError
from tfserve_magic.records import ServerInfo
from tfserve_magic.server.flags import parse_flags, worker_flags

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

X = [1.0, 2.0, 4.0]
Y = [3.5, 4.0, 5.0]  # the "half" model's latest version: 0.5 x + 3

_LEAF = {
    "server": "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    "client": "extendedKeyUsage=clientAuth\n",
}


def _openssl(folder, *args):
    done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _make_ca(folder, name):
    _openssl(folder, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _make_leaf(folder, name, ca, kind):
    (folder / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + _LEAF[kind])
    _openssl(folder, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
             f"{ca}.key", "-set_serial", str(abs(hash(name)) % 10**9 + 1), "-days", "2",
             "-out", f"{name}.pem", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    _make_ca(folder, "ca")
    _make_ca(folder, "other_ca")
    _make_leaf(folder, "server", "ca", "server")
    _make_leaf(folder, "client", "ca", "client")
    _make_leaf(folder, "stranger", "other_ca", "client")
    return folder


def ssl_config(certs, client_verify: bool, name: str = "ssl.cfg"):
    """A text SSLConfig as TF Serving reads it: the PEM contents, not paths."""
    fields = {"server_key": "server.key", "server_cert": "server.pem", "custom_ca": "ca.pem"}
    text = "".join(f"{key}: {json.dumps((certs / file).read_text())}\n"
                   for key, file in fields.items())
    path = certs / name
    path.write_text(text + f"client_verify: {str(client_verify).lower()}\n")
    return path


def official_predict(target, credentials, timeout=20, model="half"):
    """Predict with TF Serving's official stubs over a secure channel."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.secure_channel(target, credentials) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(X, np.float32)))
        response = stub.Predict(request, timeout)
    return tf.make_ndarray(response.outputs["y"]).tolist()


def credentials(certs, ca="ca", client=None):
    pair = {}
    if client:
        pair = {"private_key": (certs / f"{client}.key").read_bytes(),
                "certificate_chain": (certs / f"{client}.pem").read_bytes()}
    return grpc.ssl_channel_credentials((certs / f"{ca}.pem").read_bytes(), **pair)


# ----------------------------------------------------- a TF Serving command line, gRPC TLS


@pytest.fixture(scope="module")
def tf_serving_tls(server_test_models, certs, tmp_path_factory):
    """tensorflow_model_server's own command line with --ssl_config_file: gRPC over TLS,
    REST without (as in TF Serving)."""
    server = start_server(server_test_models["half"], f"--ssl_config_file={ssl_config(certs, False)}",
                          model_name="half", workdir=tmp_path_factory.mktemp("tf-serving-tls"))
    yield server
    server.stop()


def test_tf_serving_command_line_serves_grpc_over_tls(tf_serving_tls, certs):
    target = f"127.0.0.1:{tf_serving_tls.info['grpc_port']}"
    assert "Using SSL credentials" in tf_serving_tls.log()
    assert official_predict(target, credentials(certs)) == Y
    for root in (str(certs / "ca.pem"), (certs / "ca.pem").read_bytes()):
        with Client(target, "half", protocol="grpc", root_certificates=root) as client:
            assert client.predict(X).outputs.tolist() == Y
    # REST stays plain HTTP, as TF Serving's
    assert tf_serving_tls.url.startswith("http://")
    assert tf_serving_tls.info["tls"]["rest"] is False
    answer = requests.post(f"{tf_serving_tls.url}/v1/models/half:predict",
                           json={"instances": X}, timeout=20)
    assert answer.json() == {"predictions": Y}


def test_grpc_with_the_wrong_ca_or_without_tls_is_refused(tf_serving_tls, certs):
    target = f"127.0.0.1:{tf_serving_tls.info['grpc_port']}"
    with pytest.raises(grpc.RpcError) as refused:
        official_predict(target, credentials(certs, ca="other_ca"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with Client(target, "half", protocol="grpc", root_certificates=certs / "other_ca.pem",
                retries=0) as client:
        with pytest.raises(ServingError, match="TLS handshake"):
            client.predict(X)
    with Client(target, "half", protocol="grpc", retries=0, timeout=10) as plain:
        with pytest.raises(ServingError, match="cannot connect"):  # no TLS: no answer
            plain.predict({"x": X})


# ------------------------------------- client_verify, HTTPS REST, started by the manager


@pytest.fixture(scope="module")
def strict(server_test_models, certs):
    """client_verify on gRPC and (ours) HTTPS REST, started through the process manager: its
    readiness probe cannot show a client certificate and reads the info file instead."""
    import tfserve_magic as tfm

    config = ssl_config(certs, True, "strict.cfg")
    handle = tfm.start("Strict", server_test_models["half"], port=0, gpu="none", timeout=120,
                       extra_args=[f"--ssl_config_file={config}", "--rest_api_ssl=true"])
    yield handle
    tfm.stop("Strict")


def test_client_verify_requires_a_client_certificate_over_grpc(strict, certs):
    target = strict.grpc_target
    assert official_predict(target, credentials(certs, client="client"),
                            model="Strict") == Y
    for client_name in (None, "stranger"):
        with pytest.raises(grpc.RpcError):
            official_predict(target, credentials(certs, client=client_name), 10, "Strict")
    pair = {"certificate_chain": certs / "client.pem", "private_key": certs / "client.key"}
    with Client(target, "Strict", protocol="grpc", root_certificates=certs / "ca.pem",
                server_name="localhost", **pair) as c:
        assert c.predict(X).outputs.tolist() == Y
    with Client(target, "Strict", protocol="grpc", root_certificates=certs / "ca.pem",
                server_name="elsewhere.example", retries=0, timeout=10, **pair) as c:
        with pytest.raises(TlsError, match="CERTIFICATE_VERIFY_FAILED"):
            c.predict({"x": X})
    with Client(target, "Strict", protocol="grpc", root_certificates=certs / "ca.pem",
                retries=0, timeout=10) as c:
        with pytest.raises(TlsError, match="requires a client certificate"):
            c.predict(X)


def test_https_rest_with_client_verification(strict, certs):
    url = strict.url
    assert url.startswith("https://127.0.0.1:")
    pair = (str(certs / "client.pem"), str(certs / "client.key"))
    answer = requests.post(f"{url}/v1/models/Strict:predict", json={"instances": X},
                           verify=str(certs / "ca.pem"), cert=pair, timeout=20)
    assert answer.json() == {"predictions": Y}
    refusals = [
        {"verify": str(certs / "ca.pem")},  # no client certificate
        {"verify": str(certs / "ca.pem"),  # a certificate from another CA
         "cert": (str(certs / "stranger.pem"), str(certs / "stranger.key"))},
        {"verify": str(certs / "other_ca.pem"), "cert": pair},  # the wrong CA
    ]
    for options in refusals:
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(f"{url}/v1/models/Strict", timeout=10, **options)
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP on the TLS port
        requests.get(url.replace("https://", "http://") + "/v1/models/Strict", timeout=10)
    with Client(f"{url}/v1/models/Strict", verify=certs / "ca.pem", cert=pair,
                server_name="localhost") as client:
        assert client.predict(X).outputs.tolist() == Y
    with Client(f"{url}/v1/models/Strict", verify=certs / "ca.pem", retries=0) as client:
        with pytest.raises(TlsError, match="requires a client certificate"):
            client.predict(X)
    with Client(f"{url}/v1/models/Strict", verify=certs / "ca.pem", cert=pair, retries=0,
                server_name="elsewhere.example") as client:
        with pytest.raises(TlsError, match="CERTIFICATE_VERIFY_FAILED"):
            client.predict(X)


def test_a_client_found_by_name_trusts_the_server_and_shows_the_env_certificate(
        strict, certs, monkeypatch):
    from tfserve_magic.client import tls

    monkeypatch.setenv(tls.CERT_ENV, str(certs / "client.pem"))
    monkeypatch.setenv(tls.KEY_ENV, str(certs / "client.key"))
    for protocol in ("rest", "grpc"):
        with Client("Strict", protocol=protocol) as client:
            assert client.predict(X).outputs.tolist() == Y
    import tfserve_magic as tfm

    assert tfm.status("Strict")["Strict"][0]["state"] == "AVAILABLE"


# ---------------------------------------- %tfserve start ... -- --ssl_config_file, %%predict


@pytest.fixture(scope="module")
def secured(server_test_models, certs):
    """``%tfserve start`` with TF Serving's flag and ours; client_verify off."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "tfserve_magic")
    config = ssl_config(certs, False, "secured.cfg")
    shell.run_line_magic("tfserve", f"start Secured {server_test_models['half']} --port 0 "
                                    f"--gpu none -- --ssl_config_file={config} --rest_api_ssl=true")
    yield shell
    shell.run_line_magic("tfserve", "stop Secured")


def test_predict_magic_and_snippets_against_a_tls_server(secured, certs, capsys):
    secured.user_ns["x"] = np.array(X, np.float32)
    for options in ("", "--grpc"):
        result = secured.run_cell_magic("predict", f"Secured {options} -o res", "x")
        assert np.asarray(result.predictions).tolist() == Y, options
    capsys.readouterr()
    secured.run_cell_magic("predict", "Secured --show curl", "x")
    code = _snippet(capsys.readouterr().out, "curl -sS")
    assert "--cacert " in code and "https://127.0.0.1:" in code
    assert response_of("curl", run_snippet("curl", code)) == {"predictions": Y}
    secured.run_cell_magic("predict", "Secured --grpc --show curl", "x")
    code = _snippet(capsys.readouterr().out, "curl -sS")
    assert response_of("curl", run_snippet("curl", code)) == {"predictions": Y}
    secured.run_cell_magic("predict", "Secured --show python", "x")
    code = _snippet(capsys.readouterr().out, "import requests")
    assert "verify=" in code
    assert response_of("python", run_snippet("python", code)) == {"predictions": Y}
    secured.run_cell_magic("predict", "Secured --show grpc", "x")
    code = _snippet(capsys.readouterr().out, "import grpc")
    assert "grpc.ssl_channel_credentials(" in code and "insecure_channel" not in code
    assert run_snippet("python", code).startswith("2 {'y': array([3.5, 4. , 5. ]")


def _snippet(printed: str, start: str) -> str:
    """The snippet %%predict --show printed (from its first line on, up to the result)."""
    code = printed[printed.index(start):]
    end = code.find("\n\n", code.find("print(") if "print(" in code else 0)
    return code if start == "curl -sS" or end < 0 else code[:end]


# ------------------------------------------------------------------ bad files, flags, records


def _serve(*flags):
    return subprocess.run([sys.executable, "-m", "tfserve_magic", "serve", "--model_name=m",
                           "--model_base_path=/nonexistent", "--workers=1", *map(str, flags)],
                          capture_output=True, text=True, timeout=120, env=server_env())


def test_a_bad_ssl_config_file_stops_the_start_with_its_name_and_problem(certs, tmp_path):
    good = (certs / "server.key").read_text()
    cases = {
        "server_key: 'unterminated\n": "Error parsing text-format tensorflow.serving.SSLConfig",
        "server_cert: \"x\"\n": "server_key is empty",
        f"server_key: {json.dumps(good)}\nserver_cert: \"/etc/server.pem\"\n":
            "must hold the PEM text itself",
        f"server_key: {json.dumps(good)}\n"
        f"server_cert: {json.dumps((certs / 'client.pem').read_text())}\n": "unusable key",
        ssl_config(certs, True, "no_ca.cfg").read_text().split("custom_ca")[0]
        + "client_verify: true\n": "client_verify needs custom_ca",
    }
    for number, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{number}.cfg"
        path.write_text(text)
        done = _serve(f"--ssl_config_file={path}")
        assert done.returncode == 1, (text, done.stderr)
        assert "Failed to start server" in done.stderr and str(path) in done.stderr
        assert message in done.stderr, done.stderr
    done = _serve(f"--ssl_config_file={tmp_path / 'missing.cfg'}")
    assert done.returncode == 1 and "Cannot read SSL config file" in done.stderr
    done = _serve("--rest_api_ssl=true")
    assert done.returncode == 2 and "--rest_api_ssl needs --ssl_config_file" in done.stderr


def test_workers_get_the_tls_flags_and_the_parent_info_says_https():
    flags = parse_flags(["--model_base_path=/m", "--ssl_config_file=/c.cfg",
                         "--rest_api_ssl=true"])
    args = worker_flags(flags, port=8501, parent=1, count=2)
    assert "--ssl_config_file=/c.cfg" in args and "--rest_api_ssl=true" in args
    tls = {"grpc": True, "rest": True, "client_verify": False, "ca": "PEM"}
    info = ServerInfo(pid=1, host="127.0.0.1", port=8501, url="http://127.0.0.1:8501", tls=tls)
    assert info.url == "https://127.0.0.1:8501"
    assert ServerInfo.from_json(info.to_json()).tls == tls
    plain = info.replace(url="http://127.0.0.1:8501", tls={**tls, "rest": False})
    assert plain.url == "http://127.0.0.1:8501"
