"""Shared widget plumbing: client resolution, the status line, PNG encoding, metadata shapes.

Everything here is plain Python/numpy so the widgets' heavy work can be tested headless. Model
outputs are read by ``tfserve_magic.outputs`` (the rule ``%%predict`` uses too).
"""

from __future__ import annotations

import functools
import html
import io
import struct
import zlib
from collections.abc import Mapping

import numpy as np


# ---------------------------------------------------------------------- client
def resolve_client(source, model=None, *, timeout=30.0, chunk_size=None):
    """A ``Client`` from a client-like object, a server/model name, or a URL.

    Anything with a ``predict`` method is used as it is (so tests and users can inject one).
    """
    if source is None:
        raise ValueError("a widget needs a client, a server/model name, or a URL")
    if hasattr(source, "predict") and not isinstance(source, str):
        return source
    if not isinstance(source, str):
        raise TypeError(
            f"expected a Client, a server/model name or a URL, got {type(source).__name__}"
        )
    from tfserve_magic.client import Client

    return Client(source, model, timeout=timeout, chunk_size=chunk_size)


def client_name(client) -> str:
    """A short human name for a client (model name, else its URL, else its type)."""
    for attr in ("model_name", "model", "name", "url", "base_url"):
        value = getattr(client, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(client).__name__


def predict_kwargs(version=None, label=None, signature_name=None) -> dict:
    """Only the keyword arguments that were given, so the client's defaults stay in charge."""
    kwargs = {}
    if version is not None:
        kwargs["version"] = int(version)
    if label is not None:
        kwargs["label"] = str(label)
    if signature_name:
        kwargs["signature_name"] = signature_name
    return kwargs


def target_text(version=None, label=None) -> str:
    """'v3', 'label stable' or 'latest' for headers and captions."""
    if version is not None:
        return f"v{version}"
    if label is not None:
        return f"label {label}"
    return "latest"


# ---------------------------------------------------------------------- status line
class StatusLine:
    """A visible one-line status (an ``HTML`` widget), because ipywidgets hides callback errors.

    ``offer(label, callback)`` adds one button after the message (e.g. "Start MLP again" when the
    server is gone); any later message takes the button away.
    """

    def __init__(self):
        import ipywidgets as w

        self.html = w.HTML(value="")
        self.action = w.Button(description="", button_style="warning",
                               layout=w.Layout(width="auto", display="none", margin="0 0 0 8px"))
        self.action.on_click(lambda _: self._on_action())
        self.widget = w.HBox([self.html, self.action], layout=w.Layout(align_items="center"))
        self.widget.add_class("tfserve-status")
        self._callback = None
        self.kind = "info"
        self.text = ""

    @property
    def value(self) -> str:
        return self.html.value

    @property
    def offered(self) -> str | None:
        """The label of the offered action, or None."""
        return self.action.description if self._callback is not None else None

    def _set(self, kind: str, text: str, color: str) -> None:
        self.kind, self.text = kind, text
        self.html.value = f'<span style="color:{color}">{html.escape(text)}</span>'
        self._callback = None
        self.action.layout.display = "none"

    def info(self, text: str) -> None:
        self._set("info", text, "#555")

    def ok(self, text: str) -> None:
        self._set("ok", text, "#1a7f37")

    def error(self, exc: BaseException | str, context: str | None = None) -> None:
        if isinstance(exc, BaseException):
            message = str(exc).strip() or type(exc).__name__
            if type(exc).__name__ not in ("ServingError", "ValueError"):
                message = f"{type(exc).__name__}: {message}"
        else:
            message = str(exc)
        if context:
            message = f"{context}: {message}"
        self._set("error", f"Error: {message}", "#c62828")

    def offer(self, label: str, callback) -> None:
        """Show a button after the current message that runs ``callback`` once."""
        self._callback = callback
        self.action.description = label
        self.action.layout.display = ""

    def _on_action(self) -> None:
        callback, self._callback = self._callback, None
        self.action.layout.display = "none"
        if callback is not None:
            callback()


def server_gone(exc: BaseException) -> bool:
    """True for a client error that means nothing listens at the server's address any more."""
    return (type(exc).__name__ == "ServingError" and getattr(exc, "status_code", 0) is None
            and "cannot connect" in str(exc))


def restart_and_retry(widget, retry) -> None:
    """Start the widget's server again (``widget.restart()`` -> handle), point the widget's
    clients at its address, and repeat what failed."""
    widget.status.info("starting the server again ...")
    try:
        handle = widget.restart()
    except Exception as exc:
        widget.status.error(exc, "could not start the server")
        return
    url = str(getattr(handle, "url", "") or "").rstrip("/")
    if url:
        for client in widget_clients(widget):
            if hasattr(client, "base_url") and client.base_url != url:
                client.base_url = url
    retry()


def widget_clients(widget) -> list:
    """The clients a widget sends requests through (its own, and its comparison targets')."""
    found = [widget.client]
    for side in ("a", "b"):
        target = getattr(widget, side, None)
        client = getattr(target, "client", None)
        if client is not None and all(client is not c for c in found):
            found.append(client)
    return found


def guarded(method):
    """Wrap a UI handler so an exception lands in ``self.status`` instead of vanishing.

    When the server is gone and the widget has a ``restart`` callable, the status line offers
    to start it again and then repeats the action. Set ``raise_errors = True`` on the widget
    (tests, debugging) to re-raise after reporting.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            self.status.error(exc, getattr(self, "error_context", None))
            if getattr(self, "restart", None) is not None and server_gone(exc):
                name = client_name(self.client)
                self.status.offer(f"Start {name} again",
                                  lambda: restart_and_retry(
                                      self, lambda: wrapper(self, *args, **kwargs)))
            if getattr(self, "raise_errors", False):
                raise
            return None

    return wrapper


# ---------------------------------------------------------------------- class names
def class_name(names, k: int) -> str:
    if names is not None and 0 <= k < len(names):
        return str(names[k])
    return str(k)


# ---------------------------------------------------------------------- images
def image_view(x: np.ndarray) -> np.ndarray | None:
    """The inputs as displayable images ``[N,H,W]`` or ``[N,H,W,3|4]``, or None if not images.

    Handles MNIST-like ``[N,28,28,1]``/``[N,28,28]``, flattened ``[N,784]``, and RGB(A) inputs.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        return None
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 4 and x.shape[-1] in (3, 4) and min(x.shape[1:3]) >= 8:
        return x
    if x.ndim == 3 and min(x.shape[1:]) >= 8:
        return x
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side >= 8 and side * side == x.shape[1]:
            return x.reshape(len(x), side, side)
    return None


def to_uint8(image: np.ndarray) -> np.ndarray:
    """0..1 floats, 0..255 numbers or uint8 to uint8 for display."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if lo < 0.0:  # standardized inputs: stretch to the full range
        values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    elif hi > 1.0 + 1e-6:
        values = values / 255.0
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """Encode a gray ``[H,W]`` or RGB(A) ``[H,W,3|4]`` image as PNG (numpy + zlib only)."""
    pixels = to_uint8(image)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    if pixels.ndim == 2:
        color_type, channels = 0, 1
    elif pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        color_type, channels = (2, 3) if pixels.shape[-1] == 3 else (6, 4)
    else:
        raise ValueError(f"cannot encode an image shaped {pixels.shape} as PNG")
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, width * channels)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def placeholder_png(side: int = 28, scale: int = 4) -> bytes:
    """A black square: what an image shows before there is anything to show (never a broken
    image icon)."""
    return png_bytes(np.zeros((side, side), np.uint8), scale=scale)


def thumbnail_scale(image: np.ndarray, target: int = 56) -> int:
    return max(1, int(round(target / max(image.shape[0], image.shape[1]))))


def figure_png(fig) -> bytes:
    """Render a matplotlib ``Figure`` with Agg (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------- metadata
def input_shape_from_metadata(metadata, signature_name=None):
    """The single input's shape (no batch dim) from ``Client.metadata()``, or None if unknown.

    Accepts the client's parsed form (signature -> {"inputs": {name: (dtype, shape)}}) and the
    raw TF Serving JSON (``{"metadata": {"signature_def": {"signature_def": ...}}}``).
    """
    name = signature_name or "serving_default"
    try:
        if isinstance(metadata, Mapping) and "metadata" not in metadata:
            inputs = metadata[name]["inputs"]
            if len(inputs) != 1:
                return None
            _, shape = next(iter(inputs.values()))
            dims = None if shape is None else [-1 if d is None else int(d) for d in shape]
        else:
            inputs = metadata["metadata"]["signature_def"]["signature_def"][name]["inputs"]
            if len(inputs) != 1:
                return None
            spec = next(iter(inputs.values()))
            dims = [int(d["size"]) for d in spec["tensor_shape"]["dim"]]
    except (KeyError, TypeError, ValueError, StopIteration):
        return None
    if not dims or any(d < 0 for d in dims[1:]):
        return None
    return tuple(dims[1:])
