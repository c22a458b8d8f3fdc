"""Small helpers shared by the core test-suite (values … runtime).

They sit on the scheduler's internal action API, the layer the builder uses:
an ``Action`` reads and writes through cells bound to its transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import Any

from cellkernel.reactive.cells import Cell
from cellkernel.reactive.scheduler import Action, EventHandler
from cellkernel.runtime import Runtime
from cellkernel.store.documents import Document
from cellkernel.store.sqlite import SqliteStore
from cellkernel.store.transactions import Transaction

OTHER_SPACE = "did:test:other"

Address = tuple[str, str, tuple[str | int, ...]]


def addr(cell: Cell[Any]) -> Address:
    """The (space, entity id, path) triple of a connected cell."""
    assert cell.space is not None and cell.entity_id is not None
    return (cell.space, cell.entity_id, cell.path)


def lift(
    rt: Runtime,
    name: str,
    inputs: Sequence[Cell[Any]],
    output: Cell[Any],
    fn: Callable[..., Any],
    log: list[Any] | None = None,
    *,
    schedule: bool = True,
    declare_reads: bool = False,
) -> Action:
    """Subscribe ``output = fn(*inputs)`` as a reactive action.

    Each run appends ``(name, *input_values)`` to ``log`` when given.
    """

    def run(tx: Transaction) -> None:
        values = [cell.with_tx(tx).get() for cell in inputs]
        if log is not None:
            log.append((name, *values))
        output.with_tx(tx).set(fn(*values))

    action = Action(
        run,
        name=name,
        writes=[addr(output)],
        reads=[addr(c) for c in inputs] if declare_reads else [],
    )
    rt.scheduler.subscribe(action, schedule=schedule)
    return action


def write_raw(rt: Runtime, *writes: tuple[Cell[Any], Any]) -> None:
    """Store each value verbatim at its cell, in one transaction (links stay links)."""
    with rt.edit() as tx:
        for cell, value in writes:
            tx.write(*addr(cell), value)


def make_stream(rt: Runtime, cause: Any, space: str | None = None) -> Cell[Any]:
    """A stream cell: any cell whose stored value is the stream marker.

    Written below ``set``, which refuses the marker as user data (it would read
    back as a Stream); streams are otherwise made by handlers in patterns.
    """
    stream = rt.get_cell(cause, space=space)
    where = addr(stream)
    rt._write(lambda tx: tx.write(where[0], where[1], where[2], {"$stream": True}))
    return stream


def on_event(
    rt: Runtime, stream: Cell[Any], fn: Callable[[Transaction, Any], Any], name: str = "handler"
) -> EventHandler:
    handler = EventHandler(fn, addr(stream), name=name)
    rt.scheduler.add_handler(handler)
    return handler


def doc(rt: Runtime, cell: Cell[Any]) -> Document | None:
    """The stored document under ``cell`` (as the runtime's store has it)."""
    assert cell.space is not None and cell.entity_id is not None
    return rt.store.load(cell.space, cell.entity_id)


def version(rt: Runtime, cell: Cell[Any]) -> int:
    stored = doc(rt, cell)
    return 0 if stored is None else stored.version


def raw(rt: Runtime, cell: Cell[Any]) -> Any:
    stored = doc(rt, cell)
    return None if stored is None else stored.value


def store_state(rt: Runtime, *spaces: str) -> dict[Any, Any]:
    """Everything the store holds in ``spaces`` (default: the runtime's and OTHER_SPACE).

    For SQLite the raw rows are read through a separate connection too, so a
    comparison before/after is byte-for-byte.
    """
    state: dict[Any, Any] = {}
    for space in spaces or (rt.space, OTHER_SPACE):
        for entity_id in rt.store.entity_ids(space):
            state[(space, entity_id)] = rt.store.load(space, entity_id)
    if isinstance(rt.store, SqliteStore):
        with closing(sqlite3.connect(rt.store.path)) as conn:
            state["rows"] = conn.execute(
                "SELECT space, id, value, source, meta, version, seq FROM documents "
                "ORDER BY space, id"
            ).fetchall()
    return state


def runtime_on(store: str, tmp_path: Any, name: str = "state.db") -> Runtime:
    """A fresh runtime on ``store`` ("memory" or "sqlite": a file ``name`` in ``tmp_path``)."""
    return Runtime(store="memory:" if store == "memory" else f"sqlite:///{tmp_path / name}")


def count_compared(rt: Runtime) -> list[int]:
    """From now on, how many read paths each grouped notify of ``rt`` compares (one entry
    per call of ``Scheduler._schedule_groups``)."""
    compared: list[int] = []
    schedule = rt.scheduler._schedule_groups

    def counting(by_path: Any, paths: Any, *rest: Any) -> None:
        paths = list(paths)
        compared.append(len(paths))
        schedule(by_path, paths, *rest)

    rt.scheduler._schedule_groups = counting  # type: ignore[method-assign, assignment]
    return compared
