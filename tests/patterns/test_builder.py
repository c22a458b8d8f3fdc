"""The builder (SPEC §4): authoring patterns, definition-time graphs and schemas.

Ported from the reference runtime's builder/recipe tests (commontoolsinc/labs
``packages/runner/test/recipe.test.ts``, ``recipes.test.ts``) with the same
expected values, plus the Python-specific parts of SPEC §4: parameters and
annotations become the argument schema, ``Default[T, v]``, pydantic models and
TypedDicts, ``Cell[T]`` parameters, opaque references, closures.
"""

from typing import Annotated, Any, TypedDict, cast

import pytest
from pydantic import BaseModel, Field

from cellkernel import (
    NAME,
    SELF,
    CapabilityError,
    Cell,
    Default,
    Pattern,
    Runtime,
    Stream,
    computed,
    derive,
    handler,
    lift,
    pattern,
    recipe,
)
from cellkernel.patterns.tracing import OpaqueRef

# ``rt`` (tests/conftest.py): a fresh runtime on the memory store, then on SQLite.


# ---------------------------------------------------------------------------
# the SPEC §4 example, exactly


@lift
def double(x: int) -> int:
    return x * 2


@handler
def increment(event, count: Cell[int]):  # type: ignore[no-untyped-def]  # state params arrive as Cells
    count.set(count.get() + (event or {}).get("amount", 1))


@pattern
def Counter(count: int = 0):  # type: ignore[no-untyped-def]  # params -> argument schema
    return {"count": count, "doubled": double(count), "increment": increment(count=count)}


def test_spec_counter_example(rt: Runtime) -> None:
    r = rt.run(Counter, {"count": 5}, cause="counter-1")
    assert r.doubled.get() == 10
    r.increment.send({"amount": 2})
    assert r.count.get() == 7
    assert r.doubled.get() == 14


def test_spec_counter_default_event_and_stream_field(rt: Runtime) -> None:
    r = rt.run(Counter, {}, cause="counter-2")
    value = r.get()
    assert value["count"] == 0 and value["doubled"] == 0
    assert isinstance(value["increment"], Stream)
    value["increment"].send({})  # SPEC §3: result.get()["increment"].send({}) works
    assert r.count.get() == 1
    r.increment.send(None)  # no event payload: amount defaults to 1
    assert r.get()["count"] == 2
    assert r.doubled.get() == 4


def test_counter_pattern_increment_and_decrement(rt: Runtime) -> None:
    """Reference PT counter: increments/decrements from 0 and from 5."""

    @handler
    def bump(event, value: Cell[int], by: int):  # type: ignore[no-untyped-def]
        value.set(value.get() + by)

    @pattern
    def UpDown(value: Default[int, 0]):  # type: ignore[no-untyped-def, type-arg, valid-type]
        return {
            "value": value,
            "increment": bump(value=value, by=1),
            "decrement": bump(value=value, by=-1),
        }

    r = rt.run(UpDown, {})
    r.increment.send()
    r.increment.send()
    assert r.value.get() == 2
    r.decrement.send()
    assert r.value.get() == 1
    r.decrement.send()
    r.decrement.send()
    assert r.value.get() == -1

    r5 = rt.run(UpDown, {"value": 5})
    r5.decrement.send()
    assert r5.value.get() == 4
    r5.increment.send()
    assert r5.value.get() == 5
    r5.increment.send()
    assert r5.value.get() == 6


def test_recipe_is_an_alias_of_pattern() -> None:
    assert recipe is pattern


# ---------------------------------------------------------------------------
# Pattern.to_json()


def test_to_json_shape() -> None:
    graph = Counter.to_json()
    assert {"argumentSchema", "resultSchema", "initial", "result", "nodes"} <= set(graph)
    assert len(graph["nodes"]) == 2
    for node in graph["nodes"]:
        assert {"module", "inputs", "outputs"} <= set(node)
    modules = [n["module"] for n in graph["nodes"]]
    assert all(m["type"] == "python" for m in modules)
    assert all(len(m["hash"]) == 64 for m in modules)
    assert set(graph["result"]) == {"count", "doubled", "increment"}
    assert isinstance(Counter, Pattern)


def test_to_json_argument_schema_from_parameters() -> None:
    schema = Counter.to_json()["argumentSchema"]
    assert schema["type"] == "object"
    assert schema["properties"]["count"] == {"type": "integer", "default": 0}


