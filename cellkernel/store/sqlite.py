"""``SqliteStore`` (``"sqlite://<path>"``): one SQLite file for all spaces.

WAL mode, shareable between processes; other writers' commits are picked up
with ``poll()``; per-document version compare-and-swap at commit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from cellkernel.store.documents import (
    Change,
    Document,
    Encoded,
    Key,
    conflict_error,
    encode_commit,
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
        encoded = encode_commit(space, writes, basis)
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
        encoded: Mapping[str, Encoded],
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
            raise conflict_error(space, conflicts)
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


