"""Document storage: the one place where cell state becomes durable.

A store holds documents keyed by ``(space, entity_id)``. Every commit is a
compare-and-swap over every document the transaction touched (read or written),
so two writers — threads, ``Store`` objects or processes — can never silently
lose each other's updates: the loser gets a ``ConflictError`` and retries.

Two implementations share one contract:

* ``MemoryStore`` (``"memory:"``) — process-local, for tests and scratch work.
* ``SqliteStore`` (``"sqlite://<path>"``) — one SQLite file for all spaces, in WAL
  mode, shareable between processes; other writers' commits are picked up with
  ``poll()``.

Returned ``Document`` objects are shared with the store's cache: treat their
``value``/``source``/``meta`` as immutable (copy before editing).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

from cellkernel.errors import ConflictError

__all__ = [
    "JSON",
    "Change",
    "Document",
    "MemoryStore",
    "SqliteStore",
    "Store",
    "open_store",
]

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None

Key: TypeAlias = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Document:
    """One stored document; ``version`` lets a transaction prove what it read."""

    value: JSON
    source: JSON = None
    meta: Mapping[str, JSON] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """A committed write, with both sides so subscribers can diff at their path."""

    space: str
    entity_id: str
    before: Document | None
    after: Document


@runtime_checkable
class Store(Protocol):
    """What the transaction layer needs from durable storage."""

    url: str

    def load(self, space: str, entity_id: str) -> Document | None: ...

    def commit(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]: ...

    def poll(self) -> list[Change]: ...

    def entity_ids(self, space: str) -> list[str]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- encoding


def _dumps(part: str, value: Any) -> tuple[str, Any]:
    """Encode one part and return (text, decoded copy).

    The decoded copy is what gets cached, so later mutation of the caller's
    object cannot leak into the store. Comparing it with the input catches what
    ``json.dumps`` would silently coerce (non-string keys, tuples, duplicate keys
    after coercion) — a store that rewrote data on the way in would be lying.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"document {part} is not JSON: {exc}") from None
    decoded = json.loads(text)
    if decoded != value:
        raise ValueError(
            f"document {part} is not normalised JSON (tuples, non-string keys or "
            f"JSON-like subclasses are not allowed): {value!r}"
        )
    return text, decoded


@dataclass(frozen=True, slots=True)
class _Encoded:
    value: str
    source: str
    meta: str
    doc: Document  # decoded copy, version still unassigned


def _encode(space: str, entity_id: str, doc: object) -> _Encoded:
    if not isinstance(doc, Document):
        raise TypeError(
            f"write of {entity_id!r} in space {space!r} is {type(doc).__name__}, not Document"
        )
    where = f"{entity_id!r} in space {space!r}"
    if not isinstance(doc.meta, Mapping):
        raise ValueError(f"document meta of {where} is not a mapping: {doc.meta!r}")
    value_text, value = _dumps(f"value of {where}", doc.value)
    source_text, source = _dumps(f"source of {where}", doc.source)
    meta_text, meta = _dumps(f"meta of {where}", dict(doc.meta))
    return _Encoded(value_text, source_text, meta_text, Document(value, source, meta, 0))


def _check_key(space: object, entity_id: object) -> None:
    if not isinstance(space, str) or not isinstance(entity_id, str):
        raise TypeError(f"space and entity id must be str, got {space!r}, {entity_id!r}")


def _conflict(space: str, conflicts: list[tuple[Key, int, int]]) -> ConflictError:
    details = ", ".join(
        f"{cid!r} in space {cspace!r} is at version {current}, transaction read {read}"
        for (cspace, cid), read, current in conflicts
    )
    return ConflictError(
        f"commit to space {space!r} conflicts: {details}",
        conflicts=[key for key, _, _ in conflicts],
    )


def _validate_commit_args(
    space: str, writes: Mapping[str, Document], basis: Mapping[tuple[str, str], int]
) -> dict[str, _Encoded]:
    """Encode everything before touching storage, so bad input writes nothing."""
    for space_id, entity_id in basis:
        _check_key(space_id, entity_id)
    for version in basis.values():
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"basis versions must be ints >= 0, got {version!r}")
    encoded: dict[str, _Encoded] = {}
    for entity_id, doc in writes.items():
        _check_key(space, entity_id)
        encoded[entity_id] = _encode(space, entity_id, doc)
    return encoded


