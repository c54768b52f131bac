"""Connection limits: header size, read timeouts, idle timeout and a cap on open connections.

uvicorn's httptools protocol keeps every connection until the client closes it, lets a header
block grow without bound (httptools joins header fragments by concatenation: quadratic) and
accepts connections until ``accept`` fails for lack of descriptors, at which point the version
poller cannot open files either. ``protocol_class(Limits(...))`` returns a subclass that:

- answers 431 once a request's header block passes ``max_header_bytes`` (counted before the
  parser sees the bytes; a pipelined request's headers that share a read with the previous
  request are counted from the next read, so the bound holds within one read of 256 KiB);
- answers 408 and closes when the header block has not arrived within ``header_timeout_s`` of
  its first byte, or the body pauses for more than ``body_timeout_s``;
- closes a connection idle for ``idle_timeout_s`` (also before its first request; uvicorn
  starts its keep-alive timer only after a response);
- keeps at most ``max_connections`` open: at the cap a new connection first displaces the
  longest-idle one, and gets 503 when every connection is busy. ``default_max_connections``
  keeps ``FD_RESERVE`` descriptors free for the model poller, the log and the metrics.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("tfserve_magic.server")

# Descriptors never given to connections: version loads (TensorFlow opens a SavedModel's files,
# several at a time with --num_load_threads), the config re-read, the log and the info file.
FD_RESERVE = 64
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 30.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 75.0
    max_connections: int = 1000


def open_descriptors() -> int:
    """Descriptors this process has open now (Linux/macOS), or 0 when it cannot tell."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0


def default_max_connections(reserve: int = FD_RESERVE) -> int:
    """The descriptor limit minus what is open now and a reserve (at least 1)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1000  # Windows: no per-process descriptor limit of this kind
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    return max(1, soft - open_descriptors() - reserve)


def raw_response(status: int, message: str) -> bytes:
    """A complete ``Connection: close`` response with a TF Serving-style JSON error body."""
    body = json.dumps({"error": message}).encode()
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


def protocol_class(limits: Limits, base=None):
    """A subclass of uvicorn's httptools protocol (or ``base``) that enforces ``limits``."""
    if base is None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base

    class LimitedHttpToolsProtocol(base):
        _limits = limits

        def connection_made(self, transport):
            super().connection_made(transport)
            self._head_bytes = 0
            self._in_head = True
            self._tail = b""
            self._head_timer = None
            self._body_timer = None
            self._awaiting_body = False
            self._last_body = 0.0
            self._idle_since = self.loop.time()
            self.timeout_keep_alive = self._limits.idle_timeout_s
            if len(self.connections) > self._limits.max_connections and not self._evict_idle():
                log.warning(
                    "Refusing a connection: %d open, the limit is %d (--rest_api_max_connections)",
                    len(self.connections) - 1, self._limits.max_connections,
                )
                self._refuse(503, "Too many open connections; retry later")
                return
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self._limits.idle_timeout_s, self.timeout_keep_alive_handler
            )

        def connection_lost(self, exc):
            self._cancel_timers()
            super().connection_lost(exc)

        def _evict_idle(self) -> bool:
            """Close the longest-idle connection (none in a request) to make room; False if none."""
            idle = [c for c in self.connections
                    if c is not self and getattr(c, "_idle_since", None) is not None]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._idle_since)
            oldest._idle_since = None
            oldest.transport.close()
            self.connections.discard(oldest)  # its connection_lost comes on the next loop turn
            return True

        def _refuse(self, status: int, message: str) -> None:
            self._cancel_timers()
            self._idle_since = None
            if not self.transport.is_closing():
                self.transport.write(raw_response(status, message))
                self.transport.close()
            self.connections.discard(self)

        def _cancel_timers(self) -> None:
            for name in ("_head_timer", "_body_timer"):
                timer = getattr(self, name, None)
                if timer is not None:
                    timer.cancel()
                    setattr(self, name, None)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            self._idle_since = None
            if self._in_head:
                joined = self._tail + data
                end = joined.find(b"\r\n\r\n")
                if end < 0 and self._head_timer is None:  # headers still incomplete: time them
                    self._head_timer = self.loop.call_later(
                        self._limits.header_timeout_s, self._timed_out, "header"
                    )
                self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
                if self._head_bytes > self._limits.max_header_bytes:
                    self._refuse(431, (
                        "The request's header block is larger than the server's limit of "
                        f"{self._limits.max_header_bytes} bytes (--rest_api_max_header_bytes)"
                    ))
                    return
                self._tail = joined[-3:]
            else:
                self._last_body = self.loop.time()
            super().data_received(data)
            if self._awaiting_body and self._body_timer is None:  # body incomplete: time it
                self._last_body = self.loop.time()
                self._body_timer = self.loop.call_later(
                    self._limits.body_timeout_s, self._check_body
                )

        def on_headers_complete(self) -> None:
            self._in_head = False
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._awaiting_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            self._awaiting_body = False
            self._in_head, self._head_bytes, self._tail = True, 0, b""
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms uvicorn's keep-alive (= idle) timer
            if not self.pipeline and not self.transport.is_closing():
                self._idle_since = self.loop.time()

        def timeout_keep_alive_handler(self) -> None:
            self._idle_since = None
            super().timeout_keep_alive_handler()

        def _check_body(self) -> None:
            self._body_timer = None
            waited = self.loop.time() - self._last_body
            if waited < self._limits.body_timeout_s:  # data came meanwhile: wait the rest
                self._body_timer = self.loop.call_later(
                    self._limits.body_timeout_s - waited, self._check_body
                )
                return
            self._timed_out("body")

        def _timed_out(self, part: str) -> None:
            seconds = (self._limits.header_timeout_s if part == "header"
                       else self._limits.body_timeout_s)
            flag = f"--rest_api_{part}_timeout_seconds"
            if part == "header":
                self._head_timer = None
            cycle = getattr(self, "cycle", None)
            if cycle is not None and not cycle.response_complete and part == "body":
                cycle.disconnected = True  # the app's receive() sees a disconnect
                cycle.message_event.set()
            started = cycle is not None and part == "body" and cycle.response_started
            if started:
                self.transport.close()
                return
            self._refuse(408, f"The request {part} did not arrive within {seconds:g} s ({flag})")

    return LimitedHttpToolsProtocol
