"""The IPython extension, driven headlessly (SPEC §9): load/unload, %%pattern, reports."""

from __future__ import annotations

import linecache
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.testing.globalipapp import get_ipython

from cellkernel.notebook import magics as jupyter
from cellkernel.notebook import session
from cellkernel.notebook.display import PACKAGE_DIR
from cellkernel.notebook.magics import PatternMagics
from cellkernel.notebook.output import PatternDisplay

ip = get_ipython()  # type: ignore[no-untyped-call]  # as in benchmarks/bench_jupyter.py
assert ip is not None

LIFTS = '''
from cellkernel import Cell, handler, lift, pattern

@lift
def double(x: int) -> int:
    return x * 2

@handler
def increment(event, count):
    count.set(count.get() + (event or {}).get("amount", 1))
'''

COUNTER = '''
count = Cell.of(5)
doubled = double(count)
{"count": count, "doubled": doubled, "increment": increment(count=count)}
'''


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    """Every test starts with the extension loaded and no runtime."""
    session.reset()
    if "cellkernel" not in ip.extension_manager.loaded:
        ip.run_line_magic("load_ext", "cellkernel")
    ip.run_cell(LIFTS)
    yield
    session.reset()


def run(name_and_flags: str, body: str) -> Any:
    return ip.run_cell_magic("pattern", name_and_flags, textwrap.dedent(body))


def our_hooks() -> list[Any]:
    return [cb for cb in ip.events.callbacks["post_run_cell"]
            if getattr(cb, "__module__", "") == "cellkernel.notebook.magics"]


def pattern_magic() -> Any:
    return ip.magics_manager.magics["cell"].get("pattern")


# ---------------------------------------------------------------------------
# loading