def test_to_json_result_schema_from_return_annotation() -> None:
    class Out(TypedDict):
        total: int

    @pattern
    def Annotated(a: int) -> Out:
        return {"total": double(a)}

    @pattern
    def Unannotated(a: int):  # type: ignore[no-untyped-def]
        return {"total": double(a)}

    result_schema = Annotated.to_json()["resultSchema"]
    assert result_schema["type"] == "object"
    assert result_schema["properties"]["total"]["type"] == "integer"
    assert Unannotated.to_json()["resultSchema"] is None


def test_double_double_serialises_to_two_nodes() -> None:
    """Reference RB: ``double(double(x))`` is two nodes chained through an internal cell."""

    @pattern
    def DD(x: int):  # type: ignore[no-untyped-def]
        return {"double": double(double(x))}

    graph = DD.to_json()
    assert len(graph["nodes"]) == 2
    first, second = graph["nodes"]
    assert first["inputs"]["args"] == [{"$alias": {"cell": "argument", "path": ["x"]}}]
    assert second["inputs"]["args"] == [{"$alias": {"cell": first["outputs"], "path": []}}]
    assert graph["result"] == {"double": {"$alias": {"cell": second["outputs"], "path": []}}}


def test_map_serialises_to_one_builtin_node() -> None:
    """Reference RB: a map pattern serialises to exactly one ``map`` node on argument.values."""

    @pattern
    def Doubler(values: list[int]):  # type: ignore[no-untyped-def]
        return {"doubled": values.map(lambda v: double(v))}  # type: ignore[attr-defined]

    nodes = Doubler.to_json()["nodes"]
    assert len(nodes) == 1
    assert nodes[0]["module"] == {"type": "builtin", "ref": "map"}
    assert nodes[0]["inputs"]["list"] == {"$alias": {"cell": "argument", "path": ["values"]}}


def test_pattern_is_traced_once_at_definition_time() -> None:
    calls: list[int] = []

    def body(a: int):  # type: ignore[no-untyped-def]
        calls.append(1)
        return {"a": a}

    made = pattern(body)
    assert calls == [1]
    rt = Runtime()
    rt.run(made, {"a": 1})
    rt.run(made, {"a": 2})
    assert calls == [1]
    rt.close()


# ---------------------------------------------------------------------------
# argument schemas: defaults, Default[T, v], pydantic models, TypedDicts


def test_default_marker_becomes_schema_default() -> None:
    @pattern
    def D(a: Default[int, 5], b: Default[str, "x"], c: int):  # type: ignore[no-untyped-def, type-arg, valid-type, name-defined]  # noqa: F821
        return {"a": a}

    props = D.to_json()["argumentSchema"]["properties"]
    assert props["a"] == {"type": "integer", "default": 5}
    assert props["b"] == {"type": "string", "default": "x"}
    assert props["c"] == {"type": "integer"}


def test_the_typed_spelling_of_a_default_gives_the_same_schema_and_runs() -> None:
    """``Annotated[T, Field(default=v)]`` is what a type checker accepts for ``Default[T, v]``."""

    @pattern
    def D(a: Annotated[int, Field(default=5)], b: Annotated[str, Field(default="x")],
          c: int) -> Any:
        return {"a": a, "b": b, "c": c}

    props = D.to_json()["argumentSchema"]["properties"]
    assert props["a"] == {"type": "integer", "default": 5}
    assert props["b"] == {"type": "string", "default": "x"}
    assert props["c"] == {"type": "integer"}
    rt = Runtime()
    assert rt.run(D, {"c": 1}, cause="typed-default").get() == {"a": 5, "b": "x", "c": 1}


def test_default_needs_two_parameters() -> None:
    with pytest.raises(TypeError):
        Default[int]


def test_pydantic_model_parameter_gives_nested_object_schema() -> None:
    class Options(BaseModel):
        enabled: bool = True
        value: int = 100
        name: str = "default"

    @pattern
    def WithOptions(options: Options, input: int = 1):  # type: ignore[no-untyped-def]
        return {"options": options}

    schema = WithOptions.to_json()["argumentSchema"]
    options = schema["properties"]["options"]
    assert options["type"] == "object"
    assert options["properties"]["enabled"]["default"] is True
    assert options["properties"]["value"]["default"] == 100
    assert options["properties"]["name"]["default"] == "default"
    assert schema["properties"]["input"] == {"type": "integer", "default": 1}


