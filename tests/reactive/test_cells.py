"""cellkernel.reactive.cells: the Cell API of SPEC §3, on the memory and the SQLite store."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from helpers.core import (
    OTHER_SPACE,
    addr,
    make_stream,
    on_event,
    raw,
    store_state,
    version,
    write_raw,
)
from helpers.reliability import dump_store
from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.data import links as links_module
from cellkernel.data.identity import create_ref
from cellkernel.data.links import Link, is_link, make_link, parse_link, stored_link
from cellkernel.errors import CapabilityError, CauseError
from cellkernel.reactive import cells
from cellkernel.reactive.cells import Cell, Stream
from cellkernel.runtime import Runtime
from cellkernel.store.transactions import Transaction

SPEC_METHODS = [
    "get",
    "sample",
    "set",
    "send",
    "update",
    "push",
    "remove",
    "remove_all",
    "key",
    "as_schema",
    "with_tx",
    "sink",
    "resolve_as_cell",
    "equals",
    "get_as_link",
    "readonly",
    "writeonly",
    "map",
    "filter",
    "for_",
]


def entity(cause: Any) -> str:
    return "of:" + str(create_ref({}, cause))


# --------------------------------------------------------------------------- identity


def test_get_cell_identity_and_properties(rt: Runtime) -> None:
    c = rt.get_cell("my-cause")
    assert c.entity_id == entity("my-cause")
    assert c.space == rt.space == "did:local:default"
    assert c.path == ()
    assert c.schema is None
    other = rt.get_cell("my-cause", schema={"type": "number"}, space=OTHER_SPACE)
    assert other.entity_id == c.entity_id
    assert other.space == OTHER_SPACE
    assert other.schema == {"type": "number"}


def test_key_extends_the_path_and_keeps_identity(rt: Runtime) -> None:
    c = rt.get_cell("c")
    child = c.key("a", 0, "b")
    assert child.path == ("a", 0, "b")
    assert child.entity_id == c.entity_id and child.space == c.space
    assert c.key() is c
    with pytest.raises(TypeError):
        c.key(1.5)  # type: ignore[arg-type]


def test_set_and_get_round_trip(rt: Runtime) -> None:
    c = rt.get_cell("c")
    assert c.get() is None
    assert c.set({"name": "Ada", "n": [1, 2]}) is c  # set returns the cell
    assert c.get() == {"name": "Ada", "n": [1, 2]}
    assert c.key("n").get() == [1, 2]
    c.key("n", 1).set(3)
    assert c.get() == {"name": "Ada", "n": [1, 3]}


def test_stored_key_order_is_the_written_order(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"zeta": 1, "alpha": {"y": 1, "b": 2}})
    assert list(c.get()) == ["zeta", "alpha"]
    assert list(c.get()["alpha"]) == ["y", "b"]
    assert list(raw(rt, c)) == ["zeta", "alpha"]


# --------------------------------------------------------------------------- sugar


def test_attribute_and_item_sugar_are_key(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"items": [{"title": "first"}, {"title": "second"}], "name": "list"})
    assert c.name.get() == "list"
    assert c["name"].get() == "list"
    assert c.items[1].title.get() == "second"
    assert c["items"][0]["title"].get() == "first"
    assert c.items[0].path == ("items", 0)
    assert c.name == c.key("name")
    c.items[1].title.set("changed")
    assert c.get()["items"][1] == {"title": "changed"}


def test_cell_index_on_arrays(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set([10, 20, 30])
    assert c[0].get() == 10
    assert c[2].get() == 30
    assert c[5].get() is None
    c[1].set(21)
    assert c.get() == [10, 21, 30]


@pytest.mark.parametrize("name", SPEC_METHODS)
def test_attribute_sugar_never_shadows_methods(rt: Runtime, name: str) -> None:
    c = rt.get_cell("c")
    c.set({name: "data"})
    attribute = getattr(c, name)
    assert callable(attribute) and not isinstance(attribute, Cell)
    assert c.key(name).get() == "data"
    assert c[name].get() == "data"


def test_attribute_sugar_never_shadows_properties(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"path": 1, "space": 2, "schema": 3, "entity_id": 4})
    assert c.path == () and c.space == rt.space and c.schema is None
    assert c.entity_id == entity("c")
    assert [c.key(k).get() for k in ("path", "space", "schema", "entity_id")] == [1, 2, 3, 4]


def test_private_names_and_iteration_are_not_sugar(rt: Runtime) -> None:
    c = rt.get_cell("c")
    with pytest.raises(AttributeError):
        _ = c._secret
    with pytest.raises(TypeError):
        iter(c)


# --------------------------------------------------------------------------- reading


def test_get_resolves_links_deeply_into_plain_values(rt: Runtime) -> None:
    leaf = rt.get_cell("leaf")
    leaf.set("deep")
    middle = rt.get_cell("middle")
    middle.set({"list": [1, leaf], "leaf": leaf})
    top = rt.get_cell("top")
    top.set({"middle": middle, "n": 1})
    value = top.get()
    assert value == {"middle": {"list": [1, "deep"], "leaf": "deep"}, "n": 1}
    assert type(value) is dict and isinstance(value["middle"], dict)

    def no_cells(v: Any) -> bool:
        if isinstance(v, Cell):
            return False
        if isinstance(v, dict):
            return all(no_cells(x) for x in v.values())
        if isinstance(v, list):
            return all(no_cells(x) for x in v)
        return True

    assert no_cells(value)
    leaf.set("changed")
    assert top.get()["middle"]["list"][1] == "changed"


def test_stream_fields_come_back_as_streams_that_send(rt: Runtime) -> None:
    increment = make_stream(rt, "increment")
    count = rt.get_cell("count")
    count.set(0)
    on_event(rt, increment, lambda tx, event: count.with_tx(tx).set(count.with_tx(tx).get() + 1))
    result = rt.get_cell("result")
    result.set({"count": count, "increment": increment})

    fields = result.get()
    assert isinstance(fields["increment"], Stream)
    fields["increment"].send({})
    fields["increment"].send({})
    assert count.get() == 2
    assert result.get()["count"] == 2
    assert raw(rt, increment) == {"$stream": True}  # events are never stored


def test_sample_reads_the_same_value_as_get(rt: Runtime) -> None:
    c = rt.get_cell("c", schema={"type": "object", "properties": {"a": {"default": 1}}})
    c.set({"b": 2})
    assert c.sample() == c.get() == {"b": 2, "a": 1}


def test_with_tx_reads_and_writes_in_that_transaction(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set(1)
    with rt.edit() as tx:
        inside = c.with_tx(tx)
        inside.set(2)
        assert inside.get() == 2
        assert c.get() == 1  # not committed yet
        assert inside.entity_id == c.entity_id
    assert c.get() == 2


# --------------------------------------------------------------------------- writing


def test_set_of_itself_changes_nothing(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"a": 1})
    start = version(rt, c)
    c.set(c)
    assert version(rt, c) == start
    assert c.get() == {"a": 1}


@pytest.mark.parametrize(
    "value",
    [1, "text", None, [1, 2], {"a": {"b": [1, None]}}, [{"doc": 1}, {"doc": 2}], {"x": [{"d": 1}]}],
)
def test_set_of_its_own_value_changes_nothing(rt: Runtime, value: Any) -> None:
    c = rt.get_cell("c")
    c.set(value)
    start = version(rt, c)
    ids_before = rt.store.entity_ids(rt.space)
    c.set(c.get())
    assert version(rt, c) == start
    assert rt.store.entity_ids(rt.space) == ids_before  # no documents copied
    assert c.get() == value


def test_set_of_its_own_value_keeps_links_to_other_cells(rt: Runtime) -> None:
    count = rt.get_cell("count")
    count.set(1)
    names = rt.get_cell("names")
    names.set(["a", "b"])
    c = rt.get_cell("c")
    c.set({"count": count, "names": names, "own": 2})
    stored = raw(rt, c)
    start = version(rt, c)
    c.set(c.get())
    assert version(rt, c) == start
    assert raw(rt, c) == stored
    count.set(5)  # still linked
    assert c.get()["count"] == 5

    edited = c.get()
    edited["own"] = 3
    c.set(edited)  # the usual read-modify-write keeps the untouched links
    assert is_link(raw(rt, c)["count"]) and raw(rt, c)["own"] == 3
    edited["count"] = 7
    c.set(edited)  # a changed value replaces the link (a plain link is replaced on write)
    assert raw(rt, c)["count"] == 7 and count.get() == 5


def test_cells_inside_values_are_stored_as_links(rt: Runtime) -> None:
    target = rt.get_cell("target")
    target.set({"n": 1})
    c = rt.get_cell("c")
    c.set({"ref": target, "child": target.key("n")})
    assert raw(rt, c) == {
        "ref": make_link(rt.space, entity("target"), (), base_space=rt.space),
        "child": make_link(rt.space, entity("target"), ("n",), base_space=rt.space),
    }
    assert c.get() == {"ref": {"n": 1}, "child": 1}


def test_objects_inside_lists_become_their_own_documents(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set([{"title": "a"}, 1])
    stored = raw(rt, c)
    assert is_link(stored[0]) and stored[1] == 1
    assert c.get() == [{"title": "a"}, 1]
    c[0].key("title").set("b")  # written in the element's own document
    assert raw(rt, c) == stored
    assert c.get() == [{"title": "b"}, 1]


def test_update_reference_sequence(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"name": "test", "age": 42, "tags": ["a", "b"]})
    c.update({"age": 43, "tags": ["a", "b", "c"]})
    assert c.get() == {"name": "test", "age": 43, "tags": ["a", "b", "c"]}
    c.update({"name": "updated"})
    assert c.get() == {"name": "updated", "age": 43, "tags": ["a", "b", "c"]}


def test_update_on_none_creates_the_object(rt: Runtime) -> None:
    c = rt.get_cell("c")
    assert c.get() is None
    assert c.update({"a": 1, "b": {"c": 2}}) is c
    assert c.get() == {"a": 1, "b": {"c": 2}}
    c.key("nested").update({"x": 1})
    assert c.get()["nested"] == {"x": 1}


def test_update_with_nothing_changed_writes_nothing(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"a": 1})
    start = version(rt, c)
    c.update({"a": 1})
    assert version(rt, c) == start


@pytest.mark.parametrize(
    ("current", "values"), [([1], {"a": 1}), ("text", {"a": 1}), ({}, [("a", 1)])]
)
def test_update_rejects_non_objects_and_writes_nothing(
    rt: Runtime, current: Any, values: Any
) -> None:
    c = rt.get_cell("c")
    c.set(current)
    before = store_state(rt)
    with pytest.raises(TypeError):
        c.update(values)
    assert store_state(rt) == before


def test_push_reference_sequence(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set([1, 2, 3])
    c.push(4)
    c.push(5)
    assert c.get() == [1, 2, 3, 4, 5]
    c.push(6, 7)
    assert c.get() == [1, 2, 3, 4, 5, 6, 7]


def test_push_to_none_uses_the_schema_default(rt: Runtime) -> None:
    schema = {"type": "array", "items": {"type": "number"}, "default": [10, 20]}
    c = rt.get_cell("c", schema=schema)
    assert c.get() == [10, 20]
    c.push(30)
    assert c.get() == [10, 20, 30]
    c.push(40)
    assert c.get() == [10, 20, 30, 40]


def test_push_to_none_without_schema_creates_a_list(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.push("first")
    assert c.get() == ["first"]
    d = rt.get_cell("d")
    d.set({"list": None})
    d.key("list").push(1)
    assert d.get() == {"list": [1]}


@pytest.mark.parametrize("current", [{"a": 1}, "text", 3, True])
def test_push_to_a_non_list_raises_type_error_and_writes_nothing(rt: Runtime, current: Any) -> None:
    c = rt.get_cell("c")
    c.set(current)
    before = store_state(rt)
    with pytest.raises(TypeError, match="push"):
        c.push(1)
    assert store_state(rt) == before


def test_push_objects_become_documents_and_cells_become_links(rt: Runtime) -> None:
    other = rt.get_cell("other")
    other.set({"shared": True})
    c = rt.get_cell("c")
    c.push({"own": 1}, other)
    stored = raw(rt, c)
    assert all(is_link(e) for e in stored)
    assert stored[1] == make_link(rt.space, entity("other"), (), base_space=rt.space)
    assert c.get() == [{"own": 1}, {"shared": True}]
    other.set({"shared": False})  # the pushed cell is referenced, not copied
    assert c.get()[1] == {"shared": False}


def test_remove_and_remove_all_primitives_by_equality(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set([1, 2, 1, 3, 1, True])
    c.remove(1)
    assert c.get() == [2, 1, 3, 1, True]  # only the first match
    c.remove_all(1)
    assert c.get() == [2, 3, True]  # True is not 1
    c.remove(True)
    assert c.get() == [2, 3]


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3),
                    st.sampled_from([0.5, -1.5, 2.25]), st.sampled_from(["", "a", "1"]))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_scalars, max_size=12), target=_scalars)
def test_remove_of_a_scalar_is_the_first_json_equal_element(values: list[Any],
                                                            target: Any) -> None:
    """The C-level search finds what an element loop with ``json_equal`` would."""
    from cellkernel.data.values import json_equal

    rt = Runtime()
    try:
        c = rt.get_cell("c")
        c.set(values)
        stored = c.get()  # as stored (the store normalises nothing here, but to be sure)
        c.remove(target)
        at = next((i for i, v in enumerate(stored) if json_equal(v, target)), None)
        expect = stored if at is None else stored[:at] + stored[at + 1:]
        assert c.get() == expect
        assert [type(v) for v in c.get()] == [type(v) for v in expect]  # True stays True
    finally:
        rt.close()


@pytest.mark.parametrize("path", [(), ("xs",)])
def test_removing_the_last_element_writes_only_its_index(rt: Runtime, path: tuple[str, ...]
                                                        ) -> None:
    """A map re-keys the indices a write names: the last element's removal names its own.

    One in the middle shifts every later element: the list counts as replaced.
    """
    doc = rt.get_cell(f"list{len(path)}")
    doc.set({"xs": [5, 6, 7, 6]} if path else [5, 6, 7, 6])
    lst = doc.key(*path)

    def written(edit: Any) -> Any:
        before = rt.store.load(rt.space, doc.entity_id).value  # type: ignore[union-attr, arg-type]
        edit()
        after = rt.store.load(rt.space, doc.entity_id).value  # type: ignore[union-attr, arg-type]
        return rt.scheduler.written_paths(rt.space, doc.entity_id or "", before, after)

    # index 1 of 4: the rest shift, the write names the list itself (at the root: nothing)
    assert written(lambda: lst.remove(6)) == ([path] if path else None)
    assert lst.get() == [5, 7, 6]
    assert written(lambda: lst.remove(6)) == [(*path, 2)]  # the last: its index alone
    assert lst.get() == [5, 7]
    assert written(lambda: lst.push(8)) == [(*path, 2)]  # (as a push names its new one)
    lst.set([])
    version = rt.store.load(rt.space, doc.entity_id or "").version  # type: ignore[union-attr]
    lst.remove(6)  # nothing to remove from an empty list: nothing written
    assert lst.get() == []
    assert rt.store.load(rt.space, doc.entity_id or "").version == version  # type: ignore[union-attr]


def test_push_through_a_refusing_schema_is_refused_like_set(rt: Runtime) -> None:
    """``schema=False`` refuses every write: push too (it was skipped as falsy)."""
    c = rt.get_cell("c")
    c.set([1])
    with pytest.raises(ValueError, match="no value is allowed"):
        c.as_schema(False).push(2)
    with pytest.raises(ValueError, match="no value is allowed"):
        c.as_schema(False).set([3])
    assert c.get() == [1]


def test_remove_matches_documents_by_identity(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set([{"n": 1}, {"n": 1}, {"n": 2}])
    first, second, third = (raw(rt, c)[i] for i in range(3))
    items = c.get()

    c.remove({"n": 1})  # equal content is not the same document: no-op
    assert raw(rt, c) == [first, second, third]

    c.remove(items[1])  # the value read from the list names its document
    assert raw(rt, c) == [first, third]
    assert c.get() == [{"n": 1}, {"n": 2}]

    c.remove(c[1])  # a cell on an element works too
    assert raw(rt, c) == [first]


def test_remove_all_documents_by_identity(rt: Runtime) -> None:
    shared = rt.get_cell("shared")
    shared.set({"n": 1})
    other = rt.get_cell("other")
    other.set({"n": 1})
    c = rt.get_cell("c")
    c.set([shared, other, shared])
    c.remove_all(shared)
    assert raw(rt, c) == [make_link(rt.space, entity("other"), (), base_space=rt.space)]


def test_remove_without_a_match_is_a_no_op(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set([1, {"n": 1}])
    unrelated = rt.get_cell("unrelated")
    unrelated.set({"n": 1})
    start = version(rt, c)
    c.remove(9)
    c.remove_all("1")
    c.remove(unrelated)
    assert version(rt, c) == start
    empty = rt.get_cell("empty")
    empty.remove(1)  # nothing stored: nothing to remove
    assert empty.get() is None


def test_list_operations_through_a_plain_link_edit_the_linked_list(rt: Runtime) -> None:
    items = rt.get_cell("items")
    items.set([1, 2, 1])
    alias = rt.get_cell("alias")
    alias.set(items)
    alias.push(3)
    alias.remove(1)
    assert items.get() == [2, 1, 3]
    alias.remove_all(1)
    assert items.get() == [2, 3]
    assert is_link(raw(rt, alias))
    record = rt.get_cell("record")
    record.set({"a": 1})
    pointer = rt.get_cell("pointer")
    pointer.set(record)
    pointer.update({"b": 2})
    assert record.get() == {"a": 1, "b": 2}


def test_remove_on_a_non_list_raises_type_error(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"a": 1})
    before = store_state(rt)
    with pytest.raises(TypeError, match="remove"):
        c.remove(1)
    with pytest.raises(TypeError):
        c.remove_all(1)
    assert store_state(rt) == before


# --------------------------------------------------------------------------- links on cells


def test_get_as_link_and_link_written_as_a_value(rt: Runtime) -> None:
    c = rt.get_cell("c", schema={"type": "number"})
    link = c.key("x").get_as_link()
    assert link == {"/": {"link@1": {"id": entity("c"), "path": ["x"], "space": rt.space}}}
    assert c.get_as_link(base_space=rt.space) == {"/": {"link@1": {"id": entity("c"), "path": []}}}
    assert c.get_as_link(include_schema=True)["/"]["link@1"]["schema"] == {"type": "number"}
    rt.get_cell("c").set({"x": 5})
    holder = rt.get_cell("holder")
    holder.set(c.key("x"))
    assert holder.get() == 5


def test_resolve_as_cell_follows_every_link(rt: Runtime) -> None:
    target = rt.get_cell("target")
    target.set({"deep": {"value": 1}})
    middle = rt.get_cell("middle")
    middle.set({"to": target.key("deep")})
    start = rt.get_cell("start")
    start.set(middle.key("to"))
    resolved = start.key("value").resolve_as_cell()
    assert addr(resolved) == (rt.space, entity("target"), ("deep", "value"))
    assert resolved.get() == 1
    plain = target.key("deep").resolve_as_cell()
    assert addr(plain) == addr(target.key("deep"))


def test_equals_compares_locations_after_resolving_links(rt: Runtime) -> None:
    a = rt.get_cell("a")
    a.set({"x": 1})
    b = rt.get_cell("b")
    b.set(a)
    twin = rt.get_cell("twin")
    twin.set({"x": 1})
    assert a.equals(rt.get_cell("a"))
    assert b.equals(a) and a.equals(b)
    assert not a.equals(twin)  # same content, different document
    assert not a.equals(a.key("x"))
    assert not a.equals({"x": 1})
    assert not a.equals(Cell.of({"x": 1}))
    holder = rt.get_cell("holder")
    holder.set([a])
    assert a.equals(holder.get()[0])  # a document read through a link knows its cell


# --------------------------------------------------------------------------- sinks


def test_sink_reference_sequence_is_path_precise(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set({"a": {"b": 42, "c": 10}, "d": 5})
    seen: list[Any] = []
    c.key("a", "b").sink(seen.append)
    assert seen == [42]
    c.key("d").set(50)
    c.key("a", "c").set(100)
    c.key("a", "b").set(42)
    assert seen == [42]
    c.key("a", "b").set(300)
    assert seen == [42, 300]


def test_sink_unsubscribe_stops_the_callbacks(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set(1)
    seen: list[Any] = []
    cancel = c.sink(seen.append)
    c.set(2)
    cancel()
    c.set(3)
    assert seen == [1, 2]
    cancel()  # idempotent


def test_sink_follows_links_and_relinking(rt: Runtime) -> None:
    first, second = rt.get_cell("first"), rt.get_cell("second")
    first.set("one")
    second.set("two")
    pointer = rt.get_cell("pointer")
    pointer.set({"to": first})
    seen: list[Any] = []
    pointer.sink(seen.append)
    first.set("uno")
    pointer.key("to").set(second)
    second.set("dos")
    first.set("ignored now")
    assert seen == [{"to": "one"}, {"to": "uno"}, {"to": "two"}, {"to": "dos"}]


# --------------------------------------------------------------------------- capabilities

WRITES = {
    "set": lambda c: c.set(1),
    "update": lambda c: c.update({"a": 1}),
    "push": lambda c: c.push(1),
    "remove": lambda c: c.remove(1),
    "remove_all": lambda c: c.remove_all(1),
    "send": lambda c: c.send({}),
}
READS = {
    "get": lambda c: c.get(),
    "sample": lambda c: c.sample(),
    "sink": lambda c: c.sink(lambda value: None),
}


@pytest.mark.parametrize("operation", sorted(WRITES))
@pytest.mark.parametrize("path", [(), ("list",)])
def test_readonly_refuses_writes_and_writes_nothing(
    rt: Runtime, operation: str, path: tuple[str, ...]
) -> None:
    c = rt.get_cell("c")
    c.set({"list": [1]})
    readonly = c.readonly().key(*path)
    assert readonly.capability == "readonly"
    before = store_state(rt)
    with pytest.raises(CapabilityError) as info:
        WRITES[operation](readonly)
    assert info.value.capability == "readonly"
    assert info.value.operation in ("write", "send")
    assert info.value.operation in str(info.value) and "readonly" in str(info.value)
    assert store_state(rt) == before
    assert readonly.get() == c.key(*path).get()  # reads are fine


@pytest.mark.parametrize("operation", sorted(READS))
@pytest.mark.parametrize("path", [(), ("x",)])
def test_writeonly_refuses_reads(rt: Runtime, operation: str, path: tuple[str, ...]) -> None:
    c = rt.get_cell("c")
    c.set({"x": 1})
    writeonly = c.writeonly().key(*path)
    assert writeonly.capability == "writeonly"
    with pytest.raises(CapabilityError, match=r"cannot read a writeonly cell") as info:
        READS[operation](writeonly)
    assert (info.value.operation, info.value.capability) == ("read", "writeonly")


def test_writeonly_allows_every_write(rt: Runtime) -> None:
    c = rt.get_cell("c")
    w = c.writeonly()
    w.set({"x": 1})
    w.update({"y": 2})
    w.key("list").push(1, 2)
    w.key("list").remove(1)
    assert c.get() == {"x": 1, "y": 2, "list": [2]}


def test_capability_is_kept_by_derived_handles(rt: Runtime) -> None:
    c = rt.get_cell("c")
    readonly = c.readonly()
    assert readonly.key("a").key("b").capability == "readonly"
    assert readonly.as_schema({"type": "object"}).capability == "readonly"
    assert readonly["a"].capability == "readonly" and readonly.a.capability == "readonly"
    assert c.writeonly().key("a").capability == "writeonly"
    assert c.capability == "cell"


# --------------------------------------------------------------------------- causes and Cell.of


def test_for_after_connection_raises_cause_error(rt: Runtime) -> None:
    c = rt.get_cell("c")
    with pytest.raises(CauseError, match="already connected"):
        c.for_("other")
    assert c.for_("other", flexible=True) is c
    assert c.entity_id == entity("c")


def test_for_names_an_unconnected_cell(rt: Runtime) -> None:
    named = Cell.of({"a": 1}).for_("named")
    holder = rt.get_cell("holder")
    holder.set({"child": named})
    assert named.entity_id == entity("named")
    assert named.get() == {"a": 1}
    assert holder.get() == {"child": {"a": 1}}
    with pytest.raises(CauseError):
        named.for_("again")


def test_for_twice_raises_unless_flexible(rt: Runtime) -> None:
    cell = Cell.of(1).for_("first")
    with pytest.raises(CauseError, match="already has the cause"):
        cell.for_("second")
    cell.for_("second", flexible=True)
    holder = rt.get_cell("holder")
    holder.set(cell)
    assert cell.entity_id == entity(["first", "second"])


def test_cell_for_is_also_a_constructor(rt: Runtime) -> None:
    named = Cell.for_("by-class")
    assert isinstance(named, Cell) and named.entity_id is None
    holder = rt.get_cell("holder")
    holder.set([named])
    assert named.entity_id == entity("by-class")


def test_cell_of_before_and_after_connection(rt: Runtime) -> None:
    cell = Cell.of(5, schema={"type": "number"})
    assert cell.get() == 5 and cell.sample() == 5
    assert cell.schema == {"type": "number", "default": 5}
    assert cell.entity_id is None and cell.space is None and cell.path == ()
    with pytest.raises(CauseError):
        cell.set(6)
    with pytest.raises(CauseError):
        cell.get_as_link()
    holder = rt.get_cell("holder")
    holder.set({"child": cell})
    assert cell.entity_id is not None and cell.space == rt.space
    assert cell.get() == 5
    cell.set(6)
    assert holder.get() == {"child": 6}


@pytest.mark.parametrize("reject", ["bad value", "schema", "exception in edit"])
def test_a_rejected_write_leaves_a_cell_of_unconnected(rt: Runtime, reject: str) -> None:
    typed = rt.get_cell("c", schema={"type": "object", "properties": {"n": {"type": "number"}}})
    child = Cell.of(5)
    before = store_state(rt)
    with pytest.raises((ValueError, RuntimeError)):
        if reject == "bad value":
            typed.set({"bad": float("nan"), "child": child})
        elif reject == "schema":
            typed.set({"n": "not a number", "child": child})
        else:
            with rt.edit() as tx:
                typed.with_tx(tx).set({"child": child})
                assert child.entity_id is not None
                raise RuntimeError("changed my mind")
    assert store_state(rt) == before
    assert child.entity_id is None and child.space is None
    typed.set({"child": child})  # stored later, it gets a document that exists
    assert typed.get() == {"child": 5}
    # (mypy keeps the property narrowed to None from the assert above)
    assert rt.store.load(rt.space, child.entity_id) is not None  # type: ignore[arg-type]


def test_unconnected_cell_write_raises_and_writes_nothing(rt: Runtime) -> None:
    before = store_state(rt)
    with pytest.raises(CauseError):
        Cell.of([]).push(1)
    with pytest.raises(CauseError):
        Cell.of({}).update({"a": 1})
    assert store_state(rt) == before


def test_an_unconnected_cell_names_what_it_lacks_wherever_it_needs_a_runtime(
    rt: Runtime,
) -> None:
    loose = Cell.of({"a": 1})
    assert loose.get() == {"a": 1}  # its initial value: no runtime needed
    for needs_a_runtime in (loose.get_raw, loose.resolve_as_cell,
                            lambda: loose.sink(lambda _v: None), lambda: loose.send(1)):
        with pytest.raises(CauseError, match="no identity yet"):
            needs_a_runtime()
    with pytest.raises(TypeError, match="not connected to a runtime"):
        Runtime.of(loose)


def test_runtime_of_a_cell_is_the_runtime_it_lives_in(rt: Runtime) -> None:
    cell = rt.get_cell("runtime-of")
    assert Runtime.of(cell) is rt
    assert Runtime.of(cell.key("a").key(0)) is rt
    other = Runtime()
    assert Runtime.of(other.get_cell("runtime-of")) is other


# --------------------------------------------------------------------------- streams


def test_set_on_a_stream_sends_and_stores_nothing(rt: Runtime) -> None:
    stream = make_stream(rt, "s")
    seen: list[Any] = []
    on_event(rt, stream, lambda tx, event: seen.append(event))
    start = version(rt, stream)
    stream.send(1)
    stream.set(2)
    assert seen == [1, 2]
    assert raw(rt, stream) == {"$stream": True}
    assert version(rt, stream) == start


def test_a_stream_read_from_a_cell_is_a_stream(rt: Runtime) -> None:
    stream = make_stream(rt, "s")
    assert isinstance(stream.get(), Stream)
    seen: list[Any] = []
    on_event(rt, stream, lambda tx, event: seen.append(event))
    as_stream = stream.get()
    as_stream({"called": True})  # a Stream is callable
    assert seen == [{"called": True}]


def test_send_rejects_values_that_could_not_be_stored(rt: Runtime) -> None:
    stream = make_stream(rt, "s")
    seen: list[Any] = []
    on_event(rt, stream, lambda tx, event: seen.append(event))
    with pytest.raises(ValueError, match="/x"):
        stream.send({"x": float("nan")})
    with pytest.raises(ValueError):
        stream.set({1, 2})
    rt.idle()
    assert seen == []


def test_handler_sees_writes_of_its_own_transaction(rt: Runtime) -> None:
    stream = make_stream(rt, "s")
    c = rt.get_cell("c")
    c.set(0)
    observed: list[int] = []

    def handle(tx: Transaction, event: Any) -> None:
        bound = c.with_tx(tx)
        bound.set(bound.get() + event)
        observed.append(bound.get())

    on_event(rt, stream, handle)
    stream.send(5)
    assert observed == [5] and c.get() == 5


# -- user writes: refused with a typed error, storage byte-for-byte unchanged ------------


def test_schema_false_refuses_every_write(rt: Runtime) -> None:
    c = rt.get_cell("schema-false")
    c.set({"a": 1})
    before = dump_store(rt.store)
    closed = c.as_schema(False)
    for value in (1, "x", None, True, {"a": 1}, [1]):
        with pytest.raises(ValueError, match="no value is allowed"):
            closed.set(value)
    with pytest.raises(ValueError, match="no value is allowed"):
        c.key("a").as_schema(False).set(2)
    assert dump_store(rt.store) == before
    c.as_schema(True).set({"a": 2})  # the other half: an open schema accepts
    assert c.get() == {"a": 2}


def test_non_finite_number_names_the_path(rt: Runtime) -> None:
    c = rt.get_cell("inf-path")
    c.set({"ok": 1})
    before = dump_store(rt.store)
    with pytest.raises(ValueError, match=r"/ok\b"):
        c.key("ok").set(float("inf"))
    with pytest.raises(ValueError, match=r"/ok/x"):
        c.key("ok").set({"x": float("nan")})
    assert dump_store(rt.store) == before
    c.key("ok").set(1.5)
    assert c.get() == {"ok": 1.5}


def test_user_data_shaped_like_a_stream_marker_is_refused(rt: Runtime) -> None:
    c = rt.get_cell("stream-shaped")
    c.set({"a": 1})
    before = dump_store(rt.store)
    with pytest.raises(ValueError, match=r"\$stream"):
        c.set({"$stream": True})
    with pytest.raises(ValueError, match=r"at /a: it is the stream marker"):
        c.key("a").set({"$stream": True})
    with pytest.raises(ValueError, match=r"at /a/0: it is the stream marker"):
        c.key("a").set([{"$stream": True}])
    with pytest.raises(ValueError, match=r"it is the stream marker"):
        c.key("list").push({"$stream": True})
    assert dump_store(rt.store) == before
    assert not isinstance(c.get()["a"], Stream)
    c.set({"a": {"$stream": False}, "b": {"$stream": True, "other": 1}})  # not the marker
    assert c.get() == {"a": {"$stream": False}, "b": {"$stream": True, "other": 1}}


def test_a_value_nested_100000_deep_is_refused_quickly(rt: Runtime) -> None:
    c = rt.get_cell("very-deep")
    c.set({"a": 1})
    deep: Any = 0
    for _ in range(100_000):
        deep = {"k": deep}
    before = dump_store(rt.store)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="deep"):
        c.set(deep)
    with pytest.raises(ValueError, match="deep"):
        c.key("a").set([deep])
    assert time.perf_counter() - start < 2.0
    assert dump_store(rt.store) == before
    assert c.get() == {"a": 1}


# --------------------------------------------------------------------------- the scalar fast path
# ``Cell.set``/``get`` of a scalar over a scalar document skip the transaction (issue 20):
# for any scalar they must do exactly what the transaction path does.

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**5000, -(10**5000)]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
    st.sampled_from(["\ud800", "a\udfffb", "é", ""]),
)


def _set_fast(cell: Cell[Any], value: Any) -> None:
    cell.set(value)


def _set_in_a_transaction(cell: Cell[Any], value: Any) -> None:
    Runtime.of(cell).edit_with_retry(lambda tx: cell.with_tx(tx).set(value))


@settings(max_examples=150, deadline=None)
@given(first=_scalars, second=_scalars)
def test_a_scalar_set_outside_a_transaction_matches_the_transaction_path(
    first: Any, second: Any
) -> None:
    fast, slow = Runtime(), Runtime()
    for value in (first, second):
        results: list[tuple[str, object]] = []
        for rt, write in ((fast, _set_fast), (slow, _set_in_a_transaction)):
            cell = rt.get_cell("scalar")
            before = dump_store(rt.store)
            try:
                write(cell, value)
            except ValueError as exc:
                assert dump_store(rt.store) == before  # refused: nothing landed
                results.append(("refused", type(exc)))
            else:
                results.append(("landed", repr(cell.get())))
        assert results[0] == results[1], (value, results)
    fast.close()
    slow.close()


def test_with_tx_binds_a_copy_that_keeps_everything_else(rt: Runtime) -> None:
    """``with_tx``'s field-by-field copy of a plain cell equals ``_derive(tx=...)``."""
    base = rt.get_cell("bound", schema={"type": "object"}).key("a").readonly()
    tx = Transaction(rt.store)
    bound = base.with_tx(tx)
    derived = base._derive(tx=tx)
    assert type(bound) is Cell
    for field in Cell.__slots__:
        assert getattr(bound, field) == getattr(derived, field), field
    assert bound._tx is tx and base._tx is None
    stream: Stream[Any] = Stream(rt, rt.space, "of:events", (), None)
    assert type(stream.with_tx(tx)) is type(stream._derive(tx=tx))  # the general copy
    loose: Cell[Any] = Cell(None, None, None, (), None)
    assert loose.with_tx(tx)._origin is loose  # unconnected: the general copy keeps its origin


