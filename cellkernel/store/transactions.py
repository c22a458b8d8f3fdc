"""Transactions: a read journal, copy-on-write working documents, one CAS commit.

A transaction reads any number of spaces and writes exactly one.  It records
the version of every document it touched (its *basis*); the store's commit is a
compare-and-swap over all of them, so a stale basis raises ``ConflictError``
and nothing of the transaction lands.  The read journal (space, id, path) is
what the scheduler subscribes an action to.
"""

from __future__ import annotations

import contextlib
import operator
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from cellkernel.data.values import MISSING, Path, get_path, json_equal, set_path
from cellkernel.errors import TransactionClosedError, WriteIsolationError
from cellkernel.store.documents import (
    FAST_DEPTH,
    INT_FLOOR,
    INT_LIMIT,
    Change,
    Document,
    new_document,
)

if TYPE_CHECKING:
    from cellkernel.store.documents import Store
    from cellkernel.store.writeback import WriteBack

Address = tuple[str, str, Path]

#: what ``Transaction.read_document`` answers for a document the transaction wrote (no stored
#: document is it)
WRITTEN: Any = object()

#: a stored document's value (a ``Document`` is a tuple: its first field, taken in C)
_document_value = operator.itemgetter(0)


class _Working:
    """A document as this transaction sees it: basis plus its own writes."""

    __slots__ = ("base", "dirty", "meta", "owned", "paths", "source", "value")
    # (declared here, not in ``__init__``: a bare ``self.x: T`` there still evaluates ``self``)
    value: Any
    source: Any
    meta: Mapping[str, Any]

    def __init__(self, base: Document | None) -> None:
        self.base = base
        if base is None:
            self.value = self.source = None
            self.meta = {}
        else:  # (one test, not one per field: a transaction makes one per document it reads)
            self.value, self.source, self.meta, _version = base
        self.dirty = False
        #: ``value`` is stored parts, spines copied by ``write`` and plain scalars only:
        #: a store that keeps decoded copies need not copy it again
        self.owned = True
        #: the paths written, while every write was at a path (else None): a no-op check
        #: then compares those paths only, not the whole document (a list of 10 000)
        self.paths: list[Path] | None = []

    @property
    def version(self) -> int:
        return self.base.version if self.base is not None else 0


def _unchanged(stored: Any, working: _Working) -> bool:
    """Whether ``working``'s value equals the stored container (only its written paths, if
    known; a list grown or cut short is changed without looking at them)."""
    value = working.value
    if type(value) is not type(stored):
        return False
    if len(value) != len(stored):
        return False
    paths = working.paths
    if paths:
        return all(json_equal(get_path(stored, p), get_path(value, p)) for p in paths)
    return json_equal(stored, value)


