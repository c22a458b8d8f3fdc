"""Group commit (``cellkernel/store/writeback.py``, issue 20): one store commit per settle.

On SQLite the derived writes of a settle land in one file transaction at its
end; the user's write is durable when ``set()`` returns.  A SIGKILL between the
two loses only derived values (all of them, never some), and resuming
recomputes them.  A flush that loses to another writer re-runs its nodes; one
the store refuses is recorded on them and leaves the runtime working.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellkernel import Runtime, lift, pattern
from cellkernel.errors import StoreError
from cellkernel.store.sqlite import SqliteStore

WORKER = Path(__file__).resolve().parents[1] / "helpers" / "writeback_worker.py"
REPO = Path(__file__).resolve().parents[2]

#: called by ``poke`` on its next run, then forgotten
HOOKS: list[Callable[[], object]] = []


@lift
def triple(x: int) -> int:
    return 3 * x


@lift
def poke(a: int) -> int:
    while HOOKS:
        HOOKS.pop()()
    return a + 1


@pattern
def Poked(x: int = 0) -> Any:
    a = triple(x)
    b = poke(a)
    return {"x": x, "a": a, "b": b}


def _doc_id(result: Any, key: str) -> str:
    return str(result.key(key).resolve_as_cell().entity_id)


def _seqs(db: Path, ids: list[str]) -> list[int]:
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute(
            f"SELECT id, seq FROM documents WHERE id IN ({','.join('?' * len(ids))})", ids))
    return [int(rows[i]) for i in ids]


def test_memory_store_commits_directly_sqlite_groups() -> None:
    assert Runtime().writeback is None  # nothing to gain: a memory commit is a dict update
    assert SqliteStore.group_commit is True


def test_a_settle_lands_its_derived_writes_in_one_commit_after_the_user_write(
    tmp_path: Path,
) -> None:
    db = tmp_path / "g.db"
    rt = Runtime(store=f"sqlite:///{db}")
    result = rt.run(Poked, {"x": 1}, cause="grouped")
    ids = [_doc_id(result, k) for k in ("x", "a", "b")]
    for value in (2, 3):
        result.key("x").set(value)
        assert (result.key("a").get(), result.key("b").get()) == (3 * value, 3 * value + 1)
        x_seq, a_seq, b_seq = _seqs(db, ids)
        assert a_seq == b_seq  # both lifts' writes: one file transaction
        assert a_seq == x_seq + 1  # right after the user's own commit, nothing in between
    assert result.entity_id is not None
    other = Runtime(store=f"sqlite:///{db}")  # another store object on the file sees it all
    assert other.cell_at(result.entity_id).get() == {"x": 3, "a": 9, "b": 10}
    other.close()
    rt.close()


def _worker(mode: str, db: Path, *extra: str, kill_at: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("WRITEBACK_KILL_AT", None)
    if kill_at is not None:
        env["WRITEBACK_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, str(WORKER), mode, str(db), *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def test_sigkill_between_the_user_write_and_the_group_commit_loses_only_derived_values(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.db"
    started = _worker("start", db, kill_at="11")  # x=5: a=10 and b=11 land, then c kills
    assert started.returncode == -signal.SIGKILL, started.stderr
    first = json.loads(started.stdout.splitlines()[0])
    assert (first["x"], first["a"], first["b"], first["c"]) == (1, 2, 3, 3)
    assert "survived" not in started.stdout
    # the user's write is durable; none of the settle's derived writes reached the file
    read = _worker("read", db, first["id"])
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == {"x": 5, "a": 2, "b": 3, "c": 3}
    # a fresh process resumes the instance: every node recomputes from the durable input
    resumed = _worker("resume", db)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"x": 5, "a": 10, "b": 11, "c": 11}


def test_a_flush_that_loses_to_another_writer_reruns_its_nodes(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    rt = Runtime(store=f"sqlite:///{db}")
    other = Runtime(store=f"sqlite:///{db}")
    result = rt.run(Poked, {"x": 1}, cause="contended")
    a_id = _doc_id(result, "a")
    # mid-settle, after ``triple`` landed a=6 in the layer, another writer commits to a
    HOOKS.append(lambda: other.cell_at(a_id).set(999))
    result.key("x").set(2)
    assert not HOOKS
    assert not rt.errors  # the lost flush re-ran the writers: nothing to report
    assert result.get() == {"x": 2, "a": 6, "b": 7}
    assert other.cell_at(a_id).get() == 6  # the recomputed value is the one on file
    other.close()
    rt.close()


def test_a_flush_the_store_refuses_is_recorded_and_the_runtime_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    rt = Runtime(store=SqliteStore(db, busy_timeout=0.2))
    result = rt.run(Poked, {"x": 1}, cause="refused")
    holder = sqlite3.connect(db, isolation_level=None)

    def lock() -> None:
        holder.execute("BEGIN IMMEDIATE")  # the file's write lock, held past the flush

    HOOKS.append(lock)
    try:
        result.key("x").set(2)  # the user's write lands; the group commit times out
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    failed = {e.name for e in rt.errors}
    assert failed == {"triple", "poke"}
    assert all(isinstance(e.error, StoreError) for e in rt.errors)
    assert result.entity_id is not None
    fresh = Runtime(store=f"sqlite:///{db}")
    assert fresh.cell_at(result.entity_id).get() == {"x": 2, "a": 3, "b": 4}  # nothing derived
    fresh.close()
    result.key("x").set(4)  # the lock is gone: the runtime goes on
    assert result.get() == {"x": 4, "a": 12, "b": 13}
    rt.close()