# --------------------------------------------------------------------------- bound cells
# ``get``/``set`` of a connected plain cell bound to a transaction skip ``_check`` and
# ``_in_write_tx`` (issue 20: an action's run): every other cell still goes through them.


def test_a_bound_cell_reads_and_writes_in_its_transaction_and_journals(rt: Runtime) -> None:
    a, b = rt.get_cell("a"), rt.get_cell("b")
    a.set(1)
    tx = Transaction(rt.store)
    assert a.with_tx(tx).get() == 1
    b.with_tx(tx).set(2)
    assert b.with_tx(tx).get() == 2 and b.get() is None  # not landed before the commit
    assert tx.reads == [(rt.space, a.entity_id, ()), (rt.space, b.entity_id, ())]
    tx.commit()
    assert b.get() == 2


def test_a_bound_cell_keeps_its_capability(rt: Runtime) -> None:
    c = rt.get_cell("c")
    c.set(1)
    before = dump_store(rt.store)
    tx = Transaction(rt.store)
    with pytest.raises(CapabilityError):
        c.writeonly().with_tx(tx).get()
    with pytest.raises(CapabilityError):
        c.readonly().with_tx(tx).set(2)
    assert c.readonly().with_tx(tx).get() == 1
    c.writeonly().with_tx(tx).set(3)
    assert tx.commit() and c.get() == 3
    assert dump_store(rt.store) != before
    loose = Cell.of(7)
    assert loose.with_tx(tx).get() == 7  # no identity yet: its initial value
    with pytest.raises(CauseError):
        loose.with_tx(Transaction(rt.store)).set(8)


