"""Clients for a TensorFlow-Serving-compatible server: ``Client`` and its two protocols.

``Client(target)`` talks REST (``RestClient``), ``Client(target, protocol="grpc")`` gRPC
(``GrpcClient``); both are ``Client``s with the same calls and errors. Modules:

- ``base``: ``Client`` (target, checks, resend after a reset, hints), ``resolve_target``
- ``rest`` / ``grpc``: the transports; ``body``: the JSON predict body (rows, chunks)
- ``tfserve_magic.results``: ``Prediction``, ``ModelMetadata``, ``ServingError``
- ``tfserve_magic.wire_json``: ``encode_json``, ``decode_json``, ``to_array``

No TensorFlow is imported here, and gRPC only when a gRPC client is made.
"""

from __future__ import annotations

from tfserve_magic.client.base import (
    DEFAULT_CHUNK_SIZE,
    Client,
    Endpoint,
    TlsError,
    resolve_target,
)
from tfserve_magic.client.grpc import GrpcClient
from tfserve_magic.client.rest import RestClient
from tfserve_magic.results import (
    TF_DTYPES,
    ModelMetadata,
    Prediction,
    ServingError,
    describe_value,
)
from tfserve_magic.wire_json import decode_json, encode_json, to_array

__all__ = [
    "Client",
    "RestClient",
    "GrpcClient",
    "Endpoint",
    "resolve_target",
    "ServingError",
    "TlsError",
    "Prediction",
    "ModelMetadata",
    "describe_value",
    "encode_json",
    "decode_json",
    "to_array",
    "TF_DTYPES",
    "DEFAULT_CHUNK_SIZE",
]
