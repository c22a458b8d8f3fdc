"""The pattern builder: ``pattern``, ``lift``, ``handler`` and friends (SPEC §4).

A pattern's author function runs once, at definition time, against opaque
references.  Each helper call records a node and returns an ``OpaqueRef`` to
its output cell.  Nothing has an entity id yet: each internal cell carries the
*components* of its cause (helper, implementation hash, inputs, sibling index,
config), and the runner turns them into ids when an instance starts (SPEC §6).

Closures are first-class: a lift or handler that captures a ref of the
enclosing body gets it as an extra input, rebound to the live value at run
time.  Refs of an outer frame used inside a nested body (a map callback, a
nested pattern) are captured into that body's argument automatically.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self, overload

from cellkernel.data.values import MISSING, to_json_value
from cellkernel.errors import CapabilityError
from cellkernel.patterns import fingerprints as impls
from cellkernel.patterns import registry
from cellkernel.patterns.curry import apply_curried_call, apply_curried_state, curry, merge_argument
from cellkernel.patterns.graph_digest import _digest, _graph_digest
from cellkernel.patterns.run_context import runtime_frame
from cellkernel.patterns.sigils import factory_sigil
from cellkernel.patterns.signatures import (
    Default,
    Param,
    _arity,
    _hoist_defs,
    _resolve_hints,
    _shaped,
    parameters,
    schema_for,
)
from cellkernel.patterns.tracing import (
    BuilderFrame,
    OpaqueRef,
    _frames,
    add_node,
    bind,
    cause_config_of,
    closure_inputs,
    current_frame,
)
from cellkernel.reactive.cells import Cell, Stream, set_hook

# ---------------------------------------------------------------------------
# frames










# ---------------------------------------------------------------------------
# opaque references














# ---------------------------------------------------------------------------
# schemas from annotations






























# ---------------------------------------------------------------------------
# closures






# ---------------------------------------------------------------------------
# factories


class Factory:
    """Common base of lift, handler and pattern factories: callable values."""

    kind: ClassVar[str] = "factory"
    curried: tuple[tuple[int, Any], ...] = ()

    def module(self) -> dict[str, Any]:
        raise NotImplementedError

    def __ck_fingerprint__(self) -> str:
        return str(self.module().get("hash"))

    def to_json(self) -> dict[str, Any]:
        return factory_sigil(self)

    def __ck_to_json__(self) -> dict[str, Any]:
        return self.to_json()

    def __ck_ref_json__(self) -> Any:
        return self.module().get("hash")

    def curry(self, value: Any, arg_index: int | str | None = None) -> Self:
        """A copy with one more argument bound: at ``arg_index`` (a position or a
        parameter name), else one past the last curried one (SPEC §8)."""
        made: Self = curry(self, value, arg_index)  # a copy of self
        return made

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Factory):
            return NotImplemented
        mine, theirs = self.to_json(), other.to_json()
        return json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))


class LiftFactory(Factory):
    """``lift(fn)``: calling it adds a reactive node; see SPEC §4."""

    kind = "lift"

    def __init__(self, fn: Callable[..., Any], *, helper: str = "lift",
                 builtin: str | None = None) -> None:
        self.fn = fn
        self.helper = helper
        self.builtin = builtin
        self.params: list[Param]
        self.result_schema: dict[str, Any] | None
        self.argument_schema: dict[str, Any]
        self.params, self.result_schema, self.argument_schema, self.is_async = _shaped(
            fn, "lift", lambda: _lift_shape(fn))
        self.curried = ()
        self._module: dict[str, Any] | None = None
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = getattr(fn, "__name__", "lift")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", "__main__")
        self.__wrapped__ = fn
        if builtin is None and "<" not in self.__qualname__:
            registry.define_factory(self)  # findable by module:qualname (SPEC §8)

    def module(self, constants: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.builtin is not None:
            return {"type": "builtin", "ref": self.builtin}
        if constants:
            return _python_module(self.fn, constants)
        if self._module is None:
            self._module = _python_module(self.fn, None)
        return self._module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.curried:  # SPEC §8: curried arguments take their places first
            merged, kwargs = apply_curried_call(self, args, kwargs)
            args = tuple(merged)
        frame = current_frame()
        if frame is None:
            if any(isinstance(a, Cell) for a in (*args, *kwargs.values())):
                raise CapabilityError(
                    "call a lift on", "live", "cells outside a pattern (use rt.run or a pattern)"
                )
            return self.fn(*args, **kwargs)
        return self._node(frame, args, kwargs)

    def _node(
        self, frame: BuilderFrame, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> OpaqueRef[Any]:
        frame.keep_once(self.fn)
        refs, constants = closure_inputs(self.fn)
        module = self.module(constants)
        inputs: list[str] = []
        binding: dict[str, Any] = {
            "args": bind(frame, list(args), inputs),
            # no keywords (the usual call): the frame's one empty object (never changed)
            "kwargs": bind(frame, kwargs, inputs) if kwargs else frame.no_kwargs,
        }
        cause_binding = binding
        if refs:
            closure = bind(frame, refs, inputs)
            binding["closure"] = closure
            # by position, as the fingerprint counts captures: renaming one changes no id
            order = [n for n in impls.capture_order(self.fn) if n in closure]
            cause_binding = {**binding, "closure": [closure[n] for n in order]}
        impl = module.get("hash") or module["ref"]
        return add_node(frame, self.helper, module, binding, inputs, impl, None, self.result_schema,
                        name=self.__name__, normalized=True,
                        cause_config=cause_config_of(None, cause_binding))


def _lift_shape(fn: Callable[..., Any]
                ) -> tuple[list[Param], dict[str, Any] | None, dict[str, Any], bool]:
    """Parameters, result schema, argument schema and async-ness of a lift's function."""
    params = parameters(fn)
    hints = _resolve_hints(fn)
    ret = hints.get("return", inspect.Parameter.empty)
    result_schema = (
        schema_for(ret)[0] if ret is not inspect.Parameter.empty and ret is not None else None
    )
    types_ = {p.name: p.schema for p in params}
    defs = _hoist_defs(types_)
    argument_schema: dict[str, Any] = {"type": "object", "properties": types_}
    if defs:
        argument_schema["$defs"] = defs
    return params, result_schema, argument_schema, inspect.iscoroutinefunction(fn)


