"""cellkernel.runtime: writes, transactions, batches, shared SQLite files, bad input (SPEC §2)."""

from __future__ import annotations

import datetime
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
from helpers.core import (
    OTHER_SPACE,
    addr,
    doc,
    lift,
    make_stream,
    on_event,
    raw,
    runtime_on,
    store_state,
    version,
    write_raw,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.errors import (
    CapabilityError,
    CauseError,
    ConflictError,
    LinkCycleError,
    WriteIsolationError,
)
from cellkernel.reactive import cells as cells_module
from cellkernel.reactive.cells import Cell
from cellkernel.reactive.scheduler import Action
from cellkernel.runtime import Runtime
from cellkernel.store.memory import MemoryStore
from cellkernel.store.sqlite import SqliteStore
from cellkernel.store.transactions import Transaction


def test_stores_and_default_space(rt: Runtime, sqlite_url: str) -> None:
    assert rt.space == "did:local:default"
    assert isinstance(Runtime().store, MemoryStore)
    with Runtime(store=sqlite_url) as on_file:
        assert isinstance(on_file.store, SqliteStore)
    assert Runtime(space="did:test:mine").get_cell("x").space == "did:test:mine"


def test_close_is_idempotent(sqlite_url: str) -> None:
    runtime = Runtime(store=sqlite_url)
    runtime.get_cell("c").set(1)
    runtime.close()
    runtime.close()
    with Runtime(store=sqlite_url) as again:
        assert again.get_cell("c").get() == 1  # the committed write survived


# --------------------------------------------------------------------------- writes and settling


def test_a_write_outside_a_transaction_commits_and_settles(rt: Runtime) -> None:
    a, doubled = rt.get_cell("a"), rt.get_cell("doubled")
    a.set(1)
    lift(rt, "double", [a], doubled, lambda x: x * 2)
    rt.idle()
    start = version(rt, a)
    a.set(21)
    assert version(rt, a) == start + 1  # committed
    assert doubled.get() == 42  # and settled before set() returned


def test_edit_commits_on_exit(rt: Runtime) -> None:
    a, doubled = rt.get_cell("a"), rt.get_cell("doubled")
    a.set(1)
    lift(rt, "double", [a], doubled, lambda x: x * 2)
    rt.idle()
    with rt.edit() as tx:
        a.with_tx(tx).set(5)
        assert a.get() == 1  # not visible outside before the commit
        assert doubled.get() == 2
    assert tx.status == "committed"
    assert a.get() == 5 and doubled.get() == 10


def test_edit_aborts_on_exception_and_nothing_lands(rt: Runtime) -> None:
    a = rt.get_cell("a")
    a.set(1)
    before = store_state(rt)
    with pytest.raises(RuntimeError, match="boom"), rt.edit() as tx:
        a.with_tx(tx).set(2)
        rt.get_cell("new").with_tx(tx).set("new document")
        raise RuntimeError("boom")
    assert tx.status == "aborted"
    assert store_state(rt) == before


def test_edit_with_retry_retries_a_conflict(rt: Runtime) -> None:
    counter = rt.get_cell("counter")
    counter.set(0)
    attempts = [0]

    def increment(tx: Transaction) -> str:
        attempts[0] += 1
        value = counter.with_tx(tx).get()
        if attempts[0] == 1:
            with rt.edit() as other:  # a concurrent commit with the same basis
                counter.with_tx(other).set(100)
        counter.with_tx(tx).set(value + 1)
        return "done"

    assert rt.edit_with_retry(increment) == "done"
    assert attempts[0] == 2
    assert counter.get() == 101  # the retry saw the concurrent write


def test_edit_with_retry_raises_after_the_retries(rt: Runtime) -> None:
    counter = rt.get_cell("counter")
    counter.set(0)
    attempts = [0]

    def always_stale(tx: Transaction) -> None:
        attempts[0] += 1
        value = counter.with_tx(tx).get()
        rt.get_cell("side").with_tx(tx).set("lost with the conflict")
        with rt.edit() as other:
            counter.with_tx(other).set(1000 + attempts[0])
        counter.with_tx(tx).set(value + 1)

    with pytest.raises(ConflictError):
        rt.edit_with_retry(always_stale, retries=3)
    assert attempts[0] == 4  # the first try and three retries
    assert counter.get() == 1004
    assert rt.get_cell("side").get() is None

    attempts[0] = 0
    with pytest.raises(ConflictError):
        rt.edit_with_retry(always_stale, retries=0)
    assert attempts[0] == 1


def test_edit_with_retry_does_not_retry_other_errors(rt: Runtime) -> None:
    attempts = [0]

    def broken(tx: Transaction) -> None:
        attempts[0] += 1
        rt.get_cell("c").with_tx(tx).set(1)
        raise KeyError("not a conflict")

    with pytest.raises(KeyError):
        rt.edit_with_retry(broken)
    assert attempts[0] == 1
    assert rt.get_cell("c").get() is None


@pytest.mark.parametrize("ending", ["abort", "commit"])
def test_edit_with_retry_accepts_a_transaction_its_function_ended(rt: Runtime, ending: str) -> None:
    """``fn`` may end the transaction itself: its result comes back, nothing is committed twice."""

    def ends_it(tx: Transaction, value: int) -> str:
        rt.get_cell("c").with_tx(tx).set(value)
        getattr(tx, ending)()
        return ending

    assert rt.edit_with_retry(ends_it, 5) == ending
    assert rt.get_cell("c").get() == (5 if ending == "commit" else None)


def test_edit_with_retry_across_two_runtimes_on_one_file(sqlite_url: str) -> None:
    with Runtime(store=sqlite_url) as first, Runtime(store=sqlite_url) as second:
        first.get_cell("counter").set(0)
        attempts = [0]

        def increment(tx: Transaction) -> None:
            attempts[0] += 1
            cell = first.get_cell("counter").with_tx(tx)
            value = cell.get()
            if attempts[0] == 1:
                second.get_cell("counter").set(50)  # the other runtime commits in between
            cell.set(value + 1)

        first.edit_with_retry(increment)
        assert attempts[0] == 2
        assert first.get_cell("counter").get() == 51
        second.idle()
        assert second.get_cell("counter").get() == 51


def test_batch_defers_the_settle(rt: Runtime) -> None:
    a, copy = rt.get_cell("a"), rt.get_cell("copy")
    a.set(0)
    log: list[Any] = []
    lift(rt, "copy", [a], copy, lambda v: v, log)
    rt.idle()
    log.clear()
    with rt.batch():
        for value in (1, 2, 3):
            a.set(value)
        assert a.get() == 3  # every write committed …
        assert copy.get() == 0  # … but nothing settled yet
        with rt.batch():
            a.set(4)
        assert copy.get() == 0  # a nested batch settles only with the outermost
        seen: list[Any] = []
        copy.sink(seen.append)  # a new sink reads at once but does not settle early
        assert seen == [0] and log == []
    assert log == [("copy", 4)]  # one run for many writes
    assert copy.get() == 4
    assert seen == [0, 4]


# ------------------------------------------------------------------------- isolation and conflicts


def test_writing_two_spaces_raises_write_isolation_and_nothing_lands(rt: Runtime) -> None:
    here, there = rt.get_cell("here"), rt.get_cell("there", space=OTHER_SPACE)
    here.set(1)
    before = store_state(rt)
    with pytest.raises(WriteIsolationError), rt.edit() as tx:
        here.with_tx(tx).set(2)
        there.with_tx(tx).set(2)
    assert store_state(rt) == before
    assert here.get() == 1 and there.get() is None


def test_reading_many_spaces_writing_one_is_fine(rt: Runtime) -> None:
    here, there = rt.get_cell("here"), rt.get_cell("there", space=OTHER_SPACE)
    there.set(5)
    with rt.edit() as tx:
        here.with_tx(tx).set(there.with_tx(tx).get() * 2)
    assert here.get() == 10


def test_stale_basis_raises_conflict_and_nothing_lands(rt: Runtime) -> None:
    a = rt.get_cell("a")
    a.set(1)
    with pytest.raises(ConflictError), rt.edit() as tx:
        value = a.with_tx(tx).get()
        rt.get_cell("b").with_tx(tx).set("never lands")
        with rt.edit() as other:
            a.with_tx(other).set(10)
        before = store_state(rt)
        a.with_tx(tx).set(value + 1)
    assert store_state(rt) == before
    assert a.get() == 10 and rt.get_cell("b").get() is None


# --------------------------------------------------------------------------- two runtimes, one file


def test_two_runtimes_on_one_sqlite_file_see_each_other_after_idle(sqlite_url: str) -> None:
    with Runtime(store=sqlite_url) as first, Runtime(store=sqlite_url) as second:
        a1, a2 = first.get_cell("a"), second.get_cell("a")
        a1.set(1)
        second.idle()
        assert a2.get() == 1

        tenfold = second.get_cell("tenfold")
        log: list[Any] = []
        lift(second, "x10", [a2], tenfold, lambda v: v * 10, log)
        second.idle()
        assert tenfold.get() == 10

        a1.set(2)
        second.idle()  # picks up the other runtime's commit and reacts to it
        assert a2.get() == 2 and tenfold.get() == 20
        assert len(log) == 2

        first.idle()
        assert first.get_cell("tenfold").get() == 20


def test_a_plain_write_after_another_runtime_committed_does_not_conflict(
    sqlite_url: str,
) -> None:
    with Runtime(store=sqlite_url) as first, Runtime(store=sqlite_url) as second:
        first.get_cell("a").set(1)
        first.get_cell("list").set([])
        assert second.get_cell("a").get() == 1
        assert second.get_cell("list").get() == []
        first.get_cell("a").set(2)
        first.get_cell("list").push("from first")
        second.get_cell("a").set(3)  # no idle() in between: retried, not refused
        second.get_cell("list").push("from second")
        first.idle()
        assert first.get_cell("a").get() == 3
        assert first.get_cell("list").get() == ["from first", "from second"]


# --------------------------------------------------------------------------- value normalisation


def test_values_are_normalised_on_write(rt: Runtime) -> None:
    class Event(pydantic.BaseModel):
        when: datetime.date
        pair: tuple[int, int]

    c = rt.get_cell("c")
    model = Event(when=datetime.date(2024, 5, 6), pair=(1, 2))
    c.set({"zero": -0.0, "tuple": (1, (2, 3)), "model": model})
    assert raw(rt, c) == {
        "zero": 0,
        "tuple": [1, [2, 3]],
        "model": {"when": "2024-05-06", "pair": [1, 2]},
    }
    assert math.copysign(1, raw(rt, c)["zero"]) == 1
    c.set(-0.0)
    assert c.get() == 0 and type(c.get()) is int


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (math.nan, "/"),
        (math.inf, "/"),
        ({"a": {"b": -math.inf}}, "/a/b"),
        ({"s": {1, 2}}, "/s"),
        ({"b": b"bytes"}, "/b"),
        ({"o": object()}, "/o"),
        ([{"fine": 1}, {"bad": math.nan}], "/1/bad"),
        ({"k": {3: "int key"}}, "/k"),
    ],
)
def test_non_json_values_raise_and_storage_is_unchanged(rt: Runtime, value: Any, path: str) -> None:
    c = rt.get_cell("c")
    c.set({"existing": [1, {"doc": True}]})
    before = store_state(rt)
    with pytest.raises(ValueError, match=f"at {path}"):
        c.set(value)  # the cell is the document root: the path is the one inside the value
    # paths name the place the bad part would land: the cell's path, then inside the value
    # (a pushed item lands at index 2 of ``existing``)
    pushed = "/existing/2" + path.rstrip("/")
    with pytest.raises(ValueError, match=f"at {pushed}"):
        c.key("existing").push(value)
    with pytest.raises(ValueError):
        c.update({"new": value})
    assert store_state(rt) == before


