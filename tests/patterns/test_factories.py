"""Node factories as values, currying, resolution, instantiate and wish (SPEC §8)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest

from cellkernel import (
    SELF,
    Cell,
    ConflictError,
    Pattern,
    Runtime,
    UnknownImplementationError,
    handler,
    instantiate,
    lift,
    materialize,
    pattern,
    wish,
)
from cellkernel.errors import InstanceStoppedError
from cellkernel.patterns import fingerprints as impls
from cellkernel.patterns import registry
from cellkernel.patterns.builder import HandlerFactory, LiftFactory
from cellkernel.patterns.builtins import _fmt
from cellkernel.patterns.sigils import NodeFactorySigil, validate_sigil

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import factory_mod as m  # noqa: E402  (on sys.path just above)

HEX64 = "0123456789abcdef"


def body(factory: Any) -> dict[str, Any]:
    sigil = factory.sigil() if isinstance(factory, Pattern) else factory.to_json()
    assert list(sigil) == ["/"] and list(sigil["/"]) == ["nodeFactory@1"]
    return sigil["/"]["nodeFactory@1"]  # type: ignore[no-any-return]


def plain(value: Any) -> Any:
    """A result value with streams and factories replaced by markers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Cell):
        return "<stream>"
    return value


# --------------------------------------------------------------------------- the sigil


def test_lift_sigil_shape() -> None:
    b = body(m.double)
    assert b["kind"] == "lift"
    module = b["module"]
    assert module["type"] == "python"
    assert module["ref"] == "factory_mod:double"
    assert len(module["hash"]) == 64 and set(module["hash"]) <= set(HEX64)
    assert "return x * 2" in module["source"]
    assert b["argumentSchema"] == {"type": "object", "properties": {"x": {"type": "integer"}}}
    assert b["resultSchema"] == {"type": "integer"}
    assert b["curried"] == []
    NodeFactorySigil.model_validate(m.double.to_json())


def test_handler_sigil_shape() -> None:
    b = body(m.increment)
    assert b["kind"] == "handler"
    assert b["module"]["ref"] == "factory_mod:increment"
    assert b["stateSchema"]["properties"]["count"]["asCell"] is True
    assert "eventSchema" in b and b["curried"] == []


def test_pattern_to_json_is_the_graph_and_sigil_is_the_factory() -> None:
    graph = m.Counter.to_json()
    assert {"argumentSchema", "resultSchema", "initial", "result", "nodes"} <= set(graph)
    b = body(m.Counter)
    assert b["kind"] == "pattern"
    assert b["module"] == {"type": "pattern", "ref": "factory_mod:Counter", "hash": m.Counter.hash}
    assert b["graph"] == graph  # carried inline: instantiable in any process
    assert b["argumentSchema"] == m.Counter.argument_schema
    assert m.Counter.__ck_to_json__() == m.Counter.sigil()


def test_builtin_factory_sigil_and_materialize() -> None:
    b = body(_fmt)
    assert b["module"] == {"type": "builtin", "ref": "fmt"}
    made = materialize(_fmt.to_json())
    assert made == _fmt
    assert made("{a}-{b}", a=1, b="x") == "1-x"


def test_sigil_json_survives_a_json_text_round_trip() -> None:
    for factory in (m.double, m.increment, m.add.curry(1)):
        text = json.dumps(factory.to_json())
        assert materialize(json.loads(text)) == factory
    assert materialize(json.loads(json.dumps(m.Counter.sigil()))) == m.Counter


# --------------------------------------------------------------------------- materialize


def test_materialize_gives_a_callable_equal_factory() -> None:
    made = materialize(m.double.to_json())
    assert isinstance(made, LiftFactory)
    assert made(21) == 42
    assert made == m.double and hash(made) == hash(m.double)
    assert made.to_json() == m.double.to_json()
    assert len({m.double, made, m.triple}) == 2
    assert made != m.triple
    handler_made = materialize(m.increment.to_json())
    assert isinstance(handler_made, HandlerFactory) and handler_made == m.increment
    assert materialize(m.Counter.sigil()) is m.Counter
    assert materialize(m.Counter.to_json()) == m.Counter  # the graph form works too