def test_single_pydantic_model_parameter_is_a_key_like_any_other() -> None:
    # issue 17 item 8: this test used to assert the old rule (a lone model parameter was
    # the whole argument, so ``def P(config: Config)`` silently got {"config": ...} as
    # config); now the parameter name is a key, as with every other parameter
    class Point(BaseModel):
        x: int = 3
        y: int = 4

    seen: list[Any] = []

    @pattern
    def Sum(p: Point):  # type: ignore[no-untyped-def]
        seen.append(p)
        return {"sum": lift(lambda a, b: a + b)(p.x, p.y)}

    schema = Sum.to_json()["argumentSchema"]
    assert set(schema["properties"]) == {"p"}
    point = schema["properties"]["p"]
    if "$ref" in point:
        point = schema["$defs"][point["$ref"].rsplit("/", 1)[1]]
    assert set(point["properties"]) == {"x", "y"}
    assert isinstance(seen[0], OpaqueRef) and seen[0].path == ("p",)

    rt = Runtime()
    assert rt.run(Sum, {"p": {"x": 10, "y": 1}}).get() == {"sum": 11}
    assert rt.run(Sum, {"p": {"x": 10}}).get() == {"sum": 14}  # the model's field default
    rt.close()


def test_explicit_argument_schema_keeps_parameters_as_keys(rt: Runtime) -> None:
    # issue 17 item 8: argument_schema= is used as given; the parameter still names a key
    schema = {"type": "object", "properties": {
        "config": {"type": "object", "properties": {"n": {"type": "integer", "default": 2}},
                   "default": {"n": 2}},
    }}

    @pattern(argument_schema=schema)
    def P(config):  # type: ignore[no-untyped-def]
        return {"n": lift(lambda c: c["n"] * 10)(config)}

    assert P.to_json()["argumentSchema"] == schema
    assert rt.run(P, {"config": {"n": 3}}).get() == {"n": 30}
    assert rt.run(P, {}, cause="explicit-default").get() == {"n": 20}


def test_typeddict_parameter_gives_object_schema(rt: Runtime) -> None:
    class Pair(TypedDict):
        a: int
        b: str

    @pattern
    def UsePair(pair: Pair):  # type: ignore[no-untyped-def]
        return {"a": pair["a"], "b": pair.b}  # type: ignore[attr-defined]

    # issue 17 item 8: a lone TypedDict parameter is a key too (it was the whole argument)
    schema = UsePair.to_json()["argumentSchema"]
    assert schema["type"] == "object" and set(schema["properties"]) == {"pair"}
    pair = schema["properties"]["pair"]
    if "$ref" in pair:
        pair = schema["$defs"][pair["$ref"].rsplit("/", 1)[1]]
    types = {k: v["type"] for k, v in pair["properties"].items()}
    assert types == {"a": "integer", "b": "string"}
    assert sorted(pair["required"]) == ["a", "b"]
    assert rt.run(UsePair, {"pair": {"a": 1, "b": "x"}}).get() == {"a": 1, "b": "x"}


def test_typeddict_field_inside_argument() -> None:
    class Item(TypedDict):
        title: str
        done: bool

    @pattern
    def Todo(items: list[Item], owner: str = "me"):  # type: ignore[no-untyped-def]
        return {"items": items}

    items = Todo.to_json()["argumentSchema"]["properties"]["items"]
    assert items["type"] == "array"
    item_schema = items["items"]
    if "$ref" in item_schema:  # pydantic may hoist the TypedDict into $defs
        defs = Todo.to_json()["argumentSchema"]["$defs"]
        item_schema = defs[item_schema["$ref"].rsplit("/", 1)[1]]
    assert item_schema["properties"]["title"]["type"] == "string"
    assert item_schema["properties"]["done"]["type"] == "boolean"
    assert sorted(item_schema["required"]) == ["done", "title"]


def test_cell_annotated_pattern_parameter_is_marked_as_cell() -> None:
    @pattern
    def WithCell(count: Cell[int], plain: int):  # type: ignore[no-untyped-def]
        return {"count": count}

    props = WithCell.to_json()["argumentSchema"]["properties"]
    assert props["count"]["asCell"] is True
    assert props["count"]["type"] == "integer"
    assert "asCell" not in props["plain"]


# ---------------------------------------------------------------------------
# opaque references


