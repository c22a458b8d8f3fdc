"""Re-running an edited ``%%pattern`` cell in one IPython shell (SPEC §6, §9).

State typed in before an edit survives every edit that does not touch it, and
an edit that changes behaviour (a template, a literal, a body, a global) takes
effect: the old code never keeps running.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.testing.globalipapp import get_ipython

from cellkernel.notebook import session

ip = get_ipython()  # type: ignore[no-untyped-call]  # as in benchmarks/bench_jupyter.py
assert ip is not None

BODY = '''
count = Cell.of(5)
other = Cell.of(1)
doubled = derive(count, lambda c: c * FACTOR)
label = fmt("n={n}", n=doubled)
big = if_else(doubled, "big", "small")
{"count": count, "other": other, "doubled": doubled, "label": label, "big": big}
'''

#: edit -> (new body, new FACTOR, what ``label`` and ``big`` read afterwards)
EDITS: dict[str, tuple[str, int, str, str]] = {
    "none": (BODY, 2, "n=82", "big"),
    "comment": (BODY.replace("c * FACTOR)", "c * FACTOR)  # twice"), 2, "n=82", "big"),
    "template": (BODY.replace('"n={n}"', '"N is {n}"'), 2, "N is 82", "big"),
    "literal": (BODY.replace('"big", "small"', '"large", "small"'), 2, "n=82", "large"),
    "body": (BODY.replace("c * FACTOR", "c * FACTOR + 1"), 2, "n=83", "big"),
    "global": (BODY, 3, "n=123", "big"),
    "initial value": (BODY.replace("Cell.of(5)", "Cell.of(6)"), 2, "n=82", "big"),
    "reorder state": (BODY.replace("count = Cell.of(5)\nother = Cell.of(1)\n",
                                   "other = Cell.of(1)\ncount = Cell.of(5)\n"), 2, "n=82", "big"),
    "insert a node": (BODY.replace('big = if_else', 'extra = derive(other, lambda o: o)\nbig = '
                                   'if_else'), 2, "n=82", "big"),
}


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    session.reset()
    if "cellkernel" not in ip.extension_manager.loaded:
        ip.run_line_magic("load_ext", "cellkernel")
    ip.run_cell("from cellkernel import Cell, derive, fmt, if_else\nFACTOR = 2")
    yield
    session.reset()


def _run(body: str) -> Any:
    ip.run_cell_magic("pattern", "ctr --no-ui --no-graph", textwrap.dedent(body))
    return ip.user_ns["ctr"]


@pytest.mark.parametrize("edit", list(EDITS))
def test_state_survives_and_the_edit_takes_effect(edit: str) -> None:
    body, factor, label, big = EDITS[edit]
    first = _run(BODY)
    first.count.set(41)
    first.other.set(42)
    assert first.label.get() == "n=82"
    ip.run_cell(f"FACTOR = {factor}")
    again = _run(body)
    assert again.count.get() == 41 and again.other.get() == 42  # state survived
    assert again.label.get() == label and again.big.get() == big  # and the new code runs
    again.count.set(10)  # still live, with the new code only
    assert again.doubled.get() == 10 * factor + (1 if edit == "body" else 0)
    rt = session.runtime()
    assert [e for e in rt.errors if "ctr" in str(e.pattern or "")] == []


def test_an_id_kept_under_a_new_name_is_reported_moved() -> None:
    ip.run_cell_magic("pattern", "mv --no-ui --no-graph",
                      "count = Cell.of(1)\ndoubled = derive(count, lambda c: c * 2)\n"
                      '{"count": count, "doubled": doubled}\n')
    shown = ip.run_cell_magic("pattern", "mv --no-ui --no-graph",
                              "count = Cell.of(1)\ntwice = derive(count, lambda c: c * 2)\n"
                              '{"count": count, "twice": twice}\n')
    text = shown._repr_mimebundle_()["text/plain"]
    assert "1 moved" in text
    assert any(line.split()[:2] == ["moved", "twice"] for line in text.splitlines())
