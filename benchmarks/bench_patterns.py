"""Pattern shapes through the builder (``@pattern`` + ``@lift`` + ``map``), next to reaktiv.

cellkernel side: the graph is built by a Python loop inside a ``@pattern`` body,
started with ``rt.run``, and driven by writing its argument (``result.x.set``)
or one list item's own document.  One timed write is that ``set`` (commit and
settle: every affected lift runs) plus ``rt.idle()``; work is counted as
``rt.scheduler.run_count`` deltas.  The reaktiv side is the same shape built
from ``Signal`` / ``Computed`` / ``Effect`` (see ``bench_core``).

Shapes:

* a chain of ``N`` lifts and a fan-out 1 → ``N`` lifts;
* ``map`` over a list of item *objects* (each stored as its own document) with
  one item changed: exactly one per-item node re-runs, at 1 000 and 10 000
  items (the per-write cost must stay flat);
* building a 10 000-node pattern (define, then start) next to building the same
  fan-out in reaktiv;
* a 100 000-lift chain started and settled at the default recursion limit.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    DEFAULT_RECURSION_LIMIT,
    Contestant,
    Row,
    format_table,
    measure_interleaved,
    raised_recursion_limit,
)
from benchmarks.bench_core import (
    REAKTIV_CHAIN_LIMIT,
    RkShape,
    reaktiv_default_depth,
    rk_chain,
    rk_fanout,
    rk_items,
)
from cellkernel import Cell, Runtime, lift, pattern
from cellkernel.data.links import is_link

N = 1000
MAP_SIZES = (1_000, 10_000)
BUILD_NODES = 10_000
DEEP_CHAIN = 100_000


@lift
def inc(x: int) -> int:
    return x + 1


@lift
def add(x: int, i: int) -> int:
    return x + i


@lift
def double_v(item: dict[str, Any]) -> int:
    return int(item["v"]) * 2


def chain_pattern(n: int) -> Any:
    @pattern
    def Chain(x: int = 0) -> Any:
        v = x
        for _ in range(n):
            v = inc(v)
        return {"x": x, "out": v}

    return Chain


def fanout_pattern(n: int) -> Any:
    @pattern
    def FanOut(x: int = 0) -> Any:
        return {"x": x, "leaves": [add(x, i) for i in range(n)]}

    return FanOut


@pattern
def Doubled(items: Cell[list[dict[str, int]]]) -> Any:
    return {"doubled": items.map(lambda item: double_v(item))}


# --------------------------------------------------------------------------- cellkernel shapes


class CkRun:
    """A started pattern instance plus the cell a timed write goes to."""

    def __init__(self, rt: Runtime, target: Cell[Any], check: Any, make_value: Any = int) -> None:
        self.rt = rt
        self.target = target
        self.check = check
        self.make_value = make_value
        self.last = 0

    def step(self, value: int) -> None:
        self.target.set(self.make_value(value))
        self.rt.idle()
        self.last = value

    def runs(self) -> int:
        return self.rt.scheduler.run_count

    def close(self) -> None:
        self.rt.close()


def ck_chain(n: int = N) -> CkRun:
    rt = Runtime()
    result = rt.run(chain_pattern(n), {"x": 0}, cause=f"bench-chain-{n}")
    assert result.out.get() == n, result.out.get()

    def check(v: int) -> None:
        assert result.out.get() == v + n

    return CkRun(rt, result.x, check)


def ck_fanout(n: int = N) -> CkRun:
    rt = Runtime()
    result = rt.run(fanout_pattern(n), {"x": 0}, cause=f"bench-fan-{n}")

    def check(v: int) -> None:
        leaves = result.leaves.get()
        assert leaves[0] == v and leaves[-1] == v + n - 1

    return CkRun(rt, result.x, check)


def ck_map(n: int) -> tuple[CkRun, float, float]:
    """The map instance, plus the seconds to store the items and to start the pattern."""
    rt = Runtime()
    items = rt.get_cell(f"bench-items-{n}")
    start = time.perf_counter()
    items.set([{"v": i} for i in range(n)])  # every object becomes its own document
    stored = time.perf_counter() - start
    start = time.perf_counter()
    result = rt.run(Doubled, {"items": items}, cause=f"bench-map-{n}")
    started = time.perf_counter() - start
    k = n // 2
    assert result.doubled.key(k).get() == 2 * k
    item = items.key(k).key("v")
    raw = rt.read_tx().read(rt.space, items.entity_id or "", (k,))
    assert is_link(raw), "items must be stored as their own documents (links in the list)"

    def check(v: int) -> None:
        assert result.doubled.key(k).get() == 2 * v
        assert result.doubled.key(k + 1).get() == 2 * (k + 1)

    return CkRun(rt, item, check), stored, started


# --------------------------------------------------------------------------- comparisons


def _compare(group: str, shape: str, ck: CkRun, rk: RkShape, *, rk_limit: int | None = None,
             rk_label: str = "", notes: list[str] | None = None) -> Row:
    (ck_time, ck_runs), (rk_time, rk_runs) = measure_interleaved([
        Contestant(ck.step, ck.runs),
        Contestant(rk.step, rk.runs, rk_limit),
    ])
    ck.check(ck.last)
    rk.check(rk.last)
    with raised_recursion_limit(rk_limit or DEFAULT_RECURSION_LIMIT):
        rk.close()
    ck.close()
    return Row(group, shape, ck_time, rk_time, str(ck_runs), f"{rk_runs}{rk_label}",
               list(notes or []))


def bench_chain(n: int = N) -> Row:
    ck = ck_chain(n)
    with raised_recursion_limit(REAKTIV_CHAIN_LIMIT):
        rk = rk_chain(n)
    return _compare("patterns", f"chain of {n} lifts", ck, rk, rk_limit=REAKTIV_CHAIN_LIMIT,
                    rk_label=" + 1 effect",
                    notes=[f"reaktiv only: recursion limit {REAKTIV_CHAIN_LIMIT} (as in core)"])


def bench_fanout(n: int = N) -> Row:
    return _compare("patterns", f"fan-out 1 → {n} lifts", ck_fanout(n), rk_fanout(n),
                    rk_label=" + 1 effect")


def bench_map(sizes: tuple[int, ...] = MAP_SIZES) -> list[Row]:
    rows: list[Row] = []
    for n in sizes:
        ck, stored, started = ck_map(n)
        rk = rk_items(n, objects=True)
        row = _compare("patterns", f"map over {n:,} items, one changed", ck, rk,
                       rk_label=" + 1 effect")
        if row.ck_runs != "1":
            raise AssertionError(f"map over {n}: {row.ck_runs} nodes re-ran, expected exactly 1")
        row.notes.append(
            f"setup, not timed per write: storing {n:,} item documents {stored:.2f} s, "
            f"starting the map ({n:,} child instances) {started:.2f} s"
        )
        rows.append(row)
    if len(rows) >= 2 and rows[0].ck and rows[-1].ck:
        growth = rows[-1].ck / rows[0].ck
        rk_growth = rows[-1].rk / rows[0].rk if rows[0].rk and rows[-1].rk else None
        rows[-1].notes.append(
            f"per-write cost at {sizes[-1]:,} items / at {sizes[0]:,} items: {growth:.2f} for "
            "cellkernel" + (f", {rk_growth:.2f} for reaktiv" if rk_growth is not None else "")
        )
    return rows


BUILD_ROUNDS = 3


def _ck_build(n: int, round_: int = 0) -> tuple[float, float, int]:
    """Define and start a fan-out of ``n`` lifts: (define seconds, start seconds, runs)."""
    gc.collect()
    start = time.perf_counter()
    made = fanout_pattern(n)
    defined = time.perf_counter() - start
    rt = Runtime()
    gc.collect()
    start = time.perf_counter()
    # a new cause per round: its ids are new, so no id hashed in an earlier round is reused
    result = rt.run(made, {"x": 0}, cause=f"bench-build-{n}-{round_}")
    started = time.perf_counter() - start
    runs = rt.scheduler.run_count
    assert result.leaves.get()[-1] == n - 1
    rt.close()
    return defined, started, runs


def _rk_build(n: int) -> tuple[float, int]:
    """reaktiv builds the same fan-out + one summing effect: (seconds, computeds evaluated)."""
    from reaktiv import Computed, Effect, Signal

    from benchmarks.bench_core import _adder, _rk_node, _rk_sum

    gc.collect()
    start = time.perf_counter()
    counter = [0]
    src = Signal(0)
    nodes = [Computed(_rk_node(counter, src, _adder(i))) for i in range(n)]
    seen: list[Any] = []
    effect = Effect(_rk_sum(nodes, seen))
    built = time.perf_counter() - start
    assert seen == [n * (n - 1) // 2]
    effect.dispose()
    return built, counter[0]


def bench_build(n: int = BUILD_NODES, rounds: int = BUILD_ROUNDS) -> list[Row]:
    """Define and start a fan-out of ``n`` lifts; reaktiv builds the same fan-out + effect.

    A build is one timing, not a stream of writes, so the two sides alternate for
    ``rounds`` rounds (cellkernel, reaktiv, cellkernel, ...) and each reports its median.
    """
    ck: list[tuple[float, float, int]] = []
    rk: list[tuple[float, int]] = []
    for round_ in range(rounds):
        ck.append(_ck_build(n, round_))
        rk.append(_rk_build(n))
    ck.sort(key=lambda r: r[0] + r[1])
    rk.sort()
    defined, started, runs = ck[len(ck) // 2]
    rk_built, rk_runs = rk[len(rk) // 2]
    return [
        Row("patterns", f"build {n:,}-node fan-out: define + start + settle",
            defined + started, rk_built, str(runs), f"{rk_runs} + 1 effect",
            [f"median of {rounds} alternating builds; cellkernel: defining the pattern (tracing "
             f"the body) {defined:.2f} s, rt.run (ids, snapshot, subscribe, first settle) "
             f"{started:.2f} s; reaktiv: {n:,} Computeds + 1 Effect created and evaluated once"]),
    ]


def bench_deep(n: int = DEEP_CHAIN) -> Row:
    """A chain of ``n`` lifts, started and settled at the default recursion limit."""
    import psutil

    limit = sys.getrecursionlimit()
    if limit != DEFAULT_RECURSION_LIMIT:
        raise AssertionError(f"recursion limit is {limit}, not {DEFAULT_RECURSION_LIMIT}")
    process = psutil.Process()
    rss = process.memory_info().rss
    gc.collect()
    start = time.perf_counter()
    made = chain_pattern(n)
    defined = time.perf_counter() - start
    rt = Runtime()
    start = time.perf_counter()
    try:
        result = rt.run(made, {"x": 0}, cause=f"bench-deep-{n}")
        started = time.perf_counter() - start
        start = time.perf_counter()
        result.x.set(1)
        rt.idle()
        write = time.perf_counter() - start
    except RecursionError as exc:  # pragma: no cover - the point of the benchmark
        raise AssertionError(f"{n}-lift chain hit RecursionError: {exc}") from exc
    recursion = [e for e in rt.errors if isinstance(e.error, RecursionError)]
    if recursion or rt.errors:
        raise AssertionError(f"{n}-lift chain recorded node errors: {rt.errors[:3]}")
    assert result.out.get() == n + 1, result.out.get()
    assert sys.getrecursionlimit() == DEFAULT_RECURSION_LIMIT
    grown = (process.memory_info().rss - rss) / 2**20
    runs = rt.scheduler.run_count
    rt.close()
    depth = reaktiv_default_depth()
    return Row(
        "patterns", f"chain of {n:,} lifts: define + start + settle", defined + started, None,
        str(runs), "—",
        [f"cellkernel at the default recursion limit {DEFAULT_RECURSION_LIMIT}, no "
         f"RecursionError: define {defined:.2f} s, rt.run + settle {started:.2f} s, then one "
         f"write through all {n:,} lifts {write:.2f} s; RSS +{grown:.0f} MB. reaktiv at the "
         f"default limit evaluates chains up to {depth} deep (not run at {n:,}: deeper needs "
         "a raised limit and, this deep, risks overflowing the C stack)"],
    )


def run(*, deep: int = DEEP_CHAIN, map_sizes: tuple[int, ...] = MAP_SIZES,
        build: int = BUILD_NODES, n: int = N) -> list[Row]:
    rows = [bench_chain(n), bench_fanout(n)]
    rows[1].notes.append(f"reaktiv: one Effect sums all {n} leaves (cheaper for it than {n} "
                         "effects)")
    rows += bench_map(map_sizes)
    rows += bench_build(build)
    if deep:
        rows.append(bench_deep(deep))
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(format_table(run(deep=10_000 if quick else DEEP_CHAIN,
                           map_sizes=(1_000, 2_000) if quick else MAP_SIZES)))
