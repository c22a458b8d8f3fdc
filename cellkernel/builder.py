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

import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from . import implementations as impls
from .cells import Cell, Stream, set_hook
from .errors import CapabilityError, CauseError
from .values import JSON, MISSING, to_json_value

T = TypeVar("T")

NAME = "$NAME"


# ---------------------------------------------------------------------------
# frames


@dataclass(eq=False)
class BCell:
    """An internal cell of a pattern being built: the components of its cause."""

    key: str
    helper: str
    impl: str | None = None
    inputs: list[str] = field(default_factory=list)
    config: JSON = None
    index: int = 0
    cause: Any = None
    name: str | None = None
    initial: Any = MISSING
    schema: Any = None
    stream: bool = False
    connected: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "helper": self.helper}
        if self.cause is not None:
            out["cause"] = self.cause
        else:
            out.update(impl=self.impl, inputs=self.inputs, index=self.index, config=self.config)
        if self.name is not None:
            out["name"] = self.name
        if self.schema is not None:
            out["schema"] = self.schema
        if self.stream:
            out["stream"] = True
        return out


class BuilderFrame:
    """The graph being recorded by one running author function."""

    def __init__(self, parent: BuilderFrame | None, name: str) -> None:
        self.parent = parent
        self.name = name
        self.cells: list[BCell] = []
        self.nodes: list[dict[str, Any]] = []
        self.argument = BCell("argument", "argument", connected=True)
        self.self_cell = BCell("self", "self", connected=True)
        self.captured: dict[int, tuple[str, OpaqueRef]] = {}
        self._signatures: dict[str, int] = {}

    def new_cell(self, helper: str, impl: str | None, inputs: list[str], config: JSON,
                 schema: Any = None, stream: bool = False) -> BCell:
        signature = json.dumps([helper, impl, sorted(inputs), config], sort_keys=True, default=str)
        index = self._signatures.get(signature, 0)
        self._signatures[signature] = index + 1
        cell = BCell(f"c{len(self.cells)}", helper, impl, sorted(inputs), config, index,
                     schema=schema, stream=stream)
        self.cells.append(cell)
        return cell

    def owns(self, bcell: BCell) -> bool:
        return bcell is self.argument or bcell is self.self_cell or bcell in self.cells

    def capture(self, ref: OpaqueRef) -> OpaqueRef:
        """A ref of an outer frame used here becomes part of this frame's argument."""
        key = id(ref._bcell), tuple(ref._path)
        ident = hash(key)
        if ident not in self.captured:
            self.captured[ident] = (f"k{len(self.captured)}", ref)
        local = self.captured[ident][0]
        return OpaqueRef(self.argument, ("$captured", local), ref._schema, self)


_frames: ContextVar[BuilderFrame | None] = ContextVar("cellkernel_builder_frame", default=None)


def current_frame() -> BuilderFrame | None:
    return _frames.get()


#: Set by the runner while a lift or handler runs (a "runtime frame").
runtime_frame: ContextVar[Any] = ContextVar("cellkernel_runtime_frame", default=None)


# ---------------------------------------------------------------------------
# opaque references


