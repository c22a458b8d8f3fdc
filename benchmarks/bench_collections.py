"""Collections at scale (issue 18): ``map`` / ``filter`` over a collection, one element changed,
cost O(changed)?

    .venv/bin/python -m benchmarks.bench_collections [--quick] [--readme] [--writes N]

Side by side, in one process and one alternation per shape (both sizes and every
contestant; ``benchmarks.measure_interleaved`` through ``bench_peers._measure``), so
the ratio ck(10k) / ck(1k) sees the same load: cellkernel on the memory store, and the fastest
fine-grained peers of ``bench_peers`` (``observ``, ``pyreactivity`` imported as
``reactivity``, ``nervio``, ``signe``, ``reaktiv``), each in both of its modes
(pull: computeds read after the write; eager: an effect per output) and reported
in the faster one.  Shapes, each at N = 1 000 and N = 10 000:

1. **scalars**: ``items`` holds N plain ints (one document); the pattern
   ``M(items) = {"items": items, "out": items.map(lambda x: double(x))}``; a
   write is ``items.key(k).set(v)`` + ``rt.idle()`` + ``result.out.key(k).get()``.
   Peers: one signal per element, one computed per element (``bench_peers.peer_items``).
2. **records**: ``items`` holds N ``{"v": i}`` objects, each stored as its own
   document (as ``bench_peers.ck_records``); a write is
   ``items.key(k).key("v").set(v)``.  Peers: one signal per record holding a dict.
3. **inline argument**: ``rt.run(M, {"items": [0, …, N-1]})`` (the list lives in
   the instance's argument document); a write is ``result.items.key(k).set(v)``
   (the result's ``items`` field redirects to the argument).  Peers: as 1.
4. **lift per element**: no ``map``: a pattern with one lift per element of its
   inline list argument, ``E(xs) = {"xs": xs, "out": [double(xs[i]) for i in
   range(N)]}``, so N actions read one document, each at its own index; a write is
   ``result.xs.key(k).set(v)``.  The scheduler narrows the paths it compares to those
   the write went through (``reactive/path_groups.py``).  Peers: as 1.
5. **map of a map**: ``items`` as in 1; ``MM(items) = {"items": items, "out":
   items.map(lambda x: twice(x)).map(lambda y: plus_one(y))}``; a write is
   ``items.key(k).set(-v)`` + idle + read ``result.out.key(k)`` (negative: an element
   equal to another would shift the occurrence numbers of the equal ones and move
   their children, more work than one element's, in the peers too).  The second map is told
   which index the first one wrote (``Scheduler.note_written`` for a ``KEYED`` reader).
   Peers: a signal, a computed of it and a counted computed of that, per element.
6. **reader per map index**: ``out = items.map(lambda x: twice(x))`` and ``next =
   [plus_one(out[i]) for i in range(N)]``: N lifts each read one index of the map's
   output, whose children each write their own index (``CollectionRun.move``); a write
   is ``items.key(k).set(-v)``, the read ``result.next.key(k)``.  Peers: as 5.
7. **total of a map**: ``total(items.map(lambda x: double(x)))``: one lift reads all N
   outputs of the map (each a child's result linking to its lift's output), so a write
   is O(N) in every contestant; what is compared is the constant (the growth is not
   marked against 1.2).  Peers: a signal and a computed per element, one computed
   summing them.
8. **total of records**: ``items`` as in 2 (N ``{"v": i}`` documents); ``total_v(items)``:
   one lift reads all N records and sums their ``v`` (O(N) per write in every
   contestant, as 7); a write is ``items.key(k).key("v").set(v)``, the read
   ``result.total``.  Work: ``total_v``'s runs.  Peers: a signal per record holding a
   dict, one counted computed summing them.
9. **push + remove**: on the scalar instance of 1, ``items.push(x)`` + idle + read
   ``result.out.key(N)``, then ``items.remove(x)`` + idle, so every sample starts
   from N elements (a growing list would give the peers, whose per-write cost is a
   few µs and whose samples hold thousands of writes, a list many times N).  The
   figure is that round trip.  Peers: a signal holding the tuple of per-element
   signals and a ``computed`` that maps it, reusing the per-element computeds of
   the elements still at the same position (an index-keyed ``mapArray``) and
   returning them; push sets the tuple with one new element signal, the read
   evaluates the new element's computed, remove sets the tuple without it.
10. **filter**: ``items`` holds N plain ints (one document, as 1, its own runtime);
   the pattern ``F(items) = {"items": items, "kept": items.filter(lambda x:
   is_even(x))}``; a write is ``items.key(k).set(w)`` + ``rt.idle()`` + read
   ``result.kept.key(j).get()``, ``j = (k + 1) // 2`` (the evens before ``k``):
   ``w`` alternates even and odd (and is negative and new every write, so it never
   equals another element), so the element goes in and out of the output and every
   write changes it; ``kept[j]`` is ``w`` when it is even, else the next even element
   after ``k``, so the read tells the current output from the last one.  One element,
   not ``result.kept.get()``: reading the whole list is O(N) itself (about 60 µs at
   1 000, 630 µs at 10 000, as much as the write), and would hide whether the
   filter is O(changed); the whole list is checked against Python's ``filter`` after
   timing.  Elements are keyed by value, so the new value's key starts one child:
   one ``is_even`` run per write.  Peers: one signal per element, one ``computed``
   predicate per element, and one ``computed`` collecting, in order, the elements
   whose predicate is true (it reads all N predicates, so a peer's write is O(N):
   that is how a filter is written with these libraries, none has an incremental
   one; ``nervio`` and ``reactivity`` grow faster than N, 100-160 times from 1 000 to
   10 000, seconds per write at 10 000); the read is its ``[j]``.

Work per write is counted for every contestant and must be the same in every
sample: the per-element function's runs (cellkernel: a counter inside the
``double`` / ``is_even`` lift; peers: inside the per-element computed), which must be
exactly 1.  ``rt.scheduler.run_count`` per write is reported next to it (it also
counts the ``map`` node itself when that re-runs, a filter's keying and collect).

Memory: ``--writes`` scalar-shape writes at N = 1 000 under ``tracemalloc``
(traced bytes after a collection, before and after) and the store's document
count (``len(rt.store._docs)``); the issue's target is flat memory.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import write_readme_block
from benchmarks.bench_core import _double, _inc
from benchmarks.bench_core import _rk_node as _node  # a counted compute, shared
from benchmarks.bench_peers import (
    PEER_LIMIT,
    Peer,
    PeerShape,
    _measure,
    _peers,
    _sink,
    _t,
    _with_limit,
    by_index,
    machine_note,
    peer_items_at,
)
from cellkernel import Cell, Runtime, lift, pattern

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- collections:begin -->"
END = "<!-- collections:end -->"

SIZES = (1_000, 10_000)
MEMORY_N = 1_000
MEMORY_WRITES = 100_000
QUICK_MEMORY_WRITES = 10_000
#: a time budget for the memory loop (it stops early and says so)
MEMORY_BUDGET = 1_800.0
QUICK_MEMORY_BUDGET = 8.0
SHAPES = ("scalars", "records", "inline argument", "lift per element", "map of a map",
          "reader per map index", "total of a map", "total of records", "push + remove",
          "filter")
#: shapes whose write is O(N) by nature (a lift reading every element): no 1.2 target
LINEAR_SHAPES = frozenset({"total of a map", "total of records"})

#: runs of the per-element lifts, counted by every runtime's ``on_run`` (``counted``)
LIFT_RUNS = [0]
#: the per-element lifts' node names
LIFTS = frozenset({"double", "double_v", "is_even", "plus_one", "total_v"})


# The per-element functions are pure, as a user's would be, so a run may take the
# compiled plan (``patterns/lift_plans.py``); a counter inside them would reach a
# global and keep every run on the general path.  Their runs are counted by the
# scheduler's ``on_run`` hook instead, which sees planned and general runs alike.
@lift
def double(x: int) -> int:
    return x * 2


@lift
def double_v(item: dict[str, Any]) -> int:
    return int(item["v"]) * 2


@lift
def is_even(x: int) -> bool:
    return x % 2 == 0


@lift
def twice(x: int) -> int:  # (the first of two levels: not counted)
    return x * 2


@lift
def plus_one(x: int) -> int:
    return x + 1


@lift
def total(values: list[int]) -> int:
    return sum(values)


@lift
def total_v(records: list[dict[str, int]]) -> int:  # (counted: the one run per write)
    return sum(record["v"] for record in records)


def _count_lift(action: Any) -> None:
    if action.name in LIFTS:
        LIFT_RUNS[0] += 1


def counted() -> Runtime:
    """A runtime whose per-element lift runs are counted in ``LIFT_RUNS``."""
    rt = Runtime()
    rt.scheduler.on_run.append(_count_lift)
    return rt


@pattern
def M(items: Cell[list[int]]) -> Any:
    return {"items": items, "out": items.map(lambda x: double(x))}


@pattern
def R(items: Cell[list[dict[str, int]]]) -> Any:
    return {"items": items, "out": items.map(lambda item: double_v(item))}


@pattern
def F(items: Cell[list[int]]) -> Any:
    return {"items": items, "kept": items.filter(lambda x: is_even(x))}


_causes = iter(range(10**9))


def _cause(kind: str) -> str:
    return f"collections-{kind}-{os.getpid()}-{next(_causes)}"


# --------------------------------------------------------------------------- cellkernel


class CkCase:
    """One cellkernel instance and its timed write; counts lift runs and scheduler runs."""

    def __init__(self, rt: Runtime, write: Callable[[int], Any], read: Callable[[], Any],
                 expect: Callable[[int], Any], after: Callable[[int], Any] | None = None) -> None:
        self.rt = rt
        self.write = write
        self.read = read
        self.expect = expect
        self.after = after
        self.last = 0
        self.got: Any = None
        self.sched_runs: set[int] = set()

    def step(self, value: int) -> None:
        before = self.rt.scheduler.run_count
        self.write(value)
        self.rt.idle()
        self.got = self.read()
        if self.after is not None:
            self.after(value)
            self.rt.idle()
        self.sched_runs.add(self.rt.scheduler.run_count - before)
        self.last = value

    def runs(self) -> int:
        return LIFT_RUNS[0]

    def check(self) -> None:
        assert self.got == self.expect(self.last), (self.got, self.expect(self.last))

    def close(self) -> None:
        pass  # the runtime may be shared by two shapes; closed by its owner


def _scalar_items(rt: Runtime, n: int) -> tuple[Cell[Any], Cell[Any]]:
    items = rt.get_cell(_cause("scalars"))
    items.set(list(range(n)))
    result = rt.run(M, {"items": items}, cause=_cause("map"))
    return items, result


def ck_scalars(rt: Runtime, items: Cell[Any], result: Cell[Any], n: int) -> CkCase:
    k = n // 2
    return CkCase(rt, items.key(k).set, result.out.key(k).get, lambda v: 2 * v)


def ck_records(rt: Runtime, n: int) -> CkCase:
    items = rt.get_cell(_cause("records"))
    items.set([{"v": i} for i in range(n)])  # every object becomes its own document
    result = rt.run(R, {"items": items}, cause=_cause("map"))
    k = n // 2
    return CkCase(rt, items.key(k).key("v").set, result.out.key(k).get, lambda v: 2 * v)


def per_element_pattern(n: int) -> Any:
    @pattern
    def E(xs: list[int]) -> Any:
        return {"xs": xs, "out": [double(xs[i]) for i in range(n)]}

    return E


def ck_per_element(rt: Runtime, n: int) -> CkCase:
    result = rt.run(per_element_pattern(n), {"xs": list(range(n))}, cause=_cause("element"))
    k = n // 2
    assert result.out.key(k).get() == 2 * k
    return CkCase(rt, result.xs.key(k).set, result.out.key(k).get, lambda v: 2 * v)


@pattern
def MM(items: Cell[list[int]]) -> Any:
    return {"items": items, "out": items.map(lambda x: twice(x)).map(lambda y: plus_one(y))}


def ck_map_of_map(rt: Runtime, n: int) -> CkCase:
    items = rt.get_cell(_cause("map-of-map"))
    items.set(list(range(n)))
    result = rt.run(MM, {"items": items}, cause=_cause("map-of-map"))
    return _negative_writes(rt, items, result.out, n)


def _negative_writes(rt: Runtime, items: Cell[Any], out: Cell[Any], n: int) -> CkCase:
    """Writes of ``-v`` at N // 2 (never equal to another element, which would shift
    the occurrence numbers of equal ones and move their children), read at N // 2."""
    k = n // 2
    target = items.key(k)
    return CkCase(rt, lambda v: target.set(-v), out.key(k).get, lambda v: -2 * v + 1)


