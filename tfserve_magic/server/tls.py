"""``--ssl_config_file``: TLS for the gRPC ports, as TF Serving's ``BuildServerCredentials``.

The file is a text ``tensorflow.serving.SSLConfig``: ``server_key`` and ``server_cert`` hold
PEM text (not paths), ``custom_ca`` the PEM of the CA that client certificates must chain to,
and ``client_verify: true`` requires and verifies a client certificate. Both the TCP port and
``--grpc_socket_path`` use these credentials, as in ``server.cc``. The message is declared
here because the ``tensorflow-serving-api`` package does not ship ``ssl_config.proto``.
"""

from __future__ import annotations

import logging
import ssl

from tfserve_magic.server.config import ConfigError

log = logging.getLogger("tfserve_magic.server")

_SSL_CONFIG = None


def _message_class():
    global _SSL_CONFIG
    if _SSL_CONFIG is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        F = descriptor_pb2.FieldDescriptorProto
        fdp = descriptor_pb2.FileDescriptorProto(
            name="tfserve_magic/ssl_config.proto", package="tensorflow.serving", syntax="proto3")
        msg = fdp.message_type.add(name="SSLConfig")
        for number, name in enumerate(("server_key", "server_cert", "custom_ca"), start=1):
            msg.field.add(name=name, number=number, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        msg.field.add(name="client_verify", number=4, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        _SSL_CONFIG = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))
    return _SSL_CONFIG


def read_ssl_config(path: str):
    """The parsed SSLConfig; ConfigError (the start fails) when unreadable or incomplete."""
    from google.protobuf import text_format

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"Cannot read SSL config file {path}: {exc.strerror or exc}") from None
    config = _message_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"Error parsing text-format tensorflow.serving.SSLConfig: invalid SSL "
                          f"config file {path}: {exc}") from None
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"SSL config file {path}: server_key and server_cert must hold the "
                          "PEM text of the key and the certificate")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(f"SSL config file {path}: client_verify needs custom_ca (the PEM of "
                          "the CA that signs client certificates)")
    return config


def server_credentials(flags: dict):
    """grpc.ServerCredentials for --ssl_config_file, or None (plain gRPC)."""
    path = flags.get("ssl_config_file", "")
    if not path:
        log.info("Using InsecureServerCredentials")
        return None
    import grpc

    config = read_ssl_config(path)
    log.info("Using SSL credentials")
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=bool(config.client_verify),
    )


def add_port(server, address: str, credentials) -> int:
    """Bind ``address`` with TLS when ``credentials`` is set; returns the bound port (0: fail)."""
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


# ---- our addition: the same file turns on HTTPS for REST (--rest_api_enable_ssl) ----


def rest_enabled(flags: dict) -> bool:
    return bool(flags.get("rest_api_enable_ssl")) and bool(flags.get("ssl_config_file"))


def rest_url(url: str, flags: dict) -> str:
    """The REST URL clients use: https:// when REST is served over TLS."""
    if rest_enabled(flags) and url.startswith("http://"):
        return "https://" + url[len("http://"):]
    return url


def rest_ssl_options(flags: dict) -> dict:
    """uvicorn.Config arguments for HTTPS (empty for plain HTTP): the server key and
    certificate of --ssl_config_file, and with client_verify a required client certificate
    signed by custom_ca."""
    if not rest_enabled(flags):
        return {}
    context = _rest_context(read_ssl_config(flags["ssl_config_file"]))
    log.info("REST API served over HTTPS%s", " (client certificates required)"
             if context.verify_mode == ssl.CERT_REQUIRED else "")
    return {"ssl_context_factory": lambda config, default: context}


def _rest_context(config):
    """An SSLContext from PEM texts (ssl loads key pairs only from files: a private temporary
    folder holds them for the moment of loading)."""
    import os
    import tempfile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="tfserve-tls-") as folder:
        key = os.path.join(folder, "key.pem")
        cert = os.path.join(folder, "cert.pem")
        for path, text in ((key, config.server_key), (cert, config.server_cert)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ConfigError(f"SSL config: cannot use server_key/server_cert: {exc}") from None
    if config.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=config.custom_ca)
    return context