class OpaqueRef(Cell[T]):
    """A builder-time reference to a cell of the pattern being defined.

    It cannot be read (``CapabilityError``): values exist only at run time.
    Keys, ``map``, ``filter`` and ``.for_()`` work as on cells.
    """

    __slots__ = ("_bcell", "_frame")

    def __init__(self, bcell: BCell, path: tuple[str | int, ...], schema: Any,
                 frame: BuilderFrame) -> None:
        super().__init__(None, None, None, path, schema, None, "opaque")
        self._bcell = bcell
        self._frame = frame

    def key(self, *path: str | int) -> OpaqueRef[Any]:
        if not path:
            return self
        from . import schema as schemas

        child = schemas.at_path(self._schema, path) if self._schema else None
        return OpaqueRef(self._bcell, self._path + tuple(path), child, self._frame)

    def for_(self, cause: Any, flexible: bool = False) -> OpaqueRef[T]:
        bcell = self._bcell
        if bcell.connected or self._path:
            if flexible:
                return self
            raise CauseError(
                f".for_({cause!r}) must come before the cell is used as an input or exposed; "
                "this reference is already connected"
            )
        if bcell.cause is not None:
            if flexible:
                bcell.cause = [bcell.cause, cause]
                return self
            raise CauseError(f"this cell already has the cause {bcell.cause!r}")
        bcell.cause = to_json_value(cause)
        if bcell.name is None and isinstance(cause, str):
            bcell.name = cause
        return self

    @property
    def is_stream(self) -> bool:
        return self._bcell.stream and not self._path

    def __ck_to_json__(self) -> Any:
        raise CapabilityError("store", "opaque", "a builder reference outside its pattern")

    def __bool__(self) -> bool:
        raise CapabilityError(
            "test the truth of", "opaque", "a builder reference (use if_else/when/unless)"
        )

    def __format__(self, spec: str) -> str:
        raise CapabilityError("format", "opaque", "a builder reference (use fmt(...))")

    def __iter__(self) -> Any:
        raise CapabilityError("iterate", "opaque", "a builder reference (use .map(...))")

    def _arith(self, *_: Any) -> Any:
        raise CapabilityError(
            "compute with", "opaque", "a builder reference (wrap the computation in a lift)"
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __floordiv__ = __mod__ = __lt__ = __le__ = __gt__ = __ge__ = _arith
    __int__ = __float__ = __len__ = _arith  # type: ignore[assignment]

    def __repr__(self) -> str:
        label = self._bcell.name or self._bcell.key
        path = "/".join(str(p) for p in self._path)
        return f"<OpaqueRef {label}{'/' + path if path else ''}>"

    def send(self, event: Any = None) -> None:
        raise CapabilityError("send to", "opaque", "a builder reference")

    def map(self, fn: Callable[..., Any]) -> OpaqueRef[Any]:
        return _collection_node("map", self, fn)

    def filter(self, fn: Callable[..., Any]) -> OpaqueRef[Any]:
        return _collection_node("filter", self, fn)


def bind(frame: BuilderFrame, value: Any, inputs: list[str]) -> Any:
    """Turn a helper argument into binding JSON; collect input keys for the cause."""

    def hook(v: Any) -> Any:
        if isinstance(v, OpaqueRef):
            ref = v if v._frame is frame or frame.owns(v._bcell) else frame.capture(v)
            ref._bcell.connected = True
            if ref._bcell is not v._bcell:
                v._bcell.connected = True
            path = list(ref._path)
            inputs.append(ref._bcell.key + ("/" + "/".join(str(p) for p in path) if path else ""))
            return {"$alias": {"cell": ref._bcell.key, "path": path}}
        if isinstance(v, Cell):
            if v._id is None:
                raise CauseError(
                    "a Cell.of(...) created outside the pattern cannot be an input: create it "
                    "inside the pattern body, or give it an identity with rt.get_cell(cause)"
                )
            inputs.append(v._id + ("/" + "/".join(map(str, v._path)) if v._path else ""))
            return v.get_as_link()
        return NotImplemented

    return to_json_value(value, hook=hook)


# ---------------------------------------------------------------------------
# schemas from annotations


class _DefaultMarker:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Default(Generic[T]):
    """``Default[T, v]``: a parameter of type ``T`` whose schema default is ``v``."""

    def __class_getitem__(cls, params: Any) -> Any:
        if not isinstance(params, tuple) or len(params) != 2:
            raise TypeError("use Default[T, value]")
        kind, value = params
        return typing.Annotated[kind, _DefaultMarker(value)]


def _unwrap(annotation: Any) -> tuple[Any, Any, str | None]:
    """(type, default or MISSING, marker 'cell'/'stream'/None)."""
    default: Any = MISSING
    mark: str | None = None
    if typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        annotation = args[0]
        for extra in args[1:]:
            if isinstance(extra, _DefaultMarker):
                default = extra.value
    origin = typing.get_origin(annotation)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Cell):
        mark = "stream" if issubclass(origin, Stream) else "cell"
        args = typing.get_args(annotation)
        annotation = args[0] if args else Any
        inner_type, inner_default, _ = _unwrap(annotation)
        annotation = inner_type
        if default is MISSING:
            default = inner_default
    elif isinstance(annotation, type) and issubclass(annotation, Cell):
        mark = "stream" if issubclass(annotation, Stream) else "cell"
        annotation = Any
    return annotation, default, mark


