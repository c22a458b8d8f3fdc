"""cellkernel against the fastest fine-grained Python signal libraries, one process, one table.

    .venv/bin/python -m benchmarks.bench_peers [--quick] [--readme]

Peers (issue 20): ``observ``, ``pyreactivity`` (import ``reactivity``),
``nervio``, ``signe`` and ``reaktiv``, each measured in both of its modes and
reported in the faster one:

* **pull**: ``computed`` nodes only; a timed write sets the source and then
  reads the outputs (the tail, every leaf, the one changed item);
* **eager**: the same ``computed`` nodes with effects on the outputs (one
  summing effect for a fan-out, one effect per item), so the write itself
  propagates.

Next to them: a **hand-written push propagator** (plain Python, ``__slots__``
nodes with precomputed heights, a heap, equality cut-off; glitch-free) as the
floor, and cellkernel on the memory store and on SQLite (a file in a temporary
directory).  cellkernel's write is ``cell.set(v)`` + ``rt.idle()`` + reading
the same outputs (``result.out.get()``, ``result.leaves.get()``, …).

Shapes (N = 1 000; items and records also at 10 000): chain of N (write head,
read tail), fan-out 1 → N (read all), N independent items with one changed
(cellkernel: one ``Action`` per item through the scheduler, as ``bench_core``),
N records mapped with one field changed (cellkernel: ``items.map(...)`` over
item objects, as ``bench_patterns``; peers: one signal per record holding a
dict), build an N-chain + first evaluation, memory per node (N = 10 000 chain,
``tracemalloc``, everything the built graph keeps alive).

Every contestant of a shape is timed in the same alternation
(``benchmarks.measure_interleaved``: ``perf_counter``, calibrated samples,
median, collector off during a sample), and its work per write is counted
(recomputes) and must be the same in every sample.  Each peer is also checked
on a diamond (a → b, a → c, b + c → d): glitch-free means d never ran on a
mix of old and new inputs, in that mode.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import heapq
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import Contestant, measure_interleaved, quiet_stderr, write_readme_block
from benchmarks.bench_core import _action, _adder, _double, _double_v, _inc
from benchmarks.bench_core import _rk_node as _node  # a counted compute, shared
from benchmarks.bench_patterns import Doubled, chain_pattern, fanout_pattern
from cellkernel import Runtime

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- peers:begin -->"
END = "<!-- peers:end -->"

N = 1000
BIG = 10_000
MEMORY_NODES = 10_000
#: pull chains in every peer evaluate by recursion (a few frames per node)
PEER_LIMIT = 20_000

# --------------------------------------------------------------------------- peers


def _prop_reader(node: Any) -> Callable[[], Any]:
    """The ``value`` property's getter bound to ``node`` (no extra Python frame)."""
    return cast(Callable[[], Any], type(node).value.fget.__get__(node))


def _prop_writer(node: Any) -> Callable[[Any], Any]:
    return cast(Callable[[Any], Any], type(node).value.fset.__get__(node))


def _dispose(handle: Any) -> None:
    for name in ("dispose", "stop"):
        method = getattr(handle, name, None)
        if callable(method):
            method()
            return
    if callable(handle):  # nervio: effect() returns its disposer
        handle()


@dataclass
class Peer:
    """One library: how to make a signal / computed / effect and read or write them fast."""

    label: str
    dist: str
    signal: Callable[[Any], Any]
    computed: Callable[[Callable[[], Any]], Any]
    effect: Callable[[Callable[[], None]], Any]
    reader: Callable[[Any], Callable[[], Any]]  # node -> zero-argument read
    writer: Callable[[Any], Callable[[Any], Any]]  # signal -> one-argument write
    sig_reader: Callable[[Any], Callable[[], Any]] | None = None

    def read_signal(self, sig: Any) -> Callable[[], Any]:
        return (self.sig_reader or self.reader)(sig)

    @property
    def version(self) -> str:
        return version(self.dist)


