"""Widgets driven from Python (SPEC §9): bind, ui, GraphView, errors in Output areas."""

from __future__ import annotations

import asyncio
import pathlib
import re
from typing import Annotated, Any

import ipywidgets as w  # type: ignore[import-untyped]
import pytest
from pydantic import Field

from cellkernel import Cell, Runtime, handler, lift, pattern
from cellkernel.notebook.widgets import GraphView, PatternUI, ui
from cellkernel.widgets import bind


@lift
def double(x: int) -> int:
    return x * 2


@lift
def fragile(x: int) -> int:
    if x > 10:
        raise ValueError(f"{x} is too big")
    return x


@handler
def increment(event: Any, count: Cell[int]) -> None:
    count.set(count.get() + (event or {}).get("amount", 1))


@handler
def explode(event: Any, count: Cell[int]) -> None:
    count.set(-1)
    raise RuntimeError("the handler failed")


@pattern
def Counter(count: int = 0):  # type: ignore[no-untyped-def]
    return {"count": count, "doubled": double(count), "increment": increment(count=count)}


@pattern
def Kitchen(count: int = 1):  # type: ignore[no-untyped-def]
    name = Cell.of("ada")
    ratio = Cell.of(0.5)
    on = Cell.of(True)
    items = Cell.of([1, 2, 3])
    settings = Cell.of({"depth": 2, "label": "x"})
    return {
        "count": count, "name": name, "ratio": ratio, "on": on, "items": items,
        "settings": settings, "doubled": double(count), "checked": fragile(count),
        "increment": increment(count=count), "explode": explode(count=count),
    }


def shown(view: PatternUI, name: str) -> str:
    """The cell of ``name`` in the view's table of read-only values."""
    match = re.search(rf"<tr><th[^>]*>{re.escape(name)}</th><td>(.*?)</td></tr>", view.values.value)
    assert match, view.values.value
    return match.group(1)


# ---------------------------------------------------------------------------
# bind


def test_bind_is_two_way_without_echo(rt: Runtime) -> None:
    cell = rt.get_cell("bound")
    cell.set(1)
    seen: list[Any] = []
    cell.sink(seen.append)
    box = w.IntText()
    changes: list[Any] = []
    box.observe(lambda c: changes.append(c["new"]), names="value")
    unbind = bind(cell, box)
    assert box.value == 1
    box.value = 5
    assert cell.get() == 5
    assert seen == [1, 5]  # one write, no bounce
    cell.set(7)
    assert box.value == 7
    assert changes == [1, 5, 7]
    unbind()
    unbind()  # idempotent
    box.value = 9
    assert cell.get() == 7
    cell.set(8)
    assert box.value == 9


def test_bind_rejected_write_restores_and_shows_the_error(rt: Runtime) -> None:
    cell = rt.get_cell("positive", schema={"type": "integer", "minimum": 0})
    cell.set(3)
    box = w.IntText()
    out = w.Output()
    bind(cell, box, output=out)
    box.value = -4
    assert cell.get() == 3 and box.value == 3
    assert out.outputs and out.outputs[0]["output_type"] == "error"
    box.value = 4
    assert cell.get() == 4 and out.outputs == ()
    bare = w.IntText()
    bind(cell, bare)
    with pytest.raises(ValueError):
        bare.value = -1
    assert bare.value == 4


def test_bind_other_traits(rt: Runtime) -> None:
    cell = rt.get_cell("label")
    cell.set("hello")
    button = w.Button()
    bind(cell, button, trait="description")
    assert button.description == "hello"
    cell.set("bye")
    assert button.description == "bye"


# ---------------------------------------------------------------------------
# ui


def test_ui_builds_controls_from_the_result(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 2}, cause="kitchen")
    view = ui(result)
    assert isinstance(view, PatternUI)
    c = view.controls
    assert isinstance(c["count"], w.IntText) and c["count"].value == 2
    assert isinstance(c["name"], w.Text) and c["name"].value == "ada"
    assert isinstance(c["ratio"], w.FloatText) and c["ratio"].value == 0.5
    assert isinstance(c["on"], w.Checkbox) and c["on"].value is True
    assert isinstance(c["settings.depth"], w.IntText) and c["settings.depth"].value == 2
    assert isinstance(c["settings.label"], w.Text)
    assert isinstance(c["increment"], w.Button)
    # derived fields and lists: rows of one live, read-only table
    assert c["doubled"] is view.values and c["items"] is view.values
    assert shown(view, "doubled") == "<code>4</code>"
    assert shown(view, "items").count("<li>") == 3

    c["count"].value = 6
    assert result.count.get() == 6 and shown(view, "doubled") == "<code>12</code>"
    c["name"].value = "grace"
    assert result.name.get() == "grace"
    c["settings.depth"].value = 3
    assert result.settings.get() == {"depth": 3, "label": "x"}
    result.items.push(4)
    assert shown(view, "items").count("<li>") == 4

    c["increment"].click()
    assert result.count.get() == 7
    assert c["count"].value == 7 and shown(view, "doubled") == "<code>14</code>"


