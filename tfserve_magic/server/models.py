"""Model and version manager: discovery, version policies, labels, hot swap, load errors.

Mirrors TF Serving's file-system storage source plus its availability-preserving policy: a new
version loads while the old one serves, traffic moves once it is AVAILABLE, then the old one is
unloaded and stays listed as END. All state changes happen on the poll thread (or the initial
load pool); request handlers only read copy-on-write snapshots, so they never take a lock.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from tfserve_magic.server.config import ModelSpec
from tfserve_magic.server.status import ServingError, from_tf_error, invalid, not_found

log = logging.getLogger("tfserve_magic.server")

_VERSION_DIR = re.compile(r"^\s*\+?(\d{1,18})\s*$")  # absl::SimpleAtoi on a non-negative int64


@dataclass
class VersionState:
    version: int
    state: str = "START"  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""

    def as_json(self) -> dict:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


class Signature:
    """One callable signature of a loaded SavedModel, with its input specs for the codec."""

    def __init__(self, name: str, function, signature_def):
        self.name = name
        self.function = function
        self.method_name = signature_def.method_name if signature_def is not None else ""
        # The proto's text form: TF Serving quotes it (DebugString) in classify/regress errors.
        self.debug_string = str(signature_def) if signature_def is not None else ""
        self.seconds_per_element: float | None = None  # measured cost; app.py reads it
        self.specs: dict[str, tuple] = {}
        self.output_names: list[str] = []
        if signature_def is not None:
            self.specs = _signature_specs(signature_def)
            self.output_names = list(signature_def.outputs.keys())
        else:  # no proto entry (should not happen): fall back to the function's own spec
            for key, spec in function.structured_input_signature[1].items():
                dtype = "string" if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype)
                shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
                self.specs[key] = (key, dtype, shape)
            self.output_names = list(function.structured_outputs.keys())

        # What the graph really takes (classify/regress check this, not the declared dtype).
        self.graph_dtypes = {key: spec[1] for key, spec in self.specs.items()}
        self._flat_order = _flat_input_order(function)
        if self._flat_order is not None and set(self._flat_order) != set(self.specs):
            self._flat_order = None  # the proto and the function disagree: use keywords
        self._direct = _direct_call(function) if self._flat_order is not None else None

    def run(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature; TF errors become ServingErrors with TF Serving's codes."""
        try:
            order = self._flat_order
            if order is not None and len(tensors) == len(order):
                # The flat call skips re-binding keyword arguments on every request (about
                # 40% of a small call); dtypes are still checked by the function itself.
                flat = [tf.constant(tensors[name]) for name in order]
                if self._direct is not None:
                    atomic, captures, positions = self._direct
                    results = atomic.call_flat(*flat, *captures)
                    outputs = {name: results[i] for name, i in positions.items()}
                else:
                    outputs = self.function._call_flat(flat, self.function.captured_inputs)
            else:
                kwargs = {name: tf.constant(value) for name, value in tensors.items()}
                outputs = self.function(**kwargs)
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc).split("\n\n")[0]) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}


