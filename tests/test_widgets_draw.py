"""DrawDigit against the real server: strokes -> 28x28 -> prediction, and the fallback path."""

from __future__ import annotations

import datetime
import io
import sys

import numpy as np
import pytest

from tfserve_magic.client import Client
from tfserve_magic.widgets import DrawDigit, rasterize
from tfserve_magic.widgets import draw as draw_module

# an "L": down, then right (canvas coordinates on the default 280x280 canvas)
L_STROKES = [[(90, 40), (90, 120), (90, 230)], [(90, 230), (200, 230)]]


@pytest.fixture(scope="module")
def client(mlp_server):
    with Client(mlp_server.url, "MLP", timeout=30) as c:
        yield c


def _draw(widget, strokes):
    for stroke in strokes:
        widget.on_down(*stroke[0])
        for point in stroke[1:]:
            widget.on_move(*point)
        widget.on_up(*stroke[-1])


def _mouse(widget, strokes):
    """Replay strokes as the browser's pad sends them: one state update per finished stroke
    (``set_state`` is what an incoming front-end message calls)."""
    for stroke in strokes:
        sent = list(widget.canvas.strokes) + [[list(p) for p in stroke]]
        widget.canvas.set_state({"strokes": sent})


def _direct(client, image):
    return np.asarray(client.predict(instances=image.reshape(1, 28, 28, 1)))[0]


def test_drawn_strokes_are_rasterized_and_sent_to_the_model(client):
    widget = DrawDigit(client, live=False)
    widget.raise_errors = True
    assert widget.canvas is not None  # anywidget is installed here
    assert "nothing drawn yet" in widget._repr_mimebundle_()["text/html"]
    _draw(widget, L_STROKES)
    assert widget.strokes == [[(90.0, 40.0), (90.0, 120.0), (90.0, 230.0)],
                              [(90.0, 230.0), (200.0, 230.0)]]
    image = widget.current_image()
    assert np.array_equal(image, rasterize(L_STROKES, size=(280, 280), line_width=18.0))
    assert widget.probabilities is None  # live prediction is off
    probs = widget.predict()
    assert probs.shape == (10,) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(probs, _direct(client, image), atol=1e-6)
    top = int(np.argmax(probs))
    assert widget.top_class() == top
    assert f"<b>{top}</b></span> {probs[top]:.1%}" in widget.top.value
    assert widget.bars.value.count("<div") == 10
    assert bytes(widget.preview.value).startswith(b"\x89PNG")
    # the strokes drawn from code are shown on the pad too
    assert widget.canvas.strokes == [[list(p) for p in s] for s in L_STROKES]
    assert widget.status.kind == "ok" and f"predicted {top}" in widget.status.text
    assert widget.latency.summary()["predict"]["count"] == 1
    saved = widget._repr_mimebundle_()  # what a saved notebook shows beside the live pad
    assert f"predicted <b>{top}</b>" in saved["text/html"] and f"{probs[top]:.3f}" in saved["text/html"]


def test_pad_strokes_from_the_browser_are_recorded_and_predicted_live(client):
    from tfserve_magic.widgets.pad import DrawPad

    widget = DrawDigit(client)  # live: predicts when a stroke ends
    assert isinstance(widget.canvas, DrawPad)
    # the pad keeps its own size (no CSS stretching) and ships its front end in the state
    state = widget.canvas.get_state()
    assert state["size"] == 280 and "pointerdown" in state["_esm"]
    placeholder = bytes(widget.preview.value)
    assert placeholder.startswith(b"\x89PNG")  # a black field, never an empty (broken) image
    _mouse(widget, [[(140, 40), (140, 140), (140, 240)]])
    assert widget.strokes == [[(140.0, 40.0), (140.0, 140.0), (140.0, 240.0)]]
    assert widget.status.kind == "ok", widget.status.value
    assert np.allclose(widget.probabilities, _direct(client, widget.current_image()), atol=1e-6)
    assert bytes(widget.preview.value) != placeholder
    widget.clear_button.click()
    assert widget.strokes == [] and widget.probabilities is None and widget.top.value == ""
    assert widget.canvas.strokes == []  # the pad is cleared in the browser too
    assert bytes(widget.preview.value) == placeholder


