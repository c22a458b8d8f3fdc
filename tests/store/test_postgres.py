"""PostgresStore against a real server (issue 22): the SQLite contract, shared live.

The server is started once per session by ``postgres_server.py`` (Debian's
``initdb`` + ``pg_ctl`` on 127.0.0.1, a free port, run as ``postgres`` when we
are root); every test gets a database of its own.  Without server binaries
the tests skip, saying why.  Tests assert behaviour only; the live-arrival
test prints its latency percentiles.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# ``postgres_server`` is imported under that name here and in its worker processes,
# whether or not this directory is a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import postgres_server as pgs

from cellkernel import ConflictError, Runtime, WriteIsolationError, lift, pattern
from cellkernel.store.documents import Change, Document
from cellkernel.store.postgres import (
    PostgresAuthError,
    PostgresDataError,
    PostgresStore,
    PostgresUnavailableError,
    PostgresUrlError,
)
from cellkernel.store.urls import open_store

psycopg = pytest.importorskip("psycopg", reason="cellkernel[postgres] (psycopg) is not installed")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgs.PostgresServer]:
    with pgs.running_server() as server:
        if isinstance(server, str):
            pytest.skip(server)
        yield server


@pytest.fixture
def pg_url(pg_server: pgs.PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.create_database()


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """Stores and runtimes a test opens, closed at its end whatever happens."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.close()


def store(opened: list[Any], url: str) -> PostgresStore:
    s = PostgresStore(url)
    opened.append(s)
    return s


def runtime(opened: list[Any], url: str) -> Runtime:
    rt = Runtime(url)
    opened.append(rt)
    return rt


def write(s: PostgresStore, entity_id: str, value: Any, space: str = "s", **kw: Any) -> Change:
    """A read-modify-write of one document against the version the store shows."""
    doc = s.load(space, entity_id)
    [change] = s.commit(
        space, {entity_id: Document(value, **kw)}, {(space, entity_id): doc.version if doc else 0}
    )
    return change


