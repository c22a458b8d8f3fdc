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

from cellkernel.data.values import JSON, MISSING, to_json_value
from cellkernel.errors import CapabilityError, CauseError
from cellkernel.patterns import fingerprints as impls
from cellkernel.patterns import registry
from cellkernel.patterns.runner import runtime_frame
from cellkernel.reactive.cells import Cell, Stream, set_hook

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
        # keyed by a (helper, impl, inputs) tuple when the signature is all strings and
        # has no config (no json.dumps per node), else by the JSON text of the signature
        self._signatures: dict[Any, int] = {}
        self._owned: set[int] = set()  # ids of self.cells (kept alive by it): O(1) owns()
        # indices of nodes whose binding did not come from bind(): the hash checks those
        self.loose: list[int] = []

    def new_cell(self, helper: str, impl: str | None, inputs: list[str], config: JSON,
                 schema: Any = None, stream: bool = False) -> BCell:
        ordered = sorted(inputs)
        signature: Any = None
        if config is None and isinstance(helper, str) and (impl is None or isinstance(impl, str)):
            # equal tuples of strings <=> equal JSON texts, and a tuple never equals a text
            signature = (helper, impl, *ordered)
            for i in ordered:
                if not isinstance(i, str):
                    signature = None
                    break
        if signature is None:
            signature = json.dumps([helper, impl, ordered, config], sort_keys=True, default=str)
        index = self._signatures.get(signature, 0)
        self._signatures[signature] = index + 1
        cell = BCell(f"c{len(self.cells)}", helper, impl, ordered, config, index)
        if schema is not None:  # set after: keywords make the dataclass call twice as slow
            cell.schema = schema
        if stream:
            cell.stream = True
        self.cells.append(cell)
        self._owned.add(id(cell))
        return cell

    def owns(self, bcell: BCell) -> bool:
        return bcell is self.argument or bcell is self.self_cell or id(bcell) in self._owned

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
        from cellkernel.data import schema as schemas

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
    mark = len(inputs)
    bound = _bind_plain(frame, value, inputs)
    if bound is NotImplemented:
        del inputs[mark:]  # the walk calls the hook on the same refs again, in the same order
        bound = to_json_value(value, hook=lambda v: _bind_hook(frame, inputs, v))
    return bound


def _bind_hook(frame: BuilderFrame, inputs: list[str], v: Any) -> Any:
    """The ``to_json_value`` hook of ``bind``: refs become aliases, cells links."""
    if isinstance(v, OpaqueRef):
        return _alias(frame, inputs, v)
    if isinstance(v, Cell):
        if v._id is None:
            raise CauseError(
                "a Cell.of(...) created outside the pattern cannot be an input: create it "
                "inside the pattern body, or give it an identity with rt.get_cell(cause)"
            )
        inputs.append(v._id + ("/" + "/".join(map(str, v._path)) if v._path else ""))
        return v.get_as_link()
    return NotImplemented


def _alias(frame: BuilderFrame, inputs: list[str], v: OpaqueRef[Any]) -> dict[str, Any]:
    """A ref as a binding: an alias to its cell (captured first if of an outer frame)."""
    ref = v if v._frame is frame or frame.owns(v._bcell) else frame.capture(v)
    ref._bcell.connected = True
    v._bcell.connected = True
    key = ref._bcell.key
    path = list(ref._path)
    inputs.append(key + "/" + "/".join(map(str, path)) if path else key)
    return {"$alias": {"cell": key, "path": path}}


def _plain_ref(v: Any) -> bool:
    """A ref whose alias ``to_json_value`` would leave as is (a path of str/int)."""
    if type(v) is not OpaqueRef:
        return False
    path = v._path
    return not path or all(type(p) is str or type(p) is int for p in path)


