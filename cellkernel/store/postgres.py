"""``PostgresStore`` (``"postgresql://user@host:port/db"``): all spaces in one PostgreSQL database.

The same contract as ``SqliteStore``, for runtimes on several machines:

* every commit is a compare-and-swap over the version of every document the
  transaction read or wrote (its basis), all or nothing;
* commits are serialised on one feed row (``cellkernel_feed``), so the global
  sequence number a commit stamps on its rows is also its commit order: a
  reader that has seen sequence ``n`` has seen every commit up to ``n``, and
  ``poll()`` is one indexed query for ``seq > n``;
* every commit sends ``NOTIFY cellkernel_changes`` with a compact payload
  (origin, sequence, space, ids, versions); :meth:`PostgresStore.subscribe`
  runs a listener thread that tells a runtime when to poll, so commits of other
  runtimes reach a running asyncio loop as they happen;
* a dropped connection is reopened on next use, and anything missed meanwhile
  is read from the change feed from the last position seen (notifications are
  only a wake-up call; the feed is the truth).

``psycopg`` (the ``cellkernel[postgres]`` extra) is imported when a store is
opened, so ``import cellkernel`` never needs it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from cellkernel.errors import CellkernelError, ConflictError
from cellkernel.store.documents import (
    Change,
    Document,
    Encoded,
    Key,
    OwnedCommits,
    check_key,
    conflict_error,
    encode_commit,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("cellkernel.store.postgres")

# --------------------------------------------------------------------------- errors


class PostgresStoreError(CellkernelError):
    """Something between this process and its PostgreSQL store went wrong."""


class PostgresUrlError(PostgresStoreError, ValueError):
    """A ``postgresql://`` URL that cannot name a database."""


class PostgresUnavailableError(PostgresStoreError, ConnectionError):
    """The server cannot be reached (or the connection dropped) at host, port, database.

    ``in_doubt`` is true when the connection was lost while a commit was being
    acknowledged and the store could not find out whether it landed; the next
    ``poll()`` after the server is back reports it if it did.  Otherwise
    nothing of the failed operation landed.
    """

    def __init__(self, message: str, *, in_doubt: bool = False) -> None:
        self.in_doubt = in_doubt
        super().__init__(message)


class PostgresAuthError(PostgresStoreError, PermissionError):
    """The server refused the user name or password."""


class PostgresDataError(PostgresStoreError, ValueError):
    """Stored rows or the schema are not what this cellkernel reads or writes."""


# --------------------------------------------------------------------------- schema

_SCHEMA_VERSION = 1
_CHANNEL = "cellkernel_changes"
#: ``NOTIFY`` payloads must stay under 8000 bytes; past this the ids are left out
_PAYLOAD_LIMIT = 7000
#: one lock id for schema creation (several processes opening a new database at once)
_SETUP_LOCK = 0x63656C6C6B65726E  # "cellkern"
_CONNECT_TIMEOUT_S = 5

_SCHEMA = (
    """CREATE TABLE cellkernel_meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE cellkernel_feed (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),  -- exactly one row
        seq bigint NOT NULL                                -- last commit's sequence number
    )""",
    """CREATE TABLE cellkernel_documents (
        n       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order
        space   text NOT NULL,
        id      text NOT NULL,
        value   text NOT NULL,                  -- JSON, exactly as encoded
        source  text NOT NULL,                  -- JSON
        meta    text NOT NULL,                  -- JSON object
        version bigint NOT NULL CHECK (version > 0),
        seq     bigint NOT NULL,                -- sequence of the commit that wrote it last
        UNIQUE (space, id)
    )""",
    "CREATE INDEX cellkernel_documents_by_seq ON cellkernel_documents (seq)",
    "INSERT INTO cellkernel_feed (seq) VALUES (0)",
)

_ROW = "space, id, value, source, meta, version, seq"
_Row: TypeAlias = tuple[str, str, str, str, str, int, int]

