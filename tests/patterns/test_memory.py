"""Issue 20 (memory per node): what a built pattern and a started instance share.

A graph is never changed once built and an instance's node records are stored as
they are, so equal parts are one object: the alias of a cell every leaf of a
fan-out binds, a lift's empty ``kwargs``, a record's input list and its cause's.
None of it changes a hash, an id or a stored value.
"""

from __future__ import annotations

import gc
import json
import sys
import types
from typing import Any

import pytest

from cellkernel import Runtime, if_else, lift, pattern
from cellkernel.patterns import graph_digest
from cellkernel.patterns.builder import Pattern
from cellkernel.patterns.snapshot import GraphSnapshot


@lift
def inc(x: int) -> int:
    return x + 1


@lift
def add(x: int, i: int) -> int:
    return x + i


def chain(n: int) -> Pattern:
    @pattern
    def Chain(x: int = 0) -> Any:
        v = x
        for _ in range(n):
            v = inc(v)
        return {"x": x, "out": v}

    assert isinstance(Chain, Pattern)
    return Chain


@pattern
def FanOut(x: int = 0) -> Any:
    return {"x": x, "leaves": [add(x, i) for i in range(50)]}


@pattern
def Fed(x: int = 0) -> Any:
    head = inc(x)
    return {"x": x, "leaves": [add(head, i) for i in range(20)]}


@pattern
def Twice(x: int = 0, y: int = 1) -> Any:
    return {"pick": if_else(x, x, y)}


def test_a_fan_out_binds_one_alias_object() -> None:
    nodes = FanOut.graph["nodes"]
    first = nodes[0]["inputs"]["args"][0]
    assert first == {"$alias": {"cell": "argument", "path": ["x"]}}
    assert all(n["inputs"]["args"][0] is first for n in nodes)
    assert all(n["inputs"]["kwargs"] is nodes[0]["inputs"]["kwargs"] == {} for n in nodes)
    assert FanOut.hash == graph_digest._digest(FanOut.graph)


def test_a_loose_binding_with_a_shared_alias_is_hashed_from_its_own_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    binding = Twice.graph["nodes"][0]["inputs"]
    assert binding["cond"] is binding["a"]  # if_else(x, x, y): x once
    generic: list[Any] = []
    original = graph_digest._digest

    def counting(graph: Any) -> str:
        generic.append(graph)
        return original(graph)

    monkeypatch.setattr(graph_digest, "_digest", counting)
    assert graph_digest._graph_digest(Twice.graph, range(len(Twice.graph["nodes"]))) \
        == original(Twice.graph) == Twice.hash
    assert generic == []


def test_the_plain_walk_takes_shared_containers_and_refuses_cycles() -> None:
    shared: dict[str, Any] = {"a": [1, 2]}
    assert graph_digest._walk_plain([shared, shared, {"b": shared}])
    assert not graph_digest._walk_plain([shared, 1.0])
    looped: list[Any] = [shared]
    looped.append([looped])
    assert not graph_digest._walk_plain(looped)


def test_a_chain_keeps_its_lift_once() -> None:
    made = chain(30)
    assert made.keep.count(inc.fn) == 1


def _records(rt: Runtime, result: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    instance = rt.runner.instance_of(result)
    assert instance is not None
    doc = rt.store.load(rt.space, result.entity_id or "")
    assert doc is not None
    graph = doc.meta["graph"]
    assert isinstance(graph, dict)
    return [n.record for n in instance.nodes.values()], graph


def test_records_share_the_graph_s_empty_parts_and_their_cause_inputs() -> None:
    made = chain(5)
    with Runtime() as rt:
        result = rt.run(made, {"x": 1}, cause="shared-parts")
        assert result.out.get() == 6
        records, graph = _records(rt, result)
        causes = {c["id"]: c["cause"] for c in graph["cells"] if "cause" in c}
        for record, node in zip(records, made.graph["nodes"], strict=True):
            assert record["bindings"]["kwargs"] is node["inputs"]["kwargs"]
            link = record["bindings"]["args"][0]["/"]["link@1"]
            assert link["path"] is node["inputs"]["args"][0]["$alias"]["path"]
            cause_inputs = causes[record["outputs"][0]]["inputs"]
            if "/" not in cause_inputs[0]:  # whole cells (all but the first, which reads x)
                assert record["inputs"] is cause_inputs
        # stored as before: the snapshot validates and reads back equal
        dumped = GraphSnapshot.model_validate(graph).model_dump(mode="json", by_alias=True,
                                                                exclude_none=True)
        assert json.loads(json.dumps(dumped["nodes"])) == dumped["nodes"]
        assert [n["id"] for n in dumped["nodes"]] == [r["id"] for r in records]
        result.x.set(10)
        rt.idle()
        assert result.out.get() == 15


def test_nodes_reading_one_whole_cell_share_its_link() -> None:
    with Runtime() as rt:
        result = rt.run(Fed, {"x": 1}, cause="shared-link")
        assert result.leaves.get() == [2 + i for i in range(20)]
        records, _graph = _records(rt, result)
        leaves = [r for r in records if r["name"] == "add"]
        assert len(leaves) == 20
        first = leaves[0]["bindings"]["args"][0]
        assert all(r["bindings"]["args"][0] is first for r in leaves)
        result.x.set(5)
        rt.idle()
        assert result.leaves.get() == [6 + i for i in range(20)]
        rt.stop(result)
        again = rt.resume("shared-link")
        assert again.leaves.get() == [6 + i for i in range(20)]


def _deep_size(*roots: Any) -> int:
    seen: set[int] = set()
    total = 0
    stack = list(roots)
    while stack:
        value = stack.pop()
        if id(value) in seen or isinstance(value, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(value))
        total += sys.getsizeof(value)
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total


def test_a_chain_s_graph_records_and_snapshot_cells_stay_small() -> None:
    """The pattern side of a started N-chain, per node (3.5 KB before issue 20; CPython 3.11)."""
    n = 2000
    made = chain(n)
    with Runtime() as rt:
        result = rt.run(made, {"x": 0}, cause="small-chain")
        assert result.out.get() == n
        records, graph = _records(rt, result)
        gc.collect()
        per_node = _deep_size(made.graph, records, graph["cells"]) / n
        assert per_node < 3200, per_node
