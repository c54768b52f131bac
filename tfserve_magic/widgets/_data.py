"""The inputs as people hold them, one example per index: images, sentences, named columns.

``Examples`` takes a numpy array, a list of strings, a dict of arrays, a pandas ``DataFrame`` or a
list of dicts; it slices them (``head``, ``take``), shows one example as HTML (a thumbnail, the
sentence cut with the full text on hover, or a row of feature names and values) and builds the
request the model's signature wants (``request``: columns by input name, ``[-1, 1]`` strings).
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np

from tfserve_magic.widgets._common import image_view, png_bytes, thumbnail_scale

TEXT_CUT = 110  # characters of a sentence shown in a row; the rest is in the tooltip
FEATURES_SHOWN = 8  # named features shown in a row; the rest is in the tooltip
# one line per example in a table (the cut part ends in an ellipsis; the tooltip has it all)
_ONE_LINE = ("display:inline-block;max-width:340px;white-space:nowrap;overflow:hidden;"
             "text-overflow:ellipsis;vertical-align:middle")


def _is_dataframe(x) -> bool:
    return type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "columns")


def _text(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _number(value) -> str:
    if isinstance(value, (bytes, np.bytes_, str, np.str_)):
        return _text(value)
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        return _number(flat[0]) if flat.size == 1 else f"[{', '.join(map(_number, flat[:4]))}…]"
    return str(value)


def head(x, n: int):
    """The first ``n`` examples of ``x`` in the form it came (each column of a dict sliced)."""
    if isinstance(x, Mapping):
        return {k: v[:n] for k, v in x.items()}
    if _is_dataframe(x):
        return x.iloc[:n]
    return x[:n]


class Examples:
    """One example per index, whatever form the inputs came in (see the module docstring).

    ``kind``: "images", "text", "tabular" (named columns) or "values" (other arrays).
    """

    def __init__(self, x):
        self.columns: dict[str, np.ndarray] | None = None
        self.array: np.ndarray | None = None
        if _is_dataframe(x):
            self.columns = {str(c): x[c].to_numpy() for c in x.columns}
        elif isinstance(x, Mapping):
            self.columns = {str(k): _column(v, k) for k, v in x.items()}
        elif isinstance(x, (list, tuple)) and x and all(isinstance(r, Mapping) for r in x):
            names = list(dict.fromkeys(k for row in x for k in row))
            for i, row in enumerate(x):
                missing = [k for k in names if k not in row]
                if missing:
                    raise ValueError(f"example {i} has no {', '.join(map(repr, missing))}: "
                                     "every dict needs the same keys")
            self.columns = {str(k): _column([row[k] for row in x], k) for k in names}
        elif isinstance(x, (list, tuple)) and x and all(isinstance(v, (str, bytes)) for v in x):
            self.array = np.asarray([_text(v) for v in x], dtype=object)
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
            return " | ".join(_text(v) for v in flat)
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
            parts = [f"<b>{html.escape(k)}</b>&nbsp;{html.escape(_number(v[i]))}"
                     for k, v in items[:FEATURES_SHOWN]]
            if len(items) > FEATURES_SHOWN:
                parts.append(f"<i>+{len(items) - FEATURES_SHOWN} more</i>")
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

    # ------------------------------------------------------------------ the request
    def request(self, metadata=None, signature_name: str | None = None):
        """The ``instances`` to send: columns matched to the signature's inputs by name
        (ValueError naming a missing or extra column), each shaped as the signature wants
        (a plain list of sentences for a ``[-1, 1]`` string input becomes one per row).

        TODO(merge): use inputs.prepare_inputs
        """
        inputs = _signature_inputs(metadata, signature_name)
        if self.columns is not None:
            columns = self.columns
            if inputs is not None:
                missing = [k for k in inputs if k not in columns]
                extra = [k for k in columns if k not in inputs]
                if len(inputs) == 1 and len(columns) > 1 and not missing:
                    extra = []  # one named input among several columns: send it alone
                if missing or extra:
                    words = []
                    if missing:
                        words.append(f"no column {', '.join(map(repr, missing))}")
                    if extra:
                        words.append(f"no input for the column {', '.join(map(repr, extra))}")
                    raise ValueError(f"the model's signature takes {', '.join(inputs)}; the data "
                                     f"has {'; '.join(words)}")
                columns = {k: columns[k] for k in inputs}
            return {k: _shaped(v, None if inputs is None else inputs[k])
                    for k, v in columns.items()}
        shape = None
        if inputs is not None and len(inputs) == 1:
            shape = next(iter(inputs.values()))
        return _shaped(self.array, shape)


def _column(values, name) -> np.ndarray:
    if isinstance(values, (list, tuple)) and values and all(
            isinstance(v, (str, bytes)) for v in values):
        return np.asarray([_text(v) for v in values], dtype=object)
    array = np.asarray(values)
    if array.ndim == 0:
        raise ValueError(f"input {name!r} is one value; give one value per example")
    return array


def _signature_inputs(metadata, signature_name) -> dict[str, tuple | None] | None:
    """Input name -> shape (None for unknown) of the signature in the client's metadata."""
    if not isinstance(metadata, Mapping):
        return None
    signature = metadata.get(signature_name or "serving_default")
    if not isinstance(signature, Mapping) or not isinstance(signature.get("inputs"), Mapping):
        return None
    return {str(k): (v[1] if isinstance(v, (tuple, list)) and len(v) == 2 else None)
            for k, v in signature["inputs"].items()}


def _shaped(values: np.ndarray, shape):
    """``values`` reshaped to the signature's rank where one trailing 1 is missing (or extra);
    strings as Python strings (JSON)."""
    array = np.asarray(values)
    if shape is not None and len(shape) >= 1:
        if array.ndim == len(shape) - 1 and shape[-1] == 1:
            array = array.reshape(*array.shape, 1)
        elif array.ndim == len(shape) + 1 and array.shape[-1] == 1:
            array = array.reshape(array.shape[:-1])
    if array.dtype.kind in "USO":
        return np.vectorize(_text, otypes=[object])(array).tolist() if array.size else []
    return array