def test_ui_nests_instances_and_writes_through_them(rt: Runtime) -> None:
    @pattern
    def Outer():  # type: ignore[no-untyped-def]
        x = Cell.of(3)
        return {"x": x, "inner": Counter(count=x), "total": double(x)}

    result = rt.run(Outer, None, cause="outer")
    view = ui(result)
    c = view.controls
    assert isinstance(c["inner"], w.VBox) and isinstance(c["inner.count"], w.IntText)
    c["inner.increment"].click()
    assert result.x.get() == 4 and c["x"].value == 4 and c["inner.count"].value == 4
    assert shown(view, "inner.doubled") == "<code>8</code>"
    c["inner.count"].value = 10  # the nested instance's argument redirects to x
    assert result.x.get() == 10 and shown(view, "total") == "<code>20</code>"


def test_ui_without_a_snapshot_edits_a_plain_cell(rt: Runtime) -> None:
    cell = rt.get_cell("plain")
    cell.set({"a": 1, "tags": ["x"]})
    view = ui(cell)
    view.controls["a"].value = 2
    assert cell.get() == {"a": 2, "tags": ["x"]}
    assert "<li>" in shown(view, "tags")


def test_handler_error_shows_in_the_buttons_output(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 1}, cause="kitchen-errors")
    view = ui(result)
    button = view.controls["explode"]
    out = view.outputs["explode"]
    button.click()
    assert result.count.get() == 1  # the transaction was aborted
    assert len(out.outputs) == 1
    shown = out.outputs[0]
    assert shown["output_type"] == "error" and shown["ename"] == "RuntimeError"
    assert "the handler failed" in shown["evalue"]
    assert any("the handler failed" in line for line in shown["traceback"])
    assert rt.errors and rt.errors[-1].error.args == ("the handler failed",)
    assert view.outputs["increment"].outputs == ()  # not in the other buttons' areas
    view.controls["increment"].click()
    assert result.count.get() == 2


def test_lift_error_caused_by_a_widget_shows_in_its_output(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 1}, cause="kitchen-lift")
    view = ui(result)
    view.controls["count"].value = 11
    errors = view.outputs["count"].outputs
    assert errors and errors[0]["ename"] == "ValueError" and "11 is too big" in errors[0]["evalue"]
    view.controls["count"].value = 3
    assert view.outputs["count"].outputs == ()


def test_errors_outside_widget_actions_show_in_the_ui(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 1}, cause="kitchen-outside")
    view = ui(result)
    result.explode.send({})  # from code, not from the button
    assert view.outputs["explode"].outputs[0]["ename"] == "RuntimeError"
    result.count.set(50)  # a lift fails because of a write in another cell
    assert view.errors.outputs[-1]["ename"] == "ValueError"


def test_ui_close_releases_bindings(rt: Runtime) -> None:
    result = rt.run(Counter, {"count": 1}, cause="closing")
    view = ui(result)
    box = view.controls["count"]
    view.close()
    result.count.set(5)
    assert box.value == 1
    assert not rt._error_callbacks


# ---------------------------------------------------------------------------
# GraphView


def test_graph_view_ships_plain_files() -> None:
    from cellkernel.notebook import widgets

    esm, css = widgets.STATIC / "graph_view.js", widgets.STATIC / "graph_view.css"
    assert esm.is_file() and css.is_file()
    text = esm.read_text()
    assert str(GraphView._esm) == text  # anywidget read the shipped file (no build step)
    assert str(GraphView._css) == css.read_text()
    assert "export default" in text
    assert not re.search(r"""import[^;]*['"]https?:""", text)  # no CDN imports


