"""``SqliteStore`` (``"sqlite://<path>"``): one SQLite file for all spaces.

WAL mode, shareable between processes; other writers' commits are picked up
with ``poll()``; per-document version compare-and-swap at commit.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

from cellkernel.errors import CorruptDocumentError, StoreError
from cellkernel.store.documents import (
    INT_FLOOR,
    INT_LIMIT,
    Change,
    Document,
    Encoded,
    Key,
    OwnedCommits,
    ReadBasis,
    check_key,
    conflict_error,
    encode_commit,
    encode_document,
    loads,
    new_change,
    new_document,
    replaced,
)

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
CREATE TABLE IF NOT EXISTS feed_mark (seq INTEGER NOT NULL);
"""
#: ``feed_mark`` holds the highest sequence number a ``release`` deleted (one row, or
#: none): a store opened later starts its feed past it.  A version-1 file without the
#: table gets it on its first release; readers that find none read ``documents`` alone.
_FEED_MARK = "CREATE TABLE IF NOT EXISTS feed_mark (seq INTEGER NOT NULL)"

_BUSY_TIMEOUT_MS = 10_000
#: the page size of a new file.  A commit appends every page it changed to the WAL
#: (a document's row, the old and new entries of the ``seq`` index): with 1 KiB pages
#: the usual one-document commit writes a quarter of the bytes of SQLite's default
#: 4 KiB and costs about two thirds of the time; a large document spans more
#: overflow pages, which costs little next to encoding it.
PAGE_SIZE = 1024
#: documents (and known-absent ids) kept decoded in memory; older entries are dropped
CACHE_SIZE = 10_000

_ROW = "space, id, value, source, meta, version, seq"
#: ``_ROW`` and the row id (``n``): what a read remembers for ``commit_landed``
_ROW_N = _ROW + ", n"
#: ids per ``IN (...)`` query (SQLite allows 32 766 variables; this stays far below)
_CHUNK = 500

#: ``load``'s marker for a key the cache does not hold (None: known absent)
_UNCACHED: Any = object()

_Row: TypeAlias = tuple[str, str, str, str, str, int, int]
_RowN: TypeAlias = tuple[str, str, str, str, str, int, int, int]

#: ``commit_landed``'s version-checked writes: by key, and by a row id already known
#: (the id and space checked too: a row id of a deleted row may be given to another)
_UPDATE_BY_KEY = ("UPDATE documents SET value = ?, source = ?, meta = ?, version = ?, seq = ? "
                  "WHERE space = ? AND id = ? AND version = ?")
_UPDATE_BY_ROWID = ("UPDATE documents SET value = ?, source = ?, meta = ?, version = ?, seq = ? "
                    "WHERE n = ? AND id = ? AND space = ? AND version = ?")

#: file path -> (thread, store) holding its write lock through ``SqliteStore.write_lock``
_held_locks: dict[str, tuple[int, weakref.ref[SqliteStore]]] = {}
_held_guard = threading.Lock()


def _decode_row(row: _Row | _RowN) -> Document:
    """The document a row holds; ``CorruptDocumentError`` names it if it cannot be decoded.

    Decoding does not depend on the recursion limit (``documents.loads``).
    """
    space, entity_id, value, source, meta, version = row[:6]
    try:
        decoded_meta = loads(meta)
        if type(decoded_meta) is not dict:
            raise ValueError(f"meta is {type(decoded_meta).__name__}, not an object")
        return Document(loads(value), loads(source), decoded_meta, version)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError; TypeError: NULL
        raise CorruptDocumentError(space, entity_id, f"{type(exc).__name__}: {exc}") from None


_URL_OPTIONS = {"mode": ("ro", "rw")}


