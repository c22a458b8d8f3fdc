"""map/filter keyed identity (SPEC §4) and wish("#all") (SPEC §8), checked against an oracle.

The oracle for keyed identity: an element's key is its document id, or its
plain value plus its occurrence number among equal values (a fresh dict
counts as a plain value: it becomes a document keyed by its content).  After
any edit, the mapped output must equal a plain Python ``map`` of the list, and
the per-element lift must have run for exactly the keys that appeared.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import random
import weakref
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.core import count_compared, runtime_on
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellkernel import Runtime, derive, lift, pattern, wish
from cellkernel.data.links import parse_link
from cellkernel.patterns import map_filter
from cellkernel.reactive import cells
from cellkernel.reactive.path_groups import PathGroups

RUNS: list[Any] = []


@lift
def shout(value: Any) -> Any:
    RUNS.append(value)
    return {"v": value} if not isinstance(value, dict) else {"v": value.get("name")}


@pattern
def Mapped(src: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default, never mutated
    return {"out": src.map(lambda e: shout(e)),  # type: ignore[attr-defined]
            "kept": src.filter(lambda e: derive(e, lambda x: _truthy(x)))}  # type: ignore[attr-defined]


def _truthy(x: Any) -> bool:
    return bool(x.get("name") != "b") if isinstance(x, dict) else bool(x)


def _keys(values: list[Any]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for v in values:
        base = json.dumps(v, sort_keys=True)
        out.append(f"{base}#{seen[base]}")
        seen[base] += 1
    return out


def _expect(values: list[Any]) -> list[Any]:
    return [{"v": v} if not isinstance(v, dict) else {"v": v.get("name")} for v in values]


def _check_against_oracle(result: Any, values: list[Any], before: list[str]) -> None:
    """The output is a plain Python map, and the lift ran once per key that appeared."""
    assert result.out.get() == _expect(values)
    assert result.kept.get() == [v for v in values if _truthy(v)]  # a plain Python filter
    appeared = Counter(_keys(values)) - Counter(before)
    assert sorted(map(json.dumps, RUNS)) == sorted(
        json.dumps(json.loads(k.rsplit("#", 1)[0])) for k in appeared.elements())


def test_a_reorder_of_fresh_equal_dicts_keeps_every_instance() -> None:
    rt = Runtime()
    try:
        src = rt.get_cell("src")
        src.set([{"name": "a"}, {"name": "b"}, {"name": "c"}])
        result = rt.run(Mapped, {"src": src}, cause="m")
        assert result.out.get() == [{"v": "a"}, {"v": "b"}, {"v": "c"}]
        RUNS.clear()
        src.set([{"name": "c"}, {"name": "a"}, {"name": "b"}])  # fresh dicts, as sorted() makes
        assert result.out.get() == [{"v": "c"}, {"v": "a"}, {"v": "b"}]
        assert RUNS == []  # every instance kept: nothing re-ran
        assert result.kept.get() == [{"name": "c"}, {"name": "a"}]
        src.set([{"name": "a"}, {"name": "a"}, {"name": "c"}])  # a duplicate: one new instance
        assert result.out.get() == [{"v": "a"}, {"v": "a"}, {"v": "c"}]
        assert RUNS == [{"name": "a"}]
        assert rt.errors == []
    finally:
        rt.close()


def test_pushing_an_equal_dict_makes_its_own_document() -> None:
    rt = Runtime()
    try:
        src = rt.get_cell("src")
        src.set([{"name": "a"}])
        src.push({"name": "a"})
        first, second = src.get_raw()
        assert first != second
        src[1].key("name").set("z")
        assert src.get() == [{"name": "a"}, {"name": "z"}]
    finally:
        rt.close()


edits = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, 6), st.integers(0, 3)),
    st.tuples(st.just("insert"), st.integers(0, 6), st.integers(0, 3)),
    st.tuples(st.just("remove"), st.integers(0, 6)),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("sort")),
), max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.lists(st.integers(0, 3), max_size=6), steps=edits, dicts=st.booleans())
def test_random_list_edits_match_a_plain_map(start: list[int], steps: list[Any],
                                             dicts: bool) -> None:
    def value(n: int) -> Any:
        return {"name": "abcd"[n]} if dicts else n

    rt = Runtime()
    try:
        src = rt.get_cell("src")
        values = [value(n) for n in start]
        src.set(values)
        result = rt.run(Mapped, {"src": src}, cause="m")
        assert result.out.get() == _expect(values)
        for step in steps:
            before = _keys(values)
            if step[0] == "set" and values:
                values[step[1] % len(values)] = value(step[2])
            elif step[0] == "insert":
                values.insert(step[1] % (len(values) + 1), value(step[2]))
            elif step[0] == "remove" and values:
                values.pop(step[1] % len(values))
            elif step[0] == "reverse":
                values.reverse()
            elif step[0] == "sort":
                values.sort(key=lambda v: json.dumps(v, sort_keys=True))
            RUNS.clear()
            src.set([dict(v) if isinstance(v, dict) else v for v in values])  # fresh values
            _check_against_oracle(result, values, before)
        assert rt.errors == []
    finally:
        rt.close()


def test_wish_all_sees_instances_started_before_and_after_in_another_runtime(
    tmp_path: Path,
) -> None:
    @pattern
    def Count(n: int = 0):  # type: ignore[no-untyped-def]
        return {"n": n}

    @pattern
    def Everything():  # type: ignore[no-untyped-def]
        every = wish("#all")
        return {"size": derive(every, lambda xs: len(xs or []))}

    url = f"sqlite:///{tmp_path / 'w.db'}"
    first = Runtime(url)
    first.run(Count, {"n": 1}, cause="a")
    first.run(Count, {"n": 2}, cause="b")
    first.close()
    reader = Runtime(url)
    try:
        everything = reader.run(Everything, {}, cause="everything")
        assert everything.size.get() == 3  # two before it, and itself
        later = Runtime(url)
        later.run(Count, {"n": 3}, cause="c")
        later.close()
        reader.idle()
        assert everything.size.get() == 4  # and one started after, elsewhere
        assert os.path.exists(tmp_path / "w.db")
    finally:
        reader.close()


# --------------------------------------------------------------------------- releasing children
# Issue 18: a child whose element left the list is retired; its documents leave the store
# once the runtime is quiet, and the scheduler forgets the writes the map learned to them.


@lift
def doubled(x: int) -> int:
    return 2 * x


@pattern
def Doubling(src: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default, never mutated
    return {"out": src.map(lambda e: doubled(e))}  # type: ignore[attr-defined]


def _doc_count(rt: Runtime) -> int:
    return len(rt.store.entity_ids(rt.space))


def _map_action(rt: Runtime) -> Any:
    return rt.scheduler.actions("map")[0]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_replacing_elements_leaves_the_document_count_flat(tmp_path: Path, store: str) -> None:
    rt = runtime_on(store, tmp_path, "r.db")
    src = rt.get_cell("src")
    src.set(list(range(20)))
    result = rt.run(Doubling, {"src": src}, cause="release")
    src.key(5).set(1000)  # one child retired, one started: the steady state from here
    docs, writes = _doc_count(rt), len(_map_action(rt).writes)
    for v in range(40):
        src.key(5).set(2000 + v)
        assert result.out.key(5).get() == 2 * (2000 + v)
    assert _doc_count(rt) == docs
    assert len(_map_action(rt).writes) == writes
    src.set(list(range(10)))  # ten elements gone, with their children's documents
    assert result.out.get() == [2 * i for i in range(10)]
    assert _doc_count(rt) < docs
    assert rt.errors == []
    rt.close()


def test_an_element_that_comes_back_gets_a_fresh_child() -> None:
    rt = Runtime()
    src = rt.get_cell("src")
    src.set([1, 2, 3])
    result = rt.run(Doubling, {"src": src}, cause="back")
    src.set([1, 3])
    src.set([1, 2, 3])  # the child for 2 starts again, computing its output anew
    assert result.out.get() == [2, 4, 6]
    rt.close()


def test_stopping_an_instance_keeps_its_childrens_documents_for_resume() -> None:
    rt = Runtime()
    src = rt.get_cell("src")
    src.set([1, 2, 3])
    result = rt.run(Doubling, {"src": src}, cause="kept")
    docs = set(rt.store.entity_ids(rt.space))
    rt.stop(result)
    rt.idle()
    assert set(rt.store.entity_ids(rt.space)) == docs  # nothing released: it was not retired
    resumed = rt.resume("kept")
    assert resumed.out.get() == [2, 4, 6]
    rt.close()


def test_a_closed_runtime_is_freed() -> None:
    rt = Runtime()
    src = rt.get_cell("src")
    src.set([1, 2])
    rt.run(Doubling, {"src": src}, cause="freed")
    ref = weakref.ref(rt)
    runner = weakref.ref(rt.runner)
    rt.close()
    del rt, src
    gc.collect()
    assert ref() is None and runner() is None


def _edit_in_place(src: Any, values: list[Any], step: Any) -> None:
    """Apply a set/push/pop/remove step to the cell and to the oracle list alike."""
    if step[0] == "set" and values:
        i = step[1] % len(values)
        values[i] = step[2]
        src.key(i).set(step[2])
    elif step[0] == "push":
        values.append(step[1])
        src.push(step[1])
    elif step[0] == "pop" and values:
        del values[-step[1]:]
        src.set(src.get()[:len(values)])
    elif step[0] == "remove":  # the first equal element (the last one: the list cut short)
        if step[1] in values:
            values.remove(step[1])
        src.remove(step[1])


element_edits = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, 20), st.integers(0, 3)),
    st.tuples(st.just("push"), st.integers(0, 3)),
    st.tuples(st.just("pop"), st.integers(1, 3)),
    st.tuples(st.just("remove"), st.integers(0, 3)),
), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.lists(st.integers(0, 3), max_size=8), steps=element_edits)
def test_element_edits_in_place_match_a_plain_map(start: list[int], steps: list[Any]) -> None:
    """Writes to one element, pushes and pops at the end: the incremental re-keying path.

    Duplicates are the point: replacing one occurrence shifts the occurrence
    numbers of the later ones, whose children must follow their keys.
    """
    rt = Runtime()
    try:
        src = rt.get_cell("src")
        values = list(start)
        src.set(values)
        result = rt.run(Mapped, {"src": src}, cause="in-place")
        for step in steps:
            before = _keys(values)
            RUNS.clear()
            _edit_in_place(src, values, step)
            _check_against_oracle(result, values, before)
        assert rt.errors == []
    finally:
        rt.close()


# ---------------------------------------------------------------------------
# filter: keyed by one action, collected incrementally by another


VERDICTS: list[Any] = []


@lift
def above(value: int, threshold: int) -> bool:
    VERDICTS.append(value)
    return value > threshold


@pattern
def Above(src: list[Any] = [], threshold: int = 0):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default
    return {"big": src.filter(lambda e: above(e, threshold))}  # type: ignore[attr-defined]


def _filter_actions(rt: Runtime) -> tuple[Any, Any]:
    keying = next(a for a in rt.scheduler.actions("filter") if a.changed is None)
    collect = next(a for a in rt.scheduler.actions("filter") if a.changed is not None)
    return keying, collect


def test_a_filter_collects_after_its_children_and_keys_before_them() -> None:
    """No cycle: one action keying the list and reading the verdicts left no order at all."""
    rt = Runtime()
    src = rt.get_cell("src")
    src.set(list(range(30)))
    result = rt.run(Above, {"src": src, "threshold": 10}, cause="order")
    assert result.big.get() == list(range(11, 30))
    keying, collect = _filter_actions(rt)
    children = rt.scheduler.actions("above")
    assert len(children) == 30
    assert all(keying.height < c.height < collect.height for c in children)
    runs = rt.scheduler.run_count
    src.key(3).set(50)  # one child retired, one started, one verdict collected
    assert result.big.get() == [50, *range(11, 30)]
    assert rt.scheduler.run_count - runs == 3  # keying, the new child, the collect
    rt.close()


def test_a_filter_follows_a_captured_input_and_its_elements_documents() -> None:
    rt = Runtime()
    src = rt.get_cell("src")
    src.set([5, 1, 9, 3])
    threshold = rt.get_cell("threshold")
    threshold.set(4)
    result = rt.run(Above, {"src": src, "threshold": threshold}, cause="captured")
    assert result.big.get() == [5, 9]
    threshold.set(2)  # every verdict changes from outside the list
    assert result.big.get() == [5, 9, 3]
    threshold.set(100)
    assert result.big.get() == []
    src.push(101)
    src.key(0).set(200)
    assert result.big.get() == [200, 101]
    assert rt.errors == []
    rt.close()


def test_a_failing_verdict_is_recorded_on_its_node_and_the_rest_is_kept() -> None:
    @lift
    def picky(value: int) -> bool:
        if value == 13:
            raise ValueError("thirteen")
        return value % 2 == 0

    @pattern
    def Picky(src: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default
        return {"even": src.filter(lambda e: picky(e))}  # type: ignore[attr-defined]

    rt = Runtime()
    src = rt.get_cell("src")
    src.set([2, 4, 6])
    result = rt.run(Picky, {"src": src}, cause="picky")
    src.key(1).set(13)
    assert result.even.get() == [2, 6]  # the failing child keeps nothing
    assert [e.name for e in rt.errors] == ["picky"]
    assert "thirteen" in str(rt.errors[0].error)
    src.key(1).set(8)
    assert result.even.get() == [2, 8, 6]
    rt.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_filters_subscription_and_documents_stay_flat(tmp_path: Path, store: str) -> None:
    rt = runtime_on(store, tmp_path, "f.db")
    src = rt.get_cell("src")
    src.set(list(range(40)))
    result = rt.run(Above, {"src": src, "threshold": 20}, cause="flat")
    src.key(7).set(1000)
    _keying, collect = _filter_actions(rt)
    docs, reads = _doc_count(rt), len(collect.reads)
    for v in range(60):
        src.key(7).set(1001 + v if v % 2 else v % 20)  # in and out of the output
        expect = [x for x in src.get() if x > 20]
        assert result.big.get() == expect
        assert len(collect.reads) <= 2 * reads  # compacted as children retire
    assert _doc_count(rt) == docs
    assert rt.errors == []
    rt.close()


filter_edits = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, 20), st.integers(0, 6)),
    st.tuples(st.just("push"), st.integers(0, 6)),
    st.tuples(st.just("pop"), st.integers(1, 3)),
    st.tuples(st.just("threshold"), st.integers(0, 6)),
    st.tuples(st.just("replace"), st.lists(st.integers(0, 6), max_size=8)),
), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.lists(st.integers(0, 6), max_size=8), steps=filter_edits)
def test_filter_edits_match_a_plain_filter(start: list[int], steps: list[Any]) -> None:
    """Incremental collects against Python's filter; a verdict runs per new key or threshold."""
    rt = Runtime()
    try:
        src = rt.get_cell("src")
        threshold = rt.get_cell("threshold")
        values, limit = list(start), 3
        src.set(values)
        threshold.set(limit)
        result = rt.run(Above, {"src": src, "threshold": threshold}, cause="prop")
        assert result.big.get() == [v for v in values if v > limit]
        for step in steps:
            before = _keys(values)
            VERDICTS.clear()
            if step[0] == "threshold":
                changed = step[1] != limit
                limit = step[1]
                threshold.set(limit)
                assert result.big.get() == [v for v in values if v > limit]
                assert len(VERDICTS) == (len(values) if changed else 0)
                continue
            if step[0] == "replace":
                values = list(step[1])
                src.set(values)
            else:
                _edit_in_place(src, values, step)
            assert result.big.get() == [v for v in values if v > limit]
            appeared = Counter(_keys(values)) - Counter(before)
            assert sorted(VERDICTS) == sorted(
                json.loads(k.rsplit("#", 1)[0]) for k in appeared.elements())
        assert rt.errors == []
    finally:
        rt.close()


