"""``--ssl_config_file``: gRPC over TLS as TF Serving (issue 22), with certificates made by the
openssl command line: a self-signed CA, client verification on and off, a wrong CA refused."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest

from tests.fixtures.server import start_server
from tests.test_server_session_flags import _run_to_exit, start_fails

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder, name):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder)


def _signed(folder, name, ca, san=None):
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
             f"{name}.key", "-out", f"{name}.csr", cwd=folder)
    extra = []
    if san:
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", f"{name}.ext"]
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra, cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    _ca(folder, "ca")
    _ca(folder, "other_ca")
    _signed(folder, "server", "ca", san="DNS:localhost,IP:127.0.0.1")
    _signed(folder, "client", "ca")
    _signed(folder, "stranger", "other_ca")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _ssl_config(tmp_path, pki, *, client_verify: bool):
    def quoted(pem: bytes) -> str:
        return '"' + pem.decode().replace("\n", "\\n") + '"'

    path = tmp_path / f"ssl-{client_verify}.pbtxt"
    path.write_text(f"server_key: {quoted(pki['server.key'])}\n"
                    f"server_cert: {quoted(pki['server.pem'])}\n"
                    f"custom_ca: {quoted(pki['ca.pem'])}\n"
                    f"client_verify: {'true' if client_verify else 'false'}\n")
    return path


def _status(server, root: bytes, key: bytes | None = None, cert: bytes | None = None):
    """GetModelStatus over a TLS channel: the state, or the gRPC code of the failure."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    credentials = grpc.ssl_channel_credentials(root, key, cert)
    with grpc.secure_channel(f"127.0.0.1:{server.info['grpc_port']}", credentials) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "half"
        try:
            reply = stub.GetModelStatus(request, timeout=20)
        except grpc.RpcError as exc:
            return exc.code()
        return get_model_status_pb2.ModelVersionStatus.State.Name(
            reply.model_version_status[0].state)


def _plain_status(server):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.info['grpc_port']}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "half"
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return "OK"


def test_tls_without_client_verification(server_test_models, pki, tmp_path):
    config = _ssl_config(tmp_path, pki, client_verify=False)
    server = start_server(server_test_models["half"], f"--ssl_config_file={config}",
                          model_name="half", workdir=tmp_path)
    try:
        assert "Using SSL credentials" in server.log()
        assert _status(server, pki["ca.pem"]) == "AVAILABLE"
        assert _status(server, pki["other_ca.pem"]) == grpc.StatusCode.UNAVAILABLE  # wrong CA
        assert _plain_status(server) == grpc.StatusCode.UNAVAILABLE  # no TLS: no answer
    finally:
        server.stop()


def test_tls_with_client_verification(server_test_models, pki, tmp_path):
    config = _ssl_config(tmp_path, pki, client_verify=True)
    server = start_server(server_test_models["half"], f"--ssl_config_file={config}",
                          model_name="half", workdir=tmp_path)
    try:
        ca = pki["ca.pem"]
        assert _status(server, ca, pki["client.key"], pki["client.pem"]) == "AVAILABLE"
        assert _status(server, ca) == grpc.StatusCode.UNAVAILABLE  # no client certificate
        assert _status(server, ca, pki["stranger.key"], pki["stranger.pem"]) == \
            grpc.StatusCode.UNAVAILABLE  # a certificate from another CA
    finally:
        server.stop()


def test_bad_ssl_config_stops_the_start(server_test_models, tmp_path):
    out = start_fails(tmp_path, server_test_models["half"], "ssl_config_file",
                      'server_key: "not pem"\n')
    assert "server_key and server_cert must hold the PEM text" in out


def test_https_rest_is_our_addition(server_test_models, pki, tmp_path):
    """--rest_api_enable_ssl: the same file serves REST over HTTPS; with client_verify a
    client certificate from custom_ca is required."""
    import requests

    for name in ("ca.pem", "client.pem", "client.key", "other_ca.pem"):
        (tmp_path / name).write_bytes(pki[name])
    config = _ssl_config(tmp_path, pki, client_verify=True)
    server = start_server(server_test_models["half"], f"--ssl_config_file={config}",
                          "--rest_api_enable_ssl", "--workers=2", model_name="half",
                          workdir=tmp_path)
    try:
        assert server.url.startswith("https://127.0.0.1:")
        url = f"{server.url}/v1/models/half:predict"
        body = {"instances": [2.0]}
        client = (str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        answer = requests.post(url, json=body, verify=str(tmp_path / "ca.pem"), cert=client,
                               timeout=30)
        assert answer.json() == {"predictions": [4.0]}
        with pytest.raises(requests.exceptions.SSLError):  # server not from this CA
            requests.post(url, json=body, verify=str(tmp_path / "other_ca.pem"), cert=client,
                          timeout=30)
        with pytest.raises(requests.exceptions.RequestException):  # no client certificate
            requests.post(url, json=body, verify=str(tmp_path / "ca.pem"), timeout=30)
        with pytest.raises(requests.exceptions.RequestException):  # plain HTTP gets nothing
            requests.post(url.replace("https://", "http://"), json=body, timeout=30)
        assert _status(server, pki["ca.pem"], pki["client.key"], pki["client.pem"]) == \
            "AVAILABLE"
    finally:
        server.stop()


def test_https_needs_the_ssl_config(tmp_path):
    code, out = _run_to_exit(tmp_path, "--rest_api_enable_ssl", base=tmp_path)
    assert code == 1, out
    assert "--rest_api_enable_ssl needs --ssl_config_file" in out
