"""Factories as values: the ``nodeFactory@1`` sigil, currying, materialize (SPEC §8).

Every factory ``lift``, ``handler`` and ``pattern`` return is also a JSON value::

    {"/": {"nodeFactory@1": {
        "module": {"type": "python", "ref": "module:qualname", "hash": "<sha256>", "source"?: ...}
                | {"type": "builtin", "ref": "<name>"}
                | {"type": "pattern", "ref": "module:qualname", "hash": "<sha256 of the graph>"},
        "kind": "lift" | "handler" | "pattern",
        "argumentSchema", "resultSchema",          # lifts and patterns
        "eventSchema", "stateSchema",              # handlers
        "graph"?: {...}, "patterns"?: {hash: {"name", "graph"}},   # patterns only
        "curried": [{"index": i, "value": v}, ...]}}}

Choices where SPEC §8 is silent (this docstring is their documentation):

* **A pattern sigil carries its graph inline** (``graph``), plus the graphs of
  the sub-patterns it references by hash (``patterns``), so it can be
  instantiated in any process and any space without a stored pattern
  document.  A graph is data: the Python code its nodes name is still resolved
  by hash under the trust rules below, when the pattern is materialized.  The
  graph must hash to ``module.hash`` or the sigil is rejected.  Resolution of
  a pattern: the process registry (and a module under a trusted prefix,
  ``registry.resolve_pattern``), then the inline graph, then (given a runtime)
  the pattern document stored in the runtime's default space, whose graph must
  hash to the name it is stored under.
* **What an index means.**  Lifts: the Nth named parameter of the function
  (``*args``/``**kwargs`` are not indexable); keyword-only parameters can be
  curried too.  Handlers: 0 is the event, N the Nth parameter of the function
  (so 1 is the first state parameter).  Patterns: the Nth property of the
  argument schema, i.e. the Nth parameter of the author function (for a pattern
  taking one model, the model's Nth field); the value is merged into the
  argument object under that name.  ``arg_index`` may also be given as the
  parameter name; it is stored as its index.  Binding a curried argument again
  on call raises ``TypeError``.
* **A handler curried at index 0** binds the event: the factory then takes only
  state and gives a stream; whatever is sent on it, the handler receives the
  curried event (a "button" action).
* Curried values are stored as JSON (cells become links, factories sigils);
  a curried builder ref is allowed inside a pattern body but such a factory is
  not a value (``to_json()`` raises ``CapabilityError``).
* The schemas in a sigil are the module's own, not narrowed by currying.
* ``materialize`` resolves code eagerly: an unknown implementation raises
  ``UnknownImplementationError`` when the value is read, before anything runs.
  For a pattern every Python node of its graph (and of its sub-patterns) is
  resolved first.  Reading a sigil from a cell (``get()``, a lift input, handler
  state) goes through the same function; ``cellkernel.reactive.cells`` loads this module
  on the first factory sigil it meets.
* ``SELF.factory`` in a body is replaced, when an instance starts, by the
  running pattern's sigil: a pattern can hand itself to a pattern it uses
  (``Record`` gives itself to ``Members`` in ``cellkernel.examples.members``).

Dynamic instances (the runner, SPEC §8):

* ``instantiate`` in a body keys its child by the pattern *and* its curried
  arguments; a new value stops the old child and starts a new one.
* A child made in a handler (``instantiate`` or calling a pattern) is noted in
  the parent result's metadata (``children``: child id -> handler node id) and
  is resumed with its parent by ``rt.resume`` (or a fresh ``rt.run``), in any
  process.  If the handler raises, or its commit keeps conflicting, its
  children are stopped and nothing of the event lands.
* ``wish("#all")`` is a list kept from the space's append-only instance log
  (one entry document per instance plus a counter, so starting an instance
  writes a constant amount) with the schema ``{"type": "array", "items":
  {"asCell": True}}``: its entries read as result ``Cell``s (the list contains
  the reader's own result, so copies would go round in circles).  ``wish("/a/b")``
  reads ``a/b`` of the space's root document, which is ``rt.get_cell(space)``.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from typing import Any

from cellkernel.errors import UnknownImplementationError
from cellkernel.patterns import registry
from cellkernel.patterns.builder import (
    Factory,
    HandlerFactory,
    LiftFactory,
    Pattern,
)
from cellkernel.patterns.sigils import (
    SIGIL_KEY,
    BuiltinModule,
    NodeFactory,
    PatternGraph,
    PatternModule,
    is_factory_sigil,
    validate_sigil,
)
from cellkernel.reactive.cells import Cell, DocDict

# ---------------------------------------------------------------------------
# the sigil's pydantic models


























# ---------------------------------------------------------------------------
# factory -> JSON













# ---------------------------------------------------------------------------
# currying




















# ---------------------------------------------------------------------------
# JSON -> factory

_cache: OrderedDict[tuple[str, registry.TrustPolicy], Any] = OrderedDict()
_CACHE_SIZE = 256
_checked: set[tuple[str, registry.TrustPolicy]] = set()


def _graph_pattern(graph: Any, name: str, digest: str | None) -> Pattern:
    """A pattern from a carried graph (data: named by its content hash, checked)."""
    if not isinstance(graph, dict):
        raise ValueError(f"the graph carried for pattern {name!r} is not an object")
    PatternGraph.model_validate(graph)
    made = Pattern(None, graph, name)
    if digest is not None and made.hash != digest:
        raise ValueError(
            f"the graph carried for pattern {name!r} does not match its hash {digest[:12]}…"
        )
    existing = registry.registered_pattern(made.hash)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    registry.register_pattern(made)
    return made


def _resolve_pattern(body: NodeFactory, raw: dict[str, Any], rt: Any) -> Pattern:
    module = body.module
    assert isinstance(module, PatternModule)
    digest = module.hash
    subs = raw.get("patterns") or {}
    if not isinstance(subs, dict):
        raise ValueError("a pattern sigil's 'patterns' must map hashes to graphs")
    made_subs: list[Pattern] = []  # held by the pattern made here (the registry is weak)
    for sub_hash, stored in subs.items():
        sub = registry.registered_pattern(sub_hash)
        if sub is None:
            if not isinstance(stored, dict):
                raise ValueError(f"sub-pattern {str(sub_hash)[:12]}… is not an object")
            sub = _graph_pattern(stored.get("graph"), str(stored.get("name") or "pattern"),
                                 sub_hash)
        made_subs.append(sub)
    found = registry.resolve_pattern(digest, module.ref, registry.policy_of(rt))
    if isinstance(found, Pattern):
        return found
    graph = raw.get("graph")
    if isinstance(graph, dict):
        name = module.ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        made = _graph_pattern(graph, graph.get("name") or name, digest)
        made.keep.extend(s for s in made_subs if s not in made.keep)
        return made
    if rt is not None:
        try:
            return rt.runner.pattern_by_hash(digest, rt.space)  # type: ignore[no-any-return]
        except UnknownImplementationError:
            pass
    module_name = module.ref.split(":", 1)[0]
    raise UnknownImplementationError(
        f"cannot resolve pattern {module.ref!r} (hash {digest[:12]}…): no pattern with that "
        f"hash is defined in this process and the sigil carries no graph; import "
        f"{module_name!r} first, or trust it with Runtime(trusted_modules=[{module_name!r}])"
    )


def check_resolvable(pattern: Pattern, policy: registry.TrustPolicy) -> None:
    """Resolve every Python node of ``pattern`` (and its sub-patterns) before it runs."""
    key = (pattern.hash, policy)
    if key in _checked:
        return
    seen: set[str] = set()
    work = [pattern.graph]
    while work:
        graph = work.pop()
        for node in graph.get("nodes", []):
            module = node.get("module") or {}
            config = node.get("config")
            sub_hash = None
            if module.get("type") == "python":
                registry.resolve_function(module, policy)
            elif node.get("helper") == "pattern":
                sub_hash = module.get("hash")
            elif isinstance(config, dict) and isinstance(config.get("op"), str):
                sub_hash = config["op"]
            if sub_hash and sub_hash not in seen:
                seen.add(sub_hash)
                sub = registry.registered_pattern(sub_hash)
                if sub is not None:
                    work.append(sub.graph)
    _checked.add(key)


def _builtin_factory(name: str) -> LiftFactory:
    fn = registry.builtin(name)
    if fn is None:
        raise UnknownImplementationError(f"no builtin factory named {name!r}")
    return LiftFactory(fn, helper=name, builtin=name)


def _still_current(factory: Any) -> bool:
    """A cached Python factory is stale once its hash names a newer definition."""
    if isinstance(factory, Pattern) or getattr(factory, "builtin", None) is not None:
        return True
    digest = (factory._module or {}).get("hash")
    current = registry.registered_function(digest) if isinstance(digest, str) else None
    return current is None or current is factory.fn


def materialize(json_value: Any, rt: Any = None, *, trust_source: bool | None = None,
                trusted_modules: list[str] | tuple[str, ...] | None = None) -> Any:
    """A callable factory from its JSON (a ``nodeFactory@1`` sigil or a pattern graph).

    ``rt`` supplies the trust policy (``Runtime(trusted_modules=..., trust_source=...)``,
    see ``registry``) and, for a pattern sigil without a graph, the stored pattern
    documents; ``trust_source`` and ``trusted_modules`` override the runtime's.  A malformed
    sigil raises ``pydantic.ValidationError`` (a ``ValueError``); an
    implementation that cannot be resolved raises ``UnknownImplementationError``
    and runs nothing.
    """
    if isinstance(json_value, Factory):
        return json_value
    if isinstance(json_value, Cell):
        return materialize(json_value.get(), rt, trust_source=trust_source,
                           trusted_modules=trusted_modules)
    if isinstance(json_value, DocDict):
        json_value = dict(json_value)
    base = registry.policy_of(rt)
    trust = registry.TrustPolicy.of(
        base.trusted_modules if trusted_modules is None else trusted_modules,
        base.trust_source if trust_source is None else trust_source)
    if isinstance(json_value, dict) and "/" not in json_value and "nodes" in json_value:
        made = _graph_pattern(json_value, str(json_value.get("name") or "pattern"), None)
        check_resolvable(made, trust)
        return made
    if not is_factory_sigil(json_value):
        shown = json.dumps(json_value, default=str)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ValueError(
            "not a factory: expected a {'/': {'nodeFactory@1': {...}}} sigil or a pattern graph "
            f"(with 'nodes'), got the {type(json_value).__name__} {shown}"
        )
    text = json.dumps(json_value, sort_keys=True, separators=(",", ":"))
    key = (text, trust)
    cached = _cache.get(key)
    if cached is not None and _still_current(cached):
        _cache.move_to_end(key)
        return cached
    body = validate_sigil(json_value)
    raw = json_value["/"][SIGIL_KEY]
    module = body.module
    factory: Any
    if isinstance(module, PatternModule):
        factory = _resolve_pattern(body, raw, rt)
        check_resolvable(factory, trust)
    elif isinstance(module, BuiltinModule):
        factory = _builtin_factory(module.ref)
    else:
        fn = registry.resolve_function(raw["module"], trust)
        factory = HandlerFactory(fn) if body.kind == "handler" else LiftFactory(fn)
        factory._module = copy.deepcopy(raw["module"])
        ref_module, _, qualname = module.ref.partition(":")
        factory.__module__, factory.__qualname__ = ref_module, qualname
    if body.curried:
        factory = copy.copy(factory)
        factory.curried = tuple((c.index, c.value) for c in body.curried)
    _cache[key] = factory
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return factory


def as_pattern(value: Any, rt: Any) -> Pattern:
    """A ``Pattern`` from a Pattern, a factory value, a sigil, or a cell holding one."""
    if isinstance(value, Cell):
        value = value.get()
    if isinstance(value, Factory) and not isinstance(value, Pattern):
        raise TypeError(
            f"instantiate() needs a pattern factory, got the {value.kind} factory "
            f"{getattr(value, '__name__', '?')}"
        )
    if not isinstance(value, Pattern):
        if value is None:
            raise TypeError("instantiate() needs a pattern factory, got None")
        if not isinstance(value, dict):
            raise TypeError(f"instantiate() needs a pattern factory, got {type(value).__name__}")
        value = materialize(value, rt)
        if not isinstance(value, Pattern):
            raise TypeError(f"instantiate() needs a pattern factory, got a {value.kind} factory")
    check_resolvable(value, registry.policy_of(rt))
    return value



__all__ = ["as_pattern", "check_resolvable", "materialize"]