@pytest.mark.parametrize("bound", [False, True])
def test_a_scalar_write_is_checked_against_its_documents_schema(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, bound: bool
) -> None:
    """The landing schema (the pattern layer's hook) refuses a write, naming the document."""
    c = rt.get_cell("typed")
    c.set(1)
    doc = rt.store.load(rt.space, c.entity_id or "")
    monkeypatch.setitem(
        cells._hooks, "landing_schema",
        lambda _rt, space, eid: {"type": "integer"} if eid == c.entity_id else None,
    )
    before = dump_store(rt.store)
    with pytest.raises(ValueError, match=f"{c.entity_id}/"):
        if bound:
            rt.edit_with_retry(lambda tx: c.with_tx(tx).set("text"))
        else:
            c.set("text")
    assert dump_store(rt.store) == before
    c.set(1)  # no-op: nothing lands, the version stays
    assert rt.store.load(rt.space, c.entity_id or "") is doc
    c.set(2)
    assert c.get() == 2


@pytest.mark.parametrize("seed", range(8))
def test_list_link_targets_reused_by_element_equal_those_found_afresh(seed: int) -> None:
    """``_whole_document_links`` reuses, for the list last read at the same place, the
    targets of the elements that are the objects they were: after random element
    replacements (links to other documents, equal links as new dicts, links with a
    path or a schema, plain values), pushes and cuts, its answer equals one found with
    nothing remembered."""
    rng = random.Random(seed)
    space = "did:test:links"
    where = (space, f"of:list-{seed}", ("items",))

    def element() -> Any:
        roll = rng.random()
        target = f"of:doc{rng.randrange(6)}"
        if roll < 0.6:
            return make_link(space, target, ())
        if roll < 0.7:
            return make_link(space, target, ("v",))
        if roll < 0.8:
            return make_link(space, target, (), {"type": "integer"})
        if roll < 0.9:
            return make_link("did:test:other", target, ())
        return rng.choice([1, "x", None, {"v": 1}])

    value = [element() for _ in range(rng.randint(0, 12))]
    for _ in range(40):
        value = list(value)  # copy-on-write: the elements not replaced are shared
        roll = rng.random()
        if roll < 0.6 and value:
            value[rng.randrange(len(value))] = element()
        elif roll < 0.8:
            value.append(element())
        else:
            del value[rng.randrange(len(value) + 1):]
        got = cells._whole_document_links(value, space, where)
        remembered = dict(cells._list_targets)
        cells._list_targets.clear()
        fresh = cells._whole_document_links(value, space, where)
        cells._list_targets.clear()
        cells._list_targets.update(remembered)
        assert got == fresh
    cells._list_targets.pop(where, None)


