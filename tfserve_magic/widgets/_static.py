"""What a saved notebook shows of a widget: a static HTML summary beside the live view.

A live widget needs its kernel; GitHub, nbviewer and nbconvert show what else the output holds.
``StaticSummary._repr_mimebundle_`` returns the widget view *and* ``text/html`` (the widget's
``summary_html()``: numbers, tables and PNG pictures inlined) *and* ``text/plain``. JupyterLab and
Notebook 7 render the widget view (it outranks HTML); a saved copy without widget state falls
back to the HTML.
"""

from __future__ import annotations

import html
import re

_TAGS = re.compile(r"<[^>]+>")


class StaticSummary:
    """Mixin for the widget classes: they hold ``self.widget`` (the ipywidgets view) and
    implement ``summary_html()``; ``summary_text()`` defaults to that HTML's text."""

    static_title = "tfserve_magic widget"

    def summary_html(self) -> str:  # pragma: no cover - every widget overrides it
        raise NotImplementedError

    def summary_text(self) -> str:
        text = _TAGS.sub(" ", self.static_html())
        return re.sub(r"\s+", " ", html.unescape(text)).strip()

    def static_html(self) -> str:
        """The summary inside a frame that says it is a snapshot (never raises: a widget whose
        summary fails still displays)."""
        try:
            body = self.summary_html()
        except Exception as exc:  # noqa: BLE001 - the live view must still display
            body = f"<i>no summary: {html.escape(type(exc).__name__)}: {html.escape(str(exc))}</i>"
        return ('<div class="tfserve-static" style="max-width:880px;font-size:13px">'
                f"{body}<div style='color:#888;font-size:11px;margin-top:4px'>"
                f"{html.escape(self.static_title)}: static snapshot (run the cell for the "
                "live widget)</div></div>")

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude, **kwargs)
        bundle = dict(bundle or {})
        bundle["text/html"] = self.static_html()
        bundle["text/plain"] = self.summary_text()
        return bundle


def matrix_html(counts, names) -> str:
    """A confusion matrix as a plain HTML table (rows true, columns predicted)."""
    head = "".join(f"<th>{html.escape(str(n))}</th>" for n in names)
    rows = []
    for t, row in enumerate(counts):
        cells = "".join(
            f"<td style='text-align:right;padding:1px 6px;"
            f"{'font-weight:bold;background:#dbe9f6' if t == p else ''}'>{int(c)}</td>"
            for p, c in enumerate(row))
        rows.append(f"<tr><th>{html.escape(str(names[t]))}</th>{cells}</tr>")
    return ("<table style='font-size:12px;margin:6px 0'><caption style='text-align:left'>"
            "<b>Confusion matrix</b> (rows true, columns predicted)</caption>"
            f"<tr><th></th>{head}</tr>{''.join(rows)}</table>")


def rows_html(examples, indices, caption, title: str) -> str:
    """Some examples as table rows: the input (thumbnail, sentence or features) and caption."""
    if len(indices) == 0:
        return ""
    rows = []
    for i in indices:
        i = int(i)
        text, wrong, extra, *_ = caption(i)
        if examples.images is not None:
            from tfserve_magic.widgets._common import png_bytes, thumbnail_scale
            from tfserve_magic.widgets.plots import data_uri

            image = examples.images[i]
            shown = (f"<img src='{data_uri(png_bytes(image, thumbnail_scale(image, 40)))}' "
                     f"alt='input #{i}'>")
        else:
            shown = examples.cell_html(i)
        color = "#c62828" if wrong else "#1a7f37"
        rows.append(f"<tr><td>{i}</td><td>{shown}</td><td style='color:{color}'>"
                    f"{html.escape(text)}</td><td>{html.escape(str(extra))}</td></tr>")
    return (f"<table style='font-size:12px;margin:6px 0'><caption style='text-align:left'>"
            f"<b>{html.escape(title)}</b></caption>{''.join(rows)}</table>")