def _bind_plain(frame: BuilderFrame, value: Any, inputs: list[str]) -> Any:
    """``bind`` for the usual helper argument without the generic walk, or ``NotImplemented``.

    Handles plain containers (exact dict with string keys, list, tuple), plain
    scalars and refs with a plain path, which is what a lift's arguments and a
    body's result are; ``to_json_value`` normalising and checking every value was
    most of the cost per node.  The stack visits items in the generic walk's
    order, so captures and input keys come in the same order.  Anything else,
    and a container met twice, is left to the generic walk.
    """
    t = type(value)
    if t is list or t is tuple:  # a lift's args: scalars and refs, checked before any alias
        for item in value:
            ti = type(item)
            if not (ti is str or ti is int or ti is bool or item is None or _plain_ref(item)):
                break
        else:
            items = list(value)
            for i in range(len(items) - 1, -1, -1):
                if type(items[i]) is OpaqueRef:
                    items[i] = _alias(frame, inputs, items[i])
            return items
    elif t is dict and not value:
        return {}
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    seen: set[int] = set()
    while stack:
        parent, key, item = stack.pop()
        t = type(item)
        if t is str or t is int or t is bool or item is None:
            parent[key] = item
        elif t is OpaqueRef:
            if not _plain_ref(item):
                return NotImplemented
            parent[key] = _alias(frame, inputs, item)
        elif t is dict or t is list or t is tuple:
            ident = id(item)
            if ident in seen:
                return NotImplemented
            seen.add(ident)
            if t is dict:
                out: dict[str, Any] = {}
                parent[key] = out
                for k, v in item.items():
                    if type(k) is not str:
                        return NotImplemented
                    out[k] = None  # placeholder: keep the key order of the input
                    stack.append((out, k, v))
            else:
                lst: list[Any] = [None] * len(item)
                parent[key] = lst
                for i, v in enumerate(item):
                    stack.append((lst, i, v))
        elif t is float and item - item == 0.0:  # finite: as to_json_value normalises it
            integral = item.is_integer() and abs(item) < 2**53
            parent[key] = 0 if item == 0.0 else int(item) if integral else item
        else:
            return NotImplemented
    return root[0]


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


#: Signature-derived state of factories, per function shape (see ``_shape_key``).
_shapes: dict[tuple[Any, ...], Any] = {}
_SHAPES_MAX = 4096


def _shape_key(fn: Callable[..., Any], kind: str) -> tuple[Any, ...] | None:
    """A key under which ``fn``'s parameters and schemas are those of every function with it.

    A body calling ``derive(x, lambda v: ...)``, ``computed(...)`` or
    ``x.map(lambda e: ...)`` in a loop makes a new function per call, all with one
    code object; inspecting the signature and building pydantic schemas for each
    was most of the cost of such a node.  Only plain functions qualify whose
    signature and hints follow from the code, the defaults (plain scalars, keyed
    with their types: ``True`` is not ``1``) and annotations that are classes (a
    string or generic annotation may resolve differently each time): ``None`` for
    anything else.
    """
    if type(fn) is not types.FunctionType or fn.__dict__:  # no __wrapped__, __signature__
        return None
    for hint in fn.__annotations__.values():
        if hint is not None and not isinstance(hint, type):
            return None
    defaults: list[Any] = []
    for value in fn.__defaults__ or ():
        if not _plain_default(value):
            return None
        defaults.append((type(value), value))
    for name, value in (fn.__kwdefaults__ or {}).items():
        if not _plain_default(value):
            return None
        defaults.append((name, type(value), value))
    return (kind, fn.__code__, tuple(fn.__annotations__.items()), tuple(defaults))


def _plain_default(value: Any) -> bool:
    t = type(value)
    return t is str or t is int or t is bool or value is None


def _shaped(fn: Callable[..., Any], kind: str, make: Callable[[], T]) -> T:
    """``make()``, cached under ``_shape_key(fn, kind)`` when there is one.

    The cached objects (parameters, schemas) are shared by the factories of one
    shape, as the nodes of one factory already share them; nothing mutates them.
    """
    key = _shape_key(fn, kind)
    if key is None:
        return make()
    found = _shapes.get(key)
    if found is None:
        if len(_shapes) >= _SHAPES_MAX:  # re-executed notebook cells keep making code objects
            _shapes.clear()
        found = _shapes[key] = make()
    return found


