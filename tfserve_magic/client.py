"""HTTP client for TensorFlow Serving's REST API: our server, the real binary, or a remote URL.

One ``requests.Session`` per client (keep-alive), numpy in and numpy out, large row batches split
into chunks, and server errors raised as ``ServingError`` with what the signature expects, because
TensorFlow Serving's own messages rarely say it.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import requests
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["Client", "ServingError", "Prediction", "ModelMetadata", "encode_json", "decode_json"]

DEFAULT_CHUNK_SIZE = 1000
_HINT_TIMEOUT = 5.0  # seconds for the metadata/status calls that build an error hint

# TensorFlow DataType enum names (metadata) -> numpy dtype names; "string" has no numpy twin.
TF_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
    "DT_BOOL": "bool",
    "DT_STRING": "string",
    "DT_COMPLEX64": "complex64",
    "DT_COMPLEX128": "complex128",
}

# Server messages about what the request held (names, dtypes, shapes): these get a hint.
_INPUT_PROBLEM = re.compile(
    r"input|shape|type|size|level|base64|rank|dimension|incompatible|convert|instances|tensor",
    re.IGNORECASE,
)
_SIGNATURE_NOT_FOUND = re.compile(r"signature.*not found|not found.*signature", re.IGNORECASE)
_VERSION_NOT_FOUND = re.compile(r"Specific\(|Could not find version", re.IGNORECASE)
_LABEL_UNKNOWN = re.compile(r"version label", re.IGNORECASE)
_URL = re.compile(
    r"^(?P<base>https?://[^/?#]+)"
    r"(?:/v1/models/(?P<model>[^/:?#]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:?#]+))?)?/*$",
    re.IGNORECASE,
)


class ServingError(Exception):
    """A request the server refused (``status_code``, its ``message``) or could not be reached.

    ``hint`` says what the signature expects (from the metadata call) when the message is about
    input names, dtypes or shapes; ``str(error)`` shows all of it.
    """

    def __init__(self, status_code: int | None, message: str, hint: str | None = None, url=None,
                 code: str | None = None):
        super().__init__(status_code, message, hint, url)
        self.status_code = status_code
        self.message = message
        self.hint = hint
        self.url = url
        self.code = code  # the gRPC status name (INVALID_ARGUMENT ...) for gRPC calls

    def __str__(self) -> str:
        where = f" from {self.url}" if self.url else ""
        head = f"HTTP {self.status_code}{where}" if self.status_code else f"Request failed{where}"
        if self.code is not None and self.status_code:
            head = f"gRPC {self.code}{where}"
        text = f"{head}: {self.message}"
        return f"{text}\n{self.hint}" if self.hint else text


# ---------------------------------------------------------------------------------- JSON codec
def _json_default(obj):
    """orjson's fallback: bytes as TF Serving's b64 objects, odd arrays and tensors as lists."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "OSUV":
            return obj.tolist()
        return np.ascontiguousarray(obj)  # orjson needs C order; this also unwraps subclasses
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Prediction):
        return obj.outputs
    if hasattr(obj, "__array__"):  # tf.Tensor, jax/torch arrays
        return np.asarray(obj)
    raise TypeError(f"cannot send a value of type {type(obj).__name__} as JSON")


_TOKENS = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}


def _token(value: float) -> bytes:
    return _TOKENS["nan" if value != value else ("inf" if value > 0 else "-inf")]


