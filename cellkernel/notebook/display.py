"""What a ``%%pattern`` cell shows: value previews, the graph as SVG, the display object.

Every display has a deterministic ``text/plain``."""

from __future__ import annotations

import base64
import html
import linecache
import logging
import os
import re
import traceback
import types
from typing import TYPE_CHECKING, Any

from cellkernel.data.identity import short_id
from cellkernel.errors import NodeError
from cellkernel.patterns.render import dot_to_svg
from cellkernel.patterns.snapshot import SVG_LIMIT
from cellkernel.reactive.cells import Cell, Stream

if TYPE_CHECKING:

    from cellkernel.patterns.snapshot import GraphSnapshot

log = logging.getLogger("cellkernel.notebook.display")

#: Frames from files under here are cellkernel's own.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


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


def summary(name: str, result: Cell[Any], stale: set[str] | None = None) -> str:
    """``Counter: count=5, doubled=10, increment=<stream>`` (current values).

    Fields in ``stale`` (computed by a node in error, or from such) say so.
    """
    try:
        value = result.get()
    except Exception as exc:  # show what is wrong instead of failing the display
        return f"{name}: <unreadable: {type(exc).__name__}: {exc}>"
    if isinstance(value, dict) and not isinstance(value, Stream):
        marks = stale or set()
        return f"{name}: " + ", ".join(
            f"{k}={preview(v)}" + (" (stale)" if k in marks else "") for k, v in value.items())
    return f"{name}: {preview(value)}"


def values_html(result: Cell[Any], stale: set[str] | None = None) -> str:
    """The result's fields and current values as a table (readable where untrusted)."""
    try:
        value = result.get()
    except Exception as exc:
        return f"<pre>{html.escape(f'<unreadable: {type(exc).__name__}: {exc}>')}</pre>"
    if not isinstance(value, dict) or isinstance(value, Stream):
        return f"<pre>{html.escape(preview(value, 200))}</pre>"
    marks = stale or set()
    rows = "".join(
        f"<tr><th style=\"text-align:left\">{html.escape(str(k))}</th>"
        f"<td><code>{html.escape(preview(v, 200))}</code>"
        + (' <em style="color:#b00">stale</em>' if k in marks else "") + "</td></tr>"
        for k, v in value.items())
    return f'<table class="cellkernel-values">{rows}</table>'



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




# ---------------------------------------------------------------------------
# the graph where a notebook is not trusted


def svg_img(svg: str, alt: str = "graph") -> str:
    """The SVG as an ``<img>`` with a data URI: it survives HTML sanitising.

    An untrusted notebook (a fresh clone, GitHub, nbviewer) strips inline SVG
    and leaves its ``<title>`` texts; an image stays a picture.
    """
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f'<img class="cellkernel-graph" alt="{html.escape(alt)}" '
            f'src="data:image/svg+xml;base64,{data}" style="max-width:100%">')


# ---------------------------------------------------------------------------
# names, errors and stale values


def node_name(snapshot: GraphSnapshot | None, node_id: str, fallback: str | None = None) -> str:
    """What a reader calls a node: its name, else the name of the cell it writes.

    A lambda's function name (``<lambda>``) is a last resort.
    """
    node = snapshot.node(node_id) if snapshot is not None else None
    name = node.name if node is not None and node.name else fallback
    if node is not None and (not name or name.startswith("<")):
        for output in node.outputs:
            cell = snapshot.cell(output) if snapshot is not None else None
            if cell is not None and cell.name:
                return cell.name
    return name or short_id(node_id)


def stale_cells(snapshot: GraphSnapshot, failed: set[str]) -> set[str]:
    """Cell ids whose values are stale: written by a failed node, or computed from such."""
    stale: set[str] = set()
    # a failed handler leaves no value behind: its event was refused, its stream is fine
    todo = [n for n in snapshot.nodes if n.id in failed and n.helper != "handler"]
    readers: dict[str, list[Any]] = {}
    for node in snapshot.nodes:
        for source in node.inputs:
            readers.setdefault(source, []).append(node)
    seen: set[str] = set()
    while todo:
        node = todo.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        for output in node.outputs:
            if output not in stale:
                stale.add(output)
                todo.extend(r for r in readers.get(output, ()) if r.helper != "handler")
    return stale


