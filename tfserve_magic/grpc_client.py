"""gRPC client for TensorFlow Serving's PredictionService/ModelService (no TensorFlow import).

The same interface as the REST ``Client`` (``predict``, ``classify``, ``regress``, ``metadata``,
``status``; numpy in and out; ``Prediction``, ``ModelMetadata``, ``ServingError``), built on the
official ``tensorflow-serving-api`` stubs. Requests carry raw ``tensor_content`` bytes (what
``tf.make_tensor_proto`` sends), so no JSON is built or parsed on either side. The generated
modules are imported without running ``tensorflow/__init__.py`` (see ``_protos``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import numpy as np

from tfserve_magic import _protos, tensor_proto
from tfserve_magic.client import ModelMetadata, Prediction, ServingError, _describe_value

__all__ = ["GrpcClient"]

_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
# gRPC status -> the HTTP status TF Serving's REST API gives the same error.
_HTTP = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
_TARGET = re.compile(r"^(?:grpc://)?(?P<target>(?:unix:.+)|(?:[\w.\-\[\]:]+:\d+))(?:/(?P<model>[^/]+))?/?$")


class GrpcClient:
    """Talk to one model over TF Serving's gRPC API.

    ``target``: a model or server name known to the manager ("MLP"), a ``ServerHandle``,
    ``host:port`` / ``grpc://host:port/MODEL`` / ``unix:/path`` (then ``model=`` or the path's
    model is required). ``Client(..., protocol="grpc")`` returns one of these.
    """

    protocol = "grpc"

    def __init__(self, target, model: str | None = None, *, timeout: float = 30.0,
                 chunk_size: int | None = None):
        import grpc

        self._grpc = grpc
        self.timeout = float(timeout)
        self.chunk_size = chunk_size  # accepted for Client's signature; tensors are not chunked
        self.target, self.model_name = self._resolve(target, model)
        self.default_version: int | None = None
        self.default_label: str | None = None
        self._channel = grpc.insecure_channel(self.target, options=_OPTIONS)
        service = _protos.apis("prediction_service_pb2_grpc")
        models = _protos.apis("model_service_pb2_grpc")
        self._predict_stub = service.PredictionServiceStub(self._channel)
        self._model_stub = models.ModelServiceStub(self._channel)
        self._meta_cache: dict[tuple, ModelMetadata] = {}

    @staticmethod
    def _resolve(target, model):
        if not isinstance(target, str) and hasattr(target, "grpc_port"):
            grpc_target = getattr(target, "grpc_target", None)
            if not grpc_target:
                raise ValueError(f"server {getattr(target, 'name', target)!r} serves no gRPC port")
            models = list(getattr(target, "models", None) or [])
            chosen = model or (models[0] if models else None)
            if not chosen:
                raise ValueError("the server serves no model: pass model='NAME'")
            return grpc_target, chosen
        if not isinstance(target, str) or not target.strip():
            raise TypeError("GrpcClient needs a server/model name, host:port, or a ServerHandle")
        text = target.strip()
        match = _TARGET.match(text)
        if match:
            chosen = model or match["model"]
            if not chosen:
                raise ValueError(f"{target!r} names no model: pass model='NAME'")
            return match["target"], chosen
        from tfserve_magic import registry

        address = registry.lookup(text, model)
        if not address.grpc_target:
            raise ValueError(
                f"server {address.server!r} serves no gRPC port (start it with --grpc-port, or "
                "use protocol='rest')"
            )
        return address.grpc_target, address.model

    @property
    def url(self) -> str:
        return f"grpc://{self.target}/{self.model_name}"

    def __repr__(self) -> str:
        return f"GrpcClient({self.target!r}, model={self.model_name!r})"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing
    def _spec(self, spec, version=None, label=None, signature_name=None) -> None:
        if version is not None and label is not None:
            raise ValueError("pass version= or label=, not both")
        if version is None and label is None:
            version, label = self.default_version, self.default_label
        spec.name = self.model_name
        if version is not None:
            if isinstance(version, bool) or not str(version).isdigit():
                raise ValueError(f"version must be a non-negative integer, got {version!r}")
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = str(label)
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, method, request, timeout=None):
        start = time.perf_counter()
        try:
            response = method(request, timeout=timeout or self.timeout)
        except self._grpc.RpcError as exc:
            code = exc.code()
            name = code.name if code is not None else "UNKNOWN"
            if name == "UNAVAILABLE":
                message = (f"cannot connect to {self.target}: is the server running? "
                           f"(%tfserve list shows the running servers) [{exc.details()}]")
                raise ServingError(None, message, url=self.url, code=name) from None
            if name == "DEADLINE_EXCEEDED":
                message = (f"no answer within {timeout or self.timeout:g} s: raise the client's "
                           "timeout=")
                raise ServingError(None, message, url=self.url, code=name) from None
            raise ServingError(_HTTP.get(name, 500), exc.details() or "", url=self.url,
                               code=name) from None
        return response, time.perf_counter() - start

    # -- ModelService / metadata
    def status(self, version: int | None = None) -> list[dict]:
        """The model's version states, in the REST API's JSON form."""
        request = _protos.apis("get_model_status_pb2").GetModelStatusRequest()
        self._spec(request.model_spec, version=version)
        request.model_spec.ClearField("version_label")
        response, _ = self._call(self._model_stub.GetModelStatus, request)
        states = _protos.apis("get_model_status_pb2").ModelVersionStatus.State
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

    def metadata(self, version: int | None = None, label: str | None = None) -> ModelMetadata:
        """The signatures (names, dtypes, shapes), as ``Client.metadata`` returns them."""
        from google.protobuf import json_format

        metadata_pb2 = _protos.apis("get_model_metadata_pb2")
        request = metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version, label)
        response, _ = self._call(self._predict_stub.GetModelMetadata, request)
        signature_map = metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        raw = {
            "model_spec": {"name": response.model_spec.name, "signature_name": "",
                           "version": str(response.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_map, preserving_proto_field_name=True)},
        }
        return ModelMetadata(raw)

    def _signature(self, signature_name, version, label) -> dict | None:
        key = (version, label)
        if key not in self._meta_cache:
            try:
                self._meta_cache[key] = self.metadata(version, label)
            except ServingError:
                return None
        return self._meta_cache[key].get(signature_name or "serving_default")

    def _hint(self, exc: ServingError, signature_name, version, label, sent) -> str | None:
        try:
            meta = self._meta_cache.get((version, label)) or self.metadata(version, label)
        except ServingError:
            return None
        name = signature_name or "serving_default"
        if name not in meta:
            return f"available signatures: {', '.join(meta) or '(none)'}"
        if exc.status_code == 400:
            hint = meta.describe(name)
            return f"{hint}\nsent: {sent}" if sent else hint
        return None

    # -- PredictionService
    def predict(self, instances=None, inputs=None, *, signature_name: str | None = None,
                version: int | None = None, label: str | None = None,
                chunk_size: int | None = None, output_filter=None) -> Prediction:
        """Run the model on a batched array (one input) or a dict name -> batched array.

        ``instances=`` and ``inputs=`` mean the same here (gRPC tensors are columnar); numbers
        are cast to the signature's dtypes (from the metadata) before they are sent.
        """
        request = self.build_request(instances, inputs, signature_name=signature_name,
                                     version=version, label=label, output_filter=output_filter)
        try:
            response, seconds = self._call(self._predict_stub.Predict, request)
        except ServingError as exc:
            if exc.status_code:
                sent = ", ".join(f"{k} {_describe_value(tensor_proto.to_numpy(v))}"
                                 for k, v in request.inputs.items())
                exc.hint = self._hint(exc, signature_name, version, label, sent)
            raise
        outputs = {name: tensor_proto.to_numpy(proto) for name, proto in response.outputs.items()}
        value = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return Prediction(value, latency_s=seconds, raw=response, request_body=request,
                          url=self.url, row=instances is not None)

    def build_request(self, instances=None, inputs=None, *, signature_name=None, version=None,
                      label=None, output_filter=None):
        """The ``PredictRequest`` that ``predict`` sends (inputs as ``tensor_content``)."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= or inputs=")
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

    def _example_request(self, request, examples, context, signature_name, version, label):
        if isinstance(examples, Mapping) or not isinstance(examples, (list, tuple)):
            raise TypeError("examples must be a list of dicts (feature name -> value or list)")
        self._spec(request.model_spec, version, label, signature_name)
        if context is not None:
            target = request.input.example_list_with_context
            target.context.CopyFrom(_make_example(context))
        else:
            target = request.input.example_list
        for example in examples:
            target.examples.add().CopyFrom(_make_example(example))
        return request

    def classify(self, examples, *, context=None, signature_name=None, version=None,
                 label=None) -> Prediction:
        """Classify tf.Examples: ``{"classes": str [N,k], "scores": float32 [N,k]}``."""
        request = self._example_request(
            _protos.apis("classification_pb2").ClassificationRequest(), examples, context,
            signature_name, version, label)
        response, seconds = self._call(self._predict_stub.Classify, request)
        rows = response.result.classifications
        classes = np.asarray([[c.label for c in r.classes] for r in rows])
        scores = np.asarray([[c.score for c in r.classes] for r in rows], dtype=np.float32)
        return Prediction({"classes": classes, "scores": scores}, latency_s=seconds,
                          raw=response, request_body=request, url=self.url)

    def regress(self, examples, *, context=None, signature_name=None, version=None,
                label=None) -> Prediction:
        """Regress tf.Examples: a float32 array [N]."""
        request = self._example_request(
            _protos.apis("regression_pb2").RegressionRequest(), examples, context,
            signature_name, version, label)
        response, seconds = self._call(self._predict_stub.Regress, request)
        values = np.asarray([r.value for r in response.result.regressions], dtype=np.float32)
        return Prediction(values, latency_s=seconds, raw=response, request_body=request,
                          url=self.url)


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
