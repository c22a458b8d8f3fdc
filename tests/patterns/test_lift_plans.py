"""Compiled plans for pure lifts (``cellkernel/patterns/lift_plans.py``, issue 20).

A plan runs a pure lift over scalar inputs without a transaction.  These tests
check which functions count as pure (a wrong "yes" would let a lift reach the
runtime without its frame), and that planned runs behave exactly as general
ones: values against a plain-Python oracle, errors recorded on the node,
schema refusals, inputs that stop being scalars, results that are containers.
"""

from __future__ import annotations

import gc
import math
import os
import random
import weakref
from os import getpid
from statistics import mean
from typing import Annotated, Any

import pytest
from helpers.core import runtime_on
from pydantic import Field

from cellkernel import Runtime, lift, pattern
from cellkernel.data.links import is_link, parse_link
from cellkernel.patterns.lift_plans import follow_links, landable, pure_function

OFFSET = 3


def _plus_offset(x: int) -> int:
    return x + OFFSET  # a global


def _closure() -> Any:
    k = 2

    def times_k(x: int) -> int:
        return x * k

    return times_k


def _imports(x: int) -> int:
    import math

    return math.floor(x)


def _prints(x: int) -> int:
    print(x)
    return x


def _dunder(x: int) -> Any:
    return x.__class__


async def _async(x: int) -> int:
    return x


def _generator(x: int) -> Any:
    yield x


def _mutable_default(x: int, seen: list[int] = []) -> int:  # noqa: B006
    seen.append(x)
    return x


def _nested_global(xs: list[int]) -> list[int]:
    return [v + OFFSET for v in xs]


PAIRS = ((1, "a"), frozenset({2.5}))
TABLE = [1, 2]
COUNT = 0
RUNTIME_LIKE = object()


def _uses_math(x: int) -> int:
    return math.floor(x / 2) + math.isqrt(x * x)


def _uses_imported_functions(x: int) -> float:
    return mean([x, 1]) + math.fsum([x])


def _uses_os(x: int) -> int:
    return os.getpid() + x


def _uses_an_imported_builtin(x: int) -> int:
    return getpid() + x  # a C function of ``posix``, not of a safe module


def _calls_a_pure_helper(x: int) -> int:
    return _plus_offset(x) * 2


def _calls_a_printing_helper(x: int) -> int:
    return _prints(x) + 1


def _even(n: int) -> bool:
    return True if n == 0 else _odd(n - 1)


def _odd(n: int) -> bool:
    return False if n == 0 else _even(n - 1)


def _reads_a_tuple_constant(x: int) -> int:
    return x + len(PAIRS)


def _reads_a_mutable_global(x: int) -> int:
    return x + TABLE[0]


def _assigns_a_global(x: int) -> int:
    global COUNT
    COUNT += 1
    return x


def _reads_an_object(x: int) -> Any:
    return RUNTIME_LIKE


def _calls_a_lift(x: int) -> Any:
    return inc(x)


def _pure_builtins(x: int, y: int = 2) -> Any:
    return max(abs(x), y) + sum(i * i for i in range(3)) + len(str(x))


def _pure_lambda_inside(x: int) -> list[int]:
    return sorted([x, -x, 0], key=lambda v: abs(v))


@pytest.mark.parametrize(("fn", "pure"), [
    (lambda x: x + 1, True),
    (_pure_builtins, True),
    (_pure_lambda_inside, True),
    (_plus_offset, True),
    (_uses_math, True),
    (_uses_imported_functions, True),
    (_calls_a_pure_helper, True),
    (_even, True),
    (_reads_a_tuple_constant, True),
    (_nested_global, True),
    (_uses_os, False),
    (_uses_an_imported_builtin, False),
    (_calls_a_printing_helper, False),
    (_reads_a_mutable_global, False),
    (_assigns_a_global, False),
    (_reads_an_object, False),
    (_calls_a_lift, False),
    (_closure(), False),
    (_imports, False),
    (_prints, False),
    (_dunder, False),
    (_async, False),
    (_generator, False),
    (_mutable_default, False),
    (os.getpid, False),
    (len, False),
])
def test_only_functions_that_reach_nothing_but_their_arguments_are_pure(
    fn: Any, pure: bool
) -> None:
    assert pure_function(fn) is pure