class Transaction:
    """One atomic unit of reads and writes against a store."""

    __slots__ = (
        "_docs",
        "_handed",
        "_load_key",
        "_on_abort",
        "_on_commit",
        "_store",
        "_view",
        "defer",
        "frame",
        "reads",
        "status",
        "track",
        "write_space",
        "writes",
    )

    def __init__(self, store: Store, *, track: bool = True, frame: Any = None,
                 view: WriteBack | None = None) -> None:
        self._store = store
        #: what documents are loaded from: the store, or the settle's write-back layer
        #: on top of it (``store/writeback.py``), so derived values not flushed are seen
        self._view: Store | WriteBack = store if view is None else view
        #: the view's load by key where it has one (MemoryStore: its dict's own ``get``, no
        #: Python frame per document a transaction reads), else None: ``load``
        self._load_key: Callable[[tuple[str, str]], Document | None] | None = getattr(
            self._view, "load_key", None)
        #: a write-back layer this transaction's commit lands in instead of the store
        self.defer: WriteBack | None = None
        #: working copies of the documents written, stored ``Document`` objects of those only read
        self._docs: dict[tuple[str, str], _Working | Document] = {}
        #: values handed over (``hand_over``) by id, held so the ids stay theirs
        self._handed: dict[int, Any] | None = None
        self.reads: list[Address] = []
        self.writes: list[Address] = []
        self.write_space: str | None = None
        self.status = "open"
        self.track = track
        self.frame = frame
        #: ``on_commit`` and ``on_abort``, made on first use (most transactions have none)
        self._on_commit: list[Callable[[Transaction], None]] | None = None
        self._on_abort: list[Callable[[Transaction], None]] | None = None

    @property
    def on_commit(self) -> list[Callable[[Transaction], None]]:
        """Called once after the commit (also one that lands nothing), in order."""
        callbacks = self._on_commit
        if callbacks is None:
            callbacks = self._on_commit = []
        return callbacks

    @property
    def on_abort(self) -> list[Callable[[Transaction], None]]:
        """Called once if the transaction ends without landing (abort or failed commit)."""
        callbacks = self._on_abort
        if callbacks is None:
            callbacks = self._on_abort = []
        return callbacks

    # -- reading -----------------------------------------------------------

    def _working(self, space: str, entity_id: str) -> _Working:
        """The document's working copy, made now if it was only read (for a write or
        its metadata)."""
        key = (space, entity_id)
        working = self._docs.get(key)
        if working is None:
            working = self._load(key)
        if isinstance(working, _Working):
            return working
        made = self._docs[key] = _Working(working)
        return made

    def _load(self, key: tuple[str, str]) -> _Working | Document:
        """A document this transaction has not read yet: kept as it is stored (read only:
        ``_docs`` holds a stored ``Document`` until it is written), an absent one as an
        empty working copy."""
        if self.status != "open":
            raise TransactionClosedError(f"transaction is {self.status}")
        load = self._load_key
        doc = load(key) if load is not None else self._view.load(*key)
        loaded = self._docs[key] = doc if doc is not None else _Working(None)
        return loaded

    def read(self, space: str, entity_id: str, path: Path, *, track: bool = True) -> Any:
        """The raw stored value at ``path`` (links not followed), or ``MISSING``."""
        key = (space, entity_id)
        working = self._docs.get(key)  # hot path: ``_working``'s hit inline
        if working is None:
            working = self._load(key)
        if track and self.track:
            self.reads.append((space, entity_id, path))
        value: Any = working.value
        if value is None and type(working) is _Working and working.base is None:
            return MISSING
        if not path:
            return value
        if len(path) == 1 and type(value) is dict:  # ``get_path`` for one key, inline
            return value.get(path[0], MISSING)
        return get_path(value, path)

    def basis(self) -> list[tuple[tuple[str, str], Document | None]]:
        """Every document this transaction loaded, as it was loaded (what a commit checks)."""
        return [(key, working.base if isinstance(working, _Working) else working)
                for key, working in self._docs.items()]

    def paths_written(self, key: tuple[str, str]) -> list[Path] | None:
        """The paths this transaction wrote in a document, while every write was at a
        path (None: written whole, not written, or not known)."""
        working = self._docs.get(key)
        return working.paths if isinstance(working, _Working) else None

    def read_document(self, key: tuple[str, str]) -> Any:
        """The stored document this transaction read at ``key`` (None: absent), or
        ``WRITTEN`` if it wrote it; loaded now if it had not read it."""
        working = self._docs.get(key)
        if working is None:
            working = self._load(key)
        if type(working) is not _Working:
            return working
        return WRITTEN if working.dirty else working.base

    def holds(self, documents: tuple[tuple[tuple[str, str], Document], ...]) -> bool:
        """Whether each ``(key, document)`` is what this transaction reads there, none of
        them written by it (documents it had not read are loaded, so they join its
        basis).  A store replaces a document on every commit: identity is the check."""
        docs = self._docs
        load = self._load_key
        for key, doc in documents:
            mine = docs.get(key)
            if mine is doc:
                continue
            if mine is None:
                if load is None or self.status != "open":
                    if self.read_document(key) is not doc:
                        return False
                    continue
                mine = load(key)
                if mine is not doc:
                    return False
                docs[key] = doc
            elif type(mine) is not _Working or mine.dirty or mine.base is not doc:
                return False
        return True

    def wrote(self, space: str, entity_id: str) -> bool:
        """Whether this transaction wrote the document.  If not, every value in it is
        the store's own, which is never changed in place (``links.stored_link``)."""
        working = self._docs.get((space, entity_id))
        return type(working) is _Working and working.dirty

    def value(self, space: str, entity_id: str) -> Any:
        """A whole document's raw value (``MISSING`` if absent), not journaled.

        ``read(space, entity_id, (), track=False)`` for link resolution, which reads
        this at every hop, then walks the path and journals what it walked itself.
        """
        key = (space, entity_id)
        working = self._docs.get(key)
        if working is None:
            working = self._load(key)
        value = working.value
        if value is None and type(working) is _Working and working.base is None:
            return MISSING
        return value

    def peek_all(self, keys: list[tuple[str, str]]) -> list[Any] | None:
        """The raw values of whole documents (``MISSING`` for an absent one).

        Only for a read-only transaction (``track=False``, what ``Runtime.read_tx``
        makes; None otherwise): documents it has not read are loaded without
        a working copy, since it never commits (a list of N output links is
        read in N loads, and their values taken in C).
        """
        if self.track or self.status != "open":
            return None
        docs = self._docs
        view = self._view
        load = getattr(view, "load_key", None)
        if load is None:
            load = lambda key: view.load(*key)  # noqa: E731
        if docs.keys().isdisjoint(keys):
            try:
                return list(map(_document_value, map(load, keys)))
            except TypeError:  # an absent document (None has no value): one by one
                pass
        values: list[Any] = []
        append = values.append
        for key in keys:
            if key in docs:
                append(self.read(key[0], key[1], (), track=False))
            else:
                doc = load(key)
                append(doc.value if doc is not None else MISSING)
        return values

    def stored_documents(self, keys: list[tuple[str, str]]) -> list[Document] | None:
        """The stored documents at ``keys``, joined to this transaction's basis as ``read``
        joins them (not journaled: the caller journals what it reads of them).

        None when this transaction wrote one of them or one is absent: the caller
        reads them one by one.  Documents it has not read yet are loaded in one pass
        (a lift reading the N outputs of a map loads them in C).
        """
        if self.status != "open":
            raise TransactionClosedError(f"transaction is {self.status}")
        docs = self._docs
        load = self._load_key
        if load is not None and docs.keys().isdisjoint(keys):
            loaded = list(map(load, keys))
            if None in loaded:
                return None
            found = cast("list[Document]", loaded)
            docs.update(zip(keys, found, strict=True))
            return found
        found = []
        for key in keys:
            held = docs.get(key)
            if isinstance(held, _Working):
                return None
            doc = held if held is not None else (
                load(key) if load is not None else self._view.load(*key))
            if doc is None:
                return None
            docs[key] = doc
            found.append(doc)
        return found

    def document(self, space: str, entity_id: str) -> _Working:
        """The working document (for metadata reads); not tracked."""
        return self._working(space, entity_id)

    def exists(self, space: str, entity_id: str) -> bool:
        key = (space, entity_id)
        working = self._docs.get(key)
        if working is None:
            working = self._load(key)
        return type(working) is not _Working or working.base is not None or working.dirty

    # -- writing -----------------------------------------------------------

    def claim(self, space: str) -> None:
        """Fix the one space this transaction may write before anything is written.

        A handler's transaction claims its instance's space, so a handler that
        writes only a cell of another space is refused like any second space.
        """
        self._claim(space)

    def _claim(self, space: str) -> None:
        if self.status != "open":
            raise TransactionClosedError(f"cannot write: transaction is {self.status}")
        if self.write_space is None:
            self.write_space = space
        elif self.write_space != space:
            raise WriteIsolationError(
                f"a transaction writes one space: it already writes {self.write_space!r}, "
                f"refusing a write to {space!r}"
            )

    def write(self, space: str, entity_id: str, path: Path, value: Any, *,
              changed: list[Path] | None = None) -> None:
        """Write ``value`` at ``path``; copy-on-write so stored documents stay shared.

        ``changed`` names the paths that write changes when they are fewer than
        all of ``path`` (a list cut short: its removed indices), so a map over
        the list re-keys those only, as it does for element writes.
        """
        if self.write_space != space or self.status != "open":
            if self.write_space is None and self.status == "open":
                self.write_space = space  # the first write claims its space (``_claim``)
            else:
                self._claim(space)
        docs = self._docs
        key = (space, entity_id)
        working = docs.get(key)
        if working is None:
            working = self._working(space, entity_id)
        elif not isinstance(working, _Working):  # read only (a stored ``Document``): copy it
            working = docs[key] = _Working(working)
        t = type(value)
        scalar = (
            (t is int and INT_FLOOR < value < INT_LIMIT)
            or t is str or t is bool or value is None
        )
        if path:
            working.value = set_path(working.value, path, value)
            if len(path) >= FAST_DEPTH or not (
                scalar or (self._handed is not None and id(value) in self._handed)
            ):  # a caller's container (not handed over), or a deep spine
                working.owned = False
            if working.paths is not None:
                if changed is None:
                    working.paths.append(path)
                else:
                    working.paths.extend(changed)
        else:
            working.value = value
            working.owned = scalar
            if changed is None or working.paths is None:
                working.paths = None
            else:
                working.paths.extend(changed)
        working.dirty = True
        self.writes.append((space, entity_id, path))

    def set_source(self, space: str, entity_id: str, source: Any) -> None:
        self._claim(space)
        working = self._working(space, entity_id)
        working.source = source
        working.dirty = True

    def set_meta(self, space: str, entity_id: str, key: str, value: Any) -> None:
        self._claim(space)
        working = self._working(space, entity_id)
        meta = dict(working.meta)
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
        working.meta = meta
        working.dirty = True

    def hand_over(self, value: Any) -> Any:
        """Declare ``value`` fresh plain JSON that its maker will never change again.

        A store that keeps decoded copies (``MemoryStore``) may then keep it as is
        instead of copying it: the runner hands over the graph snapshots and
        pattern graphs it writes, which are large and built for this write alone.
        Only for plain JSON (dict, list, str, int, finite float, bool, None):
        such a value is not checked again.  Returns ``value``.
        """
        if self._handed is None:
            self._handed = {}
        self._handed[id(value)] = value
        return value

    # -- ending ------------------------------------------------------------

    def commit(self) -> list[Change]:
        """Land every write atomically, or raise ``ConflictError`` and land nothing."""
        if self.status != "open":
            raise TransactionClosedError(f"cannot commit: transaction is {self.status}")
        parts: list[tuple[str, Any, Any, Any, bool]] = []
        space = self.write_space
        for key, working in self._docs.items():
            if type(working) is not _Working or not working.dirty:
                continue
            base = working.base
            if base is not None:
                stored = base.value
                value = working.value
                t = type(stored)
                if t is dict or t is list:
                    same = _unchanged(stored, working)
                else:  # ``json_equal`` of a scalar, inline (every write of one lands here)
                    same = stored is value or (type(value) is t and stored == value)
                if same and (
                    working.source is base.source or json_equal(base.source, working.source)
                ) and (
                    working.meta is base.meta or json_equal(dict(base.meta), dict(working.meta))
                ):
                    continue
            # meta untouched is the stored mapping itself (the store keeps it);
            # set_meta made a new dict
            parts.append((key[1], working.value, working.source, working.meta, working.owned))
        if not parts or space is None:
            self.status = "committed"
            if self._on_commit is not None:
                for callback in self._on_commit:
                    callback(self)
            return []
        try:
            store = self._store
            defer = self.defer
            commit_working = (
                defer.land if defer is not None
                else getattr(store, "commit_working", None)  # MemoryStore: no Documents
            )
            if commit_working is not None:
                handed = set(self._handed) if self._handed else None
                changes: list[Change] = commit_working(space, parts, self._docs, handed)
            else:
                basis = {
                    key: base.version if base is not None else 0 for key, base in self.basis()
                }
                writes = {eid: new_document((v, src, m, 0)) for eid, v, src, m, _o in parts}
                commit_owned = getattr(store, "commit_owned", None)
                if commit_owned is not None:  # (SQLite, PostgreSQL: see ``encode_owned``)
                    given = self._handed
                    owned = {eid for eid, v, _s, _m, o in parts
                             if o or (given is not None and id(v) in given)}
                    changes = commit_owned(space, writes, basis, owned)
                else:
                    changes = store.commit(space, writes, basis)
        except Exception:
            self._aborted()
            raise
        self.status = "committed"
        if self._on_commit is not None:
            for callback in self._on_commit:
                callback(self)
        return changes

    def abort(self) -> None:
        """Drop every write; the store never sees them."""
        if self.status == "open":
            self._docs.clear()
            self._aborted()

    def _aborted(self) -> None:
        self.status = "aborted"
        callbacks, self._on_abort = self._on_abort, None
        for callback in callbacks or ():
            callback(self)


# -- retrying ----------------------------------------------------------------

#: the first retry waits up to this long (seconds); each further one up to twice as long
BACKOFF_BASE = 0.001
#: no single wait is longer than this
BACKOFF_CAP = 0.05


def backoff_delay(attempt: int) -> float:
    """A jittered wait before retry ``attempt`` (1 = the first retry): full jitter.

    Spreading the retries of contending writers apart is what lets most of
    them land without a conflict; the last attempt takes the write lock
    (``write_lock``) so it cannot lose at all.
    """
    if attempt <= 0:
        return 0.0
    return random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(attempt, 16))))


def write_lock(store: Store) -> contextlib.AbstractContextManager[Any]:
    """The store's write lock for one attempt, if it has one (else no lock).

    Inside it no other writer can commit (SQLite: ``BEGIN IMMEDIATE``), so an
    attempt that reads and commits inside cannot conflict.
    """
    lock = getattr(store, "write_lock", None)
    if lock is None:
        return contextlib.nullcontext()
    return lock()  # type: ignore[no-any-return]