def test_cell_set_factory_stores_the_sigil_and_get_materializes(rt: Runtime) -> None:
    cell = rt.get_cell("factories")
    cell.set({"lift": m.double, "handler": m.increment, "pattern": m.Counter,
              "curried": m.add.curry(1).curry(2)})
    raw = cell.get_raw()
    assert raw["lift"] == m.double.to_json()
    assert raw["pattern"] == m.Counter.sigil()
    assert raw["curried"]["/"]["nodeFactory@1"]["curried"] == [
        {"index": 0, "value": 1}, {"index": 1, "value": 2}]
    got = cell.get()
    assert got["lift"] == m.double and got["lift"](5) == 10
    assert got["handler"] == m.increment
    assert got["pattern"] == m.Counter
    assert got["curried"](3) == 6
    assert cell.key("lift").get() == m.double


def test_materialized_factories_behave_like_the_originals_in_a_pattern(rt: Runtime) -> None:
    dbl = materialize(m.double.to_json())
    inc = materialize(m.increment.to_json())

    @pattern
    def Again(count: int = 0):  # type: ignore[no-untyped-def]
        return {"count": count, "doubled": dbl(count), "increment": inc(count=count)}

    r = rt.run(Again, {"count": 2}, cause="again")
    r.increment.send({"amount": 3})
    assert plain(r.get()) == {"count": 5, "doubled": 10, "increment": "<stream>"}
    # the materialized pattern runs like the original
    c = rt.run(materialize(m.Counter.sigil()), {"count": 4}, cause="counter-m")
    c.increment.send({})
    assert (c.count.get(), c.doubled.get()) == (5, 10)
    assert rt.errors == []


def test_a_factory_read_as_a_lift_input_is_callable(rt: Runtime) -> None:
    @lift
    def apply(f: Any, x: int) -> int:
        return f(x)  # type: ignore[no-any-return]

    @pattern
    def Apply(f: Any = None, x: int = 0):  # type: ignore[no-untyped-def]
        return {"y": apply(f, x)}

    fcell = rt.get_cell("f")
    fcell.set(m.double)
    r = rt.run(Apply, {"f": fcell, "x": 4}, cause="apply")
    assert r.y.get() == 8
    fcell.set(m.triple)  # a new factory value: the lift recomputes with it
    assert r.y.get() == 12
    fcell.set(m.scaled.curry(5, "scale"))
    assert r.y.get() == 20
    assert rt.errors == []


MALFORMED: list[tuple[str, Any]] = [
    ("not a sigil", {"nodeFactory@1": {}}),
    ("empty body", {"/": {"nodeFactory@1": {}}}),
    ("unknown module type", {"/": {"nodeFactory@1": {"module": {"type": "rust", "ref": "x"}}}}),
    ("hash not hex", {"/": {"nodeFactory@1": {"module": {
        "type": "python", "ref": "m:f", "hash": "zz"}, "kind": "lift"}}}),
    ("ref without qualname", {"/": {"nodeFactory@1": {"module": {
        "type": "python", "ref": "justamodule", "hash": "a" * 64}, "kind": "lift"}}}),
    ("negative index", {"/": {"nodeFactory@1": {"module": {
        "type": "python", "ref": "m:f", "hash": "a" * 64}, "kind": "lift",
        "curried": [{"index": -1, "value": 1}]}}}),
    ("repeated index", {"/": {"nodeFactory@1": {"module": {
        "type": "python", "ref": "m:f", "hash": "a" * 64}, "kind": "lift",
        "curried": [{"index": 0, "value": 1}, {"index": 0, "value": 2}]}}}),
    ("kind mismatch", {"/": {"nodeFactory@1": {"module": {
        "type": "pattern", "ref": "m:P", "hash": "a" * 64}, "kind": "lift"}}}),
    ("curried not a list", {"/": {"nodeFactory@1": {"module": {
        "type": "builtin", "ref": "fmt"}, "curried": {"index": 0}}}}),
    ("extra sigil key", {"/": {"nodeFactory@1": {"module": {"type": "builtin", "ref": "fmt"}},
                               "other": 1}}),
    ("graph without nodes", {"/": {"nodeFactory@1": {"module": {
        "type": "pattern", "ref": "m:P", "hash": "a" * 64}, "graph": {"result": {}}}}}),
]


@pytest.mark.parametrize(("case", "value"), MALFORMED, ids=[c for c, _ in MALFORMED])
def test_malformed_sigils_raise_validation_errors(case: str, value: Any) -> None:
    with pytest.raises(ValueError):
        materialize(value)
    if "/" in value:
        with pytest.raises(pydantic.ValidationError):
            validate_sigil(value)


