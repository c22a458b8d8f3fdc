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
  the reader's own result, so copies would go round in circles).  ``wish("/a/b")`` reads ``a/b`` of the space's root
  document, which is ``rt.get_cell(space)``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from collections import OrderedDict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cellkernel.data.links import is_link, is_sigil
from cellkernel.data.values import to_json_value
from cellkernel.errors import CapabilityError, UnknownImplementationError
from cellkernel.patterns import registry
from cellkernel.patterns.builder import (
    Factory,
    HandlerFactory,
    LiftFactory,
    Pattern,
    _holds_refs,
    closure_inputs,
)
from cellkernel.reactive.cells import Cell, DocDict, set_hook

SIGIL_KEY = "nodeFactory@1"

_HEX64 = r"^[0-9a-f]{64}$"

# ---------------------------------------------------------------------------
# the sigil's pydantic models


class PythonModule(BaseModel):
    """A Python implementation: ``module:qualname`` plus the SHA-256 fingerprint."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["python"]
    ref: str = Field(pattern=r"^[^:\s]+:[^:\s]+$")
    hash: str = Field(pattern=_HEX64)
    source: str | None = None
    constants: dict[str, Any] | None = None


class BuiltinModule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["builtin"]
    ref: str = Field(min_length=1)


class PatternModule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["pattern"]
    ref: str = Field(min_length=1)
    hash: str = Field(pattern=_HEX64)


Module = Annotated[PythonModule | BuiltinModule | PatternModule, Field(discriminator="type")]


class CurriedArgument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    value: Any


class PatternGraph(BaseModel):
    """The shape of a recorded pattern graph (SPEC §4); contents stay as stored."""

    model_config = ConfigDict(extra="allow")

    argumentSchema: Any = None
    resultSchema: Any = None
    initial: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    nodes: list[dict[str, Any]]
    cells: list[dict[str, Any]] = Field(default_factory=list)


class StoredPattern(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "pattern"
    graph: PatternGraph


class NodeFactory(BaseModel):
    """The body of a ``nodeFactory@1`` sigil."""

    model_config = ConfigDict(extra="allow")

    module: Module
    kind: Literal["lift", "handler", "pattern"] | None = None
    argumentSchema: Any = None
    resultSchema: Any = None
    eventSchema: Any = None
    stateSchema: Any = None
    curried: list[CurriedArgument] = Field(default_factory=list)
    graph: PatternGraph | None = None
    patterns: dict[str, StoredPattern] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> NodeFactory:
        is_pattern = self.module.type == "pattern"
        if self.kind is None:
            self.kind = "pattern" if is_pattern else "lift"
        if is_pattern != (self.kind == "pattern"):
            raise ValueError(f"a {self.module.type} module cannot implement a {self.kind} factory")
        if self.module.type == "builtin" and self.kind != "lift":
            raise ValueError("a builtin module implements lifts only")
        if not is_pattern and (self.graph is not None or self.patterns):
            raise ValueError("only a pattern factory carries a graph")
        indices = [c.index for c in self.curried]
        if len(set(indices)) != len(indices):
            raise ValueError(f"curried indices repeat: {indices}")
        return self


class _Slash(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    body: NodeFactory = Field(alias="nodeFactory@1")


class NodeFactorySigil(BaseModel):
    """``{"/": {"nodeFactory@1": {...}}}``; validation errors are ``ValueError``s."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    slash: _Slash = Field(alias="/")


def is_factory_sigil(value: Any) -> bool:
    return is_sigil(value) and SIGIL_KEY in value["/"]


def validate_sigil(value: Any) -> NodeFactory:
    """The validated body of a sigil; raises ``pydantic.ValidationError`` if malformed."""
    return NodeFactorySigil.model_validate(value).slash.body


# ---------------------------------------------------------------------------
# factory -> JSON

_VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_POS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _python_module_of(factory: Any) -> dict[str, Any]:
    if isinstance(factory, LiftFactory) and factory.builtin is not None:
        return factory.module()
    refs, constants = closure_inputs(factory.fn)
    if refs:
        raise CapabilityError(
            "store", "opaque",
            f"factory {factory.__name__}: it captures refs of a pattern body "
            f"({', '.join(sorted(refs))}), so it is not a value outside that body",
        )
    return factory.module(constants or None)  # type: ignore[no-any-return]


def _subpatterns(pattern: Pattern) -> dict[str, dict[str, Any]]:
    """The graphs of every pattern ``pattern`` references by hash (nested, map ops)."""
    out: dict[str, dict[str, Any]] = {}
    work = [pattern.graph]
    while work:
        graph = work.pop()
        for node in graph.get("nodes", []):
            digest = None
            config = node.get("config")
            if node.get("helper") == "pattern":
                digest = node.get("module", {}).get("hash")
            elif isinstance(config, dict) and isinstance(config.get("op"), str):
                digest = config["op"]
            if not digest or digest == pattern.hash or digest in out:
                continue
            sub = registry.registered_pattern(digest)
            if sub is not None:
                out[digest] = {"name": sub.name, "graph": sub.graph}
                work.append(sub.graph)
    return out