def _array_with_tokens(array: np.ndarray) -> orjson.Fragment:
    """A float array holding NaN/Inf, encoded by orjson with TF Serving's tokens spliced in.

    Each kind of non-finite value is replaced by a finite sentinel the array does not hold;
    in orjson's compact output every number sits between ``[``/``,`` and ``,``/``]``, so the
    sentinel's text is replaced exactly.
    """
    array = np.ascontiguousarray(array)
    finite = np.isfinite(array)
    top = np.finfo(array.dtype).max
    values = array[finite]
    sentinels = []
    for k in range(64):  # the largest magnitudes: almost never in real data
        candidate = top / 2.0**k
        if not ((values == candidate) | (values == -candidate)).any():
            sentinels.append(candidate)
            if len(sentinels) == 3:
                break
    patched = array.copy()
    replacements = []
    for kind, sentinel in zip(("nan", "inf", "-inf"), sentinels):
        mask = np.isnan(array) if kind == "nan" else array == float(kind)
        if mask.any():
            patched[mask] = sentinel
            text = orjson.dumps(np.array([sentinel], dtype=array.dtype), option=_NUMPY)[1:-1]
            replacements.append((text, _TOKENS[kind]))
    data = orjson.dumps(patched, option=_NUMPY)
    for text, token in replacements:
        data = re.sub(rb"(?<=[\[,])" + re.escape(text) + rb"(?=[\],])", token, data)
    return orjson.Fragment(data)


def _with_tokens(obj):
    """The body with every non-finite float turned into an orjson Fragment of its token."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else orjson.Fragment(_token(obj))
    if isinstance(obj, Mapping):
        return {k: _with_tokens(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_with_tokens(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f" and obj.ndim and not np.isfinite(obj).all():
            return _array_with_tokens(obj)
        if obj.dtype.kind == "O":
            return _with_tokens(obj.tolist())
        return _with_tokens(obj.item()) if obj.ndim == 0 and obj.dtype.kind == "f" else obj
    if isinstance(obj, np.floating):
        return obj if np.isfinite(obj) else orjson.Fragment(_token(float(obj)))
    if isinstance(obj, Prediction):
        return _with_tokens(obj.outputs)
    if hasattr(obj, "__array__") and not isinstance(obj, np.generic):
        return _with_tokens(np.asarray(obj))
    return obj


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def encode_json(body) -> bytes:
    """Encode a request body; NaN and ±Infinity are written as TF Serving's bare tokens.

    orjson (fast, numpy-aware) writes ``null`` for non-finite floats, which TF Serving rejects,
    so a body whose encoding holds ``null`` is encoded again with those values spliced in as
    ``NaN``/``Infinity``/``-Infinity`` (a real None stays ``null``).
    """
    try:
        data = orjson.dumps(body, option=_NUMPY, default=_json_default)
        if b"null" in data:
            data = orjson.dumps(_with_tokens(body), option=_NUMPY, default=_json_default)
    except orjson.JSONEncodeError as exc:  # our default's message says which value
        raise TypeError(str(exc.__cause__ or exc)) from None
    return data


def decode_json(data: bytes):
    """Parse a response; TF Serving writes non-finite floats as bare NaN/Infinity tokens."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", errors="replace"))


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _first_leaf(value):
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _decode_b64(value):
    if _is_b64(value):
        return base64.b64decode(value["b64"])
    return [_decode_b64(v) for v in value] if isinstance(value, list) else value


def to_array(value, dtype: str | None = None) -> np.ndarray:
    """A JSON tensor as numpy: ``{"b64": ...}`` leaves become bytes, numbers take ``dtype``."""
    if _is_b64(_first_leaf(value)):
        decoded = _decode_b64(value)
        array = np.empty(np.shape(decoded) if isinstance(decoded, list) else (), dtype=object)
        array[...] = decoded
        return array
    try:
        array = np.asarray(value)
    except ValueError:  # ragged: keep the lists
        array = np.empty(len(value), dtype=object)
        array[:] = value
        return array
    if dtype and dtype not in ("string", "bfloat16") and array.dtype.kind in "fiub":
        try:
            array = array.astype(dtype, copy=False)
        except TypeError:
            pass
    return array


