"""Builtins (SPEC §4): map, filter, if_else, when, unless, fmt.

Ported from the reference runtime's tests (commontoolsinc/labs
``recipes.test.ts``, ``when-unless.test.ts``) with the same expected values,
plus SPEC §4's identity-keyed collections: a reorder keeps every per-element
instance, a removed element's instance stops, an appended one runs once.
Run counts, never timings.
"""

from typing import Any

import pytest

from cellkernel import (
    CapabilityError,
    Cell,
    Runtime,
    fmt,
    handler,
    if_else,
    lift,
    pattern,
    unless,
    when,
)
from cellkernel.patterns.tracing import OpaqueRef

# ``rt`` (tests/conftest.py): a fresh runtime on the memory store, then on SQLite.


def _cell(rt: Runtime, cause: str, value: Any) -> Cell[Any]:
    cell = rt.get_cell(cause)
    cell.set(value)
    return cell


def _children(rt: Runtime, result: Cell[Any], helper: str) -> dict[str, Any]:
    """The per-element instances of the (single) ``helper`` node of an instance."""
    instance = rt.runner.instance_of(result)
    assert instance is not None
    nodes = [n for n in instance.nodes.values() if n.record["helper"] == helper]
    assert len(nodes) == 1
    return dict(nodes[0].children)


def _action_runs(rt: Runtime, name: str) -> list[str]:
    runs: list[str] = []
    def count(action: Any) -> None:
        if action.name == name:
            runs.append(action.name)

    rt.scheduler.on_run.append(count)
    return runs


# ---------------------------------------------------------------------------
# map


def test_map_with_index_and_array(rt: Runtime) -> None:
    """RT 6: [{x:1},{x:2},{x:3}] -> {multiplied: x*(index+1)*len(array)} = 3, 12, 27."""

    @lift
    def multiply(x: int, index: int, array: list[Any]) -> int:
        return x * (index + 1) * len(array)

    @pattern
    def Multiplied(values: list[Any]):  # type: ignore[no-untyped-def]
        return {
            "multiplied": values.map(  # type: ignore[attr-defined]
                lambda element, index, array: {"multiplied": multiply(element.x, index, array)}
            )
        }

    r = rt.run(Multiplied, {"values": [{"x": 1}, {"x": 2}, {"x": 3}]})
    assert r.get() == {"multiplied": [{"multiplied": 3}, {"multiplied": 12}, {"multiplied": 27}]}


def test_map_over_none_is_empty(rt: Runtime) -> None:
    """RT 7: values undefined -> doubled == []."""

    @pattern
    def Doubled(values: list[Any] | None = None):  # type: ignore[no-untyped-def]
        return {"doubled": values.map(lambda x: lift(lambda v: v * 2)(x))}  # type: ignore[union-attr]

    assert rt.run(Doubled, {"values": None}).get() == {"doubled": []}
    assert rt.run(Doubled, {}).get() == {"doubled": []}


def test_map_follows_the_list(rt: Runtime) -> None:
    @pattern
    def Doubled(values: list[Any]):  # type: ignore[no-untyped-def]
        return {"doubled": values.map(lambda x: lift(lambda v: v * 2)(x))}  # type: ignore[attr-defined]

    values = _cell(rt, "map follows", [1, 2])
    r = rt.run(Doubled, {"values": values})
    assert r.get() == {"doubled": [2, 4]}
    values.set([5])
    assert r.get() == {"doubled": [10]}
    values.set(None)
    assert r.get() == {"doubled": []}
    values.set([1, 2, 3])
    assert r.doubled.get() == [2, 4, 6]


def test_map_with_if_else_keeps_nulls(rt: Runtime) -> None:
    """RT 8 (CT-1158): [A shown, B hidden, C shown] -> ["A", None, "C"]; then ["A", None]."""

    @pattern
    def Visible(items: list[Any]):  # type: ignore[no-untyped-def]
        return {"mapped": items.map(lambda item: if_else(item.visible, item.name, None))}  # type: ignore[attr-defined]

    items = _cell(rt, "visible items", [
        {"name": "A", "visible": True},
        {"name": "B", "visible": False},
        {"name": "C", "visible": True},
    ])
    r = rt.run(Visible, {"items": items})
    assert r.get() == {"mapped": ["A", None, "C"]}
    items.set(items.get()[:2])
    assert r.get() == {"mapped": ["A", None]}


