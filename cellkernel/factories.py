"""Factories as values: the ``nodeFactory@1`` sigil, currying, materialize (SPEC §8)."""

from __future__ import annotations

from typing import Any

from .cells import set_hook


def factory_sigil(factory: Any) -> dict[str, Any]:
    from .builder import Pattern

    body: dict[str, Any] = {"module": factory.module(), "kind": factory.kind}
    if isinstance(factory, Pattern):
        body["argumentSchema"] = factory.argument_schema
        body["resultSchema"] = factory.result_schema
    elif factory.kind == "lift":
        body["argumentSchema"] = factory.argument_schema
        body["resultSchema"] = factory.result_schema
    else:
        body["eventSchema"] = factory.event_schema
        body["stateSchema"] = factory.state_schema
    body["curried"] = [{"index": i, "value": v} for i, v in factory.curried]
    return {"/": {"nodeFactory@1": body}}


def curry(factory: Any, value: Any, arg_index: int | None = None) -> Any:
    raise NotImplementedError("currying arrives with SPEC §8")


def as_pattern(value: Any, rt: Any) -> Any:
    from .builder import Pattern

    if isinstance(value, Pattern):
        return value
    raise TypeError(f"expected a pattern, got {type(value).__name__}")


def materialize(json_value: Any, rt: Any = None) -> Any:
    raise NotImplementedError("materialize arrives with SPEC §8")
