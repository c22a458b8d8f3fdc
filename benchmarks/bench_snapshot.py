"""Graph snapshot and cause-derivation cost on a chain of 10 000 lifts.

Every run of an instance derives one id per cell and writes a snapshot with one
record per node, so both grow with the graph.  The chain is the worst shape for
a diff after an edit of its first lift: every id downstream changes.

Run: ``python benchmarks/bench_snapshot.py`` (or through ``python -m benchmarks``,
which calls ``run()``).  Rows are ``{"case", "value", "unit"}``; times are the best
of ``repeat`` tries, in seconds unless the unit says otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellkernel.patterns import plan as plan_module
from cellkernel.patterns.builder import Pattern, lift, pattern
from cellkernel.patterns.snapshot import GraphSnapshot
from cellkernel.runtime import Runtime

SIZE = 10_000
CAUSE = "bench-snapshot"


@lift
def step(x: int) -> int:
    return x + 1


def _first() -> Any:
    @lift
    def first(x: int) -> int:
        return x + 1

    return first


def _first_edited() -> Any:
    """Same name, another body: a new implementation hash, so new ids downstream."""

    @lift
    def first(x: int) -> int:
        return x + 2

    return first


def chain(size: int = SIZE, edited: bool = False) -> Pattern:
    """``start -> first -> step -> step -> ...``: ``size`` lifts in one line."""
    head = _first_edited() if edited else _first()

    @pattern
    def Chain(start: int = 0) -> Any:
        x = head(start)
        for _ in range(size - 1):
            x = step(x)
        return {"end": x}

    made: Pattern = Chain
    return made


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best = float("inf")
    value: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def run(size: int = SIZE, repeat: int = 3) -> list[dict[str, Any]]:
    """Measure building, id derivation, snapshotting, validation, diff and drawing."""
    rows: list[dict[str, Any]] = []

    def row(case: str, value: float, unit: str = "s") -> None:
        rows.append({"case": f"snapshot/{case}", "value": round(value, 6), "unit": unit})

    seconds, p = _best(lambda: chain(size), 1)
    row(f"build pattern ({size} lifts)", seconds)

    rt = Runtime()
    result_id = plan_module.derive_id(CAUSE)
    graph = p.graph
    seconds, planned = _best(lambda: plan_module.plan(rt, graph, result_id, rt.space), repeat)
    row(f"plan: ids + node records ({size} nodes)", seconds)
    ids, records, cells = planned
    components = [c["cause"] for c in cells]
    seconds, _ = _best(lambda: [plan_module.derive_id(c) for c in components], repeat)
    row(f"id derivation only ({len(components)} causes)", seconds)
    row("id derivation per cell", seconds / len(components) * 1e6, "us")

    start = time.perf_counter()
    result = rt.run(p, None, cause=CAUSE)
    row(f"rt.run total ({size} nodes, incl. settle)", time.perf_counter() - start)
    instance = rt.runner.instance_of(result)
    if instance is not None and hasattr(rt.runner, "_snapshot_json"):
        def build() -> Any:
            return rt.runner._snapshot_json(instance, p, records, [dict(c) for c in cells], ids,
                                            graph, rt.read_tx(), None)

        seconds, _ = _best(build, repeat)
        row("snapshot JSON assembly (runner._snapshot_json)", seconds)

    stored = rt.store.load(rt.space, result.entity_id or "")
    raw = stored.meta["graph"] if stored is not None else {}
    row("snapshot JSON size", len(json.dumps(raw, separators=(",", ":"))), "bytes")
    seconds, snap = _best(lambda: GraphSnapshot.model_validate(raw), repeat)
    row("validate stored snapshot (GraphSnapshot)", seconds)
    seconds, _ = _best(lambda: rt.snapshot(result), repeat)
    row("rt.snapshot(result): load + validate", seconds)

    seconds, _ = _best(lambda: snap.diff(snap), repeat)
    row("diff, nothing changed", seconds)
    edited_rt = Runtime()
    edited = edited_rt.snapshot(edited_rt.run(chain(size, edited=True), None, cause=CAUSE))
    seconds, d = _best(lambda: snap.diff(edited), repeat)
    row("diff, head edited (every id changed)", seconds)
    row("diff, head edited: changed cells + nodes", len(d.changed), "items")
    seconds, _ = _best(snap.to_dot, repeat)
    row("to_dot", seconds)
    seconds, _ = _best(snap.to_mermaid, repeat)
    row("to_mermaid", seconds)
    seconds, _ = _best(snap.summary, repeat)
    row("summary (text/plain)", seconds)
    rt.close()
    edited_rt.close()
    return rows


def main() -> None:
    for r in run():
        print(f"{r['case']:<55} {r['value']:>14,.6f} {r['unit']}")


if __name__ == "__main__":
    main()