def _arity(fn: Callable[..., Any]) -> int:
    """``len(inspect.signature(fn).parameters)``, once per function shape."""
    return _shaped(fn, "arity", lambda: len(inspect.signature(fn).parameters))


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
        from cellkernel.patterns.factories import factory_sigil

        return factory_sigil(self)

    def __ck_to_json__(self) -> dict[str, Any]:
        return self.to_json()

    def __ck_ref_json__(self) -> Any:
        return self.module().get("hash")

    def curry(self, value: Any, arg_index: int | None = None) -> Factory:
        from cellkernel.patterns.factories import curry

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
            from cellkernel.patterns.factories import apply_curried_call

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
                        name=self.__name__, normalized=True)


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
    digest, source = impls.fingerprint_function(fn, constants)
    # the latest definition wins: a re-defined function with the same fingerprint (a
    # re-executed notebook cell, a second test) must run with its own closure and globals
    registry.register_function(digest, fn)
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
    normalized: bool = False,
) -> OpaqueRef[Any]:
    """Record a node and its output cell; return a ref to the output.

    ``normalized``: ``binding`` is made of ``bind`` results (plain JSON already), so
    the pattern hash need not check it (see ``_graph_digest``).
    """
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
    if not normalized:
        frame.loose.append(len(frame.nodes))
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
        curried_event: list[list[Any]] = []
        if self.curried:  # SPEC §8: curried state merges by name; index 0 is the event
            from cellkernel.patterns.factories import apply_curried_state

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
        if self.curried:  # SPEC §8: curried values merge into the argument object
            from cellkernel.patterns.factories import merge_argument

            argument = merge_argument(self, argument)
        registry.register_pattern(self)
        inputs: list[str] = []
        binding = bind(frame, argument, inputs)
        module = self.module()
        return add_node(frame, helper, module, binding, inputs, module["hash"], None,
                        self.graph.get("resultSchema"), name=self.name, normalized=True)

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

    markers = _self_markers[0]
    graph, captures, loose = _trace(body, getattr(fn, "__name__", "pattern"), argument_schema,
                                    result_schema)
    if captures:
        raise CapabilityError(
            "capture", "outer", f"pattern {fn.__name__}: a pattern defined inside another body "
            "cannot use that body's refs; pass them as its argument"
        )
    digest = _graph_digest(graph, loose)
    made = _self_free(Pattern(fn, graph, name or getattr(fn, "__name__", "pattern"), digest),
                      markers)
    registry.register_pattern(made)
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
    graph, captures, _ = _trace(body, name, argument_schema, result_schema, parent)
    return graph, captures


def _trace(body: Callable[[BuilderFrame], Any], name: str, argument_schema: Any,
           result_schema: Any, parent: BuilderFrame | None = None
           ) -> tuple[dict[str, Any], list[tuple[str, OpaqueRef[Any]]], list[int]]:
    """``trace``, plus the nodes whose binding ``bind`` did not make (for ``_graph_digest``)."""
    from cellkernel.patterns.runner import collector_paused

    with collector_paused():  # the graph's objects all survive: no collections meanwhile
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
    return graph, [(local, ref) for local, ref in frame.captured.values()], frame.loose


# ---------------------------------------------------------------------------
# pattern hashes


