"""Core shapes through the scheduler's Action API, next to reaktiv.

cellkernel side: ``Action(fn, name=..., writes=[(space, entity_id, ())])`` whose
``fn(tx)`` reads and writes cells through ``cell.with_tx(tx)``; subscribed with
``rt.scheduler.subscribe`` and settled with ``rt.idle()``.  One timed write is
``source.set(v)`` (commit + settle, every affected action runs) plus
``rt.idle()``.  Work is counted as ``rt.scheduler.run_count`` deltas.

reaktiv side (following the anchors' advice): ``Signal`` → ``Computed`` nodes,
an ``Effect`` observing the outputs so the computeds actually run, effects kept
referenced, effect functions built by closure factories (no default-argument
lambdas).  Work is counted inside the computed functions.  Where a shape leaves
a choice, the one cheaper for reaktiv is taken and stated in the notes.

Shapes: a chain of ``N`` derived values, a fan-out 1 → ``N``, and ``N``
independent items of which one changes.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
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
    quiet_stderr,
    raised_recursion_limit,
)
from cellkernel import Cell, Runtime
from cellkernel.reactive.scheduler import Action
from cellkernel.store.transactions import Transaction

N = 1000
#: reaktiv evaluates a chain by recursion (several Python frames per node).
REAKTIV_CHAIN_LIMIT = 20_000


# --------------------------------------------------------------------------- cellkernel


def _action(rt: Runtime, name: str, sources: list[Cell[Any]], target: Cell[Any],
            fn: Callable[..., Any]) -> Action:
    def run(tx: Transaction) -> None:
        target.with_tx(tx).set(fn(*(s.with_tx(tx).get() for s in sources)))

    return Action(run, name=name, writes=[(rt.space, target.entity_id or "", ())])


class CkShape:
    """A cellkernel graph plus the write that drives it and the check after it."""

    def __init__(self, rt: Runtime, source: Cell[Any], check: Callable[[int], None]) -> None:
        self.rt = rt
        self.source = source
        self.check = check
        self.last = 0

    def step(self, value: int) -> None:
        self.source.set(value)
        self.rt.idle()
        self.last = value

    def runs(self) -> int:
        return self.rt.scheduler.run_count


def ck_chain(n: int = N) -> CkShape:
    rt = Runtime()
    cells = [rt.get_cell(f"bench/chain/{i}") for i in range(n + 1)]
    cells[0].set(0)
    for i in range(n):
        rt.scheduler.subscribe(_action(rt, f"chain{i}", [cells[i]], cells[i + 1], _inc))
    rt.idle()
    assert cells[n].get() == n

    def check(v: int) -> None:
        assert cells[n].get() == v + n, (cells[n].get(), v + n)

    return CkShape(rt, cells[0], check)


def ck_fanout(n: int = N) -> CkShape:
    rt = Runtime()
    src = rt.get_cell("bench/fan/src")
    src.set(0)
    leaves = [rt.get_cell(f"bench/fan/{i}") for i in range(n)]
    for i, leaf in enumerate(leaves):
        rt.scheduler.subscribe(_action(rt, f"fan{i}", [src], leaf, _adder(i)))
    rt.idle()

    def check(v: int) -> None:
        assert leaves[0].get() == v and leaves[-1].get() == v + n - 1

    return CkShape(rt, src, check)


def ck_items(n: int = N) -> CkShape:
    rt = Runtime()
    srcs = [rt.get_cell(f"bench/items/src/{i}") for i in range(n)]
    outs = [rt.get_cell(f"bench/items/out/{i}") for i in range(n)]
    with rt.batch():
        for i, s in enumerate(srcs):
            s.set(i)
    for i in range(n):
        rt.scheduler.subscribe(_action(rt, f"item{i}", [srcs[i]], outs[i], _double))
    rt.idle()
    k = n // 2

    def check(v: int) -> None:
        assert outs[k].get() == 2 * v and outs[k + 1].get() == 2 * (k + 1)

    return CkShape(rt, srcs[k], check)


def _inc(x: int) -> int:
    return x + 1


def _double(x: int) -> int:
    return x * 2


def _adder(i: int) -> Callable[[int], int]:
    def add(x: int) -> int:
        return x + i

    return add


# --------------------------------------------------------------------------- reaktiv


class RkShape:
    """A reaktiv graph: its signal, the computeds' run counter and live effects."""

    def __init__(self, signal: Any, counter: list[int], keep: list[Any], effects: list[Any],
                 check: Callable[[int], None], make_value: Callable[[int], Any] = int) -> None:
        self.signal = signal
        self.counter = counter
        self.keep = keep  # the nodes
        self.effects = effects  # kept referenced: an unreferenced Effect is garbage-collected
        self.check = check
        self.make_value = make_value
        self.last = 0

    def step(self, value: int) -> None:
        self.signal.set(self.make_value(value))
        self.last = value

    def runs(self) -> int:
        return self.counter[0]

    def close(self) -> None:
        """Dispose the effects and drop the graph (deep chains: call at a raised limit)."""
        for effect in self.effects:
            effect.dispose()
        self.effects.clear()
        self.keep.clear()
        self.signal = None
        gc.collect()


def _rk_node(
    counter: list[int], read: Callable[[], Any], fn: Callable[[Any], Any]
) -> Callable[[], Any]:
    def compute() -> Any:
        counter[0] += 1
        return fn(read())

    return compute


def _rk_sink(read: Callable[[], Any], seen: list[Any]) -> Callable[[], None]:
    def effect() -> None:
        seen.append(read())

    return effect