_SELECT_KEYS = (
    f"SELECT {_ROW} FROM cellkernel_documents d "
    "JOIN unnest(%s::text[], %s::text[]) AS k(space, id) USING (space, id)"
)

_UPSERT = """
INSERT INTO cellkernel_documents (space, id, value, source, meta, version, seq)
SELECT %(space)s, w.id, w.value, w.source, w.meta, w.version, %(seq)s
FROM unnest(%(ids)s::text[], %(values)s::text[], %(sources)s::text[], %(metas)s::text[],
            %(versions)s::bigint[]) WITH ORDINALITY AS w(id, value, source, meta, version, i)
ORDER BY w.i
ON CONFLICT (space, id) DO UPDATE
SET value = EXCLUDED.value, source = EXCLUDED.source, meta = EXCLUDED.meta,
    version = EXCLUDED.version, seq = EXCLUDED.seq
WHERE cellkernel_documents.version = EXCLUDED.version - 1
"""


def _decode_row(row: _Row) -> Document:
    space, entity_id, value, source, meta, version, _ = row
    try:
        doc = Document(json.loads(value), json.loads(source), json.loads(meta), int(version))
    except (ValueError, RecursionError) as exc:
        raise PostgresDataError(
            f"stored document {entity_id!r} in space {space!r} is not JSON: {exc}"
        ) from None
    if not isinstance(doc.meta, dict):
        raise PostgresDataError(
            f"stored meta of {entity_id!r} in space {space!r} is not an object: {doc.meta!r}"
        )
    return doc


def _storable(text: str) -> bool:
    """PostgreSQL ``text`` holds no NUL character; nothing with one can be stored or found."""
    return "\x00" not in text


# --------------------------------------------------------------------------- urls


class _Target:
    """Where a URL points: the libpq parameters, and words for error messages."""

    def __init__(self, url: object) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise PostgresUrlError(
                f"not a PostgreSQL store url (want postgresql://user@host:port/db): {url!r}"
            )
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(url)
        except Exception as exc:  # psycopg.ProgrammingError: libpq could not parse it
            raise PostgresUrlError(
                f"invalid PostgreSQL store url {_redact(url)!r}: {exc}"
            ) from None
        port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
            raise PostgresUrlError(
                f"invalid port {port!r} in PostgreSQL store url {_redact(url)!r}"
            )
        self.params: dict[str, Any] = dict(params)
        self.params.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        self.params.setdefault("application_name", "cellkernel")
        # A server that vanishes without closing the socket is noticed within seconds.
        for key, value in (("keepalives", 1), ("keepalives_idle", 5),
                           ("keepalives_interval", 2), ("keepalives_count", 3)):
            self.params.setdefault(key, value)
        user = str(params.get("user") or os.environ.get("PGUSER") or _os_user())
        self.host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
        self.port = port
        self.database = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
        self.url = _redact(url)

    @property
    def where(self) -> str:
        return f"host {self.host!r}, port {self.port}, database {self.database!r}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        return ""


