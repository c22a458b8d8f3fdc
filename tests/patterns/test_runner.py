"""The runner (SPEC §2, §4, §5): running, updating, stopping pattern instances.

Ported from the reference runtime's behaviour tests (commontoolsinc/labs
``packages/runner/test/recipes.test.ts`` and ``runner.test.ts``; scenario
numbers refer to §8 of the research notes) with the same expected values.
Nothing here measures time: run counts stand in for "did it re-run".
"""

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from cellkernel import (
    NAME,
    SELF,
    Cell,
    Default,
    IterationLimitError,
    NodeError,
    Runtime,
    Stream,
    handler,
    lift,
    pattern,
)
from cellkernel.errors import CauseError, InstanceStoppedError

# ``rt`` (tests/conftest.py): a fresh runtime on the memory store, then on SQLite.


def _cell(rt: Runtime, cause: str, value: Any) -> Cell[Any]:
    cell = rt.get_cell(cause)
    cell.set(value)
    return cell


# ---------------------------------------------------------------------------
# simple lifts, defaults


def test_simple_lift(rt: Runtime) -> None:
    """RT 1: {result: lift(x*2)(value)} with value 5 -> 10."""

    @pattern
    def Simple(value: int):  # type: ignore[no-untyped-def]
        return {"result": lift(lambda x: x * 2)(value)}

    assert rt.run(Simple, {"value": 5}).get() == {"result": 10}


def test_argument_defaults_from_default_marker(rt: Runtime) -> None:
    """RT 3: a default 5, b default 10 -> {} gives 15, {a: 20} gives 30."""

    @pattern
    def Sum(a: Default[int, 5], b: Default[int, 10]):  # type: ignore[no-untyped-def, type-arg, valid-type]
        return {"sum": lift(lambda x, y: x + y)(a, b)}

    assert rt.run(Sum, {}).get() == {"sum": 15}
    assert rt.run(Sum, {"a": 20}).get() == {"sum": 30}


def test_argument_defaults_from_an_explicit_schema(rt: Runtime) -> None:
    """RT 3 with the reference's literal JSON schema."""
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "number", "default": 5},
            "b": {"type": "number", "default": 10},
        },
    }

    @pattern(argument_schema=schema)
    def Sum(a, b):  # type: ignore[no-untyped-def]
        return {"sum": lift(lambda v: v["x"] + v["y"])({"x": a, "y": b})}

    assert Sum.to_json()["argumentSchema"] == schema
    assert rt.run(Sum, {}).get() == {"sum": 15}
    assert rt.run(Sum, {"a": 20}).get() == {"sum": 30}


def test_parameter_defaults_merge_under_the_argument(rt: Runtime) -> None:
    """RN 4: input default 42, multiplier default 2: {input: 10} -> 20, {} -> 84."""

    @pattern
    def Multiply(input: int = 42, multiplier: int = 2):  # type: ignore[no-untyped-def]
        return {"result": lift(lambda i, m: i * m)(input, multiplier)}

    assert rt.run(Multiply, {"input": 10}).get() == {"result": 20}
    assert rt.run(Multiply, {}).get() == {"result": 84}
    assert rt.run(Multiply).get() == {"result": 84}


class Options(BaseModel):
    enabled: bool = True
    value: int = 100
    name: str = "default"


def test_nested_defaults_merge_under_the_argument(rt: Runtime) -> None:
    """RN 5: options {enabled, value 100, name}, input 1; given {options: {value: 10}, input: 5}."""

    @lift
    def apply_options(input: int, options: dict[str, Any]) -> int:
        return input * options["value"] if options["enabled"] else 0

    @pattern
    def WithOptions(options: Options, input: int = 1):  # type: ignore[no-untyped-def]
        return {"result": apply_options(input, options), "options": options}

    r = rt.run(WithOptions, {"options": {"value": 10}, "input": 5})
    value = r.get()
    assert value["options"] == {"enabled": True, "value": 10, "name": "default"}
    assert value["result"] == 50


def test_nested_defaults_with_the_reference_schema(rt: Runtime) -> None:
    schema = {
        "type": "object",
        "properties": {
            "options": {
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean", "default": True},
                    "value": {"type": "number", "default": 100},
                    "name": {"type": "string", "default": "default"},
                },
            },
            "input": {"type": "number", "default": 1},
        },
    }

    @pattern(argument_schema=schema)
    def Merge(options, input):  # type: ignore[no-untyped-def]
        result = lift(lambda i, o: i * o["value"] if o["enabled"] else 0)(input, options)
        return {"result": result, "options": options}

    r = rt.run(Merge, {"options": {"value": 10}, "input": 5})
    assert r.options.get() == {"enabled": True, "value": 10, "name": "default"}
    assert r.result.get() == 50


def test_defaults_apply_on_first_run_and_rerun_without_argument_keeps_it(rt: Runtime) -> None:
    @pattern
    def Pair(a: int = 1, b: int = 2):  # type: ignore[no-untyped-def]
        return {"a": a, "b": b}

    assert rt.run(Pair, {"a": 7}, cause="pair").get() == {"a": 7, "b": 2}
    # no argument on a re-run: the stored argument stays
    assert rt.run(Pair, None, cause="pair").get() == {"a": 7, "b": 2}
    # a new argument on a re-run: its values apply, defaults fill the rest
    assert rt.run(Pair, {"b": 5}, cause="pair").get() == {"a": 1, "b": 5}


