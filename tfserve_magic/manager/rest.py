"""The manager's few REST calls to its servers (model status), never through a proxy."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float) -> dict:
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


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