def stale_fields(snapshot: GraphSnapshot | None, failed: set[str]) -> set[str]:
    """Result keys showing a stale value (see ``stale_cells``)."""
    if snapshot is None or not failed:
        return set()
    stale = stale_cells(snapshot, failed)
    return {link.name for link in snapshot.links
            if link.kind == "redirect" and link.name and link.to in stale}


def own_frame(filename: str) -> bool:
    """A frame of cellkernel itself (hidden from the tracebacks users read)."""
    return filename.startswith(PACKAGE_DIR)


def user_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without cellkernel's own frames (as IPython hides its own)."""
    frames: list[types.TracebackType] = []
    while tb is not None:
        if not own_frame(tb.tb_frame.f_code.co_filename):
            frames.append(tb)
        tb = tb.tb_next
    out: types.TracebackType | None = None
    for frame in reversed(frames):
        out = types.TracebackType(out, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return out


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the notebook layer needs IPython anyway
        return None
    return get_ipython()


def cell_label(filename: str, lineno: int) -> str:
    """``Cell In[5], line 3`` for notebook code, else ``file.py, line 3``."""
    shell = _shell()
    number = getattr(getattr(shell, "compile", None), "_filename_map", {}).get(filename)
    if number is not None:
        return f"Cell In[{number}], line {lineno}"
    return f"{os.path.basename(filename)}, line {lineno}"


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<fn>.*))?$')


def text_traceback(text: str) -> list[str]:
    """A ``traceback.format_exc()`` text with cellkernel's frames dropped and cells named.

    ``File "/tmp/ipykernel_1/123.py", line 7, in <lambda>`` reads
    ``Cell In[5], line 7, in <lambda>``; no absolute path of this machine stays.
    """
    out: list[str] = []
    keep = True
    for line in text.rstrip().splitlines():
        frame = _FRAME.match(line)
        if frame is not None:
            keep = not own_frame(frame.group("file"))
            if keep:
                where = cell_label(frame.group("file"), int(frame.group("line")))
                fn = frame.group("fn")
                out.append(f"  {where}" + (f", in {fn}" if fn else ""))
            continue
        if line.startswith("    ") and out and not line.startswith("Traceback"):
            if keep:
                out.append(line)
            continue
        keep = True
        out.append(line)
    return out


def _last_user_frame(text: str) -> tuple[str, int] | None:
    found = None
    for line in text.splitlines():
        frame = _FRAME.match(line)
        if frame is not None and not own_frame(frame.group("file")):
            found = (frame.group("file"), int(frame.group("line")))
    return found


def user_line(exc: BaseException, text: str = "") -> tuple[str, str] | None:
    """Where the user's code raised: (``Cell In[5], line 3``, that line), or None.

    From the exception's traceback, else from the ``traceback`` text recorded
    with a node error (the scheduler keeps the text, not the frames).
    """
    if exc.__traceback__ is None and text:
        found = _last_user_frame(text)
        if found is None:
            return None
        return cell_label(*found), linecache.getline(found[0], found[1]).strip()
    tb = user_traceback(exc.__traceback__)
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return None
    filename = last.tb_frame.f_code.co_filename
    source = linecache.getline(filename, last.tb_lineno).strip()
    return cell_label(filename, last.tb_lineno), source


def error_text(error: BaseException, snapshot: GraphSnapshot | None = None) -> str:
    """``doubled: NameError: name 'tw0' is not defined`` and the user's line under it."""
    inner = getattr(error, "error", error)
    if isinstance(error, NodeError):
        head = f"{node_name(snapshot, error.node, error.name)}: "
    else:
        head = ""
    lines = [f"{head}{type(inner).__name__}: {inner}"]
    where = user_line(inner, getattr(error, "traceback", "") or "")
    if where is not None:
        lines.append(f"  {where[0]}: {where[1]}" if where[1] else f"  {where[0]}")
    return "\n".join(lines)


def formatted_traceback(exc: BaseException) -> list[str]:
    """The exception's traceback as IPython shows it (``Cell In[N], line M``), own frames hidden."""
    tb = user_traceback(exc.__traceback__)
    shell = _shell()
    if shell is not None:
        try:
            return list(shell.InteractiveTB.structured_traceback(type(exc), exc, tb))
        except Exception:  # pragma: no cover - fall back to the plain form
            log.debug("IPython could not format the traceback", exc_info=True)
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip().splitlines()
