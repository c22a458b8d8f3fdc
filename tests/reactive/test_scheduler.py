"""cellkernel.reactive.scheduler through its action API (SPEC §5).

Ports the reference runtime's scheduler tests (labs packages/runner
test/scheduler.test.ts) with their expected values; runs are counted, never timed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from helpers.core import addr, count_compared, lift, make_stream, on_event, raw

from cellkernel.data.values import get_path, json_equal, paths_overlap
from cellkernel.errors import ConflictError, IterationLimitError, NodeError
from cellkernel.reactive import scheduler as scheduler_module
from cellkernel.reactive.path_groups import path_groups
from cellkernel.reactive.scheduler import (
    _FEW_READS,
    _LARGE,
    BULK_READERS,
    MAX_ITERATIONS,
    Action,
    _root_differs,
)
from cellkernel.runtime import Runtime
from cellkernel.store.transactions import Transaction


def names(log: list[Any]) -> list[str]:
    return [entry[0] for entry in log]


# --------------------------------------------------------------------------- reactivity


def test_basic_reactivity(rt: Runtime) -> None:
    a, b, c = rt.get_cell("a"), rt.get_cell("b"), rt.get_cell("c")
    a.set(1)
    b.set(2)
    log: list[Any] = []
    lift(rt, "adder", [a, b], c, lambda x, y: x + y, log)
    rt.idle()
    assert c.get() == 3
    assert len(log) == 1
    a.set(2)
    assert c.get() == 4  # fresh right after the write: it settled before returning
    assert len(log) == 2


def test_actions_lists_what_is_subscribed_by_name(rt: Runtime) -> None:
    a, b, c = rt.get_cell("a"), rt.get_cell("b"), rt.get_cell("c")
    a.set(1)
    first = lift(rt, "double", [a], b, lambda x: 2 * x)
    second = lift(rt, "inc", [b], c, lambda x: x + 1)
    rt.idle()
    assert set(rt.scheduler.actions()) >= {first, second}
    assert rt.scheduler.actions("inc") == [second]
    rt.scheduler.unsubscribe(second)
    assert rt.scheduler.actions("inc") == []
    assert rt.scheduler.actions("double") == [first]


def test_deferred_subscribe_runs_only_on_change(rt: Runtime) -> None:
    a, b, c = rt.get_cell("a"), rt.get_cell("b"), rt.get_cell("c")
    a.set(1)
    b.set(2)
    log: list[Any] = []
    lift(rt, "adder", [a, b], c, lambda x, y: x + y, log, schedule=False, declare_reads=True)
    rt.idle()
    assert log == []
    a.set(2)
    assert log == [("adder", 2, 2)]
    assert c.get() == 4


def test_topological_order(rt: Runtime) -> None:
    a, b, c, d, e = (rt.get_cell(n) for n in "abcde")
    a.set(1)
    b.set(2)
    d.set(1)
    log: list[Any] = []
    lift(rt, "adder1", [a, b], c, lambda x, y: x + y, log)
    lift(rt, "adder2", [c, d], e, lambda x, y: x + y, log)
    rt.idle()
    assert names(log) == ["adder1", "adder2"]
    assert (c.get(), e.get()) == (3, 4)

    log.clear()
    d.set(2)
    assert names(log) == ["adder2"]
    assert e.get() == 5

    log.clear()
    a.set(2)
    assert names(log) == ["adder1", "adder2"]
    assert (c.get(), e.get()) == (4, 6)


def test_topological_order_does_not_depend_on_subscription_order(rt: Runtime) -> None:
    a, b, c, d, e = (rt.get_cell(n) for n in "abcde")
    a.set(1)
    b.set(2)
    d.set(1)
    log: list[Any] = []
    lift(rt, "adder2", [c, d], e, lambda x, y: (x or 0) + y, log)
    lift(rt, "adder1", [a, b], c, lambda x, y: x + y, log)
    rt.idle()
    assert (c.get(), e.get()) == (3, 4)
    log.clear()
    a.set(2)
    assert names(log) == ["adder1", "adder2"]
    assert e.get() == 5


@pytest.mark.parametrize("reverse", [False, True])
def test_diamond_is_glitch_free(rt: Runtime, reverse: bool) -> None:
    a, b, c, d = (rt.get_cell(n) for n in "abcd")
    a.set(1)
    log: list[Any] = []
    specs: list[tuple[str, list[Any], Any, Any]] = [
        ("b", [a], b, lambda x: x * 2),
        ("c", [a], c, lambda x: x * 3),
        ("d", [b, c], d, lambda x, y: (x or 0) + (y or 0)),
    ]
    for name, inputs, output, fn in reversed(specs) if reverse else specs:
        lift(rt, name, inputs, output, fn, log)
    rt.idle()
    assert d.get() == 5
    log.clear()
    for value in (2, 3, 4):
        a.set(value)
    d_runs = [entry[1:] for entry in log if entry[0] == "d"]
    assert d_runs == [(4, 6), (6, 9), (8, 12)]  # once per write, never a mixed pair
    assert Counter(names(log)) == {"b": 3, "c": 3, "d": 3}
    assert d.get() == 20


def test_uneven_diamond_runs_the_join_once_with_fresh_inputs(rt: Runtime) -> None:
    a, b, c, e = (rt.get_cell(n) for n in "abce")
    a.set(1)
    log: list[Any] = []
    lift(rt, "e", [a, c], e, lambda x, y: (x or 0) + (y or 0), log)
    lift(rt, "c", [b], c, lambda x: (x or 0) + 1, log)
    lift(rt, "b", [a], b, lambda x: x + 1, log)
    rt.idle()
    log.clear()
    a.set(2)  # e reads a directly and through b → c
    assert log == [("b", 2), ("c", 3), ("e", 2, 4)]
    assert e.get() == 6


def test_equality_cut_off(rt: Runtime) -> None:
    a, parity, label = rt.get_cell("a"), rt.get_cell("parity"), rt.get_cell("label")
    a.set(1)
    log: list[Any] = []
    lift(rt, "parity", [a], parity, lambda x: x % 2, log)
    lift(rt, "label", [parity], label, lambda p: "odd" if p else "even", log)
    rt.idle()
    log.clear()
    a.set(3)  # parity recomputes to the same value: label must not run
    assert names(log) == ["parity"]
    a.set(4)
    assert names(log) == ["parity", "parity", "label"]
    assert label.get() == "even"


def test_value_accurate_triggers(rt: Runtime) -> None:
    a, out = rt.get_cell("a"), rt.get_cell("out")
    a.set({"x": 1})
    log: list[Any] = []
    lift(rt, "copy", [a], out, lambda v: v, log)
    rt.idle()
    a.set({"x": 1})  # the same value again
    with rt.edit() as tx:
        a.with_tx(tx).key("x").set(1)
    assert len(log) == 1
    a.set({"x": True})  # True is not 1
    assert len(log) == 2 and out.get() == {"x": True}


def test_path_precise_triggers(rt: Runtime) -> None:
    s, out = rt.get_cell("s"), rt.get_cell("out")
    s.set({"x": 1, "y": 1, "nested": {"p": 1, "q": 1}})
    log: list[Any] = []
    lift(rt, "x", [s.key("x")], out, lambda v: v, log)
    lift(rt, "p", [s.key("nested", "p")], rt.get_cell("out2"), lambda v: v, log)
    rt.idle()
    log.clear()
    s.key("y").set(2)
    s.key("nested", "q").set(2)
    s.set({"x": 1, "y": 3, "nested": {"p": 1, "q": 3}})
    assert log == []
    s.key("x").set(5)
    assert log == [("x", 5)]
    s.key("nested").set({"p": 2})
    assert log == [("x", 5), ("p", 2)]


def test_reads_through_links_are_triggers(rt: Runtime) -> None:
    first, second, pointer, out = (rt.get_cell(n) for n in ("first", "second", "pointer", "out"))
    first.set(1)
    second.set(2)
    pointer.set({"to": first})
    log: list[Any] = []
    lift(rt, "follow", [pointer.key("to")], out, lambda v: v * 10, log)
    rt.idle()
    assert out.get() == 10
    first.set(3)
    assert out.get() == 30
    pointer.key("to").set(second)  # relinking is a change too
    assert out.get() == 20
    first.set(4)  # no longer read
    assert len(log) == 3


def test_a_chain_of_100_000_actions_settles_iteratively() -> None:
    limit = sys.getrecursionlimit()
    rt = Runtime()
    depth = 100_000
    cells = [rt.cell_at(f"of:chain-{i}") for i in range(depth + 1)]
    cells[0].set(0)
    runs = [0]

    def step(source: Any, target: Any) -> Action:
        def run(tx: Transaction) -> None:
            runs[0] += 1
            target.with_tx(tx).set(source.with_tx(tx).get() + 1)

        return Action(run, name="step", reads=[addr(source)], writes=[addr(target)])

    with rt.batch():
        for i in range(depth):
            rt.scheduler.subscribe(step(cells[i], cells[i + 1]), schedule=False)
    cells[0].set(1)
    assert cells[depth].get() == depth + 1
    assert runs[0] == depth  # each link ran exactly once
    assert sys.getrecursionlimit() == limit
    rt.close()


def test_self_writes_are_ignored(rt: Runtime) -> None:
    counter, by = rt.get_cell("counter"), rt.get_cell("by")
    counter.set(0)
    by.set(1)

    def increment(tx: Transaction) -> None:
        c = counter.with_tx(tx)
        c.set(c.get() + by.with_tx(tx).get())

    rt.scheduler.subscribe(Action(increment, name="inc", writes=[addr(counter)]))
    rt.idle()
    assert counter.get() == 1
    rt.idle()
    assert counter.get() == 1
    by.set(2)
    assert counter.get() == 3
    assert rt.errors == []


def test_sample_does_not_subscribe(rt: Runtime) -> None:
    first, second, out = rt.get_cell("first"), rt.get_cell("second"), rt.get_cell("out")
    first.set(1)
    second.set(10)
    runs = [0]

    def run(tx: Transaction) -> None:
        runs[0] += 1
        out.with_tx(tx).set(first.with_tx(tx).get() + second.with_tx(tx).sample())

    rt.scheduler.subscribe(Action(run, name="mixed", writes=[addr(out)]))
    rt.idle()
    second.set(20)
    assert runs[0] == 1 and out.get() == 11
    first.set(2)
    assert runs[0] == 2 and out.get() == 22


def test_unsubscribe_stops_an_action(rt: Runtime) -> None:
    a, out = rt.get_cell("a"), rt.get_cell("out")
    a.set(1)
    log: list[Any] = []
    action = lift(rt, "copy", [a], out, lambda v: v, log)
    rt.idle()
    rt.scheduler.unsubscribe(action)
    a.set(2)
    assert out.get() == 1 and len(log) == 1


# --------------------------------------------------------------------------- the iteration cap


def _cycle(rt: Runtime, runs: Counter[str]) -> list[Any]:
    a, b, c, d, e = (rt.get_cell(n) for n in "abcde")
    a.set(1)
    b.set(1)
    d.set(1)

    def counted(name: str, fn: Any) -> Any:
        def wrapped(*values: Any) -> Any:
            runs[name] += 1
            return fn(*values)

        return wrapped

    lift(rt, "c=a+b", [a, b], c, counted("c=a+b", lambda x, y: x + y))
    lift(rt, "e=c+d", [c, d], e, counted("e=c+d", lambda x, y: (x or 0) + y))
    lift(rt, "c=e+b", [e, b], c, counted("c=e+b", lambda x, y: (x or 0) + y))
    return [a, b, c, d, e]


def _limit_errors(rt: Runtime) -> list[NodeError]:
    return [e for e in rt.errors if isinstance(e.error, IterationLimitError)]


def test_a_cycle_stops_with_one_iteration_limit_error(rt: Runtime) -> None:
    runs: Counter[str] = Counter()
    _cycle(rt, runs)
    rt.idle()
    errors = _limit_errors(rt)
    assert len(errors) == 1 and len(rt.errors) == 1
    assert errors[0].node in {"c=a+b", "e=c+d", "c=e+b"}
    assert errors[0].node in str(errors[0].error)
    assert runs[errors[0].node] == MAX_ITERATIONS  # run 100 times, refused the 101st
    assert all(count <= MAX_ITERATIONS for count in runs.values())

    before = Counter(runs)
    rt.idle()  # dormant: nothing runs again on its own
    assert runs == before and len(rt.errors) == 1


def test_a_stopped_cycle_does_not_stop_the_runtime(rt: Runtime) -> None:
    runs: Counter[str] = Counter()
    a, *_ = _cycle(rt, runs)
    rt.idle()
    f, g = rt.get_cell("f"), rt.get_cell("g")
    f.set(1)
    lift(rt, "double", [f], g, lambda x: x * 2)
    rt.idle()
    assert g.get() == 2
    f.set(3)
    assert g.get() == 6
    assert len(_limit_errors(rt)) == 1

    a.set(5)  # a change from outside the cycle wakes it up again
    assert len(_limit_errors(rt)) == 2
    assert len(rt.errors) == 2


def test_ordering_a_cycle_through_a_wide_node_stops_at_once(rt: Runtime) -> None:
    """Heights stop rising round a cycle after a few steps, not near the height limit.

    One node reads 300 documents and sits on a cycle; each step round it reads all of
    them, so the old climb to ``limit`` (actions + 10 000) cost millions of reads.
    """
    sources = [rt.get_cell(f"s{i}") for i in range(300)]
    with rt.batch():
        for i, cell in enumerate(sources):
            cell.set(i)
    x, y = rt.get_cell("x"), rt.get_cell("y")
    x.set(0)
    steps = [0]
    original = rt.scheduler._needed_height

    def counted(action: Any) -> Any:
        steps[0] += 1
        return original(action)

    rt.scheduler._needed_height = counted  # type: ignore[method-assign]
    lift(rt, "wide", [x, *sources], y, lambda *v: sum(v) % 7)
    lift(rt, "back", [y], x, lambda v: (v or 0) * 0)
    rt.idle()
    assert 0 < steps[0] < 100  # (before: 10 003 steps, each over 300 reads)
    assert y.get() == sum(range(300)) % 7 and x.get() == 0  # it settles: a fixed point
    assert rt.errors == []


# --------------------------------------------------------------------------- failures


def test_a_failing_action_records_a_node_error_and_the_runtime_goes_on(rt: Runtime) -> None:
    a, out, other = rt.get_cell("a"), rt.get_cell("out"), rt.get_cell("other")
    a.set(1)

    def fragile(tx: Transaction) -> None:
        value = a.with_tx(tx).get()
        out.with_tx(tx).set("written before the failure")
        out.with_tx(tx).set(10 // value)

    rt.scheduler.subscribe(
        Action(fragile, name="divide", node="node-1", pattern="pattern-1", space=rt.space)
    )
    lift(rt, "healthy", [a], other, lambda x: x + 1)
    rt.idle()
    assert out.get() == 10 and rt.errors == []

    a.set(0)
    assert len(rt.errors) == 1
    error = rt.errors[0]
    assert isinstance(error, NodeError)
    assert error.node == "node-1"
    assert error.pattern == "pattern-1"
    assert error.space == rt.space
    assert isinstance(error.error, ZeroDivisionError)
    assert "ZeroDivisionError" in error.traceback and "fragile" in error.traceback
    assert out.get() == 10  # nothing of the failed run landed
    assert other.get() == 1  # the other action still ran

    a.set(5)  # the failed action still watches its inputs
    assert out.get() == 2
    assert len(rt.errors) == 1


def test_on_error_callback_and_unsubscribe(rt: Runtime) -> None:
    a = rt.get_cell("a")
    a.set(1)
    seen: list[NodeError] = []

    def broken_callback(error: NodeError) -> None:
        raise RuntimeError("a broken callback must not stop anything")

    rt.on_error(broken_callback)
    unsubscribe = rt.on_error(seen.append)

    def fail(tx: Transaction) -> None:
        raise ValueError(f"bad {a.with_tx(tx).get()}")

    rt.scheduler.subscribe(Action(fail, name="fail"))
    rt.idle()
    assert [str(e.error) for e in seen] == ["bad 1"]
    unsubscribe()
    a.set(2)
    assert len(seen) == 1
    assert [str(e.error) for e in rt.errors] == ["bad 1", "bad 2"]
    unsubscribe()  # idempotent


def test_reactive_retries_on_conflict(rt: Runtime) -> None:
    a, noise, out = rt.get_cell("a"), rt.get_cell("noise"), rt.get_cell("out")
    a.set(0)
    noise.set(0)
    runs = [0]

    def always_conflicts(tx: Transaction) -> None:
        runs[0] += 1
        value = a.with_tx(tx).get()
        noise.with_tx(tx).get()
        interloper = Transaction(rt.store)  # someone else commits what we read
        noise.with_tx(interloper).set(runs[0])
        interloper.commit()
        out.with_tx(tx).set(value)

    rt.scheduler.subscribe(Action(always_conflicts, name="conflicting", writes=[addr(out)]))
    rt.idle()
    assert runs[0] == 10
    assert out.get() is None
    # given up visibly: one ConflictError on the node, not a silently dropped write
    assert [type(e.error) for e in rt.errors] == [ConflictError]
    assert rt.errors[0].name == "conflicting"
    a.set(1)  # an input change runs it again, with a fresh set of retries
    assert runs[0] == 20
    assert [type(e.error) for e in rt.errors] == [ConflictError, ConflictError]


def test_async_action_with_idle_and_aidle(rt: Runtime) -> None:
    a, out = rt.get_cell("a"), rt.get_cell("out")
    a.set(2)

    def start(tx: Transaction) -> Any:
        value = a.with_tx(tx).get()

        async def finish() -> None:
            await asyncio.sleep(0)
            out.set(value * 2)

        return finish()

    rt.scheduler.subscribe(Action(start, name="async"))
    rt.idle()
    assert out.get() == 4
    a.set(5)
    asyncio.run(rt.aidle())
    assert out.get() == 10

    async def notebook_cell() -> Any:  # inside a running event loop
        a.set(7)
        await rt.aidle()
        return out.get()

    assert asyncio.run(notebook_cell()) == 14
    assert rt.scheduler.quiet()


# --------------------------------------------------------------------------- events


def test_events_are_fifo_and_not_stored(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    result = rt.get_cell("result")
    result.set(0)
    seen: list[Any] = []

    def copy(tx: Transaction, event: Any) -> None:
        seen.append(event)
        result.with_tx(tx).set(event)

    on_event(rt, stream, copy)
    with rt.batch():
        for event in (1, 2, 3):
            stream.send(event)
        assert seen == []  # queued until the batch settles
    assert seen == [1, 2, 3]
    assert result.get() == 3
    assert raw(rt, stream) == {"$stream": True}


def test_one_event_per_pass_with_reactive_work_between(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    x, y = rt.get_cell("x"), rt.get_cell("y")
    x.set(0)
    y.set(0)
    seen_y: list[int] = []

    def handle(tx: Transaction, event: Any) -> None:
        seen_y.append(y.with_tx(tx).get())
        x.with_tx(tx).set(event)

    on_event(rt, stream, handle)
    lift(rt, "y=x*10", [x], y, lambda v: v * 10)
    rt.idle()
    with rt.batch():
        for event in (1, 2, 3):
            stream.send(event)
    assert seen_y == [0, 10, 20]  # each handler saw the lift's output of the previous event
    assert y.get() == 30


def test_handler_reads_are_not_subscriptions(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    x, log = rt.get_cell("x"), rt.get_cell("log")
    x.set(1)
    calls = [0]

    def handle(tx: Transaction, event: Any) -> None:
        calls[0] += 1
        log.with_tx(tx).set(x.with_tx(tx).get())

    on_event(rt, stream, handle)
    stream.send(None)
    x.set(2)
    rt.idle()
    assert calls[0] == 1 and log.get() == 1


def test_failing_handler_reference_sequence(rt: Runtime) -> None:
    stream = make_stream(rt, "divide")
    result = rt.get_cell("result")
    result.set(1)

    def divide(tx: Transaction, event: Any) -> None:
        result.with_tx(tx).set(event["divisor"] // event["dividend"])

    on_event(rt, stream, divide, name="divide")
    stream.send({"divisor": 5, "dividend": 1})
    assert result.get() == 5 and rt.errors == []
    stream.send({"divisor": 10, "dividend": 0})
    assert len(rt.errors) == 1 and result.get() == 5
    error = rt.errors[0]
    assert isinstance(error.error, ZeroDivisionError)
    assert error.node == "divide" and error.space == rt.space
    stream.send({"divisor": 10, "dividend": 5})
    assert result.get() == 2 and len(rt.errors) == 1


def test_a_failing_handler_lands_nothing_and_later_events_run(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    log = rt.get_cell("log")
    log.set([])

    def handle(tx: Transaction, event: Any) -> None:
        log.with_tx(tx).push(event)
        if event == "bad":
            raise RuntimeError("after a write")

    on_event(rt, stream, handle)
    with rt.batch():
        for event in ("one", "bad", "two"):
            stream.send(event)
    assert log.get() == ["one", "two"]
    assert len(rt.errors) == 1


def test_removed_handler_gets_no_more_events(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    seen: list[Any] = []
    handler = on_event(rt, stream, lambda tx, event: seen.append(event))
    with rt.batch():
        stream.send(1)
        stream.send(2)
        rt.scheduler.remove_handler(handler)  # queued events of a removed handler are dropped
    stream.send(3)
    assert seen == []
    assert not rt.scheduler.has_handlers(addr(stream))


def test_every_handler_of_a_stream_sees_every_event(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    seen: list[tuple[str, Any]] = []
    on_event(rt, stream, lambda tx, event: seen.append(("first", event)))
    on_event(rt, stream, lambda tx, event: seen.append(("second", event)))
    stream.send(1)
    stream.send(2)
    assert seen == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]


def test_event_retries_on_conflict(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    x = rt.get_cell("x")
    x.set(0)
    attempts = [0]
    conflicts_left = [5]

    def handle(tx: Transaction, event: Any) -> None:
        attempts[0] += 1
        value = x.with_tx(tx).get()
        if conflicts_left[0] > 0:
            conflicts_left[0] -= 1
            interloper = Transaction(rt.store)
            x.with_tx(interloper).set(100 + attempts[0])
            interloper.commit()
        x.with_tx(tx).set(value + event)

    on_event(rt, stream, handle)
    stream.send(1)
    assert attempts[0] == 6  # five conflicts, success on the sixth attempt
    assert x.get() == 105 + 1
    assert rt.errors == []

    attempts[0] = 0
    conflicts_left[0] = 100
    stream.send(1)  # always conflicting: given up after the retries, recorded
    assert attempts[0] == 6
    assert len(rt.errors) == 1 and isinstance(rt.errors[0].error, ConflictError)


def test_handler_may_send_to_another_stream(rt: Runtime) -> None:
    first, second = make_stream(rt, "first"), make_stream(rt, "second")
    log: list[Any] = []
    on_event(rt, first, lambda tx, event: second.with_tx(tx).send(event * 2))
    on_event(rt, second, lambda tx, event: log.append(event))
    first.send(5)
    first.send(7)
    assert log == [10, 14]


def test_events_sent_in_a_transaction_are_sent_only_if_it_commits(rt: Runtime) -> None:
    first, second = make_stream(rt, "first"), make_stream(rt, "second")
    log: list[Any] = []

    def forward(tx: Transaction, event: Any) -> None:
        second.with_tx(tx).send(event)
        if event == "fail":
            raise RuntimeError("after sending")

    on_event(rt, first, forward)
    on_event(rt, second, lambda tx, event: log.append(event))
    first.send("fail")
    assert log == [] and len(rt.errors) == 1  # a failing handler sends nothing
    first.send("ok")
    assert log == ["ok"]

    with pytest.raises(KeyError), rt.edit() as tx:
        second.with_tx(tx).send("aborted")
        raise KeyError("abort the edit")
    with rt.edit() as tx:
        second.with_tx(tx).send("committed")
        second.with_tx(tx).set("set on a stream")
        assert log == ["ok"]  # not before the commit
    assert log == ["ok", "committed", "set on a stream"]


def test_idle_returns_when_the_queue_is_empty(rt: Runtime) -> None:
    stream = make_stream(rt, "events")
    seen: list[Any] = []
    on_event(rt, stream, lambda tx, event: seen.append(event))
    with rt.batch():
        stream.send("queued")
        assert not rt.scheduler.quiet()
    rt.idle()
    assert seen == ["queued"]
    assert rt.scheduler.quiet()


def test_runs_of_one_height_go_in_creation_order_and_the_queue_empties(rt: Runtime) -> None:
    """The run queue (int keys: height, then creation order) leaves nothing behind."""
    a = rt.get_cell("a")
    a.set(1)
    log: list[Any] = []
    outs = [rt.get_cell(f"o{i}") for i in range(6)]
    tail = rt.get_cell("tail")
    lift(rt, "tail", [outs[2], outs[4]], tail, lambda x, y: x + y, log)  # height 2, made first
    for i in (3, 0, 5, 1, 4, 2):  # made out of name order: creation order is this one
        lift(rt, f"o{i}", [a], outs[i], lambda x, i=i: x * 10 + i, log)
    rt.idle()
    for value in range(2, 30):
        log.clear()
        a.set(value)
        assert names(log) == ["o3", "o0", "o5", "o1", "o4", "o2", "tail"]
        assert tail.get() == value * 20 + 6
        assert rt.scheduler._heap == [] and rt.scheduler._queued == {}


# --------------------------------------------------------------------------- many readers


@pytest.mark.parametrize("seed", range(8))
def test_readers_of_one_document_run_exactly_when_their_path_changed(rt: Runtime,
                                                                     seed: int) -> None:
    """Below and above ``BULK_READERS`` (grouped by path, scheduled in bulk): after each
    write, the actions that ran are exactly those whose read value changed (the
    oracle compares the document before and after at each reader's path).  Readers
    subscribed and unsubscribed between writes are (and stop being) scheduled."""
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(5)]
    src = rt.get_cell(f"many-src-{seed}")
    src.set({k: 0 for k in keys})
    log: list[Any] = []
    readers: dict[str, tuple[Action, str | None]] = {}

    def add_reader(i: int) -> None:
        key = rng.choice([*keys, None])  # None: the whole document
        cell = src if key is None else src.key(key)
        name = f"r{i}"
        readers[name] = (lift(rt, name, [cell], rt.get_cell(f"many-out-{seed}-{i}"),
                              lambda v: v, log), key)

    count = rng.choice([3, BULK_READERS - 1, BULK_READERS, 40])
    for i in range(count):
        add_reader(i)
    rt.idle()
    added = count
    for _ in range(30):
        roll = rng.random()
        if roll < 0.1:
            add_reader(added)
            added += 1
            rt.idle()
        elif roll < 0.2 and readers:
            name = rng.choice(sorted(readers))
            rt.scheduler.unsubscribe(readers.pop(name)[0])
        before = src.get()
        log.clear()
        if rng.random() < 0.2:
            src.set({k: rng.randint(0, 2) for k in keys})
        else:
            src.key(rng.choice(keys)).set(rng.randint(0, 2))
        after = src.get()
        expected = {name for name, (_a, key) in readers.items()
                    if (before if key is None else before[key])
                    != (after if key is None else after[key])}
        assert set(names(log)) == expected
        assert len(log) == len(expected)  # each at most once


@pytest.mark.parametrize("seed", range(6))
def test_readers_of_nested_paths_run_exactly_when_their_value_changed(rt: Runtime,
                                                                      seed: int) -> None:
    """Many readers of one document at nested paths (list elements, their fields, a
    list's ``length``, an index spelled as a string): a write through the cell API
    (an element, a record's field, a push, a remove, a whole list) narrows the paths compared to
    those it went through (``PathGroups.reached``); the readers that run are still
    exactly those whose value changed (the oracle compares before and after)."""
    rng = random.Random(seed)
    src = rt.get_cell(f"nested-src-{seed}")
    src.set({"xs": list(range(12)), "recs": [{"v": i, "w": [i]} for i in range(6)], "n": 0})
    log: list[Any] = []
    paths: list[tuple[Any, ...]] = (
        [("xs", i) for i in range(14)] + [("xs", "length"), ("xs", "3"), ("n",), ("recs",)]
        + [("recs", i, f) for i in range(7) for f in ("v", "w")] + [("recs", 2, "w", 0)])
    for i, path in enumerate(paths):
        lift(rt, f"p{i}", [src.key(*path)], rt.get_cell(f"nested-out-{seed}-{i}"),
             lambda v: v, log)
    rt.idle()
    compared = count_compared(rt)
    def plain() -> Any:  # (records are their own documents: DocDicts, as plain JSON)
        return json.loads(json.dumps(src.get()))

    for _ in range(40):
        before = plain()
        log.clear()
        roll = rng.random()
        if roll < 0.15:
            src.key("xs").push(rng.randint(0, 3))
        elif roll < 0.3 and before["xs"]:
            src.key("xs").remove(before["xs"][-1] if rng.random() < 0.7 else before["xs"][0])
        elif roll < 0.45:
            src.key("recs", rng.randrange(6), "v").set(rng.randint(0, 3))
        elif roll < 0.5:
            src.key("recs", rng.randrange(6), "w").set([rng.randint(0, 2)] * rng.randint(0, 2))
        elif roll < 0.55:
            src.key("xs").set([rng.randint(0, 3) for _ in range(rng.randint(10, 14))])
        elif roll < 0.6:
            src.key("n").set(rng.randint(0, 2))
        else:
            src.key("xs", rng.randrange(len(before["xs"]) or 1)).set(rng.randint(0, 3))
        after = plain()
        expected = {f"p{i}" for i, path in enumerate(paths)
                    if not json_equal(get_path(before, path), get_path(after, path))}
        assert set(names(log)) == expected, (before, after)
        assert len(log) == len(expected)
    assert compared and min(compared) <= 4 < len(paths)  # narrowed, not every path


def test_an_incremental_reader_among_many_is_told_of_every_change(rt: Runtime) -> None:
    """With an incremental action (``Action.changed``) among the readers, the document
    is notified action by action: a pending incremental reader still learns of it."""
    src = rt.get_cell("incremental-src")
    src.set({"a": 0, "b": 0})
    for i in range(BULK_READERS + 4):
        lift(rt, f"plain{i}", [src.key("a")], rt.get_cell(f"inc-out-{i}"), lambda v: v)
    seen: list[set[Any]] = []

    def incremental(tx: Transaction) -> None:
        seen.append(set(action.changed or ()))
        action.changed = set()
        src.with_tx(tx).key("b").get()

    action = Action(incremental, name="incremental", writes=[], reads=[addr(src)])
    action.changed = set()  # it keeps its own subscription: the declared whole document
    rt.scheduler.subscribe(action)
    rt.idle()
    seen.clear()
    with rt.batch():
        src.key("b").set(1)  # the incremental action is pending after this one
        src.key("a").set(1)  # and must learn of this change too
    assert seen and (rt.space, src.entity_id) in seen[-1]


def test_many_readers_of_a_path_given_as_a_list_are_notified_one_by_one(rt: Runtime) -> None:
    """A read path that is not a tuple cannot key a path group: the per-action loop."""
    src = rt.get_cell("list-path-src")
    src.set({"a": 0})
    log: list[Any] = []
    for i in range(BULK_READERS + 2):
        action = Action(lambda tx: None, name=f"listed{i}", writes=[],
                        reads=[(rt.space, src.entity_id or "", ["a"])])  # type: ignore[list-item]
        rt.scheduler.subscribe(action, schedule=False)
    rt.scheduler.on_run.append(lambda a: log.append(a.name))
    src.key("a").set(1)
    assert sorted(log) == sorted(f"listed{i}" for i in range(BULK_READERS + 2))


@pytest.mark.parametrize("seed", range(4))
def test_root_differs_is_not_json_equal_whatever_the_written_paths(seed: int) -> None:
    """``_root_differs`` answers at a written path only when the value there differs;
    named paths that did not change, paths off the list, missing indices and kinds
    that compare equal in Python (``True`` / ``1``, ``1`` / ``1.0``) never change its
    answer from the definition."""
    rng = random.Random(seed)
    pool: list[Any] = [0, 1, True, 1.0, "1", None, [1], {"a": 1}]
    for _ in range(300):
        before = [rng.choice(pool) for _ in range(rng.choice([3, _LARGE, _LARGE + 9]))]
        after = list(before)
        for _ in range(rng.randint(0, 2)):
            if rng.random() < 0.2:
                after.append(rng.choice(pool))
            elif after:
                after[rng.randrange(len(after))] = rng.choice(pool)
        written: list[tuple[Any, ...]] = [
            rng.choice([(rng.randrange(len(after) + 3),), ("length",), (0, "a"), ()])
            for _ in range(rng.randint(0, 3))]
        assert _root_differs(before, after, written) == (not json_equal(before, after))


def test_a_whole_list_reader_of_a_long_list_runs_without_comparing_the_list(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader of a whole list of 10 000 is scheduled when one element changes, and
    the list is not compared whole for it (the written element differs, so the list
    does); writing the same value again schedules nothing."""
    src = rt.get_cell("long-list")
    src.set(list(range(10_000)))
    log: list[Any] = []
    lift(rt, "total", [src], rt.get_cell("long-list-total"), sum, log)
    rt.idle()
    whole: list[int] = []

    def spying(a: Any, b: Any) -> bool:
        if type(a) is list and len(a) >= 10_000:
            whole.append(1)
        return json_equal(a, b)

    monkeypatch.setattr(scheduler_module, "json_equal", spying)
    log.clear()
    src.key(5000).set(-1)
    rt.idle()
    assert names(log) == ["total"] and whole == []
    assert rt.get_cell("long-list-total").get() == sum(range(10_000)) - 5000 - 1
    log.clear()
    src.key(5000).set(-1)
    rt.idle()
    assert log == []


def _spelled(path: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(int(p) if type(p) is str and p.isdigit() else p for p in path)


@pytest.mark.parametrize("seed", range(5))
def test_heights_order_many_writers_and_readers_of_one_document(rt: Runtime, seed: int) -> None:
    """Writers and readers of one document, more than ``BULK_READERS`` of each (so the
    height walks go by path groups), at random paths and random heights, subscribed,
    unsubscribed and moved (``move_write``) at random: every reader stays above every
    writer of a path overlapping its own."""
    rng = random.Random(seed)
    space = rt.space
    chain = []
    for d in range(6):  # writers read chain[d]: height d + 1
        reads = [(space, f"chain{d - 1}", ())] if d else []
        action = Action(lambda tx: None, name=f"c{d}", writes=[(space, f"chain{d}", ())],
                        reads=reads)
        rt.scheduler.subscribe(action, schedule=False)
        chain.append(action)
    pool: list[tuple[Any, ...]] = [(), (0,), (1,), ("1",), (2, "v"), (3,), ("x",), ("x", 0)]
    writers: dict[Action, tuple[Any, ...]] = {}
    readers: dict[Action, tuple[Any, ...]] = {}

    def add_writer() -> None:
        path = rng.choice(pool[1:])
        action = Action(lambda tx: None, name="w", writes=[(space, "doc", path)],
                        reads=[(space, f"chain{rng.randrange(6)}", ())])
        rt.scheduler.subscribe(action, schedule=False)
        writers[action] = path

    def add_reader() -> None:
        path = rng.choice(pool)
        action = Action(lambda tx: None, name="r", reads=[(space, "doc", path)])
        rt.scheduler.subscribe(action, schedule=False)
        readers[action] = path

    for _ in range(BULK_READERS + 4):
        add_writer()
        add_reader()
    for _ in range(80):
        roll = rng.random()
        if roll < 0.25:
            add_writer()
        elif roll < 0.5:
            add_reader()
        elif roll < 0.6:
            rt.scheduler.unsubscribe(writers.popitem()[0])
        elif roll < 0.7:
            rt.scheduler.unsubscribe(readers.popitem()[0])
        else:
            action = rng.choice(list(writers))
            new = rng.choice(pool[1:])
            rt.scheduler.move_write([action], (space, "doc", writers[action]), (space, "doc", new))
            writers[action] = new
        for reader, read in readers.items():
            for writer, written in writers.items():
                if paths_overlap(_spelled(read), _spelled(written)):
                    assert reader.height > writer.height, (read, written)
        assert {a[2] for w in writers for a in w.writes if a[1] == "doc"} <= set(pool)


def _subscription(rt: Runtime, action: Action) -> dict[Any, list[Any]]:
    return {key: list(triggers[action]) for key, triggers in rt.scheduler._triggers.items()
            if action in triggers}


@pytest.mark.parametrize("seed", range(6))
def test_a_long_subscription_patched_equals_one_made_anew(seed: int) -> None:
    """``_set_reads`` over a long subscription that changed at a few positions patches
    it (``_patch_reads``): the triggers, their path groups, the action's reads and
    its height equal those of a subscription made anew from the same reads, after a
    random sequence of small and large changes (documents gone, new, read twice, a
    path given as a list)."""
    rng = random.Random(seed)
    made: dict[str, Runtime] = {"patched": Runtime(), "anew": Runtime()}
    made["anew"].scheduler._patch_reads = lambda action, reads: False  # type: ignore[method-assign]
    actions: dict[str, Action] = {}
    for name, rt in made.items():
        space = rt.space
        for d in range(4):  # writers of doc{d} at height d (a chain), so heights differ
            below = [(space, f"doc{d - 1}", ())] if d else []
            rt.scheduler.subscribe(Action(lambda tx: None, name=f"w{d}",
                                          writes=[(space, f"doc{d}", ())], reads=below),
                                   schedule=False)
        for i in range(2 * BULK_READERS):  # other readers of doc0 and doc1: grouped
            rt.scheduler.subscribe(Action(lambda tx: None, name=f"o{i}",
                                          reads=[(space, f"doc{i % 2}", (i % 3,))]),
                                   schedule=False)
        for d in range(2):
            key = (space, f"doc{d}")
            assert rt.scheduler._reader_groups(key, rt.scheduler._triggers[key]) is not None
        actions[name] = Action(lambda tx: None, name="many")
        rt.scheduler.subscribe(actions[name], schedule=False)
    patches: list[bool] = []
    patch = made["patched"].scheduler._patch_reads

    def counting(action: Action, reads: Sequence[Any]) -> bool:
        patches.append(patch(action, reads))
        return patches[-1]

    made["patched"].scheduler._patch_reads = counting  # type: ignore[method-assign]
    space = made["patched"].space
    # first only documents nobody writes (height 0): a patch that reads a written one
    # must raise the height above its writer
    reads: list[Any] = [(space, f"doc{rng.randrange(4, 8)}", (rng.randrange(3),))
                        for _ in range(150)]
    for _ in range(25):
        reads = list(reads)
        for _ in range(rng.choice([1, 2, 3, 3 * _FEW_READS])):  # (many: made anew)
            i = rng.randrange(len(reads))
            path: Any = (rng.randrange(3),) if rng.random() < 0.9 else [rng.randrange(3)]
            reads[i] = (space, f"doc{rng.randrange(8)}", path)
        for name, rt in made.items():
            rt.scheduler._set_reads(actions[name], list(reads))
        patched, anew = actions["patched"], actions["anew"]
        assert patched.reads == anew.reads == reads
        assert patched.height == anew.height
        assert _subscription(made["patched"], patched) == _subscription(made["anew"], anew)
        for key, groups in made["patched"].scheduler._groups.items():
            if groups is not None:  # grouped readers: as grouping every reader afresh
                fresh = path_groups(made["patched"].scheduler._triggers.get(key, {}))
                assert fresh is not None and groups.by_path == fresh.by_path
    assert True in patches and False in patches  # both ways taken: patched, and made anew
    for rt in made.values():
        rt.close()