def schema_for(annotation: Any) -> tuple[dict[str, Any], Any, str | None]:
    """JSON schema (through pydantic), default and Cell/Stream marker of an annotation."""
    kind, default, mark = _unwrap(annotation)
    schema: dict[str, Any] = {}
    if kind is not Any and kind is not inspect.Parameter.empty:
        try:
            from pydantic import TypeAdapter

            try:
                schema = TypeAdapter(kind).json_schema(mode="serialization")
            except Exception:
                # pydantic refuses typing.TypedDict before Python 3.12, also nested
                schema = TypeAdapter(_typeddict_compat(kind)).json_schema(mode="serialization")
        except Exception:
            schema = {}
    schema.pop("title", None)
    if mark == "cell":
        schema["asCell"] = True
    elif mark == "stream":
        schema["asStream"] = True
    if default is not MISSING:
        schema["default"] = to_json_value(default)
    return schema, default, mark


def _typeddict_compat(tp: Any) -> Any:
    """``tp`` with every ``typing.TypedDict`` in it rebuilt as a ``typing_extensions`` one.

    pydantic refuses ``typing.TypedDict`` before Python 3.12, also nested
    (``list[Item]``, ``Item | None``).
    """
    import typing_extensions

    if typing.is_typeddict(tp) and type(tp).__module__ == "typing":
        required = getattr(tp, "__required_keys__", frozenset())
        fields: dict[str, Any] = {}
        for name, hint in _resolve_hints(tp).items():
            if typing.get_origin(hint) in (typing.Required, typing.NotRequired):
                hint = typing.get_args(hint)[0]
            hint = _typeddict_compat(hint)
            wrap = typing_extensions.Required if name in required else typing_extensions.NotRequired
            fields[name] = wrap[hint]
        made = typing_extensions.TypedDict(tp.__name__, fields)  # type: ignore[operator]
        made.__module__ = tp.__module__
        return made
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None or not args:
        return tp
    if origin is typing.Annotated:
        return typing.Annotated[(_typeddict_compat(args[0]), *args[1:])]
    new = tuple(_typeddict_compat(a) for a in args)
    if new == args:
        return tp
    if origin in (typing.Union, types.UnionType):
        return typing.Union[new]
    try:
        return origin[new if len(new) > 1 else new[0]]
    except TypeError:
        return tp


def _hoist_defs(properties: dict[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    for prop in properties.values():
        if isinstance(prop, dict) and "$defs" in prop:
            defs.update(prop.pop("$defs"))
    return defs


def _resolve_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        return dict(getattr(fn, "__annotations__", {}))


@dataclass
class Param:
    name: str
    kind: inspect._ParameterKind
    schema: dict[str, Any]
    mark: str | None
    plain: bool  # annotated with a plain (non-Cell) type


def parameters(fn: Callable[..., Any], skip: int = 0) -> list[Param]:
    hints = _resolve_hints(fn)
    out: list[Param] = []
    for i, (name, param) in enumerate(inspect.signature(fn).parameters.items()):
        if i < skip:
            continue
        annotation = hints.get(name, inspect.Parameter.empty)
        schema, default, mark = schema_for(annotation)
        if default is MISSING and param.default is not inspect.Parameter.empty:
            try:
                schema["default"] = to_json_value(param.default)
            except ValueError:
                pass
        plain = annotation is not inspect.Parameter.empty and mark is None
        out.append(Param(name, param.kind, schema, mark, plain))
    return out


# ---------------------------------------------------------------------------
# closures


def closure_inputs(fn: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a function's closure into captured refs/cells and constants."""
    refs: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    code = getattr(fn, "__code__", None)
    closure = getattr(fn, "__closure__", None)
    if code is None or not closure:
        return refs, constants
    for name, cell in zip(code.co_freevars, closure, strict=True):
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, Cell) and (isinstance(value, OpaqueRef) or value._id is not None):
            refs[name] = value
        elif _holds_refs(value):
            refs[name] = value
        else:
            constants[name] = impls.constant_json(value)
    return refs, constants


def _holds_refs(value: Any) -> bool:
    if isinstance(value, dict | list | tuple):
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, Cell):
                return True
            if isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, list | tuple):
                stack.extend(v)
    return False


