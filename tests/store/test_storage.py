"""Tests for cellkernel.store (memory, sqlite, urls).

CAS commits, change feed, multi-process safety.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellkernel.errors import ConflictError
from cellkernel.store.documents import Change, Document, Store
from cellkernel.store.memory import MemoryStore
from cellkernel.store.sqlite import SqliteStore
from cellkernel.store.urls import open_store

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "helpers" / "storage_worker.py"

Snapshot = dict[tuple[str, str], Document | None]


# --------------------------------------------------------------------------- fixtures


class Stores:
    """A store under test plus a way to get a fresh, cache-free view of the same data."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.db = tmp_path / "store.db"
        self._opened: list[Store] = []
        self.store = self.open()

    def open(self) -> Store:
        store: Store = MemoryStore() if self.kind == "memory" else SqliteStore(self.db)
        self._opened.append(store)
        return store

    def fresh(self) -> Store:
        """A view that cannot be answering from the tested object's cache."""
        return self.store if self.kind == "memory" else self.open()

    def snapshot(self, *spaces: str) -> Snapshot:
        view = self.fresh()
        return {(s, i): view.load(s, i) for s in spaces for i in view.entity_ids(s)}

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    s = Stores(request.param, tmp_path)
    yield s
    s.close()


def write(
    store: Store,
    space: str,
    entity_id: str,
    value: Any,
    basis: dict[tuple[str, str], int] | None = None,
    **kw: Any,
) -> Change:
    """Commit one doc against the version the store currently shows (a read-modify-write)."""
    if basis is None:
        doc = store.load(space, entity_id)
        basis = {(space, entity_id): doc.version if doc else 0}
    [change] = store.commit(space, {entity_id: Document(value, **kw)}, basis)
    return change


# --------------------------------------------------------------------------- basics


def test_round_trip_versions_meta_source(stores: Stores) -> None:
    store = stores.store
    assert store.load("s", "a") is None
    c1 = write(
        store,
        "s",
        "a",
        {"x": [1, 2.5, "é", None, True]},
        source={"from": "b"},
        meta={"graph": {"nodes": [1]}},
    )
    assert c1 == Change(
        "s",
        "a",
        None,
        Document({"x": [1, 2.5, "é", None, True]}, {"from": "b"}, {"graph": {"nodes": [1]}}, 1),
    )
    assert store.load("s", "a") == c1.after
    c2 = write(store, "s", "a", 7)
    assert c2.before == c1.after
    assert c2.after == Document(7, None, {}, 2)
    for view in (store, stores.fresh()):
        assert view.load("s", "a") == Document(7, None, {}, 2)
        assert view.load("s", "missing") is None
        assert view.load("other", "a") is None


def test_version_in_written_document_is_ignored(stores: Stores) -> None:
    [c] = stores.store.commit("s", {"a": Document(1, version=41)}, {})
    assert c.after.version == 1
    [c] = stores.store.commit("s", {"a": Document(2, version=0)}, {("s", "a"): 1})
    assert c.after.version == 2


def test_value_none_is_a_stored_document(stores: Stores) -> None:
    write(stores.store, "s", "a", None)
    assert stores.fresh().load("s", "a") == Document(None, None, {}, 1)
    assert stores.fresh().entity_ids("s") == ["a"]


def test_entity_ids_in_creation_order_per_space(stores: Stores) -> None:
    store = stores.store
    for eid in ["zeta", "alpha", "mid"]:
        write(store, "s1", eid, eid)
    write(store, "s2", "only", 1)
    write(store, "s1", "alpha", "again")  # updates keep their place
    store.commit("s1", {"new2": Document(2), "new1": Document(1)}, {})
    for view in (store, stores.fresh()):
        assert view.entity_ids("s1") == ["zeta", "alpha", "mid", "new2", "new1"]
        assert view.entity_ids("s2") == ["only"]
        assert view.entity_ids("empty") == []


