"""DrawDigit: draw a digit, see the served model's class probabilities.

The pad (``pad.DrawPad``, an anywidget) only paints the ink and sends each finished stroke; the
strokes are kept in Python (lists of canvas points) and rasterized here into a 28x28 MNIST-style
image, so the widget works headless and in tests. With ``use_canvas=False`` (or without
anywidget) the widget lets you pick a test image or upload a PNG instead.
"""

from __future__ import annotations

import html

import numpy as np

from tfserve_magic.outputs import class_labels, read_outputs, require_classifier
from tfserve_magic.widgets import raster
from tfserve_magic.widgets._common import (
    StatusLine,
    class_name,
    client_name,
    guarded,
    image_view,
    input_shape_from_metadata,
    placeholder_png,
    png_bytes,
    predict_kwargs,
    resolve_client,
    target_text,
)
from tfserve_magic.widgets._static import StaticSummary
from tfserve_magic.widgets.latency import LatencyView

ENABLE_HINT = (
    "To draw with the mouse: <code>pip install anywidget</code> (a dependency of tfserve-magic) "
    "and restart the kernel."
)
PREVIEW_SCALE = 4  # the 28x28 model input is shown at 112x112


def load_pad():
    """The ``DrawPad`` class, or None when anywidget cannot be imported."""
    try:
        from tfserve_magic.widgets.pad import DrawPad
    except ImportError:
        return None
    return DrawPad


