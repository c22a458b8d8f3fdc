"""The output of a ``%%pattern`` cell: one object, every representation.

Text, HTML, SVG and widgets all come from the same object.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cellkernel.notebook.display import error_text, summary, svg_img, values_html
from cellkernel.notebook.report import ReportRow, report_html, report_text
from cellkernel.reactive.cells import Cell

if TYPE_CHECKING:
    from cellkernel.patterns.snapshot import GraphSnapshot


class PatternDisplay:
    """The output of a ``%%pattern`` cell: one object, every representation.

    ``text/plain`` is deterministic (name, fields and current values with
    stale ones marked, the report, errors of the run with the user's line);
    ``image/svg+xml`` is the graph; ``text/html`` is what a static viewer
    shows, readable after sanitising (values as a table, the graph as an
    ``<img>``, errors in full); the widget view (controls, live graph, report)
    is what a widget-aware frontend shows.
    """

    def __init__(self, name: str, result: Cell[Any], *, svg: str | None = None,
                 rows: list[ReportRow] | None = None, generation: int = 1,
                 errors: list[Any] | None = None, widget: Any = None,
                 snapshot: GraphSnapshot | None = None, stale: set[str] | None = None) -> None:
        self.name = name
        self.result = result
        self.svg = svg
        self.rows = rows
        self.generation = generation
        self.errors = list(errors or [])
        self.widget = widget
        self.snapshot = snapshot
        self.stale = set(stale or ())

    def error_texts(self) -> list[str]:
        return [error_text(e, self.snapshot) for e in self.errors]

    def text(self) -> str:
        lines = [summary(self.name, self.result, self.stale)]
        if self.rows is not None:
            lines.append(report_text(self.rows, self.generation))
        for text in self.error_texts():
            lines.append(f"error in {text}")
        return "\n".join(lines)

    def html(self) -> str:
        parts = [f"<b>{html.escape(self.name)}</b>", values_html(self.result, self.stale)]
        for text in self.error_texts():
            parts.append(f'<pre class="cellkernel-error" style="color:#b00">'
                         f"error in {html.escape(text)}</pre>")
        if self.svg:
            parts.append(svg_img(self.svg, f"graph of {self.name}"))
        if self.rows is not None:
            parts.append(report_html(self.rows, self.generation))
        return '<div class="cellkernel-pattern">' + "".join(parts) + "</div>"

    def _repr_mimebundle_(self, include: Iterable[str] | None = None,
                          exclude: Iterable[str] | None = None, **_: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"text/plain": self.text(), "text/html": self.html()}
        if self.svg:
            data["image/svg+xml"] = self.svg
        if self.widget is not None and getattr(self.widget, "model_id", None):
            data["application/vnd.jupyter.widget-view+json"] = {
                "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id,
            }
        wanted = set(include) if include is not None else set(data)
        wanted -= set(exclude or ())
        return {k: v for k, v in data.items() if k in wanted}

    def __repr__(self) -> str:
        return self.text()

    def close(self, note: str | None = None) -> None:
        """Release the widgets' subscriptions (done before the same name re-runs).

        With a ``note`` the live view says it instead of going blank
        (``superseded by In[7]``).
        """
        if self.widget is not None:
            if note is not None and hasattr(self.widget, "supersede"):
                self.widget.supersede(note)
            else:
                self.widget.close()
            self.widget = None