class Servable:
    """One loaded version of a model."""

    def __init__(self, model_name: str, version: int, path: str, tags: list[str]):
        self.model_name = model_name
        self.version = version
        self.path = path
        meta_graph = read_meta_graph(path, tags)
        self.loader, self.loaded, self.signatures = _load_servable(path, tags, meta_graph)
        defs = meta_graph.signature_def
        self.signature_def_json = {name: _signature_def_json(sd) for name, sd in defs.items()}

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or "serving_default")
        if sig is None:
            raise invalid(
                f'Serving signature name: "{name or "serving_default"}" not found in signature def'
            )
        return sig

    def example_signature(self, name: str, api: str) -> Signature:
        """The signature of a classify/regress call, checked as TF Serving checks it before
        any run (``GetClassificationSignatureDef`` / ``GetRegressionSignatureDef``)."""
        key = name or "serving_default"
        sig = self.signatures.get(key)
        if sig is None:
            raise invalid(f"No signature was found with the name: {key}")
        outputs = set(sig.output_names)
        what = "classification" if api == "classify" else "regression"
        if len(sig.specs) != 1:
            raise invalid("Expected one input Tensor.")
        if api == "classify" and len(outputs) not in (1, 2):
            raise invalid(f"Expected one or two output Tensors, found {len(outputs)}")
        if api == "regress" and len(outputs) != 1:
            raise invalid("Expected one output Tensor.")
        if "inputs" not in sig.specs:
            raise invalid(f"No {what} inputs found in SignatureDef: {sig.debug_string}")
        if api == "classify" and not outputs & {"classes", "scores"}:
            raise invalid(
                'Expected classification signature outputs to contain at least one of "classes"'
                f' or "scores". Signature was: {sig.debug_string}'
            )
        if api == "regress" and "outputs" not in outputs:
            raise invalid(f"No regression outputs found in SignatureDef: {sig.debug_string}")
        if sig.graph_dtypes["inputs"] != "string":  # the placeholder's own dtype, not the def's
            raise invalid(f"Expected {what} input Tensor of DT_STRING in SignatureDef")
        return sig

    def metadata_json(self) -> dict:
        return {
            "model_spec": {
                "name": self.model_name,
                "signature_name": "",
                "version": str(self.version),
            },
            "metadata": {"signature_def": {"signature_def": self.signature_def_json}},
        }