def _sqlite_path(url: str) -> tuple[str, bool]:
    """``sqlite://`` + a filesystem path (three slashes = absolute, two = relative to cwd).

    Returns the absolute path and whether the store is read-only (``?mode=ro``).
    A query string is parsed, never kept in the file name; options other than
    ``mode=ro|rw`` are refused.
    """
    if not isinstance(url, str):
        raise ValueError(f"a sqlite store url must be a str, got {type(url).__name__} {url!r}")
    rest = url[len("sqlite://") :]
    if not url.startswith("sqlite://") or not rest:
        raise ValueError(f"not a sqlite store url (want sqlite:///abs/path.db): {url!r}")
    path, _, query = rest.partition("?")
    readonly = False
    if query:
        try:
            options = urllib.parse.parse_qs(query, strict_parsing=True, keep_blank_values=True)
        except ValueError:
            raise ValueError(f"sqlite store url {url!r}: malformed query {query!r}") from None
        for name, values in options.items():
            allowed = _URL_OPTIONS.get(name)
            if allowed is None:
                raise ValueError(
                    f"sqlite store url {url!r}: unknown option {name!r} (only 'mode=ro' or "
                    "'mode=rw')"
                )
            if len(values) != 1 or values[0] not in allowed:
                raise ValueError(f"sqlite store url {url!r}: {name} must be one of {allowed}")
        readonly = options.get("mode") == ["ro"]
    return _file_path(path, url), readonly


def _file_path(path: str, what: str) -> str:
    if not path or os.path.basename(path) in (":memory:", "") or path.startswith("file:"):
        raise ValueError(
            f"sqlite store url {what!r} must name a file (for a store in memory use 'memory:')"
        )
    return os.path.abspath(path)