def test_a_tampered_pattern_graph_is_rejected() -> None:
    sigil = json.loads(json.dumps(m.Counter.sigil()))
    sigil["/"]["nodeFactory@1"]["graph"]["initial"] = {"evil": 1}
    sigil["/"]["nodeFactory@1"]["module"]["hash"] = "b" * 64
    with pytest.raises(ValueError, match="does not match its hash"):
        materialize(sigil)


def test_a_malformed_sigil_in_a_cell_raises_on_get_and_fails_only_its_node(rt: Runtime) -> None:
    bad = {"/": {"nodeFactory@1": {"module": {"type": "python", "ref": "m:f", "hash": "zz"}}}}
    cell = rt.get_cell("bad-factory")
    cell.set(bad)
    with pytest.raises(pydantic.ValidationError):
        cell.get()

    @lift
    def call_it(f: Any) -> Any:
        return f(1)

    @pattern
    def UsesBad(f: Any = None, x: int = 1):  # type: ignore[no-untyped-def]
        return {"out": call_it(f), "doubled": m.double(x)}

    r = rt.run(UsesBad, {"f": cell}, cause="uses-bad")
    assert r.doubled.get() == 2  # the runtime goes on
    assert any(isinstance(e.error, ValueError) for e in rt.errors)


# --------------------------------------------------------------------------- currying


def test_curry_composes_with_default_indices() -> None:
    one = m.add.curry(1)
    two = one.curry(2)
    assert body(one)["curried"] == [{"index": 0, "value": 1}]
    assert body(two)["curried"] == [{"index": 0, "value": 1}, {"index": 1, "value": 2}]
    assert two(3) == 6 and two() == 3 and one(2, 5) == 8
    assert m.add.curry(10, 2)(1, 2) == 13  # explicit index: c
    b_then_c = m.add.curry(7, 1).curry(1)  # b=7, then one past it: c=1
    assert body(b_then_c)["curried"] == [{"index": 1, "value": 7}, {"index": 2, "value": 1}]
    assert b_then_c(100) == 108
    assert m.add.curry(7, "b")(1) == 8
    assert m.add.curried == () and one.curried == ((0, 1),)  # currying copies


def test_curry_keyword_only_parameters_and_errors() -> None:
    by_index = m.scaled.curry(3, 1)  # index 1 is the keyword-only `scale`
    assert by_index(5) == 15
    assert m.scaled.curry(4, "scale")(x=2) == 8
    with pytest.raises(ValueError, match="already curried"):
        m.add.curry(1).curry(2, 0)
    with pytest.raises(ValueError, match="no argument 3"):
        m.add.curry(1, 3)
    with pytest.raises(ValueError, match="no parameter"):
        m.add.curry(1, "z")
    with pytest.raises(TypeError, match="curried"):
        m.add.curry(1)(a=2, b=3)
    with pytest.raises(TypeError):
        m.add.curry(1, 2)(1, 2, 3)


def test_curried_lifts_in_a_pattern(rt: Runtime) -> None:
    add_ten = m.add.curry(10)  # a = 10

    @pattern
    def Curried(x: int = 0, y: int = 0):  # type: ignore[no-untyped-def]
        return {
            "pos": add_ten(x),  # 10 + x
            "kw": m.add.curry(x, "c")(1, 2),  # 1 + 2 + x (a curried ref)
            "sc": m.scaled.curry(y, "scale")(x),
        }

    r = rt.run(Curried, {"x": 2, "y": 3}, cause="curried-lifts")
    assert r.get() == {"pos": 12, "kw": 5, "sc": 6}
    r.key("pos").get()
    rt.runner.instance_of(r)
    assert rt.errors == []


def test_curried_handlers_event_and_state(rt: Runtime) -> None:
    add_five = m.increment.curry({"amount": 5})  # index 0: the event
    by_ten = m.bump.curry(10, 2)  # index 2: `amount` (state)
    assert body(add_five)["curried"] == [{"index": 0, "value": {"amount": 5}}]

    @pattern
    def Buttons(count: int = 0):  # type: ignore[no-untyped-def]
        return {"count": count, "add5": add_five(count=count), "add10": by_ten(count=count)}

    r = rt.run(Buttons, {"count": 1}, cause="buttons")
    r.add5.send({"amount": 1000})  # whatever is sent, the curried event is used
    assert r.count.get() == 6
    r.add10.send(None)
    assert r.count.get() == 16
    with pytest.raises(ValueError, match="index 0 is the event"):
        m.increment.curry(1, 5)
    assert rt.errors == []