def test_map_reorder_keeps_instances_and_reruns_nothing(rt: Runtime) -> None:
    runs: list[Any] = []

    @lift
    def label(item: dict[str, Any]) -> str:
        runs.append(item["name"])
        return item["name"].upper()  # type: ignore[no-any-return]

    @pattern
    def Labels(items: list[Any]):  # type: ignore[no-untyped-def]
        return {"labels": items.map(lambda item: label(item))}  # type: ignore[attr-defined]

    items = _cell(rt, "reorder docs", [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    r = rt.run(Labels, {"items": items})
    assert r.get() == {"labels": ["A", "B", "C"]}
    assert sorted(runs) == ["a", "b", "c"]
    before = _children(rt, r, "map")

    items.set(list(reversed(items.get())))  # same documents, new order
    assert r.get() == {"labels": ["C", "B", "A"]}
    assert len(runs) == 3  # no per-element node re-ran
    after = _children(rt, r, "map")
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] and not after[k].stopped for k in before)


def test_map_reorder_of_plain_values_keeps_instances(rt: Runtime) -> None:
    runs: list[int] = []

    @lift
    def triple(x: int) -> int:
        runs.append(x)
        return x * 3

    @pattern
    def Tripled(items: list[Any]):  # type: ignore[no-untyped-def]
        return {"out": items.map(lambda x: triple(x))}  # type: ignore[attr-defined]

    items = _cell(rt, "reorder plain", [1, 2, 3, 2])
    r = rt.run(Tripled, {"items": items})
    assert r.get() == {"out": [3, 6, 9, 6]}
    assert sorted(runs) == [1, 2, 2, 3]  # the duplicate is its own instance
    before = _children(rt, r, "map")
    items.set([2, 3, 2, 1])
    assert r.get() == {"out": [6, 9, 6, 3]}
    assert len(runs) == 4
    assert _children(rt, r, "map") == before


