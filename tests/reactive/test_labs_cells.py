"""Ports of labs runner cell tests (commontoolsinc/labs packages/runner/test) and issue 17."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellkernel import Cell, Runtime, handler, lift, pattern
from cellkernel.runtime import Runtime as RT
from tests.helpers.reliability import dump_store


@lift
def double(x: int) -> int:
    return x * 2


@pattern
def Counter(count: int = 0):  # type: ignore[no-untyped-def]
    return {"count": count, "doubled": double(count)}


def test_send_on_a_plain_cell_sets_it(rt: Runtime) -> None:
    # labs cell-core.test.ts: "should update cell value using send"
    cell = rt.get_cell("send-plain")
    cell.set(1)
    cell.send(2)
    assert cell.get() == 2


def test_result_field_write_is_checked_against_the_argument_schema(rt: Runtime) -> None:
    # issue 17 item 1 (SPEC §3: labs does not validate writes; this runtime refuses them)
    r = rt.run(Counter, {"count": 5}, cause="labs-counter")
    before = dump_store(rt.store)
    with pytest.raises(ValueError, match=r"count.*integer"):
        r.count.set("ten")
    assert dump_store(rt.store) == before
    assert r.count.get() == 5 and r.doubled.get() == 10
    r.count.set(6)  # the other half: a valid write lands
    assert r.doubled.get() == 12


def test_handler_write_is_checked_against_the_state_schema(rt: Runtime) -> None:
    @handler
    def put(event: Any, n: Cell[int]) -> None:
        n.set(event)

    @pattern
    def P():  # type: ignore[no-untyped-def]
        s = Cell.of(0, schema={"type": "integer"})
        return {"s": s, "put": put(n=s)}

    r = rt.run(P, None, cause="labs-handler-schema")
    r.put.send("bad")
    assert r.s.get() == 0
    assert any("schema" in str(e.error) for e in rt.errors)
    r.put.send(4)
    assert r.s.get() == 4


def test_lift_input_failing_its_schema_records_a_node_error(rt: Runtime) -> None:
    # issue 17 item 2
    r = rt.run(Counter, {"count": 5}, cause="labs-lift-input")
    arg = r.key("count").resolve_as_cell()
    rt._write(lambda tx: tx.write(arg.space, arg.entity_id, arg.path, "ten"))  # bypasses checks
    errors = [e for e in rt.errors if isinstance(e.error, ValueError)]
    assert len(errors) == 1 and "'x'" in str(errors[0].error) and "ten" in str(errors[0].error)
    assert "integer" in str(errors[0].error)
    assert r.doubled.get() == 10
    r.count.set(3)
    assert r.doubled.get() == 6 and rt.errors == []


def test_fresh_cell_equals_itself_and_its_siblings() -> None:
    # issue 17 item 7 (labs cell-core: siblings of one cell share its cause)
    c = Cell.of(0)
    assert c.equals(c)
    assert c.as_schema({"type": "integer"}).equals(c)
    assert Cell.of({"a": 1}).key("a").get() == 1


def test_siblings_of_a_fresh_cell_in_a_handler_can_be_written(rt: Runtime) -> None:
    # issue 17 item 7: Cell.for_("x").as_schema(...).set(v) inside a handler
    @handler
    def make(event: Any, out: Cell[Any]) -> None:
        x = Cell.of(0)
        x.as_schema({"type": "integer"}).set(5)
        y = Cell.for_("named").as_schema({"type": "integer"})
        y.set(7)
        out.set({"x": x, "y": y, "same": x.equals(x)})

    @pattern
    def P(out: dict = {}):  # type: ignore[no-untyped-def]  # noqa: B006
        return {"make": make(out=out), "out": out}

    r = rt.run(P, {}, cause="labs-siblings")
    r.make.send({})
    assert r.out.get() == {"x": 5, "y": 7, "same": True} and rt.errors == []


_SCHEMAS = st.sampled_from([
    {"type": "integer"},
    {"type": "string"},
    {"type": "integer", "minimum": 0},
    {"type": "array", "items": {"type": "integer"}},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("ab"), inner,
                                                                 max_size=2),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_SCHEMAS, first=_VALUES, value=_VALUES)
def test_a_write_lands_schema_shaped_or_changes_nothing(schema: Any, first: Any,
                                                         value: Any) -> None:
    rt = RT()
    try:
        cell = rt.get_cell("prop", schema=schema)
        with contextlib.suppress(ValueError):
            cell.set(first)
        before = dump_store(rt.store)
        try:
            cell.set(value)
        except ValueError as exc:
            assert "schema" in str(exc)
            assert dump_store(rt.store) == before
            return
        read = cell.get()
        plain = json.loads(json.dumps(read))
        from cellkernel.data.schema import is_valid
        assert is_valid(schema, plain)
    finally:
        rt.close()