class Model:
    """The versions of one model: every version ever seen, the loaded ones, and labels."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.states: dict[int, VersionState] = {}
        self.available: dict[int, Servable] = {}  # replaced, never mutated (lock-free reads)
        self.latest: Servable | None = None
        self.labels: dict[str, int] = {}
        self.missing_warned = False
        self.retryable: set[int] = set()  # failed versions whose folder went away
        self.failed_files: dict[int, tuple] = {}  # failed version -> its files when it failed

    def _publish(self, available: dict[int, Servable]) -> None:
        self.available = available
        self.latest = available[max(available)] if available else None


class ModelManager:
    """Owns every Model; polls base paths and applies config reloads on one thread."""

    def __init__(
        self,
        specs: list[ModelSpec],
        *,
        tags: list[str],
        poll_seconds: float = 1.0,
        allow_unavailable_labels: bool = False,
        max_load_retries: int = 0,
        load_retry_interval_s: float = 60.0,
        on_change=None,
        metrics=None,
    ):
        self.tags = tags
        self.poll_seconds = poll_seconds
        self.allow_unavailable_labels = allow_unavailable_labels
        self.max_load_retries = max_load_retries
        self.load_retry_interval_s = load_retry_interval_s
        self.on_change = on_change
        self.metrics = metrics
        self.models: dict[str, Model] = {spec.name: Model(spec) for spec in specs}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # serialises state changes (poll thread vs reload)
        self._thread: threading.Thread | None = None
        self._config_reloader = None
        self._dirty = False

    # ---- request-side lookups (event loop; lock-free) ----

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request addresses; errors as TF Serving words them."""
        model = self.models.get(name)
        if label is not None:
            # TF Serving looks the label up per model name first: an unknown model is an
            # unknown label (400), not 404.
            labelled = model.labels.get(label) if model is not None else None
            if labelled is None:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = labelled
        if version is None:
            servable = model.latest if model is not None else None
            if servable is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return servable
        servable = model.available.get(version) if model is not None else None
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(self, name: str, version: int | None = None) -> list[dict]:
        model = self.models.get(name)
        states = dict(model.states) if model is not None else {}
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            return [states[version].as_json()]
        return [states[v].as_json() for v in sorted(states, reverse=True)]

    def snapshot(self) -> dict:
        """{name: {"base_path", "versions": [available...]}} for the info file and logs."""
        return {
            name: {"base_path": m.spec.base_path, "versions": sorted(m.available)}
            for name, m in self.models.items()
        }

    # ---- loading ----

    def initial_load(self, *, wait_for_versions: bool, max_parallel: int = 4) -> list[str]:
        """Load every model's aspired versions in parallel; return error strings (empty = ok).

        Like TF Serving, a model with no version yet is waited for (logging a warning every
        poll) when ``wait_for_versions``; otherwise that is an error.
        """
        names = list(self.models)
        pool = ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(names))))
        try:
            results = list(pool.map(lambda n: self._initial_load_one(n, wait_for_versions), names))
        except BaseException:  # a stop signal while waiting: let the waiting loaders go
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        self._dirty = False
        errors = [err for err in results if err]
        if not errors:
            with self._lock:
                for model in self.models.values():
                    try:
                        self._apply_labels(model, model.spec.labels, initial=True)
                    except ServingError as exc:
                        errors.append(exc.message)
        return errors

    def _initial_load_one(self, name: str, wait: bool) -> str:
        model = self.models[name]
        while not self._stop.is_set():
            self._poll_model(model)  # no lock: the poll thread has not started yet
            if model.states:
                break
            if not wait:
                return (
                    f"{{name: {name}}} due to error: No versions of servable {name} found under "
                    f"base path {model.spec.base_path}"
                )
            self._stop.wait(max(self.poll_seconds, 0.2))
        failed = [s for s in model.states.values() if s.state == "END" and s.error_code != "OK"]
        if model.available or not failed:
            return ""
        return "; ".join(
            f"{{name: {name} version: {s.version}}} due to error: {s.error_message}"
            for s in failed
        )

    def _list_versions(self, model: Model) -> dict[int, str] | None:
        base = model.spec.base_path
        try:
            entries = os.listdir(base)
        except OSError as exc:
            log.error(
                "File system storage path source: cannot list base path %s for servable %s: %s",
                base, model.spec.name, exc.strerror or exc,
            )
            return None
        found: dict[int, str] = {}
        for entry in sorted(entries):
            match = _VERSION_DIR.match(entry)
            path = os.path.join(base, entry)
            if match and os.path.isdir(path):
                found[int(match.group(1))] = path
        return found

    def _aspired(self, model: Model, on_disk: dict[int, str]) -> set[int]:
        spec = model.spec
        if spec.policy == "all":
            return set(on_disk)
        if spec.policy == "specific":
            missing = spec.versions - set(on_disk)
            if missing and not model.missing_warned:
                log.warning(
                    "Version(s) %s of servable %s listed in the specific version policy were not "
                    "found under base path %s",
                    sorted(missing), spec.name, spec.base_path,
                )
                model.missing_warned = True
            return spec.versions & set(on_disk)
        return set(sorted(on_disk, reverse=True)[: spec.num_versions])

    def _poll_model(self, model: Model) -> None:
        """One poll: load new aspired versions (highest first), then unload the unaspired."""
        on_disk = self._list_versions(model)
        if on_disk is None:
            return
        if not on_disk:
            base = model.spec.base_path
            hint = ""
            if os.path.exists(os.path.join(base, "saved_model.pb")):
                hint = (f" ({base} is itself a SavedModel: move it into {base}/1, or pass the "
                        "folder that holds the numbered version folders)")
            log.warning(
                "No versions of servable %s found under base path %s. Did you forget to name "
                "your leaf directory as a number (eg. '/1/')?%s",
                model.spec.name, base, hint,
            )
        # A failed version stays listed (END + error) and is retried only after its folder
        # disappeared and came back (a re-export under the same number) or its files changed
        # (a folder copied in non-atomically failed while half-written).
        for version, state in model.states.items():
            if state.state == "END" and state.error_code != "OK":
                if version not in on_disk:
                    model.retryable.add(version)
                elif _files_of(on_disk[version]) != model.failed_files.get(version):
                    model.retryable.add(version)
        aspired = self._aspired(model, on_disk)
        for version in sorted(aspired, reverse=True):
            state = model.states.get(version)
            if state is not None:
                if state.state != "END":
                    continue  # loaded or loading
                if state.error_code != "OK" and version not in model.retryable:
                    continue  # failed, and its folder has not been replaced
            model.retryable.discard(version)
            self._load(model, version, on_disk[version])
        ready = any(v in model.available for v in aspired)
        if ready or not aspired:
            for version in sorted(set(model.available) - aspired):
                self._unload(model, version)

    def _load(self, model: Model, version: int, path: str) -> None:
        name = model.spec.name
        state = VersionState(version, "LOADING")
        model.states[version] = state
        log.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
        files = _files_of(path)  # before loading: a change during the load means a retry
        model.failed_files.pop(version, None)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                servable = Servable(name, version, path, self.tags)
                from tfserve_magic.server import warmup  # [issue 22 hook]

                warmup.at_load(servable)  # [issue 22 hook] per-model batching, warm-up replay
            except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
                message = _load_error_message(exc, path)
                self._count_load(path, False, started)
                if attempt < self.max_load_retries and not self._stop.is_set():
                    attempt += 1
                    log.error(
                        "Loading servable version {name: %s version: %d} failed: %s. "
                        "Retrying (%d of %d) in %.1f s",
                        name, version, message, attempt, self.max_load_retries,
                        self.load_retry_interval_s,
                    )
                    self._stop.wait(self.load_retry_interval_s)
                    continue
                state.state, state.error_code = "END", _load_error_code(exc)
                state.error_message = message
                model.failed_files[version] = files
                log.error(
                    "Loading servable version {name: %s version: %d} failed: %s",
                    name, version, message,
                )
                self._changed()
                return
            break
        self._count_load(path, True, started)
        available = dict(model.available)
        available[version] = servable
        model._publish(available)
        state.state = "AVAILABLE"
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.2f s with the %s "
            "loader (signatures: %s)",
            name, version, time.perf_counter() - started, _LOADER_WORDS[servable.loader],
            ", ".join(sorted(servable.signatures)),
        )
        self._changed()

    def _unload(self, model: Model, version: int) -> None:
        name = model.spec.name
        state = model.states.setdefault(version, VersionState(version))
        state.state = "UNLOADING"
        log.info("Unloading servable version {name: %s version: %d}", name, version)
        available = dict(model.available)
        available.pop(version, None)
        model._publish(available)  # in-flight requests keep their own reference
        state.state, state.error_code, state.error_message = "END", "OK", ""
        log.info("Done unloading servable version {name: %s version: %d}", name, version)
        self._changed()

    def _count_load(self, path: str, ok: bool, started: float) -> None:
        if self.metrics is not None:
            self.metrics.record_load(path, ok, time.perf_counter() - started)

    def _changed(self) -> None:
        self._dirty = True  # the poll loop calls on_change once per round that changed things

    # ---- labels and config reload ----

    def _apply_labels(self, model: Model, labels: dict[str, int], *, initial: bool) -> None:
        """Set a model's labels with TF Serving's rule: only AVAILABLE versions, unless allowed."""
        for label, version in labels.items():
            if version in model.available:
                continue
            is_new = label not in model.labels or model.labels[label] == version
            if self.allow_unavailable_labels and is_new:
                continue
            raise ServingError(
                "FAILED_PRECONDITION",
                f"Request to assign label to version {version} of model {model.spec.name}, "
                "which is not currently available for inference",
            )
        model.labels = dict(labels)

    def apply_config(self, specs: list[ModelSpec]) -> None:
        """Replace the served set of models (config-file reload): add, update, drop."""
        with self._lock:
            wanted = {spec.name: spec for spec in specs}
            models = dict(self.models)
            for name in list(models):
                if name not in wanted:
                    log.info("Model %s is no longer in the config; unloading it", name)
                    old = models.pop(name)
                    for version in sorted(old.available):
                        self._unload(old, version)
            for name, spec in wanted.items():
                if name in models:
                    models[name].spec = spec
                else:
                    log.info("Adding model %s from the config file (base path %s)", name,
                             spec.base_path)
                    models[name] = Model(spec)
            self.models = models
            for model in models.values():
                self._poll_model(model)
            for model in models.values():
                try:
                    self._apply_labels(model, model.spec.labels, initial=False)
                except ServingError as exc:
                    log.error("Config reload: %s", exc.message)

    # ---- the poll thread ----

    def start_polling(self, config_reloader=None, config_poll_seconds: float = 0.0) -> None:
        """Poll version folders every poll_seconds (negative: never; 0: the initial poll only)."""
        self._config_reloader = config_reloader
        if self.poll_seconds <= 0 and not (config_reloader and config_poll_seconds > 0):
            return
        self._thread = threading.Thread(
            target=self._poll_loop, args=(config_poll_seconds,), name="version-poller", daemon=True
        )
        self._thread.start()

    def _poll_loop(self, config_poll_seconds: float) -> None:
        next_config = time.monotonic() + config_poll_seconds
        interval = self.poll_seconds if self.poll_seconds > 0 else config_poll_seconds
        if config_poll_seconds > 0:
            interval = min(interval, config_poll_seconds)
        while not self._stop.wait(interval):
            try:
                if self._config_reloader and config_poll_seconds > 0:
                    if time.monotonic() >= next_config:
                        next_config = time.monotonic() + config_poll_seconds
                        specs = self._config_reloader()
                        if specs is not None:
                            self.apply_config(specs)
                if self.poll_seconds > 0:
                    with self._lock:
                        for model in list(self.models.values()):
                            self._poll_model(model)
                if self._dirty and self.on_change is not None:
                    self._dirty = False
                    self.on_change()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("Version poll failed; will retry")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---- choosing the loader ----

