"""A client's TLS settings: which certificates it trusts and which one it shows.

One ``ClientTls`` per client, for both protocols: REST hands it to ``requests`` (``verify``,
``cert``), gRPC to ``grpc.ssl_channel_credentials``; ``%%predict --show`` writes the same
options into its curl/Python/gRPC code (``curl_options`` and friends). A client found by a
running server's name takes the server's own settings: the info file of a server started with
``--ssl_config_file`` lists the certificates to trust (records.ServerInfo ``tls``), saved here
as a file, since ``requests`` and ``curl`` take paths. A server with ``client_verify`` wants a
client certificate: pass ``cert=``/``private_key=``, or name it once for every client in the
``TFSERVE_MAGIC_CLIENT_CERT`` and ``TFSERVE_MAGIC_CLIENT_KEY`` environment variables.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import ssl
from dataclasses import dataclass

CERT_ENV = "TFSERVE_MAGIC_CLIENT_CERT"
KEY_ENV = "TFSERVE_MAGIC_CLIENT_KEY"


@dataclass(frozen=True)
class ClientTls:
    """``ca``: a PEM file to trust (None: the system's roots); ``verify``: False skips checking
    the server (REST only: gRPC always checks); ``cert``/``key``: the client's PEM files (or PEM bytes, gRPC);
    ``server_name``: the name the server's certificate must hold when it differs from the
    address dialled (e.g. the server's DNS name while dialling 127.0.0.1)."""

    ca: str | bytes | None = None
    verify: bool = True
    cert: str | bytes | None = None
    key: str | bytes | None = None
    server_name: str | None = None

    # -- REST (requests)
    def requests_verify(self):
        if not self.verify:
            return False
        return _as_path(self.ca, "the CA certificates") if self.ca is not None else True

    def requests_cert(self):
        if self.cert is None:
            return None
        cert = _as_path(self.cert, "the client certificate", secret=False)
        return (cert, _as_path(self.key, "the client key", secret=True)) if self.key else cert

    # -- gRPC
    def channel_credentials(self):
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "root_certificates"),
            private_key=_read(self.key, "private_key"),
            certificate_chain=_read(self.cert, "certificate_chain"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    # -- the options %%predict --show writes into its code
    def curl_options(self) -> list[str]:
        """``--cacert``/``--cert``/``--key`` (``-k`` for verify=False)."""
        options = [] if self.verify else ["-k"]
        if self.verify and self.ca is not None:
            options.append(f"--cacert {shlex.quote(_shown_path(self.ca, 'ca.pem'))}")
        if self.cert is not None:
            options.append(f"--cert {shlex.quote(_shown_path(self.cert, 'client.pem'))}")
        if self.key is not None:
            options.append(f"--key {shlex.quote(_shown_path(self.key, 'client.key'))}")
        return options

    def requests_arguments(self) -> dict:
        """``verify=``/``cert=`` for ``requests.post`` (paths as the code shows them)."""
        arguments = {}
        if not self.verify:
            arguments["verify"] = False
        elif self.ca is not None:
            arguments["verify"] = _shown_path(self.ca, "ca.pem")
        if self.cert is not None:
            cert = _shown_path(self.cert, "client.pem")
            arguments["cert"] = (cert, _shown_path(self.key, "client.key")) if self.key else cert
        return arguments

    def grpc_files(self) -> dict:
        """``ssl_channel_credentials``' arguments as file paths the code reads (placeholders
        where only bytes were given), and the target name override."""
        files = {name: _shown_path(value, placeholder) for name, value, placeholder in (
            ("root_certificates", self.ca, "ca.pem"),
            ("certificate_chain", self.cert, "client.pem"),
            ("private_key", self.key, "client.key")) if value is not None}
        return {"files": files, "server_name": self.server_name}


def handshake_problem(address: str, tls: ClientTls, alpn: str,
                      timeout: float = 2.0) -> str | None:
    """Why a TLS connection to ``address`` (host:port) with ``tls`` fails, in OpenSSL's words,
    or None when it does not (or cannot be told). Under TLS 1.3 a server refuses a missing
    client certificate after the handshake, and the clients see only a closed connection."""
    host, _, port = address.partition("://")[2 if "://" in address else 0].rpartition(":")
    if not port.isdigit() or isinstance(tls.cert, (bytes, bytearray)) or not tls.verify:
        return None
    try:
        context = ssl.create_default_context()
        if tls.ca is not None:
            ca = _read(tls.ca, "the CA certificates").decode("ascii")
            context = ssl.create_default_context(cadata=ca)
        if tls.cert is not None:
            context.load_cert_chain(os.fspath(tls.cert), tls.key and os.fspath(tls.key))
        context.set_alpn_protocols([alpn])
        with socket.create_connection((host.strip("[]"), int(port)), timeout) as raw:
            with context.wrap_socket(raw, server_hostname=tls.server_name or host.strip("[]")) as conn:
                conn.settimeout(0.5)
                if conn.recv(1):  # TLS 1.3: the server's verdict on our certificate comes now
                    return None
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    except (OSError, ValueError):  # a timeout included: the server waits for a request
        return None
    # closed right after the handshake: TLS 1.3 servers refuse a client certificate so
    return ("the server requires a client certificate" if tls.cert is None
            else "the server refused the client certificate")


def rest_tls(verify=None, cert=None, server_name=None, recorded: dict | None = None):
    """The REST client's settings from ``requests``-style ``verify``/``cert`` and what the
    server's info file says (``recorded``, for a server found by name); None: plain HTTP
    defaults (``requests`` checks HTTPS servers against the system's roots)."""
    if isinstance(cert, (list, tuple)):
        if len(cert) != 2:
            raise ValueError("cert= is a PEM file holding both, or (certificate, key) files")
        cert, key = cert
    else:
        key = None
    if cert is None:
        cert, key = client_pair()
    ca = None
    if isinstance(verify, (str, os.PathLike)):
        ca, verify = os.fspath(verify), True
    elif verify is None:
        verify = True
        if recorded and recorded.get("ca"):
            ca = trust_file(recorded["ca"])
    elif not isinstance(verify, bool):
        raise TypeError("verify= is True, False, or the path of a CA bundle (PEM)")
    for what, path in (("verify", ca), ("cert", cert), ("the key", key)):
        if path is not None and not os.path.exists(path):
            raise ValueError(f"{what}: no such file {path}")
    if (ca, verify, cert, server_name) == (None, True, None, None):
        return None
    return ClientTls(ca=ca, verify=verify, cert=cert, key=key, server_name=server_name)


def grpc_tls(root_certificates=None, private_key=None, certificate_chain=None,
             server_name=None, tls: bool | None = None, recorded: dict | None = None):
    """The gRPC client's settings, or None for an insecure channel. TLS is on when ``tls`` is
    True, any certificate option is given, or the server's info file says it serves TLS."""
    given = any(v is not None for v in (root_certificates, private_key, certificate_chain,
                                        server_name))
    if tls is False:
        if given:
            raise ValueError("tls=False with certificate options: drop one or the other")
        return None
    if not (tls or given or (recorded and recorded.get("grpc"))):
        return None
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("pass private_key= and certificate_chain= together (the client's "
                         "key pair)")
    if certificate_chain is None and os.environ.get(CERT_ENV):
        certificate_chain, private_key = client_pair()
    if root_certificates is None and recorded and recorded.get("ca"):
        root_certificates = recorded["ca"].encode()
    return ClientTls(ca=root_certificates, cert=certificate_chain, key=private_key,
                     server_name=server_name)


def recorded_tls(server: str | None) -> dict | None:
    """The ``tls`` entry of the info file of the running server ``server`` (None: none)."""
    if not server:
        return None
    from tfserve_magic import registry
    from tfserve_magic.records import read_record

    record = read_record(registry.record_path(server))
    info = record.info() if record is not None else None
    return info.tls if info is not None else None


def trust_file(pem: str) -> str:
    """A file holding ``pem`` (certificates, public) in the per-user state folder, named by
    its contents so every client of one server shares it."""
    from tfserve_magic import registry

    path = registry.state_dir() / "tls" / f"ca-{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
    if not path.exists():  # named by its contents: a file that exists holds them
        path.parent.mkdir(mode=0o700, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(pem, encoding="ascii")
        os.replace(partial, path)
    return str(path)


def client_pair() -> tuple[str | None, str | None]:
    """The client certificate and key files named in the environment (None, None: none)."""
    return os.environ.get(CERT_ENV) or None, os.environ.get(KEY_ENV) or None


def _as_path(value, what: str, secret: bool = False) -> str:
    if isinstance(value, (bytes, bytearray)):
        if secret:
            raise TypeError(f"{what} over REST is a file path (requests reads keys from files)")
        return trust_file(bytes(value).decode("ascii"))
    return os.fspath(value)


def _read(value, what: str) -> bytes | None:
    """PEM bytes as given, or read from a path (ValueError naming the file)."""
    if value is None or isinstance(value, (bytes, bytearray)):
        return bytes(value) if value is not None else None
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read {what} from {value}: {exc.strerror or exc}") from None


def _shown_path(value, placeholder: str) -> str:
    """A path for generated code: the file itself, or the trust file written for PEM bytes of
    certificates; a key given as bytes is never written out: a placeholder stands for it."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("ascii", errors="replace")
        return trust_file(text) if "PRIVATE KEY" not in text else placeholder
    return os.fspath(value)
