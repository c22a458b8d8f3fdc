"""MemoryStore's direct copy of plain JSON agrees with the JSON round trip it replaced.

``MemoryStore.commit`` keeps a store-owned copy of every document.  It used to get
it from ``json.dumps`` + ``json.loads`` (``storage.encode_part``); it now copies plain
JSON directly and falls back to ``encode_part`` for anything else, so the stored value,
and every error and its message, must be exactly what the round trip gave.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.errors import ConflictError
from cellkernel.store.documents import Document, encode_commit
from cellkernel.store.memory import MemoryStore, _memory_commit_docs


class _Str(str):
    pass


def _same(a: Any, b: Any) -> bool:
    """Equal with exact types, key order and the sign of zero."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)
    return bool(a == b)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**60, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    st.just(-0.0), st.just(_Str("sub")), st.just((1, 2)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=3), st.just(1)), inner, max_size=4),
    ),
    max_leaves=20,
)


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:  # the type and message must match
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None)
@given(value=_values, meta_value=_values, prev=st.one_of(st.none(), _values))
def test_direct_copy_matches_json_round_trip(value: Any, meta_value: Any, prev: Any) -> None:
    doc = Document(value, None, {"m": meta_value})
    slow = _outcome(lambda: encode_commit("sp", {"e": doc}, {("sp", "e"): 0})["e"].doc)
    store = MemoryStore()  # the previous version, as the store really holds it
    landed = _outcome(lambda: store.commit("sp", {"e": Document(prev)}, {}))[0] == "ok"
    if prev is not None and landed:
        stored = store.load("sp", "e")
        assert stored is not None
        if isinstance(stored.value, dict) and isinstance(value, dict):
            value = {**stored.value, **value}  # share stored sub-values, as a transaction does
            doc = Document(value, None, {"m": meta_value})
            slow = _outcome(
                lambda: encode_commit("sp", {"e": doc}, {("sp", "e"): 0})["e"].doc
            )
    fast = _outcome(
        lambda: _memory_commit_docs("sp", {"e": doc}, {("sp", "e"): 0}, store._docs)[0]
    )
    assert slow[0] == fast[0]
    if slow[0] != "ok":
        assert slow[1] == fast[1]
        return
    _eid, value_copy, source_copy, meta_copy = fast[1]
    assert _same(slow[1].value, value_copy)
    assert _same(slow[1].source, source_copy)
    assert _same(dict(slow[1].meta), dict(meta_copy))


def test_caller_mutation_does_not_reach_the_store() -> None:
    store = MemoryStore()
    value: dict[str, Any] = {"a": [1, {"b": 2}]}
    store.commit("sp", {"e": Document(value)}, {})
    value["a"][1]["b"] = 99
    value["c"] = 3
    assert store.load("sp", "e").value == {"a": [1, {"b": 2}]}  # type: ignore[union-attr]


def test_unchanged_sub_values_are_shared_with_the_previous_version() -> None:
    store = MemoryStore()
    store.commit("sp", {"e": Document({"big": [{"x": i} for i in range(100)], "n": 0})}, {})
    before = store.load("sp", "e")
    assert before is not None
    new_value = {**before.value, "n": 1}  # type: ignore[dict-item]
    store.commit("sp", {"e": Document(new_value)}, {("sp", "e"): 1})
    after = store.load("sp", "e")
    assert after is not None and after.value == {**before.value, "n": 1}  # type: ignore[dict-item]
    assert after.value["big"] is before.value["big"]  # type: ignore[index, call-overload]
    assert after.value is not new_value


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), (1, 2), {1: 2}, 10**5000, {"a": {"b": float("-inf")}}],
    ids=["nan", "inf", "tuple", "int-key", "huge-int", "nested-inf"],
)
def test_errors_are_the_round_trip_errors(bad: Any) -> None:
    doc = Document(bad)
    with pytest.raises(ValueError) as slow:
        encode_commit("sp", {"e": doc}, {})
    with pytest.raises(ValueError) as fast:
        MemoryStore().commit("sp", {"e": doc}, {})
    assert str(slow.value) == str(fast.value)


def test_a_value_that_contains_itself_is_refused_as_before() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="not JSON"):
        MemoryStore().commit("sp", {"e": Document(loop)}, {})


# --------------------------------------------------------------------------- commit_working


def _read_at(*docs: tuple[str, str, Document | None]) -> dict[tuple[str, str], Any]:
    """What ``commit_working`` takes for the documents a transaction touched: views with a base."""
    return {(space, eid): SimpleNamespace(base=base) for space, eid, base in docs}