def test_curried_patterns_merge_into_the_argument(rt: Runtime) -> None:
    a5 = m.Sum.curry(5)  # index 0: the first parameter, `a`
    a5c7 = a5.curry(7, 2)  # index 2: `c`
    assert body(a5c7)["curried"] == [{"index": 0, "value": 5}, {"index": 2, "value": 7}]
    r = rt.run(a5c7, {"b": 1}, cause="sum-curried")
    assert r.get() == {"a": 5, "b": 1, "c": 7, "total": 13}
    with pytest.raises(TypeError, match="curried"):
        rt.run(a5, {"a": 1}, cause="sum-conflict")
    assert a5 != m.Sum and a5 == m.Sum.curry(5)

    @pattern
    def Outer(b: int = 0):  # type: ignore[no-untyped-def]
        return {"inner": a5(b=b)}

    o = rt.run(Outer, {"b": 2}, cause="outer-curried")
    assert o.inner.total.get() == 7


def test_curried_factories_survive_storage(rt: Runtime) -> None:
    cell = rt.get_cell("curried-store")
    cell.set([m.add.curry(1).curry(2), m.increment.curry({"amount": 4}), m.Sum.curry(9, "b")])
    lift_back, handler_back, pattern_back = cell.get()
    assert lift_back == m.add.curry(1).curry(2) and lift_back(3) == 6
    assert handler_back == m.increment.curry({"amount": 4})
    assert pattern_back == m.Sum.curry(9, "b")
    r = rt.run(pattern_back, {"a": 1}, cause="sum-from-store")
    assert r.total.get() == 10

    @pattern
    def Clicks(count: int = 0, button: Any = None):  # type: ignore[no-untyped-def]
        return {"count": count, "go": handler_back(count=count)}

    c = rt.run(Clicks, {"count": 0}, cause="clicks")
    c.go.send({})
    assert c.count.get() == 4


# --------------------------------------------------------------------------- resolution and trust


def _evil_sigil(tmp_path: Path, marker: Path, ref: str) -> dict[str, Any]:
    """A lift sigil whose source would write ``marker``; its module cannot be imported."""
    source = textwrap.dedent(f"""\
        def evil(x):
            with open({str(marker)!r}, "w") as f:
                f.write("ran")
            return x
        """)
    path = tmp_path / "evil_src.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ck_evil_src_" + tmp_path.name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines evil(); nothing calls it
    digest = impls.fingerprint_function(module.evil).digest
    assert registry.registered_function(digest) is None
    return {"/": {"nodeFactory@1": {
        "module": {"type": "python", "ref": ref, "hash": digest, "source": source},
        "kind": "lift", "argumentSchema": {}, "resultSchema": None, "curried": []}}}


def test_untrusted_source_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    sigil = _evil_sigil(tmp_path, marker, "ck_nowhere_module:evil")
    with pytest.raises(UnknownImplementationError, match="ck_nowhere_module") as info:
        materialize(sigil)
    assert "trust_source" in str(info.value)
    rt = Runtime()
    try:
        with pytest.raises(UnknownImplementationError):
            materialize(sigil, rt)
        holder = rt.get_cell("evil")
        holder.set(sigil)
        with pytest.raises(UnknownImplementationError):
            holder.get()

        @lift
        def call_it(f: Any) -> Any:
            return f(1)

        @pattern
        def Victim(f: Any = None):  # type: ignore[no-untyped-def]
            return {"out": call_it(f)}

        rt.run(Victim, {"f": holder}, cause="victim")
        assert any(isinstance(e.error, UnknownImplementationError) for e in rt.errors)
    finally:
        rt.close()
    assert not marker.exists()


def test_untrusted_source_inside_a_pattern_sigil_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    evil = _evil_sigil(tmp_path, marker, "ck_nowhere_module:evil")
    module = evil["/"]["nodeFactory@1"]["module"]
    graph = json.loads(json.dumps(m.Counter.to_json()))
    lift_node = next(n for n in graph["nodes"] if n["helper"] == "lift")
    lift_node["module"] = module
    made = Pattern(None, graph, "EvilCounter")
    sigil = json.loads(json.dumps(made.sigil()))
    registry.forget_pattern(made.hash)  # as if it came from elsewhere
    with pytest.raises(UnknownImplementationError):
        materialize(sigil)
    rt = Runtime()
    try:
        cell = rt.get_cell("evil-pattern")
        cell.set(sigil)
        h = rt.run(m.Host, {"child": cell, "start": 1}, cause="evil-host")
        assert h.start.get() == 1
        assert any(isinstance(e.error, UnknownImplementationError) for e in rt.errors)
    finally:
        rt.close()
    assert not marker.exists()