def test_inputs_failing_the_schema_skip_the_run(rt: Runtime) -> None:
    """RN 22: the node's input is missing, so the implementation never runs."""
    ran: list[Any] = []

    @lift
    def needs_int(x: int) -> int:
        ran.append(x)
        return x * 2

    @pattern
    def Gate(value: int):  # type: ignore[no-untyped-def]
        return {"result": needs_int(value)}

    r = rt.run(Gate, {"other": 1})
    assert ran == []
    assert r.get() == {"result": None}
    # SPEC §4 (where it asks for more than labs): the skip is visible, not silent
    [error] = rt.errors
    assert isinstance(error.error, ValueError) and "x" in str(error.error)
    # a valid input arrives (another instance): the node runs
    r2 = rt.run(Gate, {"value": 3})
    assert r2.get() == {"result": 6}
    assert ran == [3]


# ---------------------------------------------------------------------------
# Cell[T] parameters, handlers


def test_cell_parameters_of_a_lift_are_writable_cells(rt: Runtime) -> None:
    seen: list[Any] = []

    @lift
    def write_through(source: int, target: Cell[int]):  # type: ignore[no-untyped-def]
        seen.append(target)
        target.set(source * 3)

    @pattern
    def Through(source: int, target: int = 0):  # type: ignore[no-untyped-def]
        write_through(source, target)
        return {"target": target}

    source = _cell(rt, "through source", 2)
    r = rt.run(Through, {"source": source})
    assert isinstance(seen[0], Cell) and seen[0].capability == "cell"
    assert r.target.get() == 6
    source.set(4)
    assert r.target.get() == 12


def test_handler_with_unannotated_state_gets_cells(rt: Runtime) -> None:
    """RT 23: inc({amount}, {counter}) does counter.value += amount: 0 -> 1 -> 3."""

    @handler
    def inc(event, counter):  # type: ignore[no-untyped-def]
        counter.value.set(counter.value.get() + event["amount"])

    @pattern
    def Inc(counter: dict[str, Any]):  # type: ignore[no-untyped-def]
        return {"counter": counter, "stream": inc(counter=counter)}

    r = rt.run(Inc, {"counter": {"value": 0}})
    r.stream.send({"amount": 1})
    assert r.get()["counter"] == {"value": 1}
    r.stream.send({"amount": 2})
    assert r.get()["counter"] == {"value": 3}


def test_handler_with_cell_annotated_state(rt: Runtime) -> None:
    """RT 24: counter.set(counter.get() + amount): 0 -> 1 -> 3."""

    @handler
    def inc(event: dict[str, Any], counter: Cell[int]):  # type: ignore[no-untyped-def]
        counter.set(counter.get() + event["amount"])

    @pattern
    def Inc(counter: int):  # type: ignore[no-untyped-def]
        return {"counter": counter, "stream": inc(counter=counter)}

    r = rt.run(Inc, {"counter": 0})
    r.stream.send({"amount": 1})
    assert r.get()["counter"] == 1
    r.stream.send({"amount": 2})
    assert r.get()["counter"] == 3