def per_index_pattern(n: int) -> Any:
    @pattern
    def P(items: Cell[list[int]]) -> Any:
        out = items.map(lambda x: twice(x))
        return {"items": items, "out": out, "next": [plus_one(out[i]) for i in range(n)]}

    return P


def ck_per_index(rt: Runtime, n: int) -> CkCase:
    items = rt.get_cell(_cause("per-index"))
    items.set(list(range(n)))
    result = rt.run(per_index_pattern(n), {"items": items}, cause=_cause("per-index"))
    return _negative_writes(rt, items, result.next, n)


@pattern
def TM(items: Cell[list[int]]) -> Any:
    return {"items": items, "total": total(items.map(lambda x: double(x)))}


def ck_total(rt: Runtime, n: int) -> CkCase:
    items = rt.get_cell(_cause("total"))
    items.set(list(range(n)))
    result = rt.run(TM, {"items": items}, cause=_cause("total"))
    k = n // 2
    rest = 2 * (sum(range(n)) - k)
    return CkCase(rt, items.key(k).set, result.total.get, lambda v: rest + 2 * v)


@pattern
def TR(items: Cell[list[dict[str, int]]]) -> Any:
    return {"items": items, "total": total_v(items)}


def ck_total_records(rt: Runtime, n: int) -> CkCase:
    items = rt.get_cell(_cause("total-records"))
    items.set([{"v": i} for i in range(n)])  # every object becomes its own document
    result = rt.run(TR, {"items": items}, cause=_cause("total-records"))
    k = n // 2
    rest = sum(range(n)) - k
    return CkCase(rt, items.key(k).key("v").set, result.total.get, lambda v: rest + v)


