"""Floats as TF Serving writes them (WriteDecimal): %.6g when it reads back, else 9/17 digits.

format_float is the rule for one value; _format_floats applies it to whole arrays, vectorised.
"""

from __future__ import annotations

import math

import numpy as np


def format_float(v, dtype=np.float32) -> str:
    """TF Serving's WriteDecimal: %.6g if it round-trips, else %.9g (float) / %.17g (double)."""
    is_double = np.dtype(dtype) == np.float64
    v = float(v) if is_double else float(np.float32(v))
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    text = f"{v:.6g}"
    back = float(text)
    if (back if is_double else float(np.float32(back))) != v:
        text = ("%.17g" if is_double else "%.9g") % v
    if "." not in text and "e" not in text:
        text += ".0"
    return text


_POW10 = np.array([float(f"1e{k}") for k in range(23)])


def _six_digits_cannot_roundtrip(v32: np.ndarray) -> np.ndarray:
    """Float32 values whose %.6g text certainly does not read back as themselves.

    Lets those be written with %.9g straight away instead of formatting, parsing and formatting
    again. Worked out in float64 with margins; anything close to a tie or a float32 rounding
    boundary is left out (False), and then the exact check decides.
    """
    v = np.abs(v32.astype(np.float64))
    usable = np.isfinite(v) & (v >= 1e-17) & (v < 1e27)  # 10**k below stays exact (|k| <= 22)
    v = np.where(usable, v, 1.0)
    e = np.floor(np.log10(v))
    for _ in range(2):  # log10 can be one off next to powers of ten
        k = (5 - e).astype(np.int64)
        t = np.where(k >= 0, v * _POW10[np.clip(k, 0, 22)], v / _POW10[np.clip(-k, 0, 22)])
        e = e + (t >= 1e6) - (t < 1e5)
    k = (5 - e).astype(np.int64)
    t = np.where(k >= 0, v * _POW10[np.clip(k, 0, 22)], v / _POW10[np.clip(-k, 0, 22)])
    usable &= (t >= 1e5 + 1e-3) & (t < 1e6 - 1e-3) & (np.abs(t - np.floor(t) - 0.5) > 1e-4)
    m = np.rint(t)  # the six significant digits %.6g prints
    d = np.where(k >= 0, m / _POW10[np.clip(k, 0, 22)], m * _POW10[np.clip(-k, 0, 22)])
    a32 = np.abs(v32).astype(np.float32)
    up = np.nextafter(a32, np.float32(np.inf)).astype(np.float64)
    down = np.nextafter(a32, np.float32(0)).astype(np.float64)
    margin = d * 1e-15
    outside = (d > (v + up) / 2 + margin) | (d < (v + down) / 2 - margin)
    return usable & outside


_SMALL_OUTPUT = 256  # up to this many values, _format_few_floats (measured crossover ~400)


def _format_few_floats(flat: np.ndarray, values: list, is_double: bool, wide: str) -> list:
    """_format_floats for a few values: every one tries %.6g, read back in one numpy call
    (the vectorised pre-check and index bookkeeping cost more than they save here)."""
    texts = [f"{v:.6g}" for v in values]
    with np.errstate(all="ignore"):
        back = np.array(texts, dtype=np.float64)
        same = (back == flat) if is_double else (back.astype(np.float32) == flat)
        same &= np.isfinite(flat)
    for i in np.flatnonzero(~same).tolist():
        v = values[i]
        if v != v:
            texts[i] = "NaN"
        elif v in (math.inf, -math.inf):
            texts[i] = "-Infinity" if v < 0 else "Infinity"
        else:
            texts[i] = wide % v
    return [t if ("." in t or "e" in t or t[-1] in "yN") else t + ".0" for t in texts]


def _format_floats(arr: np.ndarray) -> list:
    """format_float over a float32/float64 array, vectorised where it counts."""
    is_double = arr.dtype == np.float64
    flat = arr.ravel()
    values = flat.astype(np.float64).tolist()
    if not values:
        return []
    wide = "%.17g" if is_double else "%.9g"
    if len(values) <= _SMALL_OUTPUT:
        return _format_few_floats(flat, values, is_double, wide)
    if is_double:
        texts = [f"{v:.6g}" for v in values]
        check = np.ones(len(values), dtype=bool)
    else:
        with np.errstate(all="ignore"):
            check = ~_six_digits_cannot_roundtrip(flat)
        texts = [("%.6g" if c else "%.9g") % v for v, c in zip(values, check.tolist())]
    finite = np.isfinite(flat)
    tried = np.flatnonzero(check & finite)  # the %.6g texts: do they read back exactly?
    with np.errstate(all="ignore"):
        back = np.array([texts[i] for i in tried.tolist()], dtype=np.float64)
        wanted = flat[tried]
        same = (back == wanted) if is_double else (back.astype(np.float32) == wanted)
    for i in tried[~same].tolist():
        texts[i] = wide % values[i]
    for i in np.flatnonzero(~finite).tolist():
        v = values[i]
        texts[i] = "NaN" if v != v else ("-Infinity" if v < 0 else "Infinity")
    return [t if ("." in t or "e" in t or t[-1] in "yN") else t + ".0" for t in texts]
