"""cellkernel.reactive.resolution: walks through links, remembered, and parses of stored sigils.

Every remembered or cached answer is checked against a walk made afresh with both
caches emptied (random link graphs, reads and writes, inside transactions that
wrote the documents too), and against the hop limit.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from helpers.core import raw, write_raw
from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.data import links as links_module
from cellkernel.data.links import LINK_TAG, Link
from cellkernel.errors import LinkCycleError
from cellkernel.reactive import resolution
from cellkernel.reactive.resolution import resolve_read
from cellkernel.runtime import Runtime


def test_a_stored_sigil_is_parsed_once_and_a_callers_dict_every_time(rt: Runtime) -> None:
    """``stored_link``: resolution answers a link inside a stored value by identity, but a
    dict the transaction wrote itself (the caller's, which may change) is parsed afresh."""
    a, b, holder = (rt.get_cell(name) for name in ("a", "b", "holder"))
    a.set(1)
    b.set(2)
    assert a.entity_id is not None and b.entity_id is not None
    assert holder.entity_id is not None
    sigil: dict[str, Any] = {"/": {LINK_TAG: {"id": a.entity_id, "path": []}}}
    tx = rt._begin()
    tx.write(rt.space, holder.entity_id, ("x",), sigil)
    assert resolve_read(tx, rt.space, holder.entity_id, ("x",))[1] == a.entity_id
    sigil["/"][LINK_TAG]["id"] = b.entity_id  # the caller changes its dict and writes it again
    tx.write(rt.space, holder.entity_id, ("x",), sigil)
    assert resolve_read(tx, rt.space, holder.entity_id, ("x",))[1] == b.entity_id
    tx.commit()
    assert holder.key("x").get() == 2
    stored = raw(rt, holder)["x"]
    entry = links_module._stored_links[(rt.space, holder.entity_id, ("x",))]
    assert entry[0] is stored  # the committed sigil, kept with its parse
    assert entry[1] == Link(rt.space, b.entity_id, ())
    write_raw(rt, (holder, {"x": a.get_as_link()}))  # a new stored dict: parsed again
    assert holder.key("x").get() == 1


_STARTS = [("next", "v"), ("next",), ("r", "v"), ("r", "next", "v"), ()]


def _resolved(tx: Any, space: str, entity_id: str, path: tuple[str, ...],
              for_write: bool) -> tuple[Any, list[Any], set[Any]]:
    """Where a walk ends (or "cycle"), what it journaled and the documents in the
    transaction's basis after it (a commit checks those)."""
    before = len(tx.reads)
    try:
        got: Any = resolve_read(tx, space, entity_id, path, for_write=for_write)
    except LinkCycleError:
        got = "cycle"
    return got, tx.reads[before:], {key for key, _doc in tx.basis()}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(
    ["value", "link", "redirect", "deep", "schema"]), st.booleans()), min_size=1, max_size=25))
def test_resolution_remembered_or_cached_matches_a_fresh_walk(
    steps: list[tuple[int, int, str, bool]],
) -> None:
    """Random rewrites of four documents linking to each other (plain links, redirects,
    links into a path or with a schema, values): every walk from every start, read or
    write, ends where and journals what a walk with both caches emptied does; also
    inside a transaction that has just written one of the documents (the caller's dicts)
    after a walk through the stored ones was remembered; a remembered walk puts the
    documents it crossed in the transaction's basis, as the walk did."""
    rt = Runtime()
    cells = [rt.get_cell(f"n{i}") for i in range(4)]
    for i, cell in enumerate(cells):
        cell.set({"v": i})
    ids = [str(c.entity_id) for c in cells]
    for source, target, kind, in_tx in steps:
        body: dict[str, Any] = {"id": ids[target], "path": [], "space": rt.space}
        if kind == "redirect":
            body["overwrite"] = "redirect"
        if kind == "deep":
            body["path"] = ["r"]
        if kind == "schema":
            body["schema"] = {"type": "object", "title": f"to {target}"}
        value: Any = {"v": 10 + target} if kind == "value" else {"/": {LINK_TAG: body}}
        written = {"v": source, "next": value, "r": {"/": {LINK_TAG: dict(body)}}}
        if not in_tx:
            write_raw(rt, (cells[source], written))
        for start, path, for_write in itertools.product(range(4), _STARTS, (False, True)):
            earlier = rt._begin()  # remembered from the stored documents
            _resolved(earlier, rt.space, ids[start], path, for_write)
            earlier.abort()
            tx = rt._begin()
            if in_tx:
                tx.write(rt.space, ids[source], (), written)
            first = _resolved(tx, rt.space, ids[start], path, for_write)
            again = _resolved(tx, rt.space, ids[start], path, for_write)  # remembered now
            tx.abort()
            resolution._crossed.clear()
            links_module._stored_links.clear()
            tx = rt._begin()
            if in_tx:
                tx.write(rt.space, ids[source], (), written)
            fresh = _resolved(tx, rt.space, ids[start], path, for_write)
            tx.abort()
            assert first == again == fresh
    rt.close()


def test_a_remembered_walk_counts_its_hops_toward_the_limit(rt: Runtime) -> None:
    """A walk resumed past 60 remembered hops that now meets 50 more is over ``MAX_HOPS``."""
    chain = [rt.get_cell(f"hop{i}") for i in range(112)]
    chain[60].set(1)
    chain[111].set(2)
    write_raw(rt, *((chain[i], chain[i + 1].get_as_link()) for i in range(60)))
    assert chain[0].get() == 1  # 60 hops, remembered
    assert chain[0].get() == 1  # (resumed)
    write_raw(rt, *((chain[i], chain[i + 1].get_as_link()) for i in range(60, 111)))
    with pytest.raises(LinkCycleError, match="more than 100 hops"):
        chain[0].get()