def test_import_cellkernel_is_light() -> None:
    code = ("import cellkernel, sys; "
            "heavy = [m for m in ('IPython', 'pydantic', 'ipywidgets', 'anywidget') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_is_silent_and_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("unload_ext", "cellkernel")
    capsys.readouterr()
    ip.run_line_magic("load_ext", "cellkernel")
    assert capsys.readouterr() == ("", "")
    ip.run_line_magic("load_ext", "cellkernel")  # IPython itself says "already loaded"
    jupyter.load(ip)  # a direct second call is a no-op as well
    assert isinstance(getattr(pattern_magic(), "__self__", None), PatternMagics)
    assert len(our_hooks()) == 1


def test_unload_removes_the_magic_and_every_hook() -> None:
    assert pattern_magic() is not None and our_hooks()
    ip.run_line_magic("unload_ext", "cellkernel")
    assert "pattern" not in ip.magics_manager.magics["cell"]
    assert "PatternMagics" not in ip.magics_manager.registry
    assert our_hooks() == []
    ip.run_line_magic("load_ext", "cellkernel")
    assert pattern_magic() is not None


def test_reload_leaves_exactly_one_working_registration() -> None:
    ip.run_line_magic("reload_ext", "cellkernel")
    ip.run_line_magic("reload_ext", "cellkernel")
    assert len(our_hooks()) == 1
    cell_magics = [f for f in ip.magics_manager.magics["cell"].values()
                   if isinstance(getattr(f, "__self__", None), PatternMagics)]
    assert len(cell_magics) == 1
    out = run("Counter --no-ui --no-graph", COUNTER)
    assert out.text().startswith("Counter: count=5, doubled=10, increment=<stream>")


def test_lazy_magic_loads_the_extension() -> None:
    ip.run_line_magic("unload_ext", "cellkernel")
    manager = ip.magics_manager
    manager.lazy_magics = {**manager.lazy_magics, "pattern": "cellkernel"}
    manager._loaded_lazy.discard("cellkernel")  # unload does not tell IPython's lazy loader
    try:
        result = ip.run_cell("%%pattern Lazy --no-ui --no-graph\nx = Cell.of(1)\n{'x': x}")
        assert result.success
        assert ip.user_ns["Lazy"].get() == {"x": 1}
    finally:
        manager.lazy_magics.pop("pattern", None)
        ip.run_line_magic("load_ext", "cellkernel")


def test_help_shows_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_cell("%%pattern?")
    out = capsys.readouterr().out
    assert "%%pattern [--space SPACE] [--no-ui] [--no-graph] name" in out
    assert "--no-graph" in out and "Cell.of" in out


def test_bad_name_is_a_usage_error() -> None:
    result = ip.run_cell("%%pattern 1abc\nx = 1")
    assert not result.success


# ---------------------------------------------------------------------------
# running cells


def test_pattern_binds_name_to_the_live_result() -> None:
    out = run("Counter", COUNTER)
    assert isinstance(out, PatternDisplay)
    counter = ip.user_ns["Counter"]
    assert counter.get()["doubled"] == 10
    counter.increment.send({"amount": 2})
    assert counter.count.get() == 7 and counter.doubled.get() == 14
    assert out.text().splitlines()[0] == "Counter: count=7, doubled=14, increment=<stream>"
    bundle = out._repr_mimebundle_()
    assert bundle["text/plain"] == out.text()
    assert bundle["image/svg+xml"].startswith("<svg")
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert out._repr_mimebundle_(include=["text/plain"]) == {"text/plain": out.text()}
    assert "image/svg+xml" not in out._repr_mimebundle_(exclude=["image/svg+xml"])


def test_rerun_of_an_edited_cell_keeps_the_instance_and_its_state() -> None:
    run("Counter --no-ui", COUNTER)
    first = ip.user_ns["Counter"]
    first.count.set(9)
    edited = COUNTER.replace(
        'doubled = double(count)',
        'doubled = double(count)\n'
        '@lift\n'
        'def plus(x: int) -> int:\n'
        '    return x + 100\n'
        'more = plus(count)',
    ).replace('"doubled": doubled,', '"doubled": doubled, "more": more,')
    out = run("Counter --no-ui", edited)
    second = ip.user_ns["Counter"]
    assert second.entity_id == first.entity_id
    assert second.count.get() == 9 and second.get()["more"] == 109
    statuses = {row.name: row.status for row in out.rows}
    assert statuses["count"] == "kept" and statuses["doubled"] == "kept"
    assert statuses["more"] == "added"
    count_row = next(r for r in out.rows if r.name == "count")
    assert count_row.state == "carried: 9"
    text = out.text()
    assert "re-run (generation 2)" in text and "carried: 9" in text
    html = out._repr_mimebundle_()["text/html"]
    assert "cellkernel-report" in html and "added" in html

    # editing a lift's body changes it and what depends on it, nothing else
    body_edit = edited.replace("x + 100", "x + 1000")
    out = run("Counter --no-ui", body_edit)
    statuses = {row.name: row.status for row in out.rows}
    assert statuses["more"] == "changed"
    assert statuses["count"] == "kept" and statuses["doubled"] == "kept"
    assert ip.user_ns["Counter"].get()["more"] == 1009
    changed = next(r for r in out.rows if r.name == "more")
    assert changed.old_id and changed.old_id != changed.id

    # removing a field reports it removed
    out = run("Counter --no-ui", COUNTER)
    assert {r.name: r.status for r in out.rows}.get("more") == "removed"
    assert ip.user_ns["Counter"].count.get() == 9


def test_rerun_releases_the_previous_widgets() -> None:
    rt = session.runtime()
    baseline = len(rt.scheduler.on_run)
    first = run("Counter", COUNTER)
    callbacks = (len(rt.scheduler.on_run), len(rt._error_callbacks))
    for _ in range(3):
        run("Counter", COUNTER)
    assert (len(rt.scheduler.on_run), len(rt._error_callbacks)) == callbacks
    assert first.widget is None  # closed
    ip.run_cell("%%pattern Counter\ncount = Cell.of(5)\n{'count': count};")
    assert len(rt.scheduler.on_run) == baseline  # silenced: no view at all


def test_unchanged_rerun_keeps_every_id() -> None:
    run("Counter --no-ui", COUNTER)
    out = run("Counter --no-ui", COUNTER)
    assert out.rows and {r.status for r in out.rows} == {"kept"}


def test_state_takes_its_variable_name_as_cause() -> None:
    run("S --no-ui --no-graph", "n = Cell.of(1)\n{'n': n}")
    ip.user_ns["S"].n.set(41)
    out = run("S --no-ui --no-graph", "n = Cell.of(2)\n{'n': n}")  # a new initial value
    assert ip.user_ns["S"].n.get() == 41
    assert [(r.name, r.status) for r in out.rows] == [("n", "kept")]
    snapshot = session.runtime().snapshot(ip.user_ns["S"])
    cause = next(c.cause for c in snapshot.cells if c.name == "n")
    assert cause["cause"] == "n"


def test_result_defaults_to_public_names_bound_to_refs() -> None:
    run("Names --no-ui", '''
        count = Cell.of(3)
        doubled = double(count)
        _hidden = double(doubled)
        bump = increment(count=count)
        label = "not a ref"
    ''')
    value = ip.user_ns["Names"].get()
    assert list(value) == ["count", "doubled", "bump"]
    value["bump"].send({})
    assert ip.user_ns["Names"].doubled.get() == 8


def test_functions_in_the_body_close_over_body_names() -> None:
    run("Closure --no-ui", '''
        from cellkernel import computed
        base = Cell.of(10)
        offset = 1

        @handler
        def reset(event):
            base.set(0)  # a handler sees a captured ref as a writable cell

        total = computed(lambda: base + offset)  # a lift sees its current value
        {"base": base, "total": total, "reset": reset()}
    ''')
    result = ip.user_ns["Closure"]
    assert result.total.get() == 11
    result.base.set(4)
    assert result.total.get() == 5
    result.reset.send({})
    assert result.base.get() == 0 and result.total.get() == 1


def test_prior_cells_lifts_and_patterns_are_usable() -> None:
    ip.run_cell('''
@pattern
def Counter(count: int = 0):
    return {"count": count, "doubled": double(count), "increment": increment(count=count)}
''')
    out = run("Inst --no-ui", "Counter")
    result = ip.user_ns["Inst"]
    assert result.get()["doubled"] == 0
    result.increment.send({"amount": 4})
    assert result.count.get() == 4
    # redefine the pattern: the instance (and its argument state) survives
    ip.run_cell('''
@pattern
def Counter(count: int = 0):
    return {"count": count, "doubled": double(count), "tripled": double(double(count)),
            "increment": increment(count=count)}
''')
    out = run("Inst --no-ui", "Counter")
    assert ip.user_ns["Inst"].entity_id == result.entity_id
    assert ip.user_ns["Inst"].get()["tripled"] == 16
    assert any(r.name == "argument" and r.status == "kept" for r in out.rows)
    assert "carried: {'count': 4}" in out.text()


def test_space_flag_runs_in_that_space() -> None:
    run("Here --no-ui --no-graph", COUNTER)
    run("There --space did:local:other --no-ui --no-graph", COUNTER)
    assert ip.user_ns["There"].space == "did:local:other"
    assert ip.user_ns["Here"].space == session.runtime().space
    assert session.runtime("did:local:other").space == "did:local:other"
    ip.user_ns["There"].increment.send({})
    assert ip.user_ns["There"].count.get() == 6 and ip.user_ns["Here"].count.get() == 5


def test_no_ui_and_no_graph_flags() -> None:
    bundle = run("A --no-ui", COUNTER)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert "image/svg+xml" in bundle
    bundle = run("B --no-graph", COUNTER)._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_body_errors_propagate_as_ordinary_tracebacks() -> None:
    result = ip.run_cell("%%pattern Broken\nx = Cell.of(1)\ny = 1 / 0\n{'x': x}")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    last = traceback.extract_tb(result.error_in_exec.__traceback__)[-1]
    assert last.lineno == 3 and last.line is not None and "1 / 0" in last.line  # editor lines
    assert "Broken" not in ip.user_ns
    with pytest.raises(NameError):
        run("Broken", "undefined_name")


def test_node_errors_show_in_the_output() -> None:
    ip.run_cell('''
@lift
def boom(x: int) -> int:
    raise RuntimeError(f"no {x}")
''')
    out = run("Err --no-ui", "n = Cell.of(2)\n{'n': n, 'b': boom(n)}")
    assert "error in boom: RuntimeError: no 2" in out.text()
    assert "ck&#45;error" in (out.svg or "")  # graphviz escapes the dash of class="ck-error"


def test_trailing_semicolon_silences_the_output() -> None:
    result = ip.run_cell("%%pattern Quiet\nx = Cell.of(1)\n{'x': x};")
    assert result.success and result.result is None
    assert ip.user_ns["Quiet"].get() == {"x": 1}
    assert run("Quiet2", "x = Cell.of(1)\n{'x': x};") is None
    loud = ip.run_cell("%%pattern Loud --no-ui\nx = Cell.of(1)\n{'x': x}")
    assert isinstance(loud.result, PatternDisplay)


def test_text_plain_is_deterministic() -> None:
    first = run("Det --no-ui", COUNTER)._repr_mimebundle_()
    session.reset()
    second = run("Det --no-ui", COUNTER)._repr_mimebundle_()
    assert first["text/plain"] == second["text/plain"]
    assert first["image/svg+xml"] == second["image/svg+xml"]


def test_svg_renders_without_system_graphviz(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Any) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    import shutil

    assert shutil.which("dot") is None
    svg = run("NoDot --no-ui", COUNTER).svg
    assert svg is not None and svg.startswith("<svg") and "</svg>" in svg


def test_post_run_cell_finishes_async_nodes() -> None:
    ip.run_cell('''
import asyncio

@lift
async def slow(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1
''')
    ip.run_cell("%%pattern Async --no-ui --no-graph\nn = Cell.of(1)\n{'n': n, 's': slow(n)}")
    ip.run_cell("pass")
    assert ip.user_ns["Async"].get()["s"] == 2


def test_sqlite_store_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("CELLKERNEL_STORE", url)
    run("Kept --no-ui --no-graph", COUNTER)
    ip.user_ns["Kept"].count.set(12)
    session.reset()  # a new kernel on the same file
    out = run("Kept --no-ui --no-graph", COUNTER)
    assert ip.user_ns["Kept"].count.get() == 12
    assert out.rows is not None and {r.status for r in out.rows} == {"kept"}


# ---------------------------------------------------------------------------
# as users meet it (issue 21)

TYPO = '''
count = Cell.of(1)
doubled = derive(count, lambda c: c * tw0)
{"count": count, "doubled": doubled}
'''


def test_a_failing_lift_is_in_view_with_the_users_line_and_stale_marks() -> None:
    ip.run_cell("from cellkernel import derive")
    result = ip.run_cell("%%pattern Typo\n" + TYPO.strip())
    out = result.result
    assert isinstance(out, PatternDisplay)
    text = out.text()
    assert "Typo: count=1, doubled=None (stale)" in text
    assert "error in doubled: NameError: name 'tw0' is not defined" in text
    assert f"Cell In[{result.execution_count}], line 3: doubled = derive(count, " in text
    html = out.html()
    assert "stale" in html and "NameError" in html
    panel = out.widget.children[1]
    shown = panel.errors.outputs  # in view at once, nothing to expand
    assert shown and shown[0]["ename"] == "NameError"
    assert shown[0]["evalue"].startswith("doubled: ")
    assert not any("/cellkernel/" in line for line in shown[0]["traceback"])
    assert "stale" in panel.values.value


def test_body_tracebacks_name_the_cell_and_hide_cellkernel_frames() -> None:
    result = ip.run_cell("%%pattern Broken\ncount = Cell.of(0)\ndoubled = count.get() * 2\n")
    exc = result.error_in_exec
    assert exc is not None
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    own = [f for f in frames if f.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR)]
    # only the magic's own entry frames remain, and IPython hides those
    assert all("__tracebackhide__" in f.tb_frame.f_locals for f in own)
    last = frames[-1]
    assert last.tb_lineno == 3  # as the editor counts: the magic's line is line 1
    assert linecache.getline(last.tb_frame.f_code.co_filename, 3) == "doubled = count.get() * 2\n"
    assert ip.compile._filename_map[last.tb_frame.f_code.co_filename] == result.execution_count


