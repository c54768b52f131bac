"""The one client interface: ``Client`` and what every protocol shares.

``Client(target, ...)`` is the REST client (``RestClient``) and ``Client(..., protocol="grpc")``
the gRPC client (``GrpcClient``); both subclass ``Client``. Here, once for both: reading the
target (server/model name, ``ServerHandle``, URL or gRPC target), the version/label checks, the
public calls and their argument checks, the resend after a refused or reset connection, the
metadata cache and the hint that says what the signature expects. A subclass supplies the
transport: ``_fetch_metadata``, ``_fetch_status``, ``_predict``, ``_classify``, ``_regress``.

The subclasses register themselves by their ``protocol`` when their module is imported
(``tfserve_magic.client`` imports both), so this module imports neither.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tfserve_magic.client.body import build_predict_body
from tfserve_magic.results import ModelMetadata, Prediction, ServingError

__all__ = ["Client", "Endpoint", "ConnectionLost", "TlsError", "resolve_target",
           "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 1000
HINT_TIMEOUT = 5.0  # seconds for the metadata/status calls that build an error hint

_HTTP_URL = re.compile(
    r"^(?P<base>https?://[^/?#]+)"
    r"(?:/v1/models/(?P<model>[^/:?#]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:?#]+))?)?/*$",
    re.IGNORECASE,
)
_GRPC_TARGET = re.compile(
    r"^(?:grpc://)?(?P<target>unix:.+|[\w.\-\[\]:]+:\d+)(?:/(?P<model>[^/]+))?/?$"
)
_HOST_PORT = re.compile(r"^[\w.\-\[\]]+:\d+(/|$)")  # host:port without a scheme

# Server messages (the same over REST and gRPC) that decide which hint helps.
_INPUT_PROBLEM = re.compile(
    r"input|shape|type|size|level|base64|rank|dimension|incompatible|convert|instances|tensor",
    re.IGNORECASE,
)
_SIGNATURE_NOT_FOUND = re.compile(  # not "Signature input alias: x ... not found in request"
    r"signature (?:name|key)\b.*not found|no signature was found|signature not found",
    re.IGNORECASE,
)
_VERSION_NOT_FOUND = re.compile(r"Specific\(|Could not find version", re.IGNORECASE)
_LABEL_UNKNOWN = re.compile(r"version label", re.IGNORECASE)


class ConnectionLost(Exception):
    """A call that got no answer: the connection was refused or reset. Safe to send again
    (every call of a client reads only); ``Client._send`` turns the last one into a
    ``ServingError``."""

    def __init__(self, detail: str, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.code = code


class TlsError(ServingError):
    """The TLS handshake failed (certificates not trusted, or a client certificate missing):
    a server that answers, but not to this client. Never sent again, never hidden."""


@dataclass(frozen=True)
class Endpoint:
    """Where a client's model answers, as far as the target tells."""

    model: str
    rest_url: str | None = None  # "http://127.0.0.1:8501"
    grpc_target: str | None = None  # "127.0.0.1:8500" or "unix:/path"
    version: int | None = None  # the default version/label a URL named
    label: str | None = None
    server: str | None = None  # the server's name, where the registry or a handle tells