@pytest.mark.parametrize("seed", range(10))
def test_a_tracked_read_of_a_list_of_links_equals_the_element_by_element_read(
    seed: int, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_linked_values`` (one pass over a list of whole-document links, the elements
    whose documents did not change taken from the last read) gives the value (records
    as ``DocDict``s on the same cells) and the journal the element loop gives, after
    random changes: documents holding scalars, records, links on to either, to nested
    containers or streams, with a path; elements replaced, pushed, cut; a read in a
    transaction that wrote one of the documents; and it is taken exactly where it
    applies."""
    rng = random.Random(seed)
    docs = [f"of:el{seed}-{i}" for i in range(8)]
    ends = [f"of:end{seed}-{i}" for i in range(4)]

    def content() -> Any:
        roll = rng.random()
        if roll < 0.4:
            return rng.choice([rng.randint(-9, 9), "s", True, 1.5])
        if roll < 0.75:
            return make_link(rt.space, rng.choice(ends), ())
        if roll < 0.8:
            return make_link(rt.space, rng.choice(ends), ("v",))
        if roll < 0.92:
            return record()
        return rng.choice([{"v": {"deep": 1}}, [1, 2], None, {"$stream": True}])

    def record() -> Any:
        return {"v": rng.randint(-9, 9), "name": rng.choice(["a", "b"]), "gone": None}

    def end_value() -> Any:
        return record() if rng.random() < 0.3 else rng.randint(-9, 9)

    for end in ends:
        write_raw(rt, (rt.cell_at(end), end_value()))
    for doc in docs:
        write_raw(rt, (rt.cell_at(doc), content()))
    elements = [make_link(rt.space, rng.choice(docs), ()) for _ in range(rng.randint(1, 6))]
    write_raw(rt, (rt.cell_at("of:list"), elements))
    through_loop = cells._linked_values
    fast_runs = 0

    def readable(value: Any) -> bool:  # a scalar, or a record of scalars
        if type(value) in (int, str, bool, float):
            return True
        return type(value) is dict and "$stream" not in value and all(
            type(v) in (int, str, bool, float) or v is None for v in value.values())

    def one_pass_expected(wrote: str | None) -> bool:
        """Every element's document holds a scalar, a record of scalars or a whole link
        on to one, and the transaction wrote none of them."""
        for element in elements:
            eid = parse_link(element, rt.space).id
            held = rt.store.load(rt.space, eid)
            assert held is not None
            value = held.value
            if eid == wrote:
                return False
            if is_link(value):
                link = parse_link(value, rt.space)
                end = rt.store.load(rt.space, link.id)
                if link.path or link.id == wrote or end is None or not readable(end.value):
                    return False
            elif not readable(value):
                return False
        return True

    def shown(value: Any) -> Any:  # a record read through a link: its cell too
        if isinstance(value, list):
            return [shown(v) for v in value]
        if isinstance(value, cells.DocDict):
            return ("DocDict", dict(value), value.cell.space, value.cell.entity_id,
                    value.cell.path)
        return value

    expected_runs = 0

    def read(fast: bool) -> tuple[Any, list[Any]]:
        nonlocal expected_runs
        tx = Transaction(rt.store)
        wrote = None
        if rng.random() < 0.1:  # a transaction that wrote one of the documents
            wrote = rng.choice(docs + ends)
            tx.write(rt.space, wrote, (), rng.randint(0, 9))
        if fast:
            expected_runs += one_pass_expected(wrote)
            value = rt.cell_at("of:list").with_tx(tx).get()
        else:
            with monkeypatch.context() as patched:
                patched.setattr(cells, "_linked_values", lambda *_a: None)
                value = rt.cell_at("of:list").with_tx(tx).get()
        return shown(value), list(tx.reads)

    def counting(*args: Any) -> Any:
        nonlocal fast_runs
        found = through_loop(*args)
        fast_runs += found is not None
        return found

    monkeypatch.setattr(cells, "_linked_values", counting)
    for _ in range(60):
        roll = rng.random()
        if roll < 0.5:
            target = rng.choice(docs + ends)
            write_raw(rt, (rt.cell_at(target), content() if target in docs else end_value()))
        elif roll < 0.75:
            elements = list(elements)
            elements[rng.randrange(len(elements))] = make_link(rt.space, rng.choice(docs), ())
            write_raw(rt, (rt.cell_at("of:list"), elements))
        elif roll < 0.9:
            elements = [*elements, make_link(rt.space, rng.choice(docs), ())]
            write_raw(rt, (rt.cell_at("of:list"), elements))
        elif len(elements) > 1:
            elements = elements[:-1]
            write_raw(rt, (rt.cell_at("of:list"), elements))
        state = rng.getstate()
        fast = read(True)
        rng.setstate(state)  # (the same transaction, write included, for both)
        assert fast == read(False)
    assert fast_runs == expected_runs  # taken exactly where it applies


def test_a_documents_link_is_parsed_again_only_when_its_value_is_another() -> None:
    """``stored_link`` answers from what it remembers only for the same stored dict."""
    space = "did:test:hop"
    where = (space, "of:holder", ())
    first = make_link(space, "of:a", ())
    link = stored_link(first, where)
    assert link is not None and link.id == "of:a"
    assert stored_link(first, where) is link
    second = make_link(space, "of:b", ())
    moved = stored_link(second, where)
    assert moved is not None and moved.id == "of:b"
    assert links_module._stored_links[where][0] is second  # the place's entry was replaced
    assert stored_link({"v": 1}, where) is None
    assert stored_link(first, ("did:test:other", "of:holder", ())) == Link(space, "of:a", ())
