"""The gRPC client: TF Serving's PredictionService/ModelService (no TensorFlow import).

``Client``'s interface over the official ``tensorflow-serving-api`` stubs. Requests carry raw
``tensor_content`` bytes (what ``tf.make_tensor_proto`` sends), so no JSON is built or parsed
on either side. The generated modules are imported without running ``tensorflow/__init__.py``
(see ``_protos``), and only when a client is made, so ``import tfserve_magic.client`` stays
light.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from tfserve_magic import _protos
from tfserve_magic.client.base import Client, ConnectionLost, TlsError
from tfserve_magic.client.tls import grpc_tls, handshake_problem, recorded_tls
from tfserve_magic.results import ModelMetadata, Prediction, ServingError, describe_value

__all__ = ["GrpcClient"]

_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # dial again 0.1 s after a refused or reset connection (gRPC's default: 1 s), so a resend
    # after Client's retry_backoff (0.2 s) finds a restarted server instead of failing fast
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# gRPC status -> the HTTP status TF Serving's REST API gives the same error.
_HTTP = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def _tensor_proto():
    """numpy <-> TensorProto (imported on first use: it loads protobuf and ml_dtypes)."""
    from tfserve_magic import tensor_proto

    return tensor_proto


class GrpcClient(Client):
    """``Client`` over TF Serving's gRPC API; ``Client(target, protocol="grpc")`` gives one.

    Besides ``Client``'s calls: ``target`` (the gRPC ``host:port``), ``build_request(...)``
    (the ``PredictRequest`` that ``predict`` sends) and ``rest_url`` where the registry or the
    ``ServerHandle`` tells the same server's REST address (None otherwise).

    TLS (a server with ``--ssl_config_file``): ``root_certificates`` (the CA to trust; None:
    gRPC's default roots), ``private_key`` and ``certificate_chain`` (the client's key pair,
    for ``client_verify``), each PEM bytes or a file path; ``server_name`` when the server's
    certificate names another host than the target (``grpc.ssl_target_name_override``);
    ``tls=True`` for TLS with none of these. A server found by name is trusted through its
    info file (``tfserve_magic.client.tls``).
    """

    protocol = "grpc"

    def __init__(self, target, model: str | None = None, *, root_certificates=None,
                 private_key=None, certificate_chain=None, server_name: str | None = None,
                 tls: bool | None = None, **options):
        import grpc

        super().__init__(target, model, **options)
        if not self.grpc_target:
            where = f"server {self.server_name!r}" if self.server_name else repr(target)
            raise ValueError(
                f"{where} serves no gRPC port (start it with --grpc-port, or use "
                "protocol='rest')"
            )
        self._grpc = grpc
        self.tls = grpc_tls(root_certificates, private_key, certificate_chain, server_name, tls,
                            recorded_tls(self.server_name))
        if self.tls is None:
            self._channel = grpc.insecure_channel(self.grpc_target, options=_OPTIONS)
        else:
            self._channel = grpc.secure_channel(
                self.grpc_target, self.tls.channel_credentials(),
                options=_OPTIONS + self.tls.channel_options())
        service = _protos.apis("prediction_service_pb2_grpc")
        models = _protos.apis("model_service_pb2_grpc")
        self._predict_stub = service.PredictionServiceStub(self._channel)
        self._model_stub = models.ModelServiceStub(self._channel)

    @property
    def target(self) -> str:
        """``host:port`` (or ``unix:/path``) for ``grpc.insecure_channel``."""
        return self.grpc_target

    @property
    def address(self) -> str:
        return self.grpc_target

    @property
    def url(self) -> str:
        return f"grpc://{self.grpc_target}/{self.model_name}"

    def close(self) -> None:
        self._channel.close()

    # -- plumbing
    def _spec(self, spec, version=None, label=None, signature_name=None) -> None:
        """Fill a ModelSpec from a checked version/label (``version_and_label``)."""
        spec.name = self.model_name
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = str(label)
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, method, request, timeout=None):
        """One RPC -> (response, seconds); ConnectionLost for UNAVAILABLE (nothing answered)."""
        start = time.perf_counter()
        try:
            response = method(request, timeout=timeout or self.timeout)
        except self._grpc.RpcError as exc:
            code = exc.code()
            name = code.name if code is not None else "UNKNOWN"
            problem = None
            if name == "UNAVAILABLE" and self.tls is not None:
                problem = handshake_problem(self.grpc_target, self.tls, "h2") or (
                    exc.details() if _handshake_failed(exc) else None)
            if problem:
                raise TlsError(None, f"TLS handshake with {self.grpc_target} failed: "
                               f"{problem} (root_certificates= trusts the server; "
                               "certificate_chain= and private_key= when it asks for a "
                               "client certificate)", url=self.url, code=name) from None
            if name == "UNAVAILABLE":
                raise ConnectionLost(exc.details() or name, code=name) from None
            if name == "DEADLINE_EXCEEDED":
                raise self._timeout_error(timeout, code=name) from None
            raise ServingError(_HTTP.get(name, 500), exc.details() or "", url=self.url,
                               code=name) from None
        return response, time.perf_counter() - start

    # -- ModelService / metadata
    def _fetch_status(self, version, timeout) -> list[dict]:
        """The model's version states, in the REST API's JSON form."""
        status_pb2 = _protos.apis("get_model_status_pb2")
        request = status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version=version)
        response, _ = self._call(self._model_stub.GetModelStatus, request, timeout)
        states = status_pb2.ModelVersionStatus.State
        codes = _protos.load("tensorflow.core.protobuf.error_codes_pb2").Code
        return [
            {
                "version": str(s.version),
                "state": states.Name(s.state),
                "status": {"error_code": codes.Name(s.status.error_code),
                           "error_message": s.status.error_message},
            }
            for s in response.model_version_status
        ]

    def _fetch_metadata(self, version, label, timeout) -> ModelMetadata:
        """The signatures, in the REST API's JSON form, as ``ModelMetadata``."""
        from google.protobuf import json_format

        metadata_pb2 = _protos.apis("get_model_metadata_pb2")
        request = metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version, label)
        response, _ = self._call(self._predict_stub.GetModelMetadata, request, timeout)
        signature_map = metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        raw = {
            "model_spec": {"name": response.model_spec.name, "signature_name": "",
                           "version": str(response.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_map, preserving_proto_field_name=True)},
        }
        return ModelMetadata(raw)

    # -- PredictionService
    def _predict(self, instances, inputs, signature_name, version, label, chunk_size,
                 output_filter) -> Prediction:
        """``instances=`` and ``inputs=`` mean the same here (gRPC tensors are columnar);
        numbers are cast to the signature's dtypes (from the metadata) before they are sent."""
        tensor_proto = _tensor_proto()
        request = self.build_request(instances, inputs, signature_name=signature_name,
                                     version=version, label=label, output_filter=output_filter)

        def sent():
            return ", ".join(f"{k} {describe_value(tensor_proto.to_numpy(v))}"
                             for k, v in request.inputs.items())

        response, seconds = self._answer(
            lambda: self._call(self._predict_stub.Predict, request), signature_name, version,
            label, sent)
        outputs = {name: tensor_proto.to_numpy(proto) for name, proto in response.outputs.items()}
        value = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return Prediction(value, latency_s=seconds, raw=response, request_body=request,
                          url=self.url, row=instances is not None)

    def build_request(self, instances=None, inputs=None, *, signature_name=None, version=None,
                      label=None, output_filter=None):
        """The ``PredictRequest`` that ``predict`` sends (inputs as ``tensor_content``)."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row format) or inputs= (columnar)")
        version, label = self.version_and_label(version, label)
        value = instances if instances is not None else inputs
        if isinstance(value, (list, tuple)) and value and all(
                isinstance(v, Mapping) for v in value):  # rows of named inputs
            value = {name: np.asarray([row[name] for row in value]) for name in value[0]}
        signature = self._signature(signature_name, version, label)
        if signature is None and (version, label) != (None, None):
            # the version/label itself may be wrong: take the names from the latest, and let
            # the server say what is wrong with the request
            signature = self._signature(signature_name, None, None)
        specs = signature["inputs"] if signature else {}
        if isinstance(value, Mapping):
            tensors = dict(value)
        elif len(specs) == 1:
            tensors = {next(iter(specs)): value}
        else:
            names = ", ".join(specs) or "unknown (the metadata call failed)"
            raise ValueError(f"pass a dict of named inputs: the signature's inputs are {names}")
        tensor_proto = _tensor_proto()
        request = _protos.apis("predict_pb2").PredictRequest()
        self._spec(request.model_spec, version, label, signature_name)
        for name, tensor in tensors.items():
            array = np.asarray(tensor)
            want = specs.get(name, (None,))[0]
            if want and want != "string" and array.dtype.kind in "biuf" and array.dtype != want:
                try:
                    array = array.astype(want)
                except TypeError:
                    pass
            tensor_proto.fill(request.inputs[name], array, content=True)
        if output_filter:
            request.output_filter.extend(list(output_filter))
        return request

    def _examples_call(self, method, request, examples, context, signature_name, version,
                       label):
        """Send tf.Examples (Classify or Regress) -> (request, response, seconds)."""
        self._spec(request.model_spec, version, label, signature_name)
        if context is not None:
            target = request.input.example_list_with_context
            target.context.CopyFrom(_make_example(context))
        else:
            target = request.input.example_list
        for example in examples:
            target.examples.add().CopyFrom(_make_example(example))
        response, seconds = self._answer(lambda: self._call(method, request), signature_name,
                                         version, label)
        return request, response, seconds

    def _classify(self, examples, context, signature_name, version, label) -> Prediction:
        request, response, seconds = self._examples_call(
            self._predict_stub.Classify, _protos.apis("classification_pb2").ClassificationRequest(),
            examples, context, signature_name, version, label)
        rows = response.result.classifications
        classes = np.asarray([[c.label for c in r.classes] for r in rows])
        scores = np.asarray([[c.score for c in r.classes] for r in rows], dtype=np.float32)
        return Prediction({"classes": classes, "scores": scores}, latency_s=seconds,
                          raw=response, request_body=request, url=self.url)

    def _regress(self, examples, context, signature_name, version, label) -> Prediction:
        request, response, seconds = self._examples_call(
            self._predict_stub.Regress, _protos.apis("regression_pb2").RegressionRequest(),
            examples, context, signature_name, version, label)
        values = np.asarray([r.value for r in response.result.regressions], dtype=np.float32)
        return Prediction(values, latency_s=seconds, raw=response, request_body=request,
                          url=self.url)


def _handshake_failed(exc) -> bool:
    details = (exc.details() or "").lower()
    return any(word in details for word in ("ssl", "handshake", "certificate", "tls"))


def _make_example(features):
    """A dict feature -> value or list as a ``tf.train.Example`` (an Example passes through).

    Like the REST API's JSON examples: str/bytes -> bytes_list, bools and ints -> int64_list,
    floats -> float_list (a list mixing ints and floats is a float list).
    """
    example_pb2 = _protos.load("tensorflow.core.example.example_pb2")
    if hasattr(features, "SerializeToString"):
        return example_pb2.Example.FromString(features.SerializeToString())
    if not isinstance(features, Mapping):
        raise TypeError("each example must be a dict (feature name -> value or list)")
    example = example_pb2.Example()
    for name, value in features.items():
        values = np.asarray(value).ravel().tolist() if not isinstance(value, (str, bytes)) else [
            value]
        feature = example.features.feature[name]
        if all(isinstance(v, (str, bytes)) for v in values):
            feature.bytes_list.value.extend(
                [v.encode("utf-8") if isinstance(v, str) else v for v in values])
        elif all(isinstance(v, (bool, int)) for v in values):
            feature.int64_list.value.extend([int(v) for v in values])
        elif all(isinstance(v, (bool, int, float)) for v in values):
            feature.float_list.value.extend([float(v) for v in values])
        else:
            raise TypeError(f"feature {name!r} mixes strings and numbers")
    return example