def factory_sigil(factory: Any) -> dict[str, Any]:
    """``factory.to_json()``: the ``nodeFactory@1`` sigil."""
    body: dict[str, Any]
    if isinstance(factory, Pattern):
        body = {
            "module": factory.module(),
            "kind": "pattern",
            "argumentSchema": factory.argument_schema,
            "resultSchema": factory.result_schema,
            "graph": copy.deepcopy(factory.graph),
        }
        subs = _subpatterns(factory)
        if subs:
            body["patterns"] = copy.deepcopy(subs)
    elif factory.kind == "lift":
        body = {
            "module": _python_module_of(factory),
            "kind": "lift",
            "argumentSchema": factory.argument_schema,
            "resultSchema": factory.result_schema,
        }
    else:
        body = {
            "module": _python_module_of(factory),
            "kind": "handler",
            "eventSchema": factory.event_schema,
            "stateSchema": factory.state_schema,
        }
    body["curried"] = [{"index": i, "value": to_json_value(v)} for i, v in factory.curried]
    return {"/": {SIGIL_KEY: body}}


def canonical(factory: Any) -> str:
    """The canonical JSON text of a factory's sigil (what equality compares)."""
    return json.dumps(factory_sigil(factory), sort_keys=True, separators=(",", ":"))


def identity(pattern: Pattern) -> str:
    """A key naming a pattern *with* its curried arguments (stable without any)."""
    if not pattern.curried:
        return pattern.hash
    text = json.dumps([pattern.hash, [[i, to_json_value(v)] for i, v in pattern.curried]],
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------
# currying


def parameter_names(factory: Any) -> list[str]:
    """What each curry index names (see the module docstring)."""
    if isinstance(factory, Pattern):
        schema = factory.argument_schema
        props = schema.get("properties") if isinstance(schema, dict) else None
        return list(props) if isinstance(props, dict) else []
    if isinstance(factory, HandlerFactory):
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
            + (" (index 0 is the event)" if isinstance(factory, HandlerFactory) else "")
        )
    if any(i == index for i, _ in factory.curried):
        raise ValueError(f"argument {index} ({names[index]!r}) of {label} is already curried")
    stored = value if _is_live(value) else to_json_value(value)
    made = copy.copy(factory)
    made.curried = (*factory.curried, (index, stored))
    return made


def apply_curried_call(factory: LiftFactory, args: tuple[Any, ...] | list[Any],
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


def apply_curried_state(factory: HandlerFactory, state: dict[str, Any]
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


def merge_argument(pattern: Pattern, argument: Any) -> Any:
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


def _mentions_self(pattern: Pattern) -> bool:
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


def resolve_self(value: Any, pattern: Pattern) -> Any:
    """Replace ``SELF.factory`` markers (``{"$self": "factory"}``) by the pattern's sigil."""
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
                    sigil = pattern.sigil()
                holder[key] = copy.deepcopy(sigil)
                continue
            if is_sigil(v):
                continue
            stack.extend((v, k) for k in v)
        elif type(v) is list:
            stack.extend((v, i) for i in range(len(v)))
    return root[0]


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
    for sub_hash, stored in subs.items():
        if registry.registered_pattern(sub_hash) is None:
            if not isinstance(stored, dict):
                raise ValueError(f"sub-pattern {str(sub_hash)[:12]}… is not an object")
            _graph_pattern(stored.get("graph"), str(stored.get("name") or "pattern"), sub_hash)
    found = registry.resolve_pattern(digest, module.ref, registry.policy_of(rt))
    if isinstance(found, Pattern):
        return found
    graph = raw.get("graph")
    if isinstance(graph, dict):
        name = module.ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        return _graph_pattern(graph, graph.get("name") or name, digest)
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
    from cellkernel.patterns import builtins  # noqa: F401  (registers the builtin lifts)

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
        raise ValueError(
            "not a factory: expected a {'/': {'nodeFactory@1': {...}}} sigil or a pattern graph, "
            f"got {type(json_value).__name__}"
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


def _materialize_hook(value: Any, runtime: Any) -> Any:
    if SIGIL_KEY not in value["/"]:
        return value
    return materialize(value, runtime)


set_hook("materialize_factory", _materialize_hook)

__all__ = [
    "NodeFactory",
    "NodeFactorySigil",
    "apply_curried_call",
    "apply_curried_state",
    "as_pattern",
    "canonical",
    "curry",
    "factory_sigil",
    "identity",
    "materialize",
    "merge_argument",
    "parameter_names",
    "resolve_self",
    "validate_sigil",
]
