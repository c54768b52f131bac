"""One client interface for both protocols, and the resend after a reset connection.

``Client`` is the base of ``RestClient`` and ``GrpcClient``: the same checks and errors for a bad
version or label, the same hints from a real server. The resend is tested against a real server
behind a small TCP relay on 127.0.0.1 that resets connections on cue (what a client sees when
the server restarts), and against a port nobody listens on.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.fixtures.server import server_models_config, start_server
from tfserve_magic.client import Client, GrpcClient, RestClient, ServingError


# --------------------------------------------------------------------------- a resetting relay
def _reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset by peer'."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        conn.close()


class ResettingRelay:
    """A TCP listener on 127.0.0.1 in front of a real server's port.

    It resets the first ``reset_first`` connections it accepts and relays the others byte for
    byte; ``drop()`` resets every relayed connection (the server went away under a keep-alive
    connection). ``accepted`` counts the connections clients opened.
    """

    def __init__(self, backend_port: int, reset_first: int = 0):
        self.backend_port = backend_port
        self.reset_first = reset_first
        self.accepted = 0
        self.sent = bytearray()  # every byte clients sent through the relay
        self._relayed: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self.accepted <= self.reset_first:
                    _reset(conn)
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.backend_port))
                self._relayed.append((conn, upstream))
            for src, dst, outbound in ((conn, upstream, True), (upstream, conn, False)):
                threading.Thread(target=self._pump, args=(src, dst, outbound),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if outbound:
                    self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        with self._lock:
            relayed, self._relayed = self._relayed, []
        for conn, upstream in relayed:
            _reset(conn)
            upstream.close()

    def close(self) -> None:
        self._listener.close()
        self.drop()


def _refused_port() -> int:
    with socket.socket() as s:  # bound, never listening, closed: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def half_server(server_test_models, tmp_path_factory):
    """``half`` (versions 1 and 2, labels stable/canary) over REST and gRPC."""
    folder = tmp_path_factory.mktemp("protocols")
    config = folder / "models.config"
    config.write_text(server_models_config(server_test_models, names=()))
    server = start_server(config_file=str(config), workdir=folder)
    assert server.info.get("grpc_port"), server.info
    yield server
    server.stop()


def _clients(server, **options):
    rest = Client(f"{server.url}/v1/models/half", **options)
    grpc = Client(f"127.0.0.1:{server.info['grpc_port']}", model="half", protocol="grpc",
                  **options)
    return rest, grpc


# --------------------------------------------------------------------------- one interface
def test_both_protocols_are_clients():
    rest = Client("http://127.0.0.1:9/v1/models/M/labels/stable")
    grpc = Client("127.0.0.1:9/M", protocol="grpc")
    assert type(rest) is RestClient and type(grpc) is GrpcClient
    assert isinstance(rest, Client) and isinstance(grpc, Client)
    assert (rest.protocol, grpc.protocol) == ("rest", "grpc")
    assert (rest.rest_url, rest.grpc_target) == ("http://127.0.0.1:9", None)
    assert (grpc.rest_url, grpc.grpc_target, grpc.target) == (None, "127.0.0.1:9", "127.0.0.1:9")
    assert rest.default_label == "stable" and rest.model_url() == f"{rest.url}/labels/stable"
    assert Client("127.0.0.1:9", model="M").url == "http://127.0.0.1:9/v1/models/M"
    assert isinstance(RestClient("127.0.0.1:9", model="M"), Client)
    with pytest.raises(ValueError, match="protocol must be 'grpc' or 'rest', not 'smtp'"):
        Client("127.0.0.1:9/M", protocol="smtp")
    with pytest.raises(ValueError, match="GrpcClient speaks 'grpc', not 'rest'"):
        GrpcClient("127.0.0.1:9/M", protocol="rest")
    with pytest.raises(ValueError, match="has no REST address: use protocol='grpc'"):
        Client("grpc://127.0.0.1:9/M")
    with pytest.raises(ValueError, match="serves no gRPC port"):
        Client("http://127.0.0.1:9/v1/models/M", protocol="grpc")
    with pytest.raises(ValueError, match="retries"):
        Client("127.0.0.1:9/M", protocol="grpc", retries=-1)
    for client in (rest, grpc):
        client.close()


BAD_CALLS = [
    ({"version": 1, "label": "stable"}, "pass version= or label=, not both"),
    ({"version": "one"}, "version must be a non-negative integer, got 'one'"),
    ({"version": True}, "version must be a non-negative integer, got True"),
    ({"version": -2}, "version must be a non-negative integer, got -2"),
    ({"label": ""}, "invalid version label ''"),
    ({"label": "a/b"}, "invalid version label 'a/b'"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CALLS)
def test_bad_version_or_label_is_the_same_error_for_both_protocols(kwargs, message):
    rest = Client("http://127.0.0.1:9/v1/models/M", retries=0)
    grpc = Client("127.0.0.1:9/M", protocol="grpc", retries=0)
    calls = [
        lambda c: c.predict([[1.0]], **kwargs),
        lambda c: c.metadata(**kwargs),
        lambda c: c.classify([{"x": 1.0}], **kwargs),
        lambda c: c.regress([{"x": 1.0}], **kwargs),
    ]
    for call in calls:
        errors = []
        for client in (rest, grpc):
            with pytest.raises(ValueError) as info:
                call(client)
            errors.append(str(info.value))
        assert errors == [message, message]
    grpc.close()


def test_refused_requests_get_the_same_hints_over_both_protocols(half_server):
    rest, grpc = _clients(half_server)
    for client in (rest, grpc):
        np.testing.assert_array_equal(client.predict([1.0, 2.0], label="stable"),
                                      rest.predict([1.0, 2.0], version=1))
    errors = {}
    for client in (rest, grpc):
        with pytest.raises(ServingError) as info:
            client.predict([1.0], version=9)
        errors[client.protocol] = info.value
    assert errors["rest"].status_code == errors["grpc"].status_code == 404
    assert errors["rest"].hint == errors["grpc"].hint
    assert errors["grpc"].hint.startswith("versions of half: ") and "AVAILABLE" in errors[
        "grpc"].hint
    for client in (rest, grpc):
        with pytest.raises(ServingError) as info:
            client.predict(inputs={"nope": np.zeros(1, np.float32)})
        errors[client.protocol] = info.value
    assert errors["rest"].status_code == errors["grpc"].status_code == 400
    assert "x float32[-1]" in errors["rest"].hint and "x float32[-1]" in errors["grpc"].hint
    for client in (rest, grpc):
        client.close()


# --------------------------------------------------------------------------- resend after a reset
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_reset_connection_is_sent_again_once(half_server, protocol):
    backend = half_server.port if protocol == "rest" else half_server.info["grpc_port"]
    expected = Client(f"{half_server.url}/v1/models/half").predict([1.0, 2.0])
    relay = ResettingRelay(backend, reset_first=1)
    try:
        client = Client(f"127.0.0.1:{relay.port}", model="half", protocol=protocol,
                        retry_backoff=0.2)
        result = client.status()  # the first connection is reset; the resend goes through
        assert relay.accepted == 2 and result[0]["state"] == "AVAILABLE"
        np.testing.assert_array_equal(client.predict([1.0, 2.0]), expected)
        # the server restarts under the open connection: the next call rides over it
        relay.drop()
        np.testing.assert_array_equal(client.predict([1.0, 2.0]), expected)
        assert relay.accepted == 3
        client.close()
    finally:
        relay.close()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_retries_0_fails_at_the_first_reset(half_server, protocol):
    backend = half_server.port if protocol == "rest" else half_server.info["grpc_port"]
    relay = ResettingRelay(backend, reset_first=1)
    try:
        client = Client(f"127.0.0.1:{relay.port}", model="half", protocol=protocol, retries=0)
        with pytest.raises(ServingError, match="cannot connect") as info:
            client.metadata()
        assert info.value.status_code is None and "tries" not in info.value.message
        assert relay.accepted == 1
        if protocol == "rest":  # (a gRPC channel waits its reconnect backoff before dialing)
            assert client.metadata()["serving_default"]["inputs"]  # the next call is sent anew
            assert relay.accepted == 2
        client.close()
    finally:
        relay.close()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_refused_port(protocol):
    port = _refused_port()
    once = Client(f"127.0.0.1:{port}", model="M", protocol=protocol, retries=0)
    with pytest.raises(ServingError, match=f"cannot connect to [^ ]*127.0.0.1:{port}") as info:
        once.predict(inputs={"x": np.zeros(1, np.float32)})
    assert info.value.status_code is None and "tries" not in info.value.message
    again = Client(f"127.0.0.1:{port}", model="M", protocol=protocol, retries=2,
                   retry_backoff=0.01)
    with pytest.raises(ServingError, match=r"3 tries\]"):
        again.status()
    for client in (once, again):
        client.close()


def test_an_answered_error_is_never_sent_again(half_server):
    relay = ResettingRelay(half_server.port)
    try:
        client = Client(f"127.0.0.1:{relay.port}", model="half", retries=3)
        with pytest.raises(ServingError) as info:
            client.predict([1.0], version=9)
        assert info.value.status_code == 404 and "versions of half" in info.value.hint
        assert relay.sent.count(b"POST /v1/models/half/versions/9:predict") == 1
        client.close()
    finally:
        relay.close()


def test_importing_the_client_imports_no_tensorflow_nor_grpc():
    code = (
        "import sys\n"
        "import tfserve_magic.client\n"
        "heavy = [m for m in ('tensorflow', 'grpc', 'ml_dtypes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