def test_a_cell_displays_itself_with_a_live_view() -> None:
    out = run("Shown", COUNTER)
    cell = ip.user_ns["Shown"]
    data, _meta = ip.display_formatter.format(cell)
    assert data["text/plain"] == "{'count': 5, 'doubled': 10, 'increment': <stream>}"
    assert "<table" in data["text/html"] and "doubled" in data["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in data
    field, _ = ip.display_formatter.format(cell.count)
    assert field["text/plain"] == "5" and "application/vnd.jupyter.widget-view+json" in field
    ip.run_line_magic("unload_ext", "cellkernel")
    try:
        data, _meta = ip.display_formatter.format(cell)
        assert "application/vnd.jupyter.widget-view+json" not in data  # the hook is gone
        assert data["text/plain"] == "{'count': 5, 'doubled': 10, 'increment': <stream>}"
    finally:
        ip.run_line_magic("load_ext", "cellkernel")
    assert out.result is cell


def test_rerun_in_another_cell_says_superseded() -> None:
    first = ip.run_cell("%%pattern Again\n" + COUNTER.strip()).result
    view = first.widget
    second = ip.run_cell("%%pattern Again\n" + COUNTER.strip())
    assert first.widget is None
    assert [type(c).__name__ for c in view.children] == ["HTML"]
    assert f"Again: superseded by In[{second.execution_count}]" in view.children[0].value


def test_saved_html_reads_well_untrusted() -> None:
    out = run("Saved", COUNTER)
    html = out.html()
    assert "<svg" not in html  # stripped by sanitisers: the graph is an image
    assert '<img class="cellkernel-graph"' in html and "data:image/svg+xml;base64," in html
    assert '<table class="cellkernel-values">' in html and "<code>10</code>" in html
    panel = out.widget.children[1]
    assert repr(panel) == "ui(count=5, doubled=10, increment=<stream>)"
    assert "<table" in panel._repr_mimebundle_()["text/html"]


def test_report_speaks_the_words_of_diff() -> None:
    run("Words --no-ui", COUNTER)
    out = run("Words --no-ui", COUNTER.replace("{", '{"more": Cell.of(1), '))
    assert "1 added" in out.text() and " new" not in out.text()


def test_cellkernel_magic_store_status_errors(tmp_path: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    ip.run_line_magic("cellkernel", f"store {url}")
    assert "now uses sqlite:///" in capsys.readouterr().out
    run("Kept --no-ui", COUNTER)
    ip.user_ns["Kept"].count.set(41)
    ip.run_line_magic("cellkernel", "status")
    status = capsys.readouterr().out
    assert f"store: {url}" in status and "Kept (space " in status and "errors: 0" in status
    # a kernel restart: every runtime gone; the same store brings the state back
    session.reset()
    ip.run_line_magic("cellkernel", f"store {url}")
    run("Kept --no-ui", COUNTER)
    assert ip.user_ns["Kept"].count.get() == 41
    ip.run_cell("from cellkernel import derive")
    ip.run_cell("%%pattern Typo --no-ui\n" + TYPO.strip())
    capsys.readouterr()
    ip.run_line_magic("cellkernel", "errors")
    listed = capsys.readouterr().out
    assert "1 node error:" in listed and "doubled: NameError" in listed and "Cell In[" in listed
    with pytest.raises(UsageError, match="unknown command"):
        ip.run_line_magic("cellkernel", "frobnicate")


def test_magics_document_the_control_magic() -> None:
    for word in ("store URL", "status", "errors", "kernel restart"):
        assert word in (PatternMagics.cellkernel.__doc__ or "")
    assert "%cellkernel" in (PatternMagics.pattern.__doc__ or "")
