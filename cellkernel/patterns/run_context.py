"""Which running lift or handler the current code is inside, and closures rebound to values.

The builder reads ``runtime_frame`` to tell a factory called at definition time
from one called inside a running node; the runner sets it."""

from __future__ import annotations

import types
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


#: Set while a lift or handler runs (a "runtime frame"); the builder reads it to know
#: whether a factory is called at definition time or inside a running node.
runtime_frame: ContextVar[Any] = ContextVar("cellkernel_runtime_frame", default=None)


def rebind(fn: Callable[..., Any], values: dict[str, Any]) -> Callable[..., Any]:
    """A copy of ``fn`` whose closure cells hold ``values`` instead of refs."""
    if not values or not isinstance(fn, types.FunctionType):
        return fn
    cells = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
        cells.append(types.CellType(values[name]) if name in values else cell)
    clone = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, tuple(cells)
    )
    clone.__kwdefaults__ = fn.__kwdefaults__
    return clone