# --------------------------------------------------------------------------- memory fast path

#: ``json.dumps`` refuses ints past 4300 digits (``sys.int_info.str_digits_check_threshold``).
_INT_LIMIT = 1 << 14_000
#: Deeper values (and cycles) take the ``_dumps`` path, which reports them exactly as before.
_FAST_DEPTH = 100


class _Declined(Exception):
    """The value is not plain normalised JSON: encode it the slow way for the exact error."""


def _plain(value: Any, prev: Any) -> Any:
    """A store-owned copy of plain normalised JSON (what ``_dumps`` would cache).

    Only exact ``dict``/``list``/``str``/``int``/``bool``/``None`` and finite
    ``float`` are copied here; anything else (subclasses, tuples, non-string
    keys, NaN, huge ints, deep nesting or cycles) raises ``_Declined`` so the
    caller falls back to ``_dumps`` and its error messages.  ``prev`` is the
    stored value the document had: a sub-value that *is* the stored object at
    the same position is already a store-owned copy and is shared, not walked
    (a transaction copies only the spine it writes, so siblings stay shared).
    """
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if -_INT_LIMIT < value < _INT_LIMIT:
            return value
        raise _Declined
    if t is float:
        if value - value == 0.0:  # finite (inf - inf and nan - nan are nan)
            return value
        raise _Declined
    if value is prev:
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, Any, int]] = [(root, 0, value, prev, 0)]
    limit = _INT_LIMIT
    while stack:
        holder, key, item, before, depth = stack.pop()
        if depth >= _FAST_DEPTH:
            raise _Declined
        t = type(item)
        if t is dict:
            out: dict[str, Any] = {}
            holder[key] = out
            old = before if type(before) is dict else None
            for k, v in item.items():
                if type(k) is not str:
                    raise _Declined
                tv = type(v)
                if tv is str or tv is bool or v is None or (tv is int and -limit < v < limit):
                    out[k] = v
                elif old is not None and v is old.get(k, _Declined):
                    out[k] = v  # the stored object itself: already a store-owned copy
                else:
                    out[k] = None  # placeholder keeps the key order
                    stack.append((out, k, v, None if old is None else old.get(k), depth + 1))
        elif t is list:
            copy = list(item)
            holder[key] = copy
            old_l = before if type(before) is list else None
            n_old = len(old_l) if old_l is not None else 0
            for i, v in enumerate(item):
                tv = type(v)
                if tv is str or tv is bool or v is None or (tv is int and -limit < v < limit):
                    continue
                prev_v = old_l[i] if i < n_old else None  # type: ignore[index]
                if v is prev_v:
                    continue
                stack.append((copy, i, v, prev_v, depth + 1))
        elif t is float:
            if item - item != 0.0:
                raise _Declined
            holder[key] = item
        elif t is str or t is bool or item is None or (t is int and -limit < item < limit):
            holder[key] = item
        else:
            raise _Declined
    return root[0]


def _fast_constructor(cls: type, names: tuple[str, ...]) -> Any:
    """``cls(*values)`` for a frozen, slotted dataclass without its ``__init__`` detour.

    A frozen dataclass's ``__init__`` sets every field through
    ``object.__setattr__``; on the per-commit path that is about a third of a
    microsecond per object.  Setting the slots directly builds the same object.
    Used only while the class is exactly that (slots, no ``__post_init__``, the
    expected fields); otherwise the plain constructor is returned.
    """
    fields = getattr(cls, "__dataclass_fields__", {})
    if (
        len(names) != 4
        or tuple(fields) != names
        or tuple(getattr(cls, "__slots__", ())) != names
        or hasattr(cls, "__post_init__")
    ):  # pragma: no cover - a changed Document or Change: keep its real constructor
        return cls
    new = object.__new__
    s0, s1, s2, s3 = (cls.__dict__[name].__set__ for name in names)

    def make(a: Any, b: Any, c: Any, d: Any) -> Any:
        obj: Any = new(cls)
        s0(obj, a)
        s1(obj, b)
        s2(obj, c)
        s3(obj, d)
        return obj

    return make


_new_document = _fast_constructor(Document, ("value", "source", "meta", "version"))
_new_change = _fast_constructor(Change, ("space", "entity_id", "before", "after"))


