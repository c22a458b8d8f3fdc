"""What a ``%%pattern`` cell shows: value previews, the graph as SVG, the display object.

Every display has a deterministic ``text/plain``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cellkernel.patterns.render import dot_to_svg
from cellkernel.patterns.snapshot import SVG_LIMIT
from cellkernel.reactive.cells import Cell, Stream

if TYPE_CHECKING:

    from cellkernel.patterns.snapshot import GraphSnapshot

log = logging.getLogger("cellkernel.notebook.display")


#: Helpers whose cells hold state a user typed in (as opposed to derived values).
STATE_HELPERS = frozenset({"cell", "argument"})


def preview(value: Any, limit: int = 60) -> str:
    """A short deterministic rendering of a cell value (streams as ``<stream>``)."""
    text = _preview(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _preview(value: Any) -> str:
    if isinstance(value, Stream):
        return "<stream>"
    if isinstance(value, Cell):
        return "<cell>"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_preview(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_preview(v) for v in value) + "]"
    return repr(value)


def summary(name: str, result: Cell[Any]) -> str:
    """``Counter: count=5, doubled=10, increment=<stream>`` (current values)."""
    try:
        value = result.get()
    except Exception as exc:  # show what is wrong instead of failing the display
        return f"{name}: <unreadable: {type(exc).__name__}: {exc}>"
    if isinstance(value, dict) and not isinstance(value, Stream):
        return f"{name}: " + ", ".join(f"{k}={preview(v)}" for k, v in value.items())
    return f"{name}: {preview(value)}"


#: Above this many result fields the drawing leaves out the result box and its
#: field edges: every field edge spans the graph, and Graphviz's crossing
#: minimisation then takes seconds (a 50-lift chain: 2-6 s with them, 15 ms
#: without). Cells still carry their field names as labels.
FIELD_EDGE_LIMIT = 12


def drawable(snapshot: GraphSnapshot) -> GraphSnapshot:
    """The snapshot as drawn: without the result box when it has many fields."""
    fields = sum(1 for link in snapshot.links if link.kind == "redirect")
    if fields <= FIELD_EDGE_LIMIT:
        return snapshot
    links = [link for link in snapshot.links if link.kind != "redirect"]
    return snapshot.model_copy(update={"links": links, "result": None})


def graph_svg(snapshot: GraphSnapshot, highlight: dict[str, str] | None = None,
              previous: GraphSnapshot | None = None) -> str | None:
    """The graph as SVG, rendered in-process when no system Graphviz exists; else None.

    With the ``previous`` snapshot (and no ``highlight``) the drawing is the
    diff: the removed cells are drawn too, dashed. Otherwise ``highlight``
    colours cells and nodes by status (kept/new/changed/error/...).
    """

    if len(snapshot.cells) + len(snapshot.nodes) > SVG_LIMIT:
        return None  # unreadable, and the layout would take minutes
    try:

        shown = drawable(snapshot)
        if previous is not None and not highlight:
            dot = drawable(previous).diff(shown).to_dot()
        else:
            dot = shown.to_dot(highlight)
        return dot_to_svg(dot)
    except Exception:  # a display must not fail the cell; the text summary still shows
        log.warning("graph not drawn", exc_info=True)
        return None