# --------------------------------------------------------------------------- bad input, both halves

Operation = Callable[[], Any]


def _two_spaces(rt: Runtime) -> Operation:
    def run() -> None:
        with rt.edit() as tx:
            rt.get_cell("c").with_tx(tx).set({"changed": True})
            rt.get_cell("x", space=OTHER_SPACE).with_tx(tx).set(1)

    return run


def _stale_basis(rt: Runtime) -> Operation:
    stale = Transaction(rt.store)
    rt.get_cell("c").with_tx(stale).set({"stale": True})
    rt.get_cell("c").key("list").push(3)  # lands before the stale commit
    return stale.commit


def _schema_violation(rt: Runtime) -> Operation:
    typed = rt.get_cell("c", schema={"type": "object", "properties": {"list": {"type": "array"}}})
    return lambda: typed.set({"list": "not a list"})


#: case -> (the error SPEC names, setup returning the rejected operation)
BAD_INPUT: dict[str, tuple[type[Exception], Callable[[Runtime], Operation]]] = {
    "nan": (ValueError, lambda rt: lambda: rt.get_cell("c").set(math.nan)),
    "set in a list": (ValueError, lambda rt: lambda: rt.get_cell("c").key("list").push({1})),
    "schema": (ValueError, _schema_violation),
    "bad event": (ValueError, lambda rt: lambda: rt.get_cell("stream").send(math.inf)),
    "push to object": (TypeError, lambda rt: lambda: rt.get_cell("c").push(1)),
    "update a list": (TypeError, lambda rt: lambda: rt.get_cell("c").key("list").update({"a": 1})),
    "remove from object": (TypeError, lambda rt: lambda: rt.get_cell("c").remove(1)),
    "key type": (TypeError, lambda rt: lambda: rt.get_cell("c").key(1.5).set(1)),  # type: ignore[arg-type]
    "two spaces": (WriteIsolationError, _two_spaces),
    "stale basis": (ConflictError, _stale_basis),
    "link cycle": (LinkCycleError, lambda rt: lambda: rt.get_cell("loop-a").set(5)),
    "readonly set": (CapabilityError, lambda rt: lambda: rt.get_cell("c").readonly().set(2)),
    "readonly push": (
        CapabilityError,
        lambda rt: lambda: rt.get_cell("c").readonly().key("list").push(2),
    ),
    "readonly send": (
        CapabilityError,
        lambda rt: lambda: rt.get_cell("stream").readonly().send({}),
    ),
    "writeonly get": (CapabilityError, lambda rt: lambda: rt.get_cell("c").writeonly().get()),
    "for_ after connection": (CauseError, lambda rt: lambda: rt.get_cell("c").for_("another")),
    "write unconnected": (CauseError, lambda rt: lambda: Cell.of(1).set(2)),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_raises_the_typed_error_and_leaves_the_store_as_it_was(
    rt: Runtime, case: str
) -> None:
    error, setup = BAD_INPUT[case]
    rt.get_cell("c").set({"list": [1, {"doc": 1}]})
    stream = make_stream(rt, "stream")
    events: list[Any] = []
    on_event(rt, stream, lambda tx, event: events.append(event))
    loop_a, loop_b = rt.get_cell("loop-a"), rt.get_cell("loop-b")
    write_raw(
        rt,
        (loop_a, loop_b.get_as_write_redirect_link()),
        (loop_b, loop_a.get_as_write_redirect_link()),
    )
    operation = setup(rt)
    before = store_state(rt)

    with pytest.raises(error):
        operation()
    rt.idle()
    assert store_state(rt) == before
    assert events == []  # no rejected event was delivered
    assert rt.errors == []


def test_the_same_operations_with_good_input_do_land(rt: Runtime) -> None:
    """The other half: every operation above changes the store when its input is fine."""
    c = rt.get_cell("c")
    c.set({"list": [1, {"doc": 1}]})
    stream = make_stream(rt, "stream")
    events: list[Any] = []
    on_event(rt, stream, lambda tx, event: events.append(event))
    steps: list[Operation] = [
        lambda: c.key("list").push(2),
        lambda: c.key("more").update({"a": 1}),
        lambda: c.key("list").remove(1),
        lambda: c.key("n").set(1.5),
        lambda: rt.get_cell("x", space=OTHER_SPACE).set(1),
        lambda: c.writeonly().key("w").set(True),
        lambda: (
            rt.get_cell("c", schema={"type": "object", "properties": {"list": {"type": "array"}}})
            .key("list")
            .set([])
        ),
    ]
    for step in steps:
        before = store_state(rt)
        step()
        assert store_state(rt) != before
    stream.send(1.5)
    named = Cell.of(1).for_("named")
    c.key("named").set(named)
    named.set(2)
    assert events == [1.5]
    assert c.get() == {"list": [], "more": {"a": 1}, "n": 1.5, "w": True, "named": 2}
    assert rt.get_cell("x", space=OTHER_SPACE).get() == 1
    assert addr(named)[1] == rt.get_cell("named").entity_id


# --------------------------------------------------------------------------- the direct path write

_WRITE_PATHS: list[tuple[str, tuple[str | int, ...]]] = [
    ("holder", ("to_rec", "a")), ("holder", ("to_rec", "b", "c")), ("holder", ("to_b", "d", 1)),
    ("holder", ("to_b", "d", 2, "e")), ("holder", ("redir", "l", 5)), ("holder", ("to_rec", "b")),
    ("holder", ("redir",)), ("holder", ("to_rec",)), ("holder", ("missing", "x")),
    ("rec", ("a",)), ("rec", ("l", 0)), ("rec", ("l", "1")), ("holder", ()),
    ("holder", ("events",)), ("rec", ("typed",)),
]
#: the landing schema of the record (the pattern layer's hook, set for the test)
_REC_SCHEMA = {"type": "object", "properties": {"typed": {"type": "integer"}, "a": {
    "type": ["integer", "boolean", "null"]}}}
_SCHEMAS: list[Any] = [None, {"type": "integer"}, False, {"type": ["string", "null"]}]
_VALUES: list[Any] = [0, 7, -3, "s", "\ud800", None, True, 10**5000]


def _path_world(rt: Runtime) -> tuple[dict[str, Cell[Any]], list[int]]:
    """A record, a holder linking into it three ways (and to a stream), and a reader of
    two of the record's fields."""
    rec, holder, out = (rt.get_cell(name) for name in ("rec", "holder", "out"))
    rec.set({"a": 1, "b": {"c": "x", "d": [1, 2, {"e": 3}]}, "l": [1, 2, 3]})
    write_raw(rt, (holder, {"to_rec": rec.get_as_link(), "to_b": rec.key("b").get_as_link(),
                            "redir": rec.get_as_link(), "n": 1}))
    events = make_stream(rt, "events")
    with rt.edit() as tx:  # ("redir" and "events" as write redirects)
        for field, target in (("redir", rec), ("events", events)):
            link = target.get_as_link()
            link["/"]["link@1"]["overwrite"] = "redirect"
            tx.write(rt.space, str(holder.entity_id), (field,), link)
    runs: list[int] = []

    def read(tx: Transaction) -> None:
        runs.append(1)
        value = (rec.with_tx(tx).key("b", "c").get(), rec.with_tx(tx).key("l").get())
        out.with_tx(tx).set(repr(value))

    rt.scheduler.subscribe(Action(read, name="reader", writes=[addr(out)]))
    rt.idle()
    return {"rec": rec, "holder": holder, "out": out}, runs


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(_WRITE_PATHS))),
                          st.sampled_from(range(len(_SCHEMAS))),
                          st.sampled_from(range(len(_VALUES)))), min_size=1, max_size=12),
       st.sampled_from(["memory", "sqlite"]))
