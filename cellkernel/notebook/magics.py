"""The IPython extension: ``%%pattern`` runs a cell body as a live pattern (SPEC §9).

Load it with ``%load_ext cellkernel`` (silent, idempotent). To have it load on
first use of ``%%pattern`` without an explicit ``%load_ext``, put this in an
IPython/IPykernel profile (``ipython_config.py`` / ``ipython_kernel_config.py``)::

    c.MagicsManager.lazy_magics = {"pattern": "cellkernel"}

or load it always with ``c.InteractiveShellApp.extensions = ["cellkernel"]``.

``%%pattern NAME [--space S] [--no-ui] [--no-graph]`` compiles the body as a
function whose globals are the user namespace (so earlier cells' lifts and
handlers are usable, and functions defined in the body close over body-level
names, which the builder records as node inputs), traces it into a ``Pattern``
and runs it with the cause ``{"notebook": NAME, "space": S}``: re-running an
edited cell updates the same instance. The result is the body's final dict
expression, else every public name bound to a ref or stream of the body; a
body ending with a ``Pattern`` runs that pattern itself (its argument state then
lives under the notebook cause and survives edits of the pattern).
``x = Cell.of(v)`` takes ``"x"`` as its cause, so its value survives edits,
including edits of ``v``. ``NAME`` is bound to the live result cell; errors in
the body raise as in any cell; a trailing ``;`` shows nothing.

The output is one object: a deterministic ``text/plain`` summary (fields and
current values, after a re-run the cause-stability report, node errors of the
run), the graph as ``image/svg+xml`` (rendered in-process: no system Graphviz
needed), ``text/html`` for static viewers, and a widget view: editable
controls for state, one live table of derived values, buttons for streams,
the live ``GraphView`` and the report. ``--no-ui`` leaves out every widget (for
static notebooks); ``--no-graph`` leaves out the drawing. Re-running a name
closes its previous widgets, so old outputs stop following the instance.

One ``Runtime`` per kernel and space serves every ``%%pattern`` cell; it is
in-memory unless ``CELLKERNEL_STORE`` names a store URL (``sqlite:///path``).
``runtime(space)`` returns it. A ``post_run_cell`` hook settles the runtimes
after each cell (commits of other processes, async nodes). ``%unload_ext``
removes the magic and that hook but keeps the runtimes, because names in the
user namespace still point at their live cells; ``reset()`` drops them.
"""

from __future__ import annotations
import __future__

import ast
import asyncio
import contextlib
import html
import keyword
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from IPython.core.displayhook import DisplayHook
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class, output_can_be_silenced
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from cellkernel.data.identity import create_ref
from cellkernel.patterns.builder import OpaqueRef, Pattern, trace
from cellkernel.patterns.snapshot import short_id
from cellkernel.reactive.cells import Cell, Stream

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from cellkernel.patterns.snapshot import GraphSnapshot, SnapshotDiff
    from cellkernel.runtime import Runtime

log = logging.getLogger("cellkernel.notebook.magics")

_BODY = "__ck_body__"
_LOCALS = "__ck_locals__"
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag

#: Helpers whose cells hold state a user typed in (as opposed to derived values).
STATE_HELPERS = frozenset({"cell", "argument"})


# ---------------------------------------------------------------------------
# the session: runtimes and the views shown last


class Session:
    """Runtimes per space plus the widget views of the last run of each name.

    Lives in this module (not in the reloaded top-level package), so
    ``%reload_ext cellkernel`` keeps every instance live.
    """

    def __init__(self) -> None:
        self.runtimes: dict[str | None, Runtime] = {}
        self.views: dict[tuple[str, str], Any] = {}

    def runtime(self, space: str | None = None) -> Runtime:
        """The runtime serving ``space`` (the default space when None)."""
        from cellkernel.runtime import Runtime

        url = os.environ.get("CELLKERNEL_STORE") or None
        default = self.runtimes.get(None)
        if default is None:
            default = self.runtimes[None] = Runtime(url)
        if space is None or space == default.space:
            return default
        rt = self.runtimes.get(space)
        if rt is None:
            # runner.run has no space parameter: one Runtime per space, sharing the
            # in-memory store (a SQLite URL opens its own connection to the file)
            rt = self.runtimes[space] = Runtime(url if url is not None else default.store,
                                                space=space)
        return rt

    def close_view(self, key: tuple[str, str]) -> None:
        view = self.views.pop(key, None)
        if view is not None:
            try:
                view.close()
            except Exception:  # a dead comm must not break a re-run
                log.debug("closing the previous view failed", exc_info=True)

    def close(self) -> None:
        for key in list(self.views):
            self.close_view(key)
        closed: set[int] = set()
        for rt in self.runtimes.values():
            if id(rt) not in closed:
                closed.add(id(rt))
                rt.close()
        self.runtimes.clear()