def test_a_global_shadowing_a_builtin_is_not_pure() -> None:
    namespace: dict[str, Any] = {"len": lambda v: os.system("true")}
    exec("def f(x):\n    return len(x)\n", namespace)
    assert pure_function(namespace["f"]) is False


def test_a_rebound_global_is_judged_again() -> None:
    namespace: dict[str, Any] = {"K": 1}
    exec("def f(x):\n    return x + K\n", namespace)
    f = namespace["f"]
    assert pure_function(f) is True
    namespace["K"] = [1]  # a re-run notebook cell binds it to a list
    assert pure_function(f) is False
    namespace["K"] = 2
    assert pure_function(f) is True
    namespace["helper"] = lambda v: v
    exec("def g(x):\n    return helper(x)\n", namespace)
    assert pure_function(namespace["g"]) is True
    namespace["helper"] = print  # a helper rebound to one that is not pure
    assert pure_function(namespace["g"]) is False


def test_a_recursive_helper_is_not_kept_alive_by_its_verdict() -> None:
    namespace: dict[str, Any] = {}
    exec("def down(n):\n    return 0 if n <= 0 else down(n - 1)\n"
         "def f(x):\n    return down(x) + 1\n", namespace)
    assert pure_function(namespace["f"]) is True
    helper = weakref.ref(namespace["down"])
    namespace.clear()
    gc.collect()
    assert helper() is None  # (a verdict holding it strongly made a cycle through itself)


def test_landable_scalars() -> None:
    assert all(landable(v) for v in (0, -1, 1.5, "a", "é", True, None))
    refused: tuple[object, ...] = (float("nan"), float("inf"), "\ud800", [1], {}, 10**5000)
    assert not any(landable(v) for v in refused)


# --------------------------------------------------------------------------- behaviour


@lift
def inc(x: int) -> int:
    return x + 1


@lift
def halve(x: int) -> float:
    return 10 / x


@lift
def pair(x: int) -> list[int]:
    return [x, x * 2]


@lift
def non_negative(x: Annotated[int, Field(ge=0)]) -> int:
    return x


@pattern
def Mixed(x: int = 1) -> Any:
    a = inc(x)
    return {"x": x, "a": a, "h": halve(x), "p": pair(a), "n": non_negative(x)}


def _actions(rt: Runtime) -> dict[str, Any]:
    return {a.name: a for a in rt.scheduler.actions()}


def test_pure_lifts_get_plans_and_compute_what_python_does() -> None:
    rt = Runtime()
    result = rt.run(Mixed, {"x": 1}, cause="plans")
    planned = {name for name, a in _actions(rt).items() if a.plan is not None}
    assert planned == {"inc", "halve", "pair", "non_negative"}
    rng = random.Random(20)
    for x in [rng.randint(1, 50) for _ in range(30)]:
        result.key("x").set(x)
        assert result.get() == {"x": x, "a": x + 1, "h": 10 / x, "p": [x + 1, 2 * x + 2],
                                "n": x}
    assert not rt.errors


@lift
def floor_half(x: int) -> int:
    return math.floor(x / 2) + OFFSET


@lift
def via_helper(x: int) -> int:
    return _calls_a_pure_helper(x)


@lift
def via_os(x: int) -> int:
    return _uses_os(x) - os.getpid()


@pattern
def Globals(x: int = 1) -> Any:
    return {"x": x, "f": floor_half(x), "h": via_helper(x), "o": via_os(x)}


def test_lifts_reading_safe_globals_run_planned_and_compute_what_python_does() -> None:
    rt = Runtime()
    result = rt.run(Globals, {"x": 1}, cause="plans-globals")
    planned = {name for name, a in _actions(rt).items() if a.plan is not None}
    assert {"floor_half", "via_helper"} <= planned
    assert "via_os" not in planned  # ``os`` reaches anything: the general run
    for x in random.Random(21).sample(range(-500, 500), 25):
        result.key("x").set(x)
        assert result.get() == {"x": x, "f": math.floor(x / 2) + OFFSET,
                                "h": (x + OFFSET) * 2, "o": x}
    assert not rt.errors