def test_graph_view_tracks_runs_and_errors(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 1}, cause="graph")
    graph = GraphView(result)
    assert graph.svg.startswith("<svg") and graph.generation == 1
    by_name = {n["name"]: n for n in graph.nodes}
    assert by_name["double"]["status"] in ("idle", "ran")
    assert by_name["double"]["value"] == "2"
    runs = by_name["double"]["runs"]
    # every node's id is drawn in the SVG, so the browser can find it
    assert all(n["id"] in graph.svg for n in graph.nodes)

    result.count.set(4)
    by_name = {n["name"]: n for n in graph.nodes}
    assert by_name["double"]["status"] == "ran" and by_name["double"]["runs"] == runs + 1
    assert by_name["double"]["value"] == "8"

    result.count.set(12)
    by_name = {n["name"]: n for n in graph.nodes}
    assert by_name["fragile"]["status"] == "error"
    assert "12 is too big" in by_name["fragile"]["error"]
    result.count.set(2)
    by_name = {n["name"]: n for n in graph.nodes}
    assert by_name["fragile"]["status"] == "ran" and by_name["fragile"]["error"] == ""
    graph.close()
    assert graph._on_run not in rt.scheduler.on_run


def test_graph_view_redraws_when_the_graph_changes(rt: Runtime) -> None:
    result = rt.run(Counter, {"count": 1}, cause="redraw")
    graph = GraphView(result)
    before = graph.svg

    @pattern
    def Counter2(count: int = 0):  # type: ignore[no-untyped-def]
        return {"count": count, "quad": double(double(count))}

    rt.run(Counter2, {"count": 1}, cause="redraw")
    assert graph.generation == 2
    assert graph.svg != before
    assert {n["name"] for n in graph.nodes} == {"double"}
    assert len(graph.nodes) == 2

    @pattern
    def Counter3(count: int = 0):  # type: ignore[no-untyped-def]
        return {"count": count}  # only removes nodes: nothing new runs

    rt.run(Counter3, {"count": 1}, cause="redraw")
    assert graph.generation == 3 and graph.nodes == []
    graph.close()


def test_graph_view_repaints_a_node_that_recovered(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 20}, cause="recover")
    node = next(n for n in GraphView(result).nodes if n["name"] == "fragile")
    graph = GraphView(result, highlight={node["id"]: "error"})
    assert next(n for n in graph.nodes if n["name"] == "fragile")["status"] == "error"
    baked = graph.svg
    assert "ck&#45;error" in baked
    result.count.set(1)
    assert "ck&#45;error" not in graph.svg
    graph.close()


def test_click_updates_everything_in_one_go(rt: Runtime) -> None:
    result = rt.run(Counter, {"count": 0}, cause="click")
    view = ui(result)
    graph = GraphView(result)
    view.controls["increment"].click()
    assert view.controls["count"].value == 1
    assert shown(view, "doubled") == "<code>2</code>"
    assert {n["name"]: n["value"] for n in graph.nodes}["double"] == "2"
    view.close()
    graph.close()


def test_graph_view_pushes_once_per_message_on_an_event_loop(rt: Runtime) -> None:
    @pattern
    def Chain():  # type: ignore[no-untyped-def]
        x = Cell.of(0)
        y = double(double(double(x)))
        return {"x": x, "y": y, "bump": increment(count=x)}

    result = rt.run(Chain, None, cause="chain")
    graph = GraphView(result)
    pushes: list[Any] = []
    graph.observe(pushes.append, names="nodes")

    async def click() -> None:
        result.bump.send({})
        assert graph._scheduled and pushes == []  # deferred while the message runs
        await asyncio.sleep(0)

    asyncio.run(click())
    assert len(pushes) == 1
    lifts = [n for n in graph.nodes if n["helper"] == "lift"]
    assert [n["runs"] for n in lifts] == [1, 1, 1] and {n["status"] for n in lifts} == {"ran"}
    assert sorted(n["value"] for n in lifts) == ["2", "4", "8"]
    graph.close()


# ---------------------------------------------------------------------------
# the front end, in a real browser (no JupyterLab: a stand-in anywidget model)

CHROMIUM = "/usr/bin/chromium"

HARNESS = """
async ({src, svg, nodes}) => {
  const url = URL.createObjectURL(new Blob([src], {type: "text/javascript"}));
  const widget = (await import(url)).default;
  const state = {svg, nodes};
  const handlers = {};
  const model = {
    get: (k) => state[k],
    on: (e, f) => (handlers[e] ||= []).push(f),
    off: (e, f) => { handlers[e] = (handlers[e] || []).filter((g) => g !== f); },
  };
  window.__set = (k, v) => { state[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); };
  const el = document.createElement("div");
  document.body.append(el);
  widget.render({model, el});
  return el.querySelectorAll("g.node").length;
}
"""


