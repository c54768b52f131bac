"""The ASGI app: TF Serving's REST routing, order of checks, errors, CORS, gzip and metrics.

A raw ASGI callable (no framework): every request costs one regex match and a dict lookup
before the codec runs. Model calls whose measured cost is small run inline on the event loop
(decoding holds the GIL anyway, so a pool adds no parallelism); longer ones go to a thread pool
so status and metadata requests are not stuck behind them (docs/design.md). Bodies larger than
``inline_body_bytes`` are parsed and decoded on a separate thread for the same reason, and
those of ``process_body_bytes`` and more in a helper process (decode_pool), whose C calls do not
hold this process's GIL, unless the compiled SIMD decoder (which lets the GIL go) proves them.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import time
import zlib
from urllib.parse import unquote

import numpy as np

from tfserve_magic.server import codec, decode_pool, inference
from tfserve_magic.server.sizing import usable_cpus
from tfserve_magic.server.status import CODE_FOR_HTTP, ServingError, invalid

log = logging.getLogger("tfserve_magic.server")

# The version that answered the current request (each request runs in its own task).
_SERVED_VERSION: contextvars.ContextVar = contextvars.ContextVar("served_version", default=None)
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_POST = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_GET = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1
# Bodies up to this size are parsed on the event loop (worst case, the exact tier, ~40 ms);
# larger ones, gzip bodies and large outputs are handled on the decode threads.
INLINE_BODY_BYTES = 32 * 1024
_INLINE_OUTPUT_ELEMENTS = 16 * 1024


def _decode_threads() -> int:
    """Decode threads (and helper processes): two, one under a one-core CPU quota, where a
    second only adds a process's memory (server/resources.py)."""
    return min(2, usable_cpus())

# libevent's built-in error page for paths outside /v1/.
_HTML_404 = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)
_JSON = b"application/json"
_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]


class _Disconnected(Exception):
    """The client went away before its body arrived; nothing is sent."""


