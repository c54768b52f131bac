"""Rasterization of strokes and pictures into MNIST-style 28x28 digits (pure numpy, no server)."""

from __future__ import annotations

import numpy as np
import pytest

from tfserve_magic.widgets import raster


def _bbox(image, threshold=0.05):
    rows = np.flatnonzero(image.max(axis=1) > threshold)
    cols = np.flatnonzero(image.max(axis=0) > threshold)
    return rows[0], rows[-1], cols[0], cols[-1]


def _center_of_mass(image):
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    total = image.sum()
    return (yy * image).sum() / total + 0.5, (xx * image).sum() / total + 0.5


def test_thick_line_covers_its_width_and_nothing_else():
    ink = raster.draw_strokes([[(20, 50), (80, 50)]], size=(100, 100), line_width=10)
    assert ink.shape == (100, 100) and ink.dtype == np.float32
    assert ink[50, 50] == 1.0  # on the line
    assert ink[46, 50] == 1.0 and ink[53, 50] == 1.0  # within the half width (5 px)
    assert ink[40, 50] == 0.0 and ink[60, 50] == 0.0  # beyond it
    assert ink[50, 10] == 0.0 and ink[50, 90] == 0.0  # past the round caps
    assert ink[50, 17] > 0.0  # the round cap reaches 5 px past the end point
    # anti-aliased edge: pixel coverage falls off over one pixel
    soft = raster.draw_strokes([[(20, 50.25), (80, 50.25)]], size=(100, 100), line_width=10)
    assert soft[55, 50] == pytest.approx(0.25)  # centre 55.5 is 5.25 px from the line
    assert soft[45, 50] == pytest.approx(0.75)


def test_vertical_stroke_becomes_a_centred_20px_tall_one():
    digit = raster.rasterize([[(140, 40), (140, 240)]], size=(280, 280), line_width=18)
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() >= 0.0 and digit.max() == pytest.approx(1.0)
    top, bottom, left, right = _bbox(digit)
    assert bottom - top + 1 == 20  # longest side scaled to 20 px
    assert right - left + 1 <= 3  # 218 px tall x 18 wide keeps its aspect: about 2 px
    cy, cx = _center_of_mass(digit)
    assert abs(cy - 14) <= 0.75 and abs(cx - 14) <= 0.75
    # white on black: the frame is background
    assert digit[0].max() == 0 and digit[:, 0].max() == 0


def test_aspect_ratio_is_kept_for_a_wide_shape():
    box = [(40, 100), (240, 100), (240, 200), (40, 200), (40, 100)]  # 200 x 100 rectangle
    digit = raster.rasterize([box], size=(280, 280), line_width=10)
    top, bottom, left, right = _bbox(digit)
    width, height = right - left + 1, bottom - top + 1
    assert width == 20
    assert 10 <= height <= 12  # (100 + 10) / (200 + 10) * 20 = 10.5
    # a hollow box: its inside stays dark
    assert digit[(top + bottom) // 2, (left + right) // 2] < 0.1


def test_centre_of_mass_not_bounding_box_decides_the_position():
    # a "7": heavy top bar, thin diagonal; the mass sits high, so the bbox moves down
    seven = [[(60, 40), (220, 40)], [(220, 40), (120, 250)]]
    heavy_top = [[(60, 40), (220, 40)], [(60, 50), (220, 50)], [(220, 40), (120, 250)]]
    a = raster.rasterize(seven, size=(280, 280), line_width=16)
    b = raster.rasterize(heavy_top, size=(280, 280), line_width=16)
    for digit in (a, b):
        cy, cx = _center_of_mass(digit)
        assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0
    assert _bbox(b)[0] >= _bbox(a)[0]  # more mass on top -> digit placed lower


def test_nothing_drawn_is_a_black_image_and_a_dot_is_a_blob():
    assert not raster.rasterize([], size=(280, 280)).any()
    assert not raster.rasterize([[]], size=(280, 280)).any()
    dot = raster.rasterize([[(100, 100)]], size=(280, 280), line_width=20)
    top, bottom, left, right = _bbox(dot)
    assert bottom - top + 1 == 20 and right - left + 1 == 20


def test_strokes_outside_the_canvas_are_clipped_not_an_error():
    digit = raster.rasterize([[(-50, 140), (140, 140)]], size=(280, 280), line_width=18)
    assert digit.any()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="canvas size"):
        raster.draw_strokes([[(1, 1)]], size=(0, 10))
    with pytest.raises(ValueError, match="line_width"):
        raster.draw_strokes([[(1, 1)]], line_width=0)


def test_area_resize_keeps_the_mean():
    rng = np.random.default_rng(0)
    image = rng.random((57, 31)).astype(np.float32)
    small = raster.resize_area(image, 20, 11)
    assert small.shape == (20, 11)
    assert small.mean() == pytest.approx(image.mean(), rel=1e-5)
    assert np.allclose(raster.resize_area(image, 57, 31), image, atol=1e-6)


def test_dark_on_light_pictures_are_inverted():
    digit = raster.rasterize([[(140, 40), (140, 240)], [(100, 240), (180, 240)]])
    paper = 1.0 - np.pad(digit, 10)  # black ink on white paper, in a bigger frame
    rgb = np.repeat(paper[..., None], 3, axis=-1)
    assert raster.is_dark_on_light(raster.to_grayscale(rgb))
    restored = raster.picture_to_mnist(rgb)
    assert not raster.is_dark_on_light(restored)
    # the same digit again, up to the one-pixel rounding of the mass centring
    best = max(
        np.corrcoef(np.roll(restored, (dy, dx), axis=(0, 1)).ravel(), digit.ravel())[0, 1]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    assert best > 0.95


def test_grayscale_handles_uint8_and_transparent_rgba():
    rgba = np.zeros((30, 30, 4), np.uint8)
    rgba[10:20, 14:16] = (0, 0, 0, 255)  # opaque black ink on a transparent background
    gray = raster.to_grayscale(rgba)
    assert gray[0, 0] == pytest.approx(1.0)  # transparent counts as white paper
    assert gray[15, 15] == pytest.approx(0.0)
    digit = raster.picture_to_mnist(rgba)
    assert _bbox(digit)[1] - _bbox(digit)[0] + 1 == 20
    with pytest.raises(ValueError, match="gray or RGB"):
        raster.to_grayscale(np.zeros((4, 4, 2)))


def test_decode_png_refuses_garbage():
    with pytest.raises(ValueError, match="not a readable PNG"):
        raster.decode_png(b"definitely not a png")
