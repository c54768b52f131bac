"""Decode very large request bodies in helper processes, so the server's GIL stays free.

Single C calls of the codec (``orjson.loads`` of a 16 MB body, ``np.array`` of a big list) hold
the GIL for 0.1 s or more; on a thread that stalls the event loop, and status calls with it.
A helper process parses and decodes instead; the server only writes the body to a pipe and
reads the pickled tensors back (system calls that release the GIL, and a memcpy-sized
unpickle). See docs/design.md, "Decode processes".

The helpers are plain ``python -m tfserve_magic.server.decode_pool PARENT_PID`` children
(not ``multiprocessing``: no re-import of the server's ``__main__``, so never TensorFlow).
They exit when their stdin closes (the server exited, even by SIGKILL), when their parent pid
changes, and on Linux by PR_SET_PDEATHSIG. Any failure to start or talk to one raises
``PoolUnavailable``; the caller then decodes in-process, so no request is lost.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading

log = logging.getLogger("tfserve_magic.server")

# Bodies of at least this many bytes (after gunzip) go to a helper process. Below it, the
# longest GIL hold of an in-process decode (orjson, ~6 ms per MB here) is a few ms, less than
# the hop costs (docs/design.md).
# TFSERVE_MAGIC_DECODE_PROCESS_BYTES overrides it; 0 turns the helpers off (diagnostics, tests).
PROCESS_BODY_BYTES = int(os.environ.get("TFSERVE_MAGIC_DECODE_PROCESS_BYTES", 1 << 20)) or None
_HEADER = struct.Struct("<QQ")  # meta length, payload length
_PIPE_BYTES = 1 << 20


class PoolUnavailable(Exception):
    """No helper could do the work; decode in-process instead."""


def _read_exact(fd: int, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("pipe closed")
        got += n
    return buf


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except (ImportError, OSError):
        pass


def _send(fd: int, meta, payload=b"") -> None:
    head = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _HEADER.pack(len(head), len(payload)) + head)
    if payload:
        _write_all(fd, payload)


def _receive(fd: int):
    meta_len, payload_len = _HEADER.unpack(bytes(_read_exact(fd, _HEADER.size)))
    meta = pickle.loads(_read_exact(fd, meta_len))
    payload = bytes(_read_exact(fd, payload_len)) if payload_len else b""
    return meta, payload


class _Helper:
    def __init__(self):
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfserve_magic.server.decode_pool", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self.to_child = self.proc.stdin.fileno()
        self.from_child = self.proc.stdout.fileno()
        _grow_pipe(self.to_child)

    def call(self, meta, payload):
        _send(self.to_child, meta, payload)
        return _receive(self.from_child)

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class DecodePool:
    """Up to ``size`` helper processes, started on first use; thread-safe, blocking calls."""

    def __init__(self, size: int = 2):
        self.size = size
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._helpers: list[_Helper] = []
        self._closed = False
        self.broken = False

    def _acquire(self) -> _Helper:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed or self.broken:
                raise PoolUnavailable("the decode pool is closed")
            if len(self._helpers) < self.size:
                try:
                    helper = _Helper()
                except Exception as exc:  # noqa: BLE001 - any platform problem: fall back
                    self._break(f"cannot start a decode process ({exc})")
                self._helpers.append(helper)
                return helper
        while True:  # every helper is busy: wait for one (or for the pool to break)
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                if self._closed or self.broken:
                    raise PoolUnavailable("the decode pool is closed") from None

    def _break(self, why: str):
        if not self.broken:
            self.broken = True
            log.warning("Decoding large bodies in-process from now on: %s", why)
        raise PoolUnavailable(why)

    def run(self, op: str, body: bytes, *args):
        """``op`` on ``body`` in a helper: returns its value or raises its exception."""
        helper = self._acquire()
        try:
            status, value = helper.call((op, args), body)[0]
        except Exception as exc:  # noqa: BLE001 - a dead or broken helper
            with self._lock:
                if helper in self._helpers:
                    self._helpers.remove(helper)
            helper.close()
            self._break(f"a decode process failed ({type(exc).__name__}: {exc})")
        self._idle.put(helper)
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        with self._lock:
            self._closed = True
            helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.close()


# ---- the helper process ----


def _decode_predict(body: bytes, table):
    """Parse and decode; ``table`` maps signature names to specs (None: the model failed)."""
    from tfserve_magic.server import codec

    request = codec.parse_predict(body)
    specs = None if table is None else table.get(request.signature_name or "serving_default")
    if specs is None:  # the server raises the resolve/signature error itself
        return ("resolve", request.signature_name)
    tensors, row = codec.decode_predict(request, specs)
    return ("ok", (request.signature_name, tensors, row))


def _parse_examples(body: bytes, api: str):
    from tfserve_magic.server import codec

    return codec.parse_examples(body, api)


_OPS = {"predict": _decode_predict, "examples": _parse_examples}


def _watch_parent(parent: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _set_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - the other two exits still hold
        pass


def _serve(parent: int) -> None:
    _set_death_signal()
    if os.getppid() != parent:
        return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the server decides
    from tfserve_magic.server import codec  # noqa: F401 - warm the imports before the first call

    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    _grow_pipe(stdout)
    while True:
        try:
            (op, args), body = _receive(stdin)
        except EOFError:
            return
        try:
            reply = ("ok", _OPS[op](body, *args))
        except Exception as exc:  # noqa: BLE001 - sent back and raised in the server
            reply = ("error", exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an unpicklable exception
            data = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        _write_all(stdout, _HEADER.pack(len(data), 0) + data)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
