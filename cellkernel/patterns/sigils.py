"""The ``nodeFactory@1`` sigil (SPEC §8): its pydantic models and how a factory writes one."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cellkernel.data.links import is_sigil
from cellkernel.data.values import to_json_value
from cellkernel.errors import CapabilityError
from cellkernel.patterns import registry
from cellkernel.patterns.factory_shapes import PatternShape
from cellkernel.patterns.tracing import closure_inputs

SIGIL_KEY = "nodeFactory@1"


_HEX64 = r"^[0-9a-f]{64}$"


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


_VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


_POS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _python_module_of(factory: Any) -> dict[str, Any]:
    if getattr(factory, "builtin", None) is not None:
        module: dict[str, Any] = factory.module()
        return module
    refs, constants = closure_inputs(factory.fn)
    if refs:
        raise CapabilityError(
            "store", "opaque",
            f"factory {factory.__name__}: it captures refs of a pattern body "
            f"({', '.join(sorted(refs))}), so it is not a value outside that body",
        )
    return factory.module(constants or None)  # type: ignore[no-any-return]


def _subpatterns(pattern: PatternShape) -> dict[str, dict[str, Any]]:
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
    if factory.kind == "pattern":
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


def identity(pattern: PatternShape) -> str:
    """A key naming a pattern *with* its curried arguments (stable without any)."""
    if not pattern.curried:
        return pattern.hash
    text = json.dumps([pattern.hash, [[i, to_json_value(v)] for i, v in pattern.curried]],
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