def _python_module(fn: Callable[..., Any], constants: dict[str, Any] | None) -> dict[str, Any]:
    digest, source, carried = impls.fingerprint_function(fn, constants)
    # the latest definition wins: a re-defined function with the same fingerprint (a
    # re-executed notebook cell, a second test) must run with its own closure and globals
    registry.register_function(digest, fn)
    module: dict[str, Any] = {"type": "python", "ref": impls.ref_of(fn), "hash": digest}
    if source is not None:
        module["source"] = source
    if carried:
        module["constants"] = carried  # behaviour inputs: what the hash covers besides the text
    return module




@overload
def lift(fn: Callable[..., Any], **options: Any) -> LiftFactory: ...


@overload
def lift(fn: None = None, **options: Any) -> Callable[[Callable[..., Any]], LiftFactory]: ...


def lift(fn: Callable[..., Any] | None = None, **options: Any
         ) -> LiftFactory | Callable[[Callable[..., Any]], LiftFactory]:
    """Make ``fn`` a reactive node factory (decorator or call)."""
    if fn is None:
        return lambda f: LiftFactory(f, **options)
    return LiftFactory(fn, **options)


def derive(inputs: Any, fn: Callable[..., Any]) -> Any:
    """``lift(fn)(inputs)``."""
    return lift(fn)(inputs)