def test_handler_state_annotated_with_a_plain_type_arrives_as_value(rt: Runtime) -> None:
    seen: list[Any] = []

    @handler
    def record(event, label: str, out: Cell[list[Any]]):  # type: ignore[no-untyped-def]
        seen.append(label)
        out.push(f"{label}:{event}")

    @pattern
    def Rec(label: str, out: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006
        return {"out": out, "go": record(label=label, out=out)}

    r = rt.run(Rec, {"label": "x"})
    r.go.send(1)
    assert seen == ["x"]
    assert r.out.get() == ["x:1"]


def test_handler_reads_are_not_subscriptions(rt: Runtime) -> None:
    calls: list[int] = []

    @handler
    def copy(event, source: Cell[int], target: Cell[int]):  # type: ignore[no-untyped-def]
        calls.append(source.get())
        target.set(source.get())

    @pattern
    def Copy(source: int, target: int = 0):  # type: ignore[no-untyped-def]
        return {"target": target, "go": copy(source=source, target=target)}

    source = _cell(rt, "copy source", 1)
    r = rt.run(Copy, {"source": source})
    r.go.send({})
    assert calls == [1] and r.target.get() == 1
    source.set(2)
    source.set(3)
    assert calls == [1] and r.target.get() == 1


def test_cell_references_in_the_argument(rt: Runtime) -> None:
    """RT 9: settings cell {value: 5}, multiplier 3 -> 15; settings {value: 10} -> 30."""

    @lift
    def scaled(settings: dict[str, Any], multiplier: float) -> float:
        return settings["value"] * multiplier  # type: ignore[no-any-return]

    @pattern
    def Scaled(settings: dict[str, Any], multiplier: float):  # type: ignore[no-untyped-def]
        return {"result": scaled(settings, multiplier)}

    settings = _cell(rt, "settings", {"value": 5})
    r = rt.run(Scaled, {"settings": settings, "multiplier": 3})
    assert r.get() == {"result": 15}
    settings.set({"value": 10})
    assert r.get() == {"result": 30}


def test_named_cell_inside_a_lift_is_stable(rt: Runtime) -> None:
    """RT 13: lift(v -> {value: Cell.for_("wrapper").set(v)}): the same document on every run."""

    @lift
    def wrap(v):  # type: ignore[no-untyped-def]
        return {"value": Cell.for_("wrapper").set(v)}

    @pattern
    def Wrapper(value: int):  # type: ignore[no-untyped-def]
        return wrap(value)

    source = _cell(rt, "wrapper input", 5)
    r = rt.run(Wrapper, {"value": source})
    assert r.value.get() == 5
    target = r.value.resolve_as_cell()
    assert target.path == ()  # stored in its own document
    source.set(10)
    again = r.value.resolve_as_cell()
    assert again.entity_id == target.entity_id
    assert target.entity_id is not None
    assert rt.cell_at(target.entity_id).get() == 10


# ---------------------------------------------------------------------------
# failures


def test_failing_lift_keeps_its_last_value_and_records_one_error(rt: Runtime) -> None:
    """RT 11: divisor 10 / dividend 1 -> 10; dividend 0 -> error, stays 10; 2 -> 5."""
    seen: list[NodeError] = []
    rt.on_error(seen.append)

    @lift
    def divide(divisor: float, dividend: float) -> float:
        if dividend == 0:
            raise ZeroDivisionError("division by zero")
        return divisor / dividend

    @pattern
    def Divide(divisor: float, dividend: float):  # type: ignore[no-untyped-def]
        return {"result": divide(divisor, dividend)}

    dividend = _cell(rt, "dividend", 1)
    r = rt.run(Divide, {"divisor": 10, "dividend": dividend})
    assert rt.errors == []
    assert r.get() == {"result": 10}

    dividend.set(0)
    assert len(rt.errors) == 1 and seen == rt.errors
    assert r.get() == {"result": 10}
    error = rt.errors[0]
    assert isinstance(error.error, ZeroDivisionError)
    assert error.space == rt.space
    assert error.pattern == Divide.hash
    assert error.node.startswith("node:")
    assert "division by zero" in error.traceback

    dividend.set(2)
    assert r.get() == {"result": 5}
    assert len(rt.errors) == 1


def test_failing_handler_lands_nothing_and_later_events_run(rt: Runtime) -> None:
    """RT 26: result 1; {5, 1} -> 5; {10, 0} raises -> 1 error, still 5; {10, 5} -> 2."""

    @handler
    def divide(event, result: Cell[float]):  # type: ignore[no-untyped-def]
        if event["dividend"] == 0:
            raise ZeroDivisionError("division by zero")
        result.set(event["divisor"] / event["dividend"])

    @pattern
    def Divide(result: float):  # type: ignore[no-untyped-def]
        return {"updater": divide(result=result), "result": result}

    r = rt.run(Divide, {"result": 1})
    r.updater.send({"divisor": 5, "dividend": 1})
    assert len(rt.errors) == 0
    assert r.result.get() == 5
    r.updater.send({"divisor": 10, "dividend": 0})
    assert len(rt.errors) == 1
    assert r.result.get() == 5
    assert rt.errors[0].space == rt.space and rt.errors[0].pattern == Divide.hash
    r.updater.send({"divisor": 10, "dividend": 5})
    assert r.result.get() == 2


def test_failing_handler_aborts_its_earlier_writes(rt: Runtime) -> None:
    @handler
    def half_done(event, a: Cell[int], b: Cell[int]):  # type: ignore[no-untyped-def]
        a.set(a.get() + 1)
        if event == "boom":
            raise RuntimeError("boom")
        b.set(b.get() + 1)

    @pattern
    def Two(a: int = 0, b: int = 0):  # type: ignore[no-untyped-def]
        return {"a": a, "b": b, "go": half_done(a=a, b=b)}

    r = rt.run(Two, {})
    with rt.batch():
        r.go.send("x")
        r.go.send("boom")
        r.go.send("y")
    assert r.a.get() == 2 and r.b.get() == 2
    assert len(rt.errors) == 1 and isinstance(rt.errors[0].error, RuntimeError)


# ---------------------------------------------------------------------------
# scheduler semantics through patterns


def test_self_writes_are_ignored(rt: Runtime) -> None:
    """SC 40: counter = counter + by: 1 after idle, still 1 after another idle; by=2 -> 3."""
    runs: list[int] = []

    @lift
    def add_by(counter: Cell[int], by: int):  # type: ignore[no-untyped-def]
        runs.append(by)
        counter.set(counter.get() + by)

    @pattern
    def SelfWrite(counter: int = 0, by: int = 1):  # type: ignore[no-untyped-def]
        add_by(counter, by)
        return {"counter": counter}

    by = _cell(rt, "by", 1)
    r = rt.run(SelfWrite, {"by": by})
    assert r.counter.get() == 1
    rt.idle()
    assert r.counter.get() == 1
    assert runs == [1]
    by.set(2)
    assert r.counter.get() == 3
    assert runs == [1, 2]
    assert rt.errors == []


def test_three_node_cycle_is_stopped_by_the_iteration_cap(rt: Runtime) -> None:
    """SC 41: c = a + b; e = c + d; c = e + b loops until the cap stops it."""
    runs: list[str] = []

    @lift
    def adder(x: int, y: int, out: Cell[int], label: str):  # type: ignore[no-untyped-def]
        runs.append(label)
        out.set(x + y)

    @pattern
    def Cycle(a: int, b: int, c: int, d: int, e: int):  # type: ignore[no-untyped-def]
        adder(a, b, c, "c=a+b")
        adder(c, d, e, "e=c+d")
        adder(e, b, c, "c=e+b")
        return {"c": c, "e": e}

    cells = {k: _cell(rt, f"cycle {k}", v) for k, v in dict(a=1, b=2, c=0, d=1, e=0).items()}
    r = rt.run(Cycle, cells)
    limit_errors = [e for e in rt.errors if isinstance(e.error, IterationLimitError)]
    assert len(limit_errors) >= 1
    assert all(e.name == "adder" for e in limit_errors)
    assert len(runs) <= 3 * 101  # the loop stopped
    # the runtime still works after the cap
    before = len(runs)
    r2 = rt.run(pattern(lambda v: {"v": lift(lambda x: x + 1)(v)}), {"v": 1})
    assert r2.get() == {"v": 2}
    assert len(runs) == before
    assert isinstance(r.c.get(), int)


def test_sample_does_not_subscribe(rt: Runtime) -> None:
    """RT 14: first + second.sample(): 10+5 = 15 (1 run); second=20 -> 15; first=100 -> 120 (2)."""
    runs: list[int] = []

    @lift
    def with_sample(first: int, second: Cell[int]) -> int:
        runs.append(first)
        return first + second.sample()

    @pattern
    def Sample(first: int, second: int):  # type: ignore[no-untyped-def]
        return {"result": with_sample(first, second)}

    first = _cell(rt, "sample first", 10)
    second = _cell(rt, "sample second", 5)
    r = rt.run(Sample, {"first": first, "second": second})
    assert r.get() == {"result": 15} and len(runs) == 1
    second.set(20)
    assert r.get() == {"result": 15} and len(runs) == 1
    first.set(100)
    assert r.get() == {"result": 120} and len(runs) == 2


def test_events_are_fifo_and_not_stored(rt: Runtime) -> None:
    """SC 34: events 1, 2, 3 are seen in order; the stream holds no event."""
    seen: list[Any] = []

    @handler
    def record(event, log: Cell[list[Any]]):  # type: ignore[no-untyped-def]
        seen.append(event)
        log.push(event)

    @pattern
    def Fifo(log: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006
        return {"log": log, "events": record(log=log)}

    r = rt.run(Fifo, {})
    with rt.batch():
        for event in (1, 2, 3):
            r.events.send(event)
        assert seen == []  # queued until the batch settles
    assert seen == [1, 2, 3]
    assert r.log.get() == [1, 2, 3]
    assert r.events.get_raw() is not None
    assert r.key("events").resolve_as_cell().get_raw() == {"$stream": True}


def test_event_sent_from_a_handler_runs_after_it(rt: Runtime) -> None:
    """RT 31: handler A sends double(value) to stream B; B logs: [10], then [10, 14]."""
    log: list[Any] = []

    @handler
    def on_b(event):  # type: ignore[no-untyped-def]
        log.append(event)

    @handler
    def on_a(event, b: Stream[Any]):  # type: ignore[no-untyped-def]
        b.send(event["value"] * 2)

    @pattern
    def Relay():  # type: ignore[no-untyped-def]
        b = on_b()
        return {"a": on_a(b=b), "b": b}

    r = rt.run(Relay, {})
    r.a.send({"value": 5})
    assert log == [10]
    r.a.send({"value": 7})
    assert log == [10, 14]


# ---------------------------------------------------------------------------
# argument cells are write redirects, result fields are redirects


@lift
def double_into(input: int, output: Cell[int]):  # type: ignore[no-untyped-def]
    output.set(input * 2)


@pattern
def Passthrough(input: int, output: int):  # type: ignore[no-untyped-def]
    double_into(input, output)
    return {"output": output}


def test_argument_cell_is_a_write_redirect(rt: Runtime) -> None:
    """RN: argument cell {input: 10, output: 0} -> the instance writes 20 into the caller's cell."""
    caller = _cell(rt, "binding input cell", {"input": 10, "output": 0})
    r = rt.run(Passthrough, caller, cause="binding")
    assert caller.get() == {"input": 10, "output": 20}
    assert r.get() == {"output": 20}
    rt.stop(r)
    caller.set({"input": 10, "output": 40})
    assert r.get() == {"output": 40}  # the result aliases the caller's cell


def test_stop_and_rerun(rt: Runtime) -> None:
    """RN 20: 10 -> 20; input 20 -> 40; stop; input 40 -> stays 40; re-run -> 80."""
    caller = _cell(rt, "stop input cell", {"input": 10, "output": 0})
    r = rt.run(Passthrough, caller, cause="stopping")
    assert caller.get() == {"input": 10, "output": 20}
    caller.set({"input": 20, "output": 20})
    assert caller.get() == {"input": 20, "output": 40}
    rt.stop(r)
    caller.set({"input": 40, "output": 40})
    assert caller.get() == {"input": 40, "output": 40}
    rt.run(Passthrough, None, cause="stopping")
    assert caller.get() == {"input": 40, "output": 80}


def test_stopped_instance_releases_its_handlers(rt: Runtime) -> None:
    r = rt.run(_counter(), {"count": 1}, cause="stopped handlers")
    rt.stop(r)
    with pytest.raises(InstanceStoppedError):
        r.increment.send({})
    assert r.count.get() == 1


def _counter() -> Any:
    @handler
    def bump(event, count: Cell[int]):  # type: ignore[no-untyped-def]
        count.set(count.get() + 1)

    @pattern
    def StopCounter(count: int = 0):  # type: ignore[no-untyped-def]
        doubled = lift(lambda c: c * 2)(count)
        return {"count": count, "doubled": doubled, "increment": bump(count=count)}

    return StopCounter


def test_result_fields_are_redirects(rt: Runtime) -> None:
    runs: list[int] = []

    @lift
    def twice(c: int) -> int:
        runs.append(c)
        return c * 2

    @pattern
    def Redirects(count: int = 0):  # type: ignore[no-untyped-def]
        return {"count": count, "doubled": twice(count)}

    r = rt.run(Redirects, {"count": 1})
    raw = r.get_raw()
    assert all(v["/"]["link@1"].get("overwrite") == "redirect" for v in raw.values())
    r.count.set(5)  # writes the instance's argument, not the result document
    assert r.get_raw() == raw
    assert r.get() == {"count": 5, "doubled": 10}
    assert runs == [1, 5]


def test_rerun_with_the_same_cause_updates_in_place(rt: Runtime) -> None:
    runs = {"double": 0, "ident": 0}

    @lift
    def dbl(x: int) -> int:
        runs["double"] += 1
        return x * 2

    @lift
    def same(y: int) -> int:
        runs["ident"] += 1
        return y

    @pattern
    def InPlace(x: int = 1, y: int = 0):  # type: ignore[no-untyped-def]
        return {"d": dbl(x), "y": same(y)}

    r = rt.run(InPlace, {"x": 2, "y": 7}, cause="in place")
    assert r.get() == {"d": 4, "y": 7}
    instance = rt.runner.instance_of(r)
    assert instance is not None
    actions = {k: n.actions[0] for k, n in instance.nodes.items()}

    r2 = rt.run(InPlace, {"x": 3, "y": 7}, cause="in place")
    assert r2.entity_id == r.entity_id
    assert r.get() == {"d": 6, "y": 7}
    assert runs == {"double": 2, "ident": 1}  # the unchanged node did not re-run
    assert rt.runner.instance_of(r2) is instance
    assert {k: n.actions[0] for k, n in instance.nodes.items()} == actions  # nothing restarted

    rt.run(InPlace, {"x": 3, "y": 7}, cause="in place")
    rt.run(InPlace, None, cause="in place")
    assert runs == {"double": 2, "ident": 1}
    assert r.get() == {"d": 6, "y": 7}


def test_rerun_keeps_state_and_handlers_live(rt: Runtime) -> None:
    counter = _counter()
    r = rt.run(counter, {"count": 1}, cause="keep state")
    r.increment.send({})
    r.increment.send({})
    assert r.count.get() == 3
    rt.run(counter, None, cause="keep state")
    assert r.count.get() == 3
    r.increment.send({})
    assert r.get()["count"] == 4 and r.doubled.get() == 8


def test_name_is_preserved_across_reruns(rt: Runtime) -> None:
    """RN 21: {[NAME]: "counter", counter}; rename to "my counter"; re-run {value: 2}."""

    @lift
    def value_of(arg: dict[str, Any]):  # type: ignore[no-untyped-def]
        return arg["value"]

    @pattern
    def Named(value: int):  # type: ignore[no-untyped-def]
        return {NAME: "counter", "counter": value_of({"value": value})}

    r = rt.run(Named, {"value": 1}, cause="named")
    assert r.get() == {NAME: "counter", "counter": 1}
    r.key(NAME).set("my counter")
    r = rt.run(Named, {"value": 2}, cause="named")
    assert r.get() == {NAME: "my counter", "counter": 2}


def test_self_result_in_a_handler(rt: Runtime) -> None:
    @handler
    def snapshot(event, me: Cell[dict[str, Any]], copies: Cell[list[Any]]):  # type: ignore[no-untyped-def]
        copies.push(me.key("n").get())

    @pattern
    def Selfish(n: int = 3, copies: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006
        return {"n": n, "copies": copies, "snap": snapshot(me=SELF.result, copies=copies)}

    r = rt.run(Selfish, {})
    r.snap.send({})
    assert r.copies.get() == [3]


# ---------------------------------------------------------------------------
# dynamic instantiation


def test_handler_calling_a_pattern_creates_a_child_instance(rt: Runtime) -> None:
    """RT 28: add {text: "hello"} -> list == [{text: "hello"}]; list is a Cell, add a Stream."""

    @pattern
    def Item(text: str):  # type: ignore[no-untyped-def]
        return {"text": text}

    @handler
    def add(event, list: Cell[list[Any]]):  # type: ignore[no-untyped-def]
        list.push(Item(text=event["text"]))

    @pattern
    def Outer(list: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006
        return {"list": list, "add": add(list=list)}

    r = rt.run(Outer, {})
    value = r.get()
    assert isinstance(r.list, Cell) and value["list"] == []
    assert isinstance(value["add"], Stream)
    value["add"].send({"text": "hello"})
    assert r.list.get() == [{"text": "hello"}]

    instance = rt.runner.instance_of(r)
    assert instance is not None
    children = [c for node in instance.nodes.values() for c in node.children.values()]
    assert len(children) == 1
    assert children[0].parent is instance
    rt.stop(r)
    assert children[0].stopped


def test_pattern_started_by_a_handler_is_long_lived(rt: Runtime) -> None:
    """RT 27: the first logger re-runs when the counter changes: [1,1,0], [3,1,0], [3,2,0]."""
    values: list[list[int]] = []

    @lift
    def log_it(counter: dict[str, Any], amount: int, nested: dict[str, Any]):  # type: ignore[no-untyped-def]
        values.append([counter["value"], amount, nested["c"]])

    @pattern
    def Logger(counter: dict[str, Any], amount: int, nested: dict[str, Any]):  # type: ignore[no-untyped-def]
        log_it(counter, amount, nested)
        return {}

    @handler
    def inc(event, counter: Cell[dict[str, Any]], nested: Cell[dict[str, Any]]):  # type: ignore[no-untyped-def]
        counter.value.set(counter.value.get() + event["amount"])
        Logger(counter=counter, amount=event["amount"], nested=nested.a.b)

    @pattern
    def Graph(counter: dict[str, Any], nested: dict[str, Any]):  # type: ignore[no-untyped-def]
        return {"stream": inc(counter=counter, nested=nested)}

    counter = _cell(rt, "graph counter", {"value": 0})
    nested = _cell(rt, "graph nested", {"a": {"b": {"c": 0}}})
    r = rt.run(Graph, {"counter": counter, "nested": nested})
    r.stream.send({"amount": 1})
    assert values == [[1, 1, 0]]
    r.stream.send({"amount": 2})
    assert [1, 1, 0] in values
    assert [3, 1, 0] in values
    assert [3, 2, 0] in values


def test_lift_returning_a_pattern_call_runs_a_child(rt: Runtime) -> None:
    """RT 15 (adapted): a lift returns Multiply(x, y); the result follows x."""
    runs = {"multiply": 0, "generator": 0}

    @lift
    def multiply(x: int, y: int) -> int:
        runs["multiply"] += 1
        return x * y

    @pattern
    def Multiply(x: int, y: int):  # type: ignore[no-untyped-def]
        return {"product": multiply(x, y)}

    @lift
    def generator(x: int, y: int):  # type: ignore[no-untyped-def]
        runs["generator"] += 1
        return Multiply(x=x, y=y)

    @pattern
    def Generated(x: int, y: int):  # type: ignore[no-untyped-def]
        return {"result": generator(x, y)}

    x = _cell(rt, "generated x", 2)
    y = _cell(rt, "generated y", 3)
    r = rt.run(Generated, {"x": x, "y": y})
    assert r.result.product.get() == 6
    assert runs == {"multiply": 1, "generator": 1}
    raw = rt.cell_at(r.get_raw()["result"]["/"]["link@1"]["id"]).get_raw()
    assert raw["/"]["link@1"]["path"] == []  # the output is a link to the child's result

    x.set(3)
    assert r.get() == {"result": {"product": 9}}
    assert runs == {"multiply": 2, "generator": 2}


def test_lift_returning_an_unchanged_pattern_call_keeps_its_child(rt: Runtime) -> None:
    runs = {"multiply": 0, "generator": 0}
    children: list[Any] = []

    @lift
    def multiply(x: int, y: int) -> int:
        runs["multiply"] += 1
        return x * y

    @pattern
    def Product(x: int, y: int):  # type: ignore[no-untyped-def]
        return {"product": multiply(x, y)}

    @lift
    def generator(x: int, y: int, unrelated: int):  # type: ignore[no-untyped-def]
        runs["generator"] += 1
        child = Product(x=x, y=y)
        children.append(child.entity_id)
        return child

    @pattern
    def Memo(x: int, y: int, unrelated: int):  # type: ignore[no-untyped-def]
        return {"result": generator(x, y, unrelated)}

    unrelated = _cell(rt, "memo unrelated", 0)
    r = rt.run(Memo, {"x": 2, "y": 5, "unrelated": unrelated})
    assert r.result.product.get() == 10
    instance = rt.runner.instance_of(r)
    child = rt.runner.instances[(rt.space, children[0])]

    unrelated.set(1)  # the generator re-runs with the same call: memoised
    assert runs == {"multiply": 1, "generator": 2}
    assert children[0] == children[1]
    assert rt.runner.instances[(rt.space, children[1])] is child and not child.stopped
    assert r.result.product.get() == 10
    assert instance is rt.runner.instance_of(r)


def test_lift_creating_children_sums_their_results(rt: Runtime) -> None:
    """RT 16: groups [[1,2,3],[4,5]] -> itemCount 3 and 2, totalItems 5."""

    @pattern
    def ItemCount(values: list[Any]):  # type: ignore[no-untyped-def]
        return {"itemCount": lift(lambda v: len(v))(values)}

    @lift
    def make_groups(groups: list[Any]):  # type: ignore[no-untyped-def]
        return [ItemCount(values=g["values"]) for g in groups]

    @lift
    def total(results: list[Any]) -> int:
        return sum(r["itemCount"] or 0 for r in results)

    @pattern
    def Groups(groups: list[Any]):  # type: ignore[no-untyped-def]
        children = make_groups(groups)
        return {"groups": children, "totalItems": total(children)}

    r = rt.run(Groups, {"groups": [{"values": [1, 2, 3]}, {"values": [4, 5]}]})
    assert r.get() == {"groups": [{"itemCount": 3}, {"itemCount": 2}], "totalItems": 5}


def test_dynamic_children_run_before_their_outputs_are_read(rt: Runtime) -> None:
    seen: list[Any] = []

    @pattern
    def Counted(values: list[Any]):  # type: ignore[no-untyped-def]
        return {"itemCount": lift(lambda v: len(v))(values)}

    @lift
    def spawn(groups: list[Any]):  # type: ignore[no-untyped-def]
        return [Counted(values=g["values"]) for g in groups]

    @lift
    def observe(results: list[Any]):  # type: ignore[no-untyped-def]
        seen.append([r["itemCount"] for r in results])

    @pattern
    def Spawned(groups: list[Any]):  # type: ignore[no-untyped-def]
        children = spawn(groups)
        observe(children)
        return {"groups": children}

    groups = [{"values": [1, 2, 3]}, {"values": [4, 5]}]
    rt.run(Spawned, {"groups": groups}, cause="spawned")
    assert seen == [[3, 2]]
    # a new group makes a new child: the reader runs once more, after the new child
    rt.run(Spawned, {"groups": [*groups, {"values": [6]}]}, cause="spawned")
    assert seen == [[3, 2], [3, 2, 1]]
    assert rt.errors == []


def test_a_reader_of_a_map_runs_after_the_children_it_reads(rt: Runtime) -> None:
    seen: list[Any] = []

    @lift
    def double(x: int) -> int:
        return x * 2

    @lift
    def total(values: list[Any]) -> int:
        seen.append(list(values))
        return sum(values)

    @pattern
    def Totalled(items: list[Any]):  # type: ignore[no-untyped-def]
        doubled = items.map(lambda x: double(x))  # type: ignore[attr-defined]
        return {"doubled": doubled, "total": total(doubled)}

    items = rt.get_cell("map reader items")
    items.set([1, 2, 3])
    r = rt.run(Totalled, {"items": items}, cause="totalled")
    assert seen == [[2, 4, 6]]  # once, with every child's output (never with None)
    items.push(4)  # one new child: the reader runs once more, after it
    assert seen == [[2, 4, 6], [2, 4, 6, 8]]
    assert r.key("total").get() == 20
    assert rt.errors == []


# ---------------------------------------------------------------------------
# async


def test_async_lift_is_awaited_by_aidle(rt: Runtime) -> None:
    """RT 12: the lift resolves x*2 later; aidle() waits -> result 2."""
    state = {"called": False, "done": False}

    @lift
    async def slow(x: int) -> int:
        state["called"] = True
        await asyncio.sleep(0)
        state["done"] = True
        return x * 2

    @pattern
    def Slow(x: int):  # type: ignore[no-untyped-def]
        return {"result": slow(x)}

    async def main() -> Any:
        r = rt.run(Slow, {"x": 1})
        assert state["done"] is False
        await rt.aidle()
        assert state == {"called": True, "done": True}
        return r.get()

    assert asyncio.run(main()) == {"result": 2}


def test_async_handler_is_awaited_by_aidle(rt: Runtime) -> None:
    """RT 32: send {value: 5}; the handler sets result = value*2 later -> 10."""

    @handler
    async def slow(event, result: Cell[int]):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        result.set(event["value"] * 2)

    @pattern
    def SlowHandler(result: int = 0):  # type: ignore[no-untyped-def]
        return {"result": result, "updater": slow(result=result)}

    async def main() -> Any:
        r = rt.run(SlowHandler, {})
        r.updater.send({"value": 5})
        await rt.aidle()
        return r.result.get()

    assert asyncio.run(main()) == 10
    assert rt.errors == []


def test_async_lift_with_asyncio_run_aidle(rt: Runtime) -> None:
    @lift
    async def halve(x: int) -> float:
        await asyncio.sleep(0)
        return x / 2

    @pattern
    def Halved(x: int):  # type: ignore[no-untyped-def]
        return {"half": halve(x)}

    x = _cell(rt, "halve x", 8)
    r = rt.run(Halved, {"x": x})
    asyncio.run(rt.aidle())
    assert r.get() == {"half": 4}
    x.set(3)
    asyncio.run(rt.aidle())
    assert r.get() == {"half": 1.5}


def test_sync_idle_drives_async_lifts(rt: Runtime) -> None:
    @lift
    async def later(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @pattern
    def Later(x: int):  # type: ignore[no-untyped-def]
        return {"y": later(x)}

    r = rt.run(Later, {"x": 4})
    rt.idle()
    assert r.get() == {"y": 5}


def test_failing_async_lift_records_an_error(rt: Runtime) -> None:
    @lift
    async def broken(x: int) -> int:
        await asyncio.sleep(0)
        raise ValueError("nope")

    @pattern
    def Broken(x: int):  # type: ignore[no-untyped-def]
        return {"y": broken(x)}

    r = rt.run(Broken, {"x": 1})
    asyncio.run(rt.aidle())
    assert r.get() == {"y": None}
    assert len(rt.errors) == 1 and isinstance(rt.errors[0].error, ValueError)


# ---------------------------------------------------------------------------
# shared bindings (one link object per target in an instance's records)


def test_concretize_shares_one_link_per_target_and_equals_the_unshared_form() -> None:
    from cellkernel.patterns.plan import concretize

    ids = {"argument": "of:arg", "c1": "of:one"}
    bindings: list[dict[str, Any]] = [
        {"args": [{"$alias": {"cell": "argument", "path": ["x"]}}, i],
         "kwargs": {"deep": {"$alias": {"cell": "c1", "path": ["a", 0]}}}}
        for i in range(3)
    ]
    shared: dict[tuple[str, ...], dict[str, Any]] = {}
    memo = [concretize(b, ids, "sp", shared) for b in bindings]
    plain = [concretize(b, ids, "sp") for b in bindings]
    assert memo == plain
    assert memo[0]["args"][0] is memo[2]["args"][0]  # one key of one cell: shared
    assert memo[0]["kwargs"]["deep"] is not memo[1]["kwargs"]["deep"]  # a longer path: not
    assert plain[0]["args"][0] is not plain[1]["args"][0]
    assert bindings[0]["args"][0] == {"$alias": {"cell": "argument", "path": ["x"]}}  # untouched


def test_lifts_sharing_one_binding_read_their_own_instance() -> None:
    """The shared, parsed binding of one instance is never another instance's."""
    rt = Runtime()

    @lift
    def bump(x: int, i: int) -> int:
        return x + i

    @pattern
    def Fan(x: int = 0) -> Any:
        return {"out": [bump(x, i) for i in range(3)]}

    x_here, x_there = _cell(rt, "x-here", 1), _cell(rt, "x-there", 10)
    here = rt.run(Fan, {"x": x_here}, cause="fan-here")
    there = rt.run(Fan, {"x": x_there}, cause="fan-there")
    assert here.out.get() == [1, 2, 3] and there.out.get() == [10, 11, 12]
    x_here.set(5)
    rt.idle()
    assert here.out.get() == [5, 6, 7] and there.out.get() == [10, 11, 12]
    x_there.set(20)
    rt.idle()
    assert here.out.get() == [5, 6, 7] and there.out.get() == [20, 21, 22]


# --------------------------------------------------------------------------- the collector pause


@pytest.mark.parametrize("pause_gc", [True, False])
def test_a_start_pauses_the_collector_only_when_asked_and_always_restores_it(
    pause_gc: bool,
) -> None:
    import gc

    seen: list[bool] = []

    @lift
    def probe(x: int) -> int:
        seen.append(gc.isenabled())
        if x < 0:
            raise RuntimeError("probe failed")
        return x

    @pattern
    def Probed(x: int = 0):  # type: ignore[no-untyped-def]
        return {"y": probe(x)}

    rt = Runtime(pause_gc=pause_gc)
    try:
        rt.run(Probed, {"x": 1}, cause="probed")
        assert seen[0] is not pause_gc  # the first run happens inside the start
        assert gc.isenabled()
        rt.run(Probed, {"x": -1}, cause="probed-failing")  # a failing node: still restored
        assert gc.isenabled()
        gc.disable()
        try:  # a collector the user switched off stays off
            rt.run(Probed, {"x": 2}, cause="probed-off")
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        rt.close()



# ---------------------------------------------------------------------------
# a cause that names a cell


def test_running_on_the_cause_of_a_stored_cell_is_refused_and_writes_nothing(
    rt: Runtime,
) -> None:
    """``get_cell("x")`` and ``run(..., cause="x")`` derive one id: the run would
    overwrite the cell with its result (whose argument then links to itself)."""

    @pattern
    def Doubled(items: list[int]) -> Any:
        return {"items": items, "out": items.map(lambda x: lift(lambda v: v * 2)(x))}  # type: ignore[attr-defined]

    items = _cell(rt, "shared-cause", [1, 2, 3])
    before = rt.store.load(rt.space, items.entity_id or "")
    with pytest.raises(CauseError, match="'shared-cause' names a stored document"):
        rt.run(Doubled, {"items": items}, cause="shared-cause")
    assert rt.store.load(rt.space, items.entity_id or "") == before  # storage as it was
    assert items.get() == [1, 2, 3]
    result = rt.run(Doubled, {"items": items}, cause="another cause")
    assert result.key("out").get() == [2, 4, 6]
    assert rt.run(Doubled, {"items": items}, cause="another cause").key("out").get() == [2, 4, 6]
