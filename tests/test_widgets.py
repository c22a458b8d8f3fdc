"""Widgets driven from Python (SPEC §9): bind, ui, GraphView, errors in Output areas."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import ipywidgets as w
import pytest

from cellkernel import Cell, Runtime, handler, lift, pattern
from cellkernel.widgets import GraphView, PatternUI, bind, iter_tree, ui


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


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime()
    yield runtime
    runtime.close()


def controls(view: Any) -> dict[str, Any]:
    return {getattr(x, "description", ""): x for x in iter_tree(view)
            if getattr(x, "description", "")}


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
    assert isinstance(c["items"], w.HTML) and c["items"].value.count("<li>") == 3
    assert isinstance(c["settings.depth"], w.IntText) and c["settings.depth"].value == 2
    assert isinstance(c["doubled"], w.HTML) and "4" in c["doubled"].value  # derived: read-only
    assert isinstance(c["increment"], w.Button)

    c["count"].value = 6
    assert result.count.get() == 6 and "12" in c["doubled"].value
    c["name"].value = "grace"
    assert result.name.get() == "grace"
    c["settings.depth"].value = 3
    assert result.settings.get() == {"depth": 3, "label": "x"}
    result.items.push(4)
    assert c["items"].value.count("<li>") == 4

    c["increment"].click()
    assert result.count.get() == 7
    assert c["count"].value == 7 and "14" in c["doubled"].value


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
    from cellkernel import widgets

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
    assert "2" in view.controls["doubled"].value
    assert {n["name"]: n["value"] for n in graph.nodes}["double"] == "2"
    view.close()
    graph.close()