def _store_error(
    path: str, exc: sqlite3.Error, doing: str, waited_ms: int = _BUSY_TIMEOUT_MS
) -> StoreError:
    """A ``StoreError`` naming the file and saying what the SQLite error means."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        problem = f"is locked by another process (waited {waited_ms / 1000:g} s)"
    elif "readonly" in text or "read-only" in text:
        problem = "is read-only (open it with sqlite:///...?mode=ro to read it)"
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        problem = "is not a SQLite database, or is corrupt"
    elif "unable to open" in text:
        problem = "cannot be opened"
    else:
        problem = "failed"
    return StoreError(f"sqlite store {path} {problem} while {doing}: {text}")


def _switch_to_wal(conn: sqlite3.Connection, busy_ms: int = _BUSY_TIMEOUT_MS) -> Any:
    """``PRAGMA journal_mode = WAL``, waiting out other connections doing the same.

    SQLite answers "database is locked" at once, without calling the busy handler,
    when another connection is converting a new file to WAL at the same moment
    (several processes opening a new file together), so wait and retry here, up to
    the same busy timeout as every other statement.
    """
    deadline = time.monotonic() + busy_ms / 1000
    pause = 0.001
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class SqliteStore(OwnedCommits):
    """A store in one SQLite file, shared safely by any number of processes.

    Reads go through an in-process cache (documents and known-absent ids), so
    ``load`` is cheap; the cache is brought up to date by ``poll()`` and inside
    every ``commit`` (which also refreshes it on conflict, so a retry sees the
    winner's data). Changes picked up inside a commit are held and returned by
    the next ``poll()``, so no foreign change is ever swallowed.
    """

    #: a commit is a file transaction: a runtime lands a settle's derived writes in one
    #: (``store/writeback.py``) instead of one per lift run
    group_commit = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        cache_size: int = CACHE_SIZE,
        busy_timeout: float = _BUSY_TIMEOUT_MS / 1000,
    ) -> None:
        try:
            raw = os.fspath(path)
        except TypeError:
            raise ValueError(
                f"a sqlite store path must be a str or path, got {type(path).__name__} {path!r}"
            ) from None
        if isinstance(raw, bytes):
            raise ValueError(f"a sqlite store path must be a str, got bytes {raw!r}")
        if raw.startswith("sqlite:"):
            self.path, from_url = _sqlite_path(raw)
            readonly = readonly or from_url
        else:
            self.path = _file_path(raw, raw)
        if type(cache_size) is not int or cache_size < 1:
            raise ValueError(f"cache_size must be an int >= 1, got {cache_size!r}")
        self.readonly = readonly
        self.url = "sqlite://" + self.path + ("?mode=ro" if readonly else "")
        self.cache_size = cache_size
        self._busy_ms = int(busy_timeout * 1000)
        self._lock = threading.RLock()
        #: decoded documents and known-absent ids, least recently used first (bounded)
        self._cache: OrderedDict[Key, Document | None] = OrderedDict()
        #: rows that could not be decoded, by key: (version, problem); read raises
        self._corrupt: dict[Key, tuple[int, str]] = {}
        #: the row id (``n``) of documents read or written here, for ``commit_landed``'s
        #: updates by row id; kept for cached keys only, and only ever a hint
        self._rowids: dict[Key, int] = {}
        self._pending: list[Change] = []
        self._seq = 0  # every row with seq <= this is reflected in the cache (or uncached)
        self._data_version = -1  # PRAGMA data_version when the feed was last read
        self._held = False  # inside ``write_lock``: the write transaction is already open
        self._conn: sqlite3.Connection | None = self._connect()
        try:
            self._setup(self._conn)
        except sqlite3.Error as exc:
            self._conn.close()
            self._conn = None
            raise _store_error(self.path, exc, "opening it", self._busy_ms) from None
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _connect(self) -> sqlite3.Connection:
        """Open the file, refusing (typed) what is not a file a store can live in."""
        folder = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise StoreError(f"sqlite store {self.path} is a directory, not a file")
        if not os.path.isdir(folder):
            raise StoreError(f"sqlite store {self.path}: directory {folder} does not exist")
        if self.readonly and not os.path.exists(self.path):
            raise StoreError(f"sqlite store {self.path} does not exist (opened with mode=ro)")
        target = self.path
        if self.readonly:
            target = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
        try:
            return sqlite3.connect(
                target,
                timeout=self._busy_ms / 1000,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # widgets call in from other threads; self._lock guards
                uri=self.readonly,
            )
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc, "opening it", self._busy_ms) from None

    def _check_owned(self, conn: sqlite3.Connection) -> int:
        """The storage schema version, after checking the file is a cellkernel store.

        Nothing is changed here: a file of another application is refused before
        any table is added or its journal mode switched.
        """
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )]
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found == 0 and tables:
            raise StoreError(
                f"sqlite store {self.path} is not a cellkernel store: it holds tables "
                f"{sorted(tables)[:10]} of another application (nothing was changed)"
            )
        if found == _SCHEMA_VERSION:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(documents)")}
            wanted = {"n", "space", "id", "value", "source", "meta", "version", "seq"}
            if not wanted <= columns:
                raise StoreError(
                    f"sqlite store {self.path} is not a cellkernel store: user_version is "
                    f"{found} but it has no documents table of ours (nothing was changed)"
                )
        elif found != 0:
            raise StoreError(
                f"sqlite store {self.path} has storage schema version {found}, "
                f"this cellkernel reads version {_SCHEMA_VERSION} (nothing was changed)"
            )
        return found

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        found = self._check_owned(conn)
        if self.readonly:
            if found == 0:
                raise StoreError(f"sqlite store {self.path} is empty (opened with mode=ro)")
            self._seq = self._max_seq(conn)
            return
        if found == 0:  # (a no-op on a file that already has pages: another opener's)
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        mode = _switch_to_wal(conn, self._busy_ms)
        if str(mode).lower() != "wal":
            raise StoreError(f"could not put sqlite store {self.path} in WAL mode (got {mode!r})")
        # NORMAL in WAL mode survives process death (not power loss) and is much faster.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._check_owned(conn) == 0:  # again under the lock: another opener may race
                self._create_schema(conn)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
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
        """The feed's position: the newest commit on file, or a newer one released since."""
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM documents").fetchone()
        marked = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feed_mark'").fetchone()
        if marked is None:
            return int(row[0])
        mark = conn.execute("SELECT coalesce(max(seq), 0) FROM feed_mark").fetchone()
        return max(int(row[0]), int(mark[0]))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"store {self.url} is closed")
        return self._conn

    # -- reading

    def load(self, space: str, entity_id: str) -> Document | None:
        key = (space, entity_id)
        cache = self._cache
        # A cached document needs no lock: the cache only ever holds what is on file
        # (a commit fills it after COMMIT), each lookup and move is one atomic call,
        # and a commit's lock never gave a series of loads one snapshot anyway (the
        # compare-and-swap basis does that).  A key evicted in between is not moved.
        doc: Document | None = cache.get(key, _UNCACHED)
        if doc is not _UNCACHED:
            try:
                cache.move_to_end(key)
            except KeyError:  # evicted by another thread just now
                return doc
            return doc
        with self._lock:
            if key in cache:  # loaded by another thread meanwhile
                cache.move_to_end(key)
                return cache[key]
            if key in self._corrupt:
                raise CorruptDocumentError(space, entity_id, self._corrupt[key][1])
            try:
                row = (
                    self._connection()
                    .execute(f"SELECT {_ROW_N} FROM documents WHERE space = ? AND id = ?", key)
                    .fetchone()
                )
            except sqlite3.Error as exc:
                doing = f"reading {entity_id!r}"
                raise _store_error(self.path, exc, doing, self._busy_ms) from None
            doc = _decode_row(row) if row is not None else None
            self._remember(key, doc)
            if row is not None:
                self._rowids[key] = row[7]
            return doc

    def cached_view(self) -> OrderedDict[Key, Document | None]:
        """The cache itself, for the write-back layer's reads (``store/writeback.py``).

        Every entry is a document as it is on file (None: known absent), least
        recently used first.  Read it, and move a key read to the end as
        ``load`` does; never change it otherwise.
        """
        return self._cache

    def _remember(self, key: Key, doc: Document | None) -> None:
        cache = self._cache
        cache[key] = doc
        cache.move_to_end(key)
        if len(cache) > self.cache_size:
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used entries past ``cache_size`` (and their row ids)."""
        cache = self._cache
        rowids = self._rowids
        while len(cache) > self.cache_size:
            rowids.pop(cache.popitem(last=False)[0], None)

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
        """Changes other connections committed since the last poll.

        Cheap when nothing happened: ``PRAGMA data_version`` (no table read)
        tells whether any other connection has committed since the feed was read.
        """
        with self._lock:
            conn = self._connection()
            try:
                version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                if version != self._data_version:
                    self._absorb(conn)
                    self._data_version = version  # read before the feed: never skips one
            except sqlite3.Error as exc:
                doing = "reading the change feed"
                raise _store_error(self.path, exc, doing, self._busy_ms) from None
            changes, self._pending = self._pending, []
            return changes

    def _absorb(self, conn: sqlite3.Connection) -> None:
        """Fold every row newer than our feed position into the cache, queueing changes.

        Rows whose version we already hold (our own commits, or fresh loads) are
        not changes from our point of view and are skipped.  A row that cannot be
        decoded is remembered as corrupt (reading *it* raises) and the feed moves on.
        """
        rows: Iterable[_RowN] = conn.execute(
            f"SELECT {_ROW_N} FROM documents WHERE seq > ? ORDER BY seq, n", (self._seq,)
        )
        cache = self._cache
        rowids = self._rowids
        for row in rows:
            space, entity_id, *_, version, seq, n = row
            key = (space, entity_id)
            before = cache.get(key)
            if before is None or before.version < version:
                try:
                    after = _decode_row(row)
                except CorruptDocumentError as exc:
                    cache.pop(key, None)
                    self._corrupt[key] = (version, str(exc).split(" is corrupt: ", 1)[-1])
                else:
                    self._corrupt.pop(key, None)
                    if key in cache or before is not None:
                        cache[key] = after
                    else:
                        self._remember(key, after)
                    self._pending.append(Change(space, entity_id, before, after))
            if key in cache:
                rowids[key] = n
            self._seq = max(self._seq, seq)

    # -- writing

    def commit_owned(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
        owned: Collection[str],
    ) -> list[Change]:
        """``commit``, naming the documents whose value is owned (``OwnedCommits``)."""
        encoded = encode_commit(space, writes, basis, owned)
        if self.readonly:
            raise StoreError(f"sqlite store {self.path} was opened read-only (mode=ro)")
        with self._lock:
            conn = self._connection()
            with self._file_transaction(conn, self._begin_commit,
                                        f"committing to space {space!r}"):
                self._absorb(conn)
                changes, seq = self._apply(conn, space, encoded, basis)
            # Only now is the write durable; the cache must never run ahead of the file.
            for change in changes:
                key = (change.space, change.entity_id)
                self._corrupt.pop(key, None)
                self._remember(key, change.after)
            if seq:
                self._seq = seq
            return changes

    def land_value(self, space: str, entity_id: str, before: Document | None, value: Any,
                   read: ReadBasis) -> list[Change]:
        """``MemoryStore.land_value``: one document replaced, one commit.

        A user's ``set()`` of a scalar (``Runtime.set_scalar``, or at a path:
        ``set_scalar_at``) and a planned lift's run outside a settle land here
        instead of building a transaction:
        ``commit_landed``'s version-checked row against ``before``, and every
        document in ``read`` still at the version it was read at.
        """
        after = replaced(before, value, before.version + 1 if before is not None else 1)
        self.commit_landed(space, {(space, entity_id): after}, read)
        return [new_change((space, entity_id, before, after))]

    def _check_read(self, conn: sqlite3.Connection, space: str,
                    read: ReadBasis) -> None:
        """``ConflictError`` unless every document of ``read`` is at the version it was read at.

        Under the write lock, after ``_absorb``: the cache is as on file for what it holds.
        """
        cache = self._cache
        stale = [(key, doc.version if doc is not None else 0) for key, doc in read]
        unsure = [key for key, _read in stale if key not in cache]
        current = self._versions(conn, unsure) if unsure else {}
        for key in cache.keys() & {key for key, _read in stale}:
            cached = cache[key]
            current[key] = cached.version if cached is not None else 0
        conflicts = [(key, was, current.get(key, 0)) for key, was in stale
                     if current.get(key, 0) != was]
        if conflicts:
            raise conflict_error(space, conflicts)

    def commit_landed(self, space: str, landed: Mapping[Key, Document],
                      read: ReadBasis | None = None) -> None:
        """Group commit (``store/writeback.py``): a settle's documents of ``space``, one commit.

        ``landed`` maps ``(space, entity_id)`` to the document a runtime's
        write-back layer holds for it: store-owned JSON at version ``v + 1``,
        where ``v`` is the stored version it replaces (0: a new document).
        The same compare-and-swap, checks and errors as ``commit`` with that
        basis, and the same rows; what it skips is work nobody uses: the
        layer reported the changes when it landed them, so none are built,
        and the usual derived document (an int, no source, no meta) is encoded
        inline; any other value is the layer's store-owned copy (``owned_parts``),
        encoded without the round trip (``documents.encode_owned``).  A
        version-checked ``UPDATE`` (an ``INSERT`` for a new document) is the
        check: one that misses a row is a ``ConflictError`` and nothing lands.
        The cache then holds the landed documents themselves.  ``read`` (from
        ``land_value``): documents that must still be at the versions given.
        """
        if type(space) is not str:
            check_key(space, "")
        seq = self._seq + 1  # what the commit will write at, unless the feed moves first
        limit = INT_LIMIT
        floor = INT_FLOOR
        updates: list[tuple[Any, ...]] = []  # by key
        by_rowid: list[tuple[Any, ...]] = []
        inserts: list[tuple[Any, ...]] = []
        rowids = self._rowids
        decoded: list[tuple[Key, Document]] | None = None  # encoded the general way
        for key, doc in landed.items():
            entity_id = key[1]
            version = doc.version
            value = doc.value
            meta = doc.meta
            if (type(value) is int and floor < value < limit and doc.source is None
                    and type(meta) is dict and not meta and type(entity_id) is str
                    and key[0] == space):
                text, source, meta_text = int.__repr__(value), "null", "{}"
            else:
                if type(entity_id) is not str:
                    check_key(space, entity_id)
                if key[0] != space:
                    raise ValueError(f"landed document {key!r} is not in space {space!r}")
                enc = encode_document(space, entity_id, doc, owned=True)  # (store-owned)
                text, source, meta_text = enc.value, enc.source, enc.meta
                if decoded is None:
                    decoded = []
                decoded.append((key, new_document((enc.doc.value, enc.doc.source,
                                                   enc.doc.meta, version))))
            if version > 1:
                n = rowids.get(key)
                if n is not None:
                    by_rowid.append((text, source, meta_text, version, seq, n, entity_id, space,
                                     version - 1))
                else:
                    updates.append((text, source, meta_text, version, seq, space, entity_id,
                                    version - 1))
            else:
                inserts.append((space, entity_id, text, source, meta_text, version, seq))
        if self.readonly:
            raise StoreError(f"sqlite store {self.path} was opened read-only (mode=ro)")
        if not landed:
            return
        with self._lock:
            conn = self._connection()
            with self._file_transaction(conn, self._begin_commit,
                                        f"committing to space {space!r}"):
                self._absorb(conn)
                if read:
                    self._check_read(conn, space, read)
                if self._seq + 1 != seq:  # other writers committed meanwhile
                    seq = self._seq + 1
                    updates = [(*row[:4], seq, *row[5:]) for row in updates]
                    by_rowid = [(*row[:4], seq, *row[5:]) for row in by_rowid]
                    inserts = [(*row[:6], seq) for row in inserts]
                learned = self._write_rows(conn, space, inserts, updates, by_rowid, seq)
            # Only now is the write durable; the cache must never run ahead of the file.
            cache = self._cache
            move = cache.move_to_end
            for key, doc in landed.items():
                cache[key] = doc
                move(key)
            if decoded is not None:
                for key, doc in decoded:
                    cache[key] = doc
            if self._corrupt:
                for key in landed:
                    self._corrupt.pop(key, None)
            if learned:
                rowids.update(learned)
            if len(cache) > self.cache_size:
                self._evict()
            self._seq = seq

    def _write_rows(self, conn: sqlite3.Connection, space: str, inserts: list[tuple[Any, ...]],
                    updates: list[tuple[Any, ...]], by_rowid: list[tuple[Any, ...]],
                    seq: int) -> dict[Key, int]:
        """``commit_landed``'s rows: version-checked, so a missed row is a conflict.

        Returns the row ids of the documents it created.  A row id that no longer
        names the document (deleted and made again by another process) misses
        its row: those rows are written again by key before anything counts as
        a conflict.
        """
        learned: dict[Key, int] = {}
        try:
            if inserts:
                conn.executemany(
                    "INSERT INTO documents (space, id, value, source, meta, version, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", inserts)
                learned = {(space, entity_id): n for entity_id, n in conn.execute(
                    "SELECT id, n FROM documents WHERE seq = ? AND space = ?", (seq, space))}
            missed = bool(updates) and (
                conn.executemany(_UPDATE_BY_KEY, updates).rowcount != len(updates))
            if by_rowid and not missed and (
                conn.executemany(_UPDATE_BY_ROWID, by_rowid).rowcount != len(by_rowid)
            ):  # a stale row id, or a lost compare-and-swap: by key, what did not land
                written = {entity_id for (entity_id,) in conn.execute(
                    "SELECT id FROM documents WHERE seq = ? AND space = ?", (seq, space))}
                retry = [(*row[:5], space, row[6], row[8]) for row in by_rowid
                         if row[6] not in written]
                for row in retry:
                    self._rowids.pop((space, row[6]), None)
                missed = bool(retry) and (
                    conn.executemany(_UPDATE_BY_KEY, retry).rowcount != len(retry))
            if not missed:
                return learned
        except sqlite3.IntegrityError:  # a new document was created meanwhile by another writer
            pass
        # a compare-and-swap lost: which ones (rows written by this commit are at ``seq``)
        basis = {(space, row[1]): 0 for row in inserts}
        basis.update(((space, row[6]), row[7]) for row in updates)
        basis.update(((space, row[6]), row[8]) for row in by_rowid)
        current = self._versions(conn, basis, seq)
        conflicts = [(key, read, current.get(key, 0)) for key, read in basis.items()
                     if current.get(key, 0) != read]
        raise conflict_error(space, conflicts or [
            (key, read, current.get(key, 0)) for key, read in basis.items()])

    @contextlib.contextmanager
    def _file_transaction(self, conn: sqlite3.Connection,
                          begin: Callable[[sqlite3.Connection], None],
                          doing: str) -> Iterator[None]:
        """One file transaction: ``begin``, the body, COMMIT; ROLLBACK on any error.

        An ``sqlite3.Error`` on the way becomes the ``StoreError`` naming ``doing``.
        """
        try:
            begin(conn)
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc, doing, self._busy_ms) from None

    def _begin_commit(self, conn: sqlite3.Connection) -> None:
        """Open the commit's write transaction (or take over the one ``write_lock`` began)."""
        if self._held:
            self._held = False  # this commit ends the transaction ``write_lock`` began
            self._release_mark()
        else:
            self._begin_write(conn)

    def release(self, space: str, entity_ids: list[str]) -> int:
        """Delete documents nobody reads any more (a stopped map child's); returns how many.

        One file transaction; not a commit of a change (no feed entry): another
        process that still caches one of them keeps its copy until evicted,
        which only a process running the same instance (and stopping the same
        child itself) could read.
        """
        if self.readonly or not entity_ids:
            return 0
        with self._lock:
            if self._held:
                return 0  # a held write lock belongs to a commit in progress: not now
            conn = self._connection()
            gone = 0
            with self._file_transaction(conn, self._begin_write,
                                        f"releasing documents of {space!r}"):
                # the newest sequence number outlives its row (see ``_max_seq``)
                top = self._max_seq(conn)
                conn.execute(_FEED_MARK)
                conn.execute("DELETE FROM feed_mark")
                conn.execute("INSERT INTO feed_mark (seq) VALUES (?)", (top,))
                for start in range(0, len(entity_ids), _CHUNK):
                    chunk = entity_ids[start:start + _CHUNK]
                    gone += conn.execute(
                        f"DELETE FROM documents WHERE space = ? AND id IN "
                        f"({','.join('?' * len(chunk))})", (space, *chunk)).rowcount
            for entity_id in entity_ids:
                self._cache.pop((space, entity_id), None)
                self._corrupt.pop((space, entity_id), None)
                self._rowids.pop((space, entity_id), None)
            return gone

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the file's write lock (``BEGIN IMMEDIATE``) for a whole attempt.

        Inside, the cache is brought up to date first and no other process can
        commit, so a transaction that reads and then commits here cannot
        conflict: the last retry of a contended write runs like this.  The next
        ``commit`` ends the lock; leaving without one releases it.  Other
        threads of this process wait on the store's lock meanwhile.
        """
        if self.readonly:
            raise StoreError(f"sqlite store {self.path} was opened read-only (mode=ro)")
        with self._lock:
            conn = self._connection()
            if self._held:  # nested: the outer holder already has the lock
                yield
                return
            try:
                self._begin_write(conn)
                self._absorb(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _store_error(self.path, exc, "taking the write lock", self._busy_ms) from None
            self._held = True
            with _held_guard:
                _held_locks[self.path] = (threading.get_ident(), weakref.ref(self))
            try:
                yield
            finally:
                if self._held:  # no commit ended it
                    self._yield_lock()

    def _yield_lock(self) -> None:
        """Give up a held write lock that nothing was written under (a ROLLBACK)."""
        self._held = False
        self._release_mark()
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _release_mark(self) -> None:
        with _held_guard:
            mark = _held_locks.get(self.path)
            if mark is not None and mark[1]() is self:
                del _held_locks[self.path]

    def _begin_write(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``; first, a lock this thread holds on the file through
        another store object is given up (nothing is written under it yet): waiting
        for it here could only end in a timeout.  That holder's commit then meets
        the usual compare-and-swap, so the yield loses no update."""
        with _held_guard:
            mark = _held_locks.get(self.path)
        if mark is not None and mark[0] == threading.get_ident():
            holder = mark[1]()
            if holder is not None and holder is not self and holder._held:
                with holder._lock:
                    holder._yield_lock()
        conn.execute("BEGIN IMMEDIATE")

    def _apply(
        self,
        conn: sqlite3.Connection,
        space: str,
        encoded: Mapping[str, Encoded],
        basis: Mapping[tuple[str, str], int],
    ) -> tuple[list[Change], int]:
        """Check the basis and write, inside the caller's write transaction.

        Returns the changes and the sequence number they were written at (0 when
        nothing was written).
        """
        cache = self._cache
        corrupt = self._corrupt
        # Versions come from the cache where it holds the basis version (``_absorb`` just
        # brought it up to date; the version-checked UPDATE below proves it): a query
        # only for what it lacks, so a usual commit is BEGIN, UPDATE, COMMIT.
        unsure = [key for key, read in basis.items()
                  if (space, key[1]) != key or key[1] not in encoded or read == 0
                  or key in corrupt or (c := cache.get(key)) is None or c.version != read]
        unsure.extend((space, e) for e in encoded if (space, e) not in basis)
        current = self._versions(conn, unsure) if unsure else {}
        conflicts: list[tuple[Key, int, int]] = [
            (key, read, current.get(key, 0))
            for key, read in basis.items() if key in current or key in unsure
            if current.get(key, 0) != read
        ]
        if conflicts:
            raise conflict_error(space, conflicts)
        if not encoded:
            return [], 0
        # _absorb ran under the write lock: nothing newer than our feed position exists
        seq = self._seq + 1
        changes: list[Change] = []
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for entity_id, enc in encoded.items():
            key = (space, entity_id)
            version = current[key] if key in current else basis.get(key, 0)
            before: Document | None = None
            if version and key not in corrupt:  # an unreadable document is replaced whole
                cached = cache.get(key)
                if cached is not None and cached.version == version:
                    before = cached
                else:
                    row = conn.execute(
                        f"SELECT {_ROW} FROM documents WHERE space = ? AND id = ?", key
                    ).fetchone()
                    before = _decode_row(row)
            after = new_document((enc.doc.value, enc.doc.source, enc.doc.meta, version + 1))
            if version:
                updates.append((enc.value, enc.source, enc.meta, after.version, seq, space,
                                entity_id, version))
            else:
                inserts.append((space, entity_id, enc.value, enc.source, enc.meta,
                                after.version, seq))
            changes.append(new_change((space, entity_id, before, after)))
        try:
            if inserts:
                conn.executemany(
                    "INSERT INTO documents (space, id, value, source, meta, version, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", inserts)
        except sqlite3.IntegrityError:  # created meanwhile by a writer the feed had not shown
            self._raise_conflicts(conn, space, basis, encoded, seq)
        if updates:
            cursor = conn.executemany(
                "UPDATE documents SET value = ?, source = ?, meta = ?, version = ?, seq = ? "
                "WHERE space = ? AND id = ? AND version = ?", updates)
            if cursor.rowcount != len(updates):  # a version moved: a compare-and-swap lost
                self._raise_conflicts(conn, space, basis, encoded, seq)
        return changes, seq

    def _raise_conflicts(self, conn: sqlite3.Connection, space: str,
                         basis: Mapping[Key, int], encoded: Mapping[str, Encoded],
                         seq: int) -> None:
        """The ``ConflictError`` for a write whose expected version was not the stored one.

        Rows this commit wrote already (at ``seq``) count at the version they had.
        """
        keys = set(basis) | {(space, e) for e in encoded}
        current = self._versions(conn, keys, seq)
        conflicts = [(key, read, current.get(key, 0)) for key, read in basis.items()
                     if current.get(key, 0) != read]
        raise conflict_error(space, conflicts or [
            ((space, e), 0, current.get((space, e), 0)) for e in encoded])

    @staticmethod
    def _versions(conn: sqlite3.Connection, keys: Iterable[Key],
                  written_at: int | None = None) -> dict[Key, int]:
        """The stored version of each of ``keys`` that exists: one query per space and chunk.

        A row this transaction wrote at sequence ``written_at`` counts at the
        version it had before (one less: 0 for one it created).
        """
        by_space: dict[str, list[str]] = {}
        for space, entity_id in keys:
            by_space.setdefault(space, []).append(entity_id)
        found: dict[Key, int] = {}
        for space, ids in by_space.items():
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                if len(chunk) == 1:
                    rows = conn.execute(
                        "SELECT id, version, seq FROM documents WHERE space = ? AND id = ?",
                        (space, chunk[0]))
                else:
                    marks = ",".join("?" * len(chunk))
                    rows = conn.execute(
                        f"SELECT id, version, seq FROM documents WHERE space = ? AND id IN "
                        f"({marks})", (space, *chunk))
                for entity_id, version, seq in rows:
                    found[(space, entity_id)] = int(version) - (seq == written_at)
        return found

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