_session: Session | None = None


def session() -> Session:
    global _session
    if _session is None:
        _session = Session()
    return _session


def runtime(space: str | None = None) -> Runtime:
    """The kernel's runtime for ``space`` (created on first use)."""
    return session().runtime(space)


def reset() -> None:
    """Stop every instance and drop the runtimes (the next ``%%pattern`` starts afresh)."""
    global _session
    if _session is not None:
        _session.close()
    _session = None


# ---------------------------------------------------------------------------
# loading and unloading


@dataclass
class _Registration:
    magics: PatternMagics
    hooks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)


_registrations: dict[int, _Registration] = {}


def load(ip: InteractiveShell) -> None:
    """Register ``%%pattern`` and the ``post_run_cell`` hook once per shell; print nothing."""
    current = _registrations.get(id(ip))
    if current is not None:
        if ip.magics_manager.magics["cell"].get("pattern") == current.magics.pattern:
            return
        unload(ip)
    magics = PatternMagics(shell=ip)
    ip.register_magics(magics)
    registration = _Registration(magics)
    ip.events.register("post_run_cell", _post_run_cell)
    registration.hooks.append(("post_run_cell", _post_run_cell))
    _registrations[id(ip)] = registration


def unload(ip: InteractiveShell) -> None:
    """Remove the magic and every hook ``load`` registered (runtimes stay; see ``reset``)."""
    registration = _registrations.pop(id(ip), None)
    if registration is None:
        return
    manager = ip.magics_manager
    for table in manager.magics.values():
        for name, fn in list(table.items()):
            if getattr(fn, "__self__", None) is registration.magics:
                del table[name]
    if manager.registry.get(type(registration.magics).__name__) is registration.magics:
        del manager.registry[type(registration.magics).__name__]
    for event, callback in registration.hooks:
        with contextlib.suppress(ValueError):  # already gone: nothing to undo
            ip.events.unregister(event, callback)


def _post_run_cell(_result: Any) -> None:
    """Pick up commits of other processes and finish async nodes after each cell.

    Without a running event loop ``idle()`` drives async nodes itself; in a
    kernel (which has one) they finish in a task on that loop.
    """
    if _session is None:
        return
    for rt in list(_session.runtimes.values()):
        try:
            rt.idle()
        except Exception:  # a hook must never break the user's next cell
            log.exception("cellkernel post_run_cell hook failed")
            continue
        if rt.scheduler.quiet():
            continue
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            continue
        task = loop.create_task(rt.aidle())
        _tasks.add(task)  # a task nobody references may be collected before it ends
        task.add_done_callback(_task_done)


_tasks: set[asyncio.Task[None]] = set()