def _peers() -> list[Peer]:
    import nervio
    import observ
    import reactivity
    import reaktiv
    import signe

    return [
        Peer("observ", "observ", observ.ref, observ.computed,
             lambda fn: observ.watch(fn, None, sync=True), lambda node: node,
             lambda r: functools.partial(r.__setitem__, "value"),
             sig_reader=lambda r: functools.partial(r.__getitem__, "value")),
        Peer("reactivity", "pyreactivity", reactivity.ref, reactivity.computed,
             reactivity.effect, _prop_reader, _prop_writer),
        Peer("nervio", "nervio", nervio.signal, nervio.computed, nervio.effect,
             lambda node: node, lambda s: s.set),
        Peer("signe", "signe", signe.signal, signe.computed, signe.effect,
             _prop_reader, _prop_writer),
        Peer("reaktiv", "reaktiv", reaktiv.Signal, reaktiv.Computed, reaktiv.Effect,
             lambda node: node, lambda s: s.set),
    ]


class PeerShape:
    """A peer graph: the write, the reads after it (pull mode), a recompute counter."""

    def __init__(self, write: Callable[[Any], Any], read: Callable[[], Any],
                 counter: list[int], keep: list[Any], effects: list[Any],
                 expect: Callable[[int], Any], make_value: Callable[[int], Any] = int) -> None:
        self.write = write
        self.read = read
        self.counter = counter
        self.keep = keep
        self.effects = effects  # kept referenced
        self.expect = expect
        self.make_value = make_value
        self.last = 0
        self.got: Any = None

    def step(self, value: int) -> None:
        self.write(self.make_value(value))
        self.got = self.read()
        self.last = value

    def runs(self) -> int:
        return self.counter[0]

    def check(self) -> None:
        assert self.got == self.expect(self.last), (self.got, self.expect(self.last))

    def close(self) -> None:
        for effect in self.effects:
            _dispose(effect)
        self.effects.clear()
        self.keep.clear()


def _sink(read: Callable[[], Any], box: list[Any]) -> Callable[[], None]:
    def effect() -> None:
        box[0] = read()

    return effect


def _summer(reads: list[Callable[[], Any]], box: list[Any]) -> Callable[[], None]:
    def effect() -> None:
        box[0] = sum(r() for r in reads)

    return effect


def peer_chain(p: Peer, n: int, eager: bool) -> PeerShape:
    counter = [0]
    src = p.signal(0)
    read = p.read_signal(src)
    nodes = []
    for _ in range(n):
        node = p.computed(_node(counter, read, _inc))
        nodes.append(node)
        read = p.reader(node)
    box = [None]
    effects = [p.effect(_sink(read, box))] if eager else []
    return PeerShape(p.writer(src), (lambda: box[0]) if eager else read, counter,
                     [src, nodes], effects, lambda v: v + n)