def test_a_direct_path_write_does_what_the_general_write_does(
    steps: list[tuple[int, int, int]], store: str,
) -> None:
    """``Runtime.set_scalar_at`` against the general write (``Cell._set_in``), step by step:
    the same documents and versions, the same error (type and text) with nothing landed,
    and the same reader runs -- through plain links, a redirect, a link into a path, at a
    padded index, an index spelled as a string, over an object or a stream (the general
    write's), against a landing schema."""
    hook = cells_module._hooks.get("landing_schema")
    rec_ids: set[str] = set()

    def landing(rt: Runtime, space: str, entity_id: str) -> Any:
        return _REC_SCHEMA if entity_id in rec_ids else (
            hook(rt, space, entity_id) if hook is not None else None)

    cells_module._hooks["landing_schema"] = landing
    try:
        _compare_path_writes(steps, store, rec_ids)
    finally:
        if hook is None:
            cells_module._hooks.pop("landing_schema", None)
        else:
            cells_module._hooks["landing_schema"] = hook


def _compare_path_writes(steps: list[tuple[int, int, int]], store: str, rec_ids: set[str],
                         ) -> None:
    with tempfile.TemporaryDirectory() as folder:
        direct = runtime_on(store, Path(folder), "direct.db")
        general = runtime_on(store, Path(folder), "general.db")
        general.set_scalar_at = lambda *args: False  # type: ignore[method-assign]
        worlds = [_path_world(direct), _path_world(general)]
        rec_ids.update(str(cells["rec"].entity_id) for cells, _runs in worlds)
        for path_at, schema_at, value_at in steps:
            name, path = _WRITE_PATHS[path_at]
            outcomes = []
            for rt, (cells, runs) in zip((direct, general), worlds, strict=True):
                cell = cells[name].key(*path).as_schema(_SCHEMAS[schema_at]) if path else (
                    cells[name].as_schema(_SCHEMAS[schema_at]))
                before = len(runs)
                try:
                    cell.set(_VALUES[value_at])
                    error = None
                except Exception as exc:  # (compared: type and text)
                    error = (type(exc).__name__, str(exc))
                rt.idle()
                state = {k: (d.value, d.version) if d is not None else None
                         for k, d in store_state(rt, rt.space).items() if k != "rows"}
                outcomes.append((error, len(runs) - before, state))
            assert outcomes[0] == outcomes[1]
        direct.close()
        general.close()