def test_opaque_refs_refuse_reads_at_definition_time() -> None:
    errors: dict[str, BaseException] = {}

    def attempt(name: str, op: Any) -> None:
        try:
            op()
        except CapabilityError as exc:
            errors[name] = exc

    @pattern
    def Probe(x: int, items: list[int]):  # type: ignore[no-untyped-def]
        attempt("get", lambda: x.get())  # type: ignore[attr-defined]
        attempt("sample", lambda: x.sample())  # type: ignore[attr-defined]
        attempt("bool", lambda: bool(x))
        attempt("add", lambda: x + 1)
        attempt("compare", lambda: x < 1)
        attempt("format", lambda: f"{x}")
        attempt("iterate", lambda: list(items))
        attempt("set", lambda: x.set(1))  # type: ignore[attr-defined]
        attempt("send", lambda: x.send({}))  # type: ignore[attr-defined]
        attempt("key get", lambda: x.key("a").get())  # type: ignore[attr-defined]
        return {"x": x}

    assert set(errors) == {
        "get", "sample", "bool", "add", "compare", "format", "iterate", "set", "send", "key get",
    }
    assert "opaque" in str(errors["get"])
    assert errors["get"].capability == "opaque"  # type: ignore[attr-defined]
    assert isinstance(Probe, Pattern)


def test_opaque_ref_keys_keep_opaque_capability() -> None:
    refs: list[Any] = []

    @pattern
    def Keys(obj: dict[str, Any]):  # type: ignore[no-untyped-def]
        refs.extend([obj.a, obj["b"], obj.key("c", 0)])  # type: ignore[attr-defined]
        return {"a": obj.a}  # type: ignore[attr-defined]

    assert [r.path for r in refs] == [("obj", "a"), ("obj", "b"), ("obj", "c", 0)]
    assert all(isinstance(r, OpaqueRef) and r.capability == "opaque" for r in refs)


def test_opaque_ref_cannot_be_a_run_argument(rt: Runtime) -> None:
    leaked: list[Any] = []

    @pattern
    def Leak(x: int):  # type: ignore[no-untyped-def]
        leaked.append(x)
        return {"x": x}

    with pytest.raises(CapabilityError):
        rt.run(Leak, {"x": leaked[0]})


def test_lift_outside_a_pattern_is_the_plain_function() -> None:
    assert double(4) == 8
    assert double.fn(5) == 10


def test_handler_binding_returns_a_stream_ref() -> None:
    streams: list[Any] = []

    @pattern
    def Bind(count: int = 0):  # type: ignore[no-untyped-def]
        s = increment(count=count)
        streams.append(s)
        return {"inc": s}

    assert isinstance(streams[0], OpaqueRef)
    assert streams[0].is_stream
    node = Bind.to_json()["nodes"][0]
    assert node["inputs"]["state"] == {"count": {"$alias": {"cell": "argument", "path": ["count"]}}}


def test_handler_state_must_be_bound_by_keyword() -> None:
    with pytest.raises(TypeError):

        @pattern
        def Positional(count: int = 0):  # type: ignore[no-untyped-def]
            return {"inc": increment(count, count)}


def test_handler_binding_outside_a_pattern_raises() -> None:
    with pytest.raises(CapabilityError):
        increment(count=1)


def test_pattern_call_outside_body_or_handler_raises() -> None:
    with pytest.raises(TypeError):
        Counter(count=1)


# ---------------------------------------------------------------------------
# nested patterns


@pattern
def Inner(x: int):  # type: ignore[no-untyped-def]
    return {"squared": lift(lambda n: n * n)(x)}


def test_nested_pattern_keyword_and_dict_calls_record_one_node() -> None:
    @pattern
    def OuterKw(value: int):  # type: ignore[no-untyped-def]
        return {"result": lift(lambda n: n + 1)(Inner(x=value).squared)}

    @pattern
    def OuterDict(value: int):  # type: ignore[no-untyped-def]
        return {"result": lift(lambda n: n + 1)(Inner({"x": value}).squared)}

    for outer in (OuterKw, OuterDict):
        nested = [n for n in outer.to_json()["nodes"] if n["module"]["type"] == "pattern"]
        assert len(nested) == 1
        assert nested[0]["module"]["hash"] == Inner.hash
        assert nested[0]["inputs"] == {"x": {"$alias": {"cell": "argument", "path": ["value"]}}}
    # the same graph either way
    assert OuterKw.to_json()["nodes"][0] == OuterDict.to_json()["nodes"][0]


