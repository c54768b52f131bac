"""TF Serving's gRPC API: PredictionService and ModelService (plus the opt-in health service).

grpcio's synchronous server with the servicer classes generated in ``tensorflow_serving.apis``,
over the same ModelManager, batching scheduler and metrics as the REST app. Handlers run on
grpcio's thread pool (``--grpc_max_threads``) and call the model directly: TF Serving's handlers
are synchronous too, and TensorFlow releases the GIL while it computes. Checks, codes and texts
follow TF Serving's (docs/compatibility.md lists the differences); a bug in this module becomes INTERNAL and
the server keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time

import grpc
from google.protobuf import json_format
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfserve_magic import tensor_proto
from tfserve_magic.server import inference
from tfserve_magic.server.metrics import prometheus_name
from tfserve_magic.server.status import ServingError, invalid

log = logging.getLogger("tfserve_magic.server")

MAX_RECEIVE_BYTES = 2**31 - 1  # TF Serving's SetMaxMessageSize(INT32_MAX)
_DETAILS_LIMIT = 1024
_CLASSIFY = "tensorflow/serving/classify"
_REGRESS = "tensorflow/serving/regress"
_State = get_model_status_pb2.ModelVersionStatus.State


def _details(message: str) -> str:
    """TF Serving cuts error details at 1024 characters (grpc_status_util.cc)."""
    if len(message) > _DETAILS_LIMIT:
        return message[:_DETAILS_LIMIT] + "...TRUNCATED"
    return message


def _has_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")


def _resolve(manager, spec):
    """ModelSpec -> Servable with TF Serving's rules (the version wrapper's presence counts)."""
    if not spec.name:
        raise invalid("ModelSpec has no name specified.")
    which = spec.WhichOneof("version_choice")
    version = spec.version.value if which == "version" else None
    label = spec.version_label if which == "version_label" else None
    return manager.resolve(spec.name, version, label)


def _echo(target, name: str, servable, signature_name: str) -> None:
    target.name = name
    target.version.value = servable.version
    target.signature_name = signature_name


def _braced(names) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def _feed_name(servable, signature_name: str, alias: str) -> str:
    defs = getattr(servable, "signature_def_json", None) or {}
    info = defs.get(signature_name, {}).get("inputs", {}).get(alias, {})
    return info.get("name") or alias


def parse_channel_arguments(text: str) -> list[tuple[str, object]]:
    """``--grpc_channel_arguments``: comma-separated key=value; int32 values become ints."""
    options = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        try:
            number = int(value, 10)
            parsed = number if -(2**31) <= number < 2**31 else value
        except ValueError:
            parsed = value
        options.append((key.strip(), parsed))
    return options


class _Core:
    """The request logic shared by both servicers (one instance per server)."""

    def __init__(self, manager, metrics=None, batcher=None):
        self.manager = manager
        self.metrics = metrics
        self.batcher = batcher

    # ---- the wrapper every RPC goes through ----

    def call(self, fn, request, context, api: str | None = None):
        started = time.perf_counter()
        try:
            response = fn(request, context)
        except ServingError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            log.exception("Internal error in gRPC %s", getattr(fn, "__name__", fn))
            code = "INTERNAL"
            message = f"Internal server error ({type(exc).__name__}): {exc}"
        else:
            self._record(request, api, "OK", started, response)
            return response
        self._record(request, api, code, started)
        status = getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
        context.abort(status, _details(message))

    def _record(self, request, api, code, started, response=None):
        if self.metrics is not None and api is not None:
            name = request.model_spec.name if request.HasField("model_spec") else ""
            self.metrics.record_request(name, code, api, time.perf_counter() - started, "GRPC",
                                        version=_answered_version(response))

    def _run(self, context, servable, signature, tensors, api: str) -> dict:
        """Run now (or via the batching queue); a call that is already gone costs nothing."""
        if not context.is_active():
            raise ServingError("CANCELLED", "Cancelled")
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded")
        if self.batcher is not None and api == "predict":
            future = self.batcher.submit(inference.batch_key(servable, signature), signature,
                                         tensors)
            try:
                return future.result(timeout=remaining)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
        return inference.timed_run(servable, signature, tensors, api=api, metrics=self.metrics)

    # ---- PredictionService ----

    def predict(self, request, context):
        _has_spec(request)
        spec = request.model_spec
        servable = _resolve(self.manager, spec)
        sig_name = spec.signature_name or "serving_default"
        try:
            signature = servable.signature(sig_name)
        except ServingError:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{sig_name}" not found.'
            ) from None
        tensors = self._inputs(request, servable, sig_name, signature)
        wanted = self._output_filter(request, signature)
        outputs = self._run(context, servable, signature, tensors, "predict")
        response = predict_pb2.PredictResponse()
        for name in wanted or signature.output_names:
            tensor_proto.fill(response.outputs[name], outputs[name])
        _echo(response.model_spec, spec.name, servable, sig_name)
        return response

    @staticmethod
    def _inputs(request, servable, sig_name, signature) -> dict:
        specs = signature.specs
        sent = set(request.inputs.keys())
        expected = set(specs)
        if len(sent) != len(expected):  # TF2 signatures never carry defaults
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({_braced(sent)}) != len({_braced(expected)}). "
                f"Sent extra: {_braced(sent - expected)}. "
                f"Missing but required: {_braced(expected - sent)}."
            )
        order = sorted(specs)
        for alias in order:
            if alias not in sent:
                raise invalid(
                    f"Signature input alias: {alias}(feed name: "
                    f"{_feed_name(servable, sig_name, alias)}) not found in request and no "
                    f"default value provided. Inputs expected to be in the request "
                    f"{_braced(sent)}, or default input alias set: "
                )
        tensors = {}
        for position, alias in enumerate(order):
            try:
                array = tensor_proto.to_numpy(request.inputs[alias])
            except tensor_proto.TensorProtoError:
                raise invalid(f"tensor parsing error: {alias}") from None
            want = specs[alias][1]
            want_name = _type_name(want)
            got_name = _type_name(array.dtype)
            if want_name is not None and got_name is not None and want_name != got_name:
                raise invalid(
                    f"Expects arg[{position}] to be {want_name} but {got_name} is provided"
                )
            tensors[alias] = array
        return tensors

    @staticmethod
    def _output_filter(request, signature) -> list[str]:
        known = set(signature.output_names)
        seen: set[str] = set()
        for alias in request.output_filter:
            if alias not in known:
                raise invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {_braced(known)}."
                )
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return list(request.output_filter)

    def _examples(self, request_input) -> list[bytes]:
        kind = request_input.WhichOneof("kind")
        if kind == "example_list":
            return [e.SerializeToString() for e in request_input.example_list.examples]
        if kind == "example_list_with_context":
            with_context = request_input.example_list_with_context
            context = with_context.context.SerializeToString()
            return [context + e.SerializeToString() for e in with_context.examples]
        return []

    def _example_call(self, context, request, api: str):
        _has_spec(request)
        spec = request.model_spec
        servable = _resolve(self.manager, spec)
        sig_name = spec.signature_name or "serving_default"
        signature = servable.example_signature(sig_name, api)
        serialized = self._examples(request.input)
        if not serialized:
            raise invalid("Input is empty.")
        tensor = inference.example_tensor(serialized)
        outputs = self._run(context, servable, signature, {"inputs": tensor}, api)
        inference.record_examples(self.metrics, spec.name, len(serialized))
        return spec, servable, sig_name, outputs, len(serialized)

    def classify(self, request, context):
        spec, servable, sig_name, outputs, count = self._example_call(context, request, "classify")
        response = classification_pb2.ClassificationResponse()
        _fill_classification(response.result, outputs, count)
        _echo(response.model_spec, spec.name, servable, sig_name)
        return response

    def regress(self, request, context):
        spec, servable, sig_name, outputs, count = self._example_call(context, request, "regress")
        response = regression_pb2.RegressionResponse()
        _fill_regression(response.result, outputs, count)
        _echo(response.model_spec, spec.name, servable, sig_name)
        return response

    def multi_inference(self, request, context):
        tasks = list(request.tasks)
        first = tasks[0].model_spec if tasks else predict_pb2.PredictRequest().model_spec
        servable = _resolve(self.manager, first)
        plan, seen = [], set()
        for task in tasks:
            spec = task.model_spec
            if not spec.name:
                raise invalid("Found ModelSpec with an empty model name.")
            if spec.name != first.name:
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            sig_name = spec.signature_name or "serving_default"
            if sig_name in seen:
                raise invalid(f"Duplicate evaluation of signature: {sig_name}")
            seen.add(sig_name)
            try:
                servable.signature(sig_name)
            except ServingError:
                raise invalid(f"Requested signature not found in model graph: {sig_name}") from None
            if task.method_name == _CLASSIFY:
                api = "classify"
            elif task.method_name == _REGRESS:
                api = "regress"
            else:
                raise ServingError(
                    "UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}"
                )
            plan.append((spec.name, sig_name, api, servable.example_signature(sig_name, api)))
        serialized = self._examples(request.input)
        if not serialized:
            raise invalid("Input is empty.")
        tensor = inference.example_tensor(serialized)
        response = inference_pb2.MultiInferenceResponse()
        count = len(serialized)
        for name, sig_name, api, signature in plan:
            outputs = self._run(context, servable, signature, {"inputs": tensor}, api)
            result = response.results.add()
            _echo(result.model_spec, name, servable, sig_name)
            if api == "classify":
                _fill_classification(result.classification_result, outputs, count)
            else:
                _fill_regression(result.regression_result, outputs, count)
        if plan:
            inference.record_examples(self.metrics, first.name, count)
        return response

    def get_model_metadata(self, request, context):
        _has_spec(request)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        servable = _resolve(self.manager, request.model_spec)
        signatures = servable.metadata_json()["metadata"]["signature_def"]
        signature_map = json_format.ParseDict(
            signatures, get_model_metadata_pb2.SignatureDefMap(), ignore_unknown_fields=True
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    # ---- ModelService ----

    def get_model_status(self, request, context):
        _has_spec(request)
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in self.manager.status(spec.name, version):
            status = response.model_version_status.add()
            status.version = int(entry["version"])
            status.state = _State.Value(entry["state"])
            code = entry["status"]["error_code"]
            status.status.error_code = error_codes_pb2.Code.Value(code)
            status.status.error_message = entry["status"]["error_message"]
        return response

    def reload_config(self, request, context):
        from tfserve_magic.server.config import ConfigError, specs_from_config

        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise invalid(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        entries = list(config.model_config_list.config)
        self._validate_reload(entries)
        try:
            specs = specs_from_config(config, "ReloadConfigRequest")
        except ConfigError as exc:
            raise invalid(str(exc)) from None
        before = {name: self._metric_value(name) for name in request.metric_names}
        old_names = set(self.manager.models)
        self.manager.apply_config(specs)
        self._await_new_models([s.name for s in specs if s.name not in old_names], context)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        for name in request.metric_names:
            metric = response.metric.add()
            metric.name = name
            metric.int64_value_increase = self._metric_value(name) - before[name]
        return response

    def _validate_reload(self, entries) -> None:
        manager = self.manager
        seen: set[str] = set()
        for cfg in entries:
            if cfg.name in seen:
                raise invalid(f"Illegal to list model {cfg.name} multiple times in config list")
            seen.add(cfg.name)
        for cfg in entries:
            if "://" not in cfg.base_path and not os.path.isabs(cfg.base_path):
                raise invalid(
                    f"Expected model {cfg.name} to have an absolute path or URI; "
                    f"got base_path()={cfg.base_path}"
                )
        platforms = {}
        for cfg in entries:
            if cfg.model_type and cfg.model_platform:
                raise invalid(
                    "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                    f"ModelServerConfig::model_platform, model name is {cfg.name}"
                )
            if not cfg.model_type and not cfg.model_platform:
                raise invalid(
                    "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                    f"ModelServerConfig::model_platform, model name is {cfg.name}"
                )
            platform = cfg.model_platform or ("tensorflow" if cfg.model_type == 1 else "other")
            platforms[cfg.name] = platform
            if cfg.name in manager.models and platform != "tensorflow":
                raise invalid(
                    f"Illegal to change a model's platform. For model {cfg.name} platform was "
                    f"tensorflow and new platform requested is {platform}"
                )
        for cfg in entries:
            model = manager.models.get(cfg.name)
            available = model.available if model is not None else {}
            current = model.labels if model is not None else {}
            for label, version in cfg.version_labels.items():
                if version in available:
                    continue
                is_new = label not in current or current[label] == version
                if manager.allow_unavailable_labels and is_new:
                    continue
                raise ServingError(
                    "FAILED_PRECONDITION",
                    f"Request to assign label to version {version} of model {cfg.name}, which "
                    "is not currently available for inference",
                )
        for cfg in entries:
            if cfg.name not in manager.models and platforms[cfg.name] != "tensorflow":
                raise invalid(f"Model {cfg.name} requests unsupported platform "
                              f"{platforms[cfg.name]}")

    def _await_new_models(self, names: list[str], context) -> None:
        """TF Serving returns once each new model is AVAILABLE or failed for good; with no
        version yet it waits (the client's deadline bounds the wait)."""
        failures = []
        for name in names:
            while True:
                model = self.manager.models.get(name)
                if model is None or model.available:
                    break
                failed = [s for s in model.states.values()
                          if s.state == "END" and s.error_code != "OK"]
                loading = any(s.state in ("START", "LOADING") for s in model.states.values())
                if failed and not loading:
                    failures.extend(
                        f"{{name: {name} version: {s.version}}} due to error: {s.error_message}"
                        for s in failed
                    )
                    break
                if not context.is_active():
                    raise ServingError("CANCELLED", "Cancelled")
                time.sleep(0.05)
        if failures:
            raise ServingError(
                "UNKNOWN",
                f"{len(failures)} model(s) did not become available: {{{', '.join(failures)}}}",
            )

    def _metric_value(self, name: str) -> int:
        metrics = self.metrics
        for metric in getattr(metrics, "_all", ()):
            if metric.name in (name, prometheus_name(name)):
                values = getattr(metric, "values", None)
                if values is not None:
                    return int(sum(values.values()))
        return 0


def _type_name(dtype):
    try:
        return tensor_proto.tf_type_name(dtype)
    except (KeyError, TypeError, tensor_proto.TensorProtoError):
        return None


def _fill_classification(result, outputs: dict, count: int) -> None:
    classes, scores = inference.classification_outputs(outputs, count)
    width = (classes if classes is not None else scores).shape[1]
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    for i in range(count):
        entry = result.classifications.add()
        for j in range(width):
            item = entry.classes.add()
            if labels is not None:
                label = labels[i][j]
                item.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else label
            if values is not None:
                item.score = values[i][j]


def _fill_regression(result, outputs: dict, count: int) -> None:
    for value in inference.regression_outputs(outputs, count).tolist():
        result.regressions.add().value = value


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: _Core):
        self.core = core

    def Predict(self, request, context):  # noqa: N802 - generated names
        return self.core.call(self.core.predict, request, context, "Predict")

    def Classify(self, request, context):  # noqa: N802
        return self.core.call(self.core.classify, request, context, "Classify")

    def Regress(self, request, context):  # noqa: N802
        return self.core.call(self.core.regress, request, context, "Regress")

    def MultiInference(self, request, context):  # noqa: N802
        return self.core.call(self.core.multi_inference, request, context)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self.core.call(self.core.get_model_metadata, request, context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: _Core):
        self.core = core

    def GetModelStatus(self, request, context):  # noqa: N802
        return self.core.call(self.core.get_model_status, request, context)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        return self.core.call(self.core.reload_config, request, context)


