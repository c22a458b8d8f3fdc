"""Builtin nodes: ``if_else``, ``when``, ``unless``, ``fmt``, ``instantiate``, ``wish``.

Each adds one node to the pattern being built.  Selections write a *link* to
the chosen branch (no copy), and depend only on the condition until chosen.
"""

from __future__ import annotations

from typing import Any

from cellkernel.errors import CapabilityError
from cellkernel.patterns import registry
from cellkernel.patterns.builder import Factory, LiftFactory, Pattern
from cellkernel.patterns.builtin_lifts import format_template
from cellkernel.patterns.materialize import as_pattern
from cellkernel.patterns.run_context import runtime_frame
from cellkernel.patterns.tracing import OpaqueRef, add_node, bind, current_frame


def _frame(name: str) -> Any:
    frame = current_frame()
    if frame is None:
        raise CapabilityError("call", name, "outside a pattern body")
    return frame


def _select(kind: str, bindings: dict[str, Any]) -> OpaqueRef[Any]:
    frame = _frame(kind)
    inputs: list[str] = []
    binding = bind(frame, bindings, inputs)
    return add_node(frame, kind, {"type": "builtin", "ref": kind}, binding, inputs, kind,
                    None, None, name=kind)


def if_else(cond: Any, if_true: Any, if_false: Any) -> OpaqueRef[Any]:
    """A ref that links to ``if_true`` when ``cond`` is truthy, else to ``if_false``."""
    return _select("if_else", {"cond": cond, "a": if_true, "b": if_false})


def when(cond: Any, value: Any) -> OpaqueRef[Any]:
    """Like ``cond and value``."""
    return _select("when", {"cond": cond, "value": value})


def unless(cond: Any, value: Any) -> OpaqueRef[Any]:
    """Like ``cond or value``."""
    return _select("unless", {"cond": cond, "value": value})


_fmt = LiftFactory(format_template, helper="fmt", builtin="fmt")


def fmt(template: str, **refs: Any) -> Any:
    """A ``str.format`` lift: ``fmt("{name} has {n}", name=ref, n=ref)``."""
    return _fmt(template, **refs)


def instantiate(pattern: Any, inputs: Any = None) -> Any:
    """Run ``pattern`` as a child of the current instance; returns the child's result.

    In a pattern body ``pattern`` may be a Pattern, a factory value or a ref
    holding one, and the child is re-instantiated when that value changes.  In a
    handler or lift it runs the child now and returns its result cell.
    """
    frame = current_frame()
    if frame is None:
        rframe = runtime_frame.get()
        if rframe is None:
            raise CapabilityError("call", "instantiate", "outside a pattern body or handler")
        # as_pattern reads a cell holding a factory; a plain dict is a sigil (dict.get is no read)
        return rframe.instantiate(as_pattern(pattern, rframe.runner.rt), inputs or {})
    if isinstance(pattern, Factory) and not isinstance(pattern, Pattern):
        raise TypeError(f"instantiate() needs a pattern factory, got the {pattern.kind} factory "
                        f"{getattr(pattern, '__name__', '?')}")
    if isinstance(pattern, Pattern):
        registry.register_pattern(pattern)
        frame.keep.append(pattern)
    inputs_list: list[str] = []
    binding = bind(frame, {"pattern": pattern, "inputs": inputs or {}}, inputs_list)
    return add_node(frame, "instantiate", {"type": "builtin", "ref": "instantiate"}, binding,
                    inputs_list, "instantiate", None, None, name="instantiate")


def wish(query: str) -> OpaqueRef[Any]:
    """``"#all"``: instance results in this space; ``"/a/b"``: a path of the space root."""
    if not isinstance(query, str) or not query:
        raise ValueError("wish() needs a query such as '#all' or '/path'")
    frame = _frame("wish")
    return add_node(frame, "wish", {"type": "builtin", "ref": "wish"}, {}, [], "wish",
                    {"query": query}, None, name=f"wish {query}")