def test_commit_working_lands_what_commit_lands() -> None:
    """The transaction's lane (tuples, no Documents) stores the same documents and changes."""
    by_docs, by_parts = MemoryStore(), MemoryStore()
    value: dict[str, Any] = {"a": [1, {"b": 2}], "s": "x"}
    one = by_docs.commit("sp", {"e": Document(value, {"src": 1}, {"m": [1]})}, {("sp", "e"): 0})
    two = by_parts.commit_working(
        "sp", [("e", value, {"src": 1}, {"m": [1]}, False)], _read_at(("sp", "e", None))
    )
    assert [(c.entity_id, c.before, c.after) for c in one] == [
        (c.entity_id, c.before, c.after) for c in two
    ]
    value["a"][1]["b"] = 99  # the caller's object is not the stored one
    assert by_parts.load("sp", "e").value == {"a": [1, {"b": 2}], "s": "x"}  # type: ignore[union-attr]


def test_commit_working_refuses_bad_input_and_stores_nothing() -> None:
    store = MemoryStore()
    store.commit_working("sp", [("e", 1, None, {}, True)], {})
    before = dict(store._docs)
    current = store.load("sp", "e")
    with pytest.raises(ValueError, match="not JSON"):
        store.commit_working(
            "sp", [("e", float("nan"), None, {}, False)], _read_at(("sp", "e", current))
        )
    with pytest.raises(TypeError, match="entity id must be str"):
        store.commit_working("sp", [(7, 2, None, {}, True)], {})  # type: ignore[list-item]
    assert store._docs == before


def test_commit_working_refuses_a_stale_read_by_identity_and_stores_nothing() -> None:
    store = MemoryStore()
    store.commit("sp", {"e": Document({"n": 1})}, {})
    first = store.load("sp", "e")
    store.commit("sp", {"e": Document({"n": 2})}, {("sp", "e"): 1})
    before = dict(store._docs)
    stale = _read_at(("sp", "e", first))
    expected = "'e' in space 'sp' is at version 2, transaction read 1"
    with pytest.raises(ConflictError, match=expected):
        store.commit_working("sp", [("e", 3, None, {}, True)], stale)
    with pytest.raises(ConflictError, match="is at version 2, transaction read 0"):
        store.commit_working("sp", [("f", 3, None, {}, True)], _read_at(("sp", "e", None)))
    assert store._docs == before


@pytest.mark.parametrize("write", [
    ("e", 5, "kept", "kept", True),  # the one-document lane: a scalar, source and meta kept
    ("e", {"n": [1]}, "kept", "kept", True),  # a spine the transaction copied
    ("e", "é", "kept", "kept", True),  # not ASCII: checked the usual way
    ("e", {"n": [1]}, "kept", "kept", False),  # a caller's container: copied
    ("e", 5, {"new": 1}, "kept", True),  # a new source
    ("e", 5, "kept", {"m": 2}, True),  # a new meta
    ("f", 5, None, {}, True),  # a new document
])
def test_a_one_document_commit_lands_what_the_general_commit_lands(write: Any) -> None:
    """``commit_working``'s lane for one kept-source, kept-meta write changes no result."""
    entity_id, value, source, meta, owned = write
    stores = MemoryStore(), MemoryStore()
    for store in stores:
        store.commit("sp", {"e": Document({"n": 0}, {"src": 1}, {"m": [1]})}, {})
    prev = stores[0].load("sp", entity_id)
    kept = stores[1].load("sp", entity_id)
    general = stores[0].commit("sp", {entity_id: Document(
        value,
        prev.source if source == "kept" else source,  # type: ignore[union-attr]
        prev.meta if meta == "kept" else meta,  # type: ignore[union-attr]
    )}, {("sp", entity_id): prev.version if prev is not None else 0})
    lane = stores[1].commit_working("sp", [(
        entity_id, value,
        kept.source if source == "kept" else source,  # type: ignore[union-attr]
        kept.meta if meta == "kept" else meta,  # type: ignore[union-attr]
        owned,
    )], _read_at(("sp", entity_id, kept)))
    assert [tuple(c) for c in lane] == [tuple(c) for c in general]
    assert stores[1]._docs == stores[0]._docs


def test_a_one_document_commit_still_refuses_a_lone_surrogate_and_a_stale_read() -> None:
    store = MemoryStore()
    store.commit("sp", {"e": Document(1)}, {})
    first = store.load("sp", "e")
    assert first is not None
    with pytest.raises(ValueError):
        store.commit_working("sp", [("e", "\ud800", first.source, first.meta, True)],
                             _read_at(("sp", "e", first)))
    store.commit_working("sp", [("e", 2, first.source, first.meta, True)],
                         _read_at(("sp", "e", first)))
    before = dict(store._docs)
    with pytest.raises(ConflictError, match="is at version 2, transaction read 1"):
        store.commit_working("sp", [("e", 3, first.source, first.meta, True)],
                             _read_at(("sp", "e", first)))
    assert store._docs == before