class GrpcStartError(RuntimeError):
    """The gRPC server could not listen (TF Serving: "Failed to BuildAndStart gRPC server")."""


def start_grpc(flags: dict, manager, metrics=None, batcher=None, *, reuse_port: bool = False,
               credentials=None):
    """Build, bind and start the gRPC server; returns ``(grpc.Server, bound TCP port or None)``.

    ``--port``: TCP port (0 picks a free one, -1 none); ``--grpc_socket_path`` adds a Unix
    socket. ``reuse_port`` sets SO_REUSEPORT so several worker processes can share one port
    (grpcio turns it on by default on Linux, which would let two servers silently share a
    port, so it is off unless asked for). ``credentials`` (``--ssl_config_file``, server/tls.py)
    secure both listeners, as in TF Serving; None serves them without TLS.
    """
    port = flags.get("port", 8500)
    host = flags.get("host", "127.0.0.1") or "0.0.0.0"
    if (port is None or port < 0) and not flags.get("grpc_socket_path"):
        log.info("gRPC is off (--port=-1 and no --grpc_socket_path)")
        return None, None
    options = [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    options += parse_channel_arguments(flags.get("grpc_channel_arguments", ""))
    threads = max(1, int(flags.get("grpc_max_threads") or 4 * (os.cpu_count() or 1)))
    executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="grpc")
    server = grpc.server(executor, options=options)
    core = _Core(manager, metrics, batcher)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
    if flags.get("enable_grpc_healthcheck_service"):
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        health_servicer = health.HealthServicer()
        for name in ("", "ModelService", "PredictionService"):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = None
    addresses = []

    def add_port(address: str) -> int:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)

    log.info("Using %s", "SSL credentials" if credentials is not None
             else "InsecureServerCredentials")
    try:
        if port is not None and port >= 0:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            bound = add_port(address)
            if not bound:
                raise RuntimeError(f"cannot bind {address}")
            addresses.append(f"{host}:{bound}")
        socket_path = flags.get("grpc_socket_path")
        if socket_path:
            if not add_port(f"unix:{socket_path}"):
                raise RuntimeError(f"cannot bind unix:{socket_path}")
            addresses.append(f"unix:{socket_path}")
    except RuntimeError as exc:
        executor.shutdown(wait=False)
        raise GrpcStartError(f"Failed to BuildAndStart gRPC server: {exc}") from None
    server.start()
    log.info("Running gRPC ModelServer at %s ... (%d threads)", ", ".join(addresses), threads)
    return server, bound


def _answered_version(response) -> int | None:
    """The version a Predict/Classify/Regress response names (its model_spec), else None."""
    spec = getattr(response, "model_spec", None)
    if spec is None or not spec.HasField("version"):
        return None
    return int(spec.version.value)
