"""``SqliteStore.commit_landed``: the write-back layer's group commit (issue 20).

The same compare-and-swap as ``commit``, written as version-checked rows
without a version query first: a stale basis is still a ``ConflictError``
naming exactly the stale documents, and nothing of the commit lands.  Other
store objects on the file see the commit through their change feed.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cellkernel import Runtime
from cellkernel.errors import ConflictError
from cellkernel.store import sqlite as sqlite_module
from cellkernel.store.documents import Document
from cellkernel.store.memory import MemoryStore
from cellkernel.store.sqlite import SqliteStore
from cellkernel.store.writeback import WriteBack

SPACE = "s"


def _stored(db: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return {i: (v, n) for i, v, n in conn.execute("SELECT id, value, version FROM documents")}


def _seed(db: Path, n: int = 3) -> SqliteStore:
    store = SqliteStore(db)
    store.commit(SPACE, {f"d{i}": Document(i) for i in range(n)}, {})
    return store


def _landed(store: SqliteStore, values: dict[str, Any]) -> dict[tuple[str, str], Document]:
    out: dict[tuple[str, str], Document] = {}
    for entity_id, value in values.items():
        before = store.load(SPACE, entity_id)
        out[(SPACE, entity_id)] = Document(value, None, {},
                                           (before.version if before else 0) + 1)
    return out


def test_a_landed_commit_writes_every_row_and_others_see_it(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store = _seed(db)
    other = SqliteStore(db)
    assert other.load(SPACE, "d1") == Document(1, None, {}, 1)
    landed = _landed(store, {"d0": 10, "d1": 11, "new": 12})
    store.commit_landed(SPACE, landed)
    assert _stored(db) == {"d0": ("10", 2), "d1": ("11", 2), "d2": ("2", 1), "new": ("12", 1)}
    assert store.load(SPACE, "d1") is landed[(SPACE, "d1")]  # the cache holds them as landed
    seen = {(c.entity_id, c.before.version if c.before else 0, c.after.version)
            for c in other.poll()}
    assert seen == {("d1", 1, 2), ("d0", 0, 2), ("new", 0, 1)}  # (d0 was not cached there)
    assert other.load(SPACE, "d1") == Document(11, None, {}, 2)
    store.close()
    other.close()


def test_a_stale_basis_conflicts_naming_only_the_stale_document_and_lands_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "c.db"
    store = _seed(db)
    landed = _landed(store, {"d0": 10, "d1": 11, "d2": 12})
    other = SqliteStore(db)
    other.commit(SPACE, {"d1": Document(99)}, {(SPACE, "d1"): 1})  # d1 moves to version 2
    before = _stored(db)
    with pytest.raises(ConflictError) as caught:
        store.commit_landed(SPACE, landed)
    # d0 was written first in the same statement batch: it is not a conflict
    assert caught.value.conflicts == [(SPACE, "d1")]
    assert "'d1' in space 's' is at version 2, transaction read 1" in str(caught.value)
    assert _stored(db) == before  # all or nothing
    assert store.load(SPACE, "d1") == Document(99, None, {}, 2)  # the winner, from the feed
    assert store.load(SPACE, "d0") == Document(0, None, {}, 1)
    store.close()
    other.close()


def test_a_document_created_meanwhile_conflicts_and_lands_nothing(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    store = _seed(db)
    landed = _landed(store, {"d0": 10, "fresh": 1})
    other = SqliteStore(db)
    other.commit(SPACE, {"fresh": Document("theirs")}, {(SPACE, "fresh"): 0})
    with pytest.raises(ConflictError) as caught:
        store.commit_landed(SPACE, landed)
    assert caught.value.conflicts == [(SPACE, "fresh")]
    assert _stored(db)["d0"] == ("0", 1) and _stored(db)["fresh"] == ('"theirs"', 1)
    store.close()
    other.close()


def test_a_landed_commit_after_unseen_commits_is_ordered_after_them(tmp_path: Path) -> None:
    """Its rows carry a sequence past every commit on file, so a change feed never skips it."""
    db = tmp_path / "q.db"
    store = _seed(db)
    watcher = SqliteStore(db)
    watcher.poll()
    landed = _landed(store, {"d0": 10})
    other = SqliteStore(db)
    other.commit(SPACE, {"d2": Document(22)}, {(SPACE, "d2"): 1})  # our store has not seen it
    assert {c.entity_id for c in watcher.poll()} == {"d2"}  # the watcher's feed is past it
    store.commit_landed(SPACE, landed)
    assert [(c.entity_id, c.after.value) for c in watcher.poll()] == [("d0", 10)]
    with sqlite3.connect(db) as conn:
        seqs = dict(conn.execute("SELECT id, seq FROM documents"))
    assert seqs["d0"] > seqs["d2"]
    for s in (store, watcher, other):
        s.close()


def test_a_landed_document_of_any_json_is_checked_and_encoded(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    store = _seed(db)
    doc = Document({"a": [1, 2.5, "é"]}, {"src": True}, {"k": "v"}, 2)
    store.commit_landed(SPACE, {(SPACE, "d0"): doc})
    fresh = SqliteStore(db)
    assert fresh.load(SPACE, "d0") == doc
    with pytest.raises(ValueError, match="not normalised JSON"):
        store.commit_landed(SPACE, {(SPACE, "d1"): Document((1, 2), None, {}, 2),  # type: ignore[arg-type]
                                    (SPACE, "d2"): Document(5, None, {}, 2)})
    assert _stored(db)["d2"] == ("2", 1)  # nothing of it landed
    with pytest.raises(TypeError, match="must be str"):
        store.commit_landed(SPACE, {(SPACE, 3): Document(5, None, {}, 2)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="not in space"):
        store.commit_landed(SPACE, {("elsewhere", "d1"): Document(5, None, {}, 2)})
    store.close()
    fresh.close()


def test_the_layer_flushes_each_space_with_the_version_it_replaces(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    rt = Runtime(store=f"sqlite:///{db}")
    store = rt.store
    assert isinstance(store, SqliteStore)
    store.commit(SPACE, {"d0": Document(0)}, {})
    layer = WriteBack(store)
    first = store.load(SPACE, "d0")
    [change] = layer.land_value(SPACE, "d0", first, 1, [])
    assert change.after.version == 2
    [again] = layer.land_value(SPACE, "d0", change.after, 2, [])  # rewritten: same version
    assert again.after.version == 2
    layer.land_value("t", "x", None, 7, [])
    with pytest.raises(ConflictError):  # a stale read of the landed document
        layer.land_value(SPACE, "d0", change.after, 3, [])
    layer.flush()
    assert not layer
    assert store.load(SPACE, "d0") == Document(2, None, {}, 2)
    assert SqliteStore(db).load("t", "x") == Document(7, None, {}, 1)
    rt.close()


def test_cached_loads_need_no_lock_and_survive_concurrent_eviction(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SqliteStore(db, cache_size=50)
    store.commit(SPACE, {f"e{i}": Document(i) for i in range(200)}, {})
    assert store.load(SPACE, "e1") == Document(1, None, {}, 1)
    with store._lock:  # held by this thread: another thread's cached load does not wait
        seen: list[Document | None] = []
        reader = threading.Thread(target=lambda: seen.append(store.load(SPACE, "e1")))
        reader.start()
        reader.join(timeout=5)
        assert seen == [Document(1, None, {}, 1)]
    errors: list[BaseException] = []

    def churn(offset: int) -> None:
        try:
            for n in range(2000):
                i = (n * 7 + offset) % 200
                doc = store.load(SPACE, f"e{i}")
                assert doc is not None and doc.value == i
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store._cache) <= 50
    store.close()


def test_the_layer_checks_stored_reads_against_the_store_cache(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    store = SqliteStore(db)
    store.commit(SPACE, {"in": Document(1), "out": Document(0)}, {})
    layer = WriteBack(store)
    seen_in, seen_out = store.load(SPACE, "in"), store.load(SPACE, "out")
    assert seen_in is not None and seen_out is not None
    same_version = Document(seen_in.value, None, {}, seen_in.version)  # a fresh equal copy
    layer.land_value(SPACE, "out", seen_out, 2, [((SPACE, "in"), same_version)])
    layer.discard()
    other = SqliteStore(db)
    other.commit(SPACE, {"in": Document(5)}, {(SPACE, "in"): 1})
    store.poll()  # the cache now holds in@2
    with pytest.raises(ConflictError) as caught:
        layer.land_value(SPACE, "out", seen_out, 2, [((SPACE, "in"), seen_in)])
    assert caught.value.conflicts == [(SPACE, "in")]
    assert not layer
    store._cache.clear()  # not cached: the layer asks the store
    with pytest.raises(ConflictError):
        layer.land_value(SPACE, "out", seen_out, 2, [((SPACE, "in"), seen_in)])
    assert layer.load(SPACE, "in") == Document(5, None, {}, 2)
    fresh = store.load(SPACE, "in")
    assert fresh is not None
    [change] = layer.land_value(SPACE, "out", seen_out, 6, [((SPACE, "in"), fresh)])
    assert change.after == Document(6, None, {}, 2)
    store.close()
    other.close()


def test_a_row_id_given_to_another_document_never_writes_it(tmp_path: Path) -> None:
    """Updates go by the row id a read saw; one deleted and reused is caught, then by key."""
    db = tmp_path / "r.db"
    store = SqliteStore(db)
    store.commit(SPACE, {"keep": Document(0)}, {})
    store.commit_landed(SPACE, {(SPACE, "x"): Document(1, None, {}, 1)})  # created here
    other = SqliteStore(db)
    assert other.release(SPACE, ["x"]) == 1  # another process deletes x (no feed entry) ...
    other.commit(SPACE, {"y": Document("y")}, {})  # ... y takes x's row id ...
    other.commit(SPACE, {"x": Document(1)}, {})  # ... and x is made again, at version 1
    with sqlite3.connect(db) as conn:
        ids = dict(conn.execute("SELECT id, n FROM documents"))
    assert store._rowids[(SPACE, "x")] == ids["y"]  # what this store still believes
    store.commit_landed(SPACE, {(SPACE, "x"): Document(2, None, {}, 2)})
    assert _stored(db) == {"keep": ("0", 1), "x": ("2", 2), "y": ('"y"', 1)}
    fresh = SqliteStore(db)
    assert fresh.load(SPACE, "y") == Document("y", None, {}, 1)
    assert fresh.load(SPACE, "x") == Document(2, None, {}, 2)
    # and by row id the compare-and-swap still holds: a stale basis lands nothing
    assert fresh.load(SPACE, "keep") is not None
    assert set(fresh._rowids) == {(SPACE, "keep"), (SPACE, "x"), (SPACE, "y")}
    other.poll()
    other.commit(SPACE, {"x": Document(9)}, {(SPACE, "x"): 2})
    with pytest.raises(ConflictError) as caught:
        fresh.commit_landed(SPACE, {(SPACE, "keep"): Document(1, None, {}, 2),
                                    (SPACE, "x"): Document(3, None, {}, 3)})
    assert caught.value.conflicts == [(SPACE, "x")]
    assert _stored(db) == {"keep": ("0", 1), "x": ("9", 3), "y": ('"y"', 1)}
    assert fresh.load(SPACE, "x") == Document(9, None, {}, 3)
    for s in (store, other, fresh):
        s.close()


def test_the_layer_loads_by_key_what_it_loads_by_name(tmp_path: Path) -> None:
    """``load_key`` (a plan's load) agrees with ``load``: landed, cached, on file, absent."""
    db = tmp_path / "k.db"
    store = _seed(db, 3)
    layer = WriteBack(store)
    layer.land_value(SPACE, "d0", store.load(SPACE, "d0"), 10, [])  # landed here
    store.load(SPACE, "d1")  # cached by the store
    SqliteStore(db).commit(SPACE, {"d9": Document(9)}, {})  # on file, never loaded here
    for entity_id in ("d0", "d1", "d2", "d9", "absent"):
        by_name = layer.load(SPACE, entity_id)
        assert layer.load_key((SPACE, entity_id)) == by_name
    assert layer.load_key((SPACE, "d0")) == Document(10, None, {}, 2)
    assert layer.load_key((SPACE, "absent")) is None
    store.close()


# --------------------------------------------------------------------------- land_value


def _land_outcomes(store: Any, steps: list[tuple[str, int, bool, str | None]]
                   ) -> list[tuple[str, Any]]:
    """Each step lands ``value`` in ``target`` from a fresh or a stale read of it and of
    another document it read (or none); a stale read is one taken before the previous step."""
    outcomes: list[tuple[str, Any]] = []
    previous: dict[str, Document | None] | None = None
    for target, value, stale, also in steps:
        now = {name: store.load(SPACE, name) for name in "abc"}
        seen = previous if stale and previous is not None else now
        before = seen[target]
        read = [((SPACE, also), seen[also])] if also is not None else []
        try:
            changes = store.land_value(SPACE, target, before, value, read)
        except ConflictError as exc:
            outcomes.append(("conflict", sorted(set(exc.conflicts))))
        else:
            outcomes.append(("landed", [(c.entity_id, c.after.value, c.after.version)
                                        for c in changes]))
        previous = now
    return outcomes


def test_sqlite_land_value_matches_the_memory_store_over_random_steps(tmp_path: Path) -> None:
    rng = random.Random(20)
    kinds: set[str] = set()
    for case in range(12):
        steps = [(rng.choice("abc"), rng.randrange(100), rng.random() < 0.3,
                  rng.choice(["a", "b", "c", None])) for _ in range(20)]
        memory = MemoryStore()
        sqlite = SqliteStore(tmp_path / f"v{case}.db")
        outcomes = _land_outcomes(sqlite, steps)
        assert outcomes == _land_outcomes(memory, steps)
        kinds.update(kind for kind, _ in outcomes)
        for name in "abc":
            assert sqlite.load(SPACE, name) == memory.load(SPACE, name)
        assert ("conflict", [(SPACE, "a")]) in _land_outcomes(sqlite, [("a", 1, False, None),
                                                                      ("a", 2, True, None)])
        sqlite.close()
    assert kinds == {"landed", "conflict"}  # the steps met both outcomes


def test_sqlite_land_value_against_a_stale_read_lands_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = _seed(db)
    other = SqliteStore(db)
    read = [((SPACE, "d2"), store.load(SPACE, "d2"))]
    before = store.load(SPACE, "d0")
    other.commit(SPACE, {"d2": Document(42)}, {(SPACE, "d2"): 1})  # the read document moves
    stored = _stored(db)
    with pytest.raises(ConflictError) as caught:
        store.land_value(SPACE, "d0", before, 7, read)
    assert caught.value.conflicts == [(SPACE, "d2")]
    assert _stored(db) == stored  # nothing landed
    other.commit(SPACE, {"new": Document(1)}, {})  # created meanwhile: a conflict, too
    with pytest.raises(ConflictError):
        store.land_value(SPACE, "new", None, 2, [])
    assert _stored(db)["new"] == ("1", 1)
    (change,) = store.land_value(SPACE, "d0", store.load(SPACE, "d0"), 7,
                                 [((SPACE, "d2"), store.load(SPACE, "d2"))])
    assert (change.before, change.after) == (before, Document(7, None, {}, 2))
    assert {(c.entity_id, c.after.value) for c in other.poll()} >= {("d0", 7)}
    store.close()
    other.close()


def test_a_scalar_set_on_sqlite_lands_without_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "u.db"
    rt = Runtime(store=f"sqlite:///{db}")
    cell = rt.get_cell("count")
    cell.set(1)
    landed: list[Any] = []
    real = SqliteStore.land_value

    def spy(self: SqliteStore, *args: Any) -> Any:
        landed.append(args[1:4])
        return real(self, *args)

    monkeypatch.setattr(SqliteStore, "land_value", spy)
    monkeypatch.setattr(SqliteStore, "commit_owned", None)  # the transaction's commit: unused
    cell.set(2)
    assert [(entity_id, value) for entity_id, _before, value in landed] == [
        (cell.entity_id, 2)]
    other = Runtime(store=f"sqlite:///{db}")
    assert other.get_cell("count").get() == 2  # durable when set() returned
    other.close()
    rt.close()


def test_a_new_file_gets_small_pages_and_an_old_file_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def page_size(db: Path) -> int:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])

    SqliteStore(tmp_path / "new.db").close()
    assert page_size(tmp_path / "new.db") == sqlite_module.PAGE_SIZE == 1024
    monkeypatch.setattr(sqlite_module, "PAGE_SIZE", 4096)  # a file made before the change
    old = SqliteStore(tmp_path / "old.db")
    old.commit(SPACE, {"x": Document([1, 2])}, {})
    old.close()
    monkeypatch.undo()
    store = SqliteStore(tmp_path / "old.db")
    assert page_size(tmp_path / "old.db") == 4096
    assert store.load(SPACE, "x") == Document([1, 2], None, {}, 1)
    store.land_value(SPACE, "y", None, "big " * 5000, [])  # a value over many pages
    store.close()
    assert SqliteStore(tmp_path / "old.db").load(SPACE, "y") == Document(
        "big " * 5000, None, {}, 1)


def test_two_processes_setting_one_cell_land_every_write_exactly_once(tmp_path: Path) -> None:
    """Scalar ``set()`` from two processes at once: each write lands once (a lost
    compare-and-swap falls back to the general write, which retries), none is lost."""
    db = tmp_path / "two.db"
    Runtime(store=f"sqlite:///{db}").close()
    script = (
        "import sys\n"
        "from cellkernel import Runtime\n"
        "rt = Runtime(store=f'sqlite:///{sys.argv[1]}')\n"
        "cell = rt.get_cell('shared')\n"
        "for i in range(300):\n"
        "    cell.set(int(sys.argv[2]) * 1000 + i)\n"
        "rt.close()\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(db), str(k)],
                                stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    for worker in workers:
        _out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    rt = Runtime(store=f"sqlite:///{db}")
    cell = rt.get_cell("shared")
    assert cell.get() in (1299, 2299)  # one of the two last writes
    (version,) = {v for i, (_value, v) in _stored(db).items() if i == cell.entity_id}
    assert version == 600  # every write changed the value: one version each
    rt.close()