def rebind(fn: Callable[..., Any], values: dict[str, Any]) -> Callable[..., Any]:
    """A copy of ``fn`` whose closure cells hold ``values`` instead of refs."""
    if not values or not isinstance(fn, types.FunctionType):
        return fn
    cells = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
        cells.append(types.CellType(values[name]) if name in values else cell)
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, tuple(cells))
    clone.__kwdefaults__ = fn.__kwdefaults__
    return clone


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
        from .factories import factory_sigil

        return factory_sigil(self)

    def __ck_to_json__(self) -> dict[str, Any]:
        return self.to_json()

    def __ck_ref_json__(self) -> Any:
        return self.module().get("hash")

    def curry(self, value: Any, arg_index: int | None = None) -> Factory:
        from .factories import curry

        return curry(self, value, arg_index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Factory):
            return NotImplemented
        return json.dumps(self.to_json(), sort_keys=True) == json.dumps(other.to_json(), sort_keys=True)

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
        self.params = parameters(fn)
        hints = _resolve_hints(fn)
        ret = hints.get("return", inspect.Parameter.empty)
        self.result_schema: dict[str, Any] | None = (
            schema_for(ret)[0] if ret is not inspect.Parameter.empty and ret is not None else None
        )
        self.is_async = inspect.iscoroutinefunction(fn)
        self.curried = ()
        self._module: dict[str, Any] | None = None
        types_ = {p.name: p.schema for p in self.params}
        defs = _hoist_defs(types_)
        self.argument_schema: dict[str, Any] = {"type": "object", "properties": types_}
        if defs:
            self.argument_schema["$defs"] = defs
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = getattr(fn, "__name__", "lift")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", "__main__")
        self.__wrapped__ = fn

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
            from .factories import apply_curried_call

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

    def _node(self, frame: BuilderFrame, args: Sequence[Any], kwargs: dict[str, Any]) -> OpaqueRef[Any]:
        refs, constants = closure_inputs(self.fn)
        module = self.module(constants)
        inputs: list[str] = []
        binding: dict[str, Any] = {
            "args": bind(frame, list(args), inputs),
            "kwargs": bind(frame, kwargs, inputs),
        }
        if refs:
            binding["closure"] = bind(frame, refs, inputs)
        impl = module.get("hash") or module["ref"]
        return add_node(frame, self.helper, module, binding, inputs, impl, None, self.result_schema,
                        name=self.__name__)


def _python_module(fn: Callable[..., Any], constants: dict[str, Any] | None) -> dict[str, Any]:
    digest, source = impls.fingerprint_function(fn, constants)
    # the latest definition wins: a re-defined function with the same fingerprint (a
    # re-executed notebook cell, a second test) must run with its own closure and globals
    impls._registry[digest] = fn
    module: dict[str, Any] = {"type": "python", "ref": impls.ref_of(fn), "hash": digest}
    if source is not None:
        module["source"] = source
    if constants:
        module["constants"] = constants
    return module


def add_node(
    frame: BuilderFrame,
    helper: str,
    module: dict[str, Any],
    binding: Any,
    inputs: list[str],
    impl: str | None,
    config: JSON,
    schema: Any,
    *,
    stream: bool = False,
    name: str | None = None,
    initial: Any = MISSING,
) -> OpaqueRef[Any]:
    """Record a node and its output cell; return a ref to the output."""
    out = frame.new_cell(helper, impl, inputs, config, schema, stream)
    if stream:
        out.initial = {"$stream": True}
    elif initial is not MISSING:
        out.initial = initial
    node = {"helper": helper, "module": module, "inputs": binding, "outputs": out.key}
    if config is not None:
        node["config"] = config
    if name:
        node["name"] = name
    frame.nodes.append(node)
    return OpaqueRef(out, (), schema, frame)