def test_nested_patterns_run(rt: Runtime) -> None:
    """Reference RT: inner({x}) = {squared: x*x}; outer = inner.squared + 1; value 4 -> 17."""

    @pattern
    def Outer(value: int):  # type: ignore[no-untyped-def]
        return {"result": lift(lambda n: n + 1)(Inner(x=value).squared)}

    @pattern
    def Outer2(value: int):  # type: ignore[no-untyped-def]
        return {"result": lift(lambda n: n + 1)(Inner({"x": value}).squared)}

    assert rt.run(Outer, {"value": 4}).get() == {"result": 17}
    assert rt.run(Outer2, {"value": 4}).get() == {"result": 17}


def test_body_returning_a_pattern_call_exposes_the_child_result(rt: Runtime) -> None:
    @pattern
    def Wrapper(value: int):  # type: ignore[no-untyped-def]
        return Inner(x=value)

    assert rt.run(Wrapper, {"value": 3}).get() == {"squared": 9}


def test_pattern_defined_inside_a_body_cannot_capture_its_refs() -> None:
    with pytest.raises(CapabilityError):

        @pattern
        def Host(a: int):  # type: ignore[no-untyped-def]
            @pattern
            def Guest(b: int):  # type: ignore[no-untyped-def]
                return {"sum": lift(lambda x, y: x + y)(a, b)}

            return {"g": Guest(b=a)}


# ---------------------------------------------------------------------------
# closures


def test_closure_refs_are_recorded_as_inputs() -> None:
    @pattern
    def Closure(a: int, b: int):  # type: ignore[no-untyped-def]
        return {"s": lift(lambda x: x + b)(a)}

    node = Closure.to_json()["nodes"][0]
    assert node["inputs"]["args"] == [{"$alias": {"cell": "argument", "path": ["a"]}}]
    assert node["inputs"]["closure"] == {"b": {"$alias": {"cell": "argument", "path": ["b"]}}}
    assert Closure.to_json()["cells"][0]["inputs"] == ["argument/a", "argument/b"]


def test_computed_has_only_closure_inputs() -> None:
    @pattern
    def Product(a: int, b: int):  # type: ignore[no-untyped-def]
        return {"p": computed(lambda: a * b)}

    node = Product.to_json()["nodes"][0]
    assert node["inputs"]["args"] == [] and node["inputs"]["kwargs"] == {}
    assert set(node["inputs"]["closure"]) == {"a", "b"}


def test_captured_constants_are_part_of_the_fingerprint(rt: Runtime) -> None:
    def make(k: int) -> Pattern:
        @pattern
        def AddK(a: int):  # type: ignore[no-untyped-def]
            return {"s": lift(lambda x: x + k)(a)}

        return AddK

    one, two, one_again = make(1), make(2), make(1)

    def module(p: Pattern) -> dict[str, Any]:
        return cast(dict[str, Any], p.to_json()["nodes"][0]["module"])

    assert module(one)["constants"] == {"captures": [1], "free": ["k"]}  # by position
    assert module(one)["hash"] != module(two)["hash"]
    assert module(one) == module(one_again)
    assert rt.run(one, {"a": 1}).get() == {"s": 2}
    assert rt.run(two, {"a": 1}).get() == {"s": 3}


def test_redefined_function_runs_with_its_own_closure(rt: Runtime) -> None:
    """Same source, equal constants (a re-executed notebook cell): the latest definition runs."""

    def define() -> tuple[Pattern, list[int]]:
        log: list[int] = []

        @pattern
        def Logged(a: int):  # type: ignore[no-untyped-def]
            return {"s": lift(lambda x: log.append(x) or x)(a)}  # type: ignore[func-returns-value]

        return Logged, log

    first, first_log = define()
    second, second_log = define()
    assert first.hash == second.hash
    assert rt.run(second, {"a": 4}).get() == {"s": 4}
    assert second_log == [4] and first_log == []


