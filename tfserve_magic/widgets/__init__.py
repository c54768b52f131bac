"""Interactive widgets that put a served model's predictions beside the ground truth.

Each widget takes a ``Client`` (or a server/model name, or a URL) and data, sends its predict
requests through the client, reports errors in its own status line, and keeps its logic in plain
methods so it can be driven (and tested) without a browser.
"""

from tfserve_magic.widgets.compare import CompareResult, VersionCompare
from tfserve_magic.widgets.draw import DrawDigit
from tfserve_magic.widgets.explorer import PredictionExplorer, confusion_matrix
from tfserve_magic.widgets.latency import LatencyView
from tfserve_magic.widgets.monitor import ServerMonitor
from tfserve_magic.widgets.raster import picture_to_mnist, rasterize

__all__ = [
    "CompareResult",
    "DrawDigit",
    "LatencyView",
    "PredictionExplorer",
    "ServerMonitor",
    "VersionCompare",
    "confusion_matrix",
    "picture_to_mnist",
    "rasterize",
]