def test_trusted_source_compiles_and_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    sigil = _evil_sigil(tmp_path, marker, "ck_nowhere_module:evil")
    rt = Runtime(trust_source=True)
    try:
        made = materialize(sigil, rt)
        # same module descriptor as carried
        assert body(made)["module"] == sigil["/"]["nodeFactory@1"]["module"]
        assert made(7) == 7
    finally:
        rt.close()
    assert marker.read_text() == "ran"


def test_a_hash_mismatch_on_import_is_unknown(tmp_path: Path) -> None:
    sigil = json.loads(json.dumps(m.double.to_json()))
    sigil["/"]["nodeFactory@1"]["module"]["hash"] = "c" * 64
    del sigil["/"]["nodeFactory@1"]["module"]["source"]
    with pytest.raises(UnknownImplementationError, match="factory_mod"):
        materialize(sigil)
    pattern_sigil = {"/": {"nodeFactory@1": {"module": {
        "type": "pattern", "ref": "factory_mod:Counter", "hash": "d" * 64}}}}
    with pytest.raises(UnknownImplementationError, match="factory_mod"):
        materialize(pattern_sigil)


WORKER_ENV_PATHS = [str(FIXTURES), str(REPO)]


def _run_worker(code: str, *args: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(WORKER_ENV_PATHS)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_new_process_resolves_a_trusted_module_by_hash(tmp_path: Path) -> None:
    sigils = {"lift": m.add.curry(2).to_json(), "pattern": m.Counter.sigil()}
    out = _run_worker("""
        import json, sys
        from cellkernel import materialize, Runtime
        sigils = json.loads(sys.argv[1])
        before = "factory_mod" in sys.modules
        f = materialize(sigils["lift"], trusted_modules=["factory_mod"])
        p = materialize(sigils["pattern"], trusted_modules=["factory_mod"])
        rt = Runtime()
        r = rt.run(p, {"count": 4}, cause="c")
        r.increment.send({"amount": 1})
        print(json.dumps({"before": before, "call": f(3, 4), "doubled": r.doubled.get(),
                          "same": p.to_json() == sigils["pattern"]["/"]["nodeFactory@1"]["graph"],
                          "imported": type(p).__module__ + ":" + str(p.fn is not None)}))
        """, json.dumps(sigils))
    assert out == {"before": False, "call": 9, "doubled": 10, "same": True,
                   "imported": "cellkernel.patterns.builder:True"}


# --------------------------------------------------------------------------- instantiate in bodies


def test_instantiate_in_a_body_accepts_pattern_factory_ref_and_cell(rt: Runtime) -> None:
    # a Pattern literal
    @pattern
    def Literal(start: int = 0):  # type: ignore[no-untyped-def]
        return {"child": instantiate(m.Counter, {"count": start})}

    a = rt.run(Literal, {"start": 2}, cause="lit")
    assert a.child.doubled.get() == 4
    # a materialized factory literal
    made = materialize(m.Counter.sigil())

    @pattern
    def Made(start: int = 0):  # type: ignore[no-untyped-def]
        return {"child": instantiate(made, {"count": start})}

    b = rt.run(Made, {"start": 3}, cause="made")
    assert b.child.doubled.get() == 6
    # a ref holding one (Host's argument), given as a factory and as a cell
    c = rt.run(m.Host, {"child": m.Counter, "start": 4}, cause="host-lit")
    assert c.child.doubled.get() == 8
    holder = rt.get_cell("holder")
    holder.set(m.Tripler)
    d = rt.run(m.Host, {"child": holder, "start": 5}, cause="host-cell")
    assert d.child.tripled.get() == 15
    with pytest.raises(TypeError, match="pattern factory"):
        @pattern
        def Wrong():  # type: ignore[no-untyped-def]
            return {"x": instantiate(m.double)}
    assert list(inspect.signature(instantiate).parameters) == ["pattern", "inputs"]
    assert rt.errors == []


def test_instantiate_sees_inputs_and_is_reinstantiated_when_the_pattern_changes(
    rt: Runtime,
) -> None:
    holder = rt.get_cell("template")
    holder.set(m.Counter)
    h = rt.run(m.Host, {"child": holder, "start": 3}, cause="host")
    first = h.child.resolve_as_cell()
    assert plain(h.child.get()) == {"count": 3, "doubled": 6, "increment": "<stream>"}
    h.start.set(10)  # input change: the child sees it
    assert h.child.doubled.get() == 20
    h.child.increment.send({"amount": 1})  # the child writes through to the parent's input
    assert h.start.get() == 11
    runner = rt.runner
    assert runner.instance_of(first) is not None
    holder.set(m.Tripler)  # a new pattern value: a new child, the old one stopped
    assert plain(h.child.get()) == {"count": 11, "tripled": 33, "increment": "<stream>"}
    assert runner.instance_of(first) is None
    second = h.child.resolve_as_cell()
    assert second.entity_id != first.entity_id
    holder.set(m.Sum.curry(1))  # a curried pattern is another value
    assert h.child.total.get() == 1
    assert rt.errors == []


def test_instantiated_children_stop_with_their_parent(rt: Runtime) -> None:
    h = rt.run(m.Host, {"child": m.Counter, "start": 1}, cause="host-stop")
    child = h.child.resolve_as_cell()
    stream = h.child.increment.resolve_as_cell()
    assert rt.runner.instance_of(child) is not None
    rt.stop(h)
    assert rt.runner.instance_of(child) is None
    with pytest.raises(InstanceStoppedError):
        stream.send({})


def test_the_child_runs_in_the_parents_space(tmp_path: Path) -> None:
    rt = Runtime(space="did:test:elsewhere")
    try:
        h = rt.run(m.Host, {"child": m.Counter, "start": 1}, cause="host-space")
        child = h.child.resolve_as_cell()
        assert child.space == "did:test:elsewhere" == h.space
        s = rt.run(m.Spawner, {"template": m.Counter}, cause="spawner-space")
        s.spawn.send({"count": 2})
        assert s.items[0].resolve_as_cell().space == "did:test:elsewhere"
    finally:
        rt.close()


# ---------------------------------------------------------------------- instantiate in handlers


def test_handlers_create_live_children(rt: Runtime) -> None:
    s = rt.run(m.Spawner, {"template": m.Counter}, cause="spawner")
    s.spawn.send({"count": 2})
    s.spawn_by_call.send({"count": 5})  # calling the factory in a handler
    items = s.items
    assert [plain(v) for v in items.get()] == [
        {"count": 2, "doubled": 4, "increment": "<stream>"},
        {"count": 5, "doubled": 10, "increment": "<stream>"},
    ]
    items[0].increment.send({"amount": 3})  # the child's handler fires, its lift recomputes
    assert (items[0].count.get(), items[0].doubled.get()) == (5, 10)
    assert items[1].doubled.get() == 10
    ids = [items[i].resolve_as_cell().entity_id for i in range(2)]
    assert len(set(ids)) == 2
    rt.stop(s)
    assert all(rt.runner.instance_of(rt.cell_at(i)) is None for i in ids)  # type: ignore[arg-type]
    assert rt.errors == []


def test_a_failing_handler_leaves_no_half_made_child(rt: Runtime) -> None:
    s = rt.run(m.Spawner, {"template": m.Counter}, cause="spawner-fail")
    before_list = rt.runner.listed_instances()  # the space's instance log
    assert before_list  # (the spawner itself is listed)
    before_running = set(rt.runner.instances)
    before_actions = set(rt.scheduler.actions())
    s.spawn_then_fail.send({})
    assert s.items.get() == []
    assert rt.runner.listed_instances() == before_list
    assert set(rt.runner.instances) == before_running
    assert set(rt.scheduler.actions()) <= before_actions
    assert [type(e.error) for e in rt.errors] == [RuntimeError]
    s.spawn.send({"count": 1})  # later events still run
    assert len(s.items.get()) == 1


def test_a_handler_whose_commit_keeps_conflicting_leaves_no_running_child(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = rt.run(m.Spawner, {"template": m.Counter}, cause="spawner-conflict")
    before_list = rt.runner.listed_instances()
    before_running = set(rt.runner.instances)
    attempts = [0]

    def always_stale(space: str, writes: Any, basis: Any, *handed: Any) -> Any:
        attempts[0] += 1
        raise ConflictError("stale basis (forced by the test)")

    with monkeypatch.context() as patched:
        # a transaction lands through ``commit_working`` where the store has it (MemoryStore),
        # else ``commit_owned`` (SQLite, PostgreSQL)
        for name in ("commit", "commit_working", "commit_owned"):
            if hasattr(rt.store, name):
                patched.setattr(rt.store, name, always_stale)
        s.spawn.send({"count": 2})  # every attempt starts a child; none of them lands
    assert attempts[0] > 1  # retried
    assert [type(e.error) for e in rt.errors] == [ConflictError]
    assert set(rt.runner.instances) == before_running
    assert rt.runner.listed_instances() == before_list
    assert s.items.get() == []
    s.spawn.send({"count": 3})  # and the next event works
    assert [v["count"] for v in s.items.get()] == [3]
    assert len(rt.runner.instances) == len(before_running) + 1


# --------------------------------------------------------------------------- SELF.factory


def test_self_factory_is_the_pattern_as_a_value(rt: Runtime) -> None:
    @pattern
    def Selfish(n: int = 0):  # type: ignore[no-untyped-def]
        return {"n": n, "me": SELF.factory}

    r = rt.run(Selfish, {"n": 1}, cause="selfish")
    me = r.me.get()
    assert isinstance(me, Pattern) and me == Selfish
    again = rt.run(me, {"n": 2}, cause="selfish-2")
    assert again.n.get() == 2


def test_only_a_trace_that_wrote_a_self_marker_is_searched_for_one(rt: Runtime) -> None:
    """The builder notes which graphs hold no SELF.factory, so large ones are not walked."""

    @pattern
    def Plain(n: int = 0):  # type: ignore[no-untyped-def]
        return {"n": n}

    @pattern
    def InMap(items: list[int]):  # type: ignore[no-untyped-def]
        return {"out": items.map(lambda item: {"v": item, "maker": SELF.factory})}  # type: ignore[attr-defined]

    assert Plain.self_free
    assert not InMap.self_free  # the marker was written by the map's sub-trace
    r = rt.run(InMap, {"items": [1]}, cause="self-in-map")
    maker = r.out.get()[0]["maker"]
    # inside a map callback SELF.factory is the pattern the callback was written in
    assert isinstance(maker, Pattern) and maker == InMap


# --------------------------------------------------------------------------- persistence


PHASE_A = """
    import json, sys
    import factory_mod as m
    from cellkernel import Runtime
    rt = Runtime(store="sqlite:///" + sys.argv[1])
    holder = rt.get_cell("template")
    holder.set(m.Counter)
    h = rt.run(m.Host, {"child": holder, "start": 3}, cause="host")
    s = rt.run(m.Spawner, {"template": m.Tripler}, cause="spawner")
    s.spawn.send({"count": 2})
    s.spawn_by_call.send({"count": 4})
    out = {"host_child": h.child.doubled.get(), "items": [i["tripled"] for i in s.items.get()],
           "errors": [str(e) for e in rt.errors]}
    rt.close()
    print(json.dumps(out))
"""

PHASE_B = """
    import json, sys
    from cellkernel import Runtime
    rt = Runtime(store="sqlite:///" + sys.argv[1], trusted_modules=["factory_mod"])
    h = rt.resume("host")
    s = rt.resume("spawner")
    out = {"imported_before_resume": False}
    items = s.items
    # children made by handlers are live again: their handlers fire, their lifts recompute
    items[0].increment.send({"amount": 1})
    out["first"] = [items[0].count.get(), items[0].tripled.get()]
    # the body-instantiated child is live and sees input changes
    h.start.set(7)
    out["host_child"] = h.child.doubled.get()
    h.child.increment.send({"amount": 1})
    out["host_start"] = h.start.get()
    # the stored factory value still makes children (resolved by import + hash)
    s.spawn.send({"count": 10})
    out["items"] = [i["tripled"] for i in items.get()]
    out["module_imported"] = "factory_mod" in sys.modules
    # a new pattern value re-instantiates
    import factory_mod as m
    rt.get_cell("template").set(m.Tripler)
    out["host_tripled"] = h.child.tripled.get()
    out["errors"] = [str(e) for e in rt.errors]
    rt.close()
    print(json.dumps(out))
"""


def test_children_survive_resume_in_a_new_process(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    a = _run_worker(PHASE_A, db)
    assert a == {"host_child": 6, "items": [6, 12], "errors": []}
    b = _run_worker(PHASE_B, db)
    assert b == {
        "imported_before_resume": False,
        "first": [3, 9],
        "host_child": 14,
        "host_start": 8,
        "items": [9, 12, 30],
        "module_imported": True,
        "host_tripled": 24,
        "errors": [],
    }


# --------------------------------------------------------------------------- wish


def test_wish_all_lists_instance_results_in_creation_order(rt: Runtime) -> None:
    @lift
    def counts(results: list[Any]) -> list[Any]:
        # entries are result Cells (the list holds this instance's own result too)
        return [r.key("count").get() for r in results]

    @pattern
    def Everything():  # type: ignore[no-untyped-def]
        every = wish("#all")
        return {"all": every, "counts": counts(every)}

    c1 = rt.run(m.Counter, {"count": 1}, cause="c1")
    rt.run(m.Counter, {"count": 2}, cause="c2")
    e = rt.run(Everything, {}, cause="everything")
    assert e.counts.get() == [1, 2, None]
    c3 = rt.run(m.Counter, {"count": 3}, cause="c3")
    assert e.counts.get() == [1, 2, None, 3]
    c3.count.set(30)
    assert e.counts.get() == [1, 2, None, 30]
    entries = e.key("all").get()
    assert all(isinstance(c, Cell) for c in entries)
    ids = [c.resolve_as_cell().entity_id for c in entries]
    assert ids == [c1.entity_id, ids[1], e.entity_id, c3.entity_id]
    assert entries[0].get()["doubled"] == 2
    assert rt.errors == []


def test_wish_path_reads_the_space_root_document(rt: Runtime) -> None:
    root = rt.get_cell(rt.space)  # the root document of the space
    root.set({"settings": {"theme": "dark", "size": 3}})

    @pattern
    def Themed():  # type: ignore[no-untyped-def]
        theme = wish("/settings/theme")
        size = wish("/settings/size")
        return {"theme": theme, "big": m.double(size)}

    t = rt.run(Themed, {}, cause="themed")
    assert t.get() == {"theme": "dark", "big": 6}
    root.key("settings").update({"theme": "light", "size": 5})
    assert t.get() == {"theme": "light", "big": 10}
    with pytest.raises(ValueError):
        wish("")


# --------------------------------------------------------------------------- odds and ends


def test_instantiate_returns_a_ref_while_building_and_a_cell_in_a_handler(rt: Runtime) -> None:
    from cellkernel.patterns.tracing import OpaqueRef

    seen: dict[str, Any] = {}

    @handler
    def make(event: Any, kinds: Cell[list[Any]]) -> None:
        child = instantiate(m.Counter, {"count": 1})
        # its state is there at once; its lifts run once this event's transaction lands
        kinds.set([type(child).__name__, child.get()["count"]])

    @pattern
    def Both():  # type: ignore[no-untyped-def]
        ref = instantiate(m.Counter, {"count": 2})
        seen["ref"] = ref
        kinds = Cell.of([]).for_("kinds")
        return {"child": ref, "kinds": kinds, "make": make(kinds=kinds)}

    assert isinstance(seen["ref"], OpaqueRef)
    r = rt.run(Both, {}, cause="both")
    r.make.send({})
    assert r.kinds.get() == ["Cell", 1]
    assert r.child.doubled.get() == 4


def test_pattern_graphs_with_float_schemas_round_trip_through_storage(rt: Runtime) -> None:
    graph = json.loads(json.dumps(m.Counter.to_json()))
    graph["argumentSchema"]["properties"]["count"]["minimum"] = 0.0  # stored as 0
    made = Pattern(None, graph, "FloatCounter")
    cell = rt.get_cell("float-pattern")
    cell.set(made)
    registry.forget_pattern(made.hash)
    back = cell.get()
    assert back.hash == made.hash and back == made


def test_reading_a_stored_sigil_in_a_fresh_process_needs_no_import(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    rt = Runtime(store="sqlite:///" + db)
    try:
        rt.get_cell("f").set({"f": m.add.curry(1), "p": m.Counter})
    finally:
        rt.close()
    out = _run_worker("""
        import json, sys
        from cellkernel import Runtime
        rt = Runtime(store="sqlite:///" + sys.argv[1], trusted_modules=["factory_mod"])
        before = "factory_mod" in sys.modules
        value = rt.get_cell("f").get()
        print(json.dumps({"before": before, "call": value["f"](2, 3),
                          "pattern": type(value["p"]).__name__}))
        rt.close()
        """, db)
    assert out == {"before": False, "call": 6, "pattern": "Pattern"}
