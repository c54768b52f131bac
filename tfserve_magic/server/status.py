"""TF Serving's status codes and their HTTP mapping (``http_server.cc`` ``ToHTTPStatusCode``)."""

from __future__ import annotations

import re

# tensorflow.error.Code name -> HTTP status, exactly as TF Serving maps them.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# HTTP status -> the code name a metric or status entry reports (first code wins on ties).
CODE_FOR_HTTP = {}
for _code, _http in HTTP_STATUS.items():
    CODE_FOR_HTTP.setdefault(_http, _code)
CODE_FOR_HTTP[413] = "RESOURCE_EXHAUSTED"


class ServingError(Exception):
    """An error with a TF Serving status code; ``str(e)`` is the message clients see."""

    def __init__(self, code: str, message: str, http: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http = http  # overrides the code's usual HTTP status (413 for a huge body)

    @property
    def http_status(self) -> int:
        return self.http or HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def from_tf_error(exc: BaseException) -> ServingError:
    """Map a ``tf.errors.OpError`` (by its class name, so no TF import here) to a ServingError."""
    name = type(exc).__name__
    code = {
        "CancelledError": "CANCELLED",
        "UnknownError": "UNKNOWN",
        "InvalidArgumentError": "INVALID_ARGUMENT",
        "DeadlineExceededError": "DEADLINE_EXCEEDED",
        "NotFoundError": "NOT_FOUND",
        "AlreadyExistsError": "ALREADY_EXISTS",
        "PermissionDeniedError": "PERMISSION_DENIED",
        "ResourceExhaustedError": "RESOURCE_EXHAUSTED",
        "FailedPreconditionError": "FAILED_PRECONDITION",
        "AbortedError": "ABORTED",
        "OutOfRangeError": "OUT_OF_RANGE",
        "UnimplementedError": "UNIMPLEMENTED",
        "InternalError": "INTERNAL",
        "UnavailableError": "UNAVAILABLE",
        "DataLossError": "DATA_LOSS",
        "UnauthenticatedError": "UNAUTHENTICATED",
    }.get(name, "INTERNAL")
    message = getattr(exc, "message", None) or str(exc)
    return ServingError(code, _strip_tf_noise(message))


def _strip_tf_noise(message: str) -> str:
    """Drop what TF wraps around an op's message: the graph-execution header, the Python
    stack of the op's definition and the node/op suffixes (they name our internals)."""
    for marker in ("\n\nStack trace for op definition:", "\n\t [[{{node", "\n\t [["):
        cut = message.find(marker)
        if cut >= 0:
            message = message[:cut]
    message = re.sub(r"\s*\[Op:[^\]]*\](?: name:.*)?\s*$", "", message)
    kept = []
    in_trace = False
    for line in message.splitlines():
        if line.startswith("Graph execution error:"):
            continue
        if line.startswith("Detected at node"):
            in_trace = True
            continue
        if in_trace and (line.startswith((" ", "\t")) or line == "<stack traces unavailable>"
                         or not line.strip()):
            continue
        in_trace = False
        if line.strip() or kept:
            kept.append(line)
    return "\n".join(kept).strip() or message.strip()
