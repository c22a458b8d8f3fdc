"""Rehydration and teardown (SPEC §7), across real processes.

Process A runs a pattern from ``tests/fixtures/reliability_mod.py`` on a SQLite
file; process B (a subprocess) opens a new Runtime on the same file and calls
``rt.resume(cause)``.  The fixture builds its patterns only inside functions
and records every trace, so B can prove the author function never ran: B
trusts the module (``Runtime(trusted_modules=["reliability_mod"])``), so
resolution imports it to find the lifts its decorators define, by hash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers.reliability import FIXTURES, dump_store, plain, worker, worker_env
from helpers.reliability import fixture_mod as m

from cellkernel import Runtime, UnknownImplementationError, pattern
from cellkernel.store.documents import Document


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _counter_in_a(db: Path, cause: str = "counter-1") -> tuple[str, dict[str, Any]]:
    """Process A (this one): run Counter, send one event, close.  Returns (result id, value)."""
    rt = Runtime(store=_url(db))
    try:
        result = rt.run(m.make_counter(), {"count": 5}, cause=cause)
        result.increment.send({"amount": 2})
        value = plain(result.get())
        assert value == {"count": 7, "doubled": 14, "tripled": 21, "increment": "<stream>"}
        assert rt.errors == []
        assert result.entity_id is not None
        return result.entity_id, value
    finally:
        rt.close()


def _reopen_value(db: Path, result_id: str) -> dict[str, Any]:
    rt = Runtime(store=_url(db))
    try:
        return plain(rt.cell_at(result_id).get())  # type: ignore[no-any-return]
    finally:
        rt.close()


# --------------------------------------------------------------------------- rehydration


def test_resume_in_a_new_process_is_live_without_running_the_author_function(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    trace = tmp_path / "trace.log"
    result_id, before = _counter_in_a(db)

    ops = [
        {"send": "increment", "event": {"amount": 3}},  # the handler fires
        {"set": "count", "value": 100},  # the lifts recompute
    ]
    b = worker(
        "resume", str(db), "counter-1", json.dumps(ops),
        env=worker_env(FIXTURES, CK_TRACE_FILE=str(trace)),
    )
    assert b["errors"] == []
    # never traced: the fixture's pattern bodies record every trace, in memory and in the file
    assert b["modules_before"] is False and b["module_imported"] is True
    assert b["traces"] == []
    traced_pids = trace.read_text().split() if trace.exists() else []
    assert str(b["pid"]) not in traced_pids
    # and live
    assert b["resumed"] == before
    assert b["after_ops"] == [
        {"count": 10, "doubled": 20, "tripled": 30, "increment": "<stream>"},
        {"count": 100, "doubled": 200, "tripled": 300, "increment": "<stream>"},
    ]
    assert b["stats"]["handlers"] == 1 and b["stats"]["triggers"] == 2
    assert b["instances"] == 1
    assert b["generation"] == 1  # resuming is not a re-run
    # what B did is durable for a third reader
    assert _reopen_value(db, result_id) == b["after_ops"][-1]


def test_resume_by_entity_id_and_twice_is_one_instance(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    result_id, before = _counter_in_a(db)
    rt = Runtime(store=_url(db))
    try:
        first = rt.resume(result_id)
        again = rt.resume("counter-1")
        assert first.entity_id == again.entity_id == result_id
        assert len(rt.runner.instances) == 1
        assert rt.scheduler.stats()["handlers"] == 1
        assert plain(first.get()) == before
        first.key("increment").send({})
        assert first.key("count").get() == 8 and first.key("tripled").get() == 24
        assert rt.errors == []
    finally:
        rt.close()


def test_edited_module_between_processes_is_an_unknown_implementation(tmp_path: Path) -> None:
    """A stored hash that the importable module no longer matches runs nothing."""
    mods = tmp_path / "mods"
    mods.mkdir()
    shutil.copy(FIXTURES / "reliability_mod.py", mods / "reliability_mod.py")
    db = tmp_path / "state.db"
    env = worker_env(mods)
    a = worker("run", str(db), "edited", json.dumps({"count": 1}), env=env)
    assert a["value"] == {"count": 3, "doubled": 6, "tripled": 9, "increment": "<stream>"}

    source = (mods / "reliability_mod.py").read_text()
    edited = source.replace("return x * 2\n", "return x * 2 + 1\n")
    assert edited != source
    (mods / "reliability_mod.py").write_text(edited)
    shutil.rmtree(mods / "__pycache__", ignore_errors=True)

    store = Runtime(store=_url(db))
    before = dump_store(store.store)
    b = worker("resume", str(db), "edited", "[]", env=env)
    assert b["error"] == "UnknownImplementationError"
    assert "reliability_mod" in b["message"] and "double" in b["message"]
    # nothing started: no handler, no trigger, no instance, no trace; storage untouched
    assert b["stats"] == {"runs": 0, "triggers": 0, "handlers": 0}
    assert b["instances"] == 0
    assert b["traces"] == []
    assert dump_store(store.store) == before
    store.close()


def _rewrite_snapshot(db: Path, result_id: str, edit: Any) -> None:
    rt = Runtime(store=_url(db))
    try:
        doc = rt.store.load(rt.space, result_id)
        assert doc is not None
        graph = json.loads(json.dumps(doc.meta["graph"]))
        edit(graph)
        rt.store.commit(
            rt.space,
            {result_id: Document(doc.value, doc.source, {**doc.meta, "graph": graph})},
            {(rt.space, result_id): doc.version},
        )
    finally:
        rt.close()


def test_snapshot_naming_a_missing_module_runs_nothing(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    result_id, before = _counter_in_a(db)

    def point_lift_at_nowhere(graph: dict[str, Any]) -> None:
        [lift] = [n for n in graph["nodes"] if n["name"] == "double"]
        lift["module"]["ref"] = "ck_no_such_module_7f3a:double"
        lift["module"]["hash"] = "f" * 64  # not in this process's registry either

    _rewrite_snapshot(db, result_id, point_lift_at_nowhere)
    rt = Runtime(store=_url(db))
    try:
        stored = dump_store(rt.store)
        with pytest.raises(UnknownImplementationError, match="ck_no_such_module_7f3a"):
            rt.resume("counter-1")
        assert rt.scheduler.stats() == {"runs": 0, "triggers": 0, "handlers": 0}
        assert rt.runner.instances == {}
        assert dump_store(rt.store) == stored
        # the stream has no handler: an event changes nothing
        rt.cell_at(result_id).key("increment").send({"amount": 50})
        rt.idle()
        assert plain(rt.cell_at(result_id).get()) == before
        assert dump_store(rt.store) == stored
    finally:
        rt.close()


@pattern
def _Inner(x: int = 0) -> Any:
    return {"t": m.triple(x)}


@pattern
def _Outer(count: int = 0) -> Any:
    return {
        "count": count,
        "d": m.double(count),
        "inner": _Inner(x=count),
        "inc": m.increment(count=count),
    }


def test_unknown_implementation_in_a_nested_instance_leaves_nothing_half_started(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    rt = Runtime(store=_url(db))
    result = rt.run(_Outer, {"count": 2}, cause="outer")
    assert plain(result.get()) == {"count": 2, "d": 4, "inner": {"t": 6}, "inc": "<stream>"}
    [inner_node] = [n for n in rt.snapshot(result).nodes if n.helper == "pattern"]
    inner_id = inner_node.outputs[0]
    rt.close()

    def break_triple(graph: dict[str, Any]) -> None:
        graph["nodes"][0]["module"].update(ref="ck_no_such_module_7f3a:triple", hash="e" * 64)

    _rewrite_snapshot(db, inner_id, break_triple)
    rt = Runtime(store=_url(db))
    try:
        stored = dump_store(rt.store)
        with pytest.raises(UnknownImplementationError, match="ck_no_such_module_7f3a"):
            rt.resume("outer")
        # the outer lift and handler were resolvable, but nothing may keep running
        assert rt.scheduler.stats() == {"runs": 0, "triggers": 0, "handlers": 0}
        assert rt.runner.instances == {}
        rt.idle()
        assert dump_store(rt.store) == stored
    finally:
        rt.close()


# --------------------------------------------------------------------------- teardown


def test_rerun_with_an_edited_pattern_tears_down_vanished_nodes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    rt = Runtime(store=_url(db))
    try:
        v1 = rt.run(m.make_counter(), {"count": 1}, cause="teardown")
        v1.increment.send({})
        s1 = rt.snapshot(v1)
        stats1 = rt.scheduler.stats()
        assert s1.generation == 1 and s1.predecessor is None
        assert stats1["triggers"] == 2 and stats1["handlers"] == 1
        [triple_node] = [n for n in s1.nodes if n.name == "triple"]
        tripled_id = triple_node.outputs[0]

        v2 = rt.run(m.make_counter_v2(), None, cause="teardown")  # no argument: keep state
        assert v2.entity_id == v1.entity_id
        s2 = rt.snapshot(v2)
        assert s2.generation == 2
        assert s2.predecessor is not None
        assert s2.predecessor["generation"] == 1 and s2.predecessor["pattern"] == s1.pattern
        assert sorted(s2.predecessor["nodes"]) == sorted(n.id for n in s1.nodes)
        assert triple_node.id not in {n.id for n in s2.nodes}
        # kept nodes keep their ids; the vanished lift released its subscription
        assert {n.id for n in s2.nodes} == {n.id for n in s1.nodes} - {triple_node.id}
        stats2 = rt.scheduler.stats()
        assert stats2["triggers"] == stats1["triggers"] - 1
        assert stats2["handlers"] == stats1["handlers"]

        # state carried over (the event's +1 survived the re-run); the rest keeps running
        assert plain(v2.get()) == {"count": 2, "doubled": 4, "increment": "<stream>"}
        triple_calls = m.CALLS["triple"]
        v2.count.set(10)
        v2.increment.send({"amount": 5})
        assert plain(v2.get()) == {"count": 15, "doubled": 30, "increment": "<stream>"}
        assert m.CALLS["triple"] == triple_calls  # the vanished action never ran again
        assert rt.cell_at(tripled_id).get() == 6  # its last output, no longer maintained
        assert rt.errors == []
    finally:
        rt.close()

    # a later process resumes generation 2 only
    rt = Runtime(store=_url(db))
    try:
        again = rt.resume("teardown")
        assert rt.snapshot(again).generation == 2
        assert rt.scheduler.stats()["triggers"] == 1  # double only
        again.count.set(1)
        assert again.doubled.get() == 2
        assert rt.cell_at(tripled_id).get() == 6
    finally:
        rt.close()


def test_resuming_a_mistyped_cause_names_it_and_suggests_the_nearest(rt: Runtime) -> None:
    @pattern
    def Counter(count: int = 0):  # type: ignore[no-untyped-def]
        return {"count": count}

    rt.run(Counter, {}, cause="counter")
    rt.run(Counter, {}, cause={"user": "ada"})
    with pytest.raises(LookupError,
                       match=r"nothing to resume for 'countr'.*did you mean 'counter'"):
        rt.resume("countr")
    with pytest.raises(LookupError, match=r"known instances: 'counter'"):
        rt.resume("zzzzzz")
