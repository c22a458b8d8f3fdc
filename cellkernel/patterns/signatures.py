"""Python signatures as JSON schemas: parameters, annotations (pydantic), ``Default[T, v]``."""

from __future__ import annotations

import contextlib
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cellkernel.data.values import MISSING, to_json_value
from cellkernel.reactive.cells import Cell, Stream

T = TypeVar("T")


class _DefaultMarker:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Default(Generic[T]):
    """``Default[T, v]``: a parameter of type ``T`` whose schema default is ``v``.

    A type checker reads ``v`` in a type position as an error; the spelling it accepts,
    with the same schema, is ``Annotated[T, pydantic.Field(default=v)]``.
    """

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
        others = []
        for extra in args[1:]:
            if isinstance(extra, _DefaultMarker):
                default = extra.value
            else:
                others.append(extra)
        inner = typing.get_origin(annotation) or annotation
        if others and not (isinstance(inner, type) and issubclass(inner, Cell)):
            # keep constraints such as pydantic's Field(ge=0): they belong in the schema
            annotation = typing.Annotated[(annotation, *others)]
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
        required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
        fields: dict[str, Any] = {}
        for name, hint in _resolve_hints(tp).items():
            if typing.get_origin(hint) in (typing.Required, typing.NotRequired):
                hint = typing.get_args(hint)[0]
            hint = _typeddict_compat(hint)
            wrap = typing_extensions.Required if name in required else typing_extensions.NotRequired
            fields[name] = wrap[hint]
        # mypy wants a literal name for the functional form; this one is known only at run time
        made = typing_extensions.TypedDict(tp.__name__, fields)  # type: ignore[misc]
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
        return typing.Union[new]  # noqa: UP007 - members are a run-time tuple, not spelled out
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
            with contextlib.suppress(ValueError):
                schema["default"] = to_json_value(param.default)
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