_LOADER_WORDS = {"tf2": "TF2 object-graph", "session": "TF1 session (SavedModelBundle)"}


def _load_servable(path: str, tags: list[str], meta_graph):
    """("tf2" | "session", the loaded object, {name: signature}) for one version.

    The TF2 object-graph load is tried first (the faster call path). Some SavedModels that
    TF Serving serves cannot be revived as objects (Keras 2 optimizers, TF1 graphs without
    shapes, reference variables): those are served from a TF1 session over the MetaGraphDef,
    as TF Serving itself does. If neither loads, the session loader's error is raised (it is
    the loader TF Serving uses), with the object-graph error chained for the log.
    ``TFSERVE_MAGIC_LOADER=session`` skips the object-graph load (TF Serving's exact
    semantics for every model; the benchmark uses it to compare the paths).
    """
    from tfserve_magic.server.session_model import SessionModel, quiet_loader_warnings

    quiet_loader_warnings()
    tf2_error = None
    if os.environ.get("TFSERVE_MAGIC_LOADER", "auto") != "session":
        try:
            loaded = tf.saved_model.load(path, tags=tags)
            defs = meta_graph.signature_def
            signatures = {
                name: Signature(name, fn, defs[name] if name in defs else None)
                for name, fn in loaded.signatures.items()
            }
            return "tf2", loaded, signatures
        except Exception as exc:  # noqa: BLE001 - any object-graph failure tries the session
            tf2_error = exc
            log.info(
                "The TF2 object-graph loader cannot load %s (%s); loading it into a TF1 "
                "session as TensorFlow Serving does", path,
                " ".join(_load_error_message(exc, path).split()),
            )
    try:
        model = SessionModel(path, tags, meta_graph, _signature_specs)
    except Exception as session_error:
        raise session_error from tf2_error
    return "session", model, model.signatures