def resolve_target(target, model: str | None, protocol: str) -> Endpoint:
    """A server/model name, ``ServerHandle``, URL or gRPC target -> ``Endpoint``.

    A bare ``host:port`` means the port of ``protocol``. Names go through
    ``tfserve_magic.registry.lookup`` (LookupError lists what runs).
    """
    if not isinstance(target, str) and hasattr(target, "models"):  # a ServerHandle
        models = list(getattr(target, "models", None) or [])
        chosen = model or (models[0] if models else None)
        if not chosen:
            name = getattr(target, "name", None) or getattr(target, "url", target)
            raise ValueError(f"server {name!r} serves no model: pass model='NAME'")
        rest_url = str(getattr(target, "url", "") or "").rstrip("/") or None
        return Endpoint(chosen, rest_url, getattr(target, "grpc_target", None),
                        server=getattr(target, "name", None))
    if not isinstance(target, str) or not target.strip():
        raise TypeError("Client needs a server/model name, a URL, or a ServerHandle")
    text = target.strip()
    if _HOST_PORT.match(text) and protocol == "rest":
        text = "http://" + text
    if re.match(r"^https?://", text, re.IGNORECASE):
        match = _HTTP_URL.match(text)
        if not match:
            raise ValueError(
                f"cannot read {target!r}: expected http://HOST:PORT or "
                "http://HOST:PORT/v1/models/NAME[/versions/N | /labels/L]"
            )
        chosen = model or match["model"]
        if not chosen:
            raise ValueError(
                f"{target!r} names no model: pass model='NAME' or use "
                f"{match['base']}/v1/models/NAME"
            )
        version = int(match["version"]) if match["version"] else None
        return Endpoint(chosen, rest_url=match["base"], version=version, label=match["label"])
    match = _GRPC_TARGET.match(text)
    if match and (text.startswith(("grpc://", "unix:")) or protocol == "grpc"):
        chosen = model or match["model"]
        if not chosen:
            raise ValueError(f"{target!r} names no model: pass model='NAME'")
        return Endpoint(chosen, grpc_target=match["target"])
    from tfserve_magic import registry

    address = registry.lookup(text, model)
    return Endpoint(address.model, address.url.rstrip("/") or None, address.grpc_target,
                    server=address.server)


