"""Graph snapshots (SPEC §7): the concrete graph of a running instance.

Stored in the result document's metadata in the same transaction as every
run, so a new process can resume the instance from storage alone.  The
pydantic model validates what is read back; its JSON schema is published as
``cellkernel/schemas/graph-snapshot.schema.json`` (regenerate it with
``python -m cellkernel.patterns.snapshot --schema``; a test keeps it in sync).

Besides validation the model is what tools look at: ``diff`` answers "which
ids survived an edit" (the cause-stability report, ``cellkernel
inspect-causes``), ``to_dot`` / ``to_mermaid`` / ``_repr_mimebundle_`` draw it.
Every text form is deterministic so it can be compared and committed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from cellkernel.data.identity import short_id
from cellkernel.patterns import render

log = logging.getLogger("cellkernel.patterns.snapshot")

#: Where the published JSON schema lives (package data).
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "graph-snapshot.schema.json"
SCHEMA_ID = "https://cellkernel.dev/schemas/graph-snapshot.schema.json"

#: Above this many cells + nodes the mimebundle leaves out the SVG: laying out a
#: huge graph takes Graphviz minutes and the picture is unreadable anyway.
SVG_LIMIT = 1000

#: Highlight vocabulary of ``to_dot`` / ``to_mermaid`` -> (fill, border, extra style).
HIGHLIGHT_STYLES: dict[str, tuple[str, str, str]] = {
    "kept": ("#eeeeee", "#9e9e9e", ""),
    "new": ("#c8e6c9", "#2e7d32", ""),
    "changed": ("#ffe0b2", "#ef6c00", ""),
    "removed": ("#ffcdd2", "#c62828", "dashed"),
    "error": ("#ef9a9a", "#b71c1c", "bold"),
    "ran": ("#bbdefb", "#1565c0", ""),
}
#: Diff statuses spelled as highlight statuses (``added`` is drawn as ``new``).
_HIGHLIGHT_ALIASES = {"added": "new"}

DiffStatus = Literal["kept", "added", "removed", "changed"]


def module_short_name(ref: str) -> str:
    """``pkg.mod:Outer.<locals>.double`` -> ``double``: the part a reader recognises."""
    return ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------
# the model


class ModuleRef(BaseModel):
    """What implements a node: a Python function, a builtin or a pattern."""

    model_config = ConfigDict(extra="allow")

    type: Literal["python", "builtin", "pattern"]
    ref: str = Field(description="`module:qualname` (python, pattern) or the builtin's name")
    hash: str | None = Field(
        default=None, description="SHA-256 hex of the normalised implementation"
    )
    source: str | None = Field(
        default=None, description="source text, compiled only with trust_source"
    )
    constants: dict[str, Any] | None = Field(
        default=None, description="captured constants (part of the implementation hash)"
    )


class SnapshotCell(BaseModel):
    """One document of the instance; its id is derived from ``cause`` (SPEC §6)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=r"^of:")
    name: str | None = Field(
        default=None, description="result key or variable name: a label, not identity"
    )
    helper: str | None = Field(
        default=None, description="builder helper that made it (lift, handler, ...)"
    )
    capability: str = "cell"
    cause: Any = Field(default=None, description="the cause components hashed into `id`")
    schemaHash: str | None = None
    redirect: str | None = None


class SnapshotNode(BaseModel):
    """One running step; ``inputs``/``outputs`` are concrete cell ids."""

    model_config = ConfigDict(extra="allow")

    id: str
    helper: str
    name: str | None = None
    module: ModuleRef
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str]
    bindings: Any = Field(default=None, description="arguments as links to concrete cells")
    config: Any = None