def loader_kind(path: str, tags=("serve",)) -> str:
    """Which loader serves the SavedModel at ``path``: "tf2" (object-graph load) or "session"
    (only the TF1-session loader); raises the load error if neither can (deploy preflight)."""
    meta_graph = read_meta_graph(path, list(tags))
    kind, loaded, _ = _load_servable(path, list(tags), meta_graph)
    if kind == "session":
        loaded.close()
    return kind


def _signature_specs(signature_def) -> dict:
    """Codec input specs from a SignatureDef's declared inputs."""
    return {
        key: (key, _numpy_dtype(info.dtype), _shape_tuple(info.tensor_shape))
        for key, info in signature_def.inputs.items()
    }


def _files_of(path: str) -> tuple:
    """(relative path, size, mtime) of everything under a version folder: changes when files
    are added, grow or are rewritten."""
    entries = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


# ---- SavedModel proto helpers ----


def _flat_input_order(function) -> list[str] | None:
    """The input names in the order the signature's flat call takes them, or None.

    Found once by binding probe tensors through the function's own FunctionType, so the order
    is TensorFlow's, not a guess; any surprise (TF1 wrapped functions, a TF version without
    these hooks) falls back to the keyword call.
    """
    try:
        specs = function.structured_input_signature[1]
        probes = {}
        for name, spec in specs.items():
            shape = [] if spec.shape.rank is None else [d or 1 for d in spec.shape.as_list()]
            probes[name] = tf.zeros(shape, spec.dtype)
        flat = function.function_type.unpack_inputs(function.function_type.bind(**probes))
        by_id = {id(tensor): name for name, tensor in probes.items()}
        order = [by_id[id(tensor)] for tensor in flat]
        if sorted(order) != sorted(specs) or not hasattr(function, "_call_flat"):
            return None
        return order
    except Exception:  # noqa: BLE001 - an optimisation only
        return None


