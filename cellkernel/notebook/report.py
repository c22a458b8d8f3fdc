"""The cause-stability report shown after a ``%%pattern`` re-run.

It lists which ids stayed, with their state.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cellkernel.data.identity import short_id
from cellkernel.notebook.display import STATE_HELPERS, preview

if TYPE_CHECKING:

    from cellkernel.patterns.snapshot import GraphSnapshot, SnapshotDiff
    from cellkernel.runtime import Runtime


@dataclass
class ReportRow:
    """One cell of the instance, before and after a re-run."""

    status: str  # kept | moved | changed | added | removed (the words of GraphSnapshot.diff)
    name: str
    helper: str
    id: str
    old_id: str | None = None
    state: str = ""


def state_values(rt: Runtime, snapshot: GraphSnapshot, space: str) -> dict[str, Any]:
    """Current values of the state cells of a snapshot (read before a re-run)."""
    return {c.id: _value(rt, c.id, space) for c in snapshot.cells if _stateful(c)}


def _stateful(cell: Any) -> bool:
    return cell.helper in STATE_HELPERS or (cell.helper is None and cell.name == "argument")


def stability_report(diff: SnapshotDiff, old: GraphSnapshot, new: GraphSnapshot,
                     old_values: dict[str, Any], rt: Runtime, space: str) -> list[ReportRow]:
    """Per cell: kept / changed / added / removed (``GraphSnapshot.diff``) and its state.

    *kept* cells kept their id, so a state cell's value was carried over
    (*moved* when the id is kept under another name: its state went with the id,
    not with the name); *changed* cells have the same name but a new id (an edited lift, new
    inputs, or a state cell without a variable name whose initial value
    changed: its state starts again). The argument cell is left out while it
    holds nothing, as it does for every plain ``%%pattern`` body.
    """
    cells = {c.id: c for c in old.cells} | {c.id: c for c in new.cells}
    old_names = {c.id: c.name for c in old.cells}
    rows: list[ReportRow] = []
    for entry in diff.entries():
        if entry.kind != "cell":
            continue
        cell = cells.get(entry.id)
        stateful = cell is not None and _stateful(cell)
        status: str = entry.status
        was = old_names.get(entry.id)
        if status == "kept" and was is not None and entry.name is not None and was != entry.name:
            status = "moved"
        now = _value(rt, entry.id, space) if stateful and status != "removed" else None
        before = old_values.get(entry.previous or entry.id)
        if stateful and cell is not None and cell.helper is None and before in (None, {}) \
                and now in (None, {}):
            continue  # the empty argument of a plain body
        state = ""
        if stateful:
            state = {
                "kept": f"carried: {preview(now)}",
                "moved": f"carried from {was}: {preview(now)}",
                "changed": f"reset: {preview(before)} → {preview(now)}",
                "added": f"initial: {preview(now)}",
                "removed": f"dropped: {preview(before)}",
            }[status]
        rows.append(ReportRow(status, entry.name, entry.helper or "-", entry.id,
                              entry.previous, state))
    return rows


def _value(rt: Runtime, entity_id: str, space: str) -> Any:
    try:
        return rt.cell_at(entity_id, space=space).sample()
    except Exception:
        return None


def report_text(rows: list[ReportRow], generation: int) -> str:
    statuses = ("kept", "changed", "added", "removed")
    counts = {s: sum(1 for r in rows if r.status == s) for s in statuses}
    moved = sum(1 for r in rows if r.status == "moved")
    if moved:  # said only when it happens: an id kept under a new name
        counts["moved"] = moved
    head = f"re-run (generation {generation}): " + ", ".join(f"{n} {s}" for s, n in counts.items())
    width = max((len(r.name) for r in rows), default=4)
    lines = [head]
    for r in rows:
        ident = short_id(r.id) + (f" (was {short_id(r.old_id)})" if r.old_id else "")
        line = f"  {r.status:<8} {r.name:<{width}}  {ident}"
        if r.state:
            line += f"  {r.state}"
        lines.append(line.rstrip())
    return "\n".join(lines)


_COLOURS = {"kept": "#f4f4f4", "moved": "#dde8ff", "changed": "#ffe3b3", "added": "#d6f5d6",
            "removed": "#f9d0d0"}


def report_html(rows: list[ReportRow], generation: int) -> str:
    cells = []
    for r in rows:
        ident = html.escape(short_id(r.id))
        if r.old_id:
            ident += f" <small>(was {html.escape(short_id(r.old_id))})</small>"
        cells.append(
            f'<tr style="background:{_COLOURS[r.status]}"><td>{r.status}</td>'
            f"<td><code>{html.escape(r.name)}</code></td><td>{html.escape(r.helper)}</td>"
            f"<td><code>{ident}</code></td><td>{html.escape(r.state)}</td></tr>"
        )
    return (
        f'<table class="cellkernel-report"><caption>re-run, generation {generation}</caption>'
        "<tr><th>status</th><th>cell</th><th>helper</th><th>id</th><th>state</th></tr>"
        + "".join(cells) + "</table>"
    )