def test_predicting_nothing_says_so_in_the_status_line(client):
    widget = DrawDigit(client)
    widget.predict_button.click()
    assert widget.status.text == "Error: nothing to predict: draw a digit first"


def test_fallback_without_anywidget_picks_test_images(client, mnist, monkeypatch):
    monkeypatch.setitem(sys.modules, "anywidget", None)  # import anywidget -> ImportError
    monkeypatch.delitem(sys.modules, "tfserve_magic.widgets.pad", raising=False)
    assert draw_module.load_pad() is None
    x, y = mnist.x_test[:30], mnist.y_test[:30]
    widget = DrawDigit(client, x=x, y=y)
    assert widget.canvas is None
    assert "anywidget is not installed" in widget.message.value
    assert "pip install anywidget" in widget.message.value
    widget.picker.value = 7  # moving the slider predicts test image 7
    assert widget.status.kind == "ok", widget.status.value
    assert np.array_equal(widget.current_image(), x[7, :, :, 0])
    assert np.allclose(widget.probabilities, _direct(client, x[7]), atol=1e-6)
    assert f"true {y[7]}" in widget.top.value
    assert bytes(widget.fallback_image.value).startswith(b"\x89PNG")


def test_fallback_uploads_a_dark_on_light_png(client, mnist):
    from PIL import Image

    widget = DrawDigit(client, use_canvas=False)
    assert widget.canvas is None and widget.picker is None  # no test images given
    assert "use_canvas=False" in widget.message.value
    digit = mnist.x_test[3, :, :, 0]
    paper = np.pad(1.0 - digit, 12, constant_values=1.0)  # black ink on white, larger frame
    buffer = io.BytesIO()
    Image.fromarray((paper * 255).astype(np.uint8)).resize((104, 104)).save(buffer, "PNG")
    upload = {"name": "digit.png", "type": "image/png", "size": len(buffer.getvalue()),
              "content": memoryview(buffer.getvalue()),
              "last_modified": datetime.datetime.now(datetime.timezone.utc)}
    widget.upload.value = (upload,)  # what the FileUpload widget does after a pick
    assert widget.status.kind == "ok", widget.status.value
    image = widget.current_image()
    assert image.shape == (28, 28) and image.max() == pytest.approx(1.0)
    assert image[0].max() == 0.0  # white on black after inversion
    assert np.allclose(widget.probabilities, _direct(client, image), atol=1e-6)
    widget.upload.value = ({**upload, "content": memoryview(b"not a png")},)
    assert widget.status.text.startswith("Error: not a readable PNG image")


def test_a_stopped_server_shows_an_error_not_an_exception(serve, mlp_export):
    server = serve(mlp_export)
    widget = DrawDigit(server.url + "/v1/models/MLP", timeout=5, input_shape=(28, 28, 1))
    server.stop()
    _mouse(widget, L_STROKES)  # live prediction on mouse up fails
    assert widget.status.kind == "error"
    assert widget.status.text.startswith("Error: Request failed")
    assert "cannot connect" in widget.status.text
    assert widget.status.offered is None  # nothing to offer without a way to restart


def test_a_widget_whose_server_is_gone_offers_to_start_it_again(serve, mlp_export):
    """After Run All a notebook may have stopped the server: the widget offers a restart, the
    restart may come back on another port, and the failed prediction is repeated."""
    first = serve(mlp_export)
    started = []

    def restart():
        started.append(serve(mlp_export))  # a fresh server: a new free port
        return started[-1]

    widget = DrawDigit(first.url + "/v1/models/MLP", timeout=5, input_shape=(28, 28, 1),
                       restart=restart)
    first.stop()
    _mouse(widget, L_STROKES[:1])
    assert widget.status.kind == "error" and "cannot connect" in widget.status.text
    assert widget.status.offered == "Start MLP again"
    assert widget.status.action.layout.display != "none"
    widget.status.action.click()
    assert len(started) == 1
    assert widget.client.base_url == started[0].url
    assert widget.status.kind == "ok", widget.status.value
    assert widget.top_class() is not None
    assert widget.status.offered is None and widget.status.action.layout.display == "none"