def dump(url: str) -> list[tuple[Any, ...]]:
    """Every row of the database's documents, as stored, and the feed position."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT space, id, value, source, meta, version, seq FROM cellkernel_documents "
            "ORDER BY n"
        ).fetchall()
        feed = conn.execute("SELECT seq FROM cellkernel_feed").fetchall()
    return [*rows, *feed]


def _rows_and_feed(url: str) -> tuple[int, int]:
    """How many documents the database holds, and its feed position (commits so far)."""
    with psycopg.connect(url, autocommit=True) as conn:
        [rows] = conn.execute("SELECT count(*) FROM cellkernel_documents").fetchone() or (0,)
        [seq] = conn.execute("SELECT seq FROM cellkernel_feed").fetchone() or (0,)
    return int(rows), int(seq)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# =========================================================================== the store contract


def test_round_trip_versions_meta_source_and_order(pg_url: str, opened: list[Any]) -> None:
    a = store(opened, pg_url)
    assert a.load("s", "a") is None
    c1 = write(a, "a", {"x": [1, 2.5, "é", None, True]}, source={"from": "b"},
               meta={"graph": {"nodes": [1]}})
    assert c1 == Change("s", "a", None, Document(
        {"x": [1, 2.5, "é", None, True]}, {"from": "b"}, {"graph": {"nodes": [1]}}, 1))
    c2 = write(a, "a", 7)
    assert (c2.before, c2.after) == (c1.after, Document(7, None, {}, 2))
    for eid in ["zeta", "alpha"]:
        write(a, eid, eid)
    write(a, "only", 1, space="s2")
    a.commit("s", {"new2": Document(2), "new1": Document(1)}, {})
    [blind] = a.commit("s", {"a": Document(8, version=41)}, {})  # written version is ignored
    assert (blind.before, blind.after.version) == (c2.after, 3)
    fresh = store(opened, pg_url)  # another object: nothing from the first one's cache
    for view in (a, fresh):
        assert view.load("s", "a") == Document(8, None, {}, 3)
        assert view.load("s", "missing") is None and view.load("other", "a") is None
        assert view.entity_ids("s") == ["a", "zeta", "alpha", "new2", "new1"]
        assert view.entity_ids("s2") == ["only"] and view.entity_ids("none") == []
    assert isinstance(open_store(pg_url), PostgresStore)
    alias = open_store(pg_url.replace("postgresql://", "postgres://"))
    opened.append(alias)
    assert isinstance(alias, PostgresStore) and alias.load("s", "a") == Document(8, None, {}, 3)


def test_stale_basis_conflicts_whole_and_lands_nothing(pg_url: str, opened: list[Any]) -> None:
    a, b = store(opened, pg_url), store(opened, pg_url)
    write(a, "a", "a1")
    write(a, "b", "b1")
    write(a, "c", "c1", space="x")
    basis = {("s", "a"): 1, ("s", "b"): 1, ("x", "c"): 1, ("s", "new"): 0}
    write(b, "b", "b2")  # another writer moves what the transaction read
    write(b, "c", "c2", space="x")
    before = dump(pg_url)
    writes = {"a": Document("a2"), "b": Document("b3"), "new": Document("n")}
    with pytest.raises(ConflictError) as info:
        a.commit("s", writes, basis)
    assert info.value.conflicts == [("s", "b"), ("x", "c")]
    assert "version 2" in str(info.value)
    assert dump(pg_url) == before
    assert a.load("s", "b") == Document("b2", version=2)  # the retry reads the winner's data
    basis.update({("s", "b"): 2, ("x", "c"): 2})
    assert [c.after.version for c in a.commit("s", writes, basis)] == [2, 3, 1]
    with pytest.raises(ConflictError):  # basis 0 for a document that exists
        a.commit("s", {"a": Document(0)}, {("s", "a"): 0})
    with pytest.raises(ConflictError):  # a version that never existed
        a.commit("s", {"z": Document(0)}, {("s", "z"): 3})


def test_poll_reports_other_writers_once_from_the_feed(pg_url: str, opened: list[Any]) -> None:
    a, b = store(opened, pg_url), store(opened, pg_url)
    assert b.poll() == []
    c1 = write(a, "doc", {"v": 1}, meta={"m": 1})
    assert a.poll() == []  # own commits are not news
    assert b.poll() == [Change("s", "doc", None, c1.after)]
    assert b.poll() == []
    write(a, "doc", 2)
    c3 = write(a, "doc", 3)
    cx = write(a, "x", "x", space="t")
    assert b.poll() == [Change("s", "doc", c1.after, c3.after), Change("t", "x", None, cx.after)]
    # a conflict refreshes the cache and the change is still reported, once
    c4 = write(a, "doc", 4)
    with pytest.raises(ConflictError):
        b.commit("s", {"doc": Document(10)}, {("s", "doc"): 3})
    assert b.load("s", "doc") == c4.after
    assert b.poll() == [Change("s", "doc", c3.after, c4.after)]
    # changes absorbed inside a commit are held for the next poll
    c5 = write(a, "doc", 5)
    [mine] = b.commit("t", {"y": Document("y")}, {})
    assert mine.after.version == 1
    assert b.poll() == [Change("s", "doc", c4.after, c5.after)]
    assert a.poll() == [Change("t", "y", None, mine.after)]
    late = store(opened, pg_url)
    assert late.poll() == []  # the feed starts at open time
    assert late.load("s", "doc") == c5.after


def test_schema_is_created_once_and_versioned(pg_server: pgs.PostgresServer) -> None:
    url = pg_server.create_database()
    errors: list[BaseException] = []
    stores: list[PostgresStore] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            s = PostgresStore(url)
            with lock:
                stores.append(s)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        write(stores[0], "a", 1)
        assert all(s.load("s", "a") == Document(1, version=1) for s in stores)
    finally:
        for s in stores:
            s.close()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT value FROM cellkernel_meta").fetchall() == [("1",)]
        conn.execute("UPDATE cellkernel_meta SET value = '99'")
    with pytest.raises(PostgresDataError, match="schema version '99'"):
        PostgresStore(url)


# =========================================================================== errors


@pytest.mark.timeout(60)
def test_bad_urls_unreachable_servers_and_auth_failures_are_typed(
    pg_server: pgs.PostgresServer,
) -> None:
    for bad in ["postgresql://h:notaport/db", "postgresql://h:70000/db",
                "postgresql://h/db?nosuchoption=1", "mysql://h/db", "postgresql://[::1/db"]:
        with pytest.raises(PostgresUrlError) as info:
            PostgresStore(bad)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="url"):
        open_store("postgres-ish://h/db")

    port = pgs.free_port()  # nothing listens there
    with pytest.raises(PostgresUnavailableError) as down:
        Runtime(f"postgresql://someone@127.0.0.1:{port}/somedb")
    message = str(down.value)
    assert "127.0.0.1" in message and str(port) in message and "somedb" in message
    assert isinstance(down.value, ConnectionError)

    secret = (f"postgresql://{pgs.SECRET_USER}:wrong-password@127.0.0.1:{pg_server.port}"
              f"/postgres?connect_timeout=3")
    with pytest.raises(PostgresAuthError) as auth:
        PostgresStore(secret)
    assert str(pg_server.port) in str(auth.value) and "'postgres'" in str(auth.value)
    assert "wrong-password" not in str(auth.value)  # passwords never reach messages
    right = PostgresStore(secret.replace("wrong-password", pgs.SECRET_PASSWORD))
    assert "right-password" not in right.url and "right-password" not in repr(right)
    right.close()

    with pytest.raises(PostgresUnavailableError, match="does not exist"):
        PostgresStore(pg_server.url("no_such_database"))
    closed = PostgresStore(pg_server.url())
    closed.close()
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        closed.load("s", "a")


# =========================================================================== bad and hostile data


class Opaque:
    pass


BAD_VALUES = [math.nan, math.inf, {1, 2}, Opaque(), {"k": (1, 2)}, {1: "int key"}, b"bytes",
              "lone \ud800 surrogate", {"deep": [1, {"x": math.nan}]}, 10**5000]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda v: type(v).__name__)
def test_unstorable_documents_raise_value_error_and_write_nothing(
    pg_url: str, opened: list[Any], bad: Any
) -> None:
    a = store(opened, pg_url)
    write(a, "a", "ok")
    before = dump(pg_url)
    with pytest.raises(ValueError):
        a.commit("s", {"a": Document("good"), "b": Document(bad)}, {("s", "a"): 1})
    with pytest.raises(ValueError):
        a.commit("s", {"c": Document(1, meta={"m": bad})}, {})
    assert dump(pg_url) == before
    assert a.load("s", "b") is None and a.poll() == []
    write(a, "a", "still works")


def test_hostile_keys_and_values_round_trip_verbatim(pg_url: str, opened: list[Any]) -> None:
    a = store(opened, pg_url)
    hostile: dict[str, Any] = {
        "'); DROP TABLE cellkernel_documents; --": "x'; DELETE FROM cellkernel_feed; --",
        "é漢字🙂": {"\u0000 nul inside a string": "\\u0000", "quote\"": ["\n", "\t", "💥"]},
        "of:" + "z" * 5000: list(range(2000)),
    }
    for entity_id, value in hostile.items():
        a.commit("space $1 %s {}", {entity_id: Document(value, source=value, meta={"v": value})},
                 {})
    fresh = store(opened, pg_url)
    for entity_id, value in hostile.items():
        doc = fresh.load("space $1 %s {}", entity_id)
        assert doc == Document(value, value, {"v": value}, 1)
    assert fresh.entity_ids("space $1 %s {}") == list(hostile)
    before = dump(pg_url)
    for key in [("s\x00", "a"), ("s", "a\x00b")]:  # text columns hold no NUL: refused up front
        with pytest.raises(ValueError, match="NUL"):
            a.commit(key[0], {key[1]: Document(1)}, {})
        assert a.load(*key) is None
    with pytest.raises(ValueError):
        a.commit("s", {"a": Document(1)}, {("s", "a"): -1})
    with pytest.raises(TypeError):
        a.commit("s", {"a": {"value": 1}}, {})  # type: ignore[dict-item]
    assert dump(pg_url) == before


def test_malformed_stored_rows_raise_typed_errors_and_recover(
    pg_url: str, opened: list[Any]
) -> None:
    a, b = store(opened, pg_url), store(opened, pg_url)
    write(a, "good", 1)
    write(a, "bad", 1)
    b.poll()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # someone writes junk by hand
        conn.execute("UPDATE cellkernel_feed SET seq = seq + 1")
        conn.execute("UPDATE cellkernel_documents SET value = '{not json', version = 2, "
                     "seq = (SELECT seq FROM cellkernel_feed) WHERE id = 'bad'")
    c = store(opened, pg_url)
    with pytest.raises(PostgresDataError, match="'bad'"):
        c.load("s", "bad")
    assert c.load("s", "good") == Document(1, version=1)
    with pytest.raises(PostgresDataError):
        b.poll()  # the feed carries the junk row: reported, nothing folded in
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE cellkernel_documents SET value = '\"repaired\"' WHERE id = 'bad'")
    [change] = b.poll()
    assert change.after == Document("repaired", version=2)


def test_notify_payload_is_compact_and_hostile_notifications_are_harmless(
    pg_url: str, opened: list[Any]
) -> None:
    a = store(opened, pg_url)
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute("LISTEN cellkernel_changes")
        a.commit("s", {"x": Document(1), "y": Document(2)}, {})
        a.commit("s", {f"of:{i:060d}": Document(i) for i in range(300)}, {})  # too big to list
        notes = list(listener.notifies(timeout=5, stop_after=2))
    small, big = (json.loads(n.payload) for n in notes)
    assert {k: small[k] for k in ("s", "i", "v")} == {"s": "s", "i": ["x", "y"], "v": [1, 1]}
    assert big["q"] == small["q"] + 1 and "i" not in big

    async def main() -> list[Any]:
        rt = runtime(opened, pg_url)
        seen: list[Any] = []
        arrived = asyncio.Event()

        def sink(value: Any) -> None:
            seen.append(value)
            if value == "after junk":
                arrived.set()

        rt.get_cell("c").sink(sink)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for junk in ["", "not json", '{"q": "x"}', '[1,2]', '{"o": null, "q": 1e308}']:
                conn.execute("SELECT pg_notify('cellkernel_changes', %s)", (junk,))
        other = store(opened, pg_url)
        entity_id = rt.get_cell("c").entity_id
        assert entity_id is not None
        other.commit("did:local:default", {entity_id: Document("after junk")}, {})
        await asyncio.wait_for(arrived.wait(), 30)
        return seen

    assert asyncio.run(main())[-1] == "after junk"


# =========================================================================== runtimes


def test_run_in_one_process_resume_in_another(pg_url: str, opened: list[Any]) -> None:
    first = pgs.run_worker("run", pg_url, "shared-counter-1")
    assert first == {"value": {"count": 7, "doubled": 14, "increment": "<stream>"}, "errors": []}
    second = pgs.run_worker("resume", pg_url, "shared-counter-1")
    assert second["resumed"] == {"count": 7, "doubled": 14, "increment": "<stream>"}
    assert second["after"] == {"count": 8, "doubled": 16, "increment": "<stream>"}
    assert second["errors"] == []
    here = runtime(opened, pg_url).resume("shared-counter-1")  # and in this process
    assert pgs.plain(here.get()) == {"count": 8, "doubled": 16, "increment": "<stream>"}


def test_processes_incrementing_one_counter_end_at_the_exact_sum(
    pg_url: str, opened: list[Any]
) -> None:
    n, k = 4, 25
    Runtime(pg_url).close()  # the schema exists before the race
    procs = [pgs.spawn("counter", pg_url, str(k), stdin=-1) for _ in range(n)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline().strip()
            assert line == "ready", proc.stderr.read() if proc.stderr else line
        for proc in procs:  # go together, so they really race
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [r["done"] for r in reports] == [k] * n
    assert runtime(opened, pg_url).get_cell("shared-counter").get() == n * k
    assert sum(r["attempts"] for r in reports) >= n * k


def test_a_conflict_between_two_runtimes_fails_whole_or_retries(
    pg_url: str, opened: list[Any]
) -> None:
    a, b = runtime(opened, pg_url), runtime(opened, pg_url)
    counter_a, marker_a, counter_b = a.get_cell("counter"), a.get_cell("marker"), b.get_cell(
        "counter")
    counter_a.set(0)
    before = dump(pg_url)
    with pytest.raises(ConflictError), a.edit() as tx:  # A reads, B commits, A commits
        seen = counter_a.with_tx(tx).get()
        marker_a.with_tx(tx).set("A was here")
        counter_b.set(100)
        counter_a.with_tx(tx).set(seen + 1)
    after = dump(pg_url)
    assert len(after) == len(before)  # no new document: the marker did not land
    assert counter_a.get() == 100 and marker_a.get() is None
    calls = 0

    def increment(tx: Any) -> None:
        nonlocal calls
        calls += 1
        here = counter_a.with_tx(tx)
        value = here.get()
        if calls == 1:
            counter_b.set(counter_b.get() + 10)  # a competing commit mid-transaction
        here.set(value + 1)

    a.edit_with_retry(increment)
    assert calls == 2
    assert counter_b.get() == counter_a.get() == 111
    with pytest.raises(WriteIsolationError), a.edit() as tx:
        counter_a.with_tx(tx).set(1)
        a.get_cell("elsewhere", space="did:test:other").with_tx(tx).set(2)
    assert counter_b.get() == 111


def test_reads_outside_a_transaction_are_fresh_without_idle(
    pg_url: str, opened: list[Any]
) -> None:
    a, b = runtime(opened, pg_url), runtime(opened, pg_url)
    shared_a = a.get_cell("shared")
    shared_a.set(1)
    result = b.run(pgs.Counter, {"count": b.get_cell("shared")}, cause="in-b")
    assert result.doubled.get() == 2
    for value in (7, 8, 30):
        shared_a.set(value)  # a commit in A ...
        assert b.get_cell("shared").get() == value  # ... is seen by B's next read
        assert result.doubled.get() == 2 * value  # and B's lift has recomputed
    result.increment.send({"amount": 3})  # B's handler writes A's cell through the redirect
    assert shared_a.get() == 33
    assert a.errors == [] and b.errors == []


def test_live_changes_arrive_on_a_running_loop_with_no_call(
    pg_url: str, opened: list[Any], capsys: pytest.CaptureFixture[str],
    record_property: Any,
) -> None:
    rounds = 40
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # runtime A's thread

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        b = runtime(opened, pg_url)  # made on the loop: it listens
        assert b.store.live  # type: ignore[attr-defined]
        result = b.run(pgs.Counter, {"count": b.get_cell("live")}, cause="live-b")
        arrivals: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        result.doubled.sink(lambda v: arrivals.put_nowait((time.perf_counter(), v)))
        b.idle()
        while not arrivals.empty():  # the sink's first calls: before and after the first settle
            assert arrivals.get_nowait()[1] in (None, 0)
        a = await loop.run_in_executor(executor, Runtime, pg_url)  # no loop there
        opened.append(a)
        assert not a.store.live  # type: ignore[attr-defined]

        def commit(i: int) -> float:
            a.get_cell("live").set(i)
            return time.perf_counter()

        latencies = []
        for i in range(1, rounds + 1):
            returned = await loop.run_in_executor(executor, commit, i)
            arrived, value = await asyncio.wait_for(arrivals.get(), 30)  # nobody calls B
            assert value == 2 * i
            latencies.append(max(0.0, arrived - returned))
        return latencies

    try:
        latencies = asyncio.run(main())
    finally:
        executor.shutdown()
    p50, p95 = percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.95) * 1e3
    record_property("live_p50_ms", round(p50, 2))
    record_property("live_p95_ms", round(p95, 2))
    with capsys.disabled():
        print(f"\n[postgres live arrival] {rounds} commits: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
              f"mean {statistics.mean(latencies) * 1e3:.1f} ms")


def _acks(proc: Any, want: int, timeout: float = 60) -> list[int]:
    acks: list[int] = []
    deadline = time.monotonic() + timeout
    while len(acks) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.strip().isdigit():
            acks.append(int(line))
    return acks


def _check_pair(url: str, opened: list[Any], acked: int) -> int:
    rt = runtime(opened, url)
    big, small = rt.get_cell("big").get(), rt.get_cell("small").get()
    n = big["n"]
    assert acked <= n <= acked + 1  # nothing acknowledged lost; at most the one in flight
    assert big == {"n": n, "pad": [n] * pgs.PAD, "tail": n} and small == {"n": n}  # not torn
    return int(n)


def test_kill_9_of_a_writer_loses_no_acknowledged_commit(
    pg_url: str, opened: list[Any]
) -> None:
    last = 0
    for round_ in range(3):
        proc = pgs.spawn("writer", pg_url)
        try:
            acks = _acks(proc, 15 + 5 * round_)
            time.sleep(0.01 * round_)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        rest = proc.stdout.read().split() if proc.stdout else []
        acked = max([*acks, *(int(x) for x in rest if x.isdigit())])
        assert acked > last, proc.stderr.read() if proc.stderr else ""
        last = _check_pair(pg_url, opened, acked)


@pytest.mark.timeout(240)
def test_server_restart_mid_stream(
    pg_server: pgs.PostgresServer, pg_url: str, opened: list[Any]
) -> None:
    """A writer keeps writing through ``pg_ctl restart``; a live reader keeps up."""
    proc = pgs.spawn("writer", pg_url, "survive")
    try:
        before = _acks(proc, 20)
        assert before, proc.stderr.read() if proc.stderr else ""
        pg_server.restart()
        after = _acks(proc, 20)  # the writer reconnected by itself
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    rest = proc.stdout.read().split() if proc.stdout else []
    acks = before + after + [int(x) for x in rest if x.isdigit()]
    errors = proc.stderr.read() if proc.stderr else ""
    assert len(after) == 20 and after[0] > before[-1], errors
    assert acks == sorted(acks) and len(set(acks)) == len(acks)  # each k acknowledged once
    _check_pair(pg_url, opened, max(acks))


@pytest.mark.timeout(240)
def test_outage_writes_fail_typed_and_live_changes_resume_after(
    pg_server: pgs.PostgresServer, pg_url: str, opened: list[Any]
) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        b = runtime(opened, pg_url)
        seen: asyncio.Queue[Any] = asyncio.Queue()
        b.get_cell("n").sink(seen.put_nowait)
        assert await seen.get() is None
        a = await loop.run_in_executor(executor, Runtime, pg_url)
        opened.append(a)

        async def a_sets(value: Any) -> None:
            await loop.run_in_executor(executor, a.get_cell("n").set, value)

        await a_sets(1)
        assert await asyncio.wait_for(seen.get(), 30) == 1
        await loop.run_in_executor(executor, pg_server.stop)
        try:
            for value in (2, 3):
                with pytest.raises(PostgresUnavailableError) as info:
                    await a_sets(value)
                assert not info.value.in_doubt and str(pg_server.port) in str(info.value)
            with pytest.raises(PostgresUnavailableError):
                b.get_cell("n").get()  # a fresh read cannot be had: said so, not stale
        finally:
            await loop.run_in_executor(executor, pg_server.start)
        assert a.get_cell("n").get() == 1  # nothing of the failed writes landed
        for value in (4, 5):  # both stores reconnect; B's listener comes back by itself
            await a_sets(value)
            assert await asyncio.wait_for(seen.get(), 30) == value
        assert b.get_cell("n").get() == 5

    try:
        asyncio.run(main())
    finally:
        executor.shutdown()


def test_unstorable_values_through_a_runtime_write_nothing(
    pg_url: str, opened: list[Any]
) -> None:
    rt = runtime(opened, pg_url)
    cell, items = rt.get_cell("v"), rt.get_cell("items")
    cell.set({"ok": 1})
    items.set([1])
    before = dump(pg_url)
    for bad in [v for v in BAD_VALUES if not isinstance(v, dict) or "k" not in v]:  # tuples: lists
        with pytest.raises(ValueError):
            cell.set(bad)
        with pytest.raises(ValueError):
            items.push(2, bad)
        with pytest.raises(ValueError), rt.edit() as tx:  # an earlier good write goes too
            items.with_tx(tx).set([1, 2, 3])
            cell.with_tx(tx).set([bad])
    assert dump(pg_url) == before
    assert cell.get() == {"ok": 1} and items.get() == [1]


# --------------------------------------------------------------------------- group commit, release


@lift
def _pg_triple(x: int) -> int:
    return 3 * x


@pattern
def _PgMap(src: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default, never mutated
    return {"out": src.map(lambda e: _pg_triple(e))}  # type: ignore[attr-defined]


def test_a_settle_is_one_commit_and_retired_children_leave_the_database(
    pg_url: str, opened: list[Any]
) -> None:
    rt = runtime(opened, pg_url)
    src = rt.get_cell("pg-src")
    src.set([1, 2, 3])
    result = rt.run(_PgMap, {"src": src}, cause="pg-map")
    assert result.out.get() == [3, 6, 9]
    rows, seq = _rows_and_feed(pg_url)
    src.key(1).set(20)  # one child retired, one started: the user's commit, then one more
    assert result.out.get() == [3, 60, 9]
    assert _rows_and_feed(pg_url) == (rows, seq + 2)  # the retired child's documents left
    assert result.entity_id is not None
    other = runtime(opened, pg_url)  # another runtime reads every derived value
    assert other.cell_at(result.entity_id).get()["out"] == [3, 60, 9]
    assert rt.errors == []
