"""How one example looks in a view: a thumbnail, a sentence cut to one line (the full text on
hover), or a row of feature names and values.

``Examples`` reads the inputs in any form ``tfserve_magic.inputs`` takes (an array, a list of
strings, a dict of arrays, a ``DataFrame``, a list of dicts) for display only; the request is
``inputs.prepare_inputs``'s job and slicing is ``inputs.take``'s.
"""

from __future__ import annotations

import html

import numpy as np

from tfserve_magic.inputs import as_text, named_columns
from tfserve_magic.widgets._common import image_view, png_bytes, thumbnail_scale

TEXT_CUT = 110  # characters of a sentence shown in a row; the rest is in the tooltip
FEATURES_SHOWN = 8  # named features shown in a row; the rest is in the tooltip
LINE_CHARS = 34  # characters of features that fit the 340 px line beside "+N more"
# one line per example in a table (the cut part ends in an ellipsis; the tooltip has it all)
_ONE_LINE = ("display:inline-block;max-width:340px;white-space:nowrap;overflow:hidden;"
             "text-overflow:ellipsis;vertical-align:middle")


def _number(value) -> str:
    if isinstance(value, (bytes, np.bytes_, str, np.str_)):
        return as_text(value)
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        return _number(flat[0]) if flat.size == 1 else f"[{', '.join(map(_number, flat[:4]))}…]"
    return str(value)


class Examples:
    """One example per index, whatever form the inputs came in (see the module docstring).

    ``kind``: "images", "text", "tabular" (named columns) or "values" (other arrays).
    """

    def __init__(self, x):
        self.columns: dict[str, np.ndarray] | None = None
        self.array: np.ndarray | None = None
        named = named_columns(x)  # ValueError for rows with different keys
        if named is not None:
            self.columns = {k: _column(v, k) for k, v in named.items()}
        elif isinstance(x, (list, tuple)) and x and all(isinstance(v, (str, bytes)) for v in x):
            self.array = np.asarray([as_text(v) for v in x], dtype=object)
        else:
            self.array = np.asarray(x)
        if self.columns is not None:
            if not self.columns:
                raise ValueError("the inputs have no columns")
            lengths = {k: len(v) for k, v in self.columns.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"the named inputs have different lengths: {lengths}")
            self.n = next(iter(lengths.values()))
            self.kind = "tabular"
            self.images = None
        else:
            if self.array.ndim == 0:
                raise ValueError("the inputs need one example per row (a batch dimension)")
            self.n = len(self.array)
            self.images = image_view(self.array)
            if self.array.dtype.kind in "USO":
                self.kind = "text"
            else:
                self.kind = "images" if self.images is not None else "values"
        if self.n == 0:
            raise ValueError("x must hold at least one input")

    def __len__(self) -> int:
        return self.n

    # ------------------------------------------------------------------ showing one example
    def text(self, i: int) -> str:
        """The whole example as plain text (a sentence, ``name=value`` pairs, or values)."""
        if self.columns is not None:
            return ", ".join(f"{k}={_number(v[i])}" for k, v in self.columns.items())
        value = self.array[i]
        if self.kind == "text":
            flat = np.asarray(value, dtype=object).reshape(-1)
            return " | ".join(as_text(v) for v in flat)
        flat = np.asarray(value).reshape(-1)
        shown = ", ".join(_number(v) for v in flat[:6].tolist())
        return shown + (f", … ({flat.size} values)" if flat.size > 6 else "")

    def cell_html(self, i: int) -> str:
        """The example in one table cell: the sentence cut (full text on hover), the feature
        names and values, or the first values."""
        full = self.text(i)
        tip = html.escape(full, quote=True)
        if self.columns is not None:
            items = list(self.columns.items())
            parts, used = [], 0
            for k, v in items[:FEATURES_SHOWN]:  # as many as the line holds, whole
                value = _number(v[i])
                if parts and used + len(k) + len(value) + 3 > LINE_CHARS:
                    break
                parts.append(f"<b>{html.escape(k)}</b>&nbsp;{html.escape(value)}")
                used += len(k) + len(value) + 3
            if len(items) > len(parts):
                parts.append(f"<i>+{len(items) - len(parts)} more</i>")
            return (f'<span class="tfserve-features" title="{tip}" style="{_ONE_LINE}">'
                    f'{" · ".join(parts)}</span>')
        if self.kind == "text":
            cut = full if len(full) <= TEXT_CUT else full[: TEXT_CUT - 1].rstrip() + "…"
            return (f'<span class="tfserve-text" title="{tip}" style="{_ONE_LINE}">'
                    f"{html.escape(cut)}</span>")
        return f'<code title="{tip}" style="{_ONE_LINE}">{html.escape(full)}</code>'

    def detail_html(self, i: int) -> str:
        """The whole example, large: a picture, the full sentence, or a table of features."""
        if self.images is not None:
            import base64

            image = self.images[i]
            data = base64.b64encode(png_bytes(image, scale=thumbnail_scale(image, 112)))
            return f'<img src="data:image/png;base64,{data.decode()}" alt="input #{i}">'
        if self.columns is not None:
            rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                           f"<td>{html.escape(_number(v[i]))}</td></tr>"
                           for k, v in self.columns.items())
            return f'<table style="font-size:12px">{rows}</table>'
        return (f'<div style="white-space:pre-wrap;max-width:820px">'
                f"{html.escape(self.text(i))}</div>")


def _column(values, name) -> np.ndarray:
    if isinstance(values, (list, tuple)) and values and all(
            isinstance(v, (str, bytes)) for v in values):
        return np.asarray([as_text(v) for v in values], dtype=object)
    array = np.asarray(values)
    if array.ndim == 0:
        raise ValueError(f"input {name!r} is one value; give one value per example")
    return array
