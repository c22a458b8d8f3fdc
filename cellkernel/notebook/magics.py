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

``%cellkernel store URL | status | errors`` controls that runtime (see
``PatternMagics.cellkernel``; ``%cellkernel?`` shows it). Typing a cell's name
displays it: its value as text and a table, and in a kernel its live view
(a formatter this extension registers for ``Cell``).

Errors read like the user's own: body frames are compiled through IPython's
cache (``Cell In[N], line M``), cellkernel's own frames are dropped from the
traceback, and a node that fails while the instance starts is shown in the
output with its name, exception, message and the user's line; values it left
stale say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import keyword
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from IPython.core.displayhook import DisplayHook
from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    output_can_be_silenced,
)
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from cellkernel.data.identity import create_ref
from cellkernel.notebook import session as sessions
from cellkernel.notebook.body import build_pattern, compile_body
from cellkernel.notebook.display import error_text, graph_svg, stale_fields, user_traceback
from cellkernel.notebook.output import PatternDisplay
from cellkernel.notebook.report import report_html, stability_report, state_values
from cellkernel.notebook.session import existing_session, session
from cellkernel.notebook.widgets import cell_view, pattern_view
from cellkernel.reactive.cells import Cell
from cellkernel.runtime import Runtime

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from cellkernel.patterns.snapshot import GraphSnapshot

log = logging.getLogger("cellkernel.notebook.magics")




# ---------------------------------------------------------------------------
# the session: runtimes and the views shown last












# ---------------------------------------------------------------------------
# loading and unloading


@dataclass
class _Registration:
    magics: PatternMagics
    hooks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    #: the ``Cell`` printer of the mimebundle formatter before ``load`` (restored by unload)
    previous_printer: Any = None


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
    assert ip.display_formatter is not None
    formatter = ip.display_formatter.mimebundle_formatter
    registration.previous_printer = formatter.for_type(Cell, cell_bundle)
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
    formatter = ip.display_formatter.mimebundle_formatter if ip.display_formatter else None
    if formatter is not None and formatter.type_printers.get(Cell) is cell_bundle:
        formatter.pop(Cell)
        if registration.previous_printer is not None:
            formatter.for_type(Cell, registration.previous_printer)


def cell_bundle(cell: Cell[Any]) -> dict[str, Any]:
    """A cell's display in a kernel: its own text and HTML, plus the live view."""
    data: dict[str, Any] = dict(cell._repr_mimebundle_())
    try:
        widget = cell_view(cell)
    except Exception:  # the text still shows
        log.debug("no live view for %r", cell, exc_info=True)
        widget = None
    if widget is not None:
        session().shown.append(widget)
        data["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2, "version_minor": 0, "model_id": widget.model_id,
        }
    return data


def _post_run_cell(_result: Any) -> None:
    """Pick up commits of other processes and finish async nodes after each cell.

    Without a running event loop ``idle()`` drives async nodes itself; in a
    kernel (which has one) they finish in a task on that loop.
    """
    current = existing_session()
    if current is None:
        return
    for rt in list(current.runtimes.values()):
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












# ---------------------------------------------------------------------------
# the cause-stability report


















# ---------------------------------------------------------------------------
# values as text








# ---------------------------------------------------------------------------
# graph rendering








