"""Which browsers' requests the server answers: the Host check and the cross-site POST check.

A server bound to a loopback address is reachable only from this machine, but a web page can
still reach it through the browser. Two checks close that (TF Serving has neither; see
docs/compatibility.md):

- **Host header** (DNS rebinding): a page on ``attacker.example`` whose name is made to resolve
  to 127.0.0.1 sends ``Host: attacker.example``. When bound to loopback, only loopback names
  (``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1``) and the names given with
  ``--rest_api_allowed_hosts`` are answered (403 otherwise), as Jupyter does with
  ``local_hostnames``/``allow_remote_access``. ``--rest_api_allowed_hosts=*`` turns it off; a
  server bound to another address (``--host 0.0.0.0``) does not check.
- **Cross-site "simple" POSTs** (CSRF): a browser sends a cross-site POST with a
  ``text/plain``, form or multipart body without asking first (no CORS preflight). Unless
  ``--rest_api_enable_cors_support`` is on, such a POST, recognised by an ``Origin`` that is not
  the server's own (or, without ``Origin``, ``Sec-Fetch-Site: cross-site/same-site``), gets 403.
  Other content types need a preflight, which fails without CORS support anyway.

Clients that are not browsers (curl, requests, Node.js, ``tfserve_magic.Client``) send neither
header and always pass.
"""

from __future__ import annotations

import ipaddress

_SIMPLE_TYPES = (b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a Host-header name, no port) is a loopback name."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name part of a Host header value (``[::1]:8501`` -> ``::1``), lower case."""
    value = value.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0].lower()
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".").lower()


class RequestGuard:
    """Decides, from a request's headers, whether it is refused (and says why)."""

    def __init__(self, *, bind_host: str, allowed_hosts=(), cors: bool = False):
        names = [h.strip().lower() for h in allowed_hosts if h.strip()]
        self.check_host = is_loopback(bind_host) and "*" not in names
        self.allowed = frozenset(host_name(n) for n in names)
        self.cors = cors

    def refuse(self, method: str, headers: dict) -> str | None:
        """None to serve the request, else the 403 message. ``headers``: lower-case bytes keys."""
        host = headers.get(b"host")
        if self.check_host and host is not None:
            name = host_name(host.decode("latin-1"))
            if not (is_loopback(name) or name in self.allowed):
                return (
                    f"Host {host.decode('latin-1')!r} is not allowed: this server listens on a "
                    "loopback address and answers only loopback names (localhost, 127.0.0.1, "
                    "[::1]); allow more with --rest_api_allowed_hosts"
                )
        if method == "POST" and not self.cors and self._cross_site(headers, host):
            content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if not content_type or content_type in _SIMPLE_TYPES:
                return (
                    "Cross-site POST refused: a web page on another origin may not call this "
                    "server unless it runs with --rest_api_enable_cors_support"
                )
        return None

    @staticmethod
    def _cross_site(headers: dict, host) -> bool:
        origin = headers.get(b"origin")
        if origin is not None:
            if host is None:
                return True
            return origin.lower() not in (b"http://" + host.lower(), b"https://" + host.lower())
        return headers.get(b"sec-fetch-site", b"").lower() in (b"cross-site", b"same-site")
