"""Currying (SPEC §8): binding arguments into a factory, and applying them on call.

Also ``SELF.factory`` markers, replaced by the running pattern's own sigil."""

from __future__ import annotations

import copy
import inspect
import json
from typing import Any

from cellkernel.data.links import is_link, is_sigil
from cellkernel.data.values import to_json_value
from cellkernel.patterns.factory_shapes import CurriedFactory, PatternShape
from cellkernel.patterns.sigils import _POS, _VAR
from cellkernel.patterns.tracing import _holds_refs
from cellkernel.reactive.cells import Cell


def parameter_names(factory: Any) -> list[str]:
    """What each curry index names (see the module docstring)."""
    if factory.kind == "pattern":
        schema = factory.argument_schema
        props = schema.get("properties") if isinstance(schema, dict) else None
        return list(props) if isinstance(props, dict) else []
    if factory.kind == "handler":
        event = factory.event_param.name if factory.event_param is not None else "event"
        return [event, *(p.name for p in factory.params if p.kind not in _VAR)]
    return [p.name for p in factory.params if p.kind not in _VAR]


def _is_live(value: Any) -> bool:
    return isinstance(value, Cell) or _holds_refs(value)


def curry(factory: Any, value: Any, arg_index: int | str | None = None) -> Any:
    """A copy of ``factory`` with one more argument bound (SPEC §8)."""
    names = parameter_names(factory)
    label = getattr(factory, "__name__", "factory")
    if arg_index is None:
        index = factory.curried[-1][0] + 1 if factory.curried else 0
    elif isinstance(arg_index, str):
        if arg_index not in names:
            raise ValueError(f"{label} has no parameter {arg_index!r}; it has {names}")
        index = names.index(arg_index)
    elif isinstance(arg_index, bool) or not isinstance(arg_index, int):
        raise TypeError(f"arg_index is an int or a parameter name, got {type(arg_index).__name__}")
    else:
        index = arg_index
    if index < 0:
        raise ValueError(f"arg_index must be >= 0, got {index}")
    if index >= len(names):
        raise ValueError(
            f"{label} has no argument {index} to curry: its parameters are {names}"
            + (" (index 0 is the event)" if factory.kind == "handler" else "")
        )
    if any(i == index for i, _ in factory.curried):
        raise ValueError(f"argument {index} ({names[index]!r}) of {label} is already curried")
    stored = value if _is_live(value) else to_json_value(value)
    made = copy.copy(factory)
    made.curried = (*factory.curried, (index, stored))
    return made


def apply_curried_call(factory: CurriedFactory, args: tuple[Any, ...] | list[Any],
                       kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of a call of a curried lift."""
    label = factory.__name__
    params = [p for p in factory.params if p.kind not in _VAR]
    has_varargs = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in factory.params)
    slots = dict(factory.curried)
    for index in slots:
        if params[index].name in kwargs:
            raise TypeError(f"{label}() got a value for {params[index].name!r}, which is curried")
    values: dict[int, Any] = dict(slots)
    given = iter(args)
    for i, p in enumerate(params):
        if p.kind not in _POS:
            break
        if i in slots:
            continue
        try:
            values[i] = next(given)
        except StopIteration:
            break
    leftover = list(given)
    if leftover and not has_varargs:
        raise TypeError(f"{label}() got {len(leftover)} positional argument(s) too many")
    out_args: list[Any] = []
    i = 0
    while i < len(params) and params[i].kind in _POS and i in values:
        out_args.append(values.pop(i))
        i += 1
    if leftover:
        if any(params[j].kind in _POS for j in values):
            raise TypeError(f"{label}(): extra positional arguments cannot follow a gap")
        out_args.extend(leftover)
    out_kwargs = dict(kwargs)
    for p in params[: len(out_args)]:
        if p.kind in _POS and p.name in kwargs:
            raise TypeError(f"{label}() got multiple values for argument {p.name!r}")
    for index in sorted(values):
        p = params[index]
        if p.kind == inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"{label}(): positional-only {p.name!r} is curried but its "
                            "earlier arguments are missing")
        if p.name in out_kwargs:
            raise TypeError(f"{label}() got multiple values for argument {p.name!r}")
        out_kwargs[p.name] = values[index]
    return out_args, out_kwargs


def apply_curried_state(factory: CurriedFactory, state: dict[str, Any]
                        ) -> tuple[dict[str, Any], list[list[Any]]]:
    """Handler state with curried state merged in, and the curried event binding (if any)."""
    names = parameter_names(factory)
    out = dict(state)
    event: list[list[Any]] = []
    for index, value in factory.curried:
        if index == 0:
            event.append([0, value])
            continue
        name = names[index]
        if name in out:
            raise TypeError(f"{factory.__name__}: state {name!r} is curried; do not bind it again")
        out[name] = value
    return out, event


def merge_argument(pattern: PatternShape, argument: Any) -> Any:
    """A curried pattern's argument object: curried values merged in by name."""
    if not pattern.curried:
        return argument
    if argument is None:
        argument = {}
    if isinstance(argument, Cell) or is_link(argument) or not isinstance(argument, dict):
        raise TypeError(
            f"{pattern.name} is curried: pass its other arguments as keywords or a dict, "
            "not as one reference"
        )
    names = parameter_names(pattern)
    out = dict(argument)
    for index, value in pattern.curried:
        name = names[index]
        if name in out:
            raise TypeError(f"{pattern.name}: argument {name!r} is curried; do not pass it again")
        out[name] = value
    return out


_self_free: set[str] = set()


def _mentions_self(pattern: PatternShape) -> bool:
    """Whether the pattern's graph holds any ``SELF.factory`` marker (once per pattern)."""
    if pattern.self_free:  # the builder saw no marker written while tracing it
        return False
    digest = pattern.hash
    if digest in _self_free:
        return False
    if '"$self"' in json.dumps(pattern.graph):
        return True
    _self_free.add(digest)
    return False


def resolve_self(value: Any, pattern: PatternShape, me: PatternShape | None = None) -> Any:
    """Replace ``SELF.factory`` markers (``{"$self": "factory"}``) of ``pattern``'s graph.

    They become the sigil of ``me`` (by default ``pattern`` itself).
    """
    if not _mentions_self(pattern):
        return value  # nothing to replace: skip the walk (a large graph has 10 000s of values)
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    sigil: dict[str, Any] | None = None
    while stack:
        holder, key = stack.pop()
        v = holder[key]
        if type(v) is dict:
            if len(v) == 1 and v.get("$self") == "factory":
                if sigil is None:
                    sigil = (me if me is not None else pattern).sigil()
                holder[key] = copy.deepcopy(sigil)
                continue
            if is_sigil(v):
                continue
            stack.extend((v, k) for k in v)
        elif type(v) is list:
            stack.extend((v, i) for i in range(len(v)))
    return root[0]