def test_a_filter_whose_verdict_reads_the_lists_own_document() -> None:
    """An inline argument: list and captured flag share the argument document."""
    @pattern
    def Flagged(src: list[Any] = [], flag: bool = True):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default
        return {"kept": src.filter(lambda e: flag), "flag": flag, "src": src}  # type: ignore[attr-defined]

    rt = Runtime()
    result = rt.run(Flagged, {"src": [1, 2, 3], "flag": True}, cause="inline")
    assert result.kept.get() == [1, 2, 3]
    result.flag.set(False)  # another path of the list's document
    assert result.kept.get() == []
    result.src.key(1).set(7)
    result.flag.set(True)
    assert result.kept.get() == [1, 7, 3]
    result.src.key(1).set(8)
    assert result.kept.get() == [1, 8, 3]
    assert rt.errors == []
    rt.close()


def test_a_verdict_that_stays_the_same_leaves_the_output_document_alone() -> None:
    rt = Runtime()
    src = rt.get_cell("src")
    src.set([1, 30, 2, 40])
    result = rt.run(Above, {"src": src, "threshold": 10}, cause="same")
    assert result.big.get() == [30, 40]
    _space, out_id, _path = result.big.resolve_as_cell()._address()
    version = rt.store.load(rt.space, out_id).version  # type: ignore[union-attr]
    src.key(0).set(3)  # out before, out after: a new child, the same output
    src.key(1).set(30)  # the same value: no new child at all
    assert result.big.get() == [30, 40]
    assert rt.store.load(rt.space, out_id).version == version  # type: ignore[union-attr]
    src.key(3).set(50)
    assert result.big.get() == [30, 50]
    assert rt.store.load(rt.space, out_id).version == version + 1  # type: ignore[union-attr]
    rt.close()