class SnapshotLink(BaseModel):
    """A dependency (``input``) or a result field redirect (``redirect``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    kind: str
    name: str | None = None


class GraphSnapshot(BaseModel):
    """``{"graphVersion": 1, "generation", "pattern", "cells", "nodes", "links"}``."""

    model_config = ConfigDict(
        extra="allow",
        title="GraphSnapshot",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_ID,
        },
    )

    graphVersion: Literal[1] = 1
    generation: int = Field(ge=1, description="bumped on every run of the same instance")
    pattern: str = Field(description="hash of the pattern that produced this graph")
    patternName: str | None = None
    result: str | None = Field(default=None, description="the result cell's entity id")
    cells: list[SnapshotCell]
    nodes: list[SnapshotNode]
    links: list[SnapshotLink]
    predecessor: dict[str, Any] | None = Field(
        default=None, description="pattern, generation and ids of the graph this one replaced"
    )

    # -- lookups -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The stored form: wire names, and exactly the fields that were given."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def cell(self, entity_id: str) -> SnapshotCell | None:
        return next((c for c in self.cells if c.id == entity_id), None)

    def node(self, node_id: str) -> SnapshotNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def producers(self) -> dict[str, SnapshotNode]:
        """Cell id -> the node writing it (the first, if several claim it)."""
        out: dict[str, SnapshotNode] = {}
        for node in self.nodes:
            for output in node.outputs:
                out.setdefault(output, node)
        return out

    def cell_labels(self) -> dict[str, str]:
        """Cell id -> display name: its own name, else its node's, else its helper.

        Intermediate cells have no result key; the function that computes them is
        what a reader recognises, and it is also what ``diff`` matches "changed" on.
        """
        producers = self.producers()
        labels: dict[str, str] = {}
        for cell in self.cells:
            labels[cell.id] = cell.name or _producer_label(producers.get(cell.id)) or (
                cell.helper or short_id(cell.id)
            )
        return labels

    @property
    def title(self) -> str:
        return self.patternName or short_id(self.pattern)

    # -- text --------------------------------------------------------------------

    def summary(self) -> str:
        """Deterministic ``text/plain``: pattern, generation, one line per cell."""
        labels = self.cell_labels()
        rows = [(labels[c.id], c.helper or "-", short_id(c.id)) for c in self.cells]
        head = (
            f"GraphSnapshot {self.title} generation {self.generation}: "
            f"{len(self.cells)} cells, {len(self.nodes)} nodes"
        )
        return "\n".join([head, *_table(rows, indent="  ")])

    def __str__(self) -> str:
        return self.summary()

    # -- diff --------------------------------------------------------------------

    def diff(self, other: GraphSnapshot) -> SnapshotDiff:
        """What changed going from ``self`` (before) to ``other`` (after).

        ``kept`` = same id in both; ``changed`` = same display name and helper
        but a different id (paired in graph order when several share them);
        ``added`` / ``removed`` = the rest.  Cells and nodes are compared apart.
        """
        before_labels, after_labels = self.cell_labels(), other.cell_labels()
        entries: list[DiffEntry] = []
        entries += _diff_items(
            "cell",
            [(c.id, before_labels[c.id], c.helper) for c in self.cells],
            [(c.id, after_labels[c.id], c.helper) for c in other.cells],
        )
        entries += _diff_items(
            "node",
            [(n.id, _node_name(n), n.helper) for n in self.nodes],
            [(n.id, _node_name(n), n.helper) for n in other.nodes],
        )
        made = SnapshotDiff(
            before=_version_label(self),
            after=_version_label(other),
            kept=[e for e in entries if e.status == "kept"],
            added=[e for e in entries if e.status == "added"],
            removed=[e for e in entries if e.status == "removed"],
            changed=[e for e in entries if e.status == "changed"],
        )
        made._snapshots = (self, other)
        return made

    # -- drawings ------------------------------------------------------------------

    def to_dot(self, highlight: Mapping[str, str] | None = None) -> str:
        """Graphviz DOT: cells are ellipses (``name\\nshort id``), nodes boxes.

        ``highlight`` maps a cell or node id to one of ``HIGHLIGHT_STYLES`` (a
        node without an entry takes its output cell's).  Items are sorted by id,
        so the text only changes when the graph does.
        """
        return _Drawing.of(self, highlight).dot()

    def to_graphviz(self, highlight: Mapping[str, str] | None = None) -> Any:
        """The drawing of ``to_dot`` as a ``graphviz.Digraph`` (render, pipe, display it)."""
        return _Drawing.of(self, highlight).digraph()

    def to_mermaid(self, highlight: Mapping[str, str] | None = None) -> str:
        """The same drawing as ``to_dot`` in Mermaid ``flowchart`` syntax."""
        return _Drawing.of(self, highlight).mermaid()

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, str]:
        """Jupyter display: text summary, an SVG rendered in-process, Mermaid source."""
        return _mimebundle(
            self.summary, self.to_dot, self.to_mermaid, len(self.cells) + len(self.nodes),
            include, exclude,
        )


def _producer_label(node: SnapshotNode | None) -> str | None:
    return None if node is None else _node_name(node)


def _node_name(node: SnapshotNode) -> str:
    return node.name or module_short_name(node.module.ref)


def _version_label(snapshot: GraphSnapshot) -> str:
    return f"{snapshot.title} generation {snapshot.generation}"


def _table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


# ---------------------------------------------------------------------------
# diffs


class DiffEntry(BaseModel):
    """One cell or node and what happened to it."""

    kind: Literal["cell", "node"]
    status: DiffStatus
    name: str
    helper: str | None = None
    id: str = Field(description="the id after (for removed items: the id they had)")
    previous: str | None = Field(default=None, description="the id before, for changed items")


class SnapshotDiff(BaseModel):
    """Result of ``GraphSnapshot.diff``: kept / added / removed / changed."""

    before: str
    after: str
    kept: list[DiffEntry]
    added: list[DiffEntry]
    removed: list[DiffEntry]
    changed: list[DiffEntry]
    _snapshots: tuple[GraphSnapshot, GraphSnapshot] | None = PrivateAttr(default=None)
    _index: dict[str, DiffStatus] | None = PrivateAttr(default=None)

    def entries(self) -> list[DiffEntry]:
        """Every entry: the after-graph's items in order, then the removed ones."""
        current = {e.id: e for e in (*self.kept, *self.added, *self.changed)}
        snapshots = self._snapshots
        if snapshots is None:
            ordered = [*self.kept, *self.changed, *self.added]
        else:
            after = snapshots[1]
            ids = [c.id for c in after.cells] + [n.id for n in after.nodes]
            ordered = [current[i] for i in ids if i in current]
        cells = [e for e in ordered if e.kind == "cell"] + [
            e for e in self.removed if e.kind == "cell"
        ]
        nodes = [e for e in ordered if e.kind == "node"] + [
            e for e in self.removed if e.kind == "node"
        ]
        return cells + nodes

    def status(self, entity_id: str) -> DiffStatus | None:
        """The status of a cell or node id (after-ids, and before-ids of removed items)."""
        if self._index is None:  # built once: GraphView asks for every item it draws
            self._index = {e.id: e.status for e in self.entries()}
        return self._index.get(entity_id)

    def counts(self, kind: Literal["cell", "node"] | None = None) -> dict[str, int]:
        def n(items: list[DiffEntry]) -> int:
            return sum(1 for e in items if kind is None or e.kind == kind)

        return {
            "kept": n(self.kept), "changed": n(self.changed),
            "added": n(self.added), "removed": n(self.removed),
        }

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def highlight(self) -> dict[str, str]:
        """Id -> highlight status (``kept``/``new``/``changed``/``removed``) for ``to_dot``."""
        return {e.id: _HIGHLIGHT_ALIASES.get(e.status, e.status) for e in self.entries()}

    def to_text(self) -> str:
        """Deterministic report: counts, then one line per cell and node."""
        lines = [f"snapshot diff: {self.before} -> {self.after}"]
        for kind in ("cell", "node"):
            c = self.counts(kind)
            lines.append(
                f"{kind}s: {c['kept']} kept, {c['changed']} changed, "
                f"{c['added']} added, {c['removed']} removed"
            )
        rows = []
        for e in self.entries():
            was = f"(was {short_id(e.previous)})" if e.previous else ""
            rows.append((e.status, e.kind, e.name, e.helper or "-", short_id(e.id), was))
        return "\n".join(lines + _table(rows, indent="  "))

    def __str__(self) -> str:
        return self.to_text()

    def to_dot(self, highlight: Mapping[str, str] | None = None) -> str:
        """The after-graph plus the removed items of the before-graph, coloured by status.

        ``highlight`` overrides the diff's colour of some ids (e.g. ``"error"``).
        """
        return self._drawing(highlight).dot()

    def to_graphviz(self, highlight: Mapping[str, str] | None = None) -> Any:
        """``to_dot`` as a ``graphviz.Digraph``."""
        return self._drawing(highlight).digraph()

    def to_mermaid(self, highlight: Mapping[str, str] | None = None) -> str:
        return self._drawing(highlight).mermaid()

    def _drawing(self, highlight: Mapping[str, str] | None = None) -> _Drawing:
        if self._snapshots is None:
            raise ValueError("this diff was not made by GraphSnapshot.diff; nothing to draw")
        before, after = self._snapshots
        drawing = _Drawing.of(after, {**self.highlight(), **(highlight or {})})
        removed = {e.id for e in self.removed}
        drawing.add_removed(before, removed)
        return drawing

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, str]:
        size = sum(len(s.cells) + len(s.nodes) for s in self._snapshots or ())
        drawable = self._snapshots is not None
        return _mimebundle(
            self.to_text, self.to_dot if drawable else None,
            self.to_mermaid if drawable else None, size, include, exclude,
        )