def _rk_sum(nodes: list[Any], seen: list[Any]) -> Callable[[], None]:
    def effect() -> None:
        seen.append(sum(node() for node in nodes))

    return effect


def rk_chain(n: int = N) -> RkShape:
    """Signal → n chained Computeds → one Effect (needs a raised recursion limit past ~150)."""
    from reaktiv import Computed, Effect, Signal

    counter = [0]
    src = Signal(0)
    nodes: list[Any] = []
    prev: Any = src
    for _ in range(n):
        prev = Computed(_rk_node(counter, prev, _inc))
        nodes.append(prev)
    seen: list[Any] = []
    with quiet_stderr() as err:
        effect = Effect(_rk_sink(prev, seen))
    if not seen:
        raise RecursionError(f"reaktiv chain of {n} failed: {err.getvalue().strip()[-200:]}")

    def check(v: int) -> None:
        assert seen[-1] == v + n, (seen[-1], v + n)

    return RkShape(src, counter, [nodes], [effect], check)


def rk_fanout(n: int = N) -> RkShape:
    """Signal → n Computeds → one Effect summing them (one sink: cheaper than n effects)."""
    from reaktiv import Computed, Effect, Signal

    counter = [0]
    src = Signal(0)
    nodes = [Computed(_rk_node(counter, src, _adder(i))) for i in range(n)]
    seen: list[Any] = []
    effect = Effect(_rk_sum(nodes, seen))

    def check(v: int) -> None:
        assert seen[-1] == n * v + n * (n - 1) // 2

    return RkShape(src, counter, [nodes], [effect], check)


def rk_items(n: int = N, *, objects: bool = False) -> RkShape:
    """n Signals, one Computed and one Effect per item; one item written."""
    from reaktiv import Computed, Effect, Signal

    counter = [0]
    if objects:
        srcs = [Signal({"v": i}) for i in range(n)]
        nodes = [Computed(_rk_node(counter, s, _double_v)) for s in srcs]
    else:
        srcs = [Signal(i) for i in range(n)]
        nodes = [Computed(_rk_node(counter, s, _double)) for s in srcs]
    seen = [[] for _ in range(n)]  # type: list[list[Any]]
    effects = [Effect(_rk_sink(node, seen[i])) for i, node in enumerate(nodes)]
    k = n // 2

    def check(v: int) -> None:
        assert seen[k][-1] == 2 * v and seen[k + 1][-1] == 2 * (k + 1)

    return RkShape(srcs[k], counter, [srcs, nodes], effects, check,
                   (lambda v: {"v": v}) if objects else int)


def _double_v(item: dict[str, int]) -> int:
    return item["v"] * 2


def reaktiv_default_depth(upper: int = 1000) -> int:
    """The deepest reaktiv chain that evaluates at the default recursion limit (bisection)."""
    with raised_recursion_limit(DEFAULT_RECURSION_LIMIT):
        lo, hi = 1, upper
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                shape = rk_chain(mid)
            except RecursionError:
                hi = mid - 1
            else:
                lo = mid
                with raised_recursion_limit(REAKTIV_CHAIN_LIMIT):
                    shape.close()
            with raised_recursion_limit(REAKTIV_CHAIN_LIMIT):
                gc.collect()  # a failed deep chain is torn down recursively too
    return lo


# --------------------------------------------------------------------------- driver


def compare(group: str, shape: str, ck: Callable[[], Any], rk: Callable[[], Any],
            *, rk_limit: int | None = None, rk_label: str = "") -> Row:
    """Build both graphs, time one write of each in alternation (medians), check, count."""
    ck_shape = ck()
    with raised_recursion_limit(rk_limit or DEFAULT_RECURSION_LIMIT):
        rk_shape = rk()
    (ck_time, ck_runs), (rk_time, rk_runs) = measure_interleaved([
        Contestant(ck_shape.step, ck_shape.runs),
        Contestant(rk_shape.step, rk_shape.runs, rk_limit),
    ])
    ck_shape.check(ck_shape.last)
    rk_shape.check(rk_shape.last)
    with raised_recursion_limit(rk_limit or DEFAULT_RECURSION_LIMIT):
        rk_shape.close()
    notes: list[str] = []
    if rk_limit is not None:
        notes.append(
            f"reaktiv only: sys.setrecursionlimit({rk_limit}) around its build and writes "
            f"(cellkernel ran at the default {DEFAULT_RECURSION_LIMIT})"
        )
    return Row(group, shape, ck_time, rk_time, str(ck_runs), f"{rk_runs}{rk_label}", notes)


def run(n: int = N) -> list[Row]:
    rows = [
        compare("core", f"chain of {n}", lambda: ck_chain(n), lambda: rk_chain(n),
                rk_limit=REAKTIV_CHAIN_LIMIT, rk_label=" + 1 effect"),
        compare("core", f"fan-out 1 → {n}", lambda: ck_fanout(n), lambda: rk_fanout(n),
                rk_label=" + 1 effect"),
        compare("core", f"{n} items, one changed", lambda: ck_items(n), lambda: rk_items(n),
                rk_label=" + 1 effect"),
    ]
    rows[1].notes.append(f"reaktiv: one Effect sums all {n} leaves (cheaper for it than {n} "
                         "effects); cellkernel: each leaf is an eager action")
    rows[2].notes.append("reaktiv: one Computed + one Effect per item")
    return rows


if __name__ == "__main__":
    print(format_table(run()))
