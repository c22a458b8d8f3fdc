"""Graph snapshots (SPEC §7) and cause stability (SPEC §6) on real patterns.

Edited variants are defined inside helper functions: the implementation
fingerprint is the AST of the function body (not its name) plus captured
constants, so two separately defined lifts with identical bodies hash equal.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from typing import Any, cast

import fastjsonschema
import pytest

from cellkernel import Cell, Pattern, Runtime, handler, lift, pattern
from cellkernel.data.identity import short_id
from cellkernel.patterns import snapshot as snapshots
from cellkernel.patterns.snapshot import GraphSnapshot, SnapshotDiff

CAUSE = "snapshot-test"


# ---------------------------------------------------------------------------
# shared building blocks


@lift
def add_one(x: int) -> int:
    return x + 1


@lift
def describe(x: int) -> str:
    return f"value {x}"


@lift
def square(x: int) -> int:
    return x * x


@lift
def negate(x: int) -> int:
    return -x


@handler
def increment(event: Any, count: Cell[int]) -> None:
    count.set(count.get() + 1)


def double_v1() -> Any:
    @lift
    def double(x: int) -> int:
        return x * 2

    return double


def double_v1_again() -> Any:
    """Defined separately, same body: the same implementation hash."""

    @lift
    def double(x: int) -> int:
        return x * 2

    return double


def double_v2() -> Any:
    @lift
    def double(x: int) -> int:
        return x * 3

    return double


def twice_renamed() -> Any:
    """``double`` under another name: the name is not part of the fingerprint."""

    @lift
    def twice(x: int) -> int:
        return x * 2

    return twice


def make_graph(double: Any) -> Pattern:
    """count -> double -> add_one (as ``bumped``) -> label; count -> squared; clicks; increment."""

    @pattern
    def Graph(count: int = 2) -> Any:
        doubled = double(count)
        bumped = add_one(doubled)
        return {
            "count": count,
            "doubled": doubled,
            "label": describe(bumped),
            "squared": square(count),
            "clicks": Cell.of(0),
            "increment": increment(count=count),
        }

    return Graph


def run(p: Pattern, rt: Runtime | None = None, cause: Any = CAUSE) -> tuple[Runtime, Cell[Any]]:
    rt = rt or Runtime()
    return rt, rt.run(p, None, cause=cause)


def snap(p: Pattern, cause: Any = CAUSE) -> GraphSnapshot:
    rt, result = run(p, cause=cause)
    try:
        snapshot: GraphSnapshot = rt.snapshot(result)
        return snapshot
    finally:
        rt.close()


def ids_by_label(s: GraphSnapshot) -> dict[str, str]:
    labels = s.cell_labels()
    out = {labels[c.id]: c.id for c in s.cells}
    assert len(out) == len(s.cells), "test patterns use distinct labels"
    return out


def all_ids(s: GraphSnapshot) -> set[str]:
    return {c.id for c in s.cells} | {n.id for n in s.nodes}


# ---------------------------------------------------------------------------
# the model and the stored form


def test_stored_snapshot_validates_and_round_trips() -> None:
    rt, result = run(make_graph(double_v1()))
    stored = rt.store.load(rt.space, result.entity_id or "")
    assert stored is not None
    graph = stored.meta["graph"]
    s = GraphSnapshot.model_validate(graph)
    assert s.to_json() == graph
    assert rt.snapshot(result) == s
    assert s.graphVersion == 1 and s.generation == 1 and s.predecessor is None
    assert s.result == result.entity_id
    assert {c.id for c in s.cells} >= {o for n in s.nodes for o in n.outputs}
    assert all(c.id.startswith("of:") for c in s.cells)


def test_summary_is_deterministic_text() -> None:
    a = snap(make_graph(double_v1()))
    b = snap(make_graph(double_v1_again()))
    assert a.summary() == b.summary() == str(a)
    lines = a.summary().splitlines()
    assert lines[0] == "GraphSnapshot Graph generation 1: 7 cells, 5 nodes"
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == [
        "argument", "doubled", "bumped", "label", "squared", "clicks", "increment",
    ]  # add_one's cell is named by the variable it is bound to
    assert [r[1] for r in rows] == ["-", "lift", "lift", "lift", "lift", "cell", "handler"]
    assert [r[2] for r in rows] == [short_id(c.id) for c in a.cells]
    assert all(len(r[2]) == 10 for r in rows)


def test_short_id() -> None:
    assert short_id("of:baedreiabcdefghijklmnop") == "abcdefghij"
    assert short_id("node:baedreiabcdefghijklmnop") == "abcdefghij"
    assert short_id("plain") == "plain"


def test_schema_file_is_the_models_schema() -> None:
    committed = snapshots.SCHEMA_PATH.read_text(encoding="utf-8")
    assert json.loads(committed) == GraphSnapshot.model_json_schema()
    assert committed == snapshots.schema_text(), (
        "run: python -m cellkernel.patterns.snapshot --schema"
    )
    assert snapshots._main(["--check"]) == 0


def test_write_schema_and_check(tmp_path: Any) -> None:
    target = tmp_path / "out" / "graph.schema.json"
    assert snapshots._main(["--check", "--output", str(target)]) == 1
    assert snapshots.write_schema(target) == target
    assert snapshots._main(["--check", "--output", str(target)]) == 0
    target.write_text("{}", encoding="utf-8")
    assert snapshots._main(["--check", "--output", str(target)]) == 1


def test_published_schema_validates_what_the_runner_writes() -> None:
    validate = fastjsonschema.compile(json.loads(snapshots.SCHEMA_PATH.read_text("utf-8")))
    rt, result = run(make_graph(double_v1()))
    stored = rt.store.load(rt.space, result.entity_id or "")
    assert stored is not None
    validate(stored.meta["graph"])
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({**cast(dict[str, Any], stored.meta["graph"]), "graphVersion": 2})


# ---------------------------------------------------------------------------
# diff


def test_diff_of_identical_snapshots_keeps_everything() -> None:
    a = snap(make_graph(double_v1()))
    d = a.diff(a)
    assert d.unchanged
    assert len(d.kept) == len(a.cells) + len(a.nodes)
    assert d.counts() == {"kept": 12, "changed": 0, "added": 0, "removed": 0}


def _hand_made(cells: list[tuple[str, str | None, str | None]],
               nodes: list[tuple[str, str, str, list[str], str]]) -> GraphSnapshot:
    return GraphSnapshot.model_validate({
        "generation": 1, "pattern": "p" * 64, "patternName": "Hand", "result": "of:result",
        "cells": [{"id": i, "name": n, "helper": h} for i, n, h in cells],
        "nodes": [
            {"id": i, "helper": h, "name": n, "module": {"type": "python", "ref": f"m:{n}"},
             "inputs": ins, "outputs": [out]}
            for i, h, n, ins, out in nodes
        ],
        "links": [{"from": "of:result", "to": i, "kind": "redirect", "name": n}
                  for i, n, _h in cells if n],
    })


def test_diff_pairs_changed_by_name_and_helper() -> None:
    before = _hand_made(
        [("of:arg", "argument", None), ("of:a1", "a", "lift"), ("of:b1", None, "lift"),
         ("of:gone", "old", "lift"), ("of:x1", None, "lift"), ("of:x2", None, "lift")],
        [("node:a1", "lift", "fa", ["of:arg"], "of:a1"),
         ("node:b1", "lift", "fb", ["of:a1"], "of:b1"),
         ("node:gone", "lift", "fold", ["of:arg"], "of:gone"),
         ("node:x1", "lift", "fx", ["of:arg"], "of:x1"),
         ("node:x2", "lift", "fx", ["of:x1"], "of:x2")],
    )
    after = _hand_made(
        [("of:arg", "argument", None), ("of:a2", "a", "lift"), ("of:b2", None, "lift"),
         ("of:new", "fresh", "lift"), ("of:x1", None, "lift"), ("of:x3", None, "lift"),
         ("of:a3", "a", "handler")],
        [("node:a2", "lift", "fa", ["of:arg"], "of:a2"),
         ("node:b2", "lift", "fb", ["of:a2"], "of:b2"),
         ("node:new", "lift", "fnew", ["of:arg"], "of:new"),
         ("node:x1", "lift", "fx", ["of:arg"], "of:x1"),
         ("node:x3", "lift", "fx", ["of:x1"], "of:x3"),
         ("node:a3", "handler", "fh", ["of:arg"], "of:a3")],
    )
    d = before.diff(after)
    cells = {e.id: (e.status, e.name, e.previous) for e in d.entries() if e.kind == "cell"}
    assert cells == {
        "of:arg": ("kept", "argument", None),
        "of:a2": ("changed", "a", "of:a1"),
        "of:b2": ("changed", "fb", "of:b1"),  # unnamed: labelled by its node
        "of:new": ("added", "fresh", None),
        "of:x1": ("kept", "fx", None),
        "of:x3": ("changed", "fx", "of:x2"),  # same label twice: paired in order
        "of:a3": ("added", "a", None),  # same name, other helper: not a change
        "of:gone": ("removed", "old", None),
    }
    nodes = {e.id: e.status for e in d.entries() if e.kind == "node"}
    assert nodes == {"node:a2": "changed", "node:b2": "changed", "node:new": "added",
                     "node:x1": "kept", "node:x3": "changed", "node:a3": "added",
                     "node:gone": "removed"}
    assert d.status("of:gone") == "removed" and d.status("of:nothing") is None
    assert d.highlight()["of:new"] == "new"
    # reversed direction: added <-> removed
    back = after.diff(before)
    assert {e.id for e in back.removed} == {e.id for e in d.added}
    assert {e.id for e in back.added} == {e.id for e in d.removed}


def test_diff_text_form_is_deterministic() -> None:
    before = _hand_made([("of:baedreiaaaaaaaa1", "a", "lift"), ("of:baedreikkkkkkkk", "k", "lift")],
                        [("node:baedreiaaaaaaaa1", "lift", "fa", [], "of:baedreiaaaaaaaa1")])
    after = _hand_made([("of:baedreiaaaaaaaa2", "a", "lift"), ("of:baedreikkkkkkkk", "k", "lift")],
                       [("node:baedreiaaaaaaaa2", "lift", "fa", [], "of:baedreiaaaaaaaa2")])
    d = before.diff(after)
    assert d.to_text() == str(d) == (
        "snapshot diff: Hand generation 1 -> Hand generation 1\n"
        "cells: 1 kept, 1 changed, 0 added, 0 removed\n"
        "nodes: 0 kept, 1 changed, 0 added, 0 removed\n"
        "  changed  cell  a   lift  aaaaaaaa2  (was aaaaaaaa1)\n"
        "  kept     cell  k   lift  kkkkkkkk\n"
        "  changed  node  fa  lift  aaaaaaaa2  (was aaaaaaaa1)"
    )
    assert SnapshotDiff.model_validate(d.model_dump()).to_text() != ""


def test_diff_drawing_includes_removed_items() -> None:
    before = snap(make_graph(double_v1()))

    @pattern
    def Smaller(count: int = 2) -> Any:
        return {"count": count, "squared": square(count)}

    after = snap(Smaller)
    d = before.diff(after)
    dot = d.to_dot()
    for e in d.removed:
        assert f'"{e.id}"' in dot
    assert 'class="ck-removed"' in dot and "dashed" in dot
    assert 'class="ck-kept"' in dot
    assert "classDef removed" in d.to_mermaid()
    bundle = d._repr_mimebundle_(include={"text/plain", "text/vnd.mermaid"})
    assert set(bundle) == {"text/plain", "text/vnd.mermaid"}
    with pytest.raises(ValueError, match="not made by"):
        SnapshotDiff.model_validate(d.model_dump()).to_dot()


# ---------------------------------------------------------------------------
# drawings


def dot_items(dot: str) -> dict[str, tuple[str, str]]:
    """Entity id -> (DOT node name, its statement line), read from the ``id`` attributes."""
    out: dict[str, tuple[str, str]] = {}
    for line in dot.splitlines():
        found = re.search(r'\bid="([^"]+)"', line)
        if found and "->" not in line:
            out[found.group(1)] = (line.strip().split(" ", 1)[0], line)
    return out


def item_line(dot: str, entity_id: str) -> str:
    return dot_items(dot)[entity_id][1]


def test_to_dot_is_built_with_graphviz_and_names_entities() -> None:
    import graphviz  # type: ignore[import-untyped]

    s = snap(make_graph(double_v1()))
    graph = s.to_graphviz()
    assert isinstance(graph, graphviz.Digraph)
    assert graph.source == s.to_dot()
    items = dot_items(s.to_dot())
    assert set(items) >= {c.id for c in s.cells} | {n.id for n in s.nodes}
    # ids have a ':' (a port to graphviz): the DOT names are plain aliases
    assert all(":" not in alias for alias, _line in items.values())


def test_to_dot_shapes_labels_and_order() -> None:
    s = snap(make_graph(double_v1()))
    dot = s.to_dot()
    assert dot.startswith("digraph snapshot {") and dot.rstrip().endswith("}")
    labels = s.cell_labels()
    items = dot_items(dot)
    for cell in s.cells:
        line = items[cell.id][1]
        assert "shape=ellipse" in line
        assert f'label="{labels[cell.id]}\\n{short_id(cell.id)}"' in line
    for node in s.nodes:
        line = items[node.id][1]
        assert "shape=box" in line
        name = node.name or node.module.ref.rsplit(".", 1)[-1].rsplit(":")[-1]
        assert f'label="{node.helper} {name}"' in line
        for source in node.inputs:
            assert f"{items[source][0]} -> {items[node.id][0]}" in dot
        assert f"{items[node.id][0]} -> {items[node.outputs[0]][0]}" in dot
    # only the graph decides the text: shuffled lists draw the same
    data = s.to_json()
    rng = random.Random(7)
    for key in ("cells", "nodes", "links"):
        rng.shuffle(data[key])
    assert GraphSnapshot.model_validate(data).to_dot() == dot


def test_to_dot_escapes_labels() -> None:
    s = _hand_made([("of:q", 'say "hi" \\ there', "lift")], [])
    dot = s.to_dot()
    assert 'label="say \\"hi\\" \\\\ there\\nq"' in dot


def test_to_dot_highlight() -> None:
    s = snap(make_graph(double_v1()))
    doubled = ids_by_label(s)["doubled"]
    node = next(n for n in s.nodes if n.outputs == [doubled])
    square_node = next(n for n in s.nodes if n.name == "square")
    statuses = ["kept", "new", "changed", "removed", "error", "ran"]
    for status in statuses:
        fill, border, _extra = snapshots.HIGHLIGHT_STYLES[status]
        dot = s.to_dot(highlight={doubled: status, square_node.id: "error"})
        cell_line = item_line(dot, doubled)
        assert f'fillcolor="{fill}"' in cell_line and f'color="{border}"' in cell_line
        # a node without its own entry takes its output cell's status
        node_line = item_line(dot, node.id)
        assert f'class="ck-{status}"' in node_line
    error_line = item_line(s.to_dot(highlight={square_node.id: "error"}), square_node.id)
    assert "penwidth=2" in error_line and 'fillcolor="#ef9a9a"' in error_line
    assert 'class="ck-new"' in s.to_dot(highlight={doubled: "added"})
    with pytest.raises(ValueError, match="unknown highlight"):
        s.to_dot(highlight={doubled: "purple"})


def test_to_mermaid() -> None:
    s = snap(make_graph(double_v1()))
    text = s.to_mermaid(highlight={ids_by_label(s)["doubled"]: "changed"})
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert any('(["doubled<br/>' in li for li in lines)
    assert any('["lift double"]' in li for li in lines)
    assert "classDef changed fill:#ffe0b2,stroke:#ef6c00" in text
    assert s.to_mermaid() == snap(make_graph(double_v1_again())).to_mermaid()


def test_mimebundle() -> None:
    pytest.importorskip("pygraphviz")
    s = snap(make_graph(double_v1()))
    bundle = s._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "image/svg+xml", "text/vnd.mermaid"}
    assert bundle["text/plain"] == s.summary()
    assert bundle["image/svg+xml"].startswith("<svg")
    assert "doubled" in bundle["image/svg+xml"]
    assert bundle["text/vnd.mermaid"] == s.to_mermaid()
    assert set(s._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    assert "image/svg+xml" not in s._repr_mimebundle_(exclude=["image/svg+xml"])


def test_mimebundle_without_graphviz_or_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from cellkernel.patterns import render

    s = snap(make_graph(double_v1()))
    monkeypatch.setattr(snapshots, "SVG_LIMIT", 3)
    assert "image/svg+xml" not in s._repr_mimebundle_()
    monkeypatch.setattr(snapshots, "SVG_LIMIT", 1000)

    def unavailable(dot: str, **_: Any) -> str:
        raise render.GraphvizUnavailableError("no graphviz in this test")

    monkeypatch.setattr(render, "dot_to_svg", unavailable)
    bundle = s._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/vnd.mermaid"}


# ---------------------------------------------------------------------------
# cause stability (SPEC §6)


def test_same_pattern_same_ids_in_two_runtimes() -> None:
    p = make_graph(double_v1())
    a, b = snap(p), snap(p)
    assert a == b
    assert a.to_json() == b.to_json()
    # and with a separately defined but identical pattern
    assert snap(make_graph(double_v1_again())).to_json()["cells"] == a.to_json()["cells"]


def test_the_run_cause_scopes_every_id() -> None:
    p = make_graph(double_v1())
    assert not all_ids(snap(p, cause="one")) & all_ids(snap(p, cause="two"))


def test_editing_one_lift_body_changes_it_and_its_downstream_only() -> None:
    before = snap(make_graph(double_v1()))
    after = snap(make_graph(double_v2()))
    b, a = ids_by_label(before), ids_by_label(after)
    assert b.keys() == a.keys()
    moved = {k for k in b if b[k] != a[k]}
    assert moved == {"doubled", "bumped", "label"}
    d = before.diff(after)
    assert {e.name for e in d.changed if e.kind == "cell"} == {"doubled", "bumped", "label"}
    assert {e.name for e in d.kept if e.kind == "cell"} == {
        "argument", "squared", "clicks", "increment",
    }
    assert {e.name for e in d.changed if e.kind == "node"} == {"double", "add_one", "describe"}
    assert {e.name for e in d.kept if e.kind == "node"} == {"square", "increment"}
    assert not d.added and not d.removed


def test_a_captured_constant_is_part_of_the_implementation() -> None:
    def scaled(factor: int) -> Pattern:
        @lift
        def scale(x: int) -> int:
            return x * factor

        @pattern
        def Scaled(count: int = 1) -> Any:
            return {"scaled": scale(count), "squared": square(count)}

        return Scaled

    two, three, two_again = snap(scaled(2)), snap(scaled(3)), snap(scaled(2))
    assert ids_by_label(two) == ids_by_label(two_again)
    assert ids_by_label(two)["scaled"] != ids_by_label(three)["scaled"]
    assert ids_by_label(two)["squared"] == ids_by_label(three)["squared"]


def _unrelated(order: str) -> Pattern:
    """One node per letter: s=square, a=add_one, d=describe, n=negate (all on count)."""
    makers: dict[str, Callable[[Any], Any]] = {
        "s": square, "a": add_one, "d": describe, "n": negate,
    }
    names = {"s": "squared", "a": "plus", "d": "text", "n": "negated"}

    @pattern
    def Unrelated(count: int = 4) -> Any:
        out: dict[str, Any] = {"count": count}
        for letter in order:
            out[names[letter]] = makers[letter](count)
        return out

    return Unrelated


def test_adding_removing_or_reordering_unrelated_nodes_changes_no_other_id() -> None:
    base = ids_by_label(snap(_unrelated("sad")))
    added = ids_by_label(snap(_unrelated("sand")))
    removed = ids_by_label(snap(_unrelated("sd")))
    reordered = ids_by_label(snap(_unrelated("das")))
    assert {k: added[k] for k in base} == base
    assert "negated" in added
    assert removed == {k: base[k] for k in removed}
    assert set(base) - set(removed) == {"plus"}
    assert reordered == base


def test_identical_siblings_get_distinct_stable_ids() -> None:
    def siblings(third: bool) -> Pattern:
        double = double_v1()

        @pattern
        def Siblings(count: int = 1) -> Any:
            out = {"first": double(count), "second": double(count)}
            if third:  # a later identical sibling leaves the earlier ones alone
                out["third"] = double(count)
            return out

        return Siblings

    one, two = snap(siblings(False)), snap(siblings(False))
    ids = ids_by_label(one)
    assert ids["first"] != ids["second"]
    assert ids_by_label(two) == ids
    causes = {c.name: c.cause for c in one.cells}
    # told apart by the names they are bound to (SPEC §6), not by their order
    assert causes["first"]["bound"] == "first" and causes["second"]["bound"] == "second"
    assert causes["first"]["index"] == causes["second"]["index"] == 0
    assert {k: v for k, v in causes["first"].items() if k != "bound"} == {
        k: v for k, v in causes["second"].items() if k != "bound"
    }
    with_third = ids_by_label(snap(siblings(True)))
    assert with_third["first"] == ids["first"] and with_third["second"] == ids["second"]
    assert with_third["third"] not in ids.values()


def test_renamed_python_names_change_nothing() -> None:
    def variant(rename_variable: bool, rename_function: bool) -> Pattern:
        double = twice_renamed() if rename_function else double_v1()
        if rename_variable:

            @pattern
            def Renamed(count: int = 2) -> Any:
                twice_the_count = double(count)
                return {"count": count, "doubled": twice_the_count,
                        "label": describe(twice_the_count)}

            return Renamed

        @pattern
        def Original(count: int = 2) -> Any:
            doubled = double(count)
            return {"count": count, "doubled": doubled, "label": describe(doubled)}

        return Original

    base = snap(variant(False, False))
    for flags in [(True, False), (False, True), (True, True)]:
        other = snap(variant(*flags))
        assert [c.id for c in other.cells] == [c.id for c in base.cells], flags
        assert [n.id for n in other.nodes] == [n.id for n in base.nodes], flags
        assert base.diff(other).unchanged


def test_a_renamed_result_key_keeps_every_id() -> None:
    @pattern
    def Before(count: int = 2) -> Any:
        return {"squared": square(count)}

    @pattern
    def After(count: int = 2) -> Any:
        return {"sq": square(count)}

    b, a = snap(Before), snap(After)
    assert [c.id for c in b.cells] == [c.id for c in a.cells]
    assert [c.name for c in a.cells] == ["argument", "sq"]
    assert b.diff(a).unchanged


def test_debug_runtime_logs_every_derived_cause(caplog: pytest.LogCaptureFixture) -> None:
    p = make_graph(double_v1())
    caplog.set_level(logging.DEBUG, logger="cellkernel.causes")
    rt = Runtime(debug=True)
    s = rt.snapshot(rt.run(p, None, cause=CAUSE))
    records = [r for r in caplog.records if r.name == "cellkernel.causes"]
    messages = [r.getMessage() for r in records]
    derived = [c for c in s.cells if c.helper is not None]
    assert len(derived) == 6
    for cell in derived:
        matching = [m for m in messages if cell.id in m]
        assert matching, f"no cause logged for {cell.name or cell.helper}"
        message = matching[0]
        assert cell.helper is not None and cell.helper in message
        cause = cell.cause
        if "impl" in cause:
            assert str(cause["impl"]) in message
            assert all(i in message for i in cause["inputs"])
            assert f"'index': {cause['index']}" in message
        assert str(cause["parent"]) in message
    caplog.clear()
    quiet = Runtime()
    quiet.run(p, None, cause="quiet")
    assert not [r for r in caplog.records if r.name == "cellkernel.causes"]


# ---------------------------------------------------------------------------
# snapshots in storage


def test_rerunning_an_edited_pattern_bumps_generation_and_records_predecessor() -> None:
    v1, v2 = make_graph(double_v1()), make_graph(double_v2())
    rt, result = run(v1)
    first = rt.snapshot(result)
    result.clicks.set(5)
    rt.run(v2, None, cause=CAUSE)
    stored = rt.store.load(rt.space, result.entity_id or "")
    assert stored is not None
    second = GraphSnapshot.model_validate(stored.meta["graph"])
    assert second == rt.snapshot(result)
    assert second.generation == 2 and second.pattern == v2.hash != v1.hash
    assert second.predecessor == {
        "generation": 1, "pattern": v1.hash,
        "nodes": [n.id for n in first.nodes], "cells": [c.id for c in first.cells],
    }
    d = first.diff(second)
    doubled_node = next(e for e in d.entries() if e.kind == "node" and e.name == "double")
    assert doubled_node.status == "changed"
    assert doubled_node.previous == next(n.id for n in first.nodes if n.name == "double")
    assert {e.name for e in d.kept if e.kind == "cell"} >= {"clicks", "squared", "increment"}
    # kept state survived the edit, the edited node recomputed
    assert result.clicks.get() == 5
    assert result.doubled.get() == 6 and result.label.get() == "value 7"


def test_rerunning_an_unchanged_pattern_keeps_the_graph() -> None:
    p = make_graph(double_v1())
    rt, result = run(p)
    first = rt.snapshot(result)
    rt.run(p, None, cause=CAUSE)
    second = rt.snapshot(result)
    assert second.generation == 2
    assert first.diff(second).unchanged
    assert second.cells == first.cells and second.nodes == first.nodes


def test_snapshot_survives_in_a_sqlite_store(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Runtime(store=url) as rt:
        result = rt.run(make_graph(double_v1()), None, cause=CAUSE)
        written = rt.snapshot(result).to_json()
        entity_id = result.entity_id or ""
    with Runtime(store=url) as rt:
        stored = rt.store.load(rt.space, entity_id)
        assert stored is not None
        assert GraphSnapshot.model_validate(stored.meta["graph"]).to_json() == written


def test_diff_drawing_takes_extra_highlights() -> None:
    before, after = snap(make_graph(double_v1())), snap(make_graph(double_v2()))
    d = before.diff(after)
    squared = ids_by_label(after)["squared"]
    dot = d.to_dot(highlight={squared: "error"})
    line = item_line(dot, squared)
    assert 'class="ck-error"' in line
    assert 'class="ck-changed"' in dot and 'class="ck-kept"' in dot
    assert "class " in d.to_mermaid(highlight={squared: "ran"})


def test_stored_snapshots_are_plain_json_on_every_store(rt: Runtime) -> None:
    """The runner hands its snapshot to the store uncopied: it must be exactly plain JSON."""

    @pattern
    def Plain(x: int = 1) -> Any:
        return {"x": x, "y": add_one(x), "s": describe(add_one(x))}

    result = rt.run(Plain, {"x": 2}, cause="plain-json-snapshot")
    stored = rt.read_tx().document(rt.space, result.entity_id or "")
    for part in (stored.meta["graph"], stored.value):
        assert json.loads(json.dumps(part)) == part
        stack: list[Any] = [part]
        while stack:  # only JSON's own types, no tuples or subclasses
            item = stack.pop()
            assert type(item) in (dict, list, str, int, float, bool, type(None)), type(item)
            children = item.values() if type(item) is dict else item if type(item) is list else []
            stack.extend(children)
