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

import asyncio
import contextlib
import keyword
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from IPython.core.displayhook import DisplayHook
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class, output_can_be_silenced
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from cellkernel.data.identity import create_ref
from cellkernel.notebook.body import build_pattern, compile_body
from cellkernel.notebook.display import graph_svg
from cellkernel.notebook.output import PatternDisplay
from cellkernel.notebook.report import report_html, stability_report, state_values
from cellkernel.notebook.session import existing_session, session
from cellkernel.notebook.widgets import pattern_view

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from cellkernel.patterns.snapshot import GraphSnapshot
    from cellkernel.runtime import Runtime

log = logging.getLogger("cellkernel.notebook.magics")




# ---------------------------------------------------------------------------
# the session: runtimes and the views shown last












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


__all__ = ["PatternMagics", "load", "notebook_cause", "run_pattern_cell", "unload"]