def _owned(part: str, value: Any, prev: Any, space: str, entity_id: str) -> Any:
    t = type(value)
    if t is str or t is bool or value is None or value is prev:
        return value  # immutable, or the stored object itself
    if t is int and -_INT_LIMIT < value < _INT_LIMIT:
        return value
    try:
        return _plain(value, prev)
    except _Declined:
        return _dumps(f"{part} of {entity_id!r} in space {space!r}", value)[1]


def _owned_meta(meta: Any, prev: Mapping[str, Any] | None, space: str, entity_id: str) -> Any:
    if type(meta) is dict and prev is not None and len(meta) == len(prev):
        for k, v in meta.items():
            if prev.get(k, _Declined) is not v:
                break
        else:
            return prev  # every entry is the stored object: nothing to copy
    plain = meta if type(meta) is dict else dict(meta)
    old = prev if type(prev) is dict else None
    return _owned("meta", plain, old, space, entity_id)


def _check_basis(basis: Mapping[tuple[str, str], int]) -> None:
    """The basis checks of ``_validate_commit_args``, in its order (keys, then versions)."""
    for space_id, entity_id in basis:
        _check_key(space_id, entity_id)
    for version in basis.values():
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"basis versions must be ints >= 0, got {version!r}")


def _memory_commit_docs(
    space: str,
    writes: Mapping[str, Document],
    basis: Mapping[tuple[str, str], int],
    docs: Mapping[Key, Document],
) -> list[tuple[str, Any, Any, Any]]:
    """``_validate_commit_args`` for ``MemoryStore``: same checks and errors, no JSON text.

    The memory store never needs the encoded text, only a store-owned decoded
    copy; plain values are copied directly and sub-values still shared with
    the stored document are reused.  Anything unusual goes through ``_dumps``.
    Returns ``(entity_id, value, source, meta)`` per write, in order.
    """
    for key, version in basis.items():  # the plain case inline; anything else as before
        if (
            type(version) is not int
            or version < 0
            or type(key) is not tuple
            or len(key) != 2
            or type(key[0]) is not str
            or type(key[1]) is not str
        ):
            _check_basis(basis)
            break
    for entity_id, doc in writes.items():
        if type(entity_id) is not str or type(space) is not str:
            _check_key(space, entity_id)  # per write: key, then document, then meta
        if type(doc) is not Document and not isinstance(doc, Document):
            raise TypeError(
                f"write of {entity_id!r} in space {space!r} is {type(doc).__name__}, not Document"
            )
        meta = doc.meta
        if type(meta) is not dict and not isinstance(meta, Mapping):
            where = f"{entity_id!r} in space {space!r}"
            raise ValueError(f"document meta of {where} is not a mapping: {meta!r}")
    parts = [
        (entity_id, doc.value, doc.source, doc.meta, False) for entity_id, doc in writes.items()
    ]
    return _owned_parts(space, parts, docs)


def _owned_parts(
    space: str,
    parts: list[tuple[str, Any, Any, Any, bool]],
    docs: Mapping[Key, Document],
    handed: set[int] | None = None,
) -> list[tuple[str, Any, Any, Any]]:
    """Store-owned copies of ``(entity_id, value, source, meta, owned)`` writes (see ``_plain``).

    A value marked ``owned`` is store-owned already (see ``commit_working``).
    ``handed`` holds the ids of values handed over by their maker (see
    ``Transaction.hand_over``): fresh plain JSON nobody changes again, kept as is.
    """
    owned: list[tuple[str, Any, Any, Any]] = []
    limit = _INT_LIMIT
    for entity_id, value, source, meta, is_owned in parts:
        if type(entity_id) is not str or type(space) is not str:
            _check_key(space, entity_id)
        prev = docs.get((space, entity_id))
        # the usual commit writes a scalar (or the stored object itself) and keeps the
        # stored source and meta: nothing to copy, so no call for it
        pv = prev.value if prev is not None else None
        t = type(value)
        if not (is_owned or t is str or t is bool or value is None
                or (t is int and -limit < value < limit)
                or (prev is not None and value is pv) or (handed and id(value) in handed)):
            value = _owned("value", value, pv, space, entity_id)
        if prev is None:
            if source is not None:
                source = _owned("source", source, None, space, entity_id)
        elif source is not prev.source:
            source = _owned("source", source, prev.source, space, entity_id)
        pm = prev.meta if prev is not None else None
        if prev is not None and meta is pm:
            meta_copy = pm
        elif not meta and type(meta) is dict:
            meta_copy = {}  # a new document's (the usual case): nothing to check
        elif handed and (kept := _handed_meta(meta, pm, handed)) is not None:
            meta_copy = kept
        else:
            meta_copy = _owned_meta(meta, pm, space, entity_id)
        owned.append((entity_id, value, source, meta_copy))
    return owned


