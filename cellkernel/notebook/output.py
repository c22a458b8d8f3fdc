"""The output of a ``%%pattern`` cell: one object, every representation.

Text, HTML, SVG and widgets all come from the same object.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cellkernel.notebook.display import summary
from cellkernel.notebook.report import ReportRow, report_html, report_text
from cellkernel.reactive.cells import Cell

if TYPE_CHECKING:

    pass


class PatternDisplay:
    """The output of a ``%%pattern`` cell: one object, every representation.

    ``text/plain`` is deterministic (name, fields and current values, the
    report, errors of the run); ``image/svg+xml`` is the graph; ``text/html``
    combines them for static viewers; the widget view (controls, live graph,
    report) is what a widget-aware frontend shows.
    """

    def __init__(self, name: str, result: Cell[Any], *, svg: str | None = None,
                 rows: list[ReportRow] | None = None, generation: int = 1,
                 errors: list[Any] | None = None, widget: Any = None) -> None:
        self.name = name
        self.result = result
        self.svg = svg
        self.rows = rows
        self.generation = generation
        self.errors = list(errors or [])
        self.widget = widget

    def text(self) -> str:
        lines = [summary(self.name, self.result)]
        if self.rows is not None:
            lines.append(report_text(self.rows, self.generation))
        for error in self.errors:
            lines.append(f"error: {error}")
        return "\n".join(lines)

    def html(self) -> str:
        parts = [f"<pre>{html.escape(summary(self.name, self.result))}</pre>"]
        if self.svg:
            parts.append(self.svg)
        if self.rows is not None:
            parts.append(report_html(self.rows, self.generation))
        for error in self.errors:
            parts.append(f'<pre style="color:#b00">{html.escape(str(error))}</pre>')
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

    def close(self) -> None:
        """Release the widgets' subscriptions (done before the same name re-runs)."""
        if self.widget is not None:
            self.widget.close()
            self.widget = None