def test_a_planned_lift_that_raises_is_recorded_on_its_node_and_recovers() -> None:
    rt = Runtime()
    result = rt.run(Mixed, {"x": 2}, cause="raises")
    result.key("x").set(0)
    assert [(e.name, type(e.error)) for e in rt.errors] == [("halve", ZeroDivisionError)]
    assert result.key("a").get() == 1  # the others ran
    result.key("x").set(4)
    assert result.key("h").get() == 2.5


def test_a_schema_refusal_goes_through_the_general_run_and_clears() -> None:
    rt = Runtime()
    result = rt.run(Mixed, {"x": 2}, cause="refused")
    result.key("x").set(-1)
    refused = [e for e in rt.errors if e.name == "non_negative"]
    assert refused and isinstance(refused[0].error, ValueError)
    assert result.key("n").get() == 2  # the refused run wrote nothing
    result.key("x").set(3)
    assert result.key("n").get() == 3


def test_inputs_that_stop_being_scalars_take_the_general_run() -> None:
    rt = Runtime()
    source = rt.get_cell("source")
    source.set(1)
    result = rt.run(Mixed, {"x": source}, cause="linked")
    assert result.key("a").get() == 2
    source.set(7)
    assert result.key("a").get() == 8
    assert result.key("p").get() == [8, 16]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_chain_of_planned_lifts_matches_python(tmp_path: Any, store: str) -> None:

    @pattern
    def Chain(x: int = 0) -> Any:
        v = x
        for _ in range(50):
            v = inc(v)
        return {"x": x, "out": v}

    rt = runtime_on(store, tmp_path, "p.db")
    result = rt.run(Chain, {"x": 0}, cause="chain")
    before = rt.scheduler.run_count
    for x in range(5):
        result.key("x").set(x * 10)
        assert result.key("out").get() == x * 10 + 50
    assert rt.scheduler.run_count - before == 4 * 50  # x=0 again changed nothing
    rt.close()


def test_an_integral_float_is_stored_as_the_general_write_stores_it() -> None:
    """68.0 lands as 68 (JSON numbers, as in JavaScript): a plan must not keep the float."""
    rt = Runtime()
    result = rt.run(Mixed, {"x": 2}, cause="floats")
    assert repr(result.key("h").get()) == "5"  # 10 / 2 == 5.0, normalised
    result.key("x").set(4)
    assert repr(result.key("h").get()) == "2.5"
    rt.close()


@lift
def shift(x: int, by: Annotated[int, Field(ge=0)]) -> int:
    return x + by


def test_constant_arguments_are_checked_once_and_a_refused_one_is_always_recorded() -> None:
    """A plan places constants in its template and checks them when it is made.

    A constant the schema passes costs nothing per run; one it refuses makes
    every run the general one, which keeps the refusal recorded on the node.
    """
    @pattern
    def Shifts(x: int = 0) -> Any:
        return {"x": x, "ok": shift(x, 5), "bad": shift(x, -5)}

    rt = Runtime()
    result = rt.run(Shifts, {"x": 1}, cause="constants")
    plans = [a.plan for a in rt.scheduler.actions("shift")]
    assert len(plans) == 2 and all(p is not None for p in plans)
    for x in (2, 9, 4):
        result.key("x").set(x)
        assert result.key("ok").get() == x + 5
        assert result.key("bad").get() is None  # never written
        refused = [e for e in rt.errors if e.name == "shift"]
        assert len(refused) == 1 and isinstance(refused[0].error, ValueError)
        assert "by" in str(refused[0].error)


# -- links to record documents (a map over records: each element its own document) ------


@lift
def double_v(item: dict[str, Any]) -> int:
    return int(item["v"]) * 2


@lift
def itself(item: dict[str, Any]) -> Any:
    return item  # the general run writes the DocDict back as a link to its document