def computed(fn: Callable[[], Any]) -> Any:
    """A lift with no explicit inputs; its closure refs are its inputs."""
    return lift(fn, helper="computed")()


class HandlerFactory(Factory):
    """``handler(fn)``: ``fn(event, **state)`` runs once per event."""

    kind = "handler"

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.event_param: Param | None
        self.params: list[Param]
        self.event_schema: dict[str, Any]
        self.state_schema: dict[str, Any]
        self.event_param, self.params, self.event_schema, self.state_schema = _shaped(
            fn, "handler", lambda: _handler_shape(fn))
        self.curried = ()
        self._module: dict[str, Any] | None = None
        self.__name__ = getattr(fn, "__name__", "handler")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", "__main__")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn
        if "<" not in self.__qualname__:
            registry.define_factory(self)  # findable by module:qualname (SPEC §8)

    def module(self, constants: dict[str, Any] | None = None) -> dict[str, Any]:
        if constants:
            return _python_module(self.fn, constants)
        if self._module is None:
            self._module = _python_module(self.fn, None)
        return self._module

    def __call__(self, *args: Any, **state: Any) -> Any:
        if len(args) == 1 and isinstance(args[0], dict) and not state:
            state = dict(args[0])
        elif args:
            raise TypeError(f"bind handler state by keyword: {self.__name__}(name=ref, ...)")
        frame = current_frame()
        if frame is None:
            raise CapabilityError("bind", "handler", "outside a pattern body")
        frame.keep_once(self.fn)
        curried_event: list[list[Any]] = []
        if self.curried:  # SPEC §8: curried state merges by name; index 0 is the event
            state, curried_event = apply_curried_state(self, state)
        refs, constants = closure_inputs(self.fn)
        module = self.module(constants)
        inputs: list[str] = []
        binding: dict[str, Any] = {"state": bind(frame, state, inputs)}
        if refs:
            binding["closure"] = bind(frame, refs, inputs)
        if curried_event:
            binding["curried"] = bind(frame, curried_event, inputs)
        return add_node(frame, "handler", module, binding, inputs, module["hash"], None,
                        {"asStream": True}, stream=True, name=self.__name__, normalized=True)


def _handler_shape(fn: Callable[..., Any]
                   ) -> tuple[Param | None, list[Param], dict[str, Any], dict[str, Any]]:
    """Event parameter, state parameters, event schema and state schema of a handler."""
    params = parameters(fn)
    event_param = params[0] if params else None
    event_schema = event_param.schema if event_param else {}
    state = {p.name: p.schema for p in params[1:]}
    defs = _hoist_defs(state)
    state_schema: dict[str, Any] = {"type": "object", "properties": state}
    if defs:
        state_schema["$defs"] = defs
    return event_param, params[1:], event_schema, state_schema


def handler(fn: Callable[..., Any]) -> HandlerFactory:
    """Make ``fn(event, **state)`` an event handler factory."""
    return HandlerFactory(fn)


# ---------------------------------------------------------------------------
# patterns


class _SelfRef:
    """``SELF.result`` / ``SELF.factory`` inside a pattern body."""

    @property
    def result(self) -> OpaqueRef[Any]:
        frame = current_frame()
        if frame is None:
            raise CapabilityError("use", "SELF", "outside a pattern body")
        return OpaqueRef(frame.self_cell, (), None, frame)

    @property
    def factory(self) -> Any:
        frame = current_frame()
        if frame is None:
            raise CapabilityError("use", "SELF", "outside a pattern body")
        return _SelfFactoryMarker()


#: how many ``SELF.factory`` markers were written into graphs so far: a trace that wrote
#: none made a graph with none, so the runner need not look for them (see ``_self_free``)
_self_markers = [0]


class _SelfFactoryMarker:
    def __ck_to_json__(self) -> Any:
        _self_markers[0] += 1
        return {"$self": "factory"}


