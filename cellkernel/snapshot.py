"""Graph snapshots (SPEC §7): the concrete graph of a running instance.

Stored in the result document's metadata in the same transaction as every
run, so a new process can resume the instance from storage alone.  The
pydantic model validates what is read back; its JSON schema is published as
``cellkernel/schemas/graph-snapshot.schema.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModuleRef(BaseModel):
    """What implements a node: a Python function, a builtin or a pattern."""

    model_config = ConfigDict(extra="allow")

    type: Literal["python", "builtin", "pattern"]
    ref: str
    hash: str | None = None
    source: str | None = None


class SnapshotCell(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=r"^of:")
    name: str | None = None
    helper: str | None = None
    capability: str = "cell"
    cause: Any = None
    schemaHash: str | None = None  # noqa: N815 - wire name
    redirect: str | None = None


class SnapshotNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    helper: str
    name: str | None = None
    module: ModuleRef
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str]
    bindings: Any = None
    config: Any = None


class SnapshotLink(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    kind: str
    name: str | None = None


class GraphSnapshot(BaseModel):
    """``{"graphVersion": 1, "generation", "pattern", "cells", "nodes", "links"}``."""

    model_config = ConfigDict(extra="allow")

    graphVersion: Literal[1] = 1  # noqa: N815 - wire name
    generation: int = Field(ge=1)
    pattern: str
    patternName: str | None = None  # noqa: N815 - wire name
    result: str | None = None
    cells: list[SnapshotCell]
    nodes: list[SnapshotNode]
    links: list[SnapshotLink]
    predecessor: dict[str, Any] | None = None