# ---------------------------------------------------------------------------
# what a %%pattern cell displays




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

        The output shows the values (stale ones marked), the graph, live
        widgets and, after a re-run, the report (kept / changed / added /
        removed, with the state carried over). A node that fails shows there
        with its name, the exception and your line; an error in the body is
        an ordinary traceback pointing into this cell. Re-running NAME in
        another cell turns this output into "superseded by In[n]".

        The runtime is in memory unless ``CELLKERNEL_STORE`` or
        ``%cellkernel store URL`` names a store; ``%cellkernel status`` and
        ``%cellkernel errors`` tell what it holds (see ``%cellkernel?``).
        """
        __tracebackhide__ = True
        args = parse_argstring(PatternMagics.pattern, line)  # type: ignore[no-untyped-call]
        name = str(args.name)
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"%%pattern NAME: {name!r} is not a valid Python name")
        return run_pattern_cell(self.shell, name, cell, space=args.space, ui=not args.no_ui,
                                graph=not args.no_graph, header=f"%%pattern {line}")

    @line_magic
    def cellkernel(self, line: str) -> None:
        """Control this notebook's cellkernel runtime.

        %cellkernel store URL
            Serve this notebook from the store at URL (``sqlite:///path/state.db``,
            ``postgresql://user@host:port/db``; ``memory:`` for none). The current
            runtimes close: names bound by earlier ``%%pattern`` cells stop
            following their instances, so re-run those cells. State then lives in
            the store: after a kernel restart, ``%load_ext cellkernel``, the same
            ``%cellkernel store URL`` and re-running the cells find every value
            where it was (same causes, same ids).
        %cellkernel status
            The store, the spaces served, this notebook's instances and how many
            node errors were recorded.
        %cellkernel errors
            Every node error recorded, oldest first: node name, exception,
            message and the line of your code that raised.

        ``CELLKERNEL_STORE`` (an environment variable) names the store the
        first runtime opens when no ``%cellkernel store`` was given.
        """
        words = line.split()
        command = words[0] if words else "status"
        if command == "store":
            if len(words) != 2:
                raise UsageError("%cellkernel store URL: give one store URL "
                                 "(sqlite:///path.db, postgresql://user@host/db or memory:)")
            sess = sessions.use_store(words[1])
            print(f"cellkernel: this notebook's runtime now uses "
                  f"{sessions.redact(sess.runtime().store.url)}; re-run the %%pattern cells")
        elif command == "status" and len(words) == 1:
            print(status_text())
        elif command == "errors" and len(words) == 1:
            print(errors_text())
        else:
            raise UsageError(f"%cellkernel: unknown command {line.strip()!r}; "
                             "use store URL, status or errors (%cellkernel? explains them)")


def status_text() -> str:
    """What ``%cellkernel status`` prints."""
    sess = session()
    rt = sess.runtime()
    runtimes = {id(r): r for r in sess.runtimes.values()}
    lines = [f"store: {sessions.redact(rt.store.url if sess.store_url() else None)}",
             "spaces: " + ", ".join(sorted(r.space for r in runtimes.values()))]
    if sess.instances:
        lines.append(f"instances: {len(sess.instances)}")
        for (space, name), result in sorted(sess.instances.items()):
            try:
                generation = f"generation {Runtime.of(result).snapshot(result).generation}"
            except Exception as exc:
                generation = f"stopped ({type(exc).__name__})"
            lines.append(f"  {name} (space {space}): {generation}")
    else:
        lines.append("instances: none (run a %%pattern cell)")
    count = sum(len(r.errors) for r in runtimes.values())
    lines.append(f"errors: {count}" + (" (%cellkernel errors lists them)" if count else ""))
    return "\n".join(lines)


def errors_text() -> str:
    """What ``%cellkernel errors`` prints."""
    sess = session()
    runtimes = {id(r): r for r in sess.runtimes.values()}
    errors = [e for r in runtimes.values() for e in r.errors]
    if not errors:
        return "no node errors"
    snapshots: dict[str, GraphSnapshot] = {}  # node id -> the snapshot naming it
    for result in sess.instances.values():
        with contextlib.suppress(Exception):  # a stopped instance names nothing
            snapshot = Runtime.of(result).snapshot(result)
            snapshots.update({node.id: snapshot for node in snapshot.nodes})
    lines = [f"{len(errors)} node error{'s' if len(errors) != 1 else ''}:"]
    for n, error in enumerate(errors, 1):
        text = error_text(error, snapshots.get(error.node)).replace("\n", "\n    ")
        lines.append(f"{n:>3}. {text}")
    return "\n".join(lines)


def execution_number(shell: Any) -> int:
    """The number of the cell being run (``In[N]``).

    IPython counts the next cell before it runs this one; the cell's own
    number is on the result it fills in.
    """
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    number = getattr(result, "execution_count", None)
    return number if isinstance(number, int) else int(shell.execution_count)


def run_pattern_cell(shell: Any, name: str, cell: str, *, space: str | None = None,
                     ui: bool = True, graph: bool = True,
                     header: str | None = None) -> PatternDisplay | None:
    """What ``%%pattern`` does, callable without the magic machinery.

    ``header`` is the magic's own line: with it, tracebacks count lines as the
    editor does (the body starts on line 2) and show that line too.
    """
    __tracebackhide__ = True
    sess = session()
    rt = sess.runtime(space)
    number = execution_number(shell)
    code = shell.transform_cell(cell)
    if header is not None:
        filename = shell.compile.cache(header + "\n" + code, number,
                                       raw_code=header + "\n" + cell)
    else:
        filename = shell.compile.cache(code, number, raw_code=cell)
    cause = notebook_cause(name, rt.space)
    result_id = "of:" + str(create_ref({}, cause))
    key = (rt.space, name)
    previous = _stored_snapshot(rt, result_id)
    old_values = state_values(rt, previous, rt.space) if previous is not None else {}
    errors_before = len(rt.errors)
    try:
        body = compile_body(code, filename, shell.user_ns, flags=shell.compile.flags,
                            first_line=1 if header is None else 2)
        built = build_pattern(name, body)
        result = rt.run(built, None, cause=cause)
    except Exception as exc:  # the user's frames only, as IPython hides its own
        exc.__traceback__ = user_traceback(exc.__traceback__)
        raise
    shell.user_ns[name] = result
    sess.instances[key] = result
    # the previous output's widgets stop following the instance, and say why
    sess.close_view(key, note=f"{name}: superseded by In[{number}]")
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
    stale = stale_fields(snapshot, {e.node for e in errors})
    svg = None
    if graph:
        svg = (graph_svg(snapshot, previous=previous) if previous is not None and not errors
               else graph_svg(snapshot, highlight))
    widget = None
    if ui:
        widget = pattern_view(name, result, snapshot, graph=graph, highlight=highlight, svg=svg,
                              report=report_html(rows, snapshot.generation) if rows else None,
                              errors=errors)
    display = PatternDisplay(name, result, svg=svg, rows=rows, generation=snapshot.generation,
                             errors=errors, widget=widget, snapshot=snapshot, stale=stale)
    sess.views[key] = display
    return display


def _stored_snapshot(rt: Runtime, result_id: str) -> GraphSnapshot | None:
    try:
        return rt.snapshot(rt.cell_at(result_id))
    except LookupError:
        return None


__all__ = ["PatternMagics", "cell_bundle", "errors_text", "execution_number", "load",
           "notebook_cause", "run_pattern_cell", "status_text", "unload"]
