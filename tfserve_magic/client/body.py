"""The JSON predict body before it is sent: rows (``instances``) or columns (``inputs``).

``RowBatch`` normalises the row format so the REST client can send it in chunks;
``build_predict_body`` is the whole body, which ``%%predict --show`` prints for either protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tfserve_magic.results import describe_value

__all__ = ["RowBatch", "build_predict_body", "with_signature"]


def build_predict_body(instances=None, inputs=None, *, signature_name=None) -> dict:
    """The whole predict request ``predict`` sends (before chunking), as a dict."""
    if (instances is None) == (inputs is None):
        raise ValueError("pass exactly one of instances= (row format) or inputs= (columnar)")
    if inputs is not None:
        return with_signature({"inputs": inputs}, signature_name)
    rows = RowBatch(instances)
    everything = rows.data if rows.named is None else rows.slice(0, len(rows))
    return with_signature({"instances": everything}, signature_name)


def with_signature(body: dict, signature_name: str | None) -> dict:
    """``body`` with ``signature_name`` first, when one is named."""
    if signature_name:
        return {"signature_name": signature_name, **body}
    return body


class RowBatch:
    """Normalised ``instances``: something with a length that can be sliced into chunks."""

    def __init__(self, instances):
        self.named: dict[str, Any] | None = None
        if isinstance(instances, Mapping):
            if not instances:
                raise ValueError("instances is an empty dict: give one array per named input")
            self.named = {}
            lengths = {}
            for key, value in instances.items():
                array = value if isinstance(value, (list, tuple)) else np.asarray(value)
                if isinstance(array, np.ndarray) and array.ndim == 0:
                    raise ValueError(
                        f"named input {key!r} is a scalar; the row format needs one value per "
                        "instance (a batch dimension). For a single tensor use inputs= (columnar)."
                    )
                self.named[str(key)] = array
                lengths[str(key)] = len(array)
            if len(set(lengths.values())) > 1:
                raise ValueError(f"named inputs have different batch sizes: {lengths}")
            self.length = next(iter(lengths.values()))
            self.data = None
        elif isinstance(instances, (list, tuple)):
            self.data = list(instances) if isinstance(instances, tuple) else instances
            self.length = len(self.data)
        else:
            array = np.asarray(instances)
            if array.ndim == 0:
                raise ValueError(
                    "instances needs a batch dimension (one entry per instance); "
                    "for a single tensor use inputs= (columnar)"
                )
            self.data = array
            self.length = len(array)
        if self.length == 0:
            raise ValueError("instances is empty: TF Serving rejects an empty batch")

    def __len__(self) -> int:
        return self.length

    def slice(self, start: int, stop: int):
        if self.named is None:
            return self.data[start:stop]
        return [{k: v[i] for k, v in self.named.items()} for i in range(start, stop)]

    def describe(self) -> str:
        if self.named is None:
            return f"instances {describe_value(self.data)}"
        return "instances of named inputs " + ", ".join(
            f"{k} {describe_value(v)}" for k, v in self.named.items()
        )