def test_closures_see_current_values_at_run_time(rt: Runtime) -> None:
    """A lift, a computed and a handler using refs of the enclosing body."""

    @pattern
    def Closures(a: int, b: int):  # type: ignore[no-untyped-def]
        k = 10  # a captured plain constant
        s = lift(lambda x: x + b * k)(a)
        c = computed(lambda: a * b)
        add = handler(lambda event, total: total.set(total.get() + event + b.get()))  # type: ignore[attr-defined]
        return {"s": s, "c": c, "add": add(total=a), "a": a}

    b = rt.get_cell("closures b")
    b.set(2)
    r = rt.run(Closures, {"a": 1, "b": b})
    assert r.get()["s"] == 21 and r.get()["c"] == 2
    b.set(3)
    assert r.s.get() == 31 and r.c.get() == 3
    r.add.send(5)  # total (= a) = 1 + 5 + b
    assert r.a.get() == 9
    assert r.s.get() == 39 and r.c.get() == 27


def test_derive_is_lift_of_fn_applied_to_inputs(rt: Runtime) -> None:
    @pattern
    def Derived(a: int):  # type: ignore[no-untyped-def]
        return {
            "d": derive(a, lambda v: v * 3),
            "d2": derive({"x": a, "y": 2}, lambda v: v["x"] + v["y"]),
        }

    assert rt.run(Derived, {"a": 2}).get() == {"d": 6, "d2": 4}


def test_lift_positional_keyword_and_literal_arguments(rt: Runtime) -> None:
    @lift
    def combine(a, b, *, c=0):  # type: ignore[no-untyped-def]
        return a * 100 + b * 10 + c

    @pattern
    def Mixed(x: int, y: int, z: int):  # type: ignore[no-untyped-def]
        return {"refs": combine(x, b=y, c=z), "literals": combine(1, 2, c=3)}

    assert rt.run(Mixed, {"x": 4, "y": 5, "z": 6}).get() == {"refs": 456, "literals": 123}


# ---------------------------------------------------------------------------
# SELF and NAME


def test_self_result_is_a_ref_to_the_instance_result(rt: Runtime) -> None:
    @pattern
    def SelfRef(a: int):  # type: ignore[no-untyped-def]
        return {"a": a, "self": SELF.result, "ten": lift(lambda v: v * 10)(SELF.result.a)}

    graph = SelfRef.to_json()
    assert graph["result"]["self"] == {"$alias": {"cell": "self", "path": []}}
    r = rt.run(SelfRef, {"a": 1})
    assert r.key("self").key("a").get() == 1
    assert r.key("self").resolve_as_cell().entity_id == r.entity_id
    assert r.key("ten").get() == 10


def test_self_outside_a_pattern_raises() -> None:
    with pytest.raises(CapabilityError):
        SELF.result  # noqa: B018


def test_name_is_the_dollar_name_key() -> None:
    assert NAME == "$NAME"

    @pattern
    def Named(v: int):  # type: ignore[no-untyped-def]
        return {NAME: "counter", "v": v}

    assert Named.to_json()["result"]["$NAME"] == "counter"


def test_cell_of_in_a_body_is_internal_state(rt: Runtime) -> None:
    @handler
    def bump_state(event, n: Cell[int]):  # type: ignore[no-untyped-def]
        n.set(n.get() + 1)

    @pattern
    def WithState(label: str = "x"):  # type: ignore[no-untyped-def]
        n = Cell.of(3)
        return {"n": n, "bump": bump_state(n=n)}

    assert WithState.to_json()["initial"]
    r = rt.run(WithState, {})
    assert r.n.get() == 3
    r.bump.send({})
    assert r.n.get() == 4


# ---------------------------------------------------------------------------
# defining large patterns: the fast paths give exactly the generic results


def _generic_bind(frame: Any, value: Any, inputs: list[str]) -> Any:
    from cellkernel.data.values import to_json_value
    from cellkernel.patterns import tracing

    return to_json_value(value, hook=lambda v: tracing._bind_hook(frame, inputs, v))


def _bind_fixture() -> tuple[Any, Any, list[Any]]:
    """An outer and an inner frame, and refs of both (outer ones get captured)."""
    from cellkernel.patterns.tracing import BuilderFrame

    outer = BuilderFrame(None, "outer")
    inner = BuilderFrame(outer, "inner")
    out_a: OpaqueRef[Any] = OpaqueRef(outer.argument, ("a",), None, outer)
    out_b: OpaqueRef[Any] = OpaqueRef(outer.argument, ("b", 0), None, outer)
    cell = inner.new_cell("lift", "h", [], None)
    own: OpaqueRef[Any] = OpaqueRef(cell, (), None, inner)
    arg: OpaqueRef[Any] = OpaqueRef(inner.argument, ("x",), None, inner)
    return outer, inner, [out_a, out_b, own, arg]