def _handed_meta(meta: Any, prev: Mapping[str, Any] | None, handed: set[int]) -> Any:
    """A copy of ``meta`` if every entry is handed over, stored already or a small scalar.

    Otherwise None: the usual path copies (and checks) the whole meta.
    """
    if type(meta) is not dict:
        return None
    limit = _INT_LIMIT
    for key, entry in meta.items():
        t = type(entry)
        if type(key) is not str:
            return None
        if (
            id(entry) in handed
            or t is str or t is bool or entry is None or (t is int and -limit < entry < limit)
            or (prev is not None and prev.get(key, _Declined) is entry)
        ):
            continue
        return None
    return dict(meta)


# --------------------------------------------------------------------------- memory


class MemoryStore:
    """Process-local store; same CAS contract as SQLite, no persistence, nothing to poll."""

    #: nothing outside this process writes it, so a runtime never needs to ``poll`` it
    external_writes = False

    def __init__(self) -> None:
        self.url = "memory:"
        self._lock = threading.RLock()
        self._docs: dict[Key, Document] = {}
        self._ids: dict[str, list[str]] = {}  # per space, in creation order

    def load(self, space: str, entity_id: str) -> Document | None:
        # One dict lookup is atomic on its own; the lock (taken by ``commit``) never gave
        # a multi-document snapshot to a series of loads either: the CAS basis does that.
        return self._docs.get((space, entity_id))

    def commit(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]:
        return self._land(space, _memory_commit_docs(space, writes, basis, self._docs), basis)

    def commit_working(
        self,
        space: str,
        dirty: list[tuple[str, Any, Any, Any, bool]],
        working: Mapping[Key, Any],
        handed: set[int] | None = None,
    ) -> list[Change]:
        """``commit`` for a transaction: its changed documents and what it read them at.

        ``dirty`` holds ``(entity_id, value, source, meta, owned)`` per write, where
        ``owned`` says the value is already store-owned plain JSON (stored parts,
        a spine the transaction copied, scalars).  ``working`` maps every key the
        transaction touched to its view, whose ``base`` is the document it read
        (None if absent): a stored document is replaced on every commit, so the
        compare-and-swap is an identity check.  Values in ``handed`` were handed
        over (``Transaction.hand_over``) and are kept as is.
        """
        docs = self._docs
        owned = _owned_parts(space, dirty, docs, handed)
        with self._lock:
            conflicts: list[tuple[Key, int, int]] | None = None
            for key, read in working.items():
                base = read.base
                current = docs.get(key)
                if current is not base:
                    if conflicts is None:
                        conflicts = []
                    conflicts.append((key, base.version if base is not None else 0,
                                      current.version if current is not None else 0))
            if conflicts:
                raise _conflict(space, conflicts)
            return self._land_owned(space, owned)

    def _land(
        self,
        space: str,
        encoded: list[tuple[str, Any, Any, Any]],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]:
        docs = self._docs
        with self._lock:
            conflicts: list[tuple[Key, int, int]] | None = None
            for key, read in basis.items():
                current = docs.get(key)
                current_version = current.version if current is not None else 0
                if current_version != read:
                    if conflicts is None:
                        conflicts = []
                    conflicts.append((key, read, current_version))
            if conflicts:
                raise _conflict(space, conflicts)
            return self._land_owned(space, encoded)

    def _land_owned(self, space: str, owned: list[tuple[str, Any, Any, Any]]) -> list[Change]:
        """Store checked, store-owned writes (the caller holds the lock, basis checked)."""
        docs = self._docs
        changes: list[Change] = []
        for entity_id, value, source, meta in owned:
            key = (space, entity_id)
            before = docs.get(key)
            after = _new_document(
                value, source, meta, (before.version if before is not None else 0) + 1
            )
            if before is None:
                self._ids.setdefault(space, []).append(entity_id)
            docs[key] = after
            changes.append(_new_change(space, entity_id, before, after))
        return changes

    def poll(self) -> list[Change]:
        """Nothing else can write a MemoryStore, so there is never anything to report."""
        return []

    def entity_ids(self, space: str) -> list[str]:
        with self._lock:
            return list(self._ids.get(space, ()))

    def close(self) -> None:
        """Nothing to release; kept so callers can treat every store alike."""

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "MemoryStore()"


