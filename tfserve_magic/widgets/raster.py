"""Strokes and pictures to MNIST-style 28x28 digits, in numpy only (no canvas, no browser).

MNIST's own preprocessing: the digit is cropped to its bounding box, scaled so its longer side is
20 px (aspect kept, anti-aliased), and pasted into a 28x28 field so that its centre of mass sits
at the centre. Ink is white (1.0) on black (0.0).
"""

from __future__ import annotations

import numpy as np

MNIST_SIDE = 28
DIGIT_BOX = 20


def draw_strokes(strokes, size=(280, 280), line_width: float = 18.0) -> np.ndarray:
    """Paint polylines (canvas coordinates, x right, y down) as anti-aliased thick lines.

    Returns a ``[H, W]`` float32 ink map in 0..1. A stroke of one point is a round dot.
    """
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"canvas size must be positive, got {size}")
    if line_width <= 0:
        raise ValueError(f"line_width must be positive, got {line_width}")
    ink = np.zeros((height, width), np.float32)
    radius = line_width / 2.0
    for stroke in strokes:
        points = np.asarray(list(stroke), dtype=np.float64).reshape(-1, 2)
        if len(points) == 0:
            continue
        if len(points) == 1:
            points = np.vstack([points, points])
        for start, end in zip(points[:-1], points[1:]):
            _paint_segment(ink, start, end, radius)
    return ink


def _paint_segment(ink: np.ndarray, start, end, radius: float) -> None:
    """Max-blend a capsule (segment thickened by ``radius``) into ``ink``, 1 px soft edge."""
    height, width = ink.shape
    reach = radius + 1.0
    x0 = max(int(np.floor(min(start[0], end[0]) - reach)), 0)
    x1 = min(int(np.ceil(max(start[0], end[0]) + reach)) + 1, width)
    y0 = max(int(np.floor(min(start[1], end[1]) - reach)), 0)
    y1 = min(int(np.ceil(max(start[1], end[1]) + reach)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    # pixel centres of the affected window
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    dx, dy = end[0] - start[0], end[1] - start[1]
    length_sq = dx * dx + dy * dy
    if length_sq == 0.0:
        t = 0.0
    else:
        t = np.clip(((px - start[0]) * dx + (py - start[1]) * dy) / length_sq, 0.0, 1.0)
    distance = np.hypot(px - (start[0] + t * dx), py - (start[1] + t * dy))
    coverage = np.clip(radius + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    window = ink[y0:y1, x0:x1]
    np.maximum(window, coverage, out=window)


def _area_weights(source: int, target: int) -> np.ndarray:
    """``[target, source]`` matrix averaging source cells over each target cell (exact areas)."""
    edges = np.linspace(0.0, source, target + 1)
    weights = np.zeros((target, source), np.float64)
    for i in range(target):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), source)):
            weights[i, j] = min(hi, j + 1) - max(lo, j)
        weights[i] /= hi - lo
    return weights


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Anti-aliased resize by area averaging (also fine for enlarging small crops)."""
    rows = _area_weights(image.shape[0], height)
    cols = _area_weights(image.shape[1], width)
    return (rows @ image.astype(np.float64) @ cols.T).astype(np.float32)


def center_digit(ink: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Crop, scale the longer side to 20 px, centre by mass in 28x28 (white on black)."""
    ink = np.asarray(ink, dtype=np.float32)
    if ink.ndim != 2:
        raise ValueError(f"expected a 2-D ink map, got shape {ink.shape}")
    rows = np.flatnonzero(ink.max(axis=1) > threshold)
    cols = np.flatnonzero(ink.max(axis=0) > threshold)
    out = np.zeros((MNIST_SIDE, MNIST_SIDE), np.float32)
    if len(rows) == 0:
        return out
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    factor = DIGIT_BOX / max(h, w)
    new_h = max(1, int(round(h * factor)))
    new_w = max(1, int(round(w * factor)))
    digit = np.clip(resize_area(crop, new_h, new_w), 0.0, 1.0)
    # centre of mass of the scaled digit, placed on the field's centre (14, 14)
    total = float(digit.sum())
    if total <= 0:
        return out
    yy, xx = np.mgrid[0:new_h, 0:new_w]
    com_y = float((yy * digit).sum() / total) + 0.5
    com_x = float((xx * digit).sum() / total) + 0.5
    top = int(round(MNIST_SIDE / 2 - com_y))
    left = int(round(MNIST_SIDE / 2 - com_x))
    top = min(max(top, 0), MNIST_SIDE - new_h)  # never cut the digit off
    left = min(max(left, 0), MNIST_SIDE - new_w)
    out[top : top + new_h, left : left + new_w] = digit
    peak = float(out.max())
    if peak > 0:
        out /= peak
    return out


def rasterize(strokes, size=(280, 280), line_width: float = 18.0) -> np.ndarray:
    """Strokes drawn on a ``size=(W, H)`` canvas -> ``[28, 28]`` float32 MNIST digit in 0..1."""
    return center_digit(draw_strokes(strokes, size=size, line_width=line_width))


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """``[H,W]``, ``[H,W,1]``, RGB or RGBA (alpha composited on white) -> ``[H,W]`` in 0..1."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif image.dtype.kind in "iu":
        image = image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    else:
        image = image.astype(np.float32)
        if image.size and image.max() > 1.0 + 1e-6:
            image = image / 255.0
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        alpha = image[..., 3:4]
        image = image[..., :3] * alpha + (1.0 - alpha)  # transparent = white paper
    if image.ndim == 3 and image.shape[-1] == 3:
        image = image @ np.array([0.299, 0.587, 0.114], np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a gray or RGB(A) picture, got shape {image.shape}")
    return np.clip(image, 0.0, 1.0)


def is_dark_on_light(gray: np.ndarray) -> bool:
    """True when the background (the border pixels) is light, i.e. ink darker than paper."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 0.5


def picture_to_mnist(image: np.ndarray) -> np.ndarray:
    """Any picture of a digit -> ``[28, 28]`` float32 white-on-black, MNIST-centred."""
    gray = to_grayscale(image)
    if is_dark_on_light(gray):
        gray = 1.0 - gray
    # drop faint background so the bounding box finds the digit, not paper texture
    gray = np.where(gray > 0.1, gray, 0.0).astype(np.float32)
    return center_digit(gray)


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> array (matplotlib's reader; float 0..1 for PNG)."""
    import io

    import matplotlib.image as mpimg

    try:
        return mpimg.imread(io.BytesIO(bytes(data)), format="png")
    except Exception as exc:  # PIL/matplotlib raise several types for bad data
        raise ValueError(f"not a readable PNG image: {exc}") from None
