"""Live widgets for cells: ``bind``, ``ui`` and ``GraphView`` (SPEC §9).

Widgets write cells and cells write widgets; the echo guard in ``bind`` stops
the round trip from bouncing. Observers are always named (``names=trait``):
an unnamed observer also fires for internal traits. Anything a widget starts
that fails — a rejected write, a handler or a lift downstream of it — is shown
in that widget's ``Output`` area, not only recorded in ``rt.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anywidget
import ipywidgets as w  # type: ignore[import-untyped]
import traitlets

from cellkernel.errors import NodeError
from cellkernel.notebook.display import (
    STATE_HELPERS,
    error_text,
    formatted_traceback,
    graph_svg,
    node_name,
    preview,
    stale_fields,
    summary,
    text_traceback,
    values_html,
)
from cellkernel.reactive.cells import Cell, Stream
from cellkernel.runtime import Runtime

if TYPE_CHECKING:
    from cellkernel.patterns.snapshot import GraphSnapshot

log = logging.getLogger("cellkernel.notebook.widgets")

STATIC = pathlib.Path(__file__).parent / "static"

#: Guarded operations in progress per runtime: background error routes stay quiet meanwhile.
_guarding: dict[int, int] = {}


# ---------------------------------------------------------------------------
# errors into Output areas


def error_output(error: BaseException, snapshot: GraphSnapshot | None = None) -> dict[str, Any]:
    """An ``error`` output (rendered like a traceback) for an Output widget.

    The first line names the node, the exception and its message; the
    traceback is IPython's (``Cell In[N], line M``) without cellkernel's frames.
    """
    if isinstance(error, NodeError):
        inner = error.error
        evalue = f"{node_name(snapshot, error.node, error.name)}: {inner}"
    else:
        inner = error
        evalue = str(error)
    ename = type(inner).__name__
    tb = formatted_traceback(inner) if inner.__traceback__ is not None else []
    if not tb and isinstance(error, NodeError) and error.traceback:
        tb = text_traceback(error.traceback)
    head = error_text(error, snapshot).splitlines()[0]
    return {"output_type": "error", "ename": ename, "evalue": evalue,
            "traceback": [f"error in {head}", *tb] if tb else [f"error in {head}"]}


def run_guarded(rt: Runtime | None, output: w.Output | None,
                fn: Callable[[], Any]) -> list[BaseException]:
    """Run ``fn`` and show everything that failed meanwhile in ``output``.

    Node errors are collected with ``rt.on_error`` while ``fn`` runs (a send
    settles synchronously, so the handler and the lifts it triggers have run
    when it returns); an exception ``fn`` raises is shown too. The area shows
    the latest interaction only, so a successful one clears old errors.
    """
    caught: list[BaseException] = []
    unsubscribe = rt.on_error(caught.append) if rt is not None else None
    key = id(rt)
    _guarding[key] = _guarding.get(key, 0) + 1
    try:
        fn()
    except Exception as exc:
        caught.append(exc)
    finally:
        _guarding[key] -= 1
        if unsubscribe is not None:
            unsubscribe()
    if output is not None:
        output.outputs = tuple(error_output(e) for e in caught)
    return caught


# ---------------------------------------------------------------------------
# bind


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and (a is None) == (b is None)
    except Exception:
        return False


def bind(cell: Cell[Any], widget: w.Widget, trait: str = "value", *,
         output: w.Output | None = None) -> Callable[[], None]:
    """Bind ``widget.<trait>`` and ``cell`` both ways; returns ``unbind()``.

    The cell's value is pushed into the widget now and after every change; a
    widget edit is written to the cell. A guard stops the echo: while the cell
    updates the widget, the widget's observer ignores the change, and a value
    the widget already shows is not set again. A write the cell rejects (a
    schema violation) puts the cell's value back into the widget and shows the
    error in ``output`` (raises if there is no ``output``).
    """
    rt = Runtime.of(cell)
    updating = False

    def to_widget(value: Any) -> None:
        nonlocal updating
        if value is None or isinstance(value, Cell) or _same(getattr(widget, trait), value):
            return
        updating = True
        try:
            setattr(widget, trait, value)
        except traitlets.TraitError:
            log.debug("%r cannot show %r", widget, value)
        finally:
            updating = False

    def to_cell(change: dict[str, Any]) -> None:
        if updating:
            return
        failed = run_guarded(rt, output, lambda: cell.set(change["new"]))
        rejected = [e for e in failed if not isinstance(e, NodeError)]
        if rejected:
            try:
                to_widget(cell.sample())
            except Exception:
                log.debug("could not restore %r", widget, exc_info=True)
            if output is None:
                raise rejected[0]

    unsink = cell.sink(to_widget)
    widget.observe(to_cell, names=trait)
    done = False

    def unbind() -> None:
        nonlocal done
        if done:
            return
        done = True
        unsink()
        widget.unobserve(to_cell, names=trait)

    return unbind


def show(cell: Cell[Any], widget: w.Widget, trait: str = "value",
         render: Callable[[Any], Any] | None = None) -> Callable[[], None]:
    """One way: ``widget.<trait> = render(value)`` now and on every change."""
    fmt = render or _html_value

    def update(value: Any) -> None:
        setattr(widget, trait, fmt(value))

    return cell.sink(update)


def _html_value(value: Any, depth: int = 0) -> str:
    """A value as HTML: lists as numbered lists, objects as nested tables."""
    if depth < 3 and isinstance(value, list) and not isinstance(value, Stream):
        items = "".join(f"<li>{_html_value(v, depth + 1)}</li>" for v in value)
        return f'<ol class="ck-list" start="0">{items}</ol>' if value else "<i>empty</i>"
    if depth < 3 and isinstance(value, dict) and not isinstance(value, Stream):
        rows = "".join(
            f"<tr><th{_TH}>{html.escape(str(k))}</th><td>{_html_value(v, depth + 1)}</td></tr>"
            for k, v in value.items()
        )
        return f'<table class="ck-object" style="{_TABLE_STYLE}">{rows}</table>'
    return f"<code>{html.escape(preview(value, 200))}</code>"


# ipywidgets' HTML is not styled by the notebook's CSS: keep tables compact inline
_TABLE_STYLE = "border-collapse:collapse"
_TH = ' style="text-align:left;font-weight:normal;padding:0 1em 0 0;color:#555"'


def _get_path(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


# ---------------------------------------------------------------------------
# ui


def field_kinds(cell: Cell[Any], snapshot: GraphSnapshot | None = None) -> dict[str, str] | None:
    """Result key → helper of the cell it redirects to (None without a snapshot).

    ``cell``/``argument`` fields hold state a user may edit; anything else is
    derived. A key with no redirect is a literal of the pattern (``literal``).
    """
    if snapshot is None:
        try:
            target = cell.resolve_as_cell() if cell.path else cell
            snapshot = Runtime.of(cell).snapshot(target)
        except Exception:
            return None
    helpers = {c.id: (c.helper or ("argument" if c.name == "argument" else "?"))
               for c in snapshot.cells}
    kinds: dict[str, str] = {}
    for link in snapshot.links:
        if link.kind == "redirect" and link.name:
            kinds[link.name] = helpers.get(link.to, "?")
    return kinds


def _snapshot(cell: Cell[Any]) -> GraphSnapshot | None:
    try:
        return Runtime.of(cell).snapshot(cell)
    except LookupError:
        return None


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()) or ():
        _close_tree(child)
    widget.close()


class PatternUI(w.VBox):  # type: ignore[misc]
    """Controls for one result cell (``ui(result)``); ``close()`` releases every binding."""

    def __init__(self, result: Cell[Any], snapshot: GraphSnapshot | None = None,
                 errors: list[NodeError] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        snapshot = snapshot if snapshot is not None else _snapshot(result)
        self.result = result
        self.snapshot = snapshot
        #: nodes whose last run failed: their values (and what follows) are stale
        self.failed: set[str] = {e.node for e in errors or ()}
        self.rt = Runtime.of(result)
        self.errors = w.Output()
        self.controls: dict[str, w.Widget] = {}
        self.outputs: dict[str, w.Output] = {}
        self._unbind: list[Callable[[], None]] = []
        self._routes: dict[str, w.Output] = {}
        self._nodes = {n.id for n in snapshot.nodes} if snapshot is not None else set()
        self._derived: list[tuple[str, ...]] = []
        self.on_sent: list[Callable[[str], None]] = []
        rows = self._fields(result, (), field_kinds(result, snapshot) if snapshot else None)
        self.values = w.HTML()
        if self._derived:
            # one live table for every read-only field: one widget and one sink
            # instead of one each (a 50-field result stays quick to show)
            self._unbind.append(show(result, self.values, render=self._values_html))
            for path in self._derived:
                self.controls[".".join(path) or "value"] = self.values
            rows.append(self.values)
        self.children = (*rows, self.errors)
        # errors of the start are in view at once, not behind a click
        self.errors.outputs = tuple(error_output(e, snapshot) for e in errors or ())
        self._unbind.append(self.rt.on_error(self._route))
        self.rt.scheduler.on_run.append(self._on_run)
        self._unbind.append(self._stop_on_run)

    def stale(self) -> set[str]:
        """Result keys whose value is stale because a node is in error."""
        return stale_fields(self.snapshot, self.failed)

    def _values_html(self, value: Any) -> str:
        stale = self.stale()
        mark = ' <em class="ck-stale" style="color:#b00">stale</em>'
        rows = "".join(
            f"<tr><th{_TH}>{html.escape('.'.join(path) or 'value')}</th>"
            f"<td>{_html_value(_get_path(value, path) if path else value)}"
            f"{mark if '.'.join(path) in stale else ''}</td></tr>"
            for path in self._derived
        )
        return f'<table class="ck-values" style="{_TABLE_STYLE}">{rows}</table>'

    def _refresh_values(self) -> None:
        if self._derived:
            try:
                self.values.value = self._values_html(self.result.sample())
            except Exception:
                log.debug("values not refreshed", exc_info=True)

    def _on_run(self, action: Any) -> None:
        node = getattr(action, "node", None)
        if node in self.failed:
            self.failed.discard(node)
            self._refresh_values()

    def _stop_on_run(self) -> None:
        if self._on_run in self.rt.scheduler.on_run:
            self.rt.scheduler.on_run.remove(self._on_run)

    def __repr__(self) -> str:
        return "ui(" + summary("", self.result, self.stale()).lstrip(": ") + ")"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget, plus the values as HTML for viewers without the widget state."""
        data: dict[str, Any] = dict(super()._repr_mimebundle_(**kwargs) or {})
        data.setdefault("text/html", values_html(self.result, self.stale()))
        return data

    # -- building ---------------------------------------------------------------

    def _fields(self, cell: Cell[Any], prefix: tuple[str, ...],
                kinds: dict[str, str] | None) -> list[w.Widget]:
        value = cell.get()
        if not isinstance(value, dict) or isinstance(value, Stream):
            kind = "?" if kinds is not None else None
            return self._row(prefix[-1] if prefix else "value", prefix, cell, value, kind)
        rows: list[w.Widget] = []
        for key, item in value.items():
            kind = kinds.get(str(key), "literal") if kinds is not None else None
            rows += self._row(str(key), (*prefix, str(key)), cell.key(key), item, kind)
        return rows

    def _row(self, label: str, path: tuple[str, ...], cell: Cell[Any], value: Any,
             kind: str | None) -> list[w.Widget]:
        """The widgets of one field: a control and its error area (none if read-only)."""
        name = ".".join(path) or label
        editable = kind is None or kind in STATE_HELPERS
        control: w.Widget
        if isinstance(value, dict) and not isinstance(value, Stream):
            if not editable and kind != "pattern":  # a derived object: one row of the table
                self._derived.append(path)
                return []
            # a nested instance's own snapshot says what is state in it; a state
            # object is editable throughout
            sub_kinds = (field_kinds(cell) or {}) if kind == "pattern" else None
            inner = self._fields(cell, path, sub_kinds)
            if not inner:
                return []
            control = w.VBox([w.HTML(f"<b>{html.escape(label)}</b>"),
                              w.VBox(inner, layout=w.Layout(padding="0 0 0 1.5em"))])
            self.controls[name] = control
            return [control]
        if isinstance(value, Stream):
            out = w.Output()
            control = w.Button(description=label, tooltip=f"send {{}} to {name}")
            control.on_click(lambda _b, s=value, o=out: self.send(s, {}, o))
            if value.entity_id:
                self._routes["node:" + value.entity_id[3:]] = out
        elif editable and isinstance(value, bool | int | float | str):
            out = w.Output()
            if isinstance(value, bool):
                control = w.Checkbox(description=label, indent=False)
            elif isinstance(value, int):
                control = w.IntText(description=label)
            elif isinstance(value, float):
                control = w.FloatText(description=label)
            else:
                control = w.Text(description=label)
            self._unbind.append(bind(cell, control, output=out))
        else:  # derived, or nothing a control can edit: a row of the live values table
            self._derived.append(path)
            return []
        self.controls[name] = control
        self.outputs[name] = out
        return [control, out]

    # -- events and errors ---------------------------------------------------------

    def send(self, stream: Cell[Any], event: Any, output: w.Output | None = None) -> None:
        """Send ``event`` to ``stream``; failures show in ``output`` (a button's area).

        Each of ``on_sent`` is then called with the handler's node id.  (The live
        graph flashes handlers from the scheduler's ``on_run``, however the event came.)
        """
        failed = run_guarded(self.rt, output if output is not None else self.errors,
                             lambda: stream.send(event))
        node = "node:" + stream.entity_id[3:] if stream.entity_id else None
        if node is not None and not any(getattr(e, "node", None) == node for e in failed):
            for callback in self.on_sent:
                callback(node)

    def _route(self, error: NodeError) -> None:
        """Errors outside a widget action (async handlers, other cells' writes)."""
        if error.node in self._nodes and error.node not in self.failed:
            self.failed.add(error.node)
            self._refresh_values()
        if _guarding.get(id(self.rt)):
            return
        out = self._routes.get(error.node)
        if out is None and error.node in self._nodes:
            out = self.errors
        if out is not None:
            out.outputs = (*out.outputs, error_output(error, self.snapshot))

    def close(self) -> None:
        for unbind in self._unbind:
            unbind()
        self._unbind.clear()
        for child in self.children:
            _close_tree(child)
        super().close()


