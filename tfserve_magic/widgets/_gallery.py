"""A paged grid of input thumbnails with captions (or an HTML table for non-image inputs)."""

from __future__ import annotations

import html
from typing import Callable

import numpy as np

from tfserve_magic.widgets._common import png_bytes, thumbnail_scale

# caption(i) -> (plain text, is_wrong, tooltip text[, caption html]): the caption is one line;
# the tooltip holds the rest (index, confidence). The optional html replaces the plain text
# (e.g. each side of a comparison coloured by its own correctness).
CaptionFn = Callable[[int], tuple]

TILE_WIDTH = 96  # px: a 56 px thumbnail and a one-line caption such as "pred 7 / true 7"


TABLE_MAX_PX = 860  # the inputs table, inside the widgets' 880 px
_CUT = "white-space:nowrap;overflow:hidden;text-overflow:ellipsis"

class Gallery:
    """Shows ``items`` (indices into the inputs) one page at a time.

    State lives in widget values: the page number in ``page_box`` (1-based), captions in the tiles'
    ``HTML`` values, thumbnails as PNG bytes in ``Image.value``.
    """

    def __init__(self, x, images, page_size: int, caption: CaptionFn, columns: int = 8,
                 describe: Callable[[int], str] | None = None):
        """``columns`` is the most tiles per row; fewer when the output area is narrower
        (the tiles wrap). ``describe(i)``: one input as HTML for the table (non-image inputs:
        a sentence, a row of features); default: its first values."""
        import ipywidgets as w

        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.x = x
        self.images = images  # [N,H,W(,C)] or None -> table mode
        self.page_size = int(page_size)
        self.caption = caption
        self.describe = describe
        self.items = np.zeros(0, np.int64)
        self._png: dict[int, bytes] = {}
        self._changing = False

        self.page_box = w.BoundedIntText(value=1, min=1, max=1, description="page",
                                         layout=w.Layout(width="120px"),
                                         style={"description_width": "36px"})
        self.pages_label = w.Label(value="of 1", layout=w.Layout(margin="0 8px"))
        self.prev_button = w.Button(description="◀ prev", layout=w.Layout(width="72px"))
        self.next_button = w.Button(description="next ▶", layout=w.Layout(width="72px"))
        self.prev_button.on_click(lambda _: self.prev_page())
        self.next_button.on_click(lambda _: self.next_page())
        self.page_box.observe(self._on_page_box, "value")
        self.pager = w.HBox([self.prev_button, self.page_box, self.pages_label, self.next_button],
                            layout=w.Layout(align_items="center", flex_flow="row wrap"))

        self.tiles = []
        if images is not None:
            for _ in range(self.page_size):
                image = w.Image(format="png", layout=w.Layout(width="56px", height="56px"))
                caption_html = w.HTML(value="", layout=w.Layout(width="100%", margin="0"))
                tile = w.VBox([image, caption_html],
                              layout=w.Layout(border="2px solid transparent", padding="2px",
                                              margin="0 4px 4px 0", align_items="center",
                                              width=f"{TILE_WIDTH}px", display="none"))
                tile.add_class("tfserve-tile")
                self.tiles.append((tile, image, caption_html))
            self.grid = w.Box(
                [t[0] for t in self.tiles],
                layout=w.Layout(display="flex", flex_flow="row wrap", align_content="flex-start",
                                max_width=f"{columns * (TILE_WIDTH + 8)}px"),
            )
        else:
            self.grid = w.HTML(value="")
        self.empty = w.HTML(value="")
        self.widget = w.VBox([self.grid, self.empty, self.pager])
        self.grid.add_class("tfserve-gallery")
        self.pages_label.add_class("tfserve-pages")

    # ------------------------------------------------------------------ state
    @property
    def page(self) -> int:
        """Current page, 0-based."""
        return self.page_box.value - 1

    @property
    def n_pages(self) -> int:
        return max(1, -(-len(self.items) // self.page_size))

    def set_items(self, items) -> None:
        """Show these input indices from page 1."""
        self.items = np.asarray(items, dtype=np.int64).reshape(-1)
        self._changing = True
        try:
            self.page_box.max = self.n_pages
            self.page_box.value = 1
        finally:
            self._changing = False
        self.pages_label.value = f"of {self.n_pages} ({len(self.items)} shown)"
        self.empty.value = ("<i style='color:#777'>nothing matches these filters</i>"
                            if len(self.items) == 0 and self.images is not None else "")
        self.render()

    def page_indices(self) -> np.ndarray:
        start = self.page * self.page_size
        return self.items[start : start + self.page_size]

    def go_to(self, page: int) -> None:
        """Go to a 0-based page (clamped)."""
        self.page_box.value = min(max(int(page), 0), self.n_pages - 1) + 1

    def next_page(self) -> None:
        self.go_to(self.page + 1)

    def prev_page(self) -> None:
        self.go_to(self.page - 1)

    def _on_page_box(self, change) -> None:
        if not self._changing:
            self.render()

    # ------------------------------------------------------------------ view
    def thumbnail(self, i: int) -> bytes:
        if i not in self._png:
            image = self.images[i]
            self._png[i] = png_bytes(image, scale=thumbnail_scale(image))
        return self._png[i]

    def render(self) -> None:
        indices = self.page_indices()
        self.prev_button.disabled = self.page <= 0
        self.next_button.disabled = self.page >= self.n_pages - 1
        if self.images is None:
            self.grid.value = self._table(indices)
            return
        for slot, (tile, image, caption_html) in enumerate(self.tiles):
            if slot >= len(indices):
                tile.layout.display = "none"
                continue
            i = int(indices[slot])
            text, wrong, extra, *rich = self.caption(i)
            color = "#c62828" if wrong else "#1a7f37"
            # wrong ones: red text in a red frame (the ✗ goes in the tooltip: one line fits)
            shown = rich[0] if rich and rich[0] else (
                f'<span style="color:{color}">{html.escape(text)}</span>')
            tip = ("✗ wrong · " if wrong else "") + text + " · " + extra
            image.value = self.thumbnail(i)
            caption_html.value = (
                f'<div title="{html.escape(tip, quote=True)}" '
                'style="text-align:center;font-size:11px;line-height:1.3;white-space:nowrap;'
                f'overflow:hidden;text-overflow:ellipsis">{shown}</div>'
            )
            tile.layout.border = f"2px solid {color if wrong else 'transparent'}"
            tile.layout.display = ""

    def _table(self, indices) -> str:
        if len(indices) == 0:
            return "<i>nothing to show</i>"
        rows = []
        for i in indices:
            i = int(i)
            if self.describe is not None:
                shown = self.describe(i)
            else:
                features = np.asarray(self.x[i]).reshape(-1)
                text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                                 for v in features[:6].tolist())
                if features.size > 6:
                    text += f", … ({features.size} values)"
                shown = f"<code>{html.escape(text)}</code>"
            text, wrong, extra, *_ = self.caption(i)
            color = "#c62828" if wrong else "#1a7f37"
            rows.append(
                f"<tr><td style='color:#777'>{i}</td><td style='{_CUT}'>{shown}</td>"
                f'<td style="color:{color};{_CUT}">{"✗ " if wrong else ""}'
                f"{html.escape(text)}</td><td style='color:#555;{_CUT}'>"
                f"{html.escape(str(extra))}</td></tr>"
            )
        # fixed layout within the widget's width: a long row is cut (its tooltip holds it all)
        # instead of widening the output past a 900 px output area
        return (
            '<table class="tfserve-table" style="font-size:12px;border-collapse:collapse;'
            f'table-layout:fixed;width:100%;max-width:{TABLE_MAX_PX}px">'
            "<colgroup><col style='width:44px'><col><col style='width:170px'>"
            "<col style='width:150px'></colgroup>"
            "<tr><th>#</th><th style='text-align:left'>input</th><th>prediction</th>"
            "<th></th></tr>" + "".join(rows) + "</table>"
        )
