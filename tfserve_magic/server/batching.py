"""``--enable_batching``: merge concurrent predict requests along dimension 0.

Follows TF Serving's BasicBatchScheduler semantics: each (model, version, signature) has one
open batch that collects tasks until it is full, or ``batch_timeout_micros`` has passed, or (with
timeout 0) a batch thread is free; closed batches wait in a queue of at most
``max_enqueued_batches`` (a full queue answers 503). ``num_batch_threads`` threads run batches,
padded up to the next of ``allowed_batch_sizes``, and split the outputs back per request.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future

import numpy as np

from tfserve_magic.server.config import BatchingConfig
from tfserve_magic.server.sizing import usable_cpus
from tfserve_magic.server.status import ServingError, invalid

log = logging.getLogger("tfserve_magic.server")

THREAD_POOL_NAME = "model_server_batch_threads"


class _Task:
    __slots__ = ("tensors", "size", "future", "enqueued")

    def __init__(self, tensors: dict[str, np.ndarray], size: int):
        self.tensors = tensors
        self.size = size
        self.future: Future = Future()
        self.enqueued = time.perf_counter()


class _Batch:
    __slots__ = ("signature", "tasks", "size", "opened")

    def __init__(self, signature):
        self.signature = signature
        self.tasks: list[_Task] = []
        self.size = 0
        self.opened = time.monotonic()


class _Queue:
    __slots__ = ("open", "closed")

    def __init__(self):
        self.open: _Batch | None = None
        self.closed: deque[_Batch] = deque()


class BatchScheduler:
    """A shared pool of batch threads serving one queue per (model, version, signature)."""

    def __init__(self, config: BatchingConfig, metrics=None):
        self.config = config
        self.metrics = metrics
        self.timeout_s = config.batch_timeout_micros / 1e6
        self._queues: dict[tuple, _Queue] = {}
        self._cond = threading.Condition()
        self._stopping = False
        # 0: the usable cores (a container's CPU quota counts, server/resources.py)
        threads = config.num_batch_threads or usable_cpus()
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "Batching enabled: max_batch_size=%d batch_timeout_micros=%d max_enqueued_batches=%d "
            "num_batch_threads=%d allowed_batch_sizes=%s",
            config.max_batch_size, config.batch_timeout_micros, config.max_enqueued_batches,
            threads, list(config.allowed_batch_sizes) or "any",
        )

    def submit(self, key: tuple, signature, tensors: dict[str, np.ndarray]) -> Future:
        """Queue one request; the future resolves to its own slice of the outputs."""
        size = _batch_dim(tensors)
        if size > self.config.max_batch_size:
            raise invalid(
                f"Task size {size} is larger than maximum input batch size "
                f"{self.config.max_batch_size}"
            )
        task = _Task(tensors, size)
        with self._cond:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue()
            batch = queue.open
            if batch is not None and batch.size + size > self.config.max_batch_size:
                queue.closed.append(batch)
                batch = queue.open = None
            if batch is None:
                if len(queue.closed) >= self.config.max_enqueued_batches:
                    raise ServingError(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                batch = queue.open = _Batch(signature)
            batch.tasks.append(task)
            batch.size += size
            if batch.size >= self.config.max_batch_size:
                queue.closed.append(batch)
                queue.open = None
            self._cond.notify()
        return task.future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # ---- batch threads ----

    def _take(self) -> _Batch | None:
        """The next batch to run (oldest closed one first), or None; caller holds the lock."""
        oldest_key, oldest = None, None
        for key, queue in self._queues.items():
            if queue.closed and (oldest is None or queue.closed[0].opened < oldest.opened):
                oldest_key, oldest = key, queue.closed[0]
        if oldest is not None:
            return self._queues[oldest_key].closed.popleft()
        now = time.monotonic()
        for queue in self._queues.values():
            batch = queue.open
            if batch is not None and now - batch.opened >= self.timeout_s:
                queue.open = None
                return batch
        return None

    def _next_deadline(self) -> float | None:
        opened = [q.open.opened for q in self._queues.values() if q.open is not None]
        if not opened:
            return None
        return max(0.0, min(opened) + self.timeout_s - time.monotonic())

    def _worker(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                while batch is None:
                    if self._stopping:
                        return
                    self._cond.wait(self._next_deadline())
                    batch = self._take()
            try:
                self._run(batch)
            except Exception as exc:  # noqa: BLE001 - a batch failure is its requests' failure
                log.exception("Batch failed")
                _fail(batch.tasks, ServingError("INTERNAL", f"Batch failed: {exc}"))

    def _run(self, batch: _Batch) -> None:
        tasks = [t for t in batch.tasks if t.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        started = time.perf_counter()
        size = sum(t.size for t in tasks)
        padded = self._padded_size(size)
        if self.metrics is not None:
            for task in tasks:
                self.metrics.queuing_latency.observe(
                    (started - task.enqueued) * 1e6, THREAD_POOL_NAME
                )
                self.metrics.input_batch_size.observe(task.size, THREAD_POOL_NAME)
            self.metrics.processed_batch_size.observe(padded, THREAD_POOL_NAME)
            self.metrics.padding_size.observe(padded - size, THREAD_POOL_NAME)
        try:
            merged = _concat([t.tensors for t in tasks], padded - size)
        except ValueError:
            # Inner shapes differ between requests: they cannot share a batch, run each alone.
            for task in tasks:
                _settle([task], batch.signature, task.tensors, task.size)
            return
        _settle(tasks, batch.signature, merged, padded)

    def _padded_size(self, size: int) -> int:
        allowed = self.config.allowed_batch_sizes
        if not allowed:
            return size
        return allowed[bisect.bisect_left(allowed, size)]


def _batch_dim(tensors: dict[str, np.ndarray]) -> int:
    sizes = set()
    for value in tensors.values():
        if np.ndim(value) == 0:
            raise invalid("Batching Run() input tensors must have at least one dimension")
        sizes.add(np.shape(value)[0])
    if len(sizes) != 1:
        raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def _concat(parts: list[dict[str, np.ndarray]], pad: int) -> dict[str, np.ndarray]:
    merged = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if pad:
            first = arrays[0][:1]
            arrays.append(np.repeat(first, pad, axis=0))
        merged[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    return merged


def _settle(tasks: list[_Task], signature, tensors: dict[str, np.ndarray], size: int) -> None:
    """Run one merged batch and hand each task its rows (or the error)."""
    try:
        outputs = signature.run(tensors)
    except ServingError as exc:
        _fail(tasks, exc)
        return
    for name, value in outputs.items():
        if np.ndim(value) == 0 or value.shape[0] != size:
            _fail(tasks, invalid(
                f"Batched output tensor {name} has 0th dimension "
                f"{'none' if np.ndim(value) == 0 else value.shape[0]} but the batch has {size} "
                "rows; signatures whose outputs are not batched cannot be used with "
                "--enable_batching"
            ))
            return
    start = 0
    for task in tasks:
        end = start + task.size
        task.future.set_result({name: value[start:end] for name, value in outputs.items()})
        start = end


def _fail(tasks: list[_Task], exc: BaseException) -> None:
    for task in tasks:
        if not task.future.done():
            task.future.set_exception(exc)
