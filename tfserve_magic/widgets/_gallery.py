"""A paged grid of input thumbnails with captions (or an HTML table for non-image inputs)."""

from __future__ import annotations

import html
from typing import Callable

import numpy as np

from tfserve_magic.widgets._common import png_bytes, thumbnail_scale

# caption(i) -> (plain text, is_wrong, extra html line)
CaptionFn = Callable[[int], "tuple[str, bool, str]"]


class Gallery:
    """Shows ``items`` (indices into the inputs) one page at a time.

    State lives in widget values: the page number in ``page_box`` (1-based), captions in the tiles'
    ``HTML`` values, thumbnails as PNG bytes in ``Image.value``.
    """

    def __init__(self, x, images, page_size: int, caption: CaptionFn, columns: int = 8):
        import ipywidgets as w

        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.x = x
        self.images = images  # [N,H,W(,C)] or None -> table mode
        self.page_size = int(page_size)
        self.caption = caption
        self.items = np.zeros(0, np.int64)
        self._png: dict[int, bytes] = {}
        self._changing = False

        self.page_box = w.BoundedIntText(value=1, min=1, max=1, description="page",
                                         layout=w.Layout(width="140px"))
        self.pages_label = w.Label(value="of 1")
        self.prev_button = w.Button(description="◀ prev", layout=w.Layout(width="80px"))
        self.next_button = w.Button(description="next ▶", layout=w.Layout(width="80px"))
        self.prev_button.on_click(lambda _: self.prev_page())
        self.next_button.on_click(lambda _: self.next_page())
        self.page_box.observe(self._on_page_box, "value")
        self.pager = w.HBox([self.prev_button, self.page_box, self.pages_label, self.next_button])

        self.tiles = []
        if images is not None:
            for _ in range(self.page_size):
                image = w.Image(format="png")
                caption_html = w.HTML(value="")
                tile = w.VBox([image, caption_html],
                              layout=w.Layout(border="2px solid transparent", padding="2px",
                                              align_items="center", display="none"))
                self.tiles.append((tile, image, caption_html))
            self.grid = w.GridBox(
                [t[0] for t in self.tiles],
                layout=w.Layout(grid_template_columns=f"repeat({columns}, auto)",
                                grid_gap="4px"),
            )
        else:
            self.grid = w.HTML(value="")
        self.widget = w.VBox([self.grid, self.pager])

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
        if self.images is None:
            self.grid.value = self._table(indices)
            return
        for slot, (tile, image, caption_html) in enumerate(self.tiles):
            if slot >= len(indices):
                tile.layout.display = "none"
                continue
            i = int(indices[slot])
            text, wrong, extra = self.caption(i)
            color = "#c62828" if wrong else "#1a7f37"
            mark = "✗ " if wrong else ""
            image.value = self.thumbnail(i)
            caption_html.value = (
                f'<div style="text-align:center;font-size:11px;line-height:1.2">'
                f'<span style="color:{color}">{mark}{html.escape(text)}</span>'
                f'<br><span style="color:#777">{extra}</span></div>'
            )
            tile.layout.border = f"2px solid {color if wrong else 'transparent'}"
            tile.layout.display = ""

    def _table(self, indices) -> str:
        if len(indices) == 0:
            return "<i>nothing to show</i>"
        rows = []
        for i in indices:
            i = int(i)
            features = np.asarray(self.x[i]).reshape(-1)
            shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                              for v in features[:6].tolist())
            if features.size > 6:
                shown += f", … ({features.size} values)"
            text, wrong, extra = self.caption(i)
            color = "#c62828" if wrong else "#1a7f37"
            rows.append(
                f"<tr><td>{i}</td><td><code>{html.escape(shown)}</code></td>"
                f'<td style="color:{color}">{"✗ " if wrong else ""}{html.escape(text)}</td>'
                f"<td>{extra}</td></tr>"
            )
        return (
            '<table style="font-size:12px"><tr><th>#</th><th>input</th><th>prediction</th>'
            "<th></th></tr>" + "".join(rows) + "</table>"
        )