def test_stored_documents_do_not_alias_caller_objects(stores: Stores) -> None:
    value: dict[str, Any] = {"list": [1]}
    [c] = stores.store.commit("s", {"a": Document(value)}, {})
    value["list"].append(2)
    assert stores.store.load("s", "a") == Document({"list": [1]}, version=1)
    assert c.after.value == {"list": [1]}


def test_multi_doc_commit_returns_one_change_per_write(stores: Stores) -> None:
    write(stores.store, "s", "a", 1)
    changes = stores.store.commit(
        "s", {"a": Document(2), "b": Document(3)}, {("s", "a"): 1, ("s", "b"): 0}
    )
    assert [(c.entity_id, c.before, c.after) for c in changes] == [
        ("a", Document(1, version=1), Document(2, version=2)),
        ("b", None, Document(3, version=1)),
    ]


def test_blind_write_uses_current_version(stores: Stores) -> None:
    write(stores.store, "s", "a", 1)
    write(stores.store, "s", "a", 2)
    [c] = stores.store.commit("s", {"a": Document(3)}, {})
    assert c.before == Document(2, version=2)
    assert c.after.version == 3


# --------------------------------------------------------------------------- CAS


def test_stale_basis_conflicts_and_changes_nothing(stores: Stores) -> None:
    store = stores.store
    write(store, "s", "a", 1)
    write(store, "s", "a", 2)
    before = stores.snapshot("s")
    with pytest.raises(ConflictError) as info:
        store.commit("s", {"a": Document(99)}, {("s", "a"): 1})
    assert info.value.conflicts == [("s", "a")]
    assert "'a'" in str(info.value) and "version 2" in str(info.value)
    assert stores.snapshot("s") == before
    assert store.load("s", "a") == Document(2, version=2)


def test_basis_zero_conflicts_when_doc_was_created(stores: Stores) -> None:
    write(stores.store, "s", "a", 1)
    with pytest.raises(ConflictError) as info:
        stores.store.commit("s", {"a": Document(2)}, {("s", "a"): 0})
    assert info.value.conflicts == [("s", "a")]
    with pytest.raises(ConflictError):  # and the reverse: read a version that does not exist
        stores.store.commit("s", {"b": Document(2)}, {("s", "b"): 3})
    assert stores.snapshot("s") == {("s", "a"): Document(1, version=1)}


def test_stale_read_only_basis_conflicts(stores: Stores) -> None:
    store = stores.store
    write(store, "other", "r", "read me")
    write(store, "s", "w", 0)
    basis = {("other", "r"): 1, ("s", "w"): 1}
    write(store, "other", "r", "changed")  # someone changed what we read
    before = stores.snapshot("s", "other")
    with pytest.raises(ConflictError) as info:
        store.commit("s", {"w": Document(1)}, basis)
    assert info.value.conflicts == [("other", "r")]
    assert stores.snapshot("s", "other") == before


def test_multi_doc_commit_is_atomic(stores: Stores) -> None:
    store = stores.store
    write(store, "s", "a", "a1")
    write(store, "s", "b", "b1")
    write(store, "x", "c", "c1")
    basis = {("s", "a"): 1, ("s", "b"): 1, ("x", "c"): 1, ("s", "new"): 0}
    write(store, "s", "b", "b2")
    write(store, "x", "c", "c2")
    before = stores.snapshot("s", "x")
    writes = {"a": Document("a2"), "b": Document("b3"), "new": Document("n")}
    with pytest.raises(ConflictError) as info:
        store.commit("s", writes, basis)
    assert info.value.conflicts == [("s", "b"), ("x", "c")]
    assert stores.snapshot("s", "x") == before
    assert store.entity_ids("s") == ["a", "b"]
    # With a fresh basis the same transaction lands whole.
    basis.update({("s", "b"): 2, ("x", "c"): 2})
    changes = store.commit("s", writes, basis)
    assert [c.after.version for c in changes] == [2, 3, 1]
    assert stores.snapshot("s", "x") == {
        ("s", "a"): Document("a2", version=2),
        ("s", "b"): Document("b3", version=3),
        ("s", "new"): Document("n", version=1),
        ("x", "c"): Document("c2", version=2),
    }