def _diff_items(
    kind: Literal["cell", "node"],
    before: list[tuple[str, str, str | None]],
    after: list[tuple[str, str, str | None]],
) -> list[DiffEntry]:
    """Match by id, then pair leftovers by (name, helper) in order: linear time."""
    before_ids = {i for i, _n, _h in before}
    after_ids = {i for i, _n, _h in after}
    gone: dict[tuple[str, str | None], deque[str]] = {}
    for entity_id, name, helper in before:
        if entity_id not in after_ids:
            gone.setdefault((name, helper), deque()).append(entity_id)
    taken: set[str] = set()
    out: list[DiffEntry] = []
    for entity_id, name, helper in after:
        if entity_id in before_ids:
            out.append(DiffEntry(kind=kind, status="kept", name=name, helper=helper, id=entity_id))
            continue
        candidates = gone.get((name, helper))
        if candidates:
            previous = candidates.popleft()
            taken.add(previous)
            out.append(DiffEntry(kind=kind, status="changed", name=name, helper=helper,
                                 id=entity_id, previous=previous))
        else:
            out.append(DiffEntry(kind=kind, status="added", name=name, helper=helper, id=entity_id))
    for entity_id, name, helper in before:
        if entity_id not in after_ids and entity_id not in taken:
            out.append(DiffEntry(kind=kind, status="removed", name=name, helper=helper,
                                 id=entity_id))
    return out


