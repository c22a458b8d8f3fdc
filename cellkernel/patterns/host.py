"""What the pattern floor asks of the runtime that hosts it.

``runtime.py`` sits above this floor and builds the runner; the modules here name
it by this protocol, so none of them imports it, not even for annotations.
"""

from __future__ import annotations

from typing import Any, Protocol

from cellkernel.errors import NodeError
from cellkernel.patterns.registry import TrustPolicy
from cellkernel.reactive.cells import Cell
from cellkernel.reactive.host import CellHost
from cellkernel.reactive.scheduler import Scheduler
from cellkernel.store.transactions import Transaction


class Host(CellHost, Protocol):
    """A ``Runtime``, as the runner, its planning and its argument readers use it
    (and, through the cells they make, as ``CellHost`` says)."""

    space: str
    debug: bool
    pause_gc: bool
    scheduler: Scheduler
    trust: TrustPolicy
    errors: list[NodeError]

    def _commit(self, tx: Transaction) -> None: ...

    def get_cell(self, cause: Any, schema: Any = None, space: str | None = None) -> Cell[Any]: ...

    def run(self, pattern: Any, argument: Any = None, cause: Any = None) -> Cell[Any]: ...

    def resume(self, cause_or_entity_id: Any) -> Cell[Any]: ...

    def stop(self, result: Cell[Any]) -> None: ...