def _direct_call(function):
    """(the traced function, its captured tensors, {output name: flat position}) to call
    without ConcreteFunction's wrapping, or None.

    A loaded signature's flat call re-reads its captured variable handles, checks for
    gradient tapes and re-packs the outputs on every request (about 30 us of a 100 us MLP
    call); the handles of a loaded version never change and the server records no gradients,
    so the call can go to the traced function (``call_flat``: flat tensors in and out) with
    the handles read once and the output positions worked out once, by packing the positions
    themselves through the function's own FunctionType. Anything unexpected keeps the regular
    flat call.
    """
    try:
        atomic = function._inference_function
        captures = list(function.captured_inputs)
        if not callable(getattr(atomic, "call_flat", None)):
            return None
        if not all(isinstance(c, tf.Tensor) for c in captures):
            return None  # e.g. distributed variables, resolved per call by the loader
        count = len(atomic.function_type.flat_outputs)
        positions = atomic.function_type.pack_output(list(range(count)))
        if not isinstance(positions, dict) or sorted(positions.values()) != list(range(count)):
            return None
        if not all(isinstance(name, str) for name in positions):
            return None
        return atomic, captures, positions
    except Exception:  # noqa: BLE001 - an optimisation only
        return None


def read_meta_graph(path: str, tags: list[str]):
    """The MetaGraphDef whose tag set equals ``tags`` (from saved_model.pb or .pbtxt)."""
    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    if os.path.exists(pb):
        with open(pb, "rb") as fh:
            saved_model.ParseFromString(fh.read())
    elif os.path.exists(pbtxt):
        from google.protobuf import text_format

        with open(pbtxt, encoding="utf-8") as fh:
            text_format.Parse(fh.read(), saved_model)
    else:
        raise FileNotFoundError(
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            f"{path} (a version folder must hold saved_model.pb directly)"
        )
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    available = [",".join(mg.meta_info_def.tags) for mg in saved_model.meta_graphs]
    raise LookupError(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}."
        f" Tag sets in the SavedModel: {available}. Use --saved_model_tags to pick one."
    )


def _load_error_message(exc: BaseException, path: str) -> str:
    if isinstance(exc, tf.errors.OpError):
        return from_tf_error(exc).message
    text = str(exc).strip() or type(exc).__name__
    return text.split("\n\n")[0]


def _load_error_code(exc: BaseException) -> str:
    if isinstance(exc, tf.errors.OpError):
        return from_tf_error(exc).code
    if isinstance(exc, (FileNotFoundError, LookupError)):
        return "NOT_FOUND"
    return "UNKNOWN"


def _numpy_dtype(enum: int):
    if enum == types_pb2.DT_STRING:
        return "string"
    try:
        return np.dtype(tf.dtypes.as_dtype(enum).as_numpy_dtype)
    except (TypeError, ValueError):
        return np.dtype(object)


def _shape_tuple(shape) -> tuple | None:
    if shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


def _tensor_info_json(info) -> dict:
    shape = info.tensor_shape
    return {
        "dtype": types_pb2.DataType.Name(info.dtype),
        "tensor_shape": {
            "dim": [{"size": str(d.size), "name": d.name} for d in shape.dim],
            "unknown_rank": bool(shape.unknown_rank),
        },
        "name": info.name,
    }


def _signature_def_json(signature_def) -> dict:
    defaults = {}
    if hasattr(signature_def, "defaults"):
        from google.protobuf import json_format

        defaults = {
            key: json_format.MessageToDict(value, preserving_proto_field_name=True)
            for key, value in signature_def.defaults.items()
        }
    return {
        "inputs": {k: _tensor_info_json(v) for k, v in signature_def.inputs.items()},
        "outputs": {k: _tensor_info_json(v) for k, v in signature_def.outputs.items()},
        "method_name": signature_def.method_name,
        "defaults": defaults,
    }