def _bind_values(refs: list[Any]) -> list[Any]:
    out_a, out_b, own, arg = refs
    return [
        [arg, 5],
        (arg, own, "s", None, True),
        [out_b, arg, out_a, out_b],  # captures named in the walk's order
        {"b": own, "a": [out_a, {"deep": (arg.key("y", 2), 1.5)}]},
        {"n": 1.0, "z": -0.0, "h": 0.5, "big": 2.0**60},
        [own.key(1.0)],  # a float path element is normalised by the walk
        [[arg], [arg]],
        {},
        [],
        (),
        "text",
        3.0,
        {1: arg},  # not JSON: both refuse
        [float("nan"), out_a],  # refused after the ref was bound
        [double, out_a, arg],  # a factory sigil: the walk takes over after the refs
    ]


def test_bind_fast_path_matches_the_generic_walk() -> None:
    from cellkernel.patterns.tracing import bind

    for i in range(len(_bind_values(_bind_fixture()[2]))):
        results = []
        for fast in (True, False):
            _, inner, refs = _bind_fixture()
            value = _bind_values(refs)[i]
            inputs: list[str] = []
            try:
                bound: Any = (bind if fast else _generic_bind)(inner, value, inputs)
            except ValueError as exc:
                bound = f"error: {exc}"
            captured = [(local, ref._path) for local, ref in inner.captured.values()]
            connected = [r._bcell.connected for r in refs]
            results.append((bound, type(bound), inputs, captured, connected))
        assert results[0] == results[1], i


def test_cell_indices_match_the_json_signature() -> None:
    """Cells with equal cause components get the next index (tuple keys or JSON text)."""
    import json

    from cellkernel.patterns.tracing import BuilderFrame

    calls: list[tuple[Any, ...]] = [
        ("lift", "h", ["b", "a"], None), ("lift", "h", ["a", "b"], None),
        ("lift", "h", ["a"], None), ("lift", None, ["a"], None), ("lift", "h", [], None),
        ("lift", "h", ["a"], {"k": 1}), ("lift", "h", ["a"], {"k": 1.0}),
        ("lift", "h", ["a"], "x"), ("cell", None, [], 0), ("cell", None, [], None),
        ("cell", None, [], [1, 2]), ("cell", None, [], (1, 2)), ("lift", "h", ["a", "b"], None),
    ]
    frame = BuilderFrame(None, "f")
    seen: dict[str, int] = {}
    for helper, impl, inputs, config in calls:
        text = json.dumps([helper, impl, sorted(inputs), config], sort_keys=True, default=str)
        expected = seen.get(text, 0)
        seen[text] = expected + 1
        assert frame.new_cell(helper, impl, inputs, config).index == expected


def test_pattern_hash_is_the_hash_of_the_normalised_graph() -> None:
    """The builder hashes as it traces; every graph still hashes as ``Pattern.hash`` always did."""
    from pydantic import Field

    from cellkernel.patterns import graph_digest

    class Bounded(BaseModel):
        v: float = Field(1.0, ge=1.0)  # integral floats in the schema: the generic path

    @lift
    def pair(a: int, b: Any = None, *, c: float = 0.5) -> dict[str, Any]:
        return {"a": a, "b": b, "c": c}

    scale = 2.0

    @pattern
    def Mixed(x: int = 1, items: list[int] | None = None):  # type: ignore[no-untyped-def]
        nested = pair(x, (x, 1.0, {"k": -0.0}), c=2.0)
        doubled = items.map(lambda e: lift(lambda v: v * scale)(e))  # type: ignore[union-attr]
        flag = Cell.of(1.0)
        return {"nested": nested, "doubled": doubled, "flag": flag, "raw": [x, 3.0]}

    @pattern
    def WithModel(m: Bounded, n: int = 0):  # type: ignore[no-untyped-def]
        return {"m": m, "n": double(n)}

    @pattern
    def Chain(x: int = 0):  # type: ignore[no-untyped-def]
        v = x
        for _ in range(200):
            v = double(v)
        return {"out": v}

    for made in (Mixed, WithModel, Chain, Counter):
        assert made.hash == graph_digest._digest(made.graph)
        assert Pattern(made.fn, made.graph, made.name).hash == made.hash