def lift(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
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
        params = parameters(fn)
        self.event_param = params[0] if params else None
        self.params = params[1:]
        self.curried = ()
        self._module: dict[str, Any] | None = None
        self.event_schema = self.event_param.schema if self.event_param else {}
        state = {p.name: p.schema for p in self.params}
        defs = _hoist_defs(state)
        self.state_schema: dict[str, Any] = {"type": "object", "properties": state}
        if defs:
            self.state_schema["$defs"] = defs
        self.__name__ = getattr(fn, "__name__", "handler")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", "__main__")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

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
        curried_event: list[list[Any]] = []
        if self.curried:  # SPEC §8: curried state merges by name; index 0 is the event
            from .factories import apply_curried_state

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
                        {"asStream": True}, stream=True, name=self.__name__)


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


class _SelfFactoryMarker:
    def __ck_to_json__(self) -> Any:
        return {"$self": "factory"}


SELF = _SelfRef()


class Pattern(Factory):
    """A pattern factory: the recorded graph plus its schemas."""

    kind = "pattern"

    def __init__(self, fn: Callable[..., Any] | None, graph: dict[str, Any], name: str) -> None:
        self.fn = fn
        self.graph = graph
        self.name = name
        self.__name__ = name
        self.__qualname__ = getattr(fn, "__qualname__", name) if fn else name
        self.__module__ = getattr(fn, "__module__", "__main__") if fn else "__main__"
        self.curried = ()
        self._hash: str | None = None

    @property
    def argument_schema(self) -> Any:
        return self.graph["argumentSchema"]

    @property
    def result_schema(self) -> Any:
        return self.graph["resultSchema"]

    @property
    def hash(self) -> str:
        if self._hash is None:
            # over the graph as stored (2.0 -> 2), so a graph read back hashes the same
            text = json.dumps(to_json_value(self.graph), sort_keys=True, separators=(",", ":"))
            self._hash = hashlib.sha256(text.encode()).hexdigest()
        return self._hash

    def module(self) -> dict[str, Any]:
        ref = impls.ref_of(self.fn) if self.fn is not None else self.name
        return {"type": "pattern", "ref": ref, "hash": self.hash}

    def to_json(self) -> dict[str, Any]:  # type: ignore[override]
        """The recorded graph (SPEC §4 shape, plus the cause components in ``cells``)."""
        return self.graph

    def sigil(self) -> dict[str, Any]:
        return super().to_json()

    def __ck_to_json__(self) -> dict[str, Any]:
        return self.sigil()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.hash == self.hash and other.curried == self.curried

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
            f"call {self.name} inside a pattern body or handler; to start it use rt.run({self.name}, argument)"
        )

    def _node(self, frame: BuilderFrame, argument: Any, helper: str = "pattern") -> OpaqueRef[Any]:
        from .runner import register_pattern

        if self.curried:  # SPEC §8: curried values merge into the argument object
            from .factories import merge_argument

            argument = merge_argument(self, argument)
        register_pattern(self)
        inputs: list[str] = []
        binding = bind(frame, argument, inputs)
        module = self.module()
        return add_node(frame, helper, module, binding, inputs, module["hash"], None,
                        self.graph.get("resultSchema"), name=self.name)

    def __repr__(self) -> str:
        return f"<Pattern {self.name} nodes={len(self.graph['nodes'])}>"


