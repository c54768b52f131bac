"""DrawPad: the drawing surface of DrawDigit, an anywidget with a small bundled ES module.

anywidget ships the front end inside the widget's own state, so the pad renders in JupyterLab,
Notebook 7, VS Code and Colab without a front-end extension or a CDN. The browser only paints the
ink and sends each finished stroke; rasterizing happens in Python (``raster.rasterize``).
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

_ESM = Path(__file__).with_name("static") / "draw.js"


class DrawPad(anywidget.AnyWidget):
    """A square black pad; ``strokes`` is a list of strokes, each a list of ``[x, y]`` points
    in canvas pixels (x right, y down). The browser appends a stroke when the pen lifts;
    setting ``strokes`` from Python repaints the pad (``[]`` clears it)."""

    _esm = _ESM
    strokes = traitlets.List([]).tag(sync=True)
    size = traitlets.Int(280).tag(sync=True)
    line_width = traitlets.Float(18.0).tag(sync=True)