def _tripled() -> Any:
    @lift
    def triple(x: int) -> int:
        return 3 * x

    @pattern
    def Tripled(src: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default
        return {"out": src.map(lambda e: triple(e))}  # type: ignore[attr-defined]

    return Tripled


def test_a_dropped_pattern_is_freed_after_its_children_started() -> None:
    """The runner's cache of a pattern's stored documents holds it weakly, as the registry."""
    tripled = _tripled()
    ref = weakref.ref(tripled)
    rt = Runtime()
    result = rt.run(tripled, {"src": [1, 2]}, cause="dropped")
    assert result.out.get() == [3, 6]
    rt.close()
    del rt, result, tripled
    gc.collect()
    assert ref() is None


def test_map_edits_never_change_a_stored_document_in_place() -> None:
    """A child's argument is handed to the store as built (not copied): every later
    write to it (an index that moved) must copy, never touch the stored object."""
    rt = Runtime()
    src = rt.get_cell("in-place-src")
    src.set([1, 2, 2, 3, 2])
    result = rt.run(Mapped, {"src": src}, cause="in-place")
    docs = rt.store._docs  # type: ignore[attr-defined]
    edits: list[Any] = [
        lambda: src.key(1).set(5),       # a duplicate's occurrences shift: indices move
        lambda: src.set([2, 3, 2, 1]),   # a reorder: every child's index moves
        lambda: src.push(2),
        lambda: src.key(0).set(7),
    ]
    for edit in edits:
        held = [(doc, copy.deepcopy(doc.value)) for doc in docs.values()]
        edit()
        for doc, value in held:
            assert doc.value == value
        values = src.get()
        assert result.key("out").get() == _expect(values)
    assert not rt.errors


@lift
def plus_one(x: int) -> int:
    return x + 1


DOWNSTREAM = 24


@pattern
def MapThenPerIndex(items: list[int]) -> Any:
    """A map whose output many lifts read, one index each (the map writes single indices)."""
    out = items.map(lambda x: doubled(x))  # type: ignore[attr-defined]
    return {"items": items, "out": out, "next": [plus_one(out[i]) for i in range(DOWNSTREAM)]}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_readers_of_a_map_output_are_narrowed_to_the_indices_the_map_wrote(
    tmp_path: Path, store: str,
) -> None:
    """The map writes the output indices whose key changed; the scheduler compares only
    those among the output's many readers (the map's own transaction says which), and
    every reader still matches a Python oracle after each write, push and remove."""
    rt = runtime_on(store, tmp_path, "narrow.db")
    items = list(range(DOWNSTREAM))
    result = rt.run(MapThenPerIndex, {"items": items}, cause="narrowed")
    compared = count_compared(rt)
    rng = random.Random(11)
    for _ in range(25):
        roll = rng.random()
        if roll < 0.2:
            value = rng.randint(100, 200)
            result.key("items").push(value)
            items.append(value)
        elif roll < 0.35 and len(items) > DOWNSTREAM:
            result.key("items").remove(items[-1])
            items.pop()
        else:
            k, value = rng.randrange(DOWNSTREAM), rng.randint(-50, 50)
            result.key("items", k).set(value)
            items[k] = value
        assert result.key("out").get() == [2 * x for x in items]
        assert result.key("next").get() == [2 * x + 1 for x in items[:DOWNSTREAM]]
    assert compared and max(compared) <= 3  # one index (and its spellings), never all
    assert not rt.errors
    rt.close()


def _told_indices(monkeypatch: pytest.MonkeyPatch) -> list[set[int] | None]:
    """From now on, what every map or filter run is told its last write changed
    (``map_filter._written_indices``: the indices, or None when it compares)."""
    told: list[set[int] | None] = []
    real = map_filter._written_indices

    def spying(*args: Any) -> set[int] | None:
        found = real(*args)
        told.append(found)
        return found

    monkeypatch.setattr(map_filter, "_written_indices", spying)
    return told


def _push_remove_or_set(rng: random.Random, cell: Any, values: list[int], value: int
                        ) -> int | None:
    """One random edit of ``cell`` and of its oracle ``values`` alike: push ``value``,
    remove the last element, or set a random element to ``value`` (its index returned)."""
    roll = rng.random()
    if roll < 0.2:
        cell.push(value)
        values.append(value)
        return None
    if roll < 0.35 and values:
        cell.remove(values[-1])
        values.pop()
        return None
    k = rng.randrange(len(values))
    cell.key(k).set(value)
    values[k] = value
    return k


@pattern
def MapOfMap(items: list[int]) -> Any:
    """A map over another map's output: the second map re-keys what the first wrote."""
    return {"items": items,
            "out": items.map(lambda x: doubled(x)).map(lambda y: plus_one(y))}  # type: ignore[attr-defined]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_map_of_a_map_rekeys_the_indices_the_first_map_wrote(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first map's write names the indices it changed; the second map, reading that
    output, is told them (``Scheduler.written_paths``) instead of comparing its whole
    list element by element, and its output still matches Python's map after each
    element write, push and remove."""
    told = _told_indices(monkeypatch)
    rt = runtime_on(store, tmp_path, "map-of-map.db")
    items = list(range(100))
    result = rt.run(MapOfMap, {"items": items}, cause="map-of-map")
    rng = random.Random(5)
    for step in range(20):
        told.clear()
        # (a value new every time: no duplicate shifts another's occurrence)
        k = _push_remove_or_set(rng, result.key("items"), items, -1 - step)
        assert result.key("out").get() == [2 * x + 1 for x in items]
        if k is not None:  # an element write: both maps were told the one index
            assert told == [{k}, {k}]
    assert not rt.errors
    rt.close()


SEEN: list[tuple[int, Any]] = []


@lift
def at_index(x: int, i: int) -> int:
    return 1000 * i + x


def _seen_at(j: int) -> Any:
    @lift
    def seen(v: Any) -> Any:
        SEEN.append((j, v))
        return v

    return seen


WATCHED = 20


@pattern
def IndexedThenPerIndex(items: list[int]) -> Any:
    """Children that read their index, and one reader per output index."""
    out = items.map(lambda x, i: at_index(x, i))  # type: ignore[attr-defined]
    return {"items": items, "out": out, "seen": [_seen_at(j)(out[j]) for j in range(WATCHED)]}


@pytest.mark.parametrize("seed", range(3))
def test_readers_of_map_indices_run_once_after_the_children_that_moved(seed: int) -> None:
    """A map child is ordered before the readers of its own index of the output, and
    follows its element when it moves (``CollectionRun.move``): after inserts at the
    front, removals, reorders and element writes, each per-index reader runs at most
    once per write (never before the child it reads has recomputed its index) and
    holds what Python computes."""
    rng = random.Random(seed)
    rt = Runtime()
    items = list(range(WATCHED + 5))
    result = rt.run(IndexedThenPerIndex, {"items": items}, cause=f"moves-{seed}")
    for step in range(30):
        SEEN.clear()
        roll = rng.random()
        if roll < 0.25:
            items.insert(0, 500 + step)  # every child moves up one index
            result.key("items").set(list(items))
        elif roll < 0.45:
            rng.shuffle(items)
            result.key("items").set(list(items))
        elif roll < 0.6 and len(items) > WATCHED:
            items.pop(rng.randrange(len(items)))
            result.key("items").set(list(items))
        else:
            k = rng.randrange(len(items))
            items[k] = 700 + step
            result.key("items", k).set(items[k])
        expected = [1000 * i + x for i, x in enumerate(items)]
        assert result.key("out").get() == expected
        assert result.key("seen").get() == expected[:WATCHED]
        runs = Counter(j for j, _v in SEEN)
        assert max(runs.values(), default=1) == 1, runs  # glitch-free: once each, if at all
        assert all(v == expected[j] for j, v in SEEN)  # and with the current value
        _assert_children_write_their_index(rt, result)
    assert not rt.errors
    rt.close()


def _assert_children_write_their_index(rt: Runtime, result: Any) -> None:
    """Every map child's actions are ordered as writers of the index its link is at."""
    instance = rt.runner.instances[(rt.space, result.entity_id)]
    node = next(n for n in instance.nodes.values() if n.record["helper"] == "map")
    out_id = node.record["outputs"][0]
    stored = rt.store.load(rt.space, out_id)
    assert stored is not None and isinstance(stored.value, list)
    index_of = {parse_link(link, rt.space).id: k for k, link in enumerate(stored.value)}
    assert set(index_of) == set(node.children)
    for child_id, child in node.children.items():
        for running in child.nodes.values():
            for action in running.actions:
                at = [a[2] for a in action.writes if a[:2] == (rt.space, out_id)]
                assert at == [(index_of[child_id],)], (at, index_of[child_id])


def test_a_write_through_a_map_of_many_children_orders_against_one_index() -> None:
    """With a thousand children writing the map's output, a reader that re-subscribes
    after its element changed is ordered against the writers of its index (and the
    map's own write of the whole output), not against every child."""
    rt = Runtime()
    n = 1000
    result = rt.run(MapThenPerIndex, {"items": list(range(n))}, cause="one-index")
    rt.idle()
    sizes: list[int] = []
    real = PathGroups.overlapping

    def spying(self: PathGroups, path: Any) -> list[Any]:
        found = real(self, path)
        sizes.append(len(found))
        return found

    PathGroups.overlapping = spying  # type: ignore[method-assign]
    try:
        for k in (3, 7, 11):
            result.key("items", k).set(-k)
            rt.idle()
            assert result.key("next", k).get() == -2 * k + 1
    finally:
        PathGroups.overlapping = real  # type: ignore[method-assign]
    assert sizes and max(sizes) <= 3  # the index, the whole output, a spelling: never all
    assert not rt.errors
    rt.close()


@lift
def odd(x: int) -> bool:
    return x % 2 == 1


@lift
def plus_one_or_none(x):  # type: ignore[no-untyped-def]  # (untyped: None past the end)
    return None if x is None else x + 1


KEPT_READERS = 18  # (above BULK_READERS: the readers of the output are grouped by path)


@pattern
def FilterThenMap(items: list[int]) -> Any:
    """A map over a filter's output, and a reader per output index."""
    kept = items.filter(lambda x: odd(x))  # type: ignore[attr-defined]
    return {"items": items, "kept": kept, "doubled": kept.map(lambda y: doubled(y)),
            "next": [plus_one_or_none(kept[i]) for i in range(KEPT_READERS)]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.lists(st.integers(0, 7), min_size=20, max_size=30),
       steps=st.lists(st.one_of(
           st.tuples(st.just("set"), st.integers(0, 40), st.integers(0, 7)),
           st.tuples(st.just("push"), st.integers(0, 7)),
           st.tuples(st.just("pop"), st.integers(1, 3)),
           st.tuples(st.just("remove"), st.integers(0, 7))), max_size=10))
def test_a_map_over_a_filter_and_readers_of_its_indices_match_python(
        start: list[int], steps: list[Any]) -> None:
    """The filter names the output indices it changed (a replaced element; from an
    insert or removal on, every later one); the map over it and the readers of single
    indices, narrowed to those, still equal Python's filter and map after every edit."""
    rt = Runtime()
    try:
        values = list(start)
        result = rt.run(FilterThenMap, {"items": values}, cause="filter-then-map")
        src = result.key("items")
        for step in steps:
            _edit_in_place(src, values, step)
            kept = [x for x in values if x % 2 == 1]
            assert result.key("kept").get() == kept
            assert result.key("doubled").get() == [2 * x for x in kept]
            assert result.key("next").get() == [
                kept[i] + 1 if i < len(kept) else None for i in range(KEPT_READERS)]
        assert rt.errors == []
    finally:
        rt.close()


def test_a_map_over_a_filter_is_told_the_one_output_index_that_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An element replaced by another the filter keeps changes one output index: the
    map over the output re-keys that index (``_written_indices``), not the list."""
    rt = Runtime()
    values = list(range(100))
    result = rt.run(FilterThenMap, {"items": values}, cause="told-one-index")
    told = _told_indices(monkeypatch)
    result.key("items", 51).set(1001)  # 51 is the 26th odd number: output index 25
    assert result.key("doubled", 25).get() == 2002
    assert told == [{51}, {25}]  # the filter's keying, then the map over its output
    rt.close()


@lift
def total_of(values):  # type: ignore[no-untyped-def]
    return sum(values)


@lift
def field_v(item):  # type: ignore[no-untyped-def]
    return item["v"] * 3


@pattern
def TotalOfMap(items: list[int]) -> Any:
    return {"items": items, "total": total_of(items.map(lambda x: doubled(x)))}  # type: ignore[attr-defined]


@pattern
def TotalOfRecords(items):  # type: ignore[no-untyped-def]
    return {"items": items, "total": total_of(items.map(lambda r: field_v(r)))}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_total_over_a_maps_outputs_follows_every_edit(tmp_path: Path, store: str) -> None:
    """A lift reading all N outputs of a map (each a child's result linking to its lift's
    output: two hops, read in one pass) equals Python's sum after element writes,
    pushes, removes and record field writes (a child recomputing in place, no new
    document); after one element changes, its subscription is patched, not made anew."""
    rt = runtime_on(store, tmp_path, "total.db")
    values = list(range(80))
    result = rt.run(TotalOfMap, {"items": values}, cause="total-of-map")
    records_cell = rt.get_cell("total-records")
    records_cell.set([{"v": i} for i in range(40)])
    records = rt.run(TotalOfRecords, {"items": records_cell}, cause="total-of-records")
    patched: list[bool] = []
    patch = rt.scheduler._patch_reads

    def counting(action: Any, reads: Sequence[Any]) -> bool:
        patched.append(patch(action, reads))
        return patched[-1]

    rt.scheduler._patch_reads = counting  # type: ignore[method-assign]
    rng = random.Random(3)
    vs = [i for i in range(40)]
    for step in range(30):
        if rng.random() < 0.3:
            k = rng.randrange(40)
            records_cell.key(k).key("v").set(-step)
            vs[k] = -step
        else:
            _push_remove_or_set(rng, result.key("items"), values, 1000 + step)
        assert result.key("total").get() == 2 * sum(values)
        assert records.key("total").get() == 3 * sum(vs)
    assert True in patched
    assert not rt.errors
    rt.close()


# ------------------------------------------------------------------ lifts over all elements


@lift
def summed(values: list[int]) -> int:
    return sum(values)


@lift
def summed_v(records: list[dict[str, int]]) -> int:
    return sum(record["v"] for record in records)


@lift
def twice(x: int) -> int:
    return 2 * x


@pattern
def Totals(items: Any, records: Any) -> Any:
    return {"items": items, "records": records,
            "of_map": summed(items.map(lambda x: twice(x))), "of_records": summed_v(records)}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_lifts_reading_every_output_of_a_map_or_every_record_match_python(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lift over a map's N outputs and one over N record documents (read in one pass,
    the unchanged elements from the last read: ``cells._linked_values``) compute what
    Python computes after random element writes, pushes and removals, on the memory
    store and on SQLite (where a settle reads through its write-back layer)."""
    one_pass = cells._linked_values
    taken = Counter[bool]()

    def counted(*args: Any) -> Any:
        found = one_pass(*args)
        taken[found is not None] += 1
        return found

    monkeypatch.setattr(cells, "_linked_values", counted)
    rng = random.Random(18)
    rt = runtime_on(store, tmp_path)
    items = rt.get_cell("totals-items")
    records = rt.get_cell("totals-records")
    values = [rng.randint(-50, 50) for _ in range(40)]
    fields = [rng.randint(-50, 50) for _ in range(40)]
    items.set(values)
    records.set([{"v": v} for v in fields])  # each its own document
    result = rt.run(Totals, {"items": items, "records": records}, cause="totals")
    for _ in range(120):
        roll = rng.random()
        if roll < 0.5:
            k = rng.randrange(len(values))
            values[k] = rng.randint(-50, 50)
            items.key(k).set(values[k])
        elif roll < 0.8:
            k = rng.randrange(len(fields))
            fields[k] = rng.randint(-50, 50)
            records.key(k).key("v").set(fields[k])
        elif roll < 0.9:
            values.append(rng.randint(-50, 50))
            items.push(values[-1])
        elif len(values) > 1:
            values.pop()
            items.set(list(values))
        rt.idle()
        assert result.of_map.get() == sum(2 * v for v in values)
        assert result.of_records.get() == sum(fields)
    assert not rt.errors
    assert taken[True] > 100  # the one-pass read served the runs
    rt.close()