# ---------------------------------------------------------------------------
# drawing (DOT and Mermaid share one sorted model of what to draw)


class _Item:
    __slots__ = ("extra", "id", "label", "shape", "status")

    def __init__(self, item_id: str, shape: str, label: list[str], status: str | None,
                 extra: str = "") -> None:
        self.id = item_id
        self.shape = shape  # "cell" | "stream" | "node" | "result" | "external"
        self.label = label
        self.status = status
        self.extra = extra


class _Drawing:
    """Everything to draw, sorted by id; edges sorted by (from, to, label)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.items: dict[str, _Item] = {}
        self.edges: set[tuple[str, str, str, str]] = set()  # (from, to, style, label)

    @classmethod
    def of(cls, snapshot: GraphSnapshot, highlight: Mapping[str, str] | None) -> _Drawing:
        marks = _checked_highlight(highlight)
        drawing = cls(_version_label(snapshot))
        drawing._add(snapshot, marks, None)
        return drawing

    def add_removed(self, snapshot: GraphSnapshot, removed: set[str]) -> None:
        self._add(snapshot, {i: "removed" for i in removed}, removed)

    def _add(self, snapshot: GraphSnapshot, marks: Mapping[str, str],
             only: set[str] | None) -> None:
        labels = snapshot.cell_labels()
        names = {c.id: c.name for c in snapshot.cells}
        for cell in snapshot.cells:
            if only is None or cell.id in only:
                shape = "stream" if cell.capability == "stream" else "cell"
                self.items[cell.id] = _Item(cell.id, shape, [labels[cell.id], short_id(cell.id)],
                                            marks.get(cell.id))
        for node in snapshot.nodes:
            if only is not None and node.id not in only:
                continue
            status = marks.get(node.id)
            if status is None:
                status = next((marks[o] for o in node.outputs if o in marks), None)
            self.items[node.id] = _Item(node.id, "node", [_node_label(node)], status)
            for source in node.inputs:
                self.edges.add((source, node.id, "input", ""))
            for output in node.outputs:
                self.edges.add((node.id, output, "output", ""))
        if only is None and snapshot.result is not None:
            self.items.setdefault(snapshot.result, _Item(
                snapshot.result, "result", [snapshot.title, short_id(snapshot.result)],
                marks.get(snapshot.result),
            ))
        for link in snapshot.links:
            if link.kind == "input" or (only is not None and link.to not in only):
                continue
            style = "redirect" if link.kind == "redirect" else "other"
            label = (link.name or "") if link.kind == "redirect" else link.kind
            if link.kind == "redirect" and label == names.get(link.to):
                label = ""
            self.edges.add((link.from_, link.to, style, label))
        for source, target, _style, _label in list(self.edges):
            for end in (source, target):
                if end not in self.items:
                    self.items[end] = _Item(end, "external", ["external", short_id(end)], None)

    def sorted_items(self) -> list[_Item]:
        return [self.items[k] for k in sorted(self.items)]

    def sorted_edges(self) -> list[tuple[str, str, str, str]]:
        return sorted(self.edges)

    # -- DOT -----------------------------------------------------------------------

    def digraph(self) -> Any:
        """The drawing as a ``graphviz.Digraph`` (its ``.source`` is the DOT text).

        DOT node names are ``i0``, ``i1``, ... in id order (``graphviz`` reads a
        ``:`` in an edge end as a port, and every id here has one); each node's
        ``id`` attribute is its cell or node id, so the SVG's ``<g id=...>``
        names the entity.
        """
        graphviz = _graphviz_module()
        graph = graphviz.Digraph(
            "snapshot",
            graph_attr={"rankdir": "LR", "fontname": "Helvetica", "fontsize": "11",
                        "labelloc": "t", "label": _dot_text(self.title)},
            node_attr={"fontname": "Helvetica", "fontsize": "10"},
            edge_attr={"color": "#607d8b", "arrowsize": "0.7"},
        )
        items = self.sorted_items()
        names = {item.id: f"i{n}" for n, item in enumerate(items)}
        for item in items:
            graph.node(names[item.id], **_dot_attrs(item))
        for source, target, style, label in self.sorted_edges():
            attrs: dict[str, str] = {}
            if style == "redirect":
                attrs.update(style="dashed", color="#9e9e9e")
            elif style == "other":
                attrs["style"] = "dotted"
            if label:
                attrs.update(label=_dot_text(label), fontsize="8")
            graph.edge(names[source], names[target], **attrs)
        return graph

    def dot(self) -> str:
        return str(self.digraph().source)

    # -- Mermaid ---------------------------------------------------------------------

    def mermaid(self) -> str:
        items = self.sorted_items()
        prefixes = {"cell": "c", "stream": "c", "node": "n", "result": "r", "external": "x"}
        counters: dict[str, int] = {}
        ids: dict[str, str] = {}
        for item in items:
            p = prefixes[item.shape]
            ids[item.id] = f"{p}{counters.get(p, 0)}"
            counters[p] = counters.get(p, 0) + 1
        lines = ["flowchart LR", f"  %% {self.title}"]
        for item in items:
            text = "<br/>".join(_mermaid_text(t) for t in item.label)
            open_, close = {
                "cell": ('(["', '"])'), "stream": ('(("', '"))'), "node": ('["', '"]'),
                "result": ('[["', '"]]'), "external": ('>"', '"]'),
            }[item.shape]
            lines.append(f"  {ids[item.id]}{open_}{text}{close}")
        for source, target, style, label in self.sorted_edges():
            arrow = {"input": "-->", "output": "-->", "redirect": "-.->", "other": "-.->"}[style]
            middle = f"|{_mermaid_text(label)}|" if label else ""
            lines.append(f"  {ids[source]} {arrow}{middle} {ids[target]}")
        used = sorted({item.status for item in items if item.status})
        for status in used:
            fill, border, extra = HIGHLIGHT_STYLES[status]
            dash = ",stroke-dasharray:4 3" if extra == "dashed" else ""
            width = ",stroke-width:2px" if extra == "bold" else ""
            lines.append(f"  classDef {status} fill:{fill},stroke:{border}{dash}{width}")
            members = ",".join(ids[i.id] for i in items if i.status == status)
            lines.append(f"  class {members} {status}")
        return "\n".join(lines) + "\n"


def _node_label(node: SnapshotNode) -> str:
    """``lift doubled``: the helper, then the node's name (else its function's)."""
    name = _node_name(node)
    return node.helper if name == node.helper else f"{node.helper} {name}"


def _checked_highlight(highlight: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, status in (highlight or {}).items():
        status = _HIGHLIGHT_ALIASES.get(status, status)
        if status not in HIGHLIGHT_STYLES:
            raise ValueError(
                f"unknown highlight {status!r} for {key}; use one of {sorted(HIGHLIGHT_STYLES)}"
            )
        out[key] = status
    return out


def _dot_text(text: str) -> str:
    """Text for a DOT attribute: backslashes kept literal (``graphviz`` escapes quotes).

    ``nohtml``: a name like ``<lambda>`` is text, not an HTML-like label.
    """
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    marked: str = _graphviz_module().nohtml(escaped)  # a str subclass
    return marked


def _graphviz_module() -> Any:
    try:
        import graphviz  # type: ignore[import-untyped]  # optional: only drawings need it
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "drawing a snapshot needs the graphviz package: pip install 'cellkernel[jupyter]'"
        ) from exc
    return graphviz


def _dot_attrs(item: _Item) -> dict[str, str]:
    shape = {"cell": "ellipse", "stream": "ellipse", "node": "box", "result": "box",
             "external": "ellipse"}[item.shape]
    fill = {"node": "#e8eef9", "result": "#eeeeee"}.get(item.shape, "#ffffff")
    border = "#546e7a"
    styles = ["filled"]
    if item.shape == "node":
        styles.append("rounded")
    if item.shape == "external":
        styles.append("dashed")
    extras: dict[str, str] = {}
    if item.status is not None:
        fill, border, extra = HIGHLIGHT_STYLES[item.status]
        if extra:
            styles.append(extra)
        if item.status == "error":
            extras["penwidth"] = "2"
    if item.shape in ("stream", "result"):
        extras["peripheries"] = "2"
    attrs = {"id": item.id, "shape": shape,
             "label": _dot_text("\n".join(item.label)),
             "style": ",".join(styles), "fillcolor": fill, "color": border, **extras}
    if item.status is not None:
        attrs["class"] = f"ck-{item.status}"
    return attrs


def _mermaid_text(text: str) -> str:
    return (text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;").replace("|", "#124;"))


def _mimebundle(
    text: Any, dot: Any, mermaid: Any, size: int,
    include: Iterable[str] | None, exclude: Iterable[str] | None,
) -> dict[str, str]:
    """Only what was asked for is computed: SVG layout is the expensive part."""
    wanted = set(include) if include is not None else None
    unwanted = set(exclude or ())

    def asked(mime: str) -> bool:
        return (wanted is None or mime in wanted) and mime not in unwanted

    bundle: dict[str, str] = {}
    if asked("text/plain"):
        bundle["text/plain"] = text()
    if dot is not None and asked("image/svg+xml") and size <= SVG_LIMIT:

        try:
            bundle["image/svg+xml"] = render.dot_to_svg(dot())
        except render.GraphvizUnavailableError as exc:  # text still shows; say why once in the log
            log.warning("graph not drawn: %s", exc)
    if mermaid is not None and asked("text/vnd.mermaid"):
        bundle["text/vnd.mermaid"] = mermaid()
    return bundle


# ---------------------------------------------------------------------------
# the published JSON schema


def schema_text() -> str:
    """The published schema file's exact text (stable key order, trailing newline)."""
    return json.dumps(GraphSnapshot.model_json_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: Path | str | None = None) -> Path:
    """Regenerate ``schemas/graph-snapshot.schema.json`` from the model; returns its path."""
    target = Path(path) if path is not None else SCHEMA_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_text(), encoding="utf-8")
    return target


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cellkernel.patterns.snapshot",
        description="Publish the GraphSnapshot JSON schema.",
    )
    parser.add_argument("--schema", action="store_true", help="rewrite the schema file")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the schema file is out of date (for CI)")
    parser.add_argument("--output", type=Path, default=None, help=f"default: {SCHEMA_PATH}")
    args = parser.parse_args(argv)
    target = args.output or SCHEMA_PATH
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != schema_text():
            print(f"{target} is out of date: run python -m cellkernel.patterns.snapshot --schema",
                  file=sys.stderr)
            return 1
        return 0
    if args.schema:
        print(write_schema(target))
        return 0
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