class DrawDigit(StaticSummary):
    """Draw (or pick/upload) a digit and show the model's probabilities and top class.

    Plain methods for scripts and tests: ``on_down/on_move/on_up(x, y)`` (a stroke drawn from
    code), ``clear()``, ``current_image()``, ``predict()``, and in fallback mode ``pick(i)`` and
    ``load_png(data)``. ``restart``: an optional callable that starts the server again and
    returns its handle (``%tfserve draw`` passes one); the widget offers it when the server is gone.
    """

    static_title = "Draw a digit"

    def __init__(self, client, *, model=None, x=None, y=None, version=None, label=None,
                 signature_name=None, class_names=None, use_canvas=None, canvas_size: int = 280,
                 line_width: float = 18.0, input_shape=None, timeout: float = 30.0,
                 latency: LatencyView | None = None, live: bool = True, restart=None):
        import ipywidgets as w

        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        self.client = resolve_client(client, model, timeout=timeout)
        self.version, self.label, self.signature_name = version, label, signature_name
        self.class_names = list(class_names) if class_names is not None else None
        self.canvas_size = (int(canvas_size), int(canvas_size))
        self.line_width = float(line_width)
        self.raise_errors = False
        self.restart = restart
        self.strokes: list[list[tuple[float, float]]] = []
        self._drawing = False
        self._syncing = False
        self.probabilities: np.ndarray | None = None
        self.picked_image: np.ndarray | None = None
        self.picked_label: int | None = None

        self.x = None if x is None else np.asarray(x)
        self.y = None if y is None else class_labels(y, None if x is None else len(self.x))
        self.images = image_view(self.x) if self.x is not None else None
        if self.x is not None and self.images is None:
            raise ValueError(f"x must hold images, got shape {self.x.shape}")
        self.input_shape = tuple(input_shape) if input_shape is not None else (
            tuple(self.x.shape[1:]) if self.x is not None else None)
        self._check_input_shape()
        # models trained on 0..255 pixels get 0..255 pixels
        self.pixel_scale = 255.0 if self.x is not None and float(self.x.max()) > 1.5 else 1.0

        self.status = StatusLine()
        self.latency = latency if latency is not None else LatencyView(title="predict latency")
        self.header = w.HTML(value=f"<b>Draw a digit</b> · {html.escape(client_name(self.client))}"
                                   f" ({target_text(version, label)})")
        small = w.Layout(width="auto")
        self.predict_button = w.Button(description="Predict", button_style="primary",
                                       layout=small)
        self.clear_button = w.Button(description="Clear", icon="eraser", layout=small)
        self.live = w.Checkbox(value=bool(live), description="predict as you go", indent=False,
                               layout=w.Layout(width="auto", margin="0 0 0 8px"))
        self.predict_button.on_click(lambda _: self._on_predict())
        self.clear_button.on_click(lambda _: self._on_clear())
        self.top = w.HTML(value="")
        self.bars = w.HTML(value="")
        side = raster.MNIST_SIDE * PREVIEW_SCALE
        # a black 28x28 field until the first prediction: no empty (broken) image
        self.preview = w.Image(value=placeholder_png(raster.MNIST_SIDE, PREVIEW_SCALE),
                               format="png",
                               layout=w.Layout(width=f"{side}px", height=f"{side}px",
                                               border="1px solid #888", flex="none"))
        self.message = w.HTML(value="")

        pad_class = None if use_canvas is False else load_pad()
        self.canvas = None
        self.picker = None
        self.upload = None
        if pad_class is not None:
            self.canvas = pad_class(size=self.canvas_size[0], line_width=self.line_width,
                                    layout=w.Layout(flex="none"))
            self.canvas.observe(self._on_pad_strokes, "strokes")
            source = self.canvas
            self.message.layout.display = "none"  # the status line says what to do
        else:
            source = self._build_fallback(w, asked_off=use_canvas is False)
        buttons = w.HBox([self.predict_button, self.clear_button, self.live],
                         layout=w.Layout(align_items="center"))
        left = w.VBox([source, buttons], layout=w.Layout(flex="none", margin="0 24px 0 0"))
        right = w.VBox([w.HTML("<small style='color:#555'>model input (28x28)</small>"),
                        self.preview, self.top, self.bars], layout=w.Layout(flex="none"))
        self.widget = w.VBox([self.header, self.status.widget, self.message,
                              w.HBox([left, right], layout=w.Layout(flex_flow="row wrap")),
                              self.latency.widget],
                             layout=w.Layout(max_width="880px"))
        self.widget.add_class("tfserve-draw")
        self.top.add_class("tfserve-top")
        self.status.info("draw a digit with the mouse or a finger; the model sees the 28x28 "
                         "image on the right" if self.canvas is not None
                         else "pick or upload a digit")

    # ------------------------------------------------------------------ building
    def _sync_pad(self) -> None:
        """Show Python's strokes on the pad (code-drawn strokes, Clear)."""
        if self.canvas is None:
            return
        self._syncing = True
        try:
            self.canvas.strokes = [[list(p) for p in stroke] for stroke in self.strokes]
        finally:
            self._syncing = False

    @guarded
    def _on_pad_strokes(self, change) -> None:
        """The browser finished a stroke (or cleared): take its strokes, predict when live."""
        if self._syncing:
            return
        old = len(self.strokes)
        self.strokes = [[(float(x), float(y)) for x, y in stroke] for stroke in change["new"]]
        self._drawing = False
        if self.strokes and len(self.strokes) > old and self.live.value:
            self._on_predict()  # guarded on its own: a retry repeats the prediction

    def _build_fallback(self, w, asked_off: bool):
        why = ("Drawing is off (<code>use_canvas=False</code>)." if asked_off
               else "Drawing is not available: anywidget is not installed.")
        self.message.value = f"<small>{why} {ENABLE_HINT}</small>"
        parts = []
        if self.images is not None:
            self.picker = w.IntSlider(value=0, min=0, max=len(self.images) - 1,
                                      description="test image", continuous_update=False)
            self.picker.observe(self._on_pick, "value")
            parts.append(self.picker)
        self.upload = w.FileUpload(accept=".png,image/png", multiple=False,
                                   description="Upload PNG")
        self.upload.observe(self._on_upload, "value")
        parts.append(self.upload)
        self.fallback_image = w.Image(format="png", layout=w.Layout(width="140px"))
        parts.append(self.fallback_image)
        return w.VBox(parts)

    # ------------------------------------------------------------------ strokes
    def on_down(self, x, y) -> None:
        """Start a stroke at canvas point (x, y)."""
        self._drawing = True
        self.strokes.append([(float(x), float(y))])

    def on_move(self, x, y) -> None:
        """Extend the current stroke (ignored while no button is held)."""
        if not self._drawing or not self.strokes:
            return
        last = self.strokes[-1][-1]
        point = (float(x), float(y))
        if point == last:
            return
        self.strokes[-1].append(point)

    def on_up(self, x=None, y=None) -> None:
        """End the stroke; with "predict as you go" on, predict right away."""
        if not self._drawing:
            return
        if x is not None and y is not None:
            self.on_move(x, y)
        self._drawing = False
        self._sync_pad()
        if self.live.value:
            self.predict()

    def clear(self) -> None:
        """Forget the strokes (or the picked image) and the last prediction."""
        self.strokes = []
        self._drawing = False
        self.picked_image, self.picked_label = None, None
        self.probabilities = None
        self._sync_pad()
        self.top.value = ""
        self.bars.value = ""
        self.preview.value = placeholder_png(raster.MNIST_SIDE, PREVIEW_SCALE)
        self.status.info("cleared")

    # ------------------------------------------------------------------ fallback inputs
    def pick(self, index: int) -> None:
        """Use test image ``index`` of ``x`` (the fallback's slider does this)."""
        if self.images is None:
            raise ValueError("no test images: pass x= (and y=) to pick one")
        index = int(index)
        if not 0 <= index < len(self.images):
            raise IndexError(f"test image {index} is not in 0..{len(self.images) - 1}")
        self.picked_image = raster.to_grayscale(self.images[index])
        self.picked_label = int(self.y[index]) if self.y is not None else None
        self._show_fallback_image()
        if self.live.value:
            self.predict()

    def load_png(self, data: bytes) -> None:
        """Use an uploaded PNG: grayscale, dark-on-light inverted, MNIST-centred 28x28."""
        self.picked_image = raster.picture_to_mnist(raster.decode_png(data))
        self.picked_label = None
        self._show_fallback_image()
        if self.live.value:
            self.predict()

    def _show_fallback_image(self) -> None:
        if self.upload is not None:
            self.fallback_image.value = png_bytes(self.picked_image, scale=5)

    # ------------------------------------------------------------------ prediction
    def current_image(self) -> np.ndarray | None:
        """The 28x28 float image the model will see, or None when there is nothing yet."""
        if self.canvas is not None and self.strokes:
            return raster.rasterize(self.strokes, size=self.canvas_size,
                                    line_width=self.line_width)
        if self.picked_image is not None:
            return self.picked_image
        if self.strokes:  # strokes fed by hand in fallback mode still count
            return raster.rasterize(self.strokes, size=self.canvas_size,
                                    line_width=self.line_width)
        return None

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """One instance shaped like the model's input (``[1, *input_shape]``)."""
        shape = self._input_shape()
        image = np.asarray(image, np.float32) * self.pixel_scale
        if int(np.prod(shape)) == image.size:
            return image.reshape((1,) + shape)
        if len(shape) == 3 and shape[-1] == 3 and shape[0] * shape[1] == image.size:
            return np.repeat(image.reshape(shape[0], shape[1], 1), 3, axis=-1)[None]
        raise ValueError(f"the model expects inputs shaped {shape}; this widget draws "
                         f"{image.shape[0]}x{image.shape[1]} digits")

    def _check_input_shape(self) -> None:
        """Refuse up front a model that cannot take a drawn 28x28 digit (e.g. tabular inputs)."""
        from tfserve_magic.client import ServingError

        try:
            shape = self._input_shape()
        except (ServingError, OSError):  # not answering now: asked again at the first predict
            self.input_shape = None
            return
        side = raster.MNIST_SIDE
        pixels = side * side
        if int(np.prod(shape)) == pixels or (
            len(shape) == 3 and shape[-1] == 3 and shape[0] * shape[1] == pixels
        ):
            return
        raise ValueError(
            f"{client_name(self.client)} takes inputs shaped {list(shape)}, not {side}x{side} "
            f"images: the draw widget needs a digit classifier (e.g. [{side},{side},1] or "
            f"[{pixels}]); for other models use %predict or %tfserve explore"
        )

    def _input_shape(self) -> tuple:
        if self.input_shape is None:
            shape = None
            metadata = getattr(self.client, "metadata", None)
            if metadata is not None:
                kwargs = predict_kwargs(self.version, self.label)
                shape = input_shape_from_metadata(metadata(**kwargs), self.signature_name)
            self.input_shape = shape or (28, 28, 1)
        return self.input_shape

    def predict(self) -> np.ndarray:
        """Send the current image; update the bars and the top class; return probabilities."""
        image = self.current_image()
        if image is None or not image.any():
            raise ValueError("nothing to predict: draw a digit first" if self.canvas is not None
                             else "nothing to predict: pick a test image or upload a PNG")
        self.preview.value = png_bytes(image, scale=PREVIEW_SCALE)
        prediction = self.client.predict(
            instances=self.model_input(image),
            **predict_kwargs(self.version, self.label, self.signature_name),
        )
        latency = getattr(prediction, "latency_s", None)
        self.latency.record(latency, series="predict")
        reading = require_classifier(read_outputs(prediction, self.y))
        if reading.scores is None:
            raise ValueError("the model returned class ids, not scores; the bars need scores")
        self.probabilities = reading.probabilities[0]
        self._render_probabilities()
        took = f" in {latency * 1e3:.0f} ms" if latency is not None else ""
        self.status.ok(f"predicted {self.top_class_name()}{took}")
        return self.probabilities

    def top_class(self) -> int | None:
        return None if self.probabilities is None else int(np.argmax(self.probabilities))

    def top_class_name(self) -> str:
        top = self.top_class()
        return "" if top is None else class_name(self.class_names, top)

    def _render_probabilities(self) -> None:
        probs = self.probabilities
        top = int(np.argmax(probs))
        truth = ""
        if self.picked_label is not None and self.picked_image is not None and not self.strokes:
            mark = "✓" if self.picked_label == top else "✗"
            true_name = html.escape(class_name(self.class_names, self.picked_label))
            truth = f" · true {true_name} {mark}"
        self.top.value = (f'<span style="font-size:28px"><b>'
                          f"{html.escape(class_name(self.class_names, top))}</b></span> "
                          f"{probs[top]:.1%}{truth}")
        rows = []
        for k, p in enumerate(probs):
            color = "#1f77b4" if k == top else "#9ecae1"
            rows.append(
                f'<div style="display:flex;align-items:center;font-size:11px;height:14px">'
                f'<span style="width:40px">{html.escape(class_name(self.class_names, k))}</span>'
                f'<span style="display:inline-block;background:{color};height:10px;'
                f'width:{p * 150:.0f}px"></span><span style="margin-left:4px">{p:.1%}</span>'
                f"</div>"
            )
        self.bars.value = "".join(rows)

    # ------------------------------------------------------------------ handlers
    @guarded
    def _on_predict(self) -> None:
        self.predict()

    @guarded
    def _on_clear(self) -> None:
        self.clear()

    @guarded
    def _on_pick(self, change) -> None:
        self.pick(change["new"])

    @guarded
    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[-1] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        self.load_png(bytes(item["content"]))

    def summary_html(self) -> str:
        """What a saved notebook shows: the model and the last drawing's top classes."""
        target = html.escape(client_name(self.client))
        if self.probabilities is None:
            return f"<b>Draw a digit</b> for {target}: nothing drawn yet."
        order = np.argsort(self.probabilities)[::-1][:3]
        rows = "".join(
            f"<tr><td>{html.escape(class_name(self.class_names, int(k)))}</td>"
            f"<td style='text-align:right'>{self.probabilities[k]:.3f}</td></tr>" for k in order)
        return (f"<b>Draw a digit</b> for {target}: predicted "
                f"<b>{html.escape(self.top_class_name())}</b>"
                f"<table style='margin-top:4px'><tr><th>class</th><th>probability</th></tr>"
                f"{rows}</table>")