def _self_free(made: Pattern, markers_before: int) -> Pattern:
    """Mark ``made`` as holding no ``SELF.factory`` marker if its trace wrote none."""
    made.self_free = _self_markers[0] == markers_before
    return made


SELF = _SelfRef()


class Pattern(Factory):
    """A pattern factory: the recorded graph plus its schemas."""

    kind = "pattern"

    def __init__(self, fn: Callable[..., Any] | None, graph: dict[str, Any], name: str,
                 digest: str | None = None) -> None:
        self.fn = fn
        self.graph = graph
        self.name = name
        self.__name__ = name
        self.__qualname__ = getattr(fn, "__qualname__", name) if fn else name
        self.__module__ = getattr(fn, "__module__", "__main__") if fn else "__main__"
        self.curried = ()
        self._hash: str | None = digest  # given by the builder, which hashes as it traces
        #: known to hold no ``SELF.factory`` marker (set by the builder; else looked for)
        self.self_free = False
        #: the functions and patterns its nodes use, kept alive with it (the registry
        #: holds them weakly: a dropped pattern leaves no entry)
        self.keep: list[Any] = []

    @property
    def argument_schema(self) -> Any:
        return self.graph["argumentSchema"]

    @property
    def result_schema(self) -> Any:
        return self.graph["resultSchema"]

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = _digest(self.graph)
        return self._hash

    def module(self) -> dict[str, Any]:
        ref = impls.ref_of(self.fn) if self.fn is not None else self.name
        return {"type": "pattern", "ref": ref, "hash": self.hash}

    def to_json(self) -> dict[str, Any]:
        """The recorded graph (SPEC §4 shape, plus the cause components in ``cells``)."""
        return self.graph

    def sigil(self) -> dict[str, Any]:
        return super().to_json()

    def __ck_to_json__(self) -> dict[str, Any]:
        return self.sigil()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pattern)
            and other.hash == self.hash
            and other.curried == self.curried
        )

    def __hash__(self) -> int:
        return hash(self.hash)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        argument = _argument_from_call(args, kwargs)
        frame = current_frame()
        if frame is not None:
            return self._node(frame, argument)
        rframe = runtime_frame.get()
        if rframe is not None:
            return rframe.instantiate(self, argument)
        raise TypeError(
            f"call {self.name} inside a pattern body or handler; "
            f"to start it use rt.run({self.name}, argument)"
        )

    def _node(self, frame: BuilderFrame, argument: Any, helper: str = "pattern") -> OpaqueRef[Any]:
        if self.curried:  # SPEC §8: curried values merge into the argument object
            argument = merge_argument(self, argument)
        registry.register_pattern(self)
        frame.keep_once(self)
        inputs: list[str] = []
        binding = bind(frame, argument, inputs)
        module = self.module()
        # identified by its call site (SPEC §6), not by its graph: an edit inside the nested
        # pattern keeps this id, so its inner cells keep theirs (and their state)
        return add_node(frame, helper, module, binding, inputs, f"pattern:{self.name}", None,
                        self.graph.get("resultSchema"), name=self.name, normalized=True)

    def __repr__(self) -> str:
        return f"<Pattern {self.name} nodes={len(self.graph['nodes'])}>"


