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

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from cellkernel.errors import ConflictError
from cellkernel.store.documents import (
    Change,
    Document,
    Key,
    ReadBasis,
    Store,
    conflict_error,
    new_change,
    new_document,
    replaced,
)
from cellkernel.store.memory import owned_parts

#: a key the store's cache does not hold (None there: known absent)
_UNCACHED: Any = object()


class WriteBack:
    """Derived documents not yet in ``store``, keyed ``(space, entity_id)``.

    A landed document's version is the one the store will give it: one more
    than the stored version it replaces, however often the settle rewrote it,
    so a transaction that read it commits against the right basis after the
    flush.  That version is also the flush's basis: the stored version it
    replaces is ``version - 1`` (0: it is new).
    """

    __slots__ = ("_cached", "_commit_landed", "_docs", "_load", "store")

    def __init__(self, store: Store) -> None:
        self.store = store
        self._docs: dict[Key, Document] = {}
        self._load = store.load
        #: the store's cache of documents as on file (``SqliteStore.cached_view``), read
        #: here without a call into the store: what ``store.load`` would return for a
        #: key it holds (moved to the end, as a load would); other keys go to ``load``
        view = getattr(store, "cached_view", None)
        self._cached: OrderedDict[Key, Document | None] = (
            view() if view is not None else OrderedDict())
        #: the store's own group commit of landed documents (``SqliteStore.commit_landed``)
        self._commit_landed = getattr(store, "commit_landed", None)

    def __bool__(self) -> bool:
        return bool(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    def load(self, space: str, entity_id: str) -> Document | None:
        """The document as this settle sees it: landed here, else stored."""
        return self.load_key((space, entity_id))

    def load_key(self, key: Key) -> Document | None:
        """``load`` by its key (a compiled plan builds the key once for its CAS list too)."""
        doc = self._docs.get(key)
        if doc is not None:
            return doc
        cached = self._cached
        doc = cached.get(key, _UNCACHED)  # (a cached hit: ``SqliteStore.load`` without a call)
        if doc is not _UNCACHED:
            try:
                cached.move_to_end(key)
            except KeyError:  # evicted by another thread just now
                return doc
            return doc
        return self._load(*key)

    def _moved(self, key: Key, base: Document | None) -> bool:
        """Whether ``key`` changed since a transaction read it as ``base``.

        Landed here: identity (every landing is a new ``Document``).  Stored:
        its version (a store may hand out a fresh object for the same version).
        """
        current = self._docs.get(key)
        if current is not None:
            return current is not base
        stored: Document | None = self._cached.get(key, _UNCACHED)
        if stored is _UNCACHED:
            stored = self._load(*key)
        if stored is None or base is None:
            return stored is not base
        return stored.version != base.version

    def _conflict(self, space: str, stale: list[tuple[Key, Document | None]]) -> ConflictError:
        return conflict_error(space, [
            (k, d.version if d is not None else 0,
             (c.version if (c := self.load(*k)) is not None else 0)) for k, d in stale])

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
        stale: list[tuple[Key, Document | None]] | None = None
        for key, read in working.items():  # (a document only read: itself, see ``commit_working``)
            base = read if type(read) is Document else read.base
            bases[key] = base
            if self._moved(key, base):
                if stale is None:
                    stale = []
                stale.append((key, base))
        if stale:
            raise self._conflict(space, stale)
        owned = owned_parts(space, dirty, bases, handed)
        changes: list[Change] = []
        for entity_id, value, source, meta in owned:
            key = (space, entity_id)
            before = bases.get(key)
            landed = docs.get(key)
            version = (landed.version if landed is not None
                       else before.version + 1 if before is not None else 1)
            after = new_document((value, source, meta, version))
            docs[key] = after
            changes.append(new_change((space, entity_id, before, after)))
        return changes

    def land_value(self, space: str, entity_id: str, before: Document | None, value: Any,
                   read: ReadBasis) -> list[Change]:
        """``land`` for one run that read ``read`` and replaces ``before`` with a scalar."""
        key = (space, entity_id)
        docs = self._docs
        cached = self._cached
        landed = docs.get(key)
        if landed is not None:  # rewritten in this settle: same version, checked by identity
            if landed is not before:
                raise self._conflict(space, [(key, before)])
            version = landed.version
        else:  # ``_moved`` inline: the stored document must still be at the version read
            stored = cached.get(key, _UNCACHED)
            if stored is _UNCACHED:
                stored = self._load(space, entity_id)
            if stored is not before and (
                stored is None or before is None or stored.version != before.version
            ):
                raise self._conflict(space, [(key, before)])
            version = before.version + 1 if before is not None else 1
        for k, d in read:
            current = docs.get(k)
            if current is None:
                current = cached.get(k, _UNCACHED)
                if current is _UNCACHED:
                    current = self._load(*k)
                if current is not d and current is not None and d is not None and (
                    current.version == d.version
                ):
                    continue
            if current is not d:
                raise self._conflict(space, [(k, d)])
        after = replaced(before, value, version)
        docs[key] = after
        return [new_change((space, entity_id, before, after))]

    def flush(self) -> None:
        """Write every landed document to the store: one commit per space.

        Each document is compared against the stored version it replaces
        (its own version minus one).  On ``ConflictError`` (another process
        wrote one of these documents meanwhile) nothing of that space lands
        and the layer is emptied anyway: the caller re-runs the nodes that
        wrote them, against fresh data.
        """
        docs = self._docs
        if not docs:
            return
        self._docs = {}
        spaces = {space for space, _ in docs}
        by_space: dict[str, dict[Key, Document]]
        if len(spaces) == 1:
            by_space = {spaces.pop(): docs}
        else:
            by_space = {}
            for key, doc in docs.items():
                by_space.setdefault(key[0], {})[key] = doc
        commit_landed = self._commit_landed
        for space, landed in by_space.items():
            if commit_landed is not None:
                commit_landed(space, landed)
            else:
                self.store.commit(space, {e: doc for (_, e), doc in landed.items()},
                                  {key: doc.version - 1 for key, doc in landed.items()})

    def discard(self) -> list[Key]:
        """Drop every landed document (the store never sees them); returns their keys."""
        keys = list(self._docs)
        self._docs = {}
        return keys