def ui(result: Cell[Any], snapshot: GraphSnapshot | None = None,
       errors: list[NodeError] | None = None) -> PatternUI:
    """Controls for a result: numbers, text, booleans, lists, nested objects, buttons.

    State fields (``Cell.of`` state, pattern arguments) get editable controls
    bound both ways; derived fields get live read-only displays; a ``Stream``
    becomes a button that sends ``{}``. Each control has its own error area.
    ``snapshot`` saves reading the result's graph snapshot again; ``errors``
    (of the instance's start) show at once, and mark the values they left stale.
    """
    return PatternUI(result, snapshot, errors)


# ---------------------------------------------------------------------------
# GraphView


class GraphView(anywidget.AnyWidget):
    """The instance graph as SVG; nodes flash when they run and turn red on errors.

    ``svg`` is redrawn when the instance's graph changes (a re-run); ``nodes``
    carries each node's status (``idle``/``ran``/``error``), run count, current
    value and last error, so the browser restyles nodes without a new layout.
    """

    _esm = STATIC / "graph_view.js"
    _css = STATIC / "graph_view.css"

    svg = traitlets.Unicode("").tag(sync=True)
    nodes = traitlets.List(traitlets.Dict()).tag(sync=True)
    generation = traitlets.Int(0).tag(sync=True)

    def __init__(self, result: Cell[Any], *, highlight: dict[str, str] | None = None,
                 svg: str | None = None, snapshot: GraphSnapshot | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result
        self.rt = Runtime.of(result)
        self._space = result.space or self.rt.space
        self._highlight = dict(highlight) if highlight else None
        self._redraw = False
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._changed = False
        self._check_graph = False
        self._scheduled = False
        self._snapshot: GraphSnapshot | None = None
        self._load(svg, snapshot)
        self.rt.scheduler.on_run.append(self._on_run)
        self._unsubscribe = [self.rt.on_error(self._on_error), result.sink(self._on_result)]

    def _load(self, svg: str | None = None, snapshot: GraphSnapshot | None = None) -> None:
        if snapshot is None:
            snapshot = _snapshot(self.result)
        if snapshot is None:
            self.svg = svg or ""
            return
        previous = self._entries
        self._entries = {}
        self._snapshot = snapshot
        baked = {k for k, v in (self._highlight or {}).items() if v == "error"}
        last_error = {e.node: e for e in self.rt.errors if e.node in baked}
        for node in snapshot.nodes:
            old = previous.get(node.id, {})
            if not old and node.id in last_error:
                old = {"status": "error", "error": _error_line(last_error[node.id], snapshot)}
            keys = [node.id, *node.outputs]
            self._entries[node.id] = {
                "id": node.id,
                "keys": keys,
                "name": node_name(snapshot, node.id, node.name or node.helper),
                "helper": node.helper,
                "status": old.get("status", "idle"),
                "runs": old.get("runs", 0),
                "value": self._value(node.outputs[0]) if node.outputs else "",
                "error": old.get("error", ""),
            }
        if snapshot.generation != self.generation:
            self.generation = snapshot.generation
            if svg is None:
                svg = graph_svg(snapshot, self._highlight if not previous else None)
            self.svg = svg or ""
        self._dirty.clear()
        self._changed = False
        self._push()

    def _value(self, entity_id: str) -> str:
        try:
            return preview(self.rt.cell_at(entity_id, space=self._space).sample())
        except Exception as exc:
            return f"<{type(exc).__name__}>"

    def _push(self) -> None:
        self.nodes = [dict(e) for e in self._entries.values()]

    # -- live updates --------------------------------------------------------------

    def _on_run(self, action: Any) -> None:
        try:
            node = getattr(action, "node", None)
            if not isinstance(node, str):
                return
            entry = self._entries.get(node)
            if entry is not None:
                if self._highlight and self._highlight.get(node) == "error":
                    # the drawing has this node's old error baked in: draw it again
                    del self._highlight[node]
                    self._redraw = True
                entry["status"] = "ran"
                entry["runs"] += 1
                entry["error"] = ""
                self._dirty.add(node)
                self._changed = True
            elif (node.startswith("node:") and getattr(action, "space", None) == self._space):
                self._check_graph = True  # an unknown node here: maybe our graph changed
            else:
                return
            self._schedule()
        except Exception:  # never break the scheduler
            log.exception("GraphView update failed")

    def mark_ran(self, node_id: str) -> None:
        """Flash ``node_id`` as run (a handler a button of the same view just ran)."""
        entry = self._entries.get(node_id)
        if entry is None:
            return
        entry["status"] = "ran"
        entry["runs"] += 1
        entry["error"] = ""
        self._dirty.add(node_id)
        self._changed = True
        self._schedule()

    def _on_error(self, error: NodeError) -> None:
        entry = self._entries.get(error.node)
        if entry is None:
            return
        entry["status"] = "error"
        entry["error"] = _error_line(error, self._snapshot)
        self._changed = True
        self._schedule()

    def _on_result(self, _value: Any) -> None:
        """The result changed: maybe a re-run that only removed or renamed fields.

        Nothing unknown runs after such a re-run, so this is how it is noticed.
        """
        self._check_graph = True
        self._schedule()

    def _schedule(self) -> None:
        """Coalesce: in a kernel, one push after the current message; else right away."""
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Push pending status and value changes (and a new graph) to the browser."""
        self._scheduled = False
        if self._check_graph:
            self._check_graph = False
            if self._stored_generation() != self.generation:
                self._load()
                return
        if not self._changed:
            return
        self._changed = False
        for node_id in self._dirty:
            entry = self._entries.get(node_id)
            if entry is not None and len(entry["keys"]) > 1:
                entry["value"] = self._value(entry["keys"][1])
        self._dirty.clear()
        if self._redraw:
            self._redraw = False
            with contextlib.suppress(LookupError):  # the instance was stopped meanwhile
                self.svg = graph_svg(self.rt.snapshot(self.result), self._highlight) or ""
        self._push()

    def _stored_generation(self) -> int | None:
        entity_id = self.result.entity_id or ""
        meta = self.rt.read_tx().document(self._space, entity_id).meta or {}
        graph = meta.get("graph")
        return graph.get("generation") if isinstance(graph, dict) else None

    def refresh(self) -> None:
        """Reload the graph and every value now."""
        self.generation = 0
        self._load()

    def close(self) -> None:
        if self._on_run in self.rt.scheduler.on_run:
            self.rt.scheduler.on_run.remove(self._on_run)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        super().close()


def _error_line(error: NodeError, snapshot: GraphSnapshot | None) -> str:
    """``NameError: name 'tw0' is not defined`` and, under it, the user's line."""
    return error_text(error, snapshot).split(": ", 1)[-1]


# ---------------------------------------------------------------------------
# what %%pattern shows


class PatternView(w.VBox):  # type: ignore[misc]
    """Controls, live graph and report of one ``%%pattern`` run."""

    children: Any  # the traitlet of ipywidgets' Box (annotation only)

    def __init__(self, children: list[w.Widget], *, name: str = "", **kwargs: Any) -> None:
        super().__init__(children, **kwargs)
        self.name = name

    def supersede(self, note: str) -> None:
        """Stop following the instance and say so (``counter: superseded by In[7]``)."""
        for child in tuple(self.children):
            _close_tree(child)
        self.children = (w.HTML(f'<i class="ck-superseded">{html.escape(note)}</i>'),)

    def close(self) -> None:
        for child in self.children:
            _close_tree(child)
        super().close()

    def __repr__(self) -> str:
        return f"PatternView({self.name})"


def pattern_view(name: str, result: Cell[Any], snapshot: GraphSnapshot | None = None, *,
                 graph: bool = True, highlight: dict[str, str] | None = None,
                 svg: str | None = None, report: str | None = None,
                 errors: list[NodeError] | None = None) -> PatternView:
    """Controls, live graph and report of one run (what ``%%pattern`` displays)."""
    panel = ui(result, snapshot, errors)
    children: list[w.Widget] = [w.HTML(f"<b>{html.escape(name)}</b>"), panel]
    if graph:
        view = GraphView(result, highlight=highlight, svg=svg, snapshot=snapshot)
        children.append(view)
    if report:
        children.append(w.HTML(report))
    return PatternView(children, name=name)


def cell_view(cell: Cell[Any]) -> w.Widget | None:
    """The live view of a cell displayed by itself (typing its name in a cell).

    An instance's result: its controls and live graph; any other cell: its
    value, kept current. None for what has no live value (builder refs,
    streams, detached cells).
    """
    if isinstance(cell, Stream) or cell.entity_id is None:
        return None
    if getattr(cell, "capability", "cell") == "opaque":
        return None
    snapshot = _snapshot(cell) if not cell.path else None
    if snapshot is not None:
        return pattern_view(snapshot.title, cell, snapshot)
    label = w.HTML()
    unsink = show(cell, label)
    original_close = label.close

    def close() -> None:
        unsink()
        original_close()

    label.close = close
    return label


__all__ = ["GraphView", "PatternUI", "PatternView", "bind", "error_output", "field_kinds",
           "pattern_view", "run_guarded", "show", "ui"]
