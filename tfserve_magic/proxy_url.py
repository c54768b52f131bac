"""The address of a kernel's local port through the notebook server (jupyter-server-proxy).

On JupyterHub and Binder the model server listens on the notebook machine's loopback, which the
user's own computer cannot reach; the notebook server can, at ``{base_url}proxy/PORT/...``
(jupyter-server-proxy strips the prefix), for anyone logged in to it (a cookie, ``?token=`` or
``Authorization: token ...``). gRPC does not pass. There is no single way to know the public
base URL (jupyter-server-proxy#402); the rule, first match wins:

1. ``TFSERVE_MAGIC_PROXY_URL``: a template set by the user or the deployment, ``%PORT%``
   replaced by the port (TensorBoard's ``TENSORBOARD_PROXY_URL`` idea), e.g.
   ``https://hub.example.org/user/ada/proxy/%PORT%/``. Used as is, proxy installed or not.
2. Otherwise only where jupyter-server-proxy is installed:
   ``JUPYTERHUB_PUBLIC_URL`` (the server's public URL, set when the hub knows its public
   address); else ``JUPYTERHUB_HOST`` + ``JUPYTERHUB_SERVICE_PREFIX`` (the host is empty unless
   the hub uses subdomains: then the URL is a path, to put after the hub's address); else
   ``JUPYTER_SERVER_URL`` (a plain Jupyter Server, which sets it for its kernels and terminals).

No TensorFlow, no IPython: the manager's start message and ``%%predict --show curl`` use it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

TEMPLATE_ENV = "TFSERVE_MAGIC_PROXY_URL"


def proxy_installed() -> bool:
    """Whether jupyter-server-proxy is importable here (the kernel's environment, which on
    JupyterHub and Binder is the notebook server's too)."""
    try:
        return importlib.util.find_spec("jupyter_server_proxy") is not None
    except (ImportError, ValueError):
        return False


def proxied_url(port: int, path: str = "", environ: Mapping[str, str] | None = None,
                installed: bool | None = None) -> str | None:
    """``{base_url}proxy/PORT{path}`` through the notebook server, or None where no proxy is
    known. ``path`` starts with "/" (``/v1/models/NAME``). A path without a host (a hub
    whose address the kernel cannot see) starts with "/"."""
    env = os.environ if environ is None else environ
    path = "/" + path.lstrip("/") if path else ""
    template = env.get(TEMPLATE_ENV, "").strip()
    if template:
        if "%PORT%" in template:
            return template.replace("%PORT%", str(port)).rstrip("/") + path
        return _join(template, port, path)
    if not (proxy_installed() if installed is None else installed):
        return None
    public = env.get("JUPYTERHUB_PUBLIC_URL", "").strip()
    if public:
        return _join(public, port, path)
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "").strip()
    if prefix:
        host = env.get("JUPYTERHUB_HOST", "").strip().rstrip("/")
        return _join(host + "/" + prefix.strip("/") + "/", port, path)
    server = env.get("JUPYTER_SERVER_URL", "").strip()
    if server:
        return _join(server, port, path)
    return None


def _join(base: str, port: int, path: str) -> str:
    """``base`` (a notebook server's base URL, with or without its trailing slash) +
    ``proxy/PORT`` + ``path``."""
    return f"{base.rstrip('/')}/proxy/{port}{path}"


def proxied_for(url: str, environ: Mapping[str, str] | None = None,
                installed: bool | None = None) -> str | None:
    """``proxied_url`` for a full local URL (``http://127.0.0.1:8501/v1/models/m:predict``);
    None for a server on another machine, which the notebook server's proxy does not reach."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if port is None or not _on_this_machine(parts.hostname or ""):
        return None
    query = f"?{parts.query}" if parts.query else ""
    return proxied_url(port, parts.path + query, environ, installed)


def curl_note(url: str, environ: Mapping[str, str] | None = None,
              installed: bool | None = None) -> str:
    """Comment lines for a curl snippet: the same request from the user's own computer,
    through the notebook server with their Jupyter token ("" where there is no proxy)."""
    proxied = proxied_for(url, environ, installed)
    if proxied is None:
        return ""
    where = "" if "://" in proxied else " (after your hub's address)"
    return (
        "# From your own computer, through the notebook server (jupyter-server-proxy), use\n"
        f"#   {proxied}{where}\n"
        "# with your Jupyter token: -H \"Authorization: token $JUPYTER_TOKEN\"\n"
    )


def _on_this_machine(host: str) -> bool:
    """A loopback or any-address host: the notebook server's proxy reaches it."""
    if host in ("", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