def _task_done(task: asyncio.Task[None]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("async nodes failed to settle", exc_info=task.exception())


# ---------------------------------------------------------------------------
# compiling a cell body


class _ReturnLocals(ast.NodeTransformer):
    """``return v`` at body level becomes ``return (v, locals())``; nested defs untouched."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return node

    def visit_Return(self, node: ast.Return) -> ast.AST:
        value = node.value if node.value is not None else ast.Constant(None)
        return ast.copy_location(ast.Return(_with_locals(value)), node)


def _with_locals(value: ast.expr) -> ast.expr:
    call = ast.Call(ast.Name(_LOCALS, ast.Load()), [], [])
    return ast.Tuple([value, call], ast.Load())


def compile_body(code: str, filename: str, user_ns: dict[str, Any],
                 flags: int = 0) -> Callable[[], tuple[Any, dict[str, Any]]]:
    """Compile a cell body into a function returning ``(final value, its locals)``.

    The body keeps its own line numbers (tracebacks point into the cell) and
    its globals are ``user_ns``, so functions defined in it close over
    body-level names — which the builder turns into node inputs.
    """
    tree = ast.parse(code, filename, "exec")
    body: list[ast.stmt] = [_ReturnLocals().visit(stmt) for stmt in tree.body]
    if body and isinstance(body[-1], ast.Expr):
        last = body[-1]
        body[-1] = ast.copy_location(ast.Return(_with_locals(last.value)), last)
    else:
        body.append(ast.Return(_with_locals(ast.Constant(None))))
    args = ast.arguments(posonlyargs=[], args=[ast.arg(_LOCALS)], vararg=None, kwonlyargs=[],
                         kw_defaults=[], kwarg=None, defaults=[])
    fn_def = ast.FunctionDef(_BODY, args, body, [], None, None)
    fn_def.type_params = []  # type: ignore[attr-defined,unused-ignore]  # 3.12+ needs it
    fn_def.lineno, fn_def.col_offset = 1, 0
    module = ast.Module([fn_def], [])
    ast.fix_missing_locations(module)
    compiled = compile(module, filename, "exec", flags=flags & _FUTURE_FLAGS, dont_inherit=True)
    scope: dict[str, Any] = {}
    exec(compiled, user_ns, scope)
    fn = scope[_BODY]

    def run() -> tuple[Any, dict[str, Any]]:
        __tracebackhide__ = True
        value, names = fn(locals)
        return value, {k: v for k, v in names.items() if k != _LOCALS}

    return run


def _is_own_ref(value: Any, frame: Any) -> bool:
    return isinstance(value, OpaqueRef) and value._frame is frame


def build_pattern(name: str, body: Callable[[], tuple[Any, dict[str, Any]]]) -> Pattern:
    """Trace ``body`` into a pattern named ``name`` (SPEC §9 result rules).

    A final dict expression is the result; otherwise every public name bound
    to a ref or stream of the body. ``x = Cell.of(v)`` gets the cause ``"x"``.
    A final ``Pattern`` is returned as is: the caller runs it directly, so its
    argument state lives under the notebook cause and survives edits of it.
    """
    __tracebackhide__ = True
    final: dict[str, Any] = {}

    def run(frame: Any) -> Any:
        __tracebackhide__ = True
        value, names = body()
        if isinstance(value, Pattern):
            final["pattern"] = value
            return None
        for var, ref in names.items():
            if not _is_own_ref(ref, frame) or ref._path:
                continue
            bcell = ref._bcell
            if bcell.helper == "cell" and bcell.cause is None:
                # ids are derived when the instance starts, so naming after use is safe
                bcell.cause = var
                bcell.name = var
            elif bcell.name is None:
                bcell.name = var
        if isinstance(value, dict):
            return value
        return {var: ref for var, ref in names.items()
                if not var.startswith("_") and _is_own_ref(ref, frame)}

    argument_schema = {"type": "object", "properties": {}}
    graph, captures = trace(run, name, argument_schema, None)
    if "pattern" in final:
        return final["pattern"]  # type: ignore[no-any-return]
    if captures:  # pragma: no cover - a top-level frame has no outer refs
        raise UsageError(f"%%pattern {name}: the body used refs of an enclosing pattern")
    return Pattern(None, graph, name)


# ---------------------------------------------------------------------------
# the cause-stability report


@dataclass
class ReportRow:
    """One cell of the instance, before and after a re-run."""

    status: str  # kept | changed | new | removed
    name: str
    helper: str
    id: str
    old_id: str | None = None
    state: str = ""


def state_values(rt: Runtime, snapshot: GraphSnapshot, space: str) -> dict[str, Any]:
    """Current values of the state cells of a snapshot (read before a re-run)."""
    return {c.id: _value(rt, c.id, space) for c in snapshot.cells if _stateful(c)}


def _stateful(cell: Any) -> bool:
    return cell.helper in STATE_HELPERS or (cell.helper is None and cell.name == "argument")


def stability_report(diff: SnapshotDiff, old: GraphSnapshot, new: GraphSnapshot,
                     old_values: dict[str, Any], rt: Runtime, space: str) -> list[ReportRow]:
    """Per cell: kept / changed / new / removed (``GraphSnapshot.diff``) and its state.

    *kept* cells kept their id, so a state cell's value was carried over;
    *changed* cells have the same name but a new id (an edited lift, new
    inputs, or a state cell without a variable name whose initial value
    changed: its state starts again). The argument cell is left out while it
    holds nothing, as it does for every plain ``%%pattern`` body.
    """
    cells = {c.id: c for c in old.cells} | {c.id: c for c in new.cells}
    rows: list[ReportRow] = []
    for entry in diff.entries():
        if entry.kind != "cell":
            continue
        cell = cells.get(entry.id)
        stateful = cell is not None and _stateful(cell)
        status = "new" if entry.status == "added" else entry.status
        now = _value(rt, entry.id, space) if stateful and status != "removed" else None
        before = old_values.get(entry.previous or entry.id)
        if stateful and cell is not None and cell.helper is None and before in (None, {}) \
                and now in (None, {}):
            continue  # the empty argument of a plain body
        state = ""
        if stateful:
            state = {
                "kept": f"carried: {preview(now)}",
                "changed": f"reset: {preview(before)} → {preview(now)}",
                "new": f"initial: {preview(now)}",
                "removed": f"dropped: {preview(before)}",
            }[status]
        rows.append(ReportRow(status, entry.name, entry.helper or "-", entry.id,
                              entry.previous, state))
    return rows


def _value(rt: Runtime, entity_id: str, space: str) -> Any:
    try:
        return rt.cell_at(entity_id, space=space).sample()
    except Exception:
        return None


def report_text(rows: list[ReportRow], generation: int) -> str:
    statuses = ("kept", "changed", "new", "removed")
    counts = {s: sum(1 for r in rows if r.status == s) for s in statuses}
    head = f"re-run (generation {generation}): " + ", ".join(f"{n} {s}" for s, n in counts.items())
    width = max((len(r.name) for r in rows), default=4)
    lines = [head]
    for r in rows:
        ident = short_id(r.id) + (f" (was {short_id(r.old_id)})" if r.old_id else "")
        line = f"  {r.status:<8} {r.name:<{width}}  {ident}"
        if r.state:
            line += f"  {r.state}"
        lines.append(line.rstrip())
    return "\n".join(lines)


_COLOURS = {"kept": "#f4f4f4", "changed": "#ffe3b3", "new": "#d6f5d6", "removed": "#f9d0d0"}


def report_html(rows: list[ReportRow], generation: int) -> str:
    cells = []
    for r in rows:
        ident = html.escape(short_id(r.id))
        if r.old_id:
            ident += f" <small>(was {html.escape(short_id(r.old_id))})</small>"
        cells.append(
            f'<tr style="background:{_COLOURS[r.status]}"><td>{r.status}</td>'
            f"<td><code>{html.escape(r.name)}</code></td><td>{html.escape(r.helper)}</td>"
            f"<td><code>{ident}</code></td><td>{html.escape(r.state)}</td></tr>"
        )
    return (
        f'<table class="cellkernel-report"><caption>re-run, generation {generation}</caption>'
        "<tr><th>status</th><th>cell</th><th>helper</th><th>id</th><th>state</th></tr>"
        + "".join(cells) + "</table>"
    )


# ---------------------------------------------------------------------------
# values as text


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


# ---------------------------------------------------------------------------
# graph rendering


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
    from cellkernel.patterns.snapshot import SVG_LIMIT

    if len(snapshot.cells) + len(snapshot.nodes) > SVG_LIMIT:
        return None  # unreadable, and the layout would take minutes
    try:
        from cellkernel.patterns.render import dot_to_svg

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
# what a %%pattern cell displays


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


# ---------------------------------------------------------------------------
# the magic


def notebook_cause(name: str, space: str) -> dict[str, str]:
    return {"notebook": name, "space": space}


@magics_class
class PatternMagics(Magics):
    """``%%pattern``: a cell body becomes a live, re-runnable pattern instance."""

    @magic_arguments("%pattern")  # type: ignore[no-untyped-call, untyped-decorator]
    @argument(  # type: ignore[no-untyped-call, untyped-decorator]
        "name", help="Variable bound to the live result cell; also the instance's cause."
    )
    @argument(  # type: ignore[no-untyped-call, untyped-decorator]
        "--space", default=None, help="Space to run in (default: the runtime's space)."
    )
    @argument(  # type: ignore[no-untyped-call, untyped-decorator]
        "--no-ui", dest="no_ui", action="store_true",
        help="Show no widgets (text, SVG graph and report only).",
    )
    @argument(  # type: ignore[no-untyped-call, untyped-decorator]
        "--no-graph", dest="no_graph", action="store_true", help="Do not draw the graph."
    )
    @output_can_be_silenced
    @cell_magic
    def pattern(self, line: str, cell: str) -> PatternDisplay | None:
        """Run the cell body as a pattern body and bind NAME to its live result.

        The result is the body's final dict expression, or else every public
        name bound to a ref or stream; a body ending with a Pattern runs that
        pattern. ``x = Cell.of(v)`` takes "x" as its cause, so its value survives
        edits of the cell. A trailing ';' hides the output.
        """
        __tracebackhide__ = True
        args = parse_argstring(PatternMagics.pattern, line)  # type: ignore[no-untyped-call]
        name = str(args.name)
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"%%pattern NAME: {name!r} is not a valid Python name")
        return run_pattern_cell(self.shell, name, cell, space=args.space, ui=not args.no_ui,
                                graph=not args.no_graph)


def run_pattern_cell(shell: Any, name: str, cell: str, *, space: str | None = None,
                     ui: bool = True, graph: bool = True) -> PatternDisplay | None:
    """What ``%%pattern`` does, callable without the magic machinery."""
    __tracebackhide__ = True
    sess = session()
    rt = sess.runtime(space)
    code = shell.transform_cell(cell)
    filename = shell.compile.cache(code, shell.execution_count, raw_code=cell)
    body = compile_body(code, filename, shell.user_ns, flags=shell.compile.flags)
    built = build_pattern(name, body)
    cause = notebook_cause(name, rt.space)
    result_id = "of:" + str(create_ref({}, cause))
    key = (rt.space, name)
    previous = _stored_snapshot(rt, result_id)
    old_values = state_values(rt, previous, rt.space) if previous is not None else {}
    errors_before = len(rt.errors)
    result = rt.run(built, None, cause=cause)
    shell.user_ns[name] = result
    sess.close_view(key)  # the previous output's widgets stop following the instance
    if DisplayHook.semicolon_at_end_of_expression(cell):  # type: ignore[no-untyped-call]
        return None
    snapshot = rt.snapshot(result)
    node_ids = {n.id for n in snapshot.nodes}
    errors = [e for e in rt.errors[errors_before:] if getattr(e, "node", None) in node_ids]
    diff = previous.diff(snapshot) if previous is not None else None
    rows = (stability_report(diff, previous, snapshot, old_values, rt, rt.space)
            if diff is not None and previous is not None else None)
    highlight = diff.highlight() if diff is not None else {}
    for error in errors:
        highlight[error.node] = "error"
    svg = None
    if graph:
        svg = (graph_svg(snapshot, previous=previous) if previous is not None and not errors
               else graph_svg(snapshot, highlight))
    widget = None
    if ui:
        from cellkernel.notebook.widgets import pattern_view

        widget = pattern_view(name, result, snapshot, graph=graph, highlight=highlight, svg=svg,
                              report=report_html(rows, snapshot.generation) if rows else None)
    display = PatternDisplay(name, result, svg=svg, rows=rows, generation=snapshot.generation,
                             errors=errors, widget=widget)
    sess.views[key] = display
    return display


def _stored_snapshot(rt: Runtime, result_id: str) -> GraphSnapshot | None:
    try:
        return rt.snapshot(rt.cell_at(result_id))  # type: ignore[no-any-return]
    except LookupError:
        return None


__all__ = [
    "PatternDisplay",
    "PatternMagics",
    "ReportRow",
    "Session",
    "build_pattern",
    "compile_body",
    "graph_svg",
    "load",
    "preview",
    "reset",
    "run_pattern_cell",
    "runtime",
    "session",
    "stability_report",
    "summary",
    "unload",
]