def _redact(url: str) -> str:
    """The URL without its password (it ends up in reprs, logs and errors)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    tail_parts = [
        part if not part.lower().startswith("password=") else "password=***"
        for part in tail.split("&")
    ]
    return f"{scheme}{sep}{netloc}{slash}{'&'.join(tail_parts)}"


_AUTH_WORDS = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "pg_hba.conf",
    "peer authentication",
)


def _connect_error(exc: Exception, target: _Target) -> PostgresStoreError:
    """A typed error for a failed connection attempt, naming host, port and database."""
    text = str(exc).strip()
    low = text.lower()
    sqlstate = getattr(exc, "sqlstate", None) or ""
    detail = text.splitlines()[-1].strip() if text else type(exc).__name__
    if sqlstate.startswith("28") or any(word in low for word in _AUTH_WORDS) or (
        "role" in low and "does not exist" in low
    ):
        return PostgresAuthError(
            f"PostgreSQL at {target.where} refused the login: {detail}"
        )
    if sqlstate == "3D000" or ("database" in low and "does not exist" in low):
        return PostgresUnavailableError(
            f"PostgreSQL at {target.where}: the database does not exist ({detail})"
        )
    return PostgresUnavailableError(f"cannot reach PostgreSQL at {target.where}: {detail}")


# --------------------------------------------------------------------------- the store


class PostgresStore(OwnedCommits):
    """A store in one PostgreSQL database, shared by runtimes on any number of machines.

    Like ``SqliteStore``, reads go through an in-process cache brought up to
    date by ``poll()`` and inside every ``commit`` (which refreshes it on
    conflict too, so a retry sees the winner); changes picked up inside a
    commit are held for the next ``poll()``.  The basis check itself always
    reads the database: the cache only saves decoding.
    """

    #: other processes write this store: a runtime polls before writes and on ``idle``
    external_writes = True
    #: a commit is a server round trip: a settle's derived writes land in one
    #: (``store/writeback.py``)
    group_commit = True

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - depends on the installation
            raise ImportError(
                "a postgresql:// store needs psycopg: pip install 'cellkernel[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._target = _Target(url)
        self.url = self._target.url
        self._lock = threading.RLock()
        self._cache: dict[Key, Document | None] = {}
        self._pending: list[Change] = []
        self._seq = 0  # every row with seq <= this is reflected in the cache (or uncached)
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._origin = uuid.uuid4().hex[:12]  # tells our own notifications from others'
        self._subscribers: list[Callable[[], None]] = []
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._conn = self._open()
        self._seq = self._feed_position(self._conn)  # documents present load on demand

    # -- connections

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return self._psycopg.connect(autocommit=True, **self._target.params)
        except self._psycopg.Error as exc:
            raise _connect_error(exc, self._target) from None

    def _open(self) -> psycopg.Connection[Any]:
        conn = self._connect()
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema on first use (once, whoever races) and check its version."""
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
                row = conn.execute("SELECT to_regclass('cellkernel_meta')").fetchone()
                if row is None or row[0] is None:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO cellkernel_meta VALUES ('schema_version', %s)",
                        (str(_SCHEMA_VERSION),),
                    )
                found = conn.execute(
                    "SELECT value FROM cellkernel_meta WHERE key = 'schema_version'"
                ).fetchone()
        except self._psycopg.OperationalError as exc:
            raise self._lost(exc) from None
        except self._psycopg.Error as exc:
            raise PostgresDataError(
                f"cannot set up the cellkernel schema at {self._target.where}: {exc}"
            ) from None
        if found is None or found[0] != str(_SCHEMA_VERSION):
            raise PostgresDataError(
                f"{self._target.where} has cellkernel storage schema version "
                f"{found[0] if found else None!r}, this cellkernel reads version "
                f"{_SCHEMA_VERSION}"
            )

    def _feed_position(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT seq FROM cellkernel_feed").fetchone()
        if row is None:
            raise PostgresDataError(f"the cellkernel change feed at {self._target.where} is empty")
        return int(row[0])

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, reopened (and the feed position checked) after a drop."""
        if self._closed:
            raise ValueError(f"store {self.url} is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        conn = self._open()
        try:
            position = self._feed_position(conn)
        except self._psycopg.Error as exc:
            conn.close()
            raise self._lost(exc) from None
        if position < self._seq:
            # The database went back in time (restored, recreated): nothing cached holds.
            log.warning("%s: change feed is at %d, behind %d; dropping the cache",
                        self.url, position, self._seq)
            self._cache.clear()
            self._seq = position
        self._conn = conn
        return conn

    def _lost(self, exc: BaseException, *, in_doubt: bool = False) -> PostgresUnavailableError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if in_doubt:
            return PostgresUnavailableError(
                f"connection to PostgreSQL at {self._target.where} was lost while a commit "
                f"was being acknowledged; it may have landed (the next poll reports it): "
                f"{detail}",
                in_doubt=True,
            )
        return PostgresUnavailableError(
            f"connection to PostgreSQL at {self._target.where} failed; nothing was written: "
            f"{detail}"
        )

    def _failed(self, conn: psycopg.Connection[Any], exc: BaseException) -> BaseException:
        """The error to raise for a psycopg error on ``conn`` outside a commit."""
        if conn.broken or conn.closed or isinstance(exc, self._psycopg.OperationalError):
            return self._lost(exc)
        return PostgresStoreError(f"PostgreSQL at {self._target.where}: {exc}")

    # -- reading

    def load(self, space: str, entity_id: str) -> Document | None:
        key = (space, entity_id)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            check_key(space, entity_id)
            if not (_storable(space) and _storable(entity_id)):
                return None
            conn = self._connection()
            try:
                row = conn.execute(
                    f"SELECT {_ROW} FROM cellkernel_documents WHERE space = %s AND id = %s", key
                ).fetchone()
            except self._psycopg.Error as exc:
                raise self._failed(conn, exc) from None
            doc = _decode_row(row) if row is not None else None
            self._cache[key] = doc
            return doc

    def entity_ids(self, space: str) -> list[str]:
        """Read from the database, not the cache: a listing should include every id."""
        if not isinstance(space, str):
            raise TypeError(f"space must be str, got {space!r}")
        if not _storable(space):
            return []
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    "SELECT id FROM cellkernel_documents WHERE space = %s ORDER BY n", (space,)
                ).fetchall()
            except self._psycopg.Error as exc:
                raise self._failed(conn, exc) from None
            return [r[0] for r in rows]

    def poll(self) -> list[Change]:
        """Other writers' commits since the last position seen, latest version per document."""
        with self._lock:
            conn = self._connection()
            try:
                self._absorb(conn)
            except self._psycopg.Error as exc:
                raise self._failed(conn, exc) from None
            changes, self._pending = self._pending, []
            return changes

    def _absorb(self, conn: psycopg.Connection[Any]) -> None:
        """Fold every row newer than our feed position into the cache, queueing changes.

        Rows whose version we already hold (our own commits, fresh loads) are not
        news.  The whole batch is decoded before anything is folded in, so a bad
        row leaves the cache and the position as they were.
        """
        rows: list[_Row] = conn.execute(
            f"SELECT {_ROW} FROM cellkernel_documents WHERE seq > %s ORDER BY seq, n",
            (self._seq,),
        ).fetchall()
        news: list[tuple[Key, Document | None, Document]] = []
        seq = self._seq
        for row in rows:
            key = (row[0], row[1])
            before = self._cache.get(key)
            if before is None or before.version < row[5]:
                news.append((key, before, _decode_row(row)))
            seq = max(seq, int(row[6]))
        for key, before, after in news:
            self._cache[key] = after
            self._pending.append(Change(key[0], key[1], before, after))
        self._seq = seq

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
        for key in (*basis, *((space, entity_id) for entity_id in encoded)):
            if not (_storable(key[0]) and _storable(key[1])):
                raise ValueError(
                    f"PostgreSQL cannot store a NUL character in a space or entity id: {key!r}"
                )
        with self._lock:
            conn = self._connection()
            committing = False
            changes: list[Change] = []
            seq = 0
            try:
                conn.execute("BEGIN")
                if encoded:  # take the feed row first: it orders (and serialises) commits
                    [seq] = conn.execute(
                        "UPDATE cellkernel_feed SET seq = seq + 1 RETURNING seq"
                    ).fetchone() or (0,)
                    self._absorb(conn)
                changes = self._apply(conn, space, encoded, basis, seq)
                if changes:
                    payload = self._payload(seq, changes)
                    conn.execute("SELECT pg_notify(%s, %s)", (_CHANNEL, payload))
                committing = True
                conn.execute("COMMIT")
            except ConflictError:
                self._rollback(conn)
                raise
            except UnicodeEncodeError as exc:  # a lone surrogate: not UTF-8, nothing sent
                self._rollback(conn)
                raise ValueError(
                    f"document in space {space!r} is not storable text: {exc}"
                ) from None
            except self._psycopg.Error as exc:
                self._rollback(conn)
                if committing and (conn.broken or conn.closed):
                    landed = self._landed(space, changes, seq)
                    if landed is None:
                        raise self._lost(exc, in_doubt=True) from None
                    if not landed:
                        raise self._lost(exc) from None
                    log.info("%s: commit %d landed although its acknowledgement was lost",
                             self.url, seq)
                elif conn.broken or conn.closed or isinstance(
                    exc, self._psycopg.OperationalError
                ):
                    raise self._lost(exc) from None
                else:
                    raise PostgresStoreError(
                        f"commit to space {space!r} at {self._target.where} failed; "
                        f"nothing was written: {exc}"
                    ) from None
            except BaseException:
                self._rollback(conn)
                raise
            # Only now is the write durable; the cache must never run ahead of the database.
            for change in changes:
                self._cache[(change.space, change.entity_id)] = change.after
            if seq:
                self._seq = max(self._seq, seq)
            return changes

    def release(self, space: str, entity_ids: list[str]) -> int:
        """Delete documents nobody reads any more (a retired map child's); returns how many.

        One statement in its own transaction; not a commit of a change (no feed
        row, no ``NOTIFY``): another runtime that still caches one of them keeps
        its copy, which only a runtime running the same instance could read.
        """
        ids = [e for e in entity_ids if _storable(e)]
        if not ids or not _storable(space):
            return 0
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                gone = conn.execute(
                    "DELETE FROM cellkernel_documents WHERE space = %s AND id = ANY(%s)",
                    (space, ids),
                ).rowcount
                conn.execute("COMMIT")
            except self._psycopg.Error as exc:
                self._rollback(conn)
                raise self._failed(conn, exc) from None
            for entity_id in ids:
                self._cache.pop((space, entity_id), None)
            return int(gone or 0)

    def _rollback(self, conn: psycopg.Connection[Any]) -> None:
        if conn.broken or conn.closed:
            return
        try:
            conn.execute("ROLLBACK")
        except self._psycopg.Error:
            with contextlib.suppress(Exception):
                conn.close()

    def _landed(self, space: str, changes: list[Change], seq: int) -> bool | None:
        """After a lost COMMIT: did commit ``seq`` land?  None when the server cannot say.

        Commits are serialised on the feed row, so ``seq`` names one commit: it
        landed if the first document it wrote carries that sequence number (or a
        later write already replaced it, which a later version shows).
        """
        if not changes:
            return False
        first = changes[0]
        try:
            conn = self._connection()
            row = conn.execute(
                "SELECT version, seq FROM cellkernel_documents WHERE space = %s AND id = %s",
                (space, first.entity_id),
            ).fetchone()
        except (PostgresStoreError, self._psycopg.Error):
            return None
        if row is None:
            return False
        version, found_seq = int(row[0]), int(row[1])
        if found_seq == seq:
            return True
        if found_seq > seq and version > first.after.version:
            return None  # overwritten since: ours may or may not be under it
        return False

    def _apply(
        self,
        conn: psycopg.Connection[Any],
        space: str,
        encoded: Mapping[str, Encoded],
        basis: Mapping[tuple[str, str], int],
        seq: int,
    ) -> list[Change]:
        """Check the basis against the database and write, inside the caller's transaction."""
        keys = list(dict.fromkeys([*basis, *((space, entity_id) for entity_id in encoded)]))
        current: dict[Key, _Row] = {}
        if keys:
            rows: Iterable[_Row] = conn.execute(
                _SELECT_KEYS,
                ([k[0] for k in keys], [k[1] for k in keys]),
            ).fetchall()
            current = {(row[0], row[1]): row for row in rows}
        conflicts: list[tuple[Key, int, int]] = []
        for key, read in basis.items():
            row = current.get(key)
            found = int(row[5]) if row is not None else 0
            if found != read:
                conflicts.append((key, read, found))
        if conflicts:
            raise conflict_error(space, conflicts)
        if not encoded:
            return []
        changes: list[Change] = []
        for entity_id, enc in encoded.items():
            key = (space, entity_id)
            row = current.get(key)
            before: Document | None = None
            if row is not None:
                cached = self._cache.get(key)
                before = cached if cached is not None and cached.version == row[5] else (
                    _decode_row(row)
                )
            version = (before.version if before is not None else 0) + 1
            after = Document(enc.doc.value, enc.doc.source, enc.doc.meta, version)
            changes.append(Change(space, entity_id, before, after))
        cursor = conn.execute(
            _UPSERT,
            {
                "space": space,
                "seq": seq,
                "ids": list(encoded),
                "values": [enc.value for enc in encoded.values()],
                "sources": [enc.source for enc in encoded.values()],
                "metas": [enc.meta for enc in encoded.values()],
                "versions": [change.after.version for change in changes],
            },
        )
        if cursor.rowcount != len(encoded):  # cannot happen while commits hold the feed row
            raise ConflictError(
                f"commit to space {space!r} conflicts: a document changed under the feed lock",
                conflicts=[(space, entity_id) for entity_id in encoded],
            )
        return changes

    def _payload(self, seq: int, changes: list[Change]) -> str:
        """``{"o": origin, "q": seq, "s": space, "i": ids, "v": versions}``, ids dropped if big."""
        payload: dict[str, Any] = {
            "o": self._origin,
            "q": seq,
            "s": changes[0].space,
            "i": [c.entity_id for c in changes],
            "v": [c.after.version for c in changes],
        }
        text = json.dumps(payload, separators=(",", ":"))
        if len(text.encode("utf-8", "replace")) > _PAYLOAD_LIMIT:
            text = json.dumps({"o": self._origin, "q": seq}, separators=(",", ":"))
        return text

    # -- live changes

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when another writer may have committed; returns unsubscribe.

        The callback runs on the store's listener thread (a ``LISTEN`` connection of
        its own), so it must only hand off — ``loop.call_soon_threadsafe(...)`` — and
        let its owner ``poll()``.  It is also called after the listener (re)connects,
        since notifications sent while it was away are lost: the feed has them.
        """
        with self._lock:
            if self._closed:
                raise ValueError(f"store {self.url} is closed")
            self._subscribers.append(callback)
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name=f"cellkernel-listen-{self._origin}", daemon=True
                )
                self._listener.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _wake(self) -> None:
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:  # one broken subscriber must not silence the others
                log.exception("%s: change subscriber failed", self.url)

    def _news(self, payload: str) -> bool:
        """Whether a notification may carry something this store has not seen."""
        try:
            note = json.loads(payload)
            if note.get("o") == self._origin:
                return False
            return int(note["q"]) > self._seq
        except (ValueError, TypeError, KeyError, AttributeError):
            return True  # not ours to parse: polling is always safe

    def _listen(self) -> None:
        """The listener thread: LISTEN, wake subscribers, reconnect with backoff."""
        pause = 0.05
        while not self._stop.is_set():
            try:
                conn = self._psycopg.connect(autocommit=True, **self._target.params)
            except self._psycopg.Error as exc:
                log.debug("%s: listener cannot connect: %s", self.url, exc)
                self._stop.wait(pause)
                pause = min(pause * 2, 2.0)
                continue
            try:
                with conn:
                    conn.execute(f"LISTEN {_CHANNEL}")
                    pause = 0.05
                    self._wake()  # whatever was committed while nobody listened
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.25, stop_after=1):
                            if self._news(note.payload):
                                self._wake()
            except self._psycopg.Error as exc:
                log.debug("%s: listener connection lost: %s", self.url, exc)
                self._stop.wait(pause)

    @property
    def live(self) -> bool:
        """Whether the listener thread is running (for tools and tests)."""
        listener = self._listener
        return listener is not None and listener.is_alive()

    # -- lifecycle

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._subscribers.clear()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=2)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"