@pytest.mark.browser
def test_graph_view_front_end_marks_errors_and_flashes(rt: Runtime) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not pathlib.Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from cellkernel.notebook import widgets

    result = rt.run(Kitchen, {"count": 1}, cause="browser")
    graph = GraphView(result)
    fragile_id = next(n["id"] for n in graph.nodes if n["name"] == "fragile")
    double_id = next(n["id"] for n in graph.nodes if n["name"] == "double")
    src = (widgets.STATIC / "graph_view.js").read_text()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            drawn = page.evaluate(HARNESS, {"src": src, "svg": graph.svg, "nodes": graph.nodes})
            assert drawn >= len(graph.nodes)
            result.count.set(30)  # double runs, fragile fails
            graph.flush()  # playwright runs an event loop here: the push waits for it
            page.evaluate("(nodes) => window.__set('nodes', nodes)", graph.nodes)
            classes = page.evaluate(
                """(ids) => ids.map((id) => [...document.querySelectorAll('g.node')]
                     .find((g) => g.id === id)
                     .getAttribute('class'))""",
                [fragile_id, double_id],
            )
            assert "ck-error" in classes[0]
            assert "ck-ran" in classes[1] and "ck-error" not in classes[1]
            tip = page.evaluate("() => document.querySelector('title.ck-tip').textContent")
            assert " = " in tip
            summary = page.evaluate("() => document.querySelector('summary').textContent")
            assert "1 in error" in summary
            # the error is in view without expanding anything
            shown = page.evaluate(
                "() => [document.querySelector('details').open,"
                " document.querySelector('.ck-graph-errors').innerText]")
            assert shown[0] is True
            assert "fragile" in shown[1] and "Error" in shown[1]
        finally:
            browser.close()
    graph.close()


def test_a_button_flashes_its_handler_in_the_live_graph(rt: Runtime) -> None:
    from cellkernel.notebook.widgets import pattern_view

    result = rt.run(Counter, {"count": 1}, cause="flash")
    view = pattern_view("flash", result)
    panel, graph = view.children[1], view.children[2]
    handler_node = next(n["id"] for n in graph.nodes if n["helper"] == "handler")
    panel.controls["increment"].click()
    graph.flush()
    entry = next(n for n in graph.nodes if n["id"] == handler_node)
    assert (entry["status"], entry["runs"]) == ("ran", 1)
    assert result.count.get() == 2
    view.close()


def test_a_handler_run_from_code_flashes_too(rt: Runtime) -> None:
    from cellkernel.notebook.widgets import pattern_view

    result = rt.run(Counter, {"count": 1}, cause="flash-code")
    view = pattern_view("flash-code", result)
    graph = view.children[2]
    handler_node = next(n["id"] for n in graph.nodes if n["helper"] == "handler")
    result.increment.send({})  # not through the button: the scheduler reports the run
    graph.flush()
    entry = next(n for n in graph.nodes if n["id"] == handler_node)
    assert (entry["status"], entry["runs"]) == ("ran", 1)
    view.close()


def test_values_left_by_a_failed_lift_are_marked_stale(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 1}, cause="stale")
    view = ui(result)
    assert "stale" not in shown(view, "checked")
    result.count.set(20)  # fragile fails: its value is stale
    assert "stale" in shown(view, "checked") and "stale" not in shown(view, "doubled")
    assert "(stale)" in repr(view)
    result.count.set(3)  # it recovers
    assert "stale" not in shown(view, "checked")
    view.close()


def test_a_failed_handler_leaves_nothing_stale(rt: Runtime) -> None:
    result = rt.run(Kitchen, {"count": 1}, cause="handler-stale")
    view = ui(result)
    view.send(result.explode, {}, view.outputs["explode"])
    assert view.outputs["explode"].outputs  # the error is shown under its button
    assert view.stale() == set() and "stale" not in repr(view)
    view.close()


@pattern
def Bounded(count: Annotated[int, Field(ge=0)] = 0):  # type: ignore[no-untyped-def]
    return {"count": count, "doubled": double(count)}


def test_number_widget_never_shows_a_value_that_is_not_stored(rt: Runtime) -> None:
    # issue 17 item 1: a write through a result field is checked against the argument schema
    result = rt.run(Bounded, {"count": 2}, cause="bounded-widget")
    view = ui(result)
    box = view.controls["count"]
    assert isinstance(box, w.IntText) and box.value == 2
    box.value = -3  # refused by the schema: the widget goes back to the stored value
    assert result.count.get() == 2 and box.value == 2
    box.value = 5
    assert result.count.get() == 5 and box.value == 5
    assert shown(view, "doubled") == "<code>10</code>"
    with pytest.raises(ValueError):
        result.count.set(-1)
    assert box.value == 5 and result.count.get() == 5
