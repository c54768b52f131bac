"""Warm-up replay at load: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays that TFRecord of ``PredictionLog`` records before a version becomes
AVAILABLE (``saved_model_warmup_util.cc``), so the first real request does not pay for lazy
initialisation. The same rules here: predict, classify, regress and multi-inference logs are
replayed (their ``model_spec`` name and version are ignored), session-run and streamed logs are
an error, at most 1,000 records, each record ``--num_request_iterations_for_warmup`` times; a
record that does not parse, broken TFRecord framing or a failing request fails the load with
TF Serving's words. Requests run through the gRPC servicer's own steps (and the batching queue
when ``--enable_batching`` is on), so warm-up exercises the paths real requests take.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("tfserve_magic.server")

REQUESTS_FILE = "tf_serving_warmup_requests"
ASSETS_EXTRA = "assets.extra"
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords

# PredictionLog's oneof field numbers: TF Serving's error prints log_type_case() as a number.
_LOG_CASES = {"classify_log": 2, "regress_log": 3, "multi_inference_log": 4,
              "session_run_log": 5, "predict_log": 6, "predict_streamed_log": 7}


class _Settings:
    enabled = True
    iterations = 1
    metrics = None
    batching = None  # a BatchingConfig when --enable_batching is on
    per_model = False  # --enable_per_model_batching_parameters
    _batcher = None
    _lock = threading.Lock()


_settings = _Settings()


def configure(flags: dict, metrics=None, batching=None) -> None:
    """Take the warm-up and batching settings of this server process (called once by main)."""
    _settings.enabled = bool(flags.get("enable_model_warmup", True))
    # "This value is used only if > 0": 0 or less replays each record once.
    _settings.iterations = max(1, int(flags.get("num_request_iterations_for_warmup", 0) or 0))
    _settings.metrics = metrics
    _settings.batching = batching
    _settings.per_model = bool(flags.get("enable_per_model_batching_parameters", False))


def shared_batcher():
    """The process's one batching scheduler (None without --enable_batching); the servers use it
    for requests and warm-up uses it at load, so both take the same path."""
    if _settings.batching is None:
        return None
    with _settings._lock:
        if _settings._batcher is None:
            if _settings.per_model:
                from tfserve_magic.server.batching_per_model import PerModelBatcher

                _settings._batcher = PerModelBatcher(_settings.batching, _settings.metrics)
            else:
                from tfserve_magic.server.batching import BatchScheduler

                _settings._batcher = BatchScheduler(_settings.batching, _settings.metrics)
        return _settings._batcher


def requests_path(version_dir: str) -> str:
    return os.path.join(version_dir, ASSETS_EXTRA, REQUESTS_FILE)


def at_load(servable) -> None:
    """Everything TF Serving does to a version between reading it and AVAILABLE that the
    loader does not: per-model batching parameters, then the warm-up replay."""
    try:
        batcher = shared_batcher()
        if _settings.per_model and batcher is not None:
            batcher.register(servable)
        replay(servable)
    except BaseException:
        if servable.loader == "session":  # the TF1 session holds memory until closed
            servable.loaded.close()
        raise


def replay(servable) -> None:
    """Replay the version's warm-up records (if any and if enabled); raise a TF error whose
    class and message are TF Serving's when the load must fail."""
    if not _settings.enabled:
        return
    path = requests_path(servable.path)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return
    iterations = _settings.iterations
    options = f"num_request_iterations {{ value: {iterations} }}" if iterations > 1 else ""
    log.info("Starting to read warmup data for model at %s with model-warmup-options %s",
             path, options)
    started = time.perf_counter()
    # A bad record or a failing request ends the load at once (TF Serving returns before its
    # metrics); the end of the file or a framing error is recorded with its status.
    count, status = _replay_file(servable, path, iterations)
    micros = int((time.perf_counter() - started) * 1e6)
    _record_metrics(servable.path, status, micros, count)
    if isinstance(status, tf_errors().DataLossError):
        raise tf_errors().DataLossError(
            None, None,
            f"{status.message}. Please verify your warmup data is in TFRecord format.")
    if status is not None:
        raise status
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
             "Elapsed time (microseconds): %d.", path, count, micros)


