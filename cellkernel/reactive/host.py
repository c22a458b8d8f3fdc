"""What cells and the scheduler ask of the runtime that hosts them.

``runtime.py`` sits above the reactive floor and hands itself to every ``Cell``
and to its ``Scheduler``; the modules here name it by these protocols, so none of
them imports it, and mypy checks each use against what ``Runtime`` really has.
The underscored members are the runtime's kernel services (begin and write a
transaction, settle, poll, record an error): the floors below use them, a user
does not.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cellkernel.errors import NodeError
    from cellkernel.store.documents import Store
    from cellkernel.store.transactions import Address, Transaction
    from cellkernel.store.writeback import WriteBack


class EventQueue(Protocol):
    """The scheduler, as a cell sends events and sinks values through it."""

    def queue_event(self, stream: Address, event: Any) -> int: ...

    def sink(self, cell: Any, callback: Callable[[Any], Any]) -> Callable[[], None]: ...


class CellHost(Protocol):
    """A ``Runtime``, as cells, link materialisation and the scheduler use it."""

    store: Store
    writeback: WriteBack | None

    @property
    def scheduler(self) -> EventQueue: ...

    def read_tx(self) -> Transaction: ...

    def peek(self, space: str, entity_id: str) -> Any: ...

    def set_scalar(self, space: str, entity_id: str, value: Any) -> bool: ...

    def set_scalar_at(self, space: str, entity_id: str, path: tuple[str | int, ...],
                      value: Any, schema: Any, where: Callable[[], str]) -> bool: ...

    def read_factory(self, sigil: Any) -> Any: ...

    def batch(self) -> AbstractContextManager[None]: ...

    def _begin(self, *, frame: Any = None, track: bool = True) -> Transaction: ...

    def _write(self, fn: Callable[..., Any], *args: Any, retries: int = 5) -> Any: ...

    def _new_event_id(self) -> str: ...

    def _settle_if_free(self) -> None: ...

    def _settle_after_send(self) -> None: ...

    def _record_error(self, error: NodeError) -> None: ...

    def _poll(self) -> None: ...

    def _on_unhandled_event(self, stream: Address, event: Any) -> None: ...