def test_threads_never_lose_updates(stores: Stores) -> None:
    store, n, threads = stores.store, 100, 4

    def work() -> None:
        for _ in range(n):
            while True:
                doc = store.load("s", "count")
                count = doc.value if doc is not None else 0
                assert isinstance(count, int)
                try:
                    write(
                        store, "s", "count", count + 1, {("s", "count"): doc.version if doc else 0}
                    )
                    break
                except ConflictError:
                    pass

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert stores.fresh().load("s", "count") == Document(n * threads, version=n * threads)


# --------------------------------------------------------------------------- bad input


class Opaque:
    pass


@pytest.mark.parametrize(
    "bad",
    [
        {"value": math.nan},
        {"value": [1, math.inf]},
        {"value": {1, 2}},
        {"value": Opaque()},
        {"value": {"k": (1, 2)}},
        {"value": {1: "int key"}},
        {"source": {"x": math.nan}},
        {"meta": {"graph": {1, 2}}},
    ],
    ids=["nan", "inf", "set", "object", "tuple", "int-key", "source-nan", "meta-set"],
)
def test_non_json_raises_value_error_and_writes_nothing(
    stores: Stores, bad: dict[str, Any]
) -> None:
    store = stores.store
    write(store, "s", "a", "ok")
    before = stores.snapshot("s")
    kw: dict[str, Any] = {"value": "fine", **bad}
    with pytest.raises(ValueError, match="not"):
        store.commit("s", {"a": Document("good"), "b": Document(**kw)}, {("s", "a"): 1})
    assert stores.snapshot("s") == before
    assert store.load("s", "b") is None
    assert store.poll() == []


def test_non_document_write_is_rejected(stores: Stores) -> None:
    with pytest.raises(TypeError):
        stores.store.commit("s", {"a": {"value": 1}}, {})  # type: ignore[dict-item]
    assert stores.snapshot("s") == {}


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert open_store("memory:").url == "memory:"
    db = tmp_path / "abs.db"
    store = open_store(f"sqlite://{db}")
    assert isinstance(store, SqliteStore)
    assert store.url == f"sqlite://{db}" and store.url.startswith("sqlite:///")
    store.close()
    monkeypatch.chdir(tmp_path)
    rel = open_store("sqlite://sub.db")
    assert rel.url == f"sqlite://{tmp_path / 'sub.db'}"
    rel.close()
    assert (tmp_path / "sub.db").exists()
    for url in ["bogus://x", "", "sqlite:", "sqlite://", "sqlite://:memory:"]:
        with pytest.raises(ValueError, match="url"):
            open_store(url)
    with pytest.raises(ValueError, match=r"bogus://x"):
        open_store("bogus://x")


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        store.load("s", "a")


def test_sqlite_file_layout(tmp_path: Path) -> None:
    """The on-disk format other tools may read: WAL, plain JSON text columns."""
    db = tmp_path / "f.db"
    with SqliteStore(db) as store:
        store.commit("s", {"a": Document({"é": [1.5]}, {"src": 1}, {"graph": {}})}, {})
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute(
            "SELECT space, id, value, source, meta, version FROM documents"
        ).fetchone()
        assert row == ("s", "a", '{"é":[1.5]}', '{"src":1}', '{"graph":{}}', 1)
    finally:
        conn.close()


# --------------------------------------------------------------------------- poll


def test_memory_poll_is_empty() -> None:
    store = MemoryStore()
    write(store, "s", "a", 1)
    assert store.poll() == []


