"""``--enable_per_model_batching_parameters``: each version's ``batching_params.pbtxt``.

As TF Serving's ``GetPerModelBatchingParams``: with the flag (and ``--enable_batching``) a
version folder holding ``batching_params.pbtxt`` is batched with the parameters of that file;
a version without one is not batched at all. Of the global ``--batching_parameters_file`` only
the thread count is used. A file that does not parse or validate fails that version's load.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, replace

from tfserve_magic.server import inference
from tfserve_magic.server.config import BatchingConfig, ConfigError, parse_batching_parameters

PARAMS_FILE = "batching_params.pbtxt"


def params_path(version_dir: str) -> str:
    return os.path.join(version_dir, PARAMS_FILE)


def read_params(version_dir: str, common: BatchingConfig) -> BatchingConfig | None:
    """The version's own batching parameters (threads from ``common``), or None: not batched.
    Raises a TF InvalidArgumentError (the load error) when the file is bad."""
    path = params_path(version_dir)
    if not os.path.exists(path):
        return None
    try:
        own = parse_batching_parameters(path)
    except ConfigError as exc:
        import tensorflow as tf

        raise tf.errors.InvalidArgumentError(None, None, str(exc)) from None
    return replace(own, num_batch_threads=common.num_batch_threads)


class _Unbatched:
    __slots__ = ("model_name",)

    def __init__(self, model_name: str):
        self.model_name = model_name


class PerModelBatcher:
    """The batcher interface (``submit``/``stop``) routing each version to its own parameters.

    Versions with equal parameters share one scheduler (its queues are per model, version and
    signature anyway), so hot swaps do not add batch threads. A version without parameters runs
    unbatched on a small pool, as its own call.
    """

    def __init__(self, common: BatchingConfig, metrics=None):
        self.common = common
        self.metrics = metrics
        self._by_version: dict[tuple, object] = {}  # (model, version) -> scheduler or None
        self._schedulers: dict[tuple, object] = {}  # astuple(config) -> BatchScheduler
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                                        thread_name_prefix="unbatched")

    def register(self, servable) -> None:
        """Read the version's parameters at load (before warm-up); a bad file fails the load."""
        config = read_params(servable.path, self.common)
        scheduler = None
        if config is not None:
            from tfserve_magic.server.batching import BatchScheduler

            with self._lock:
                scheduler = self._schedulers.get(astuple(config))
                if scheduler is None:
                    scheduler = BatchScheduler(config, self.metrics)
                    self._schedulers[astuple(config)] = scheduler
        with self._lock:
            self._by_version[(servable.model_name, servable.version)] = scheduler

    def batched(self, model_name: str, version: int) -> bool:
        return self._by_version.get((model_name, version)) is not None

    def submit(self, key: tuple, signature, tensors) -> Future:
        scheduler = self._by_version.get(key[:2])
        if scheduler is not None:
            return scheduler.submit(key, signature, tensors)
        return self._pool.submit(inference.timed_run, _Unbatched(key[0]), signature, tensors,
                                 api="predict", metrics=self.metrics)

    def stop(self) -> None:
        with self._lock:
            schedulers = list(self._schedulers.values())
        for scheduler in schedulers:
            scheduler.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