def test_large_graph_hash_skips_the_normalising_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import Field

    from cellkernel.patterns import graph_digest

    class Bounded(BaseModel):
        v: float = Field(1.0, ge=1.0)

    generic: list[str] = []
    original = graph_digest._digest

    def counting(graph: Any) -> str:
        generic.append(graph["name"])
        return original(graph)

    monkeypatch.setattr(graph_digest, "_digest", counting)

    @pattern
    def FanOut(x: int = 0):  # type: ignore[no-untyped-def]
        return {"leaves": [double(x) for _ in range(300)], "c": Cell.of({"f": 2.5})}

    @pattern
    def Odd(x: float = 1.0):  # type: ignore[no-untyped-def]  # to_json_value already made the schema default 1
        return {"y": double(x)}

    assert generic == []  # plain graphs: hashed from their own JSON text
    assert Odd.to_json()["argumentSchema"]["properties"]["x"]["default"] == 1

    @pattern
    def WithModel(m: Bounded):  # type: ignore[no-untyped-def]  # 1.0 in the schema: hashed as 1, through the copy
        return {"m": m}

    assert generic == ["WithModel"]
    # issue 17 item 8: the lone model parameter is the key "m" (was the whole argument)
    argument = WithModel.to_json()["argumentSchema"]
    model = argument["properties"]["m"]
    if "$ref" in model:
        model = argument["$defs"][model["$ref"].rsplit("/", 1)[1]]
    assert model["properties"]["v"]["minimum"] == 1.0
    assert FanOut.hash == original(FanOut.graph) and WithModel.hash == original(WithModel.graph)


def test_graph_digest_in_pieces_is_the_digest_of_the_whole_text() -> None:
    import hashlib
    import json

    from cellkernel.patterns import graph_digest

    def whole(graph: dict[str, Any]) -> str:
        text = json.dumps(graph, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    n = graph_digest._CHUNK
    for size in (0, 1, n - 1, n, n + 1, 2 * n, 3 * n + 7):
        graph = {
            "nodes": [{"i": i, "s": "é\n", "z": [i, {"b": 1, "a": None}]} for i in range(size)],
            "cells": [[i] for i in range(size)],
            "name": "g", "initial": {}, "result": list(range(size)), "Z": [], "a": [[]] * size,
        }
        assert graph_digest._plain_digest(graph) == whole(graph), size


def test_defining_a_pattern_leaves_the_garbage_collector_alone() -> None:
    """Only a start pauses the collector (measured; ``patterns.gc_pause``), never a definition."""
    import gc

    seen: list[bool] = []

    def body_raises() -> None:
        @pattern
        def Broken(x: int = 0):  # type: ignore[no-untyped-def]
            seen.append(gc.isenabled())
            raise RuntimeError("in the body")

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        body_raises()
    assert gc.isenabled() and seen == [True]
    gc.disable()
    try:
        with pytest.raises(RuntimeError):
            body_raises()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_factories_made_in_a_loop_share_a_shape_only_when_it_cannot_differ() -> None:
    from cellkernel.patterns import signatures

    made = [lift(lambda v, flag=flag: v) for flag in (True, 1, True, "1")]
    defaults = [f.argument_schema["properties"]["flag"]["default"] for f in made]
    assert defaults == [True, 1, True, "1"]
    assert [type(d) for d in defaults] == [bool, int, bool, str]
    assert made[0].argument_schema is made[2].argument_schema  # one shape: computed once

    def typed(kind: type) -> Any:
        def fn(v: kind) -> kind:  # type: ignore[valid-type]
            return v

        return lift(fn)

    assert typed(int).result_schema == {"type": "integer"}
    assert typed(str).result_schema == {"type": "string"}

    def forward(v: "int") -> "int":
        return v

    def listed(v: list[int]) -> list[int]:
        return v

    assert signatures._shape_key(forward, "lift") is None  # a string resolves at each call
    assert signatures._shape_key(listed, "lift") is None
    assert signatures._shape_key(lambda v=[]: v, "lift") is None
    assert lift(listed).argument_schema["properties"]["v"] == {
        "type": "array", "items": {"type": "integer"}}

    @handler
    def on(event: dict[str, Any], count: Cell[int]) -> None:
        count.set(count.get() + 1)

    assert on.state_schema["properties"]["count"] == {"type": "integer", "asCell": True}