def test_a_store_opened_after_a_release_does_not_reuse_sequence_numbers(tmp_path: Path) -> None:
    """Releasing the rows that carry the newest commits must not rewind the change feed.

    A store opened later starts its feed at the highest sequence number on file; had
    the release taken it away, its commits would reuse numbers a running store has
    already read past, and that store would never see them.
    """
    db = tmp_path / "release.db"
    with SqliteStore(db) as a, SqliteStore(db) as watcher:
        write(a, "s", "kept", 1)
        write(a, "s", "child", 2)  # the newest commit
        assert [c.entity_id for c in watcher.poll()] == ["kept", "child"]
        assert a.release("s", ["child"]) == 1
        with SqliteStore(db) as late:  # a process started after the release
            made = write(late, "s", "new", 3)
        assert watcher.poll() == [Change("s", "new", None, made.after)]


def test_poll_reports_other_objects_commits(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with SqliteStore(db) as a, SqliteStore(db) as b:
        assert b.poll() == []
        c1 = write(a, "s", "doc", {"v": 1}, meta={"m": 1})
        assert a.poll() == []  # own commits are not news
        assert b.poll() == [Change("s", "doc", None, c1.after)]
        assert b.poll() == []
        assert b.load("s", "doc") == c1.after

        c2 = write(a, "s", "doc", {"v": 2})
        c3 = write(a, "t", "other", "x")
        assert a.poll() == []
        assert b.poll() == [
            Change("s", "doc", c1.after, c2.after),
            Change("t", "other", None, c3.after),
        ]
        # And the other way round; A had seen doc at c2.
        c4 = write(b, "s", "doc", {"v": 3})
        assert b.poll() == []
        assert a.poll() == [Change("s", "doc", c2.after, c4.after)]
        assert a.load("s", "doc") == Document({"v": 3}, version=3)


def test_poll_coalesces_to_latest_and_skips_seen_versions(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with SqliteStore(db) as a, SqliteStore(db) as b:
        c1 = write(a, "s", "doc", 1)
        assert b.load("s", "doc") == c1.after  # a cache miss reads the file
        assert b.poll() == []  # already seen through load
        write(a, "s", "doc", 2)
        c3 = write(a, "s", "doc", 3)
        assert b.poll() == [Change("s", "doc", c1.after, c3.after)]


def test_load_is_cached_until_poll(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with SqliteStore(db) as a, SqliteStore(db) as b:
        write(a, "s", "doc", 1)
        assert b.load("s", "doc") == Document(1, version=1)
        assert b.load("s", "absent") is None
        write(a, "s", "doc", 2)
        write(a, "s", "absent", "now here")
        assert b.load("s", "doc") == Document(1, version=1)  # cache: what B knows
        assert b.load("s", "absent") is None
        assert len(b.poll()) == 2
        assert b.load("s", "doc") == Document(2, version=2)
        assert b.load("s", "absent") == Document("now here", version=1)


def test_conflict_refreshes_cache_and_next_poll_reports(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with SqliteStore(db) as a, SqliteStore(db) as b:
        c1 = write(a, "s", "doc", 1)
        assert b.load("s", "doc") == c1.after
        c2 = write(a, "s", "doc", 2)
        with pytest.raises(ConflictError):
            b.commit("s", {"doc": Document(10)}, {("s", "doc"): 1})
        assert b.load("s", "doc") == c2.after  # a retry reads the winner's data
        assert b.poll() == [Change("s", "doc", c1.after, c2.after)]  # nothing swallowed
        assert b.poll() == []
        [c3] = b.commit("s", {"doc": Document(3)}, {("s", "doc"): 2})
        assert c3.before == c2.after
        assert a.poll() == [Change("s", "doc", c2.after, c3.after)]


def test_commit_absorbs_foreign_changes_for_later_poll(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with SqliteStore(db) as a, SqliteStore(db) as b:
        c1 = write(a, "s", "doc", 1)
        b.load("s", "doc")
        c2 = write(a, "s", "doc", 2)
        cx = write(a, "s", "x", "x")
        [c3] = b.commit("s", {"doc": Document(3)}, {})  # blind write over A's change
        assert (c3.before, c3.after) == (c2.after, Document(3, version=3))
        assert b.poll() == [
            Change("s", "doc", c1.after, c2.after),
            Change("s", "x", None, cx.after),
        ]
        assert b.poll() == []


def test_reopened_store_sees_existing_data(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with SqliteStore(db) as a:
        write(a, "s", "doc", {"k": 1}, source="src", meta={"graph": {"n": 1}})
    with SqliteStore(f"sqlite://{db}") as b:
        assert b.load("s", "doc") == Document({"k": 1}, "src", {"graph": {"n": 1}}, 1)
        assert b.poll() == []  # the feed starts at open time
        assert b.entity_ids("s") == ["doc"]


def test_poll_without_changes_is_one_cheap_query(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with SqliteStore(db) as a, SqliteStore(db) as b:
        for i in range(200):
            write(a, "s", f"d{i}", i)
        b.poll()
        statements: list[str] = []
        b._connection().set_trace_callback(statements.append)
        assert b.poll() == []
        b._connection().set_trace_callback(None)
        # nothing committed since: one pragma, no table read (issue 19: a check per read)
        assert statements == ["PRAGMA data_version"]
        write(a, "s", "d0", -1)
        b._connection().set_trace_callback(statements.append)
        assert [c.entity_id for c in b.poll()] == ["d0"]
        b._connection().set_trace_callback(None)
        feed = [s for s in statements if "documents" in s]
        assert len(feed) == 1
        plan = b._connection().execute("EXPLAIN QUERY PLAN " + feed[0]).fetchall()
        assert any("documents_by_seq" in str(step) for step in plan), plan


# --------------------------------------------------------------------------- processes


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def test_processes_never_lose_updates(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    SqliteStore(db).close()  # create the file once; workers then race only on commits
    n, procs = 200, [_spawn("counter", str(tmp_path / "shared.db"), "200") for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for p in procs:  # release them together so they really contend
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    conflicts = 0
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.startswith("done "), (out, err)
        conflicts += int(out.split()[1])
    assert conflicts > 0  # the workers did race, so the CAS was exercised
    with SqliteStore(db) as store:
        doc = store.load("test", "counter")
    assert doc == Document({"count": 4 * n}, version=4 * n)


def _read_acks(proc: subprocess.Popen[str], want: int) -> list[int]:
    assert proc.stdout is not None
    acks: list[int] = []
    deadline = time.monotonic() + 30
    while len(acks) < want:
        line = proc.stdout.readline()
        assert line.endswith("\n"), proc.stderr.read() if proc.stderr else ""
        acks.append(int(line))
        assert time.monotonic() < deadline
    return acks


def test_sigkill_never_tears_a_document(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    last_ack = 0
    for round_ in range(3):
        proc = _spawn("writer", str(db))
        try:
            acks = _read_acks(proc, 25 + 10 * round_)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            # (``read`` drains what ``readline`` buffered already; ``communicate`` would
            # read the pipe underneath and lose those lines)
            assert proc.stdout is not None
            rest = proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # Lines that made it out before the kill are acknowledged too; a cut-off tail is not.
        acks += [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]
        assert acks == list(range(last_ack + 1, last_ack + 1 + len(acks)))
        last_ack = acks[-1]

        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        with SqliteStore(db) as store:
            doc = store.load("test", "torn")
        assert doc is not None
        k = doc.version
        assert k >= last_ack
        assert doc.value == {"n": k, "copy": k, "pad": [k] * 2000}
        assert doc.meta == {"k": k}
        last_ack = k  # the next writer continues from whatever landed


def test_concurrent_first_open_of_a_new_file(tmp_path: Path) -> None:
    """Several objects creating the same file at once must all end up on one schema."""
    db = tmp_path / "new.db"
    errors: list[BaseException] = []
    opened: list[SqliteStore] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            s = SqliteStore(db)
            with lock:
                opened.append(s)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        write(opened[0], "s", "a", 1)
        assert all(s.load("s", "a") == Document(1, version=1) for s in opened)
    finally:
        for s in opened:
            s.close()
