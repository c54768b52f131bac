"""The manager's few REST calls to its servers (model status), never through a proxy.

HTTPS (a server started with ``--ssl_config_file ... --rest_api_ssl=true``): on the loopback
these calls do not check the server's certificate. They go to the port that the manager's own
child wrote into its info file (in the per-user state folder), send nothing but a model name
and read only version states, so checking would add no safety, only ways to fail: the
certificate may be made out to the machine's DNS name rather than 127.0.0.1, or signed by a
CA the manager does not know. Any other host is checked as usual. Where the server requires
client certificates, the one named by ``TFSERVE_MAGIC_CLIENT_CERT``/``_KEY`` is shown (as by
the clients, tfserve_magic.client.tls).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable

from tfserve_magic.client.tls import CERT_ENV, KEY_ENV, client_pair

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float) -> dict:
    opener = _NO_PROXY if not url.lower().startswith("https://") else _https_opener(url)
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def _https_opener(url: str):
    host = urllib.parse.urlsplit(url).hostname or ""
    context = ssl.create_default_context()
    if host == "localhost" or _is_loopback(host):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert, key = client_pair()
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"cannot load the client certificate ${CERT_ENV}/${KEY_ENV}: "
                          f"{exc}") from None
    return urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                       urllib.request.HTTPSHandler(context=context))


def requires_client_certificate(tls: dict | None) -> bool:
    """Whether a server's REST port (its info file's ``tls``) wants a client certificate that
    the manager cannot show (none is named in the environment)."""
    return bool(tls and tls.get("rest") and tls.get("client_verify") and not client_pair()[0])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def model_status(url: str, model: str, timeout: float = 2.0) -> list[dict]:
    """``model_version_status`` of ``model`` (HTTPError 404 when the server does not know it)."""
    data = get_json(f"{url}/v1/models/{model}", timeout)
    entries = data.get("model_version_status", [])
    return entries if isinstance(entries, list) else []


def available(entries: list[dict]) -> list[int]:
    """The AVAILABLE versions among status entries, sorted."""
    versions = []
    for entry in entries:
        if entry.get("state") == "AVAILABLE":
            try:
                versions.append(int(entry.get("version")))
            except (TypeError, ValueError):
                pass
    return sorted(versions)


def live_models(url: str, models: Iterable[str], timeout: float) -> dict[str, list[int]] | None:
    """model -> AVAILABLE versions, or None if the server does not answer."""
    result = {}
    for model in models:
        try:
            result[model] = available(model_status(url, model, timeout))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                return None
            result[model] = []
        except (OSError, ValueError):
            return None
    return result