def _argument_from_call(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    if args and kwargs:
        raise TypeError("pass a pattern's argument either as one dict or as keywords")
    if len(args) > 1:
        raise TypeError("a pattern takes one argument object (or keywords)")
    return args[0] if args else kwargs


@overload
def pattern(fn: Callable[..., Any], *, name: str | None = None,
            argument_schema: Any = None, result_schema: Any = None) -> Pattern: ...


@overload
def pattern(fn: None = None, *, name: str | None = None, argument_schema: Any = None,
            result_schema: Any = None) -> Callable[[Callable[..., Any]], Pattern]: ...


def pattern(fn: Callable[..., Any] | None = None, *, name: str | None = None,
            argument_schema: Any = None, result_schema: Any = None
            ) -> Pattern | Callable[[Callable[..., Any]], Pattern]:
    """Run ``fn`` once against opaque refs and return a ``Pattern`` factory.

    The argument is an object and every parameter is one of its keys, named
    by the parameter: ``def P(config: Config)`` reads ``{"config": {...}}``
    and gets that value as ``config``, whatever the annotation (a pydantic
    model or TypedDict included, even as the only parameter).  The
    annotations and defaults give the argument schema, unless
    ``argument_schema=`` is passed; then it is used as given and the
    parameters still name its keys.
    """
    if fn is None:
        return lambda f: pattern(f, name=name, argument_schema=argument_schema,
                                 result_schema=result_schema)
    params = parameters(fn)
    if argument_schema is None:  # one rule for every parameter (issue 17 item 8)
        props = {p.name: p.schema for p in params}
        defs = _hoist_defs(props)
        argument_schema = {"type": "object", "properties": props}
        if defs:
            argument_schema["$defs"] = defs
    if result_schema is None:
        ret = _resolve_hints(fn).get("return")
        result_schema = schema_for(ret)[0] if ret is not None else None

    def body(frame: BuilderFrame) -> Any:
        root: OpaqueRef[Any] = OpaqueRef(frame.argument, (), argument_schema, frame)
        call_args = [root.key(p.name) for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
        call_kwargs = {
            p.name: root.key(p.name) for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY
        }
        return fn(*call_args, **call_kwargs)

    markers = _self_markers[0]
    keep: list[Any] = []
    graph, captures, loose = _trace(body, getattr(fn, "__name__", "pattern"), argument_schema,
                                    result_schema, author=fn, keep=keep)
    if captures:
        raise CapabilityError(
            "capture", "outer", f"pattern {fn.__name__}: a pattern defined inside another body "
            "cannot use that body's refs; pass them as its argument"
        )
    digest = _graph_digest(graph, loose)
    fn_name: str = getattr(fn, "__name__", "pattern")
    made = _self_free(Pattern(fn, graph, name or fn_name, digest), markers)
    made.keep = keep
    registry.register_pattern(made)
    return made


recipe = pattern


def trace(body: Callable[[BuilderFrame], Any], name: str, argument_schema: Any,
          result_schema: Any, parent: BuilderFrame | None = None,
          keep: list[Any] | None = None
          ) -> tuple[dict[str, Any], list[tuple[str, OpaqueRef[Any]]]]:
    """Run ``body`` in a new builder frame: the graph JSON and the outer refs it captured.

    ``keep`` collects what the resulting ``Pattern`` must hold (``Pattern.keep``).
    """
    graph, captures, _ = _trace(body, name, argument_schema, result_schema, parent, keep=keep)
    return graph, captures


def _trace(body: Callable[[BuilderFrame], Any], name: str, argument_schema: Any,
           result_schema: Any, parent: BuilderFrame | None = None,
           author: Callable[..., Any] | None = None, keep: list[Any] | None = None
           ) -> tuple[dict[str, Any], list[tuple[str, OpaqueRef[Any]]], list[int]]:
    """``trace``, plus the nodes whose binding ``bind`` did not make (for ``_graph_digest``).

    ``author`` is the function whose locals name the cells (its variables).
    """
    frame = BuilderFrame(parent if parent is not None else current_frame(), name)
    frame.author_code = getattr(author, "__code__", None)
    if keep is not None:
        frame.keep = keep
    token = _frames.set(frame)
    try:
        returned = body(frame)
        if isinstance(returned, Pattern):
            returned = returned._node(frame, {})
        result = bind(frame, returned, [])
        _name_result_cells(frame, returned)
        frame.name_by_variables()
        _name_nodes(frame)
        frame.finish_causes()
    finally:
        frame.author_frame = None
        _frames.reset(token)
    initial = {c.key: c.initial for c in frame.cells if c.initial is not MISSING}
    graph: dict[str, Any] = {
        "name": name,
        "argumentSchema": argument_schema,
        "resultSchema": result_schema,
        "initial": initial,
        "result": result,
        "nodes": frame.nodes,
        "cells": [c.to_json() for c in frame.cells],
    }
    return graph, [(local, ref) for local, ref in frame.captured.values()], frame.loose


# ---------------------------------------------------------------------------
# pattern hashes


















def _name_nodes(frame: BuilderFrame) -> None:
    """A node whose function has no name of its own (a lambda) is named by its output."""
    names = {c.key: c.name for c in frame.cells if c.name is not None}
    for node in frame.nodes:
        if node.get("name") in (None, "<lambda>") and node["outputs"] in names:
            node["name"] = names[node["outputs"]]


def _name_result_cells(frame: BuilderFrame, returned: Any) -> None:
    if isinstance(returned, dict):
        for key, value in returned.items():
            if isinstance(value, OpaqueRef) and not value._path and value._bcell.name is None:
                value._bcell.name = str(key)
    elif isinstance(returned, OpaqueRef) and returned._bcell.name is None:
        returned._bcell.name = "result"


# ---------------------------------------------------------------------------
# Cell.of inside bodies, map and filter


def _cell_of_hook(value: Any, schema: Any) -> Any:
    frame = current_frame()
    if frame is not None:
        plain = to_json_value(value)
        full_schema = dict(schema or {})
        if plain is not None:
            full_schema["default"] = plain
        out = frame.new_cell("cell", None, [], plain, full_schema or None)
        out.initial = plain
        return OpaqueRef(out, (), full_schema or None, frame)
    rframe = runtime_frame.get()
    if rframe is not None:
        return rframe.new_cell(value, schema)
    return None


def _collection_node(kind: str, source: Cell[Any], fn: Callable[..., Any]) -> OpaqueRef[Any]:
    frame = current_frame()
    if frame is None:
        raise CapabilityError(kind, "live", "a cell outside a pattern body (use it in a pattern)")
    n = _arity(fn)

    def body(sub: BuilderFrame) -> Any:
        arg: OpaqueRef[Any] = OpaqueRef(sub.argument, (), None, sub)
        call = [arg.key("element"), arg.key("index"), arg.key("array")][: max(n, 1)]
        return fn(*call)

    markers = _self_markers[0]
    keep: list[Any] = []
    graph, captures, loose = _trace(body, f"{kind}:{getattr(fn, '__name__', 'fn')}", None, None,
                                    parent=frame, author=fn, keep=keep)
    op = _self_free(Pattern(None, graph, graph["name"], _graph_digest(graph, loose)), markers)
    op.keep = keep
    frame.keep.append(op)
    registry.register_pattern(op)
    inputs: list[str] = []
    binding = {
        "list": bind(frame, source, inputs),
        "captured": bind(frame, {local: ref for local, ref in captures}, inputs),
    }
    config = {"op": op.hash}
    module = {"type": "builtin", "ref": kind}
    # the call site, not the callback's sub-graph, names the node (SPEC §6): editing the
    # callback keeps the node and each element's instance (and its state)
    return add_node(frame, kind, module, binding, inputs, kind, config, {"type": "array"},
                    name=kind, normalized=True, cause_config=cause_config_of(None, binding))


def _cell_map_hook(cell: Cell[Any], fn: Callable[..., Any]) -> Any:
    return _collection_node("map", cell, fn)


def _cell_filter_hook(cell: Cell[Any], fn: Callable[..., Any]) -> Any:
    return _collection_node("filter", cell, fn)


set_hook("cell_of", _cell_of_hook)
set_hook("map", _cell_map_hook)
set_hook("filter", _cell_filter_hook)
registry.provide_trusted_names(
    Cell=Cell, Stream=Stream, lift=lift, handler=handler, pattern=pattern, Default=Default
)
