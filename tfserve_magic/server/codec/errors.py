"""The codec's errors: CodecError for callers, plus the inner signals its steps raise.

CodecError carries TF Serving's message and HTTP status; _Status is a tensorflow::Status before
TF Serving wraps it; _Reparse asks for the exact parser when a faster tier may have disagreed.
"""

from __future__ import annotations


class CodecError(Exception):
    """A request/response conversion error: `.status` is the HTTP status, str(e) the message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def __reduce__(self):  # keep .status across a pickle (errors from the decode processes)
        return (type(self), (self.message, self.status))


class _Status(Exception):
    """An inner tensorflow::Status (code + message) before TF Serving wraps or returns it."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self):  # Status::ToString()
        return f"{self.code}: {self.message}"

    def to_codec_error(self) -> CodecError:
        return CodecError(self.message, 501 if self.code == "UNIMPLEMENTED" else 400)


class _Reparse(Exception):
    """The json tier produced something RapidJSON may refuse (overflow): ask the exact parser."""


_MISSING = object()