# ---------------------------------------------------------------------------------- results
class Prediction(NDArrayOperatorsMixin):
    """What ``Client.predict`` returns: the outputs plus how long the request took.

    It behaves like the output array (``np.asarray(p)``, ``p[0]``, ``p.argmax(1)``, ``p == y``)
    or, for a signature with several outputs, like the dict of arrays (``p["scores"]``).

    - ``outputs``: the numpy array, or dict name -> array for several outputs
    - ``latency_s``: round-trip seconds, summed over chunks; ``latencies_s`` per request
    - ``raw``: the parsed response JSON (a list of them when the batch was sent in chunks)
    - ``request_body``: what was sent: a dict holding the caller's data, or the exact bytes
    - ``row``: True for the row (``instances``) format, False for columnar (``inputs``)
    """

    def __init__(
        self,
        outputs,
        *,
        latency_s: float,
        latencies_s: Sequence[float] = (),
        raw=None,
        request_body=None,
        url: str | None = None,
        row: bool = True,
    ):
        self.outputs = outputs
        self.latency_s = latency_s
        self.latencies_s = list(latencies_s) or [latency_s]
        self.raw = raw
        self.request_body = request_body
        self.url = url
        self.row = row

    @property
    def n_requests(self) -> int:
        return len(self.latencies_s)

    def _array(self) -> np.ndarray:
        if isinstance(self.outputs, dict):
            names = ", ".join(self.outputs)
            first = next(iter(self.outputs))
            raise TypeError(f"this signature has several outputs ({names}): pick one: p[{first!r}]")
        return self.outputs

    def __array__(self, dtype=None, copy=None):
        array = self._array()
        if dtype is not None:
            return array.astype(dtype, copy=bool(copy))
        return array.copy() if copy else array

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(x._array() if isinstance(x, Prediction) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getitem__(self, key):
        return self.outputs[key]

    def __len__(self) -> int:
        return len(self.outputs)

    def __iter__(self):
        return iter(self.outputs)

    def __getattr__(self, name: str):
        # Only reached for names Prediction lacks: shape, dtype, argmax, keys, items, ...
        if name.startswith("__") or "outputs" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["outputs"], name)

    def __repr__(self) -> str:
        requests_text = f", {self.n_requests} requests" if self.n_requests > 1 else ""
        head = f"Prediction({self.latency_s * 1000:.1f} ms{requests_text})"
        if isinstance(self.outputs, dict):
            parts = [f"{k}: {_summary(v)}" for k, v in self.outputs.items()]
            return head + "\n" + "\n".join(parts)
        return f"{head}\n{np.array2string(self.outputs, threshold=50, edgeitems=3)}"


def _summary(value) -> str:
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    return f"{array.dtype}{list(array.shape)} {np.array2string(array, threshold=20, edgeitems=2)}"


def _shape_text(shape) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


class ModelMetadata(dict):
    """Signature name -> ``{"inputs": {name: (dtype, shape)}, "outputs": {...}, "method_name"}``.

    Dtypes are numpy names ("float32", "string"); shapes are tuples with None for unknown
    dimensions, or None for unknown rank. ``raw`` holds the server's JSON, ``version`` the
    version that answered.
    """

    def __init__(self, raw: dict):
        super().__init__()
        self.raw = raw
        spec = raw.get("model_spec") or {}
        self.model_name = spec.get("name")
        self.version = int(spec["version"]) if str(spec.get("version", "")).isdigit() else None
        defs = ((raw.get("metadata") or {}).get("signature_def") or {}).get("signature_def") or {}
        for name, sig in sorted(defs.items()):
            if name.startswith("__"):  # __saved_model_init_op is no signature a client can call
                continue
            self[name] = {
                "inputs": _tensor_infos(sig.get("inputs")),
                "outputs": _tensor_infos(sig.get("outputs")),
                "method_name": sig.get("method_name", ""),
            }

    def describe(self, signature_name: str | None = None) -> str:
        """One line per tensor, e.g. ``inputs: images float32[-1,28,28,1]``."""
        name = signature_name or "serving_default"
        sig = self[name]

        def tensors(group):
            return ", ".join(f"{k} {d}{_shape_text(s)}" for k, (d, s) in sig[group].items())

        inputs, outputs = tensors("inputs"), tensors("outputs")
        return f"signature {name!r} expects inputs: {inputs}; outputs: {outputs}"

    def __repr__(self) -> str:
        lines = [f"ModelMetadata({self.model_name!r}, version {self.version})"]
        lines += [f"  {self.describe(name)}" for name in self]
        return "\n".join(lines)


