"""``--ssl_config_file``: TF Serving's text ``SSLConfig`` -> gRPC credentials, and HTTPS for REST.

As in TF Serving (``model_servers/server.cc``) the file holds the PEM *contents* of
``server_key``, ``server_cert`` and ``custom_ca``; ``client_verify`` requires a client
certificate signed by ``custom_ca``. TF Serving applies it to its gRPC listeners only; with our
``--rest_api_ssl=true`` the same key pair (and client verification) serves REST over HTTPS as
well (TF Serving has no HTTPS: tensorflow/serving#1503). The file is read once, at start-up,
before any model loads, so a bad file fails the start at once with the file's name and the
problem. ``tensorflow-serving-api`` does not ship ``ssl_config.proto``: the message is declared
here with TF Serving's package, name and fields, so text files written for it parse unchanged.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tfserve_magic.server.config import ConfigError, _parse_text, _read

_PEM_BEGIN = "-----BEGIN "


@dataclass(frozen=True)
class ServerTls:
    """A checked ``SSLConfig``: PEM texts and whether clients must show a certificate."""

    path: str
    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False

    def grpc_credentials(self):
        """``grpc.ServerCredentials`` for the gRPC listeners (TCP port and Unix socket)."""
        import grpc

        return grpc.ssl_server_credentials(
            [(self.server_key.encode(), self.server_cert.encode())],
            root_certificates=self.custom_ca.encode() or None,
            require_client_auth=self.client_verify,
        )

    def rest_context(self) -> ssl.SSLContext:
        """The REST port's server ``SSLContext`` (ours: TF Serving serves REST without TLS)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _load_key_pair(context, self.server_cert, self.server_key)
        if self.custom_ca:
            context.load_verify_locations(cadata=self.custom_ca)
        context.verify_mode = ssl.CERT_REQUIRED if self.client_verify else ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        return context

    def client_trust(self) -> str:
        """The certificates a local client trusts to reach this server: ``custom_ca`` and the
        server's own certificate chain (a self-signed certificate is its own anchor)."""
        parts = [self.custom_ca.strip(), self.server_cert.strip()]
        return "\n".join(dict.fromkeys(p for p in parts if p)) + "\n"

    def info(self, rest: bool) -> dict:
        """The ``tls`` entry of the info file (records.ServerInfo): what clients found by the
        server's name need; certificates only, never the key."""
        return {"grpc": True, "rest": bool(rest), "client_verify": self.client_verify,
                "ca": self.client_trust()}


def read_ssl_config(path: str) -> ServerTls:
    """Parse and check ``path`` (ConfigError naming the file and the problem)."""
    message = _parse_text(_read(path, "SSL config file"), _ssl_config_class()(), path,
                          "SSL config file")
    tls = ServerTls(path, message.server_key, message.server_cert, message.custom_ca,
                    message.client_verify)
    for name in ("server_key", "server_cert"):
        if not getattr(tls, name).strip():
            raise ConfigError(f"SSL config file {path}: {name} is empty (it holds the PEM text)")
    for name in ("server_key", "server_cert", "custom_ca"):
        value = getattr(tls, name).strip()
        if value and not value.startswith(_PEM_BEGIN):
            raise ConfigError(
                f"SSL config file {path}: {name} must hold the PEM text itself "
                f"('-----BEGIN ...'), not {value[:60]!r} (a file name?)"
            )
    if tls.client_verify and not tls.custom_ca.strip():
        raise ConfigError(
            f"SSL config file {path}: client_verify needs custom_ca (the certificates that "
            "sign the clients' certificates)"
        )
    try:
        tls.rest_context()  # the key matches the certificate; every PEM block reads
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"SSL config file {path}: unusable key or certificates: {exc}") from None
    return tls


def _load_key_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    """``load_cert_chain`` from PEM texts: Python's ssl reads key pairs from files only, so they
    pass through a private temporary folder that is removed at once."""
    folder = tempfile.mkdtemp(prefix="tfserve-tls-")
    try:
        paths = []
        for name, text in (("cert.pem", cert), ("key.pem", key)):
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            paths.append(path)
        context.load_cert_chain(*paths)
    finally:
        for name in ("cert.pem", "key.pem"):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
        os.rmdir(folder)


_SSL_CONFIG = None


def _ssl_config_class():
    """TF Serving's ``tensorflow.serving.SSLConfig`` (config/ssl_config.proto)."""
    global _SSL_CONFIG
    if _SSL_CONFIG is None:
        F = descriptor_pb2.FieldDescriptorProto
        fdp = descriptor_pb2.FileDescriptorProto(
            name="tfserve_magic/ssl_config.proto", package="tensorflow.serving", syntax="proto3")
        msg = fdp.message_type.add(name="SSLConfig")
        for number, (name, kind) in enumerate(
                [("server_key", F.TYPE_STRING), ("server_cert", F.TYPE_STRING),
                 ("custom_ca", F.TYPE_STRING), ("client_verify", F.TYPE_BOOL)], start=1):
            msg.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        _SSL_CONFIG = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))
    return _SSL_CONFIG
