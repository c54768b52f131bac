"""The REST client: TensorFlow Serving's HTTP/JSON API (our server, the real binary, or any URL).

One ``requests.Session`` per client (keep-alive), numpy in and numpy out, large row batches
split into chunks. The target, the checks, the resend after a reset and the hints live in
``Client`` (``tfserve_magic.client.base``); this module speaks HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import requests

from tfserve_magic.client.base import Client, ConnectionLost, TlsError
from tfserve_magic.client.body import RowBatch, with_signature
from tfserve_magic.client.tls import ClientTls, handshake_problem, recorded_tls, rest_tls
from tfserve_magic.results import ModelMetadata, Prediction, ServingError, describe_value
from tfserve_magic.wire_json import decode_json, encode_json, is_b64, to_array

__all__ = ["RestClient"]


class RestClient(Client):
    """``Client`` over TF Serving's REST API; ``Client(target)`` gives one.

    Besides ``Client``'s calls: ``base_url`` (settable: where the server answers now),
    ``model_url(version, label)``, ``predict_json(body)`` (a literal request body).

    HTTPS (``https://`` URLs, or a server started with ``--rest_api_ssl``): ``verify`` and
    ``cert`` as in ``requests`` (a CA bundle path, True or False; a PEM file or a
    ``(certificate, key)`` pair of files), ``server_name`` where the certificate names another
    host than the URL. A server found by name is trusted through its info file
    (``tfserve_magic.client.tls``).
    """

    protocol = "rest"

    def __init__(self, target, model: str | None = None, *, verify=None, cert=None,
                 server_name: str | None = None, **options):
        super().__init__(target, model, **options)
        if not self.rest_url:
            where = f"server {self.server_name!r}" if self.server_name else repr(target)
            raise ValueError(f"{where} has no REST address: use protocol='grpc'")
        https = self.rest_url.lower().startswith("https://")
        self.tls = rest_tls(verify, cert, server_name,
                            recorded_tls(self.server_name) if https else None)
        # what a failed connection is checked with (the system's roots when nothing was said)
        self._tls_probe = self.tls or (ClientTls() if https else None)
        self._session = requests.Session()
        self._tls_arguments = {}  # per request: REQUESTS_CA_BUNDLE would override the session's
        if self.tls is not None:
            self._tls_arguments = {"verify": self.tls.requests_verify(),
                                   "cert": self.tls.requests_cert()}
            if self.tls.server_name:
                self._session.mount("https://", _NamedHostAdapter(self.tls.server_name))

    @property
    def base_url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:8501``."""
        return self.rest_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self.rest_url = str(value).rstrip("/")

    @property
    def address(self) -> str:
        return self.rest_url

    @property
    def url(self) -> str:
        """The model's REST URL, e.g. ``http://127.0.0.1:8501/v1/models/MLP``."""
        return f"{self.rest_url}/v1/models/{self.model_name}"

    def close(self) -> None:
        self._session.close()

    def model_url(self, version: int | None = None, label: str | None = None) -> str:
        """The URL prefix of one version or label (the defaults from the URL when both None)."""
        version, label = self.version_and_label(version, label)
        if version is not None:
            return f"{self.url}/versions/{version}"
        if label is not None:
            return f"{self.url}/labels/{label}"
        return self.url

    # -- HTTP
    def _request(self, method: str, url: str, data: bytes | None = None, timeout=None):
        """One request -> (parsed JSON, seconds); ConnectionLost when nothing came back."""
        start = time.perf_counter()
        try:
            if data is None:
                response = self._session.get(url, timeout=timeout or self.timeout,
                                             **self._tls_arguments)
            else:
                response = self._session.post(
                    url,
                    data=data,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout or self.timeout,
                    **self._tls_arguments,
                )
            content = response.content
        except requests.exceptions.SSLError as exc:  # no resend: the handshake was refused
            reason = handshake_problem(self.rest_url, self._tls_probe or ClientTls(), "http/1.1")
            raise TlsError(None, f"TLS handshake with {self.rest_url} failed: "
                           f"{reason or type(exc).__name__}{_TLS_ADVICE}", url=url) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            # a read timeout while the body streams in arrives as a ConnectionError
            if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
                raise self._timeout_error(timeout, url) from None
            problem = self._tls_probe and handshake_problem(self.rest_url, self._tls_probe,
                                                            "http/1.1")
            if problem:
                raise TlsError(None, f"TLS handshake with {self.rest_url} failed: {problem}"
                               f"{_TLS_ADVICE}", url=url) from None
            raise ConnectionLost(type(exc).__name__) from None
        except requests.RequestException as exc:  # e.g. the answer broke off midway
            raise ServingError(None, f"{type(exc).__name__}: {exc}", url=url) from None
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise ServingError(response.status_code, _error_message(content), url=url)
        try:
            return decode_json(content), elapsed
        except ValueError as exc:
            raise ServingError(200, f"the response is not JSON: {exc}", url=url) from None

    def _fetch_status(self, version, timeout) -> list[dict]:
        url = self.url if version is None else f"{self.url}/versions/{version}"
        body, _ = self._request("GET", url, timeout=timeout)
        return body.get("model_version_status", [])

    def _fetch_metadata(self, version, label, timeout) -> ModelMetadata:
        body, _ = self._request("GET", self.model_url(version, label) + "/metadata",
                                timeout=timeout)
        return ModelMetadata(body)

    def _output_dtypes(self, signature_name, version, label) -> dict[str, str]:
        """Output dtypes from the metadata (cached); {} when the server cannot tell."""
        signature = self._signature(signature_name, version, label)
        try:
            return {k: dtype for k, (dtype, _) in signature["outputs"].items()}
        except (KeyError, TypeError, ValueError):
            return {}

    def _post(self, verb: str, body, version, label, describe_sent=None, signature_name=None):
        url = self.model_url(version, label) + verb
        data = body if isinstance(body, bytes) else encode_json(body)
        return self._answer(lambda: self._request("POST", url, data), signature_name, version,
                            label, describe_sent)

    # -- predict
    def _predict(self, instances, inputs, signature_name, version, label, chunk_size,
                 output_filter) -> Prediction:
        if output_filter:
            raise ValueError("output_filter= is gRPC only (protocol='grpc')")
        dtypes = self._output_dtypes(signature_name, version, label)
        if inputs is not None:
            body = with_signature({"inputs": inputs}, signature_name)
            sent = f"inputs {describe_value(inputs)}"
            response, seconds = self._post(":predict", body, version, label, sent, signature_name)
            outputs = _outputs(response, row=False, dtypes=dtypes)
            return Prediction(
                outputs, latency_s=seconds, raw=response, request_body=body, url=self.url, row=False
            )
        rows = RowBatch(instances)
        size = int(chunk_size or self.chunk_size)
        if size < 1:
            raise ValueError("chunk_size must be at least 1")
        responses, latencies, parts = [], [], []
        for start in range(0, len(rows), size):
            chunk = rows.slice(start, min(start + size, len(rows)))
            body = with_signature({"instances": chunk}, signature_name)
            try:
                response, seconds = self._post(
                    ":predict", body, version, label, rows.describe(), signature_name
                )
            except ServingError as exc:
                if len(rows) > size:  # say which part of the batch failed
                    stop = min(start + size, len(rows))
                    where = f"instances {start}..{stop - 1} of {len(rows)}"
                    exc.message += f" (in the chunk of {where})"
                raise
            responses.append(response)
            latencies.append(seconds)
            parts.append(_outputs(response, row=True, dtypes=dtypes))
        everything = rows.data if rows.named is None else rows.slice(0, len(rows))
        full_body = with_signature({"instances": everything}, signature_name)
        return Prediction(
            _concat(parts),
            latency_s=sum(latencies),
            latencies_s=latencies,
            raw=responses[0] if len(responses) == 1 else responses,
            request_body=full_body,
            url=self.url,
            row=True,
        )

    def predict_json(self, body, *, version: int | None = None, label: str | None = None):
        """Send a literal TF Serving request body (str/bytes sent byte for byte, or a dict)."""
        version, label = self.version_and_label(version, label)
        data = body.encode("utf-8") if isinstance(body, str) else body
        signature_name = None
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data)
            try:
                parsed = decode_json(data)
                signature_name = parsed.get("signature_name") if isinstance(parsed, dict) else None
            except ValueError:
                parsed = None
        elif isinstance(data, Mapping):
            parsed = data
            signature_name = data.get("signature_name")
        else:
            raise TypeError("predict_json needs a JSON string, bytes, or a dict")
        sent = None
        if isinstance(parsed, dict):
            key = "instances" if "instances" in parsed else "inputs"
            if key in parsed:
                sent = f"{key} {describe_value(parsed[key])}"
        signature_name = signature_name if isinstance(signature_name, str) else None
        response, seconds = self._post(":predict", data, version, label, sent, signature_name)
        row = "predictions" in response
        dtypes = self._output_dtypes(signature_name or None, version, label)
        return Prediction(
            _outputs(response, row=row, dtypes=dtypes),
            latency_s=seconds,
            raw=response,
            request_body=data,
            url=self.url,
            row=row,
        )

    # -- classify / regress
    def _examples_body(self, examples, context, signature_name):
        body = {"examples": list(examples)}
        if context is not None:
            body["context"] = context
        return with_signature(body, signature_name)

    def _classify(self, examples, context, signature_name, version, label) -> Prediction:
        body = self._examples_body(examples, context, signature_name)
        response, seconds = self._post(":classify", body, version, label, None, signature_name)
        results = response.get("results", [])
        classes = np.asarray([[str(c) for c, _ in r] for r in results])
        scores = np.asarray([[s for _, s in r] for r in results], dtype=np.float32)
        return Prediction(
            {"classes": classes, "scores": scores},
            latency_s=seconds,
            raw=response,
            request_body=body,
            url=self.url,
        )

    def _regress(self, examples, context, signature_name, version, label) -> Prediction:
        body = self._examples_body(examples, context, signature_name)
        response, seconds = self._post(":regress", body, version, label, None, signature_name)
        values = np.asarray(response.get("results", []), dtype=np.float32)
        return Prediction(
            values, latency_s=seconds, raw=response, request_body=body, url=self.url
        )