def test_a_link_moved_during_a_direct_path_write_lands_where_it_points_now(
    rt: Runtime,
) -> None:
    """The direct write is checked against the documents its resolution crossed: a link
    moved between the walk and the landing (here, by the landing-schema check) makes it
    the general write's, which follows the link as it is now."""
    first, second, holder = (rt.get_cell(name) for name in ("first", "second", "holder"))
    first.set({"v": 1})
    second.set({"v": 2})
    write_raw(rt, (holder, {"to": first.get_as_link()}))
    other = Runtime(store=rt.store) if isinstance(rt.store, MemoryStore) else Runtime(
        store=f"sqlite:///{rt.store.path}")  # type: ignore[attr-defined]
    hook = cells_module._hooks.get("landing_schema")
    moved: list[bool] = []

    def move_the_link(_rt: Any, _space: str, entity_id: str) -> Any:
        if entity_id == first.entity_id and not moved:
            moved.append(True)
            write_raw(other, (other.cell_at(str(holder.entity_id)),
                              {"to": second.get_as_link()}))
        return None

    cells_module._hooks["landing_schema"] = move_the_link
    try:
        holder.key("to", "v").set(5)
    finally:
        if hook is None:
            cells_module._hooks.pop("landing_schema", None)
        else:
            cells_module._hooks["landing_schema"] = hook
    assert moved
    rt.idle()
    assert (first.get(), second.get()) == ({"v": 1}, {"v": 5})
    other.close()


def test_a_direct_path_write_tells_the_scheduler_the_path_it_wrote(rt: Runtime) -> None:
    """A map over the list re-keys the written index only (``Scheduler.written_paths``)."""
    items = rt.get_cell("items")
    items.set([1, 2, 3])
    before = doc(rt, items)
    items.key(1).set(20)
    after = doc(rt, items)
    assert before is not None and after is not None
    assert rt.scheduler.written_paths(rt.space, str(items.entity_id), before.value,
                                      after.value) == [(1,)]
    items.set(7)  # a whole document: no paths
    assert rt.scheduler.written_paths(rt.space, str(items.entity_id), after.value, 7) is None