def _tensor_infos(infos: dict | None) -> dict[str, tuple[str, tuple | None]]:
    return {name: _tensor_info(info) for name, info in sorted((infos or {}).items())}


def _tensor_info(info: dict) -> tuple[str, tuple | None]:
    dtype = TF_DTYPES.get(info.get("dtype", ""), str(info.get("dtype", "")).lower())
    shape_info = info.get("tensor_shape") or {}
    if shape_info.get("unknown_rank"):
        return dtype, None
    dims = tuple(int(d.get("size", -1)) for d in shape_info.get("dim") or [])
    return dtype, tuple(None if d < 0 else d for d in dims)


# ---------------------------------------------------------------------------------- row batches
class _RowBatch:
    """Normalised ``instances``: something with a length that can be sliced into chunks."""

    def __init__(self, instances):
        self.named: dict[str, Any] | None = None
        if isinstance(instances, Mapping):
            if not instances:
                raise ValueError("instances is an empty dict: give one array per named input")
            self.named = {}
            lengths = {}
            for key, value in instances.items():
                array = value if isinstance(value, (list, tuple)) else np.asarray(value)
                if isinstance(array, np.ndarray) and array.ndim == 0:
                    raise ValueError(
                        f"named input {key!r} is a scalar; the row format needs one value per "
                        "instance (a batch dimension). For a single tensor use inputs= (columnar)."
                    )
                self.named[str(key)] = array
                lengths[str(key)] = len(array)
            if len(set(lengths.values())) > 1:
                raise ValueError(f"named inputs have different batch sizes: {lengths}")
            self.length = next(iter(lengths.values()))
            self.data = None
        elif isinstance(instances, (list, tuple)):
            self.data = list(instances) if isinstance(instances, tuple) else instances
            self.length = len(self.data)
        else:
            array = np.asarray(instances)
            if array.ndim == 0:
                raise ValueError(
                    "instances needs a batch dimension (one entry per instance); "
                    "for a single tensor use inputs= (columnar)"
                )
            self.data = array
            self.length = len(array)
        if self.length == 0:
            raise ValueError("instances is empty: TF Serving rejects an empty batch")

    def __len__(self) -> int:
        return self.length

    def slice(self, start: int, stop: int):
        if self.named is None:
            return self.data[start:stop]
        return [{k: v[i] for k, v in self.named.items()} for i in range(start, stop)]

    def describe(self) -> str:
        if self.named is None:
            return f"instances {_describe_value(self.data)}"
        return "instances of named inputs " + ", ".join(
            f"{k} {_describe_value(v)}" for k, v in self.named.items()
        )


def _describe_value(value) -> str:
    """What was sent, e.g. ``float64[2,784]`` or ``list[3] of int``."""
    if isinstance(value, np.ndarray):
        kind = {"U": "str", "S": "bytes"}.get(value.dtype.kind, str(value.dtype))
        return f"{kind}{_shape_text(value.shape)}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_describe_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        shape, inner, row = [], value, value
        while isinstance(inner, (list, tuple)) and inner:
            shape.append(len(inner))
            row, inner = inner, inner[0]
        # the innermost row's element types: a stray string among numbers shows as "int, str"
        leaves = [inner] if row is value and not value else list(row[:100])
        names = dict.fromkeys(
            "dict" if isinstance(v, Mapping) else type(v).__name__ for v in leaves
        )
        return f"list{_shape_text(shape)} of {', '.join(names)}"
    if hasattr(value, "__array__"):
        return _describe_value(np.asarray(value))
    return type(value).__name__