@lift
def wrapped(item: dict[str, Any]) -> Any:
    return {"inner": [item]}


@lift
def names_cell(item: dict[str, Any]) -> bool:
    return item.cell is not None  # type: ignore[attr-defined]


@lift
def total(item: dict[str, Any]) -> int:
    return sum(item["xs"]) if isinstance(item.get("xs"), list) else -1


@pattern
def OneRecord(item: dict[str, Any]) -> Any:
    return {"item": item, "d": double_v(item), "same": itself(item), "w": wrapped(item),
            "has_cell": names_cell(item), "t": total(item)}


@pattern
def Records(items: list[dict[str, Any]]) -> Any:
    return {"items": items, "out": items.map(lambda it: double_v(it))}  # type: ignore[attr-defined]


def _general_runs(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the actions that take the general (transaction) run from now on."""
    seen: list[str] = []
    general = rt.scheduler._run_general

    def spy(action: Any) -> None:
        seen.append(action.name)
        general(action)

    monkeypatch.setattr(rt.scheduler, "_run_general", spy)
    return seen


def _raw(rt: Runtime, name: str) -> Any:
    """The stored value (links not followed) of the output of the lift named ``name``."""
    action = rt.scheduler.actions(name)[0]
    space, out_id, _path = next(iter(action.writes))
    return rt.read_tx().read(space, out_id, ())


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_lift_over_record_documents_runs_planned_and_matches_python(
    tmp_path: Any, store: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A map child's element is a link to its record: the plan follows it (after the
    first general run subscribed the record), and every field write re-runs it."""
    rt = runtime_on(store, tmp_path, "records.db")
    items = rt.get_cell("record-list")
    items.set([{"v": i} for i in range(20)])
    result = rt.run(Records, {"items": items}, cause="records")
    assert result.key("out").get() == [2 * i for i in range(20)]
    general = _general_runs(rt, monkeypatch)
    rng = random.Random(7)
    oracle = list(range(20))
    for _ in range(40):
        k, v = rng.randrange(20), rng.randint(-50, 50)
        items.key(k).key("v").set(v)
        oracle[k] = v
        assert result.key("out").get() == [2 * x for x in oracle]
    assert "double_v" not in general  # every per-record run took the plan
    assert not rt.errors
    rt.close()


def test_a_followed_link_is_subscribed_and_a_changed_route_takes_the_general_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-pointing the record (here: its document becomes a link to another) is a
    route the plan has not subscribed to: the general run follows and subscribes it."""
    rt = Runtime()
    a, b = rt.get_cell("rec-a"), rt.get_cell("rec-b")
    a.set({"v": 1})
    b.set({"v": 10})
    result = rt.run(OneRecord, {"item": a}, cause="one")
    general = _general_runs(rt, monkeypatch)
    a.key("v").set(2)
    assert result.key("d").get() == 4
    assert "double_v" not in general
    result.key("item").set(b)  # writes through: a's document becomes a link to b
    assert result.key("d").get() == 20
    b.key("v").set(11)
    assert result.key("d").get() == 22  # b is subscribed now
    assert "double_v" in general
    assert not rt.errors


def test_a_result_holding_the_record_is_written_as_the_general_run_writes_it() -> None:
    """Returning the record (or a container holding it) writes a link to its document,
    as with the ``DocDict`` of a general run; the plan's plain copy must not be stored."""
    rt = Runtime()
    a = rt.get_cell("rec")
    a.set({"v": 1})
    result = rt.run(OneRecord, {"item": a}, cause="holds")
    for v in (2, 3):
        a.key("v").set(v)
        same, inner = _raw(rt, "itself"), _raw(rt, "wrapped")
        assert is_link(same) and parse_link(same, rt.space).id == a.entity_id
        assert is_link(inner["inner"][0])
        assert result.key("same").get() == {"v": v}
        assert result.key("w").get() == {"inner": [{"v": v}]}
    assert not rt.errors


def test_only_a_function_that_never_names_cell_is_handed_a_plain_dict() -> None:
    assert follow_links(double_v.fn) and not follow_links(names_cell.fn)
    rt = Runtime()
    a = rt.get_cell("rec")
    a.set({"v": 1, "xs": [1, 2]})
    result = rt.run(OneRecord, {"item": a}, cause="cell")
    plans: dict[str, Any] = {x.name: x.plan for x in rt.scheduler.actions()}  # plan objects
    assert plans["names_cell"] is not None and not plans["names_cell"].records
    assert plans["double_v"].records
    a.key("v").set(5)
    assert result.key("has_cell").get() is True  # a DocDict, from the general run
    a.key("xs").set([1, 2, 3])  # nested values: the general read materialises them
    assert result.key("t").get() == 6 and result.key("d").get() == 10
    assert not rt.errors


@lift
def triple(x: int) -> int:
    return 3 * x


N_ITEMS = 20


@pattern
def PerElement(xs: list[int], nest: dict[str, Any]) -> Any:
    """One lift per element of an inline list, and one three levels down."""
    return {"xs": xs, "nest": nest, "outs": [triple(xs[i]) for i in range(N_ITEMS)],
            "deep": triple(nest["a"]["b"][1])}


@pattern
def PerCell(srcs: list[Any]) -> Any:
    """One lift per cell, each reached through the argument's list of links."""
    return {"srcs": srcs, "outs": [triple(srcs[i]) for i in range(N_ITEMS)]}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_lifts_over_deeper_paths_and_links_to_scalars_run_planned(
    tmp_path: Any, store: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``xs[i]`` (a path two deep) and ``srcs[i]`` (a link to a cell holding a scalar)
    take the plan after the first run, and match a Python oracle over random writes."""
    rt = runtime_on(store, tmp_path, "deep.db")
    xs = list(range(N_ITEMS))
    inline = rt.run(PerElement, {"xs": xs, "nest": {"a": {"b": [0, 5]}}}, cause="deep")
    cells = [rt.get_cell(f"scalar-{i}") for i in range(N_ITEMS)]
    for i, c in enumerate(cells):
        c.set(i)
    linked = rt.run(PerCell, {"srcs": cells}, cause="linked")
    assert inline.key("deep").get() == 15
    general = _general_runs(rt, monkeypatch)
    rng = random.Random(3)
    values = list(range(N_ITEMS))
    for _ in range(30):
        k, v = rng.randrange(N_ITEMS), rng.randint(-9, 9)
        inline.key("xs", k).set(v)
        xs[k] = v
        cells[k].set(v + 1)
        values[k] = v + 1
        assert inline.key("outs").get() == [3 * x for x in xs]
        assert linked.key("outs").get() == [3 * x for x in values]
    inline.key("nest", "a", "b", 1).set(7)
    assert inline.key("deep").get() == 21
    assert "triple" not in general  # every run after the first took the plan
    assert not rt.errors
    rt.close()


def test_a_link_on_a_deeper_path_or_a_repointed_cell_takes_the_general_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A link met on the way down, or a cell that now links to another one: the
    general run reads it (and subscribes what it found); values stay right."""
    rt = Runtime()
    other = rt.get_cell("other")
    other.set({"b": [0, 4]})
    cells = [rt.get_cell(f"c-{i}") for i in range(N_ITEMS)]
    for i, c in enumerate(cells):
        c.set(i)
    spare = rt.get_cell("spare")
    spare.set(100)
    inline = rt.run(PerElement, {"xs": list(range(N_ITEMS)), "nest": {"a": {"b": [0, 1]}}},
                    cause="deep-link")
    linked = rt.run(PerCell, {"srcs": cells}, cause="repoint")
    general = _general_runs(rt, monkeypatch)
    inline.key("nest", "a").set(other)  # now a link on the way to a.b[1]
    assert inline.key("deep").get() == 12
    other.key("b", 1).set(6)
    assert inline.key("deep").get() == 18  # subscribed through the link
    linked.key("srcs", 3).set(spare)  # writes through: cell 3 now links to another cell
    assert linked.key("outs", 3).get() == 300
    spare.set(101)
    assert linked.key("outs", 3).get() == 303  # subscribed through the new link
    assert "triple" in general
    assert not rt.errors