def _replay_file(servable, path: str, iterations: int):
    """(records replayed, None or the reader's error); raises the other errors."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from tfserve_magic.server.grpc_server import _Core

    core = _Core(_OneServable(servable), None, shared_batcher() if _batched(servable) else None)
    from tensorflow.python.util import deprecation

    with deprecation.silence():  # TF's own record reader: TF Serving's framing and CRC errors
        records = tf.compat.v1.io.tf_record_iterator(path)
    count = 0
    try:
        for record in records:
            entry = prediction_log_pb2.PredictionLog()
            try:
                entry.ParseFromString(record)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
                raise _ReplayFailed(tf.errors.InvalidArgumentError(
                    None, None, f"Failed to parse warmup record: {_raw(record)} from {path}"
                )) from None
            for _ in range(iterations):
                _run_one(core, servable, entry)
            count += 1
            if count > MAX_RECORDS:
                raise _ReplayFailed(tf.errors.InvalidArgumentError(
                    None, None,
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"))
    except _ReplayFailed as failed:
        raise failed.error from None
    except tf.errors.OpError as exc:  # framing (DataLossError), or e.g. the file vanished
        return count, exc
    return count, None


def tf_errors():
    from tensorflow.python.framework import errors_impl

    return errors_impl


def _raw(record: bytes) -> str:
    """The record as absl::StrCat would splice its bytes into the message (lossy for text)."""
    return record.decode("utf-8", errors="replace")


def _batched(servable) -> bool:
    if _settings.batching is None:
        return False
    if not _settings.per_model:
        return True
    return shared_batcher().batched(servable.model_name, servable.version)


def _run_one(core, servable, entry) -> None:
    """One PredictionLog through the servicer's steps; a failure becomes its TF error class."""
    from tfserve_magic.server.status import ServingError

    case = entry.WhichOneof("log_type")
    try:
        if case == "predict_log":
            core.predict(_named(entry.predict_log.request, servable), _CONTEXT)
        elif case == "classify_log":
            core.classify(_named(entry.classify_log.request, servable), _CONTEXT)
        elif case == "regress_log":
            core.regress(_named(entry.regress_log.request, servable), _CONTEXT)
        elif case == "multi_inference_log":
            core.multi_inference(entry.multi_inference_log.request, _CONTEXT)
        elif case in ("session_run_log", "predict_streamed_log"):
            raise ServingError("UNIMPLEMENTED",
                               f"Unsupported log_type for warmup: {_LOG_CASES[case]}")
        # a record with no log set is skipped, as TF Serving does
    except ServingError as exc:
        raise _ReplayFailed(_tf_error(exc)) from None


def _named(request, servable):
    """A copy whose model_spec names this model and no version: TF Serving's warm-up runs the
    request on the version being loaded, whatever the record says."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.model_spec.name = servable.model_name
    copy.model_spec.ClearField("version_choice")
    return copy


def _tf_error(exc):
    from tensorflow.core.protobuf import error_codes_pb2

    code = error_codes_pb2.Code.Value(exc.code) if exc.code in error_codes_pb2.Code.keys() else 2
    return tf_errors().exception_type_from_error_code(code)(None, None, exc.message)


def _status_text(error) -> str:
    """absl::Status::ToString(): "OK" or "INVALID_ARGUMENT: message"."""
    if error is None:
        return "OK"
    from tfserve_magic.server.status import from_tf_error

    serving = from_tf_error(error)
    return f"{serving.code}: {serving.message}"


def _record_metrics(model_path: str, error, micros: int, count: int) -> None:
    metrics = _settings.metrics
    if metrics is None or not hasattr(metrics, "warmup_latency"):
        return
    status = _status_text(error)
    metrics.warmup_latency.observe(micros, model_path, status)
    metrics.warmup_records_read.inc(model_path, status, by=count)


class _ReplayFailed(Exception):
    """A request failed: not to be taken for a reader error on the way out."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class _OneServable:
    """The manager interface the servicer needs, answering with the version being loaded."""

    def __init__(self, servable):
        self.servable = servable

    def resolve(self, name, version=None, label=None):
        return self.servable


class _Context:
    """A gRPC context stand-in: warm-up calls are never cancelled and have no deadline."""

    @staticmethod
    def is_active() -> bool:
        return True

    @staticmethod
    def time_remaining():
        return None


_CONTEXT = _Context()