# ---------------------------------------------------------------------------------- client
class Client:
    """Talk to one model on a TensorFlow-Serving-compatible REST server.

    ``protocol="grpc"`` returns a ``tfserve_magic.grpc_client.GrpcClient`` instead: the same
    methods over TF Serving's gRPC API (the server's gRPC port).

    ``name_or_url``: a model or server name known to ``tfserve_magic.manager`` ("MLP"), a
    ``ServerHandle``, ``http://host:port`` (then ``model=`` is required), or
    ``http://host:port/v1/models/NAME`` (optionally ``/versions/N`` or ``/labels/L``, used as
    the default for every call).
    """

    protocol = "rest"

    def __new__(cls, *args, protocol: str = "rest", **kwargs):
        if protocol == "grpc":
            from tfserve_magic.grpc_client import GrpcClient

            return GrpcClient(*args, **kwargs)
        if protocol != "rest":
            raise ValueError(f"protocol must be 'rest' or 'grpc', not {protocol!r}")
        return super().__new__(cls)

    def __init__(
        self,
        name_or_url,
        model: str | None = None,
        *,
        timeout: float = 30.0,
        chunk_size: int | None = None,
        protocol: str = "rest",
    ):
        self.timeout = float(timeout)
        self.chunk_size = int(chunk_size) if chunk_size else DEFAULT_CHUNK_SIZE
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.default_version: int | None = None
        self.default_label: str | None = None
        self.base_url, self.model_name = self._resolve(name_or_url, model)
        self._session = requests.Session()
        self._dtype_cache: dict[tuple, dict[str, str]] = {}

    # -- resolution
    def _resolve(self, target, model: str | None) -> tuple[str, str]:
        if hasattr(target, "url") and hasattr(target, "models") and not isinstance(target, str):
            models = list(getattr(target, "models", None) or [])
            model = model or (models[0] if models else None)
            if not model:
                raise ValueError(f"server {getattr(target, 'name', target.url)!r} serves no model")
            return str(target.url).rstrip("/"), model
        if not isinstance(target, str) or not target.strip():
            raise TypeError("Client needs a server/model name, a URL, or a ServerHandle")
        text = target.strip()
        if re.match(r"^[\w.-]+:\d+(/|$)", text):  # host:port without a scheme
            text = "http://" + text
        if re.match(r"^https?://", text, re.IGNORECASE):
            match = _URL.match(text)
            if not match:
                raise ValueError(
                    f"cannot read {target!r}: expected http://HOST:PORT or "
                    "http://HOST:PORT/v1/models/NAME[/versions/N | /labels/L]"
                )
            model = model or match["model"]
            if not model:
                raise ValueError(
                    f"{target!r} names no model: pass model='NAME' or use "
                    f"{match['base']}/v1/models/NAME"
                )
            self.default_version = int(match["version"]) if match["version"] else None
            self.default_label = match["label"]
            return match["base"], model
        return _resolve_name(text, model)

    @property
    def url(self) -> str:
        """The model's REST URL, e.g. ``http://127.0.0.1:8501/v1/models/MLP``."""
        return f"{self.base_url}/v1/models/{self.model_name}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def model_url(self, version: int | None = None, label: str | None = None) -> str:
        """The URL prefix of one version or label (the defaults from the URL when both None)."""
        if version is not None and label is not None:
            raise ValueError("pass version= or label=, not both")
        if version is None and label is None:
            version, label = self.default_version, self.default_label
        if version is not None:
            if isinstance(version, bool) or not str(version).isdigit():
                raise ValueError(f"version must be a non-negative integer, got {version!r}")
            return f"{self.url}/versions/{int(version)}"
        if label is not None:
            if not str(label) or "/" in str(label):
                raise ValueError(f"invalid version label {label!r}")
            return f"{self.url}/labels/{label}"
        return self.url

    # -- HTTP
    def _request(self, method: str, url: str, data: bytes | None = None, timeout=None):
        """One request -> (parsed JSON, seconds); errors become ServingError (no hint yet)."""
        start = time.perf_counter()
        try:
            if data is None:
                response = self._session.get(url, timeout=timeout or self.timeout)
            else:
                response = self._session.post(
                    url,
                    data=data,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout or self.timeout,
                )
            content = response.content
        except (requests.Timeout, requests.ConnectionError) as exc:
            # a read timeout while the body streams in arrives as a ConnectionError
            if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
                raise ServingError(
                    None,
                    f"no answer within {timeout or self.timeout:g} s: raise the client's timeout= "
                    "(%config TFServeMagics.request_timeout for %%predict)",
                    url=url,
                ) from None
            raise ServingError(
                None,
                f"cannot connect to {self.base_url}: is the server running? "
                f"(%tfserve list shows the running servers) [{type(exc).__name__}]",
                url=url,
            ) from None
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise ServingError(response.status_code, _error_message(content), url=url)
        try:
            return decode_json(content), elapsed
        except ValueError as exc:
            raise ServingError(200, f"the response is not JSON: {exc}", url=url) from None

    def status(self, version: int | None = None) -> list[dict]:
        """The model's version states: ``[{"version": "1", "state": "AVAILABLE", ...}, ...]``."""
        url = self.url if version is None else self.model_url(version=version)
        body, _ = self._request("GET", url)
        return body.get("model_version_status", [])

    def metadata(self, version: int | None = None, label: str | None = None) -> ModelMetadata:
        """The signatures (names, dtypes, shapes) of the latest or a given version/label."""
        body, _ = self._request("GET", self.model_url(version, label) + "/metadata")
        return ModelMetadata(body)

    def _output_dtypes(self, signature_name, version, label) -> dict[str, str]:
        """Output dtypes from the metadata (cached); {} when the server cannot tell."""
        key = (signature_name or "serving_default", version, label)
        if key not in self._dtype_cache:
            try:
                meta = self.metadata(version, label)
                outputs = meta[key[0]]["outputs"]
                self._dtype_cache[key] = {k: dtype for k, (dtype, _) in outputs.items()}
            except ServingError as exc:
                if exc.status_code is None:  # unreachable now: ask again next time
                    return {}
                self._dtype_cache[key] = {}
            except (KeyError, ValueError, TypeError):
                self._dtype_cache[key] = {}
        return self._dtype_cache[key]

    def _post(self, verb: str, body, version, label, describe_sent=None, signature_name=None):
        url = self.model_url(version, label) + verb
        data = body if isinstance(body, bytes) else encode_json(body)
        try:
            return self._request("POST", url, data)
        except ServingError as exc:
            if exc.status_code:
                exc.hint = self._hint(exc, signature_name, version, label, describe_sent)
            raise exc from None

    def _hint(self, exc: ServingError, signature_name, version, label, describe_sent) -> str | None:
        """What to do about a refused request, from the metadata and status calls."""
        message = exc.message
        try:
            if _VERSION_NOT_FOUND.search(message) or (
                exc.status_code == 404 and (version is not None or self.default_version)
            ):
                return self._versions_hint()
            if _LABEL_UNKNOWN.search(message):
                return (
                    "labels are assigned in the server's model config file (version_labels); "
                    + (self._versions_hint() or "")
                ).strip()
            if exc.status_code == 404:
                return (
                    f"the server at {self.base_url} has no model named {self.model_name!r} "
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
                return f"{hint}\nsent: {describe_sent}" if describe_sent else hint
        except Exception:  # a hint must never hide the real error
            return None
        return None

    def _hint_metadata(self, version, label) -> ModelMetadata | None:
        try:
            body, _ = self._request(
                "GET", self.model_url(version, label) + "/metadata", timeout=_HINT_TIMEOUT
            )
            return ModelMetadata(body)
        except ServingError:
            try:  # the version/label itself may be the problem: describe the latest
                body, _ = self._request("GET", self.url + "/metadata", timeout=_HINT_TIMEOUT)
                return ModelMetadata(body)
            except ServingError:
                return None

    def _versions_hint(self) -> str | None:
        try:
            body, _ = self._request("GET", self.url, timeout=_HINT_TIMEOUT)
        except ServingError:
            return None
        states = [
            f"{v.get('version')} ({v.get('state')})" for v in body.get("model_version_status", [])
        ]
        return f"versions of {self.model_name}: {', '.join(states)}" if states else None

    # -- predict
    @staticmethod
    def build_predict_body(instances=None, inputs=None, *, signature_name=None) -> dict:
        """The whole predict request ``predict`` sends (before chunking), as a dict."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row format) or inputs= (columnar)")
        if inputs is not None:
            return _with_signature({"inputs": inputs}, signature_name)
        rows = _RowBatch(instances)
        everything = rows.data if rows.named is None else rows.slice(0, len(rows))
        return _with_signature({"instances": everything}, signature_name)

    def predict(
        self,
        instances=None,
        inputs=None,
        *,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        chunk_size: int | None = None,
    ) -> Prediction:
        """Run the model: ``instances=`` (row format, chunked) or ``inputs=`` (columnar).

        ``instances`` is an array or list with one entry per instance, a list of dicts of named
        inputs, or a dict name -> batched array (sent as a list of per-instance objects).
        ``inputs`` is sent as one tensor (or a dict of named tensors), with no chunking.
        """
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row format) or inputs= (columnar)")
        if signature_name is not None and not isinstance(signature_name, str):
            raise TypeError("signature_name must be a string")
        self.model_url(version, label)  # validate before sending anything
        dtypes = self._output_dtypes(signature_name, version, label)
        if inputs is not None:
            body = _with_signature({"inputs": inputs}, signature_name)
            sent = f"inputs {_describe_value(inputs)}"
            response, seconds = self._post(":predict", body, version, label, sent, signature_name)
            outputs = _outputs(response, row=False, dtypes=dtypes)
            return Prediction(
                outputs, latency_s=seconds, raw=response, request_body=body, url=self.url, row=False
            )
        rows = _RowBatch(instances)
        size = int(chunk_size or self.chunk_size)
        if size < 1:
            raise ValueError("chunk_size must be at least 1")
        responses, latencies, parts = [], [], []
        for start in range(0, len(rows), size):
            chunk = rows.slice(start, min(start + size, len(rows)))
            body = _with_signature({"instances": chunk}, signature_name)
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
        full_body = _with_signature({"instances": everything}, signature_name)
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
                sent = f"{key} {_describe_value(parsed[key])}"
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
        if isinstance(examples, Mapping) or not isinstance(examples, (list, tuple)):
            raise TypeError("examples must be a list of dicts (feature name -> value or list)")
        body = {"examples": list(examples)}
        if context is not None:
            body["context"] = context
        return _with_signature(body, signature_name)

    def classify(
        self, examples, *, context=None, signature_name=None, version=None, label=None
    ) -> Prediction:
        """Classify tf.Examples: outputs ``{"classes": str [N,k], "scores": float32 [N,k]}``."""
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

    def regress(
        self, examples, *, context=None, signature_name=None, version=None, label=None
    ) -> Prediction:
        """Regress tf.Examples: outputs a float32 array [N]."""
        body = self._examples_body(examples, context, signature_name)
        response, seconds = self._post(":regress", body, version, label, None, signature_name)
        values = np.asarray(response.get("results", []), dtype=np.float32)
        return Prediction(
            values, latency_s=seconds, raw=response, request_body=body, url=self.url
        )


def _with_signature(body: dict, signature_name: str | None) -> dict:
    if signature_name:
        return {"signature_name": signature_name, **body}
    return body


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
        if isinstance(first, dict) and not _is_b64(first):
            names = list(first)
            return {
                name: to_array([item[name] for item in value], dtypes.get(name)) for name in names
            }
        return to_array(value, single)
    if isinstance(value, dict) and not _is_b64(value):
        return {name: to_array(v, dtypes.get(name)) for name, v in value.items()}
    return to_array(value, single)


def _concat(parts: list):
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], dict):
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return np.concatenate(parts)


def _resolve_name(name: str, model: str | None) -> tuple[str, str]:
    """A name known to the manager -> (base URL, model name); LookupError lists what runs."""
    from tfserve_magic import registry

    address = registry.lookup(name, model)
    return address.url.rstrip("/"), address.model