def test_map_removing_an_element_stops_its_instance(rt: Runtime) -> None:
    runs: list[Any] = []

    @lift
    def name_of(item: dict[str, Any]) -> str:
        runs.append(item["name"])
        return item["name"]  # type: ignore[no-any-return]

    @pattern
    def Names(items: list[Any]):  # type: ignore[no-untyped-def]
        return {"names": items.map(lambda item: name_of(item))}  # type: ignore[attr-defined]

    items = _cell(rt, "remove docs", [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    r = rt.run(Names, {"items": items})
    before = _children(rt, r, "map")
    removed = items.get()[1]
    items.remove(removed)
    assert r.get() == {"names": ["a", "c"]}
    after = _children(rt, r, "map")
    assert len(after) == 2
    gone = [child for key, child in before.items() if key not in after]
    assert len(gone) == 1 and gone[0].stopped
    assert all(not child.stopped for child in after.values())
    # the removed element's node no longer runs
    count = len(runs)
    removed.cell.key("name").set("B")
    assert len(runs) == count
    # the others still follow their element
    items.key(0).key("name").set("A")
    assert r.get() == {"names": ["A", "c"]}
    assert runs[count:] == ["A"]


def test_map_appending_one_element_runs_exactly_one_new_instance(rt: Runtime) -> None:
    runs: list[int] = []

    @lift
    def square(x: int) -> int:
        runs.append(x)
        return x * x

    @pattern
    def Squares(items: list[Any]):  # type: ignore[no-untyped-def]
        return {"squares": items.map(lambda x: square(x))}  # type: ignore[attr-defined]

    items = _cell(rt, "append", [1, 2, 3])
    r = rt.run(Squares, {"items": items})
    before = _children(rt, r, "map")
    assert len(runs) == 3
    items.push(4)
    assert r.get() == {"squares": [1, 4, 9, 16]}
    assert runs[3:] == [4]
    after = _children(rt, r, "map")
    assert len(after) == 4 and all(after[k] is before[k] for k in before)


def test_map_callback_closure_over_an_outer_ref(rt: Runtime) -> None:
    @lift
    def times(a: int, b: int) -> int:
        return a * b

    @pattern
    def Scaled(items: list[Any], factor: int):  # type: ignore[no-untyped-def]
        return {"out": items.map(lambda x: times(x, factor))}  # type: ignore[attr-defined]

    factor = _cell(rt, "map factor", 2)
    r = rt.run(Scaled, {"items": [1, 2, 3], "factor": factor})
    assert r.get() == {"out": [2, 4, 6]}
    factor.set(10)
    assert r.get() == {"out": [10, 20, 30]}


def test_map_callback_with_a_handler_over_an_outer_ref(rt: Runtime) -> None:
    @pattern
    def Rows(items: list[Any], total: int = 0):  # type: ignore[no-untyped-def]
        def row(x: Any) -> Any:
            add = handler(lambda event, t: t.set(t.get() + x.get()))
            return {"add": add(t=total)}

        return {"rows": items.map(row), "total": total}  # type: ignore[attr-defined]

    r = rt.run(Rows, {"items": [5, 7]})
    r.rows[1].add.send({})
    assert r.total.get() == 7
    r.rows[0].add.send({})
    assert r.total.get() == 12


def test_map_on_a_live_cell_inside_a_pattern(rt: Runtime) -> None:
    source = _cell(rt, "live map source", [1, 2])

    @pattern
    def FromCell(offset: int = 100):  # type: ignore[no-untyped-def]
        return {"out": source.map(lambda x: lift(lambda a, b: a + b)(x, offset))}

    r = rt.run(FromCell, {})
    assert r.get() == {"out": [101, 102]}
    source.push(3)
    assert r.get() == {"out": [101, 102, 103]}


def test_map_outside_a_pattern_raises(rt: Runtime) -> None:
    source = _cell(rt, "map outside", [1])
    with pytest.raises(CapabilityError):
        source.map(lambda x: x)


# ---------------------------------------------------------------------------
# filter


def test_filter(rt: Runtime) -> None:
    runs: list[int] = []

    @lift
    def is_even(x: int) -> bool:
        runs.append(x)
        return x % 2 == 0

    @pattern
    def Evens(items: list[Any]):  # type: ignore[no-untyped-def]
        return {"evens": items.filter(lambda x: is_even(x))}  # type: ignore[attr-defined]

    items = _cell(rt, "filter items", [1, 2, 3, 4])
    r = rt.run(Evens, {"items": items})
    assert r.get() == {"evens": [2, 4]}
    assert len(runs) == 4
    items.push(6)
    assert r.get() == {"evens": [2, 4, 6]}
    assert runs[4:] == [6]
    items.set([4, 3, 2, 1, 6])  # a reorder: the predicate runs for no one
    assert r.get() == {"evens": [4, 2, 6]}
    assert len(runs) == 5


def test_filter_of_documents_follows_their_fields(rt: Runtime) -> None:
    @pattern
    def Open(todos: list[Any]):  # type: ignore[no-untyped-def]
        return {"open": todos.filter(lambda t: lift(lambda done: not done)(t.done))}  # type: ignore[attr-defined]

    todos = _cell(rt, "todos", [{"title": "a", "done": False}, {"title": "b", "done": True}])
    r = rt.run(Open, {"todos": todos})
    assert r.get() == {"open": [{"title": "a", "done": False}]}
    todos.key(1).key("done").set(False)
    assert [t["title"] for t in r.open.get()] == ["a", "b"]


def test_filter_over_none_is_empty(rt: Runtime) -> None:
    @pattern
    def Nothing(items: list[Any] | None = None):  # type: ignore[no-untyped-def]
        return {"kept": items.filter(lambda x: lift(lambda v: bool(v))(x))}  # type: ignore[union-attr]

    assert rt.run(Nothing, {}).get() == {"kept": []}


# ---------------------------------------------------------------------------
# if_else


def test_if_else_switching(rt: Runtime) -> None:
    """RT 47: cond true, A/B -> "A"; cond false -> "B"; falseValue "C" -> "C"."""

    @pattern
    def Choose(cond: bool, a: str, b: str):  # type: ignore[no-untyped-def]
        return {"value": if_else(cond, a, b)}

    cond = _cell(rt, "cond", True)
    b = _cell(rt, "false value", "B")
    r = rt.run(Choose, {"cond": cond, "a": "A", "b": b})
    assert r.value.get() == "A"
    cond.set(False)
    assert r.value.get() == "B"
    b.set("C")
    assert r.value.get() == "C"


def test_if_else_with_nested_derives(rt: Runtime) -> None:
    """RT: expandChat true -> text "A"; a handler sets it false -> "b"."""

    @handler
    def set_expand(event, expand_chat: Cell[bool]):  # type: ignore[no-untyped-def]
        expand_chat.set(event["expandChat"])

    @pattern
    def Chat(expand_chat: bool):  # type: ignore[no-untyped-def]
        option_a = lift(lambda t: "A" if t else "a")(expand_chat)
        option_b = lift(lambda t: "B" if t else "b")(expand_chat)
        return {
            "expandChat": expand_chat,
            "text": if_else(expand_chat, option_a, option_b),
            "stream": set_expand(expand_chat=expand_chat),
        }

    r = rt.run(Chat, {"expand_chat": True})
    r.stream.send({"expandChat": True})
    assert r.text.get() == "A"
    r.stream.send({"expandChat": False})
    assert r.text.get() == "b"


def test_if_else_links_to_the_chosen_branch(rt: Runtime) -> None:
    @pattern
    def Pick(cond: bool, a: dict[str, Any], b: dict[str, Any]):  # type: ignore[no-untyped-def]
        return {"value": if_else(cond, a, b)}

    a = _cell(rt, "branch a", {"n": 1})
    b = _cell(rt, "branch b", {"n": 2})
    r = rt.run(Pick, {"cond": True, "a": a, "b": b})
    assert r.value.get() == {"n": 1}
    # the node's output holds a link (no copy) that resolves to the branch
    output = rt.cell_at(r.get_raw()["value"]["/"]["link@1"]["id"])
    assert "/" in output.get_raw()
    assert r.value.resolve_as_cell().equals(a)
    # a write through the result lands in the chosen branch
    r.value.key("n").set(10)
    assert a.get() == {"n": 10}


def test_if_else_unchosen_branch_is_not_a_dependency(rt: Runtime) -> None:
    select_runs = _action_runs(rt, "if_else")

    @pattern
    def Pick(cond: bool, a: int, b: int):  # type: ignore[no-untyped-def]
        return {"value": if_else(cond, a, b)}

    cond = _cell(rt, "dep cond", True)
    a = _cell(rt, "dep a", 1)
    b = _cell(rt, "dep b", 2)
    r = rt.run(Pick, {"cond": cond, "a": a, "b": b})
    assert r.value.get() == 1
    assert len(select_runs) == 1
    b.set(20)  # the unchosen branch changes: the selection does not re-run
    assert len(select_runs) == 1 and r.value.get() == 1
    a.set(10)  # the chosen branch changes: the link follows it, no re-run either
    assert len(select_runs) == 1 and r.value.get() == 10
    cond.set(False)
    assert len(select_runs) == 2 and r.value.get() == 20


def test_if_else_with_literals(rt: Runtime) -> None:
    @pattern
    def Label(n: int):  # type: ignore[no-untyped-def]
        return {"label": if_else(lift(lambda v: v > 0)(n), "positive", "not positive")}

    assert rt.run(Label, {"n": 3}).get() == {"label": "positive"}
    assert rt.run(Label, {"n": 0}).get() == {"label": "not positive"}


# ---------------------------------------------------------------------------
# when / unless


@pattern
def WhenUnless(cond, value):  # type: ignore[no-untyped-def]
    return {"when": when(cond, value), "unless": unless(cond, value)}


@pytest.mark.parametrize(
    ("cond", "value", "expected"),
    [(True, "v", "v"), (False, "x", False), (0, "x", 0), ("", "x", "")],
)
def test_when_is_and(rt: Runtime, cond: Any, value: Any, expected: Any) -> None:
    """WU: when(true,"v")="v"; when(false,x)=false; when(0,x)=0; when("",x)=""."""
    assert rt.run(WhenUnless, {"cond": cond, "value": value}).key("when").get() == expected


@pytest.mark.parametrize(
    ("cond", "value", "expected"),
    [(True, "f", True), (False, "fb", "fb"), (0, "fb", "fb")],
)
def test_unless_is_or(rt: Runtime, cond: Any, value: Any, expected: Any) -> None:
    """WU: unless(true,f)=true; unless(false,"fb")="fb"; unless(0,"fb")="fb"."""
    assert rt.run(WhenUnless, {"cond": cond, "value": value}).key("unless").get() == expected


def test_when_and_unless_follow_the_condition(rt: Runtime) -> None:
    cond = _cell(rt, "wu cond", 0)
    value = _cell(rt, "wu value", "v")
    r = rt.run(WhenUnless, {"cond": cond, "value": value})
    assert r.get() == {"when": 0, "unless": "v"}
    cond.set("yes")
    assert r.get() == {"when": "v", "unless": "yes"}
    value.set("w")
    assert r.get() == {"when": "w", "unless": "yes"}


# ---------------------------------------------------------------------------
# fmt


def test_fmt(rt: Runtime) -> None:
    @pattern
    def Sentence(name: str, n: int):  # type: ignore[no-untyped-def]
        return {"text": fmt("{name} has {n:03d} items", name=name, n=n)}

    n = _cell(rt, "fmt n", 3)
    r = rt.run(Sentence, {"name": "bob", "n": n})
    assert r.get() == {"text": "bob has 003 items"}
    n.set(12)
    assert r.text.get() == "bob has 012 items"
    node = Sentence.to_json()["nodes"][0]
    assert node["module"] == {"type": "builtin", "ref": "fmt"}


def test_builtins_outside_a_pattern_raise() -> None:
    with pytest.raises(CapabilityError):
        if_else(True, 1, 2)
    with pytest.raises(CapabilityError):
        when(True, 1)
    with pytest.raises(CapabilityError):
        unless(True, 1)


def test_builtins_return_refs_inside_a_pattern() -> None:
    made: list[Any] = []

    @pattern
    def Refs(c: bool, a: int):  # type: ignore[no-untyped-def]
        made.extend([if_else(c, a, 0), when(c, a), unless(c, a), fmt("{a}", a=a)])
        return {}

    assert all(isinstance(ref, OpaqueRef) for ref in made)
    refs = [n["module"]["ref"] for n in Refs.to_json()["nodes"]]
    assert refs == ["if_else", "when", "unless", "fmt"]
