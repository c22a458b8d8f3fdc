"""cellkernel.data.links: the link@1 sigil, and link resolution through cells (SPEC §3)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from helpers.core import OTHER_SPACE, doc, raw, store_state, version, write_raw
from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.data.links import (
    LINK_TAG,
    MAX_HOPS,
    Link,
    as_link,
    is_link,
    is_sigil,
    make_link,
    parse_link,
)
from cellkernel.errors import LinkCycleError
from cellkernel.runtime import Runtime

SPACE = "did:test:a"

# --------------------------------------------------------------------------- the sigil


def test_make_link_shape() -> None:
    assert make_link(SPACE, "of:x") == {"/": {"link@1": {"id": "of:x", "path": [], "space": SPACE}}}
    assert make_link(SPACE, "of:x", ("a", 0), base_space=SPACE) == {
        "/": {"link@1": {"id": "of:x", "path": ["a", 0]}}
    }
    full = make_link(SPACE, "of:x", ["p"], {"type": "number"}, True, base_space="did:other")
    assert full == {
        "/": {
            "link@1": {
                "id": "of:x",
                "path": ["p"],
                "space": SPACE,
                "schema": {"type": "number"},
                "overwrite": "redirect",
            }
        }
    }


def test_parse_link_round_trip_and_defaults() -> None:
    link = parse_link(make_link(SPACE, "of:x", ("a", 1), {"type": "string"}, True), "did:base")
    assert link == Link(SPACE, "of:x", ("a", 1), {"type": "string"}, True)
    assert parse_link(link.to_json(), "did:base") == link
    # missing space means "the space of the document holding the link"; missing path is []
    bare = parse_link({"/": {"link@1": {"id": "of:y"}}}, "did:base")
    assert bare == Link("did:base", "of:y", (), None, False)
    assert link.to_json(base_space=SPACE)["/"]["link@1"].get("space") is None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ({"/": "baedrei"}, "not a link@1"),
        ({"/": {"link@1": {"id": "of:x"}}, "extra": 1}, "not a link@1"),
        ({"/": {"link@1": "of:x"}}, "must hold an object"),
        ({"/": {"link@1": {"path": []}}}, "'id'"),
        ({"/": {"link@1": {"id": ""}}}, "'id'"),
        ({"/": {"link@1": {"id": "of:x", "path": "a"}}}, "'path'"),
        ({"/": {"link@1": {"id": "of:x", "path": [1.5]}}}, "'path'"),
        ({"/": {"link@1": {"id": "of:x", "space": 3}}}, "'space'"),
        ({"/": {"link@1": {"id": "of:x", "overwrite": "always"}}}, "'overwrite'"),
        ({"/": {"link@1": {"id": "of:x", "colour": "red"}}}, "unknown fields"),
    ],
)
def test_parse_link_rejects_malformed_sigils(value: Any, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_link(value, SPACE)


def test_is_link_and_is_sigil() -> None:
    link = make_link(SPACE, "of:x")
    assert is_link(link) and is_sigil(link)
    factory: dict[str, Any] = {"/": {"nodeFactory@1": {}}}
    assert is_sigil(factory) and not is_link(factory)
    for value in ({"/": "cid"}, {"/": {"link@1": {}}, "x": 1}, [link], "link@1", None):
        assert not is_link(value)


def test_hop_limit_is_one_hundred() -> None:
    assert MAX_HOPS == 100


# --------------------------------------------------------------------------- resolution


def test_plain_link_is_followed_on_read_and_replaced_on_write(rt: Runtime) -> None:
    target = rt.get_cell("target")
    target.set({"n": 1})
    pointer = rt.get_cell("pointer")
    pointer.set(target)
    assert is_link(raw(rt, pointer))
    assert pointer.get() == {"n": 1}
    assert pointer.key("n").get() == 1

    pointer.set({"n": 2})
    assert raw(rt, pointer) == {"n": 2}  # the link was replaced …
    assert target.get() == {"n": 1}  # … and the target never written


def test_plain_link_inside_the_path_is_followed_on_write(rt: Runtime) -> None:
    target = rt.get_cell("target")
    target.set({"n": 1})
    holder = rt.get_cell("holder")
    holder.set({"t": target})
    holder.key("t", "n").set(5)  # the link sits above the written key
    assert target.get() == {"n": 5}
    assert is_link(raw(rt, holder)["t"])


def test_write_redirect_is_followed_on_read_and_write(rt: Runtime) -> None:
    target = rt.get_cell("target")
    target.set(1)
    alias = rt.get_cell("alias")
    write_raw(rt, (alias, target.get_as_write_redirect_link()))
    assert alias.get() == 1

    alias.set(7)
    assert target.get() == 7
    assert raw(rt, alias) == target.get_as_write_redirect_link()  # the redirect stays


def test_redirect_inside_a_document_field(rt: Runtime) -> None:
    state = rt.get_cell("state")
    state.set({"count": 0})
    result = rt.get_cell("result")
    write_raw(rt, (result, {"count": state.key("count").get_as_write_redirect_link()}))
    result.key("count").set(5)
    assert state.get() == {"count": 5}
    assert result.get() == {"count": 5}


def _chain(rt: Runtime, links: int) -> list[Any]:
    """cells[0] → cells[1] → … → cells[links], which holds "end"."""
    cells = [rt.get_cell(("chain", links, i)) for i in range(links + 1)]
    pointers = [(here, there.get_as_link()) for here, there in itertools.pairwise(cells)]
    write_raw(rt, *pointers, (cells[-1], "end"))
    return cells


def test_a_chain_of_one_hundred_links_resolves(rt: Runtime) -> None:
    cells = _chain(rt, MAX_HOPS)
    assert cells[0].get() == "end"


def test_a_chain_of_more_than_one_hundred_links_raises(rt: Runtime) -> None:
    cells = _chain(rt, MAX_HOPS + 1)
    with pytest.raises(LinkCycleError, match="100 hops"):
        cells[0].get()
    assert cells[1].get() == "end"  # one hop shorter is fine


def test_a_two_cycle_raises_on_read(rt: Runtime) -> None:
    x, y = rt.get_cell("x"), rt.get_cell("y")
    write_raw(rt, (x, y.get_as_link()), (y, x.get_as_link()))
    with pytest.raises(LinkCycleError, match="cycle"):
        x.get()
    with pytest.raises(LinkCycleError):
        y.key("deeper").get()


def test_a_self_link_raises(rt: Runtime) -> None:
    x = rt.get_cell("x")
    write_raw(rt, (x, {"me": x.key("me").get_as_link()}))
    with pytest.raises(LinkCycleError):
        x.key("me").get()


def test_a_redirect_cycle_raises_on_write_and_nothing_lands(rt: Runtime) -> None:
    x, y = rt.get_cell("x"), rt.get_cell("y")
    write_raw(rt, (x, y.get_as_write_redirect_link()), (y, x.get_as_write_redirect_link()))
    before = store_state(rt)
    with pytest.raises(LinkCycleError):
        x.set(1)
    assert store_state(rt) == before


def test_a_plain_link_cycle_is_replaced_by_a_write(rt: Runtime) -> None:
    x, y = rt.get_cell("x"), rt.get_cell("y")
    write_raw(rt, (x, y.get_as_link()), (y, x.get_as_link()))
    x.set(3)  # a plain link at the written location is replaced, not followed
    assert x.get() == 3
    assert y.get() == 3


def test_cross_space_read_through_a_link(rt: Runtime) -> None:
    a = rt.get_cell("a")
    a.set(1)
    b = rt.get_cell("b", space=OTHER_SPACE)
    b.set(a)
    assert b.get() == 1
    assert raw(rt, b)["/"]["link@1"]["space"] == rt.space
    a.set(2)
    assert b.get() == 2


def test_write_through_a_cross_space_redirect_lands_in_the_target_space(rt: Runtime) -> None:
    a = rt.get_cell("a")
    a.set(1)
    b = rt.get_cell("b", space=OTHER_SPACE)
    write_raw(rt, (b, a.get_as_write_redirect_link()))
    version_b = version(rt, b)
    b.set(9)
    assert a.get() == 9
    assert version(rt, b) == version_b
    stored = doc(rt, b)
    assert stored is not None and is_link(stored.value)


@settings(max_examples=300, deadline=None)
@given(
    entity=st.sampled_from(["of:a", "of:b", "of:baedreiqq"]),
    overwrite=st.sampled_from([None, "this", "redirect"]),
    space=st.sampled_from([None, "did:one", "did:two"]),
    base=st.sampled_from(["did:one", "did:two"]),
)
def test_the_cached_parse_is_the_checked_parse(
    entity: str, overwrite: str | None, space: str | None, base: str
) -> None:
    """Issue 20: the shortcut for plain and redirect links gives the fully checked Link."""
    body: dict[str, Any] = {"id": entity, "path": []}
    if overwrite is not None:
        body["overwrite"] = overwrite
    if space is not None:
        body["space"] = space
    fast = parse_link({"/": {LINK_TAG: body}}, base)
    # "schema": None is valid and absent, and takes every link past the shortcut
    checked = parse_link({"/": {LINK_TAG: {**body, "schema": None}}}, base)
    assert fast == checked
    assert fast.redirect is (overwrite == "redirect")
    assert fast.space == (space or base)


@pytest.mark.parametrize("extra", [
    {"space": ""}, {"space": None}, {"overwrite": None}, {"overwrite": "merge"},
    {"space": "did:x", "other": 1}, {"overwrite": "redirect", "other": 1},
])
def test_the_cached_parse_still_refuses_malformed_fields(extra: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="malformed link"):
        parse_link({"/": {LINK_TAG: {"id": "of:a", "path": [], **extra}}}, SPACE)


# --------------------------------------------------------------------------- as_link


@pytest.mark.parametrize("value", [
    None, "link@1", [make_link(SPACE, "of:x")], {"/": "cid"}, {"/": {"nodeFactory@1": {}}},
    {"/": {"link@1": {"id": "of:x", "path": []}}, "x": 1},
    make_link(SPACE, "of:x"), make_link(SPACE, "of:x", base_space=SPACE),
    make_link(SPACE, "of:x", ("a", 0), {"type": "number"}, True),
    make_link(SPACE, "of:x", (), None, True, base_space=SPACE),
    {"/": {"link@1": {"id": "of:x", "path": [], "overwrite": "this"}}},
    {"/": {"link@1": {"id": "of:x"}}},
])
def test_as_link_is_is_link_then_parse_link(value: Any) -> None:
    """One look at the sigil gives what ``is_link`` and then ``parse_link`` give (twice: cached)."""
    for _ in range(2):
        if is_link(value):
            assert as_link(value, "did:base") == parse_link(value, "did:base")
        else:
            assert as_link(value, "did:base") is None


@pytest.mark.parametrize("extra", [
    {"space": ""}, {"space": None}, {"overwrite": None}, {"overwrite": "merge"},
    {"schema": 3}, {"other": 1}, {"id": "x:a"}, {"path": {}},
])
def test_as_link_refuses_a_malformed_link_whose_target_is_cached(extra: dict[str, Any]) -> None:
    """A cache hit needs the checked shape: same target, one field off, still refused."""
    assert as_link({"/": {LINK_TAG: {"id": "of:a", "path": []}}}, SPACE) == Link(SPACE, "of:a", ())
    with pytest.raises(ValueError, match="malformed link"):
        as_link({"/": {LINK_TAG: {"id": "of:a", "path": [], **extra}}}, SPACE)


def test_as_link_follows_a_changed_dict_not_its_identity() -> None:
    body: dict[str, Any] = {"id": "of:a", "path": []}
    value = {"/": {LINK_TAG: body}}
    assert as_link(value, SPACE) == Link(SPACE, "of:a", ())
    body["id"] = "of:b"
    body["overwrite"] = "redirect"
    assert as_link(value, SPACE) == Link(SPACE, "of:b", (), None, True)
    body["path"] = ["k"]
    assert as_link(value, SPACE) == Link(SPACE, "of:b", ("k",), None, True)


def test_a_read_through_links_journals_each_document_at_its_path(rt: Runtime) -> None:
    """Path-precise subscriptions: the link's own position, then the rest in its target."""
    target = rt.get_cell("target")
    target.set({"a": {"b": 1}})
    holder = rt.get_cell("holder")
    write_raw(rt, (holder, {"x": target.key("a").get_as_link()}))
    tx = rt._begin()
    assert holder.key("x", "b").with_tx(tx).get() == 1
    assert tx.reads == [
        (rt.space, holder.entity_id, ("x",)), (rt.space, target.entity_id, ("a", "b")),
    ]
    tx.abort()