class ServingApp:
    """One instance per server process; ``__call__`` is the ASGI entry point."""

    def __init__(
        self,
        manager,
        *,
        metrics=None,
        monitoring_path: str | None = None,
        cors: bool = False,
        batcher=None,
        timeout_s: float = 30.0,
        max_body_bytes: int = 1 << 30,
        executor=None,
        inline_budget_s: float = 0.005,
        guard=None,
        inline_body_bytes: int = INLINE_BODY_BYTES,
        process_body_bytes: int | None = decode_pool.PROCESS_BODY_BYTES,
    ):
        self.manager = manager
        self.metrics = metrics
        self.monitoring_path = monitoring_path
        self.cors = cors
        self.batcher = batcher
        self.timeout_s = timeout_s if timeout_s > 0 else None
        self.max_body_bytes = max_body_bytes
        self.executor = executor
        self.inline_budget_s = inline_budget_s
        self.guard = guard  # a guard.RequestGuard (Host and cross-site checks), or None
        self.inline_body_bytes = inline_body_bytes
        self._decoder = None  # ThreadPoolExecutor for large bodies, made on first use
        # Bodies of at least this size are decoded in helper processes (decode_pool), if any.
        self.process_body_bytes = process_body_bytes
        self._pool = None  # decode_pool.DecodePool, made on first use

    def close(self) -> None:
        """Stop the decode processes (they also exit by themselves when the server dies)."""
        if self._pool is not None:
            self._pool.close()

    # ---- ASGI ----

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        uri = raw_path.decode("latin-1")
        if scope.get("query_string"):
            uri += "?" + scope["query_string"].decode("latin-1")
        method = scope["method"]
        if self.guard is not None:
            refused = self.guard.refuse(method, dict(scope["headers"]))
            if refused is not None:
                self._record("", "PERMISSION_DENIED", "", started)
                await _respond(send, 403, codec.encode_error(refused), _JSON)
                return
        if self.monitoring_path is not None and scope["path"] == self.monitoring_path:
            body = self.metrics.render().encode("utf-8") if self.metrics else b""
            await _respond(send, 200, body, b"text/plain")  # as TF Serving
            return
        if not _V1.fullmatch(uri):
            await _respond(send, 404, _HTML_404, b"text/html")
            return
        headers = dict(scope["headers"])
        extra = _CORS_HEADERS if self.cors else []
        if method == "OPTIONS":
            origin = headers.get(b"origin", b"")
            ok = b"http://" in origin or b"https://" in origin
            self._record("", "OK" if ok else "FAILED_PRECONDITION", "", started)
            await _respond(send, 200 if ok else 400, b"", None, extra)
            return
        model_name, api = "", ""
        try:
            if method == "POST":
                match = _POST.fullmatch(uri)
                if match is None or match.group(4) not in ("predict", "classify", "regress"):
                    raise invalid(f"Malformed request: {method} {uri}")
                model_name, api = unquote(match.group(1)), match.group(4)
                body = await self._read_body(receive, headers)
                version = _version(match.group(2))
                label = unquote(match.group(3)) if match.group(3) is not None else None
                if api == "predict":
                    payload = await self._predict(model_name, version, label, body)
                else:
                    payload = await self._classify_regress(api, model_name, version, label, body)
            elif method == "GET":
                # TF Serving matches the query string into the model name; we call it malformed.
                match = None if scope.get("query_string") else _GET.fullmatch(uri)
                if match is None:
                    raise invalid(f"Malformed request: {method} {uri}")
                if match.group(1) is None:
                    raise invalid("Missing model name in request.")
                model_name = unquote(match.group(1))
                version = _version(match.group(2))
                if match.group(4) == "metadata":
                    label = unquote(match.group(3)) if match.group(3) is not None else None
                    servable = self.manager.resolve(model_name, version, label)
                    payload = _proto_style_json(servable.metadata_json())
                else:  # TF Serving ignores a label here and lists every version
                    payload = _proto_style_json(
                        {"model_version_status": self.manager.status(model_name, version)}
                    )
            else:
                raise invalid(f"Malformed request: {method} {uri}")
        except _Disconnected:
            return
        except ServingError as exc:
            self._record(model_name, exc.code, api, started)
            await _respond(send, exc.http_status, codec.encode_error(exc.message), _JSON, extra)
            return
        except codec.CodecError as exc:
            status = getattr(exc, "status", 400)
            self._record(model_name, CODE_FOR_HTTP.get(status, "UNKNOWN"), api, started)
            await _respond(send, status, codec.encode_error(str(exc)), _JSON, extra)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            log.exception("Internal error while handling %s %s", method, uri)
            self._record(model_name, "INTERNAL", api, started)
            message = f"Internal server error ({type(exc).__name__}): {exc}"
            await _respond(send, 500, codec.encode_error(message), _JSON, extra)
            return
        self._record(model_name, "OK", api, started)
        await _respond(send, 200, payload, _JSON, extra)

    def _record(self, model_name: str, code: str, api: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.record_request(model_name, code, api, time.perf_counter() - started,
                                        version=_SERVED_VERSION.get())

    async def _read_body(self, receive, headers: dict) -> bytes:
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        # TF Serving gunzips when Content-Encoding *contains* "gzip" ("x-gzip", "gzip, br").
        if b"gzip" in headers.get(b"content-encoding", b"").lower():
            body = await self._offload(True, _gunzip, body, limit)
        return body

    async def _offload(self, off_loop: bool, fn, *args):
        """``fn(*args)``, on a decode thread when ``off_loop`` (so the loop keeps answering)."""
        if not off_loop:
            return fn(*args)
        if self._decoder is None:
            from concurrent.futures import ThreadPoolExecutor

            self._decoder = ThreadPoolExecutor(max_workers=_decode_threads(),
                                               thread_name_prefix="decode")
        return await asyncio.get_running_loop().run_in_executor(self._decoder, fn, *args)

    # ---- verbs ----

    def _for_helper(self, body: bytes) -> bool:
        return self.process_body_bytes is not None and len(body) >= self.process_body_bytes

    def _decode_pool(self):
        if self._pool is None:
            self._pool = decode_pool.DecodePool(size=_decode_threads())  # one per thread
        return self._pool

    def _decode_predict(self, name, version, label, body: bytes):
        request = None
        if self._for_helper(body):
            # The compiled SIMD decoder lets the GIL go: what it proves stays in-process.
            request = codec.parse_predict_gil_free(body)
            if request is None:
                try:
                    return self._decode_predict_in_helper(name, version, label, body)
                except decode_pool.PoolUnavailable:
                    pass  # logged once by the pool; decode here
        if request is None:
            request = codec.parse_predict(body)  # steps 1-2
        servable = self.manager.resolve(name, version, label)  # step 3
        signature = servable.signature(request.signature_name)
        tensors, row = codec.decode_predict(request, signature.specs)  # steps 4-5
        return servable, signature, tensors, row

    def _decode_predict_in_helper(self, name, version, label, body: bytes):
        # The helper parses first (a parse error wins over an unknown model, as in-process);
        # it gets every signature's specs of the servable, or None when resolving failed.
        try:
            servable = self.manager.resolve(name, version, label)
            table = {key: sig.specs for key, sig in servable.signatures.items()}
        except ServingError:
            servable, table = None, None
        kind, value = self._decode_pool().run("predict", body, table)
        if kind == "resolve":  # the error that the in-process order raises at step 3
            servable = self.manager.resolve(name, version, label)
            servable.signature(value)
            raise decode_pool.PoolUnavailable("the model changed meanwhile")  # decode here
        signature_name, tensors, row = value
        return servable, servable.signature(signature_name), tensors, row

    def _parse_examples(self, body: bytes, api: str):
        if self._for_helper(body):
            try:
                return self._decode_pool().run("examples", body, api)
            except decode_pool.PoolUnavailable:
                pass
        return codec.parse_examples(body, api)

    async def _predict(self, name, version, label, body: bytes) -> bytes:
        large = len(body) > self.inline_body_bytes
        servable, signature, tensors, row = await self._offload(
            large, self._decode_predict, name, version, label, body
        )
        outputs = await self._run(servable, signature, tensors, api="predict")  # step 6
        large = sum(int(np.size(v)) for v in outputs.values()) > _INLINE_OUTPUT_ELEMENTS
        return await self._offload(large, codec.encode_predict, outputs, row)  # step 7

    async def _classify_regress(self, api, name, version, label, body: bytes) -> bytes:
        large = len(body) > self.inline_body_bytes
        request = await self._offload(large, self._parse_examples, body, api)
        servable = self.manager.resolve(name, version, label)
        signature = servable.example_signature(request.signature_name, api)
        serialized = inference.example_tensor(request.serialized)
        outputs = await self._run(servable, signature, {"inputs": serialized}, api=api)
        count = len(serialized)
        inference.record_examples(self.metrics, name, count)
        if api == "classify":
            return codec.encode_classify(*inference.classification_outputs(outputs, count))
        return codec.encode_regress(inference.regression_outputs(outputs, count))

    async def _run(self, servable, signature, tensors, *, api: str) -> dict:
        """Run the model: batched, inline when cheap, otherwise in the pool with a deadline."""
        _SERVED_VERSION.set(servable.version)  # this request's task: read back by _record
        if self.batcher is not None and api == "predict":
            key = inference.batch_key(servable, signature)
            future = self.batcher.submit(key, signature, tensors)
            return await self._deadline(asyncio.wrap_future(future))
        elements = sum(int(np.size(v)) for v in tensors.values()) or 1
        per_element = signature.seconds_per_element

        def timed():
            return inference.timed_run(servable, signature, tensors, api=api, metrics=self.metrics)

        if per_element is not None and per_element * elements <= self.inline_budget_s:
            return timed()

        loop = asyncio.get_running_loop()
        return await self._deadline(loop.run_in_executor(self.executor, timed))

    async def _deadline(self, awaitable):
        if self.timeout_s is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, self.timeout_s)
        except asyncio.TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None


def _proto_style_json(value: dict) -> bytes:
    """Status and metadata as TF Serving prints them (protobuf's JSON printer, 1-space indent)."""
    return json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8")


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    # Python refuses int() of more than 4,300 digits; anything over 19 is beyond int64 anyway.
    value = int(text) if len(text.lstrip("0")) <= 19 else _INT64_MAX + 1
    if value > _INT64_MAX:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return value


def _too_large(limit: int) -> ServingError:
    return ServingError(
        "RESOURCE_EXHAUSTED",
        f"Request body is larger than the server's limit of {limit} bytes "
        "(raise it with --rest_api_max_body_bytes)",
        http=413,
    )


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=31)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise invalid(f"Failed to decompress the gzip request body: {exc}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _too_large(limit)
    if not decompressor.eof:
        raise invalid("Failed to decompress the gzip request body: it is truncated")
    return out


async def _respond(send, status: int, body: bytes, content_type, extra=()) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
