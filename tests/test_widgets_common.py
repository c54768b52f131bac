"""Widget plumbing without a server: PNG encoding, metadata shapes, status line, latency view
(model outputs: tests/test_outputs.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tfserve_magic.widgets import LatencyView, confusion_matrix
from tfserve_magic.widgets import _common as common
from tfserve_magic.widgets.compare import compare_predictions


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def test_png_encoder_round_trips_gray_rgb_and_rgba():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    assert np.array_equal(_decode(common.png_bytes(gray)), gray)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    assert np.array_equal(_decode(common.png_bytes(rgb)), rgb)
    rgba = rng.integers(0, 256, (3, 3, 4), dtype=np.uint8)
    assert np.array_equal(_decode(common.png_bytes(rgba)), rgba)
    big = _decode(common.png_bytes(gray, scale=3))
    assert big.shape == (21, 15) and np.array_equal(big[::3, ::3], gray)
    floats = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert _decode(common.png_bytes(floats)).tolist() == [[0, 128, 255]]
    with pytest.raises(ValueError, match="cannot encode"):
        common.png_bytes(np.zeros((2, 2, 2)))


def test_image_view_recognises_image_shapes_only():
    assert common.image_view(np.zeros((5, 28, 28, 1))).shape == (5, 28, 28)
    assert common.image_view(np.zeros((5, 32, 32, 3))).shape == (5, 32, 32, 3)
    assert common.image_view(np.zeros((5, 784))).shape == (5, 28, 28)
    assert common.image_view(np.zeros((5, 4))) is None  # tabular
    assert common.image_view(np.zeros((5, 3, 3))) is None  # too small to be a picture
    assert common.image_view(np.array([["a"], ["b"]])) is None


def test_input_shape_from_metadata():
    parsed = {"serving_default": {"inputs": {"x": ("float32", (None, 28, 28, 1))}}}
    assert common.input_shape_from_metadata(parsed) == (28, 28, 1)
    raw = {"metadata": {"signature_def": {"signature_def": {"serving_default": {"inputs": {
        "x": {"tensor_shape": {"dim": [{"size": "-1"}, {"size": "784"}]}}}}}}}}
    assert common.input_shape_from_metadata(raw) == (784,)
    assert common.input_shape_from_metadata({"other": {}}) is None


def test_confusion_matrix_and_comparison_numbers_equal_a_direct_count():
    from sklearn.metrics import confusion_matrix as sk_confusion

    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 300)
    pred_a = np.where(rng.random(300) < 0.8, y, rng.integers(0, 5, 300))
    pred_b = np.where(rng.random(300) < 0.6, y, rng.integers(0, 5, 300))
    counts = confusion_matrix(y, pred_a, 5)
    assert np.array_equal(counts, sk_confusion(y, pred_a, labels=range(5)))
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix([0, 7], [0, 1], 5)
    result = compare_predictions(y, pred_a, pred_b)
    assert result.accuracy_a == pytest.approx(np.mean(pred_a == y))
    assert result.agreement == pytest.approx(np.mean(pred_a == pred_b))
    assert result.disagreements.tolist() == np.flatnonzero(pred_a != pred_b).tolist()
    split = np.concatenate([result.a_right_b_wrong, result.b_right_a_wrong, result.both_wrong])
    assert sorted(split.tolist()) == result.disagreements.tolist()


class _Handlers:
    def __init__(self):
        self.status = common.StatusLine()
        self.raise_errors = False

    @common.guarded
    def fail(self):
        raise RuntimeError("boom <b>")


def test_guarded_handlers_report_errors_in_the_status_line():
    widget = _Handlers()
    assert widget.fail() is None
    assert widget.status.kind == "error"
    assert widget.status.text == "Error: RuntimeError: boom <b>"
    assert "boom &lt;b&gt;" in widget.status.value  # escaped HTML
    widget.raise_errors = True
    with pytest.raises(RuntimeError):
        widget.fail()


def test_resolve_client_refuses_what_is_not_a_client():
    with pytest.raises(TypeError, match="server/model name or a URL"):
        common.resolve_client(42)
    with pytest.raises(ValueError):
        common.resolve_client(None)


def test_latency_view_keeps_a_bounded_history_and_plots_it():
    view = LatencyView(maxlen=5)
    assert bytes(view.image.value) == b"" and view.image.layout.display == "none"
    view.record(0.002, series="A", t=99.0)  # one request: its number, no plot with one dot
    assert "A: last 2.0 ms (n=1)" in view.summary_line.value
    assert view.image.layout.display == "none"
    for k in range(8):
        view.record(0.001 * (k + 1), series="A" if k % 2 else "B", t=100.0 + k)
    view.record(None)  # clients without timing are ignored
    assert len(view.samples) == 5
    stats = view.summary()
    assert stats["A"]["count"] + stats["B"]["count"] == 5
    assert stats["A"]["last"] == pytest.approx(0.008)
    assert bytes(view.image.value).startswith(b"\x89PNG")
    assert view.image.layout.display != "none"
    assert "A: last 8.0 ms" in view.summary_line.value
    with pytest.raises(ValueError):
        view.record(-1.0)
    view.clear()
    assert view.summary() == {} and bytes(view.image.value) == b""
    assert view.image.layout.display == "none"


def test_latency_plot_of_a_thousand_requests_counts_requests():
    from PIL import Image

    view = LatencyView(maxlen=1000, render=False)  # one picture at the end, not 1000
    rng = np.random.default_rng(0)
    for k in range(1000):
        view.record(0.01 + 0.001 * rng.random(), series="A" if k % 2 else "B", t=float(k))
    view.render()
    assert "(n=500)" in view.summary_line.value
    png = bytes(view.image.value)
    assert png.startswith(b"\x89PNG")
    width, height = Image.open(io.BytesIO(png)).size
    assert (width, height) == (960, 300)  # drawn at 2x for a 480x150 px plot