def _digest(graph: Any) -> str:
    """SHA-256 over the graph as stored (2.0 -> 2), so a graph read back hashes the same."""
    text = json.dumps(to_json_value(graph), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _graph_digest(graph: dict[str, Any], loose: Sequence[int]) -> str:
    """``_digest(graph)`` for a graph ``_trace`` just built, without the normalised copy.

    Copying the whole graph through ``to_json_value`` was most of the cost of
    defining a large pattern.  The bindings (the bulk) come from ``bind`` and are
    plain JSON already; when the other parts that may hold non-canonical values
    (schemas, modules, configs, causes, initial values) are plain too, the graph
    dumps to the same text as its normalised copy.  Otherwise: the generic path.
    """
    if _graph_is_plain(graph, loose):
        return _plain_digest(graph)
    return _digest(graph)


# no cycles to look for: bind makes fresh trees, and _walk_plain refuses a container met twice
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode
_CHUNK = 100


def _plain_digest(graph: dict[str, Any]) -> str:
    """SHA-256 of ``json.dumps(graph, sort_keys=True, separators=(",", ":"))``, in pieces.

    One ``json.dumps`` of a 100 000-node graph builds a 50 MB text out of
    millions of small strings, and took twice as long as encoding the node and
    cell lists a hundred at a time and feeding each piece to the hash.
    """
    digest = hashlib.sha256()
    opening = "{"
    for key in sorted(graph):
        value = graph[key]
        digest.update(f"{opening}{_encode(key)}:".encode())
        opening = ","
        if type(value) is list and len(value) > _CHUNK:
            digest.update(b"[")
            for start in range(0, len(value), _CHUNK):
                if start:
                    digest.update(b",")
                # the items of one piece, without its brackets
                digest.update(memoryview(_encode(value[start:start + _CHUNK]).encode())[1:-1])
            digest.update(b"]")
        else:
            digest.update(_encode(value).encode())
    digest.update(b"}")
    return digest.hexdigest()


def _graph_is_plain(graph: dict[str, Any], loose: Sequence[int]) -> bool:
    """Whether ``to_json_value(graph)`` equals ``graph`` (trusting the bindings ``bind`` made)."""
    ok: set[int] = set()  # containers found plain: the 10 000 nodes of a lift share one module
    for key in ("name", "argumentSchema", "resultSchema", "initial"):
        if not _is_plain(graph[key], ok):
            return False
    unchecked = set(loose)
    for i, node in enumerate(graph["nodes"]):
        trusted = node["inputs"] if i not in unchecked else None
        for value in node.values():
            if type(value) is str or value is trusted or id(value) in ok:
                continue
            if not _is_plain(value, ok):
                return False
    for cell in graph["cells"]:
        for value in cell.values():
            t = type(value)
            if t is str or t is int or value is None or id(value) in ok:
                continue
            if t is list:  # the input keys
                for item in value:
                    if type(item) is not str:
                        break
                else:
                    continue
            if not _is_plain(value, ok):
                return False
    return True


def _is_plain(value: Any, ok: set[int]) -> bool:
    """Whether ``to_json_value(value)`` equals ``value``; ``ok`` holds containers found plain."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return _plain_float(value)
    if t is not dict and t is not list:
        return False
    if id(value) in ok:
        return True
    if not _walk_plain(value):
        return False
    ok.add(id(value))  # the graph keeps it alive (and its id unique) while the hash is made
    return True


def _walk_plain(value: dict[str, Any] | list[Any]) -> bool:
    stack: list[Any] = [value]
    visited: set[int] = set()
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict or t is list:
            ident = id(v)
            if ident in visited:  # shared or cyclic: leave it to the generic walk
                return False
            visited.add(ident)
            if t is dict:
                for k in v:
                    if type(k) is not str:
                        return False
                stack.extend(v.values())
            else:
                stack.extend(v)
        elif t is float:
            if not _plain_float(v):
                return False
        elif not (t is str or t is int or t is bool or v is None):
            return False
    return True


def _plain_float(x: float) -> bool:
    """``to_json_value`` refuses non-finite floats and turns 0.0 and integral ones into ints."""
    return x - x == 0.0 and x != 0.0 and not (x.is_integer() and abs(x) < 2**53)


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
        arg = OpaqueRef(sub.argument, (), None, sub)
        call = [arg.key("element"), arg.key("index"), arg.key("array")][: max(n, 1)]
        return fn(*call)

    markers = _self_markers[0]
    graph, captures, loose = _trace(body, f"{kind}:{getattr(fn, '__name__', 'fn')}", None, None,
                                    parent=frame)
    op = _self_free(Pattern(None, graph, graph["name"], _graph_digest(graph, loose)), markers)
    registry.register_pattern(op)
    inputs: list[str] = []
    binding = {
        "list": bind(frame, source, inputs),
        "captured": bind(frame, {local: ref for local, ref in captures}, inputs),
    }
    config = {"op": op.hash}
    module = {"type": "builtin", "ref": kind}
    return add_node(frame, kind, module, binding, inputs, kind, config, {"type": "array"},
                    name=kind, normalized=True)


def _cell_map_hook(cell: Cell[Any], fn: Callable[..., Any]) -> Any:
    return _collection_node("map", cell, fn)


def _cell_filter_hook(cell: Cell[Any], fn: Callable[..., Any]) -> Any:
    return _collection_node("filter", cell, fn)


set_hook("cell_of", _cell_of_hook)
set_hook("map", _cell_map_hook)
set_hook("filter", _cell_filter_hook)
registry.provide_trusted_names(Cell=Cell, Stream=Stream, lift=lift, handler=handler, pattern=pattern, Default=Default)