def _argument_from_call(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    if args and kwargs:
        raise TypeError("pass a pattern's argument either as one dict or as keywords")
    if len(args) > 1:
        raise TypeError("a pattern takes one argument object (or keywords)")
    return args[0] if args else kwargs


def pattern(fn: Callable[..., Any] | None = None, *, name: str | None = None,
            argument_schema: Any = None, result_schema: Any = None) -> Any:
    """Run ``fn`` once against opaque refs and return a ``Pattern`` factory."""
    if fn is None:
        return lambda f: pattern(f, name=name, argument_schema=argument_schema,
                                 result_schema=result_schema)
    params = parameters(fn)
    whole = len(params) == 1 and _is_model(_resolve_hints(fn).get(params[0].name))
    if argument_schema is None:
        if whole:
            argument_schema = params[0].schema
        else:
            props = {p.name: p.schema for p in params}
            defs = _hoist_defs(props)
            argument_schema = {"type": "object", "properties": props}
            if defs:
                argument_schema["$defs"] = defs
    if result_schema is None:
        ret = _resolve_hints(fn).get("return")
        result_schema = schema_for(ret)[0] if ret is not None else None

    def body(frame: BuilderFrame) -> Any:
        root = OpaqueRef(frame.argument, (), argument_schema, frame)
        if whole:
            return fn(root)
        call_args = [root.key(p.name) for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
        call_kwargs = {p.name: root.key(p.name) for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY}
        return fn(*call_args, **call_kwargs)

    graph, captures = trace(body, getattr(fn, "__name__", "pattern"), argument_schema, result_schema)
    if captures:
        raise CapabilityError(
            "capture", "outer", f"pattern {fn.__name__}: a pattern defined inside another body "
            "cannot use that body's refs; pass them as its argument"
        )
    made = Pattern(fn, graph, name or getattr(fn, "__name__", "pattern"))
    from .runner import register_pattern

    register_pattern(made)
    return made


recipe = pattern


def _is_model(annotation: Any) -> bool:
    try:
        from pydantic import BaseModel

        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return True
    except ImportError:  # pragma: no cover
        pass
    return typing.is_typeddict(annotation) if annotation is not None else False


def trace(body: Callable[[BuilderFrame], Any], name: str, argument_schema: Any,
          result_schema: Any, parent: BuilderFrame | None = None
          ) -> tuple[dict[str, Any], list[tuple[str, OpaqueRef[Any]]]]:
    """Run ``body`` in a new builder frame: the graph JSON and the outer refs it captured."""
    frame = BuilderFrame(parent if parent is not None else current_frame(), name)
    token = _frames.set(frame)
    try:
        returned = body(frame)
        if isinstance(returned, Pattern):
            returned = returned._node(frame, {})
        result = bind(frame, returned, [])
        _name_result_cells(frame, returned)
    finally:
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
    return graph, [(local, ref) for local, ref in frame.captured.values()]


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
    n = len(inspect.signature(fn).parameters)

    def body(sub: BuilderFrame) -> Any:
        arg = OpaqueRef(sub.argument, (), None, sub)
        call = [arg.key("element"), arg.key("index"), arg.key("array")][: max(n, 1)]
        return fn(*call)

    graph, captures = trace(body, f"{kind}:{getattr(fn, '__name__', 'fn')}", None, None, parent=frame)
    op = Pattern(None, graph, graph["name"])
    from .runner import register_pattern

    register_pattern(op)
    inputs: list[str] = []
    binding = {
        "list": bind(frame, source, inputs),
        "captured": bind(frame, {local: ref for local, ref in captures}, inputs),
    }
    config = {"op": op.hash}
    module = {"type": "builtin", "ref": kind}
    return add_node(frame, kind, module, binding, inputs, kind, config, {"type": "array"}, name=kind)


def _cell_map_hook(cell: Cell[Any], fn: Callable[..., Any]) -> Any:
    return _collection_node("map", cell, fn)


def _cell_filter_hook(cell: Cell[Any], fn: Callable[..., Any]) -> Any:
    return _collection_node("filter", cell, fn)


set_hook("cell_of", _cell_of_hook)
set_hook("map", _cell_map_hook)
set_hook("filter", _cell_filter_hook)
impls.provide_trusted_names(lift=lift, handler=handler, pattern=pattern, Default=Default)
