"""Model and version manager: discovery, version policies, labels, hot swap, load errors.

Mirrors TF Serving's file-system storage source plus its availability-preserving policy: a new
version loads while the old one serves, traffic moves once it is AVAILABLE, then the old one is
unloaded and stays listed as END. All state changes happen on the poll thread (or the initial
load pool); request handlers only read copy-on-write snapshots, so they never take a lock.
Loading one version (meta graph, loader choice, signatures) is server/servable.py's job.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tfserve_magic.server.config import ModelSpec
from tfserve_magic.server.servable import (
    _LOADER_WORDS,
    Servable,
    _load_error_code,
    _load_error_message,
    _signature_specs,
    loader_kind,
    read_meta_graph,
)
from tfserve_magic.server.status import ServingError, invalid, not_found

# Loading lives in server/servable.py; these stay importable from here for older callers.
__all__ = [
    "Model",
    "ModelManager",
    "Servable",
    "VersionState",
    "_signature_specs",
    "loader_kind",
    "read_meta_graph",
]

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