def ck_inline(rt: Runtime, n: int) -> CkCase:
    result = rt.run(M, {"items": list(range(n))}, cause=_cause("inline"))
    k = n // 2
    assert result.items.key(k).get() == k
    return CkCase(rt, result.items.key(k).set, result.out.key(k).get, lambda v: 2 * v)


def ck_push(rt: Runtime, items: Cell[Any], result: Cell[Any], n: int) -> CkCase:
    def push(v: int) -> None:
        items.push(-v)  # negative: never equal to an element already there

    def remove(v: int) -> None:
        items.remove(-v)

    return CkCase(rt, push, result.out.key(n).get, lambda v: -2 * v, after=remove)


class InOut:
    """A filter write's value: new every write, even and odd in turn, never in ``0..n-1``.

    Element ``k`` of ``0, 1, …, n-1`` is written; ``kept[(k + 1) // 2]`` is then the
    value when it is even, else the next even element after ``k``.
    """

    def __init__(self, k: int) -> None:
        self.flip = 0
        self.last = 0
        self.next_even = k + 1 if (k + 1) % 2 == 0 else k + 2

    def __call__(self, value: int) -> int:
        self.flip ^= 1
        self.last = -(10 + 2 * value) - self.flip  # values are -1, then 1, 2, 3, …
        return self.last

    def expected(self) -> int:
        return self.last if self.last % 2 == 0 else self.next_even