def peer_fanout(p: Peer, n: int, eager: bool) -> PeerShape:
    counter = [0]
    src = p.signal(0)
    read = p.read_signal(src)
    nodes = [p.computed(_node(counter, read, _adder(i))) for i in range(n)]
    reads = [p.reader(node) for node in nodes]
    box = [None]
    effects = [p.effect(_summer(reads, box))] if eager else []
    total = _summer(reads, box)

    def read_all() -> Any:
        total()
        return box[0]

    return PeerShape(p.writer(src), (lambda: box[0]) if eager else read_all, counter,
                     [src, nodes], effects, lambda v: n * v + n * (n - 1) // 2)


def peer_items(p: Peer, n: int, eager: bool, *, records: bool = False) -> PeerShape:
    counter = [0]
    srcs = [p.signal({"v": i} if records else i) for i in range(n)]
    fn = _double_v if records else _double
    nodes = [p.computed(_node(counter, p.read_signal(s), fn)) for s in srcs]
    return by_index(p, srcs, nodes, counter, eager, [srcs, nodes], lambda v: 2 * v,
                    (lambda v: {"v": v}) if records else int)


def by_index(p: Peer, srcs: list[Any], nodes: list[Any], counter: list[int], eager: bool,
             keep: list[Any], expect: Callable[[int], Any],
             make_value: Callable[[int], Any]) -> PeerShape:
    """A write of ``srcs[N // 2]`` and a read of ``nodes[N // 2]``: pulled (every node
    evaluated once first, so a write re-runs only its own item) or through an effect
    per node."""
    reads = [p.reader(node) for node in nodes]
    k = len(nodes) // 2
    boxes = [[None] for _ in nodes]
    effects = [p.effect(_sink(r, b)) for r, b in zip(reads, boxes, strict=True)] if eager else []
    if not eager:
        for r in reads:
            r()
    box = boxes[k]
    return PeerShape(p.writer(srcs[k]), (lambda: box[0]) if eager else reads[k], counter,
                     keep, effects, expect, make_value)


def peer_items_at(n: int, *, records: bool = False) -> Callable[[Peer, bool], PeerShape]:
    """``peer_items`` over ``n`` items as a ``build(peer, eager)``."""
    return lambda p, eager: peer_items(p, n, eager, records=records)


def peer_build(p: Peer, n: int, eager: bool) -> Callable[[int], None]:
    def build(value: int) -> None:
        shape = peer_chain(p, n, eager)
        if not eager:
            shape.read()
        shape.close()

    return build


def peer_diamond(p: Peer, eager: bool) -> bool:
    """a → b = a + 1, a → c = 2a, d = b + c: did d ever see b and c from different a's?"""
    seen: list[tuple[Any, Any]] = []
    a = p.signal(1)
    ra = p.read_signal(a)
    b = p.computed(lambda: ra() + 1)
    c = p.computed(lambda: ra() * 2)
    rb, rc = p.reader(b), p.reader(c)

    def dfn() -> Any:
        bv, cv = rb(), rc()
        seen.append((bv, cv))
        return bv + cv

    d = p.computed(dfn)
    rd = p.reader(d)
    out: list[Any] = []
    effect = p.effect(lambda: out.append(rd())) if eager else None
    write = p.writer(a)
    for v in (5, 9):
        write(v)
        if not eager:
            out.append(rd())
    if effect is not None:
        _dispose(effect)
    return out[-1] == 28 and all(cv == 2 * (bv - 1) for bv, cv in seen)


# --------------------------------------------------------------------------- the floor


class PNode:
    __slots__ = ("fn", "height", "inputs", "outputs", "value")

    fn: Callable[..., Any] | None
    inputs: tuple[PNode, ...]
    outputs: list[PNode]
    height: int
    value: Any

    def __init__(self, value: Any = None, fn: Callable[..., Any] | None = None,
                 inputs: tuple[PNode, ...] = ()) -> None:
        self.fn = fn
        self.inputs = inputs
        self.outputs: list[PNode] = []
        self.height = 1 + max((i.height for i in inputs), default=-1)
        for i in inputs:
            i.outputs.append(self)
        self.value = value if fn is None else fn(*(i.value for i in inputs))


class Propagator:
    """Hand-written push propagation: heights, one heap, equality cut-off (glitch-free)."""

    def __init__(self) -> None:
        self.runs = 0
        self._seq = 0

    def set(self, node: PNode, value: Any) -> None:
        if value == node.value:
            return
        node.value = value
        heap: list[tuple[int, int, PNode]] = []
        queued: set[int] = set()
        push = heapq.heappush
        seq = self._seq
        for o in node.outputs:
            seq += 1
            queued.add(id(o))
            push(heap, (o.height, seq, o))
        runs = 0
        while heap:
            _, _, cur = heapq.heappop(heap)
            runs += 1
            new = cur.fn(*[i.value for i in cur.inputs])  # type: ignore[misc]
            if new != cur.value:
                cur.value = new
                for o in cur.outputs:
                    if id(o) not in queued:
                        seq += 1
                        queued.add(id(o))
                        push(heap, (o.height, seq, o))
        self._seq = seq
        self.runs += runs


def floor_chain(n: int) -> PeerShape:
    prop = Propagator()
    src = PNode(0)
    prev = src
    for _ in range(n):
        prev = PNode(fn=_inc, inputs=(prev,))
    tail = prev
    box = [0]

    def runs() -> int:
        return prop.runs

    shape = PeerShape(functools.partial(prop.set, src), lambda: tail.value, box, [src],
                      [], lambda v: v + n)
    shape.runs = runs  # type: ignore[method-assign]
    return shape


def floor_fanout(n: int) -> PeerShape:
    prop = Propagator()
    src = PNode(0)
    leaves = [PNode(fn=_adder(i), inputs=(src,)) for i in range(n)]
    shape = PeerShape(functools.partial(prop.set, src),
                      lambda: sum(leaf.value for leaf in leaves), [0], [src, leaves], [],
                      lambda v: n * v + n * (n - 1) // 2)
    shape.runs = lambda: prop.runs  # type: ignore[method-assign]
    return shape


def floor_items(n: int, *, records: bool = False) -> PeerShape:
    prop = Propagator()
    srcs = [PNode({"v": i} if records else i) for i in range(n)]
    fn = _double_v if records else _double
    outs = [PNode(fn=fn, inputs=(s,)) for s in srcs]
    k = n // 2
    out = outs[k]
    shape = PeerShape(functools.partial(prop.set, srcs[k]), lambda: out.value, [0],
                      [srcs, outs], [], lambda v: 2 * v,
                      (lambda v: {"v": v}) if records else int)
    shape.runs = lambda: prop.runs  # type: ignore[method-assign]
    return shape


def floor_diamond() -> bool:
    prop = Propagator()
    seen: list[tuple[int, int]] = []
    a = PNode(1)
    b = PNode(fn=lambda x: x + 1, inputs=(a,))
    c = PNode(fn=lambda x: x * 2, inputs=(a,))

    def dfn(bv: int, cv: int) -> int:
        seen.append((bv, cv))
        return bv + cv

    d = PNode(fn=dfn, inputs=(b, c))
    prop.set(a, 5)
    prop.set(a, 9)
    return d.value == 28 and all(cv == 2 * (bv - 1) for bv, cv in seen)


# --------------------------------------------------------------------------- cellkernel


class CkShape:
    def __init__(self, rt: Runtime, target: Any, read: Callable[[], Any],
                 expect: Callable[[int], Any], make_value: Callable[[int], Any] = int) -> None:
        self.rt = rt
        self.target = target
        self.read = read
        self.expect = expect
        self.make_value = make_value
        self.last = 0
        self.got: Any = None

    def step(self, value: int) -> None:
        self.target.set(self.make_value(value))
        self.rt.idle()
        self.got = self.read()
        self.last = value

    def runs(self) -> int:
        return self.rt.scheduler.run_count

    def check(self) -> None:
        assert self.got == self.expect(self.last), (self.got, self.expect(self.last))

    def close(self) -> None:
        self.rt.close()


_causes = iter(range(10**9))


def _cause(kind: str) -> str:
    return f"peers-{kind}-{os.getpid()}-{next(_causes)}"


def ck_chain(rt: Runtime, n: int) -> CkShape:
    result = rt.run(chain_pattern(n), {"x": 0}, cause=_cause("chain"))
    return CkShape(rt, result.x, result.out.get, lambda v: v + n)


def ck_fanout(rt: Runtime, n: int) -> CkShape:
    result = rt.run(fanout_pattern(n), {"x": 0}, cause=_cause("fan"))
    return CkShape(rt, result.x, lambda: sum(result.leaves.get()),
                   lambda v: n * v + n * (n - 1) // 2)


def ck_items(rt: Runtime, n: int) -> CkShape:
    tag = _cause("items")
    srcs = [rt.get_cell(f"{tag}/src/{i}") for i in range(n)]
    outs = [rt.get_cell(f"{tag}/out/{i}") for i in range(n)]
    with rt.batch():
        for i, s in enumerate(srcs):
            s.set(i)
    for i in range(n):
        rt.scheduler.subscribe(_action(rt, f"{tag}-{i}", [srcs[i]], outs[i], _double))
    rt.idle()
    k = n // 2
    return CkShape(rt, srcs[k], outs[k].get, lambda v: 2 * v)


def ck_records(rt: Runtime, n: int) -> CkShape:
    items = rt.get_cell(_cause("records"))
    items.set([{"v": i} for i in range(n)])  # every object becomes its own document
    result = rt.run(Doubled, {"items": items}, cause=_cause("map"))
    k = n // 2
    return CkShape(rt, items.key(k).key("v"), result.doubled.key(k).get, lambda v: 2 * v)


def ck_build(make_rt: Callable[[], Runtime], n: int) -> Callable[[int], None]:
    def build(value: int) -> None:
        rt = make_rt()
        result = rt.run(chain_pattern(n), {"x": 0}, cause=_cause("build"))
        assert result.out.get() == n
        rt.close()

    return build


def ck_diamond() -> bool:
    rt = Runtime()
    tag = _cause("diamond")
    a, b, c, d = (rt.get_cell(f"{tag}/{x}") for x in "abcd")
    a.set(1)
    seen: list[tuple[int, int]] = []

    def dfn(bv: int, cv: int) -> int:
        seen.append((bv, cv))
        return bv + cv

    rt.scheduler.subscribe(_action(rt, f"{tag}-b", [a], b, lambda x: x + 1))
    rt.scheduler.subscribe(_action(rt, f"{tag}-c", [a], c, lambda x: x * 2))
    rt.scheduler.subscribe(_action(rt, f"{tag}-d", [b, c], d, dfn))
    rt.idle()
    for v in (5, 9):
        a.set(v)
        rt.idle()
    ok = d.get() == 28 and all(cv == 2 * (bv - 1) for bv, cv in seen if bv is not None)
    rt.close()
    return ok


# --------------------------------------------------------------------------- driver


@dataclass
class Result:
    shape: str
    ck: float
    sqlite: float | None
    floor: float
    peers: dict[str, float]  # "label mode" -> seconds
    runs: dict[str, int] = field(default_factory=dict)

    def best(self) -> tuple[str, float]:
        return min(self.peers.items(), key=lambda kv: kv[1])


def _measure(entries: list[tuple[str, Any, int | None]], *, warmup: int = 2, repeats: int = 7,
             sample_seconds: float = 0.015) -> dict[str, tuple[float, int | None]]:
    contestants = [
        Contestant(obj.step if hasattr(obj, "step") else obj,
                   obj.runs if hasattr(obj, "runs") else None, limit)
        for _, obj, limit in entries
    ]
    with quiet_stderr():
        timed = measure_interleaved(contestants, warmup=warmup, repeats=repeats,
                                    sample_seconds=sample_seconds)
    return {name: t for (name, _, _), t in zip(entries, timed, strict=True)}


def _with_limit(limit: int, fn: Callable[[], Any]) -> Any:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        return fn()
    finally:
        sys.setrecursionlimit(old)


def bench_shape(title: str, peers: list[Peer], sqlite_url: Callable[[], str] | None,
                ck: Callable[[Runtime], CkShape], floor: Callable[[], PeerShape],
                peer: Callable[[Peer, bool], PeerShape], *, deep: bool = False) -> Result:
    limit = PEER_LIMIT if deep else None
    entries: list[tuple[str, Any, int | None]] = []
    ck_mem = ck(Runtime())
    entries.append(("cellkernel", ck_mem, None))
    ck_sql = None
    if sqlite_url is not None:
        ck_sql = ck(Runtime(store=sqlite_url()))
        entries.append(("cellkernel sqlite", ck_sql, None))
    entries.append(("hand-written", floor(), None))
    for p in peers:
        for eager in (False, True):
            shape = _with_limit(PEER_LIMIT, functools.partial(peer, p, eager))
            entries.append((f"{p.label} {'eager' if eager else 'pull'}", shape, limit))
    # one untimed-for-the-table write each: a mode that is far off the best peer (an eager
    # summing effect re-run once per leaf) is dropped rather than sampled for minutes
    probe: dict[str, float] = {}
    for name, obj, lim in entries:
        start = time.perf_counter()
        _with_limit(lim or 0, functools.partial(obj.step, -1))
        probe[name] = time.perf_counter() - start
    best_probe = min(t for k, t in probe.items() if " " in k and "sqlite" not in k)
    dropped = {k: t for k, t in probe.items()
               if " " in k and "sqlite" not in k and t > 50 * best_probe and t > 0.05}
    timed = _measure([e for e in entries if e[0] not in dropped])
    for name, obj, lim in entries:
        try:
            obj.check()
        except AssertionError as exc:
            raise AssertionError(f"{title}: {name} read a wrong value: {exc}") from exc
        _with_limit(lim or 0, obj.close)
    runs = {name: w for name, (_, w) in timed.items() if w is not None}
    for name, t in dropped.items():
        timed[name] = (t, None)
    return Result(
        title, timed["cellkernel"][0],
        timed["cellkernel sqlite"][0] if ck_sql is not None else None,
        timed["hand-written"][0],
        {name: t for name, (t, _) in timed.items()
         if name not in ("cellkernel", "cellkernel sqlite", "hand-written")},
        runs,
    )


def bench_build(peers: list[Peer], sqlite_url: Callable[[], str], n: int) -> Result:
    def floor_build(value: int) -> None:
        src = PNode(0)
        prev = src
        for _ in range(n):
            prev = PNode(fn=_inc, inputs=(prev,))
        assert prev.value == n

    entries: list[tuple[str, Any, int | None]] = [
        ("cellkernel", ck_build(Runtime, n), None),
        ("cellkernel sqlite", ck_build(lambda: Runtime(store=sqlite_url()), n), None),
        ("hand-written", floor_build, None),
    ]
    for p in peers:
        for eager in (False, True):
            entries.append((f"{p.label} {'eager' if eager else 'pull'}",
                            peer_build(p, n, eager), PEER_LIMIT))
    timed = _measure(entries, warmup=1, repeats=5, sample_seconds=0.05)
    return Result(
        f"build {n:,}-chain + first evaluation", timed["cellkernel"][0],
        timed["cellkernel sqlite"][0], timed["hand-written"][0],
        {k: t for k, (t, _) in timed.items()
         if k not in ("cellkernel", "cellkernel sqlite", "hand-written")},
    )


def _traced(build: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def bench_memory(peers: list[Peer], n: int = MEMORY_NODES) -> dict[str, float]:
    """Bytes per node of an ``n``-chain, built and evaluated (everything it keeps alive)."""
    out: dict[str, float] = {}

    def ck() -> Any:
        rt = Runtime()
        result = rt.run(chain_pattern(n), {"x": 0}, cause=_cause("memory"))
        assert result.out.get() == n
        return rt, result

    size, kept = _traced(ck)
    out["cellkernel"] = size / n
    kept[0].close()
    del kept

    def floor() -> Any:
        src = PNode(0)
        nodes = [src]
        for _ in range(n):
            nodes.append(PNode(fn=_inc, inputs=(nodes[-1],)))
        return nodes

    out["hand-written"] = _traced(floor)[0] / n
    for p in peers:
        def build(p: Peer = p) -> Any:
            counter = [0]
            src = p.signal(0)
            read = p.read_signal(src)
            nodes = [src]
            for _ in range(n):
                node = p.computed(_node(counter, read, _inc))
                read = p.reader(node)
                read()  # evaluate as it grows: depth 1, no deep recursion
                nodes.append(node)
            assert read() == n
            return nodes

        size, kept = _traced(build)
        out[p.label] = size / n
        del kept
        gc.collect()
    return out


def glitch_free(peers: list[Peer]) -> dict[str, str]:
    out = {"cellkernel": "yes" if ck_diamond() else "NO", "hand-written":
           "yes" if floor_diamond() else "NO"}
    for p in peers:
        marks = []
        for eager in (False, True):
            try:
                ok = peer_diamond(p, eager)
            except Exception as exc:  # record, do not stop the run
                ok = False
                marks.append(f"{'eager' if eager else 'pull'} error {type(exc).__name__}")
                continue
            marks.append(f"{'eager' if eager else 'pull'} {'yes' if ok else 'NO'}")
        out[p.label] = ", ".join(marks)
    return out


def machine_note(peers: list[Peer]) -> str:
    load = "load avg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) \
        if hasattr(os, "getloadavg") else "load n/a"
    libs = ", ".join(f"{p.dist} {p.version}" for p in peers)
    return (f"{datetime.date.today().isoformat()} · {platform.machine()} · {os.cpu_count()} "
            f"cores · Python {platform.python_version()} ({platform.python_implementation()}) · "
            f"{libs} · {load}")


def _t(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


def format_results(results: list[Result], memory: dict[str, float], glitch: dict[str, str],
                   note: str, end_note: str, memory_nodes: int = MEMORY_NODES) -> str:
    lines = [f"Machine: {note} (at the start; {end_note} at the end)", "",
             "| shape | cellkernel (memory) | fastest peer | ck / peer | hand-written | "
             "ck / hand-written | cellkernel (SQLite) | SQLite / memory |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        name, best = r.best()
        sql = f"{r.sqlite / r.ck:.2f}" if r.sqlite else "—"
        lines.append(f"| {r.shape} | {_t(r.ck)} | {name} {_t(best)} | **{r.ck / best:.2f}** | "
                     f"{_t(r.floor)} | {r.ck / r.floor:.0f} | {_t(r.sqlite)} | {sql} |")
    peer_mem = {k: v for k, v in memory.items() if k not in ("cellkernel", "hand-written")}
    best_mem = min(peer_mem.items(), key=lambda kv: kv[1])
    lines.append(
        f"| memory per node ({memory_nodes:,}-chain, tracemalloc) | "
        f"{memory['cellkernel'] / 1024:.1f} KB | {best_mem[0]} {best_mem[1] / 1024:.2f} KB | "
        f"**{memory['cellkernel'] / best_mem[1]:.1f}** | {memory['hand-written'] / 1024:.2f} KB | "
        f"{memory['cellkernel'] / memory['hand-written']:.0f} | — | — |")
    labels = sorted({k.rsplit(" ", 1)[0] for r in results for k in r.peers})
    lines += ["", "Every peer, both modes (per write; build: per build):", "",
              "| shape | " + " | ".join(f"{lb} pull | {lb} eager" for lb in labels) + " |",
              "|---|" + "---:|" * (2 * len(labels))]
    for r in results:
        cells = []
        for lb in labels:
            for mode in ("pull", "eager"):
                t = r.peers.get(f"{lb} {mode}")
                cells.append(_t(t))
        lines.append(f"| {r.shape} | " + " | ".join(cells) + " |")
    lines.append("| memory per node | " + " | ".join(
        f"{peer_mem[lb] / 1024:.2f} KB | (same)" for lb in labels) + " |")
    lines.append("| glitch-free on a diamond | " + " | ".join(
        " | ".join(glitch[lb].split(", ")) for lb in labels) + " |")
    lines += ["", f"Glitch-free on the diamond: cellkernel {glitch['cellkernel']}, hand-written "
              f"{glitch['hand-written']}; " + "; ".join(f"{lb} {glitch[lb]}" for lb in labels)
              + "."]
    work = [r for r in results if r.runs]
    if work:
        lines += ["", "Recomputes per write (must match the shape): " + "; ".join(
            f"{r.shape}: cellkernel {r.runs.get('cellkernel')}, hand-written "
            f"{r.runs.get('hand-written')}, peers "
            f"{sorted({v for k, v in r.runs.items() if ' ' in k and 'sqlite' not in k})}"
            for r in work) + "."]
    return "\n".join(lines)


def run(*, quick: bool = False) -> list[str]:
    """Every shape, every contestant; returns the report's lines (for ``python -m benchmarks``)."""
    return collect(quick=quick).splitlines()


def collect(*, quick: bool = False) -> str:
    peers = _peers()
    note = machine_note(peers)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ck-peers-") as tmp:
        counter = iter(range(10**9))

        def sqlite_url() -> str:
            return f"sqlite:///{tmp}/db{next(counter)}.sqlite"

        n = N
        results = [
            bench_shape(f"chain of {n:,}, write head, read tail", peers, sqlite_url,
                        lambda rt: ck_chain(rt, n), lambda: floor_chain(n),
                        lambda p, e: peer_chain(p, n, e), deep=True),
            bench_shape(f"fan-out 1 → {n:,}, read all", peers, sqlite_url,
                        lambda rt: ck_fanout(rt, n), lambda: floor_fanout(n),
                        lambda p, e: peer_fanout(p, n, e)),
        ]
        for size in (n,) if quick else (n, BIG):
            results.append(bench_shape(
                f"{size:,} independent items, change one", peers, sqlite_url,
                functools.partial(ck_items, n=size), functools.partial(floor_items, size),
                peer_items_at(size)))
        for size in (n,) if quick else (n, BIG):
            results.append(bench_shape(
                f"{size:,} records mapped, change one field", peers, sqlite_url,
                functools.partial(ck_records, n=size),
                functools.partial(floor_items, size, records=True),
                peer_items_at(size, records=True)))
        results.append(bench_build(peers, sqlite_url, n))
    memory_nodes = 2_000 if quick else MEMORY_NODES
    memory = bench_memory(peers, memory_nodes)
    glitch = glitch_free(peers)
    end = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    text = format_results(results, memory, glitch, note, end, memory_nodes)
    return text + f"\n\n(total {time.perf_counter() - started:.0f} s)"


def write_readme(text: str) -> None:
    write_readme_block(README, BEGIN, END, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_peers")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)
    text = collect(quick=args.quick)
    print(text)
    if args.readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
