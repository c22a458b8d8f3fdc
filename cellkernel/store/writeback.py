"""Group commit: the derived writes of one settle, landed in one store commit per space.

A durable store (SQLite, PostgreSQL) pays a transaction per commit: tens of
microseconds each, far more than a lift's own work.  While the scheduler
drains, every lift's transaction lands in this write-back layer instead
(``land``: the same compare-and-swap, against the layer's view), and every
transaction reads through it (``load``), so the settle sees its own derived
values at once.  ``flush`` writes them at the end of the drain in one commit
per space, each document once, compared against the version it had when the
settle first wrote it.

The user's own writes never wait here: they commit to the store when ``set()``
returns.  A crash between that commit and the flush loses only derived values,
which every node recomputes when its instance is resumed (SPEC §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cellkernel.store.documents import (
    Change,
    Document,
    Key,
    Store,
    conflict_error,
    new_change,
    new_document,
    replaced,
)
from cellkernel.store.memory import owned_parts


class WriteBack:
    """Derived documents not yet in ``store``, keyed ``(space, entity_id)``.

    A landed document's version is the one the store will give it: one more
    than the stored version it replaces, however often the settle rewrote it,
    so a transaction that read it commits against the right basis after the
    flush.
    """

    __slots__ = ("_basis", "_docs", "store")

    def __init__(self, store: Store) -> None:
        self.store = store
        self._docs: dict[Key, Document] = {}
        #: the stored version each landed document replaces (0: it is new)
        self._basis: dict[Key, int] = {}

    def __bool__(self) -> bool:
        return bool(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    def load(self, space: str, entity_id: str) -> Document | None:
        """The document as this settle sees it: landed here, else stored."""
        doc = self._docs.get((space, entity_id))
        if doc is not None:
            return doc
        return self.store.load(space, entity_id)

    def _moved(self, key: Key, base: Document | None) -> bool:
        """Whether ``key`` changed since a transaction read it as ``base``.

        Landed here: identity (every landing is a new ``Document``).  Stored:
        its version (a store may hand out a fresh object for the same version).
        """
        current = self._docs.get(key)
        if current is not None:
            return current is not base
        stored = self.store.load(*key)
        if stored is None or base is None:
            return stored is not base
        return stored.version != base.version

    def land(
        self,
        space: str,
        dirty: list[tuple[str, Any, Any, Any, bool]],
        working: Mapping[Key, Any],
        handed: set[int] | None = None,
    ) -> list[Change]:
        """``MemoryStore.commit_working``, against this layer: a CAS, then keep the writes.

        Every document the transaction touched must still be the one it read
        (``_moved``: identity for a document landed here, the version for a
        stored one); else a ``ConflictError`` and nothing lands.
        """
        docs = self._docs
        bases: dict[Key, Any] = {}  # (a document read as absent: None)
        conflicts: list[tuple[Key, int, int]] | None = None
        for key, read in working.items():
            base = read.base
            bases[key] = base
            if self._moved(key, base):
                if conflicts is None:
                    conflicts = []
                current = self.load(*key)
                conflicts.append((key, base.version if base is not None else 0,
                                  current.version if current is not None else 0))
        if conflicts:
            raise conflict_error(space, conflicts)
        owned = owned_parts(space, dirty, bases, handed)
        changes: list[Change] = []
        basis = self._basis
        for entity_id, value, source, meta in owned:
            key = (space, entity_id)
            before = bases.get(key)
            if key not in basis:
                basis[key] = before.version if before is not None else 0
            after = new_document(value, source, meta, basis[key] + 1)
            docs[key] = after
            changes.append(new_change(space, entity_id, before, after))
        return changes

    def land_value(
        self,
        space: str,
        entity_id: str,
        before: Document | None,
        value: Any,
        read: list[tuple[Key, Document]],
    ) -> list[Change]:
        """``land`` for one run that read ``read`` and replaces ``before`` with a scalar."""
        key = (space, entity_id)
        docs = self._docs
        for k, d in ((key, before), *read):
            if self._moved(k, d):
                current = self.load(*k)
                raise conflict_error(space, [(k, d.version if d is not None else 0,
                                              current.version if current is not None else 0)])
        basis = self._basis
        if key not in basis:
            basis[key] = before.version if before is not None else 0
        after = replaced(before, value, basis[key] + 1)
        docs[key] = after
        return [new_change(space, entity_id, before, after)]

    def flush(self) -> None:
        """Write every landed document to the store: one commit per space.

        On ``ConflictError`` (another process wrote one of these documents
        meanwhile) nothing of that space lands and the layer is emptied anyway:
        the caller re-runs the nodes that wrote them, against fresh data.
        """
        if not self._docs:
            return
        by_space: dict[str, dict[str, Document]] = {}
        for (space, entity_id), doc in self._docs.items():
            by_space.setdefault(space, {})[entity_id] = doc
        basis = self._basis
        self._docs = {}
        self._basis = {}
        for space, writes in by_space.items():
            self.store.commit(space, writes, {(space, e): basis[(space, e)] for e in writes})

    def discard(self) -> list[Key]:
        """Drop every landed document (the store never sees them); returns their keys."""
        keys = list(self._docs)
        self._docs = {}
        self._basis = {}
        return keys