class FilterCase(CkCase):
    """``CkCase`` whose check also compares the whole output with Python's ``filter``."""

    def __init__(self, rt: Runtime, items: Cell[Any], result: Cell[Any], n: int) -> None:
        k = n // 2
        assert k + 2 < n
        target, kept = items.key(k), result.kept.key((k + 1) // 2)
        value = InOut(k)

        def write(v: int) -> None:
            target.set(value(v))

        super().__init__(rt, write, kept.get, lambda v: value.expected())
        self.items, self.result = items, result

    def check(self) -> None:
        super().check()
        want = [x for x in self.items.get() if x % 2 == 0]
        got = self.result.kept.get()
        assert got == want, f"kept has {len(got)} elements, expected {len(want)}"


def ck_filter(rt: Runtime, n: int) -> CkCase:
    items = rt.get_cell(_cause("filter"))
    items.set(list(range(n)))
    result = rt.run(F, {"items": items}, cause=_cause("filter"))
    return FilterCase(rt, items, result, n)


# --------------------------------------------------------------------------- peers


class _MapArray:
    """A peer's index-keyed map: reuse the computed of an element still at its position."""

    def __init__(self, p: Peer, read_list: Callable[[], Any], counter: list[int]) -> None:
        self.p = p
        self.read_list = read_list
        self.counter = counter
        self.sources: list[Any] = []
        self.nodes: list[Any] = []
        self.reads: list[Callable[[], Any]] = []

    def __call__(self) -> list[Callable[[], Any]]:
        current = self.read_list()
        sources, reads = self.sources, self.reads
        for i, sig in enumerate(current):
            if i < len(sources) and sources[i] is sig:
                continue
            node = self.p.computed(_node(self.counter, self.p.read_signal(sig), _double))
            if i < len(sources):
                sources[i], self.nodes[i], reads[i] = sig, node, self.p.reader(node)
            else:
                sources.append(sig)
                self.nodes.append(node)
                reads.append(self.p.reader(node))
        del sources[len(current):], self.nodes[len(current):], reads[len(current):]
        return list(reads)


def peer_two_levels(p: Peer, n: int, eager: bool) -> PeerShape:
    """A signal per element, a computed of it, a computed of that (counted), read by index."""
    counter = [0]
    srcs = [p.signal(i) for i in range(n)]
    mids = [p.computed(_uncounted(p.read_signal(s), _double)) for s in srcs]
    nodes = [p.computed(_node(counter, p.reader(m), _inc)) for m in mids]
    return by_index(p, srcs, nodes, counter, eager, [srcs, mids, nodes], lambda v: -2 * v + 1,
                    lambda v: -v)


def _uncounted(read: Callable[[], Any], fn: Callable[[Any], Any]) -> Callable[[], Any]:
    return lambda: fn(read())


def peer_total(p: Peer, n: int, eager: bool) -> PeerShape:
    """A signal and a counted computed per element, and one computed summing them all."""
    counter = [0]
    srcs = [p.signal(i) for i in range(n)]
    nodes = [p.computed(_node(counter, p.read_signal(s), _double)) for s in srcs]
    reads = [p.reader(node) for node in nodes]
    whole = p.computed(lambda: sum(r() for r in reads))
    read, effects = _read_of(p, p.reader(whole), eager)
    k = n // 2
    rest = 2 * (sum(range(n)) - k)
    return PeerShape(p.writer(srcs[k]), read, counter, [srcs, nodes, whole], effects,
                     lambda v: rest + 2 * v, int)


def _read_of(p: Peer, read: Callable[[], Any], eager: bool
             ) -> tuple[Callable[[], Any], list[Any]]:
    """How a write's result is read: ``read`` pulled (evaluated once now, so a write
    re-runs only what it changed), or the value an effect on it keeps; and that effect."""
    if not eager:
        read()
        return read, []
    box: list[Any] = [None]
    return (lambda: box[0]), [p.effect(_sink(read, box))]


def _peer_total_at(n: int) -> Callable[[Peer, bool], PeerShape]:
    return lambda p, eager: peer_total(p, n, eager)


def _sum_v(records: list[dict[str, int]]) -> int:
    return sum(record["v"] for record in records)


def peer_total_records(p: Peer, n: int, eager: bool) -> PeerShape:
    """A signal per record holding a dict, and one counted computed summing their ``v``."""
    counter = [0]
    srcs = [p.signal({"v": i}) for i in range(n)]
    reads = [p.read_signal(s) for s in srcs]
    whole = p.computed(_node(counter, lambda: [r() for r in reads], _sum_v))
    read, effects = _read_of(p, p.reader(whole), eager)
    k = n // 2
    rest = sum(range(n)) - k
    return PeerShape(p.writer(srcs[k]), read, counter, [srcs, whole], effects,
                     lambda v: rest + v, lambda v: {"v": v})


def _peer_total_records_at(n: int) -> Callable[[Peer, bool], PeerShape]:
    return lambda p, eager: peer_total_records(p, n, eager)


def _peer_two_levels_at(n: int) -> Callable[[Peer, bool], PeerShape]:
    return lambda p, eager: peer_two_levels(p, n, eager)


def peer_push(p: Peer, n: int, eager: bool) -> PeerShape:
    counter = [0]
    elements = tuple(p.signal(i) for i in range(n))
    lst = p.signal(elements)
    read_list = p.read_signal(lst)
    write_list = p.writer(lst)
    mapped = p.computed(_MapArray(p, read_list, counter))
    read_mapped = p.reader(mapped)

    def last_output() -> Any:
        return read_mapped()[-1]()

    box: list[Any] = [None]
    effects = [p.effect(_sink(last_output, box))] if eager else []
    if not eager:
        for r in read_mapped():
            r()  # first evaluation, so a push runs only the new element
    state = {"got": None}

    def write(v: int) -> None:
        write_list((*read_list(), p.signal(-v)))
        state["got"] = box[0] if eager else last_output()
        write_list(read_list()[:-1])

    shape = PeerShape(write, lambda: state["got"], counter, [elements, lst, mapped], effects,
                      lambda v: -2 * v)
    return shape


def _is_even(x: int) -> bool:
    return x % 2 == 0


def _collector(values: list[Callable[[], Any]], keeps: list[Callable[[], Any]]
               ) -> Callable[[], list[Any]]:
    def collect() -> list[Any]:
        return [value() for value, keep in zip(values, keeps, strict=True) if keep()]

    return collect


def peer_filter(p: Peer, n: int, eager: bool) -> PeerShape:
    """A signal and a counted predicate ``computed`` per element, a ``computed`` collecting
    the elements kept (O(N): it reads every predicate); the write stores ``InOut``'s value."""
    counter = [0]
    srcs = [p.signal(i) for i in range(n)]
    values = [p.read_signal(s) for s in srcs]
    preds = [p.computed(_node(counter, read, _is_even)) for read in values]
    kept = p.computed(_collector(values, [p.reader(pred) for pred in preds]))
    read_kept = p.reader(kept)
    k = n // 2
    j = (k + 1) // 2

    def kept_j() -> Any:
        return read_kept()[j]

    read, effects = _read_of(p, kept_j, eager)
    value = InOut(k)
    return PeerShape(p.writer(srcs[k]), read, counter, [srcs, preds, kept], effects,
                     lambda v: value.expected(), value)


def _peer_filter_at(n: int) -> Callable[[Peer, bool], PeerShape]:
    return lambda p, eager: peer_filter(p, n, eager)


def _peer_push_at(n: int) -> Callable[[Peer, bool], PeerShape]:
    return lambda p, eager: peer_push(p, n, eager)


# --------------------------------------------------------------------------- driver


@dataclass
class Cellk:
    time: float | None = None
    error: str = ""
    work: int | None = None
    sched: str = ""


@dataclass
class Result:
    shape: str
    n: int
    ck: Cellk
    peers: dict[str, float] = field(default_factory=dict)  # "label mode" -> seconds
    peer_work: set[int] = field(default_factory=set)

    def best(self) -> tuple[str, float]:
        return min(self.peers.items(), key=lambda kv: kv[1])

    def best_of(self, label: str) -> float | None:
        times = [t for k, t in self.peers.items() if k.rsplit(" ", 1)[0] == label]
        return min(times) if times else None


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text if len(text) <= 160 else text[:157] + "…"


def peer_graphs(peers: list[Peer], build: Callable[[Peer, bool], PeerShape],
                modes: tuple[bool, ...]) -> list[tuple[str, PeerShape]]:
    """Every peer in every mode of ``modes`` (False: pull, True: eager), built by ``build``."""
    return [(f"{p.label} {'eager' if eager else 'pull'}",
             _with_limit(PEER_LIMIT, functools.partial(build, p, eager)))
            for p in peers for eager in modes]


def close_all(graphs: list[tuple[str, PeerShape]]) -> None:
    for _, graph in graphs:
        graph.close()
    graphs.clear()


def bench_shape(shape: str, cks: dict[int, Callable[[], CkCase]],
                peers: dict[int, list[tuple[str, PeerShape]]], *, quick: bool) -> list[Result]:
    """Sample cellkernel's write at every size next to the peers' graphs (built, and closed,
    by the caller), all in one alternation, so the ratio between sizes sees the same load."""
    entries: list[tuple[str, Any, int | None]] = []
    cells = {n: Cellk() for n in cks}
    cases: dict[int, CkCase] = {}
    for n, ck in cks.items():
        try:
            case = ck()
            case.step(-1)  # one untimed write: it must work before it is sampled
            cases[n] = case
            entries.append((f"cellkernel {n}", case, None))
        except Exception as exc:  # report it in the table and carry on with the peers
            cells[n].error = _error_text(exc)
    for n, graphs in peers.items():
        entries += [(f"{name} {n}", graph, None) for name, graph in graphs]
    warmup, repeats = (1, 4) if quick else (2, 7)
    sample = 0.01 if quick else 0.015
    # the graphs just built (and the runtime's heap) would make the collection before
    # every sample take most of a second: freeze them (as ``python -m benchmarks`` does;
    # no collection first: what garbage there is waits until the unfreeze)
    outer_frozen = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        try:
            timed = _measure(entries, warmup=warmup, repeats=repeats, sample_seconds=sample)
        except Exception as exc:
            if not cases:
                raise
            for n in cases:
                cells[n].error = _error_text(exc)
            cases.clear()
            timed = _measure([e for e in entries if not e[0].startswith("cellkernel ")],
                             warmup=warmup, repeats=repeats, sample_seconds=sample)
    finally:
        if not outer_frozen:
            gc.unfreeze()
    results = {n: Result(shape, n, cells[n]) for n in sorted(set(cks) | set(peers))}
    for n, case in cases.items():
        try:
            case.check()
        except AssertionError as exc:
            cells[n].error = f"read a wrong value: {exc}"
    for n, graphs in peers.items():
        for name, graph in graphs:
            try:
                graph.check()
            except AssertionError as exc:
                raise AssertionError(f"{shape} at {n}: {name} read a wrong value: {exc}") from exc
    for key, (seconds, work) in timed.items():
        name, size = key.rsplit(" ", 1)
        n = int(size)
        if name == "cellkernel":
            cell = cells[n]
            if n in cases and not cell.error:
                cell.time, cell.work = seconds, work
                cell.sched = "/".join(str(r) for r in sorted(cases[n].sched_runs))
                if work != 1:
                    cell.error = f"{work} per-element lift runs per write, expected exactly 1"
        else:
            results[n].peers[name] = seconds
            if work is not None:
                results[n].peer_work.add(work)
    for r in results.values():
        if r.peer_work != {1}:
            raise AssertionError(f"{shape} at {r.n}: peers' work per write {r.peer_work} != {{1}}")
    return list(results.values())


def bench_sizes(peers: list[Peer], sizes: tuple[int, ...], quick: bool,
                log: Callable[[str], None]) -> tuple[list[Result], dict[str, float]]:
    """Every shape, all sizes of a shape in one alternation.  One cellkernel instance per
    size serves scalars and push; one peer graph set serves scalars and the inline
    argument (the peers have no such distinction)."""
    results: list[Result] = []
    setups: dict[str, float] = {}
    modes = (False,) if quick else (False, True)

    def timed_setup(key: str, make: Callable[[], CkCase]) -> Callable[[], CkCase]:
        def build() -> CkCase:
            start = time.perf_counter()
            try:
                return make()
            finally:
                setups.setdefault(key, time.perf_counter() - start)

        return build

    def done(rows: list[Result]) -> None:
        results.extend(rows)
        for r in rows:
            log(_line(r))

    def on_own_runtimes(shape: str, make: Callable[[Runtime, int], CkCase],
                        graphs: dict[int, list[tuple[str, PeerShape]]]) -> None:
        """``shape`` on a fresh counted runtime per size (set-up timed), closed after."""
        own = {n: counted() for n in sizes}
        done(bench_shape(shape, {n: timed_setup(f"{shape} {n:,}",
                                                functools.partial(make, own[n], n))
                                 for n in sizes}, graphs, quick=quick))
        for rt in own.values():
            rt.close()

    def against(build_at: Callable[[int], Callable[[Peer, bool], PeerShape]],
                *shapes: tuple[str, Callable[[Runtime, int], CkCase]]) -> None:
        """``shapes``, each on runtimes of its own, against one set of peer graphs per size."""
        graphs = {n: peer_graphs(peers, build_at(n), modes) for n in sizes}
        for shape, make in shapes:
            on_own_runtimes(shape, make, graphs)
        for built in graphs.values():
            close_all(built)

    runtimes = {n: counted() for n in sizes}
    shared: dict[int, tuple[Cell[Any], Cell[Any]]] = {}

    def on_shared(n: int, make: Callable[[Runtime, Cell[Any], Cell[Any], int], CkCase]
                  ) -> Callable[[], CkCase]:
        def build() -> CkCase:
            if n not in shared:
                shared[n] = _scalar_items(runtimes[n], n)
            return make(runtimes[n], *shared[n], n)

        return build

    items = {n: peer_graphs(peers, peer_items_at(n), modes) for n in sizes}
    done(bench_shape("scalars", {n: timed_setup(f"scalars {n:,}", on_shared(n, ck_scalars))
                                 for n in sizes}, items, quick=quick))
    on_own_runtimes("inline argument", ck_inline, items)
    on_own_runtimes("lift per element", ck_per_element, items)
    for graphs in items.values():
        close_all(graphs)
    against(_peer_two_levels_at, ("map of a map", ck_map_of_map),
            ("reader per map index", ck_per_index))
    against(_peer_total_at, ("total of a map", ck_total))
    against(_peer_total_records_at, ("total of records", ck_total_records))
    pushes = {n: peer_graphs(peers, _peer_push_at(n), modes) for n in sizes}
    done(bench_shape("push + remove", {n: on_shared(n, ck_push) for n in sizes}, pushes,
                     quick=quick))
    for graphs in pushes.values():
        close_all(graphs)
    for rt in runtimes.values():
        rt.close()
    shared.clear()
    against(functools.partial(peer_items_at, records=True), ("records", ck_records))
    against(_peer_filter_at, ("filter", ck_filter))
    order = {s: i for i, s in enumerate(SHAPES)}
    results.sort(key=lambda r: (order[r.shape], r.n))
    return results, setups


_T0 = time.perf_counter()


def _line(r: Result) -> str:
    name, best = r.best()
    ck = r.ck.error if r.ck.error and r.ck.time is None else _t(r.ck.time)
    return f"  [{time.perf_counter() - _T0:5.0f} s] {r.shape} N={r.n:,}: cellkernel {ck} " \
           f"(sched runs {r.ck.sched or '—'}); fastest peer {name} {_t(best)}"


@dataclass
class Memory:
    n: int
    writes: int
    planned: int
    seconds: float
    traced_before: int
    traced_after: int
    docs_before: int
    docs_after: int
    first_ms: float
    last_ms: float
    reaktiv_growth: int | None = None
    error: str = ""


def bench_memory(n: int, writes: int, budget: float) -> Memory:
    """``writes`` scalar-shape writes at ``n``; traced bytes and documents before and after."""
    rt = counted()
    items, result = _scalar_items(rt, n)
    k = n // 2
    target, out = items.key(k), result.out.key(k)
    for v in range(3):  # warm: caches, first child instance re-runs
        target.set(v)
        rt.idle()
    docs = rt.store._docs  # type: ignore[attr-defined]
    gc.collect()
    tracemalloc.start()
    done, error = 0, ""
    try:
        before = tracemalloc.get_traced_memory()[0]
        docs_before = len(docs)
        start = time.perf_counter()
        stamps: list[tuple[float, int]] = [(start, 0)]  # (time, writes done) every window
        window = 10
        try:
            for i in range(writes):
                if i and i % window == 0:
                    stamps.append((time.perf_counter(), i))
                    if stamps[-1][0] - start > budget:
                        break
                target.set(i + 10)
                rt.idle()
                assert out.get() == 2 * (i + 10)
                done += 1
        except Exception as exc:  # report and keep what was measured
            error = _error_text(exc)
        end = time.perf_counter()
        if done > stamps[-1][1]:
            stamps.append((end, done))
        seconds = end - start
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        docs_after = len(docs)
    finally:
        tracemalloc.stop()
    rt.close()

    def rate(a: tuple[float, int], b: tuple[float, int]) -> float:
        return (b[0] - a[0]) / max(1, b[1] - a[1])

    first = rate(stamps[0], stamps[1]) if len(stamps) > 1 else seconds
    last = rate(stamps[-2], stamps[-1]) if len(stamps) > 1 else seconds
    mem = Memory(n, done, writes, seconds, before, after, docs_before, docs_after,
                 first * 1e3, last * 1e3, error=error)
    mem.reaktiv_growth = _reaktiv_memory(n, done)
    return mem


def _reaktiv_memory(n: int, writes: int) -> int | None:
    try:
        import reaktiv
    except ImportError:
        return None
    counter = [0]
    srcs = [reaktiv.Signal(i) for i in range(n)]
    nodes = [reaktiv.Computed(_node(counter, s, _double)) for s in srcs]
    k = n // 2
    for node in nodes:
        node()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(writes):
            srcs[k].set(i + 10)
            assert nodes[k]() == 2 * (i + 10)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


# --------------------------------------------------------------------------- report


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def _ck_cell(c: Cellk) -> str:
    if c.time is None:
        return f"error: {c.error}" if c.error else "—"
    text = _t(c.time)
    return f"{text} ✗ {c.error}" if c.error else text


def _growth(shape: str, g: float | None) -> str:
    """ck(10k) / ck(1k), marked against 1.2 unless the shape is O(N) by nature."""
    if shape in LINEAR_SHAPES:
        return f"{g:.2f} (O(N): 10 is linear)" if g is not None else "—"
    return _mark(g, 1.2)


def _mark(value: float | None, target: float) -> str:
    if value is None:
        return "—"
    return f"**{value:.2f}** {'✓' if value <= target else '✗'}"


def format_results(results: list[Result], memory: Memory | None, setups: dict[str, float],
                   note: str, end_note: str) -> str:
    labels = sorted({k.rsplit(" ", 1)[0] for r in results for k in r.peers})
    lines = [f"Machine: {note} (at the start; {end_note} at the end)", "",
             "| shape | N | cellkernel | sched runs / write | reaktiv | ck / reaktiv | "
             "fastest peer | ck / fastest | ck(10k) / ck(1k) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r.shape, r.n): r for r in results}
    growth: dict[str, float | None] = {}
    for shape in SHAPES:
        small, big = by.get((shape, SIZES[0])), by.get((shape, SIZES[-1]))
        growth[shape] = (big.ck.time / small.ck.time
                         if small and big and small.ck.time and big.ck.time else None)
    for r in results:
        name, best = r.best()
        rk = r.best_of("reaktiv")
        g = growth[r.shape] if r.n == SIZES[-1] else None
        rk_ratio = _ratio(r.ck.time, rk)
        if r.shape == "scalars" and r.ck.time is not None and rk is not None:
            rk_ratio = _mark(r.ck.time / rk, 2.0)
        lines.append(
            f"| {r.shape} | {r.n:,} | {_ck_cell(r.ck)} | {r.ck.sched or '—'} | {_t(rk)} | "
            f"{rk_ratio} | {name} {_t(best)} | {_ratio(r.ck.time, best)} | "
            f"{_growth(r.shape, g) if r.n == SIZES[-1] else ''} |")
    modes = [m for m in ("pull", "eager") if any(k.endswith(f" {m}") for r in results
                                                 for k in r.peers)]
    lines += ["", f"Every peer, {' and '.join(modes)} (per write):", "",
              "| shape | N | " + " | ".join(f"{lb} {m}" for lb in labels for m in modes) + " |",
              "|---|---:|" + "---:|" * (len(modes) * len(labels))]
    for r in results:
        cells = [_t(r.peers.get(f"{lb} {mode}")) for lb in labels for mode in modes]
        lines.append(f"| {r.shape} | {r.n:,} | " + " | ".join(cells) + " |")
    works = sorted({r.ck.work for r in results if r.ck.work is not None})
    lines += ["", "Per-element function runs per write (checked the same in every sample): "
              f"cellkernel {works or '—'}, peers "
              f"{sorted(set().union(*(r.peer_work for r in results)))}. Setup, not timed per "
              "write (store the items + `rt.run`): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in setups.items()) + "."]
    if memory is not None:
        m = memory
        grown = m.traced_after - m.traced_before
        per = grown / m.writes if m.writes else 0.0
        short = "" if m.writes == m.planned else \
            f" (stopped by the time budget after {m.writes:,} of {m.planned:,})"
        rk_note = "" if m.reaktiv_growth is None else \
            f"; reaktiv, same writes: {m.reaktiv_growth / 1024:+.1f} KB"
        err = f"; stopped by an error: {m.error}" if m.error else ""
        lines += ["", f"Memory over {m.writes:,} scalar writes at N = {m.n:,}{short}, "
                  f"{m.seconds:.1f} s: tracemalloc {m.traced_before / 2**20:.2f} MB → "
                  f"{m.traced_after / 2**20:.2f} MB (**{grown / 2**20:+.2f} MB**, "
                  f"{per:+.0f} B per write); store documents {m.docs_before:,} → "
                  f"{m.docs_after:,} (**{m.docs_after - m.docs_before:+,}**, "
                  f"{(m.docs_after - m.docs_before) / max(1, m.writes):+.2f} per write); "
                  f"per write (traced, collector on) {m.first_ms:.2f} ms over the first 10, "
                  f"{m.last_ms:.2f} ms over the last 10{rk_note}{err}."]
    return "\n".join(lines)


def collect(*, quick: bool = False, writes: int | None = None,
            log: Callable[[str], None] = print) -> str:
    peers = _peers()
    note = machine_note(peers)
    started = time.perf_counter()
    planned = writes if writes is not None else (QUICK_MEMORY_WRITES if quick else MEMORY_WRITES)
    memory = None
    if planned:  # first, on a fresh heap: what the shapes leave behind slows the collector
        memory = bench_memory(MEMORY_N, planned, QUICK_MEMORY_BUDGET if quick else MEMORY_BUDGET)
        log(f"  [{time.perf_counter() - _T0:5.0f} s] memory: {memory.writes:,} writes")
    results, setups = bench_sizes(peers, SIZES, quick, log)
    end = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    text = format_results(results, memory, setups, note, end)
    return text + f"\n\n(total {time.perf_counter() - started:.0f} s" \
        f"{', --quick' if quick else ''})"


def run(*, quick: bool = False) -> list[str]:
    """Every shape, every contestant; the report's lines (for ``python -m benchmarks``)."""
    return collect(quick=quick,
                   log=lambda line: print(line, file=sys.stderr, flush=True)).splitlines()


def write_readme(text: str) -> None:
    write_readme_block(README, BEGIN, END, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_collections")
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples, peers in pull mode only; memory: 10 000 "
                             "writes or 8 s, whichever comes first")
    parser.add_argument("--readme", action="store_true",
                        help=f"write the report into benchmarks/README.md between {BEGIN} "
                             f"and {END}")
    parser.add_argument("--writes", type=int, default=None,
                        help="scalar writes for the memory check (0 skips it)")
    args = parser.parse_args(argv)
    text = collect(quick=args.quick, writes=args.writes,
                   log=lambda line: print(line, file=sys.stderr, flush=True))
    print(text)
    if args.readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    status = main()
    # Skip the interpreter's teardown: the runtimes closed above are not freed (a
    # WeakKeyDictionary in ``cellkernel.patterns.arguments`` keeps them alive through its
    # values), and deallocating their millions of objects one by one takes half a minute.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
