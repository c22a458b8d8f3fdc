"""Scheduler heights on graphs deeper than 10 000 actions (glitch-freedom at depth).

Heights used to be capped at ``runs + pending + 10 000`` of the current busy
period, so an action wired while the runtime was quiet below a chain deeper
than that kept a low height and ran before the chain finished (it saw a mix of
old and new inputs, then ran again).  Runs are counted, never timed.
"""

from __future__ import annotations

from typing import Any

from cellkernel.reactive.scheduler import Action
from cellkernel.runtime import Runtime
from cellkernel.store.transactions import Transaction

DEPTH = 10_500


def _step(src: Any, dst: Any) -> Any:
    def run(tx: Transaction) -> None:
        dst.with_tx(tx).set(src.with_tx(tx).get() + 1)

    return run


def test_reader_of_head_and_tail_of_a_deep_chain_runs_once_and_consistently() -> None:
    rt = Runtime()
    cells = [rt.get_cell(f"depth/{i}") for i in range(DEPTH + 1)]
    cells[0].set(0)
    for i in range(DEPTH):
        rt.scheduler.subscribe(
            Action(_step(cells[i], cells[i + 1]), name=f"step{i}",
                   writes=[(rt.space, cells[i + 1].entity_id or "", ())])
        )
    rt.idle()
    out = rt.get_cell("depth/out")
    seen: list[int] = []

    def both(tx: Transaction) -> None:
        head, tail = cells[0].with_tx(tx).get(), cells[DEPTH].with_tx(tx).get()
        seen.append(tail - head)
        out.with_tx(tx).set(head + tail)

    reader = Action(both, name="both", writes=[(rt.space, out.entity_id or "", ())])
    rt.scheduler.subscribe(reader)  # wired after the chain settled: nothing else pending
    rt.idle()
    assert reader.height > DEPTH - 1
    seen.clear()
    cells[0].set(100)
    assert seen == [DEPTH]  # once, and never with a new head next to an old tail
    assert out.get() == 100 + 100 + DEPTH
    rt.close()