class _NamedHostAdapter(requests.adapters.HTTPAdapter):
    """Checks the server's certificate against ``server_name`` rather than the URL's host (and
    sends it as SNI): for a certificate made out to a name while the URL dials 127.0.0.1."""

    def __init__(self, server_name: str):
        self._server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs.update(assert_hostname=self._server_name, server_hostname=self._server_name)
        super().init_poolmanager(*args, **kwargs)


_TLS_ADVICE = (" (verify=CA_FILE trusts the server; cert=(CERT, KEY) where it asks for a "
               "client certificate)")


def _error_message(content: bytes) -> str:
    try:
        parsed = decode_json(content)
        if isinstance(parsed, dict) and "error" in parsed:
            return str(parsed["error"])
    except ValueError:
        pass
    text = content.decode("utf-8", errors="replace").strip()
    return text[:2000] or "(empty response)"


def _outputs(response, *, row: bool, dtypes: dict[str, str]):
    """A predict response as numpy: one array, or a dict for several outputs."""
    if not isinstance(response, dict):
        raise ServingError(200, f"unexpected response: {str(response)[:200]}")
    key = "predictions" if row else "outputs"
    if key not in response:
        raise ServingError(200, f"the response has no {key!r} key: {str(response)[:200]}")
    value = response[key]
    single = next(iter(dtypes.values())) if len(dtypes) == 1 else None
    if row:
        first = value[0] if isinstance(value, list) and value else None
        if isinstance(first, dict) and not is_b64(first):
            names = list(first)
            return {
                name: to_array([item[name] for item in value], dtypes.get(name)) for name in names
            }
        return to_array(value, single)
    if isinstance(value, dict) and not is_b64(value):
        return {name: to_array(v, dtypes.get(name)) for name, v in value.items()}
    return to_array(value, single)


def _concat(parts: list):
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], dict):
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return np.concatenate(parts)