# --------------------------------------------------------------------------- sqlite

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    n       INTEGER PRIMARY KEY,          -- creation order (rowid alias: stable under VACUUM)
    space   TEXT NOT NULL,
    id      TEXT NOT NULL,
    value   TEXT NOT NULL,                -- JSON
    source  TEXT NOT NULL,                -- JSON
    meta    TEXT NOT NULL,                -- JSON object
    version INTEGER NOT NULL CHECK (version > 0),
    seq     INTEGER NOT NULL,             -- global commit sequence of the last write
    UNIQUE (space, id)
);
CREATE INDEX IF NOT EXISTS documents_by_seq ON documents (seq);
"""

_BUSY_TIMEOUT_MS = 10_000

_ROW = "space, id, value, source, meta, version, seq"

_Row: TypeAlias = tuple[str, str, str, str, str, int, int]


def _decode_row(row: _Row) -> Document:
    _, _, value, source, meta, version, _ = row
    return Document(json.loads(value), json.loads(source), json.loads(meta), version)


def _sqlite_path(url: str) -> str:
    """``sqlite://`` + a filesystem path: three slashes = absolute, two = relative to cwd."""
    path = url[len("sqlite://") :]
    if not url.startswith("sqlite://") or not path:
        raise ValueError(f"not a sqlite store url (want sqlite:///abs/path.db): {url!r}")
    if path == ":memory:" or path.startswith("file:"):
        raise ValueError(f"sqlite store url must name a file (use 'memory:' instead): {url!r}")
    return os.path.abspath(path)