class Client:
    """Talk to one model of a TensorFlow-Serving-compatible server, over REST or gRPC.

    ``target``: a model or server name known to the manager ("MLP"), a ``ServerHandle``,
    ``http://host:port`` (then ``model=`` is required), ``http://host:port/v1/models/NAME``
    (optionally ``/versions/N`` or ``/labels/L``, the default of every call), or for gRPC
    ``host:port``, ``grpc://host:port/NAME``, ``unix:/path``.

    ``protocol``: "rest" (``RestClient``) or "grpc" (``GrpcClient``, the server's gRPC port).
    ``retries``: how often a call is sent again after the connection was refused or reset (a
    server restarting), ``retry_backoff`` seconds after the first, doubling; 0 turns it off.
    A call the server answered, even with an error, is never sent again.
    """

    protocol = ""  # "rest" or "grpc": set by each subclass, which registers under it
    _protocols: dict[str, type[Client]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("protocol"):
            Client._protocols[cls.protocol] = cls

    def __new__(cls, *args, protocol: str | None = None, **kwargs):
        if protocol is not None and protocol not in Client._protocols:
            known = " or ".join(repr(p) for p in sorted(Client._protocols))
            raise ValueError(f"protocol must be {known}, not {protocol!r}")
        if cls is Client:
            cls = Client._protocols[protocol or "rest"]
        elif protocol not in (None, cls.protocol):
            raise ValueError(f"{cls.__name__} speaks {cls.protocol!r}, not {protocol!r}")
        return super().__new__(cls)

    def __init__(
        self,
        target,
        model: str | None = None,
        *,
        timeout: float = 30.0,
        chunk_size: int | None = None,
        protocol: str | None = None,
        retries: int = 1,
        retry_backoff: float = 0.2,
    ):
        self.timeout = float(timeout)
        self.chunk_size = int(chunk_size) if chunk_size else DEFAULT_CHUNK_SIZE
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if isinstance(retries, bool) or int(retries) != retries or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        if not retry_backoff >= 0:
            raise ValueError(f"retry_backoff must be >= 0 seconds, got {retry_backoff!r}")
        self.retries = int(retries)
        self.retry_backoff = float(retry_backoff)
        endpoint = resolve_target(target, model, self.protocol)
        self.model_name = endpoint.model
        self.rest_url = endpoint.rest_url
        self.grpc_target = endpoint.grpc_target
        self.default_version = endpoint.version
        self.default_label = endpoint.label
        self.server_name = endpoint.server
        self._metadata_cache: dict[tuple, ModelMetadata | None] = {}

    # -- what a subclass supplies
    @property
    def address(self) -> str:
        """Where this client dials: the REST base URL or the gRPC target."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The model's address, e.g. ``http://127.0.0.1:8501/v1/models/MLP``."""
        raise NotImplementedError

    def _fetch_metadata(self, version, label, timeout) -> ModelMetadata:
        raise NotImplementedError

    def _fetch_status(self, version, timeout) -> list[dict]:
        raise NotImplementedError

    def _predict(self, instances, inputs, signature_name, version, label, chunk_size,
                 output_filter) -> Prediction:
        raise NotImplementedError

    def _classify(self, examples, context, signature_name, version, label) -> Prediction:
        raise NotImplementedError

    def _regress(self, examples, context, signature_name, version, label) -> Prediction:
        raise NotImplementedError

    # -- lifetime
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def close(self) -> None:
        """Close the connection(s); a later call opens new ones."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- checks, once for every protocol
    def version_and_label(self, version=None, label=None, *, defaults: bool = True):
        """The checked ``(version, label)`` a call asks for (the target's defaults if both None).

        ValueError for both at once, a version that is no whole number >= 0, or a label that is
        empty or holds "/".
        """
        if version is not None and label is not None:
            raise ValueError("pass version= or label=, not both")
        if version is None and label is None and defaults:
            version, label = self.default_version, self.default_label
        if version is not None:
            if isinstance(version, bool) or not str(version).isdigit():
                raise ValueError(f"version must be a non-negative integer, got {version!r}")
            return int(version), None
        if label is not None:
            if not isinstance(label, str) or not label or "/" in label:
                raise ValueError(f"invalid version label {label!r}")
            return None, label
        return None, None

    build_predict_body = staticmethod(build_predict_body)

    # -- the public calls
    def status(self, version: int | None = None) -> list[dict]:
        """The model's version states: ``[{"version": "1", "state": "AVAILABLE", ...}, ...]``."""
        version, _ = self.version_and_label(version, defaults=False)
        return self._send(lambda: self._fetch_status(version, self.timeout))

    def metadata(self, version: int | None = None, label: str | None = None) -> ModelMetadata:
        """The signatures (names, dtypes, shapes) of the latest or a given version/label."""
        version, label = self.version_and_label(version, label)
        return self._send(lambda: self._fetch_metadata(version, label, self.timeout))

    def predict(
        self,
        instances=None,
        inputs=None,
        *,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        chunk_size: int | None = None,
        output_filter=None,
    ) -> Prediction:
        """Run the model: ``instances=`` (row format) or ``inputs=`` (columnar).

        ``instances`` is an array or list with one entry per instance, a list of dicts of named
        inputs, or a dict name -> batched array. Over REST rows are sent in chunks of
        ``chunk_size``; over gRPC both are sent as tensors, and ``output_filter`` names the
        outputs to compute (gRPC only).
        """
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row format) or inputs= (columnar)")
        if signature_name is not None and not isinstance(signature_name, str):
            raise TypeError("signature_name must be a string")
        version, label = self.version_and_label(version, label)
        return self._predict(instances, inputs, signature_name, version, label, chunk_size,
                             output_filter)

    def classify(self, examples, *, context=None, signature_name=None, version=None,
                 label=None) -> Prediction:
        """Classify tf.Examples: outputs ``{"classes": str [N,k], "scores": float32 [N,k]}``."""
        version, label = self._examples_checked(examples, version, label)
        return self._classify(examples, context, signature_name, version, label)

    def regress(self, examples, *, context=None, signature_name=None, version=None,
                label=None) -> Prediction:
        """Regress tf.Examples: outputs a float32 array [N]."""
        version, label = self._examples_checked(examples, version, label)
        return self._regress(examples, context, signature_name, version, label)

    def _examples_checked(self, examples, version, label):
        if isinstance(examples, Mapping) or not isinstance(examples, (list, tuple)):
            raise TypeError("examples must be a list of dicts (feature name -> value or list)")
        return self.version_and_label(version, label)

    # -- sending
    def _send(self, once):
        """``once()``, sent again after a refused or reset connection (``retries`` times)."""
        attempt = 0
        while True:
            try:
                return once()
            except ConnectionLost as lost:
                if attempt >= self.retries:
                    tries = f", {attempt + 1} tries" if attempt else ""
                    raise ServingError(
                        None,
                        f"cannot connect to {self.address}: is the server running? "
                        f"(%tfserve list shows the running servers) [{lost.detail}{tries}]",
                        url=self.url,
                        code=lost.code,
                    ) from None
            time.sleep(self.retry_backoff * 2**attempt)  # a restarting server's time
            attempt += 1

    def _answer(self, once, signature_name, version, label, sent=None):
        """``_send(once)``; a refused request gets the hint (``sent``: text or a function)."""
        try:
            return self._send(once)
        except ServingError as exc:
            if exc.status_code:
                text = sent() if callable(sent) else sent
                exc.hint = self._hint(exc, signature_name, version, label, text)
            raise

    def _timeout_error(self, timeout, url=None, code=None) -> ServingError:
        return ServingError(
            None,
            f"no answer within {timeout or self.timeout:g} s: raise the client's timeout= "
            "(%config TFServeMagics.request_timeout for %%predict)",
            url=url or self.url,
            code=code,
        )

    # -- metadata for dtypes and hints
    def _signature(self, signature_name, version, label) -> dict | None:
        """The signature's ``{"inputs", "outputs", ...}`` (metadata cached); None if unknown."""
        key = (version, label)
        if key not in self._metadata_cache:
            try:
                meta = self.metadata(version, label)
            except TlsError:
                raise
            except ServingError as exc:
                if exc.status_code is None:  # unreachable now: ask again next time
                    return None
                meta = None
            except (KeyError, ValueError, TypeError):
                meta = None
            self._metadata_cache[key] = meta
        meta = self._metadata_cache[key]
        return meta.get(signature_name or "serving_default") if meta is not None else None

    def _hint(self, exc: ServingError, signature_name, version, label, sent) -> str | None:
        """What to do about a refused request, from the metadata and status calls."""
        message = exc.message
        try:
            if _VERSION_NOT_FOUND.search(message) or (
                exc.status_code == 404 and version is not None
            ):
                return self._versions_hint()
            if _LABEL_UNKNOWN.search(message):
                return (
                    "labels are assigned in the server's model config file (version_labels); "
                    + (self._versions_hint() or "")
                ).strip()
            if exc.status_code == 404:
                return (
                    f"the server at {self.address} has no model named {self.model_name!r} "
                    "(model names are case-sensitive); `%tfserve list` shows what runs here"
                )
            if not (400 <= exc.status_code < 500 or exc.status_code == 501):
                return None  # the server failed, not the request
            meta = self._hint_metadata(version, label)
            if meta is None:
                return None
            if _SIGNATURE_NOT_FOUND.search(message) or (
                signature_name and signature_name not in meta
            ):
                return f"available signatures: {', '.join(meta) or '(none)'}"
            if _INPUT_PROBLEM.search(message):
                name = signature_name or "serving_default"
                if name not in meta:
                    return f"available signatures: {', '.join(meta) or '(none)'}"
                hint = meta.describe(name)
                return f"{hint}\nsent: {sent}" if sent else hint
        except Exception:  # a hint must never hide the real error
            return None
        return None

    def _hint_metadata(self, version, label) -> ModelMetadata | None:
        for key in ((version, label), (None, None)):  # the version/label may be the problem
            try:
                return self._fetch_metadata(*key, timeout=HINT_TIMEOUT)
            except (ServingError, ConnectionLost):
                continue
        return None

    def _versions_hint(self) -> str | None:
        try:
            states = self._fetch_status(None, HINT_TIMEOUT)
        except (ServingError, ConnectionLost):
            return None
        text = ", ".join(f"{s.get('version')} ({s.get('state')})" for s in states)
        return f"versions of {self.model_name}: {text}" if text else None