def _switch_to_wal(conn: sqlite3.Connection) -> Any:
    """``PRAGMA journal_mode = WAL``, waiting out other connections doing the same.

    SQLite answers "database is locked" at once, without calling the busy handler,
    when another connection is converting a new file to WAL at the same moment
    (several processes opening a new file together), so wait and retry here, up to
    the same busy timeout as every other statement.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class SqliteStore:
    """A store in one SQLite file, shared safely by any number of processes.

    Reads go through an in-process cache (documents and known-absent ids), so
    ``load`` is cheap; the cache is brought up to date by ``poll()`` and inside
    every ``commit`` (which also refreshes it on conflict, so a retry sees the
    winner's data). Changes picked up inside a commit are held and returned by
    the next ``poll()``, so no foreign change is ever swallowed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        raw = os.fspath(path)
        self.path = _sqlite_path(raw) if raw.startswith("sqlite:") else os.path.abspath(raw)
        self.url = "sqlite://" + self.path
        self._lock = threading.RLock()
        self._cache: dict[Key, Document | None] = {}
        self._pending: list[Change] = []
        self._seq = 0  # every row with seq <= this is reflected in the cache (or uncached)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # widgets call in from other threads; self._lock guards
        )
        try:
            self._setup(self._conn)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = _switch_to_wal(conn)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not put {self.path} in WAL mode (got {mode!r})")
        # NORMAL in WAL mode survives process death (not power loss) and is much faster.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found == 0:
                self._create_schema(conn)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif found != _SCHEMA_VERSION:
                raise ValueError(
                    f"{self.path} has storage schema version {found}, "
                    f"this cellkernel reads version {_SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # Start the change feed at "now": documents already present are loaded on demand.
        self._seq = self._max_seq(conn)

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        # executescript would COMMIT our open transaction, so run statements one by one.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)

    @staticmethod
    def _max_seq(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM documents").fetchone()
        return int(row[0])

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"store {self.url} is closed")
        return self._conn

    # -- reading

    def load(self, space: str, entity_id: str) -> Document | None:
        key = (space, entity_id)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            row = (
                self._connection()
                .execute(f"SELECT {_ROW} FROM documents WHERE space = ? AND id = ?", key)
                .fetchone()
            )
            doc = _decode_row(row) if row is not None else None
            self._cache[key] = doc
            return doc

    def entity_ids(self, space: str) -> list[str]:
        """Read from the database, not the cache: a listing should include every id."""
        with self._lock:
            rows = (
                self._connection()
                .execute("SELECT id FROM documents WHERE space = ? ORDER BY n", (space,))
                .fetchall()
            )
            return [r[0] for r in rows]

    def poll(self) -> list[Change]:
        with self._lock:
            self._absorb(self._connection())
            changes, self._pending = self._pending, []
            return changes

    def _absorb(self, conn: sqlite3.Connection) -> None:
        """Fold every row newer than our feed position into the cache, queueing changes.

        Rows whose version we already hold (our own commits, or fresh loads) are
        not changes from our point of view and are skipped.
        """
        rows: Iterable[_Row] = conn.execute(
            f"SELECT {_ROW} FROM documents WHERE seq > ? ORDER BY seq, n", (self._seq,)
        )
        for row in rows:
            space, entity_id, *_, version, seq = row
            key = (space, entity_id)
            before = self._cache.get(key)
            if before is None or before.version < version:
                after = _decode_row(row)
                self._cache[key] = after
                self._pending.append(Change(space, entity_id, before, after))
            self._seq = max(self._seq, seq)

    # -- writing

    def commit(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]:
        encoded = _validate_commit_args(space, writes, basis)
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._absorb(conn)
                changes, seq = self._apply(conn, space, encoded, basis)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            # Only now is the write durable; the cache must never run ahead of the file.
            for change in changes:
                self._cache[(change.space, change.entity_id)] = change.after
            if seq:
                self._seq = seq
            return changes

    def _apply(
        self,
        conn: sqlite3.Connection,
        space: str,
        encoded: Mapping[str, _Encoded],
        basis: Mapping[tuple[str, str], int],
    ) -> tuple[list[Change], int]:
        """Check the basis and write, inside the caller's write transaction.

        Returns the changes and the sequence number they were written at (0 when
        nothing was written).
        """
        version_of = "SELECT version FROM documents WHERE space = ? AND id = ?"
        conflicts: list[tuple[Key, int, int]] = []
        for key, read in basis.items():
            row = conn.execute(version_of, key).fetchone()
            current = int(row[0]) if row is not None else 0
            if current != read:
                conflicts.append((key, read, current))
        if conflicts:
            raise _conflict(space, conflicts)
        if not encoded:
            return [], 0
        # _absorb ran under the write lock, so nothing newer than our feed position exists.
        seq = self._max_seq(conn) + 1
        changes: list[Change] = []
        for entity_id, enc in encoded.items():
            key = (space, entity_id)
            row = conn.execute(f"SELECT {_ROW} FROM documents WHERE space = ? AND id = ?", key)
            current_row: _Row | None = row.fetchone()
            before: Document | None = None
            if current_row is not None:
                # After _absorb the cache normally holds this exact version: skip decoding.
                cached = self._cache.get(key)
                if cached is not None and cached.version == current_row[5]:
                    before = cached
                else:
                    before = _decode_row(current_row)
            after = Document(
                enc.doc.value,
                enc.doc.source,
                enc.doc.meta,
                (before.version if before is not None else 0) + 1,
            )
            if before is None:
                conn.execute(
                    "INSERT INTO documents (space, id, value, source, meta, version, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (space, entity_id, enc.value, enc.source, enc.meta, after.version, seq),
                )
            else:
                conn.execute(
                    "UPDATE documents SET value = ?, source = ?, meta = ?, version = ?, seq = ? "
                    "WHERE space = ? AND id = ?",
                    (enc.value, enc.source, enc.meta, after.version, seq, space, entity_id),
                )
            changes.append(Change(space, entity_id, before, after))
        return changes, seq

    # -- lifecycle

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"


def open_store(url: str | None) -> Store:
    """Pick the store for a URL: ``None``/``"memory:"`` or ``"sqlite://<path>"``."""
    if url is None or url == "memory:":
        return MemoryStore()
    if isinstance(url, str) and url.startswith("sqlite://"):
        return SqliteStore(url)
    raise ValueError(f"unsupported store url {url!r} (use 'memory:' or 'sqlite:///path/to.db')")
